
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The $ai_* variables.  They are not cacheable: a variable read before the
 * body was inspected (say, by "set" in the rewrite phase) must not keep its
 * empty value.  Each is cheap, and $ai_request_hash is computed once, on
 * first use.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_ai_gateway_module.h"


typedef enum {
    NGX_HTTP_AI_GATEWAY_VAR_MODEL = 0,
    NGX_HTTP_AI_GATEWAY_VAR_API,
    NGX_HTTP_AI_GATEWAY_VAR_STREAM,
    NGX_HTTP_AI_GATEWAY_VAR_USER,
    NGX_HTTP_AI_GATEWAY_VAR_ENDPOINT,
    NGX_HTTP_AI_GATEWAY_VAR_REQUEST_HASH,
    NGX_HTTP_AI_GATEWAY_VAR_MAX_TOKENS,
    NGX_HTTP_AI_GATEWAY_VAR_INPUT_CHARACTERS,
    NGX_HTTP_AI_GATEWAY_VAR_CLIENT_USER,
    NGX_HTTP_AI_GATEWAY_VAR_PROMPT_TOKENS,
    NGX_HTTP_AI_GATEWAY_VAR_COMPLETION_TOKENS,
    NGX_HTTP_AI_GATEWAY_VAR_TOTAL_TOKENS,
    NGX_HTTP_AI_GATEWAY_VAR_TTFT,
    NGX_HTTP_AI_GATEWAY_VAR_LIMIT_STATUS,
    NGX_HTTP_AI_GATEWAY_VAR_COST_USD,
    NGX_HTTP_AI_GATEWAY_VAR_LIMIT_BACKEND,
    NGX_HTTP_AI_GATEWAY_VAR_GROUP,
    NGX_HTTP_AI_GATEWAY_VAR_GUARDRAIL
} ngx_http_ai_gateway_var_e;


static ngx_int_t ngx_http_ai_gateway_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ai_gateway_endpoint_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *value);
static ngx_int_t ngx_http_ai_gateway_hash_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *value);
static ngx_int_t ngx_http_ai_gateway_number_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uintptr_t data, ngx_str_t *value);


