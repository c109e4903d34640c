
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The worker's link to Redis: hiredis's asynchronous API on an nginx
 * connection, one pipelined link per worker, opened at worker start,
 * reopened with backoff, with AUTH, SELECT and the Lua scripts sent first
 * on every new link.  It knows nothing of HTTP: a caller sends a command
 * with a handler and gets the reply (or NULL: no answer) exactly once.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_REDIS_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/hiredis.h>


typedef struct {
    ngx_str_t                 text;
    u_char                    sha1[40];
} ngx_http_ai_gateway_redis_script_t;


typedef struct {
    ngx_str_t                 name;        /* as configured: for logs */
    ngx_str_t                 host;        /* numeric, NUL-terminated */
    int                       port;
    ngx_str_t                 path;        /* unix socket, NUL-terminated */
    ngx_str_t                 password;    /* never logged */
    ngx_int_t                 db;
    ngx_str_t                 prefix;
    ngx_msec_t                timeout;
    ngx_uint_t                on_error;
    ngx_array_t               scripts;     /* of redis_script_t */
    ngx_atomic_t             *errors;      /* in the zone, for metrics */
    ngx_atomic_t             *dropped;     /* usage records */
} ngx_http_ai_gateway_redis_conf_t;


#define NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_LOCAL  0
#define NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_ALLOW  1
#define NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_DENY   2


/* reply is NULL when no answer came (link lost, or never sent) */
typedef void (*ngx_http_ai_gateway_redis_handler_pt)(void *data,
    redisReply *reply);

typedef struct ngx_http_ai_gateway_redis_op_s  ngx_http_ai_gateway_redis_op_t;


/* parses "ai_gateway_redis ADDRESS [name=value ...]" */
char *ngx_http_ai_gateway_redis_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_ai_gateway_redis_conf_t **rcf);

/* a script to load on every link; the pointer stays valid */
ngx_http_ai_gateway_redis_script_t *ngx_http_ai_gateway_redis_add_script(
    ngx_conf_t *cf, ngx_http_ai_gateway_redis_conf_t *rcf, const char *text);

ngx_int_t ngx_http_ai_gateway_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_ai_gateway_redis_conf_t *rcf);
void ngx_http_ai_gateway_redis_exit_process(void);

/* 1 when the link is set up and answering */
ngx_uint_t ngx_http_ai_gateway_redis_ready(void);

/* 1 when a link is open or opening: a command sent now is queued on it */
ngx_uint_t ngx_http_ai_gateway_redis_linked(void);

/* a command's timeout passed: gives the link up when it has answered
 * nothing for long (see _redis.c); may free the commands on their way */
void ngx_http_ai_gateway_redis_timed_out(void);

/*
 * Sends EVALSHA (EVAL again after NOSCRIPT) or, with script NULL, the
 * command itself.  argv holds what follows the script (numkeys, keys,
 * arguments); it is copied.  NULL: not sent (no link); the handler is then
 * not called.  A handler may be NULL (fire and forget; errors are counted).
 */
ngx_http_ai_gateway_redis_op_t *ngx_http_ai_gateway_redis_send(
    ngx_http_ai_gateway_redis_script_t *script, int argc, const char **argv,
    const size_t *argvlen, ngx_http_ai_gateway_redis_handler_pt handler,
    void *data);


#endif /* _NGX_HTTP_AI_GATEWAY_REDIS_H_INCLUDED_ */
