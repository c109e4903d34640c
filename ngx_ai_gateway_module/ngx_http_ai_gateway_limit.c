
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Rate limits and token budgets: every limit of a request is checked, and
 * only if all pass are they all charged, in one locked step of the store.
 * Token budgets reserve at admission (the prompt estimate plus max_tokens,
 * or ai_gateway_token_reservation) and settle once, in the log phase,
 * against the request's real total.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"


static ngx_int_t ngx_http_ai_gateway_limit_key(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_limit_t *limit,
    ngx_http_ai_gateway_counter_t *c);
static ngx_int_t ngx_http_ai_gateway_limit_local(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_limit_decide(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_ai_gateway_limit_verdict(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_ai_gateway_limit_reject(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t i);
static void ngx_http_ai_gateway_limit_clear_headers(ngx_http_request_t *r);
static ngx_msec_t ngx_http_ai_gateway_limit_reset(
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_counter_t *c);
static ngx_int_t ngx_http_ai_gateway_limit_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static char *ngx_http_ai_gateway_limit_type(ngx_conf_t *cf,
    ngx_http_ai_gateway_limit_t *limit, ngx_str_t *period, ngx_str_t *key);


static ngx_str_t  ngx_http_ai_gateway_zone_name = ngx_string("ai_gateway");

static ngx_str_t  ngx_http_ai_gateway_limit_statuses[] = {
    ngx_null_string,
    ngx_string("passed"),
    ngx_string("rejected"),
    ngx_string("dry_run_rejected")
};


char *
ngx_http_ai_gateway_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    ssize_t                     size;
    ngx_str_t                  *value;
    ngx_http_ai_gateway_shm_t  *shm;

    if (mcf->zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\" in \"%V\" directive, "
                           "it must be at least %uz", &value[1], &cmd->name,
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    shm = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_shm_t));
    if (shm == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->zone = ngx_shared_memory_add(cf, &ngx_http_ai_gateway_zone_name,
                                      size, &ngx_http_ai_gateway_module);
    if (mcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (mcf->zone->data) {
        return "is duplicate";
    }

    shm->size = size;
    mcf->zone->init = ngx_http_ai_gateway_shm_init_zone;
    mcf->zone->data = shm;

    return NGX_CONF_OK;
}


/* the zone nobody sized: made at the end of the http block */

ngx_int_t
ngx_http_ai_gateway_default_zone(ngx_conf_t *cf,
    ngx_http_ai_gateway_main_conf_t *mcf)
{
    ngx_http_ai_gateway_shm_t  *shm;

    if (!(mcf->limits || mcf->metrics) || mcf->zone != NULL) {
        return NGX_OK;
    }

    shm = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    mcf->zone = ngx_shared_memory_add(cf, &ngx_http_ai_gateway_zone_name,
                                      NGX_HTTP_AI_GATEWAY_DEFAULT_ZONE_SIZE,
                                      &ngx_http_ai_gateway_module);
    if (mcf->zone == NULL) {
        return NGX_ERROR;
    }

    shm->size = NGX_HTTP_AI_GATEWAY_DEFAULT_ZONE_SIZE;
    mcf->zone->init = ngx_http_ai_gateway_shm_init_zone;
    mcf->zone->data = shm;

    return NGX_OK;
}


/*
 * ai_gateway_rate_limit key=user|endpoint|$variable
 *     renewal_period=minute|hour|day|<N>s calls=N|tokens=N [dry_run];
 */

char *
ngx_http_ai_gateway_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ngx_int_t                          n;
    ngx_str_t                         *value, v, key, period;
    ngx_uint_t                         i, has_kind;
    ngx_http_ai_gateway_limit_t       *limit;
    ngx_http_ai_gateway_main_conf_t   *mcf;
    ngx_http_compile_complex_value_t   ccv;

    if (lcf->limits == NULL) {
        lcf->limits = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_http_ai_gateway_limit_t));
        if (lcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->limits->nelts == NGX_HTTP_AI_GATEWAY_MAX_LIMITS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"%V\" directives, %d at most",
                           &cmd->name, NGX_HTTP_AI_GATEWAY_MAX_LIMITS);
        return NGX_CONF_ERROR;
    }

    limit = ngx_array_push(lcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(limit, sizeof(ngx_http_ai_gateway_limit_t));

    value = cf->args->elts;
    ngx_str_null(&key);
    ngx_str_null(&period);
    has_kind = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            key.data = value[i].data + 4;
            key.len = value[i].len - 4;

            if (key.len == 4 && ngx_strncmp(key.data, "user", 4) == 0) {
                limit->key_type = NGX_HTTP_AI_GATEWAY_LIMIT_BY_USER;

            } else if (key.len == 8
                       && ngx_strncmp(key.data, "endpoint", 8) == 0)
            {
                limit->key_type = NGX_HTTP_AI_GATEWAY_LIMIT_BY_ENDPOINT;

            } else if (key.len > 1 && key.data[0] == '$') {
                limit->key_type = NGX_HTTP_AI_GATEWAY_LIMIT_BY_VARIABLE;

                limit->key = ngx_palloc(cf->pool,
                                        sizeof(ngx_http_complex_value_t));
                if (limit->key == NULL) {
                    return NGX_CONF_ERROR;
                }

                ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
                ccv.cf = cf;
                ccv.value = &key;
                ccv.complex_value = limit->key;

                if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                    return NGX_CONF_ERROR;
                }

            } else {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "renewal_period=", 15) == 0) {
            period.data = value[i].data + 15;
            period.len = value[i].len - 15;

            if (period.len == 6 && ngx_strncmp(period.data, "minute", 6) == 0) {
                limit->period = 60 * 1000;

            } else if (period.len == 4
                       && ngx_strncmp(period.data, "hour", 4) == 0)
            {
                limit->period = 3600 * 1000;

            } else if (period.len == 3
                       && ngx_strncmp(period.data, "day", 3) == 0)
            {
                limit->period = 86400 * 1000;

            } else if (period.len > 1 && period.data[period.len - 1] == 's'
                       && (n = ngx_atoi(period.data, period.len - 1)) > 0
                       && n <= 31 * 86400)
            {
                limit->period = (ngx_msec_t) n * 1000;

            } else {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "calls=", 6) == 0
            || ngx_strncmp(value[i].data, "tokens=", 7) == 0)
        {
            if (has_kind) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" takes either calls= or tokens=, "
                                   "not both: \"%V\"", &cmd->name, &value[i]);
                return NGX_CONF_ERROR;
            }

            has_kind = 1;
            limit->tokens = (value[i].data[0] == 't');

            v.data = value[i].data + (limit->tokens ? 7 : 6);
            v.len = value[i].len - (limit->tokens ? 7 : 6);

            n = ngx_atoi(v.data, v.len);
            if (n <= 0) {
                goto invalid;
            }

            limit->limit = n;

            /* the x-ratelimit-limit-* value, written once */
            limit->limit_text.data = ngx_pnalloc(cf->pool, NGX_INT64_LEN);
            if (limit->limit_text.data == NULL) {
                return NGX_CONF_ERROR;
            }

            limit->limit_text.len = ngx_http_ai_gateway_write_uint(
                                        limit->limit_text.data, (uint64_t) n)
                                    - limit->limit_text.data;
            continue;
        }

        if (value[i].len == 7 && ngx_strncmp(value[i].data, "dry_run", 7) == 0)
        {
            limit->dry_run = 1;
            continue;
        }

        goto invalid;
    }

    if (key.data == NULL || period.data == NULL || !has_kind) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs key=, renewal_period= and "
                           "calls= or tokens=", &cmd->name);
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ai_gateway_module);
    mcf->limits = 1;

    return ngx_http_ai_gateway_limit_type(cf, limit, &period, &key);

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);

    return NGX_CONF_ERROR;
}