static ngx_http_variable_t  ngx_http_ai_gateway_vars[] = {

    { ngx_string("ai_model"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_api"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_API, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_stream"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_STREAM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_user"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_USER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_endpoint"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_ENDPOINT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_request_hash"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_REQUEST_HASH, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_max_tokens"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_MAX_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_input_characters"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_INPUT_CHARACTERS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_client_user"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_CLIENT_USER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_prompt_tokens"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_PROMPT_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_completion_tokens"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_COMPLETION_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_total_tokens"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_TOTAL_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_ttft"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_limit_status"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_LIMIT_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_cost_usd"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_COST_USD, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_limit_backend"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_LIMIT_BACKEND, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_group"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_GROUP, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ai_guardrail"), NULL, ngx_http_ai_gateway_variable,
      NGX_HTTP_AI_GATEWAY_VAR_GUARDRAIL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_ai_gateway_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_ai_gateway_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    int64_t                       cost;
    ngx_str_t                     value, *s;
    ngx_http_ai_gateway_tokens_t  t;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_ai_gateway_get_ctx(r->main);

    ngx_str_null(&value);

    if (data == NGX_HTTP_AI_GATEWAY_VAR_ENDPOINT) {
        if (ngx_http_ai_gateway_endpoint_variable(r, ctx, &value) != NGX_OK) {
            return NGX_ERROR;
        }

        goto done;
    }

    if (ctx == NULL || !ctx->inspected) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_AI_GATEWAY_VAR_MODEL:
        value = ctx->model;
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_API:
        value = *ngx_http_ai_gateway_api_name(ctx->api);
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_STREAM:
        if (ctx->stream == 1) {
            ngx_str_set(&value, "true");

        } else {
            ngx_str_set(&value, "false");
        }

        break;

    case NGX_HTTP_AI_GATEWAY_VAR_USER:
        s = ngx_http_ai_gateway_user(r->main, ctx);
        if (s != NULL) {
            value = *s;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_VAR_REQUEST_HASH:
        if (ngx_http_ai_gateway_hash_variable(r, ctx, &value) != NGX_OK) {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_VAR_MAX_TOKENS:
    case NGX_HTTP_AI_GATEWAY_VAR_INPUT_CHARACTERS:
    case NGX_HTTP_AI_GATEWAY_VAR_PROMPT_TOKENS:
    case NGX_HTTP_AI_GATEWAY_VAR_COMPLETION_TOKENS:
    case NGX_HTTP_AI_GATEWAY_VAR_TOTAL_TOKENS:
    case NGX_HTTP_AI_GATEWAY_VAR_TTFT:
        if (ngx_http_ai_gateway_number_variable(r, ctx, data, &value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_VAR_CLIENT_USER:
        value = ctx->client_user;
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_LIMIT_STATUS:
        value = *ngx_http_ai_gateway_limit_status(ctx, 0, r->pool);
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_GUARDRAIL:
        value = ctx->guardrail;
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_GROUP:
        value = ctx->group;
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_LIMIT_BACKEND:
        if (ctx->limit_backend == NGX_HTTP_AI_GATEWAY_BACKEND_REDIS) {
            ngx_str_set(&value, "redis");

        } else if (ctx->limit_backend == NGX_HTTP_AI_GATEWAY_BACKEND_SHM) {
            ngx_str_set(&value, "local");

        } else if (ctx->limit_done) {
            /* Redis failed and on_error let it through, or refused it */
            ngx_str_set(&value, "none");

        }

        break;

    case NGX_HTTP_AI_GATEWAY_VAR_COST_USD:
        ngx_http_ai_gateway_tokens(r->main, ctx, &t);
        cost = ngx_http_ai_gateway_cost(r->main, ctx, &t);

        if (cost >= 0) {
            value.data = ngx_pnalloc(r->pool, NGX_INT64_LEN + 2);
            if (value.data == NULL) {
                return NGX_ERROR;
            }

            value.len = ngx_http_ai_gateway_format_usd(value.data, cost)
                        - value.data;
        }

        break;
    }

done:

    v->len = value.len;
    v->data = value.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* numbers; empty where there is none (no max_tokens, no first token) */

static ngx_int_t
ngx_http_ai_gateway_number_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uintptr_t data, ngx_str_t *value)
{
    int64_t                       n;
    ngx_http_ai_gateway_tokens_t  t;

    switch (data) {

    case NGX_HTTP_AI_GATEWAY_VAR_MAX_TOKENS:
        n = ctx->max_tokens;
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_INPUT_CHARACTERS:
        n = (int64_t) ngx_http_ai_gateway_input_chars(ctx);
        break;

    case NGX_HTTP_AI_GATEWAY_VAR_TTFT:
        n = ctx->ttft_set ? (int64_t) ctx->ttft : -1;
        break;

    default:
        /* the counts as they stand now: final in the log phase */
        ngx_http_ai_gateway_tokens(r->main, ctx, &t);

        n = (data == NGX_HTTP_AI_GATEWAY_VAR_PROMPT_TOKENS) ? t.input
            : (data == NGX_HTTP_AI_GATEWAY_VAR_COMPLETION_TOKENS) ? t.output
            : t.total;
        break;
    }

    if (n < 0) {
        return NGX_OK;
    }

    value->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    value->len = ngx_sprintf(value->data, "%L", n) - value->data;

    return NGX_OK;
}


/* known for every inspected location, GET requests included */

static ngx_int_t
ngx_http_ai_gateway_endpoint_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *value)
{
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    if (ctx != NULL && ctx->endpoint.len) {
        *value = ctx->endpoint;
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (!lcf->enable) {
        return NGX_OK;
    }

    *value = ngx_http_ai_gateway_endpoint_name(r, lcf);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_hash_variable(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *value)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    if (!ctx->hashed) {
        if (EVP_Digest(ctx->body, ctx->body_len, md, &mdlen, EVP_sha256(),
                       NULL)
            != 1)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ai_gateway: EVP_Digest(sha256) failed");
            return NGX_ERROR;
        }

        ngx_hex_dump(ctx->request_hash, md, mdlen);
        ctx->hashed = 1;
    }

    value->data = ctx->request_hash;
    value->len = sizeof(ctx->request_hash);

    return NGX_OK;
}
