
/*
 * Copyright (C) ngx_ai_gateway_module authors
 */


#ifndef _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_AI_GATEWAY_DEFAULT_MAX_BODY  (4 * 1024 * 1024)


typedef enum {
    NGX_HTTP_AI_GATEWAY_API_UNKNOWN = 0,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_COMPLETIONS,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_RESPONSES,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_EMBEDDINGS,
    NGX_HTTP_AI_GATEWAY_API_ANTHROPIC_MESSAGES
} ngx_http_ai_gateway_api_e;


typedef struct {
    ngx_flag_t                  enable;
    size_t                      max_body;
    ngx_http_complex_value_t   *user;
    ngx_str_t                   endpoint;
} ngx_http_ai_gateway_loc_conf_t;


typedef enum {
    NGX_HTTP_AI_GATEWAY_STATE_NEW = 0,
    NGX_HTTP_AI_GATEWAY_STATE_READING,
    NGX_HTTP_AI_GATEWAY_STATE_DONE
} ngx_http_ai_gateway_state_e;


/*
 * The request's facts, from the first inspection to the log phase.  It is
 * found again after an internal redirect, see ngx_http_ai_gateway_ctx.c.
 */

typedef struct {
    ngx_http_ai_gateway_state_e  state;

    /* an error found while the body was read: answered when phases resume */
    ngx_uint_t                   status;
    const char                  *error_type;
    const char                  *error_code;
    ngx_str_t                    error_message;

    /* the body, contiguous, as the client sent it (chunked: decoded) */
    u_char                      *body;
    size_t                       body_len;
    size_t                       body_size;

    ngx_http_ai_gateway_api_e    api;
    ngx_str_t                    model;
    ngx_str_t                    client_user;
    ngx_str_t                    endpoint;
    ngx_str_t                    user;
    ngx_int_t                    stream;          /* -1: not given */
    int64_t                      max_tokens;      /* -1: not given */
    uint64_t                     input_chars;

    u_char                       request_hash[64];

    unsigned                     inspected:1;
    unsigned                     body_filtered:1;
    unsigned                     too_large:1;
    unsigned                     user_evaluated:1;
    unsigned                     hashed:1;
} ngx_http_ai_gateway_ctx_t;


ngx_http_ai_gateway_ctx_t *ngx_http_ai_gateway_get_ctx(ngx_http_request_t *r);
ngx_http_ai_gateway_ctx_t *ngx_http_ai_gateway_create_ctx(
    ngx_http_request_t *r);

ngx_int_t ngx_http_ai_gateway_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_ai_gateway_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
ngx_int_t ngx_http_ai_gateway_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *code, ngx_str_t *message);
ngx_str_t *ngx_http_ai_gateway_user(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_str_t *ngx_http_ai_gateway_api_name(ngx_http_ai_gateway_api_e api);

ngx_int_t ngx_http_ai_gateway_add_variables(ngx_conf_t *cf);


extern ngx_module_t  ngx_http_ai_gateway_module;
extern ngx_http_request_body_filter_pt  ngx_http_ai_gateway_next_request_body_filter;


#endif /* _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_ */