/* "requests_per_user_per_minute": the OpenAI error type of a rejection */

static char *
ngx_http_ai_gateway_limit_type(ngx_conf_t *cf,
    ngx_http_ai_gateway_limit_t *limit, ngx_str_t *period, ngx_str_t *key)
{
    const char  *scope;

    scope = (limit->key_type == NGX_HTTP_AI_GATEWAY_LIMIT_BY_USER) ? "user"
            : (limit->key_type == NGX_HTTP_AI_GATEWAY_LIMIT_BY_ENDPOINT)
              ? "endpoint" : "key";

    limit->scope.data = (u_char *) scope;
    limit->scope.len = ngx_strlen(scope);
    limit->period_name = *period;

    /* the start of its counters' keys: kind, period, key type */
    limit->key_prefix.data = ngx_pnalloc(cf->pool, 48);
    if (limit->key_prefix.data == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->key_prefix.len = ngx_sprintf(limit->key_prefix.data, "%c:%M:%d:",
                                        limit->tokens ? 't' : 'c',
                                        limit->period, (int) limit->key_type)
                            - limit->key_prefix.data;

    limit->type.data = ngx_pnalloc(cf->pool, 64 + period->len);
    if (limit->type.data == NULL) {
        return NGX_CONF_ERROR;
    }

    /* NUL-terminated too: it is the "type" of the error answer */
    limit->type.len = ngx_sprintf(limit->type.data, "%s_per_%s_per_%V%Z",
                                  limit->tokens ? "tokens" : "requests",
                                  scope, period)
                      - limit->type.data - 1;

    return NGX_CONF_OK;
}


/*
 * Admission.  NGX_DECLINED: the location has no limits; NGX_OK: admitted;
 * NGX_DONE: rejected and answered, or waiting for Redis (the handler runs
 * again when it answers).
 */

ngx_int_t
ngx_http_ai_gateway_limit(ngx_http_request_t *r, ngx_http_ai_gateway_ctx_t *ctx)
{
    int64_t                           reserve;
    ngx_int_t                         rc;
    ngx_uint_t                        i, n;
    ngx_http_ai_gateway_limit_t      *limit;
    ngx_http_ai_gateway_counter_t    *c;
    ngx_http_ai_gateway_loc_conf_t   *lcf;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (ctx->limit_done) {

        if (ctx->limit_waiting) {
            /* an event on the client's connection while Redis thinks */
            return NGX_DONE;
        }

        if (ctx->limit_pending) {
            ctx->limit_pending = 0;
            return ngx_http_ai_gateway_limit_decide(r, ctx, ctx->limit_rc);
        }

        return NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->limits == NULL) {
        return NGX_DECLINED;
    }

    ctx->limit_done = 1;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    n = lcf->limits->nelts;
    limit = lcf->limits->elts;

    c = ngx_pcalloc(r->pool, n * sizeof(ngx_http_ai_gateway_counter_t));
    if (c == NULL) {
        return NGX_ERROR;
    }

    reserve = (ngx_http_ai_gateway_input_chars(ctx)
               + NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN - 1)
              / NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN
              + (ctx->max_tokens >= 0 ? ctx->max_tokens
                                      : lcf->token_reservation);
    ctx->limit_force = 0;

    /* keys are built and hashed before the lock is taken */

    for (i = 0; i < n; i++) {
        rc = ngx_http_ai_gateway_limit_key(r, ctx, &limit[i], &c[i]);
        if (rc != NGX_OK) {
            return rc;
        }

        c[i].period = limit[i].period;
        c[i].limit = limit[i].limit;
        c[i].cost = limit[i].tokens ? reserve : 1;

        if (limit[i].dry_run) {
            ctx->limit_force |= (uint64_t) 1 << i;
        }
    }

    ctx->counters = c;
    ctx->limits = limit;
    ctx->nlimits = n;
    ctx->reserved = reserve;

    if (mcf->redis == NULL) {
        return ngx_http_ai_gateway_limit_local(r, ctx);
    }

    rc = ngx_http_ai_gateway_limit_redis_admit(r, ctx, ctx->limit_force);

    if (rc == NGX_AGAIN) {
        ctx->limit_waiting = 1;
        return NGX_DONE;
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* Redis cannot be asked now: on_error says what to do */
    return ngx_http_ai_gateway_limit_decide(r, ctx, NGX_ERROR);
}


/* the node's own counters: the default, and Redis's on_error=local */

static ngx_int_t
ngx_http_ai_gateway_limit_local(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_int_t                         rc;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    rc = ngx_http_ai_gateway_shm_admit(mcf->zone->data, ctx->counters,
                                       ctx->nlimits, ctx->limit_force,
                                       &ctx->limit_rejected,
                                       r->connection->log);

    ctx->limit_backend = NGX_HTTP_AI_GATEWAY_BACKEND_SHM;

    return ngx_http_ai_gateway_limit_verdict(r, ctx, rc);
}


/* after Redis answered (rc NGX_OK or NGX_DECLINED), or could not */

static ngx_int_t
ngx_http_ai_gateway_limit_decide(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_int_t rc)
{
    ngx_str_t                         msg;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (rc != NGX_ERROR) {
        ctx->limit_backend = NGX_HTTP_AI_GATEWAY_BACKEND_REDIS;
        return ngx_http_ai_gateway_limit_verdict(r, ctx, rc);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    if (mcf->redis->errors) {
        (void) ngx_atomic_fetch_add(mcf->redis->errors, 1);
    }

    switch (mcf->redis->on_error) {

    case NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_ALLOW:
        ctx->limit_backend = NGX_HTTP_AI_GATEWAY_BACKEND_NONE;
        ctx->limit_status = NGX_HTTP_AI_GATEWAY_LIMIT_NONE;
        return NGX_OK;

    case NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_DENY:
        ctx->limit_backend = NGX_HTTP_AI_GATEWAY_BACKEND_NONE;
        ctx->limit_status = NGX_HTTP_AI_GATEWAY_LIMIT_NONE;

        ngx_str_set(&msg, "The rate limit service is unavailable. "
                          "Please retry later.");
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: 503 limits_unavailable "
                      "(redis, on_error=deny)");

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "limits_unavailable", &msg));
        return NGX_DONE;

    default: /* local */
        return ngx_http_ai_gateway_limit_local(r, ctx);
    }
}


