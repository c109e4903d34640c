
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The request context.  An internal redirect (error_page ... = @fallback,
 * try_files, rewrite ... last) clears every module's ctx, but the facts of
 * the request must go on: the ctx is registered as a pool cleanup and found
 * again there, as the realip module does.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"


static void ngx_http_ai_gateway_ctx_cleanup(void *data);


ngx_http_ai_gateway_ctx_t *
ngx_http_ai_gateway_create_ctx(ngx_http_request_t *r)
{
    u_char                     *p;
    ngx_pool_cleanup_t         *cln;
    ngx_http_ai_gateway_ctx_t  *ctx;

    /*
     * On a cache line's start, so that the fields the answer's filters
     * read (the first ones) take as few lines as they can: 63 bytes more
     * from the pool, where ngx_pmemalign() would be a malloc() a request.
     */

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_ctx_t)
                             + NGX_HTTP_AI_GATEWAY_CTX_ALIGN - 1);
    if (p == NULL) {
        return NULL;
    }

    ctx = (ngx_http_ai_gateway_ctx_t *)
              ngx_align_ptr(p, NGX_HTTP_AI_GATEWAY_CTX_ALIGN);

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->state = NGX_HTTP_AI_GATEWAY_STATE_NEW;
     *     ctx->status = 0;
     *     ctx->body = NULL;
     *     ctx->api = NGX_HTTP_AI_GATEWAY_API_UNKNOWN;
     *     ctx->model = { 0, NULL };
     *     ...
     */

    ctx->stream = -1;
    ctx->max_tokens = -1;

    ngx_http_ai_gateway_usage_init(&ctx->usage);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_ai_gateway_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_ai_gateway_module);

    return ctx;
}


ngx_http_ai_gateway_ctx_t *
ngx_http_ai_gateway_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    /* subrequests share the main request's pool, and so its cleanups */

    if (ctx != NULL || r != r->main || !(r->internal || r->filter_finalize))
    {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_ai_gateway_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_ai_gateway_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_ai_gateway_ctx_cleanup(void *data)
{
    (void) data;

    /*
     * Nothing to release yet: the body and the facts live in r->pool.
     * The handler's identity is what marks the ctx in the cleanup list.
     */
}


/* walks a header list: it->part starts NULL; NULL at the end */

ngx_table_elt_t *
ngx_http_ai_gateway_header_next(ngx_list_t *list,
    ngx_http_ai_gateway_header_iter_t *it)
{
    ngx_table_elt_t  *h;

    if (it->part == NULL) {
        it->part = &list->part;
        it->i = 0;
    }

    while (it->i >= it->part->nelts) {
        if (it->part->next == NULL) {
            return NULL;
        }

        it->part = it->part->next;
        it->i = 0;
    }

    h = it->part->elts;

    return &h[it->i++];
}


/*
 * Decimal digits of n at p, returning the end: ngx_sprintf() parses its
 * format on each call, and the records and limit headers write a dozen
 * numbers per request.
 */

u_char *
ngx_http_ai_gateway_write_uint(u_char *p, uint64_t n)
{
    u_char   buf[NGX_INT64_LEN];
    u_char  *q;

    q = ngx_http_ai_gateway_json_digits(buf + NGX_INT64_LEN, n);

    return ngx_cpymem(p, q, buf + NGX_INT64_LEN - q);
}


/* a signed number, as write_uint() writes an unsigned one */

u_char *
ngx_http_ai_gateway_write_int(u_char *p, int64_t n)
{
    if (n < 0) {
        *p++ = '-';
        return ngx_http_ai_gateway_write_uint(p, (uint64_t) 0 - (uint64_t) n);
    }

    return ngx_http_ai_gateway_write_uint(p, (uint64_t) n);
}


/*
 * A hash of a key, eight bytes a step, for the metrics' series and the
 * limits' counters, which are looked up several times per request
 * (ngx_crc32_short() takes a byte at two table lookups).  Collisions are
 * resolved by comparing the keys.
 */

uint32_t
ngx_http_ai_gateway_hash(const u_char *p, size_t len)
{
    uint64_t  h, w;

    h = 0x9e3779b97f4a7c15ULL ^ len;

    while (len >= 8) {
        ngx_memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        p += 8;
        len -= 8;
    }

    w = 0;
    ngx_memcpy(&w, p, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;

    return (uint32_t) h;
}