static ngx_int_t
ngx_http_ai_gateway_limit_verdict(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_int_t rc)
{
    ngx_uint_t                      i;
    ngx_http_ai_gateway_limit_t    *limit;
    ngx_http_ai_gateway_counter_t  *c;

    limit = ctx->limits;
    c = ctx->counters;

    if (rc != NGX_OK) {
        ctx->limit_status = NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED;
        ctx->limit_type = limit[ctx->limit_rejected].type;
        return ngx_http_ai_gateway_limit_reject(r, ctx, ctx->limit_rejected);
    }

    ctx->limit_status = NGX_HTTP_AI_GATEWAY_LIMIT_PASSED;

    for (i = 0; i < ctx->nlimits; i++) {
        if (limit[i].dry_run && c[i].used + c[i].cost > c[i].limit) {
            ctx->limit_status = NGX_HTTP_AI_GATEWAY_LIMIT_DRY_RUN_REJECTED;
            ctx->limit_type = limit[i].type;

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "ai_gateway: dry run: %V limit %L would reject "
                          "(used %L)", &limit[i].type, c[i].limit, c[i].used);
            break;
        }
    }

    return NGX_OK;
}


/*
 * The counter's key: the kind and period of the limit, then who.  Per-user
 * counters are per endpoint too, as Databricks' are; a $variable key is
 * global, so that it can span endpoints.
 */

static ngx_int_t
ngx_http_ai_gateway_limit_key(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_limit_t *limit,
    ngx_http_ai_gateway_counter_t *c)
{
    u_char                          *p;
    ngx_str_t                        who, where, msg;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    ngx_str_null(&where);

    switch (limit->key_type) {

    case NGX_HTTP_AI_GATEWAY_LIMIT_BY_USER:
        who = ctx->user;
        where = ctx->endpoint;

        if (who.len == 0) {
            lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

            if (lcf->require_user) {
                ngx_str_set(&msg, "A user identity is required here "
                                  "(ai_gateway_require_user).");
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "ai_gateway: 401 missing_user: %V", &msg);

                ngx_http_finalize_request(r,
                    ngx_http_ai_gateway_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                                   "invalid_request_error",
                                                   "missing_user", &msg));
                return NGX_DONE;
            }

            ngx_str_set(&who, "anonymous");
        }

        break;

    case NGX_HTTP_AI_GATEWAY_LIMIT_BY_ENDPOINT:
        who = ctx->endpoint;
        break;

    default:
        if (ngx_http_complex_value(r, limit->key, &who) != NGX_OK) {
            return NGX_ERROR;
        }

        break;
    }

    c->key.data = ngx_pnalloc(r->pool,
                              limit->key_prefix.len + where.len + 1 + who.len);
    if (c->key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(c->key.data, limit->key_prefix.data, limit->key_prefix.len);
    p = ngx_cpymem(p, where.data, where.len);
    *p++ = '\x1f';
    p = ngx_cpymem(p, who.data, who.len);

    c->key.len = p - c->key.data;
    /* not ngx_crc32_short(): a byte at two table lookups */
    c->hash = ngx_http_ai_gateway_hash(c->key.data, c->key.len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_limit_reject(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t i)
{
    ngx_str_t                       msg;
    ngx_uint_t                      secs;
    ngx_table_elt_t                *h;
    ngx_http_ai_gateway_limit_t    *limit;
    ngx_http_ai_gateway_counter_t  *c;

    limit = &ctx->limits[i];
    c = &ctx->counters[i];

    secs = (c->retry + 999) / 1000;
    secs = ngx_max(secs, 1);

    msg.data = ngx_pnalloc(r->pool, 256 + limit->type.len);
    if (msg.data == NULL) {
        return NGX_ERROR;
    }

    msg.len = ngx_sprintf(msg.data, "Rate limit reached for %V: limit %L, "
                          "used %L, requested %L. Please retry after %ui "
                          "seconds.", &limit->type, c->limit, c->used,
                          c->cost, secs)
              - msg.data;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ai_gateway: 429 %V: limit %L, used %L, requested %L",
                  &limit->type, c->limit, c->used, c->cost);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data, "%ui", secs) - h->value.data;

    ngx_http_finalize_request(r,
        ngx_http_ai_gateway_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                       (char *) limit->type.data,
                                       "rate_limit_exceeded", &msg));

    return NGX_DONE;
}


/*
 * OpenAI's x-ratelimit-* headers, for the tightest limit of each kind: the
 * one with the least remaining.
 */

ngx_int_t
ngx_http_ai_gateway_limit_headers(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    u_char                         *p;
    int64_t                         remaining, best[2];
    ngx_int_t                       k, pick[2];
    ngx_str_t                       remaining_text, reset_text;
    ngx_uint_t                      i;
    ngx_msec_t                      reset;
    ngx_http_ai_gateway_counter_t  *c;

    static ngx_str_t  names[2][3] = {
        { ngx_string("x-ratelimit-limit-requests"),
          ngx_string("x-ratelimit-remaining-requests"),
          ngx_string("x-ratelimit-reset-requests") },
        { ngx_string("x-ratelimit-limit-tokens"),
          ngx_string("x-ratelimit-remaining-tokens"),
          ngx_string("x-ratelimit-reset-tokens") }
    };

    ngx_http_ai_gateway_limit_clear_headers(r);

    best[0] = best[1] = 0;
    pick[0] = pick[1] = -1;

    for (i = 0; i < ctx->nlimits; i++) {
        c = &ctx->counters[i];
        k = ctx->limits[i].tokens ? 1 : 0;

        remaining = c->limit - c->used;

        if (ctx->limit_status != NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED) {
            remaining -= c->cost;
        }

        remaining = ngx_max(remaining, 0);

        if (pick[k] == -1 || remaining < best[k]) {
            best[k] = remaining;
            pick[k] = i;
        }
    }

    /* the remaining and reset values of both kinds, in one allocation */
    p = ngx_pnalloc(r->pool, 4 * (NGX_INT64_LEN + 2));
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < 2; k++) {
        if (pick[k] == -1) {
            continue;
        }

        c = &ctx->counters[pick[k]];

        remaining_text.data = p;
        p = ngx_http_ai_gateway_write_uint(p, (uint64_t) best[k]);
        remaining_text.len = p - remaining_text.data;

        /* durations as OpenAI writes them: "12s", or "250ms" under a
         * second */

        reset_text.data = p;
        reset = ngx_http_ai_gateway_limit_reset(ctx, c);

        if (reset < 1000) {
            p = ngx_http_ai_gateway_write_uint(p, reset);
            *p++ = 'm';
            *p++ = 's';

        } else {
            p = ngx_http_ai_gateway_write_uint(p, (reset + 999) / 1000);
            *p++ = 's';
        }

        reset_text.len = p - reset_text.data;

        if (ngx_http_ai_gateway_limit_header(r, &names[k][0],
                                    &ctx->limits[pick[k]].limit_text)
            != NGX_OK
            || ngx_http_ai_gateway_limit_header(r, &names[k][1],
                                                &remaining_text)
               != NGX_OK
            || ngx_http_ai_gateway_limit_header(r, &names[k][2], &reset_text)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * When the oldest use in the counter's window leaves it.  Admission tells
 * it as of before the request; in a window that held no use, the request
 * admitted is that oldest use itself (not "0ms": the window is not whole
 * again until it leaves).
 */

static ngx_msec_t
ngx_http_ai_gateway_limit_reset(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_http_ai_gateway_counter_t *c)
{
    uint64_t  end, now;

    if (c->reset || c->cost <= 0 || !c->found
        || ctx->limit_status == NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED)
    {
        return c->reset;
    }

    /* the charged bucket leaves after the window's slots */
    end = (c->bucket + NGX_HTTP_AI_GATEWAY_SLOTS)
          * ngx_http_ai_gateway_bucket_ms(c->period);
    now = ngx_http_ai_gateway_now_ms();

    return (end > now) ? (ngx_msec_t) (end - now) : 0;
}


/* the upstream's own x-ratelimit-* would contradict ours: ours win */

static void
ngx_http_ai_gateway_limit_clear_headers(ngx_http_request_t *r)
{
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_header_iter_t   it;

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_out.headers, &it)))
    {
        if (h->key.len > sizeof("x-ratelimit-") - 1
            && ngx_strncasecmp(h->key.data, (u_char *) "x-ratelimit-",
                               sizeof("x-ratelimit-") - 1) == 0)
        {
            h->hash = 0;
        }
    }
}


static ngx_int_t
ngx_http_ai_gateway_limit_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value = *value;

    return NGX_OK;
}


/*
 * Once per request, whatever became of it (an answer, an error, a client
 * that left, a redirect): the token reservations become the real total.
 */

void
ngx_http_ai_gateway_limit_settle(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_uint_t                        i;
    ngx_http_ai_gateway_tokens_t      t;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (ctx->settled || ctx->limit_status == NGX_HTTP_AI_GATEWAY_LIMIT_NONE
        || ctx->limit_status == NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED)
    {
        return;
    }

    ctx->settled = 1;

    if (ctx->limit_backend == NGX_HTTP_AI_GATEWAY_BACKEND_NONE) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    ngx_http_ai_gateway_tokens(r, ctx, &t);

    if (ctx->limit_backend == NGX_HTTP_AI_GATEWAY_BACKEND_REDIS) {
        ngx_http_ai_gateway_limit_redis_settle(r, ctx, t.total - ctx->reserved);
        return;
    }

    for (i = 0; i < ctx->nlimits; i++) {
        if (!ctx->limits[i].tokens || !ctx->counters[i].found) {
            continue;
        }

        ngx_http_ai_gateway_shm_settle(mcf->zone->data, &ctx->counters[i],
                                       t.total - ctx->reserved,
                                       r->connection->log);
    }
}


ngx_str_t *
ngx_http_ai_gateway_limit_status(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_uint_t with_type, ngx_pool_t *pool)
{
    ngx_str_t  *s, *status;

    status = &ngx_http_ai_gateway_limit_statuses[ctx->limit_status];

    if (!with_type || ctx->limit_type.len == 0) {
        return status;
    }

    s = ngx_palloc(pool, sizeof(ngx_str_t));
    if (s == NULL) {
        return status;
    }

    s->data = ngx_pnalloc(pool, status->len + 1 + ctx->limit_type.len);
    if (s->data == NULL) {
        return status;
    }

    s->len = ngx_sprintf(s->data, "%V:%V", status, &ctx->limit_type) - s->data;

    return s;
}
