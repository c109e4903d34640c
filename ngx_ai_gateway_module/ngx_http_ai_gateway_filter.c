
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Response inspection: the header filter decides whether and how to look
 * at an answer (JSON or SSE), the body filter feeds what passes to the
 * parsers, incrementally, without holding the answer back.  The one
 * exception is a stream whose usage chunk the gateway asked for on the
 * client's behalf: that chunk is cut out, so the client sees exactly the
 * stream it asked for; only a partial event is held meanwhile.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"


/*
 * While the usage chunk is cut out of a stream, a partial event waits at
 * most this long in memory; provider events are a few hundred bytes.
 */
#define NGX_HTTP_AI_GATEWAY_HOLD_MAX  (256 * 1024)


/*
 * The upstream buffers of one call that are kept busy while a stream's
 * copies wait for the client (see ngx_http_ai_gateway_copied()); proxy
 * passes one or two at a time.
 */
#define NGX_HTTP_AI_GATEWAY_PLEDGE_IN  8

typedef struct {
    ngx_buf_t  *buf;
    u_char     *pos;
} ngx_http_ai_gateway_pledge_t;


/* the byte range of an SSE event to cut out */
typedef struct {
    uint64_t    start;
    uint64_t    end;
    ngx_uint_t  open;      /* ended at a buffer's last byte, a '\r': the
                              '\n' that may follow is cut with it */
} ngx_http_ai_gateway_range_t;


static ngx_int_t ngx_http_ai_gateway_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ai_gateway_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_ai_gateway_feed(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len);
static void ngx_http_ai_gateway_take_usage(ngx_http_ai_gateway_ctx_t *ctx);
static ngx_uint_t ngx_http_ai_gateway_whole_answer(ngx_http_request_t *r,
    size_t len);
static ngx_int_t ngx_http_ai_gateway_keep_tail(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_walk_create(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static void ngx_http_ai_gateway_prefetch(ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_tail_read(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_append_answer(ngx_http_request_t *r,
    ngx_buf_t **bp, const u_char *p, size_t len, size_t max);
static void ngx_http_ai_gateway_set_ttft(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static int ngx_http_ai_gateway_sse_data(void *data, const u_char *p,
    size_t len);
static int ngx_http_ai_gateway_sse_event(void *data, const u_char *name,
    size_t name_len);
static int ngx_http_ai_gateway_sse_chunk(void *data);
static int ngx_http_ai_gateway_end_event(const u_char *name, size_t len);
static int ngx_http_ai_gateway_sse_keepalive(void *data);
static int ngx_http_ai_gateway_guard_sse_data(void *data, const u_char *p,
    size_t len);
static int ngx_http_ai_gateway_guard_sse_event(void *data,
    const u_char *name, size_t name_len);
static int ngx_http_ai_gateway_text(void *data,
    ngx_http_ai_gateway_text_e kind, const u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_hide(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_ai_gateway_translated(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_ai_gateway_guarded(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_ai_gateway_close_drops(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_chain_t *in, uint64_t in_start);
static void ngx_http_ai_gateway_done_drops(ngx_array_t *drops, uint64_t upto);
static ngx_uint_t ngx_http_ai_gateway_kept(ngx_array_t *drops, uint64_t *pos,
    uint64_t end, uint64_t *to);
static ngx_buf_t *ngx_http_ai_gateway_hide_link(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t ***ll);
static ngx_int_t ngx_http_ai_gateway_emit_held(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uint64_t until, ngx_chain_t ***ll);
static ngx_int_t ngx_http_ai_gateway_emit_links(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t *b, uint64_t o, uint64_t upto,
    ngx_chain_t ***ll);
static void ngx_http_ai_gateway_hide_done(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_chain_t *out);
static ngx_int_t ngx_http_ai_gateway_copied(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in);
static ngx_uint_t ngx_http_ai_gateway_copies_busy(ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_pledge(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_pledge_t *taken,
    ngx_uint_t n);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/* "[DONE]" ends OpenAI streams; these events end the others */
static ngx_str_t  ngx_http_ai_gateway_end_events[] = {
    ngx_string("message_stop"),
    ngx_string("response.completed"),
    ngx_string("response.incomplete"),
    ngx_string("response.failed"),
    ngx_null_string
};


ngx_int_t
ngx_http_ai_gateway_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ai_gateway_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_ai_gateway_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_table_elt_t            *h;
    ngx_http_ai_gateway_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_ai_gateway_get_ctx(r);

    if (ctx == NULL || !ctx->inspected) {
        return ngx_http_next_header_filter(r);
    }

    ngx_http_ai_gateway_prefetch(ctx);

    if (ctx->counters && !ctx->limit_headers
        && ctx->limit_backend != NGX_HTTP_AI_GATEWAY_BACKEND_NONE
        && ngx_http_ai_gateway_limit_headers(r, ctx) == NGX_OK)
    {
        ctx->limit_headers = 1;
    }

    if (!ctx->parse) {
        return ngx_http_next_header_filter(r);
    }

    ctx->resp_status = r->headers_out.status;

    if (r->header_only || ctx->resp_active) {
        return ngx_http_next_header_filter(r);
    }

    h = r->headers_out.content_encoding;

    if (h && h->hash && h->value.len
        && ngx_strcasecmp(h->value.data, (u_char *) "identity") != 0)
    {
        /* an upstream that ignored "Accept-Encoding: identity" */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: response in \"%V\" encoding, "
                      "tokens are estimated", &h->value);
        ctx->resp_encoded = 1;

        /* the output guardrail cannot read it: on_error=deny refuses it */
        rc = ngx_http_ai_gateway_guard_header(r, ctx);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DONE) {
            ctx->resp_active = 1;
            r->filter_need_in_memory = 1;
            return NGX_OK;
        }

        return ngx_http_next_header_filter(r);
    }

    if (r->headers_out.content_type.len >= sizeof("text/event-stream") - 1
        && ngx_strncasecmp(r->headers_out.content_type.data,
                           (u_char *) "text/event-stream",
                           sizeof("text/event-stream") - 1)
           == 0)
    {
        ctx->resp_sse = 1;

        /* a stream's events go through the walker's reset and results even
         * when no usage is read; made first: the log handler reads it even
         * after a failure below */
        if (ngx_http_ai_gateway_walk_create(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->sse = ngx_palloc(r->pool, sizeof(ngx_http_ai_gateway_sse_t));
        if (ctx->sse == NULL) {
            return NGX_ERROR;
        }

        ngx_http_ai_gateway_sse_init(ctx->sse, ngx_http_ai_gateway_sse_data,
                                     ngx_http_ai_gateway_sse_event, r);

        if (ctx->hide_usage) {
            /* the stream we pass on is shorter than the upstream's */
            ngx_http_clear_content_length(r);
            ngx_http_clear_accept_ranges(r);
            ngx_http_weak_etag(r);

            ctx->drops = ngx_array_create(r->pool, 1,
                                       sizeof(ngx_http_ai_gateway_range_t));
            if (ctx->drops == NULL) {
                return NGX_ERROR;
            }
        }
    }

    ctx->resp_active = 1;

    /* a buffered answer may sit in a temporary file: we read memory */
    r->filter_need_in_memory = 1;

    if (ctx->translate
        && ngx_http_ai_gateway_translate_header(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_ai_gateway_guard_header(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* the usual chunk of a stream that only the walker reads is walked at
     * once (usage.h); the guardrail and the translation read each event */
    ctx->sse_fast = ctx->resp_sse && ctx->read_usage && ctx->gout == NULL
                    && !ctx->translate;

    /* a JSON answer read for its usage alone (a token budget, metrics),
     * not for records: kept and read from its end (resp_results()), and
     * walked only if that fails: the walker (5.6 KB) is made then */
    ctx->resp_tail = !ctx->resp_sse && ctx->read_usage && !ctx->track
                     && !ctx->infer && ctx->gout == NULL && !ctx->translate;

    /* a JSON answer needs the walker only for its usage */
    if (!ctx->resp_sse && !ctx->resp_tail && ctx->read_usage
        && ngx_http_ai_gateway_walk_create(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->gout && ctx->translate && ctx->resp_sse) {
        ctx->gsse = ngx_palloc(r->pool, sizeof(ngx_http_ai_gateway_sse_t));
        if (ctx->gsse == NULL) {
            return NGX_ERROR;
        }

        ngx_http_ai_gateway_sse_init(ctx->gsse,
                                     ngx_http_ai_gateway_guard_sse_data,
                                     ngx_http_ai_gateway_guard_sse_event, r);
    }

    if (ctx->gout && ctx->resp_sse) {
        /* the guard writes the events: keepalives as comments of its own */
        if (ctx->gsse) {
            ctx->gsse->on_keepalive = ngx_http_ai_gateway_sse_keepalive;

        } else {
            ctx->sse->on_keepalive = ngx_http_ai_gateway_sse_keepalive;
        }
    }

    if (rc == NGX_DONE) {
        /* a JSON answer is judged whole: its header waits for it */
        return NGX_OK;
    }

    if (ctx->translate && !ctx->resp_sse && ctx->gout == NULL) {
        /* a JSON answer is translated whole: its header waits for its
         * length (translated_out()) */
        ctx->translate_held = 1;
        return NGX_OK;
    }

    return ngx_http_next_header_filter(r);
}


/*
 * The answer's header comes long after the request's phases, with many
 * requests in between: what this request left in memory is out of the
 * CPU's caches.  The lines the filters read next (the rest of the ctx's
 * first fields, the counters, the limits) are asked for at once, so that
 * their misses overlap rather than follow one another.
 */

static void
ngx_http_ai_gateway_prefetch(ngx_http_ai_gateway_ctx_t *ctx)
{
#if (__GNUC__ >= 4)
    ngx_uint_t  i;

    __builtin_prefetch((u_char *) ctx + 64);
    __builtin_prefetch((u_char *) ctx + 128);

    for (i = 0; i < ctx->nlimits && ctx->counters; i++) {
        __builtin_prefetch(&ctx->counters[i]);
        __builtin_prefetch((u_char *) &ctx->counters[i]
                           + sizeof(ngx_http_ai_gateway_counter_t) - 1);
        __builtin_prefetch(&ctx->limits[i]);
    }
#endif
}


ngx_int_t
ngx_http_ai_gateway_next_header(ngx_http_request_t *r)
{
    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_ai_gateway_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                   rc;
    ngx_chain_t                *cl;
    ngx_http_ai_gateway_ctx_t  *ctx;

    if (r != r->main) {
        /* the safety model's answer is ours to read: NGX_DECLINED when the
         * subrequest is another module's */
        rc = ngx_http_ai_gateway_guard_safety_read_body(r, in);

        return (rc == NGX_DECLINED) ? ngx_http_next_body_filter(r, in) : rc;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    if (in == NULL) {
        /* a held answer that the safety model has judged goes on now */
        if (ctx != NULL && ngx_http_ai_gateway_guard_waiting(ctx)) {
            return ngx_http_ai_gateway_guarded(r, ctx, NULL);
        }

        if (ctx != NULL && ctx->hold) {
            rc = ngx_http_next_body_filter(r, NULL);

            if (ctx->busy != NULL) {
                /* the client takes more of our links into the upstream's
                 * buffers: those it took go back to proxy */
                ngx_http_ai_gateway_hide_done(ctx, NULL);
                return rc;
            }

            /* the client takes more of our copies: when it has all, the
             * upstream's buffers they came from go back to proxy */
            if (rc == NGX_ERROR
                || ngx_http_ai_gateway_pledge(r, ctx, NULL, 0) != NGX_OK)
            {
                return NGX_ERROR;
            }

            return rc;
        }

        return ngx_http_next_body_filter(r, in);
    }

    if (ctx == NULL || !ctx->resp_active || ctx->resp_done) {
        return ngx_http_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {

        if (ngx_buf_in_memory(cl->buf) && cl->buf->last > cl->buf->pos) {

            if (!ctx->resp_sse && !ctx->ttft_set
                && ctx->resp_status < NGX_HTTP_BAD_REQUEST)
            {
                /* a JSON answer: the first byte of the body */
                ngx_http_ai_gateway_set_ttft(r, ctx);
            }

            if (ngx_http_ai_gateway_feed(r, ctx, cl->buf->pos,
                                         cl->buf->last - cl->buf->pos)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (cl->buf->last_buf) {
            ctx->resp_done = 1;
        }
    }

    if (ctx->translate || ctx->gout != NULL) {
        return ngx_http_ai_gateway_copied(r, ctx, in);
    }

    if (ctx->drops != NULL) {
        return ngx_http_ai_gateway_hide(r, ctx, in);
    }

    if (ctx->hold) {
        /* the cut was given up (an event too large): the stream goes on
         * as it is, after our links */
        rc = ngx_http_next_body_filter(r, in);
        ngx_http_ai_gateway_hide_done(ctx, NULL);
        return rc;
    }

    return ngx_http_next_body_filter(r, in);
}


/*
 * A translation or the output guard: the client gets copies, made as the
 * upstream's bytes come.  On a stream, while the client has not taken all
 * our copies, the upstream's buffers of the call stay busy (their pos put
 * back): proxy then reads no more than its buffers hold, as it does for
 * plain proxy_pass with a slow client, where our copies would otherwise
 * pile up in memory.  They are given back when the client has all.  Only
 * streams: their copies are flushed, so that a write event always comes.
 */

static ngx_int_t
ngx_http_ai_gateway_copied(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t                      rc;
    ngx_uint_t                     n;
    ngx_chain_t                   *cl;
    ngx_http_ai_gateway_pledge_t   taken[NGX_HTTP_AI_GATEWAY_PLEDGE_IN];

    n = 0;

    for (cl = in; ctx->resp_sse && cl; cl = cl->next) {
        if (n < NGX_HTTP_AI_GATEWAY_PLEDGE_IN && ngx_buf_in_memory(cl->buf)
            && cl->buf->last > cl->buf->pos)
        {
            taken[n].buf = cl->buf;
            taken[n].pos = cl->buf->pos;
            n++;
        }
    }

    /* a translation first: the output guard judges what the client gets */

    rc = ctx->translate ? ngx_http_ai_gateway_translated(r, ctx, in)
                        : ngx_http_ai_gateway_guarded(r, ctx, in);

    if (rc == NGX_ERROR) {
        return rc;
    }

    if ((n || ctx->pledges != NULL)
        && ngx_http_ai_gateway_pledge(r, ctx, taken, n) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return rc;
}


static ngx_uint_t
ngx_http_ai_gateway_copies_busy(ngx_http_ai_gateway_ctx_t *ctx)
{
    return ctx->tbusy != NULL || ngx_http_ai_gateway_guard_busy(ctx);
}


/*
 * With our copies still waiting: the n buffers taken in this call are
 * kept busy.  Else every buffer kept so far is given back.
 */

static ngx_int_t
ngx_http_ai_gateway_pledge(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_pledge_t *taken,
    ngx_uint_t n)
{
    ngx_uint_t                     i;
    ngx_chain_t                   *none;
    ngx_http_ai_gateway_pledge_t  *p;

    if (taken == NULL) {
        /* a write event: our buffers the client took come back */
        none = NULL;

        if (ctx->gout != NULL) {
            ngx_http_ai_gateway_guard_update(r, ctx, &none);
        }

        ngx_chain_update_chains(r->pool, &ctx->tfree, &ctx->tbusy, &none,
                                (ngx_buf_tag_t) &ngx_http_ai_gateway_module);
    }

    if (!ngx_http_ai_gateway_copies_busy(ctx)) {
        p = ctx->pledges ? ctx->pledges->elts : NULL;

        for (i = 0; p && i < ctx->pledges->nelts; i++) {
            p[i].buf->pos = p[i].buf->last;
        }

        if (p) {
            ctx->pledges->nelts = 0;
        }

        ctx->hold = 0;

        return NGX_OK;
    }

    if (ctx->pledges == NULL) {
        ctx->pledges = ngx_array_create(r->pool, 4,
                                        sizeof(ngx_http_ai_gateway_pledge_t));
        if (ctx->pledges == NULL) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < n; i++) {
        /* only what we took: a buffer passed on as it is is not ours */
        if (taken[i].buf->pos != taken[i].buf->last) {
            continue;
        }

        p = ngx_array_push(ctx->pledges);
        if (p == NULL) {
            return NGX_ERROR;
        }

        *p = taken[i];
        p->buf->pos = taken[i].pos;
    }

    ctx->hold = (ctx->pledges->nelts != 0);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ai_gateway: %ui upstream buffers kept busy until the "
                   "client takes our copies", ctx->pledges->nelts);

    return NGX_OK;
}


/* what the client gets, through the output guardrail */

static ngx_int_t
ngx_http_ai_gateway_guarded(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t     rc;
    ngx_chain_t  *out;

    out = NULL;

    rc = ngx_http_ai_gateway_guard_body(r, ctx, in, &out);

    if (rc == NGX_DECLINED) {
        /* an answer too large to hold goes on as it comes */
        return ngx_http_next_body_filter(r, in);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (out == NULL && ngx_http_ai_gateway_guard_held(ctx)) {
        return NGX_OK;
    }

    rc = ngx_http_next_body_filter(r, out);

    ngx_http_ai_gateway_guard_update(r, ctx, &out);

    return rc;
}


/* what the client gets instead of the Anthropic answer */

static ngx_int_t
ngx_http_ai_gateway_translated(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t     rc;
    ngx_chain_t  *cl, *out;

    out = NULL;

    if (ngx_http_ai_gateway_translate_body(r, ctx, in, &out) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->gout != NULL) {
        /* the translated stream's events go to the guard one by one */
        for (cl = out; ctx->gsse && cl; cl = cl->next) {
            if (ngx_http_ai_gateway_sse_feed(ctx->gsse, cl->buf->pos,
                                             cl->buf->last - cl->buf->pos)
                != 0)
            {
                return NGX_ERROR;
            }
        }

        rc = ngx_http_ai_gateway_guarded(r, ctx, out);

    } else {
        rc = ngx_http_next_body_filter(r, out);
    }

    ngx_chain_update_chains(r->pool, &ctx->tfree, &ctx->tbusy, &out,
                            (ngx_buf_tag_t) &ngx_http_ai_gateway_module);

    return rc;
}


static ngx_int_t
ngx_http_ai_gateway_feed(ngx_http_request_t *r, ngx_http_ai_gateway_ctx_t *ctx,
    u_char *p, size_t len)
{
    int                               rc;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (ctx->resp_sse) {
        if (ctx->walk == NULL) {
            /* the header filter failed before it made the walker */
            return NGX_OK;
        }

        /* with sse_fast, sse_event() pauses the parser after each event
         * (NGX_HTTP_AI_GATEWAY_WALK_PAUSE): only walk_stream() feeds it */
        rc = ctx->sse_fast
             ? ngx_http_ai_gateway_walk_stream(ctx->sse, ctx->walk, p, len,
                                               ngx_http_ai_gateway_sse_chunk,
                                               ngx_http_ai_gateway_end_event, r)
             : ngx_http_ai_gateway_sse_feed(ctx->sse, p, len);

        if (rc != 0) {
            return NGX_ERROR;
        }

        /* with ctx->drops, hide() passes the bytes on or holds them */

        return NGX_OK;
    }

    if (ctx->resp_tail
        && ngx_http_ai_gateway_keep_tail(r, ctx, p, len) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (ctx->read_usage && !ctx->resp_tail && ctx->walk != NULL
        && !ctx->walk->malformed)
    {
        (void) ngx_http_ai_gateway_walk_feed(ctx->walk, p, len);
        ngx_http_ai_gateway_take_usage(ctx);
    }

    if (ctx->translate && !ctx->translate_failed && !ctx->translate_done) {

        if (ctx->tjson == NULL && ngx_http_ai_gateway_whole_answer(r, len)) {
            /* the whole answer in its first buffer, as usual: translated
             * there, rather than copied and translated at its end */
            ngx_http_ai_gateway_translate_json(r, ctx, p, len);

        } else if (ngx_http_ai_gateway_append_answer(r, &ctx->tjson, p, len,
                                        NGX_HTTP_AI_GATEWAY_TRANSLATE_JSON_MAX)
                   != NGX_OK)
        {
            ctx->translate_failed = 1;
        }
    }

    if (ctx->infer && !ctx->capture_overflow) {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

        if (ngx_http_ai_gateway_append_answer(r, &ctx->capture, p, len,
                                              mcf->max_payload)
            == NGX_DECLINED)
        {
            ctx->capture_overflow = 1;
        }
    }

    return NGX_OK;
}


static void
ngx_http_ai_gateway_take_usage(ngx_http_ai_gateway_ctx_t *ctx)
{
    if (!ctx->walk->usage_new) {
        return;
    }

    ctx->walk->usage_new = 0;

    (void) ngx_http_ai_gateway_usage_parse(&ctx->usage, ctx->walk->usage,
                                           ctx->walk->usage_len);
}


/*
 * The first buffer of an answer holds all of it (its Content-Length), as
 * usual: it can be read in place, with no copy kept for later.
 */

static ngx_uint_t
ngx_http_ai_gateway_whole_answer(ngx_http_request_t *r, size_t len)
{
    return r->upstream != NULL
           && r->upstream->headers_in.content_length_n == (off_t) len;
}


/*
 * A JSON answer whose usage alone is wanted is kept, not walked: its usage
 * is read from its end (tail_read()).  An answer whole in its first buffer
 * (its Content-Length) is read there at once, without a copy.  An answer
 * larger than TAIL_MAX is walked: what was kept, then (NGX_DECLINED) the
 * rest as it comes.
 */

static ngx_int_t
ngx_http_ai_gateway_keep_tail(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len)
{
    ngx_buf_t  *b;

    if (ctx->tail == NULL && ngx_http_ai_gateway_whole_answer(r, len)) {
        /* the whole answer in its first buffer, as usual: read now, in
         * place, rather than copied and read at settlement */
        ctx->resp_tail = 0;
        return ngx_http_ai_gateway_tail_read(r, ctx, p, len);
    }

    if (ngx_http_ai_gateway_append_answer(r, &ctx->tail, p, len,
                                          NGX_HTTP_AI_GATEWAY_TAIL_MAX)
        == NGX_OK)
    {
        return NGX_OK;
    }

    ctx->resp_tail = 0;

    if (ngx_http_ai_gateway_walk_create(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->tail != NULL) {
        b = ctx->tail;
        (void) ngx_http_ai_gateway_walk_feed(ctx->walk, b->pos,
                                             b->last - b->pos);
        ngx_http_ai_gateway_take_usage(ctx);
    }

    return NGX_DECLINED;
}


/*
 * append() for an answer kept whole: its first buffer has the upstream's
 * Content-Length, when it gave one that fits, else room for what came and
 * some more.  A usual answer then takes one allocation of its size from
 * the pool, where append()'s first 4 KiB is a malloc() (larger than what
 * the pool hands out itself) and, for a translation, a copy more.
 */

static ngx_int_t
ngx_http_ai_gateway_append_answer(ngx_http_request_t *r, ngx_buf_t **bp,
    const u_char *p, size_t len, size_t max)
{
    off_t   n;
    size_t  size;

    if (*bp == NULL && len <= max) {
        n = r->upstream ? r->upstream->headers_in.content_length_n
                        : r->headers_out.content_length_n;

        size = (n >= (off_t) len && (uint64_t) n <= max)
               ? (size_t) n : ngx_min(ngx_max(len, 1024), max);

        *bp = ngx_create_temp_buf(r->pool, size);
        if (*bp == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_http_ai_gateway_append(r, bp, p, len, max);
}


static ngx_int_t
ngx_http_ai_gateway_walk_create(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_walk_t  *walk;

    walk = ngx_palloc(r->pool, sizeof(ngx_http_ai_gateway_walk_t));
    if (walk == NULL) {
        return NGX_ERROR;
    }

    ngx_http_ai_gateway_walk_init(walk,
                                  ctx->resp_sse ? NGX_HTTP_AI_GATEWAY_WALK_SSE
                                                : NGX_HTTP_AI_GATEWAY_WALK_JSON,
                                  ctx->infer && ctx->resp_sse
                                  ? ngx_http_ai_gateway_text : NULL,
                                  r);

    /* set once initialized: the log handler reads it */
    ctx->walk = walk;

    return NGX_OK;
}


/*
 * The usage of a whole answer, read from its end (usage_find_tail()): the
 * usage and what follows it, where the walker reads every byte.  What is
 * not found this way (no usage, an embedding's without an output count)
 * gets a walker, and NGX_DECLINED: the caller walks the answer.
 */

static ngx_int_t
ngx_http_ai_gateway_tail_read(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len)
{
    ngx_http_ai_gateway_usage_t  u;

    u = ctx->usage;

    if (ngx_http_ai_gateway_usage_find_tail(&ctx->usage, p, len) == 0) {
        if (ctx->usage.output >= 0) {
            return NGX_OK;
        }

        ctx->usage = u;
    }

    return (ngx_http_ai_gateway_walk_create(r, ctx) == NGX_OK)
           ? NGX_DECLINED : NGX_ERROR;
}


/*
 * The walker's results, whole: called wherever they are read (the
 * variables, the records, settlement).  A kept answer's usage is read
 * from its end when the answer is whole; otherwise the answer is walked,
 * as it would have been.
 */

void
ngx_http_ai_gateway_resp_results(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_buf_t  *b;

    if (ctx->resp_tail) {
        /* whatever comes after this is walked */
        ctx->resp_tail = 0;
        b = ctx->tail;

        if (b == NULL) {
            (void) ngx_http_ai_gateway_walk_create(r, ctx);
            return;
        }

        if (ctx->resp_done) {
            rc = ngx_http_ai_gateway_tail_read(r, ctx, b->pos,
                                               b->last - b->pos);

        } else {
            rc = (ngx_http_ai_gateway_walk_create(r, ctx) == NGX_OK)
                 ? NGX_DECLINED : NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            (void) ngx_http_ai_gateway_walk_feed(ctx->walk, b->pos,
                                                 b->last - b->pos);
            ngx_http_ai_gateway_take_usage(ctx);
        }

        return;
    }

    if (ctx->walk == NULL) {
        return;
    }

    /* a stream cut within a chunk's prefix: its bytes still count */
    (void) ngx_http_ai_gateway_walk_flush(ctx->walk);
}


static void
ngx_http_ai_gateway_set_ttft(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_time_t      *tp;
    ngx_msec_int_t   ms;

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ctx->ttft = (ngx_msec_t) ngx_max(ms, 0);
    ctx->ttft_set = 1;
}


static int
ngx_http_ai_gateway_sse_data(void *data, const u_char *p, size_t len)
{
    ngx_http_request_t         *r = data;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    /* a translation or a guardrail alone needs the events, not the usage */
    if (ctx->read_usage && !ctx->walk->malformed) {
        (void) ngx_http_ai_gateway_walk_feed(ctx->walk, p, len);
    }

    if (ctx->walk->text_seen && !ctx->ttft_set) {
        ngx_http_ai_gateway_set_ttft(r, ctx);
    }

    if (ctx->gout && !ctx->translate
        && ngx_http_ai_gateway_guard_data(r, ctx, p, len) != NGX_OK)
    {
        return -1;
    }

    if (ctx->translate && !ctx->translate_failed
        && ngx_http_ai_gateway_append(r, &ctx->tevent, p, len,
                                      NGX_HTTP_AI_GATEWAY_TRANSLATE_EVENT_MAX)
           != NGX_OK)
    {
        ctx->translate_failed = 1;
    }

    /* the first bytes, for "[DONE]": a constant size, copied inline */
    if (ctx->sse_head_len == 0 && len >= sizeof(ctx->sse_head)) {
        ngx_memcpy(ctx->sse_head, p, sizeof(ctx->sse_head));
        ctx->sse_head_len = sizeof(ctx->sse_head);

    } else {
        while (len-- && ctx->sse_head_len < sizeof(ctx->sse_head)) {
            ctx->sse_head[ctx->sse_head_len++] = *p++;
        }
    }

    return 0;
}


static int
ngx_http_ai_gateway_sse_event(void *data, const u_char *name, size_t name_len)
{
    ngx_http_request_t           *r = data;
    ngx_http_ai_gateway_ctx_t    *ctx;
    ngx_http_ai_gateway_range_t  *drop;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    if (ctx->sse_head_len == sizeof("[DONE]") - 1
        && ctx->sse_head[0] == '['
        && ngx_strncmp(ctx->sse_head, "[DONE]", sizeof("[DONE]") - 1) == 0)
    {
        ctx->resp_end_event = 1;
    }

    if (ngx_http_ai_gateway_end_event(name, name_len)) {
        ctx->resp_end_event = 1;
    }

    if (ctx->gout && !ctx->translate
        && ngx_http_ai_gateway_guard_event(r, ctx, name, name_len,
                                           ctx->walk->usage_new
                                           && !ctx->walk->choice_seen
                                           && ctx->hide_usage)
           != NGX_OK)
    {
        return -1;
    }

    /*
     * With include_usage, every OpenAI chunk carries "usage": null, and
     * only the last one, with "choices": [], a usage object.  Some
     * OpenAI-compatible servers (Gemini's, Mistral's) put the usage on
     * their last chunk with text or a finish reason: a chunk whose
     * "choices" has an element goes on whole, usage and all.
     */
    if (ctx->walk->usage_new && !ctx->walk->choice_seen && ctx->drops != NULL)
    {
        drop = ngx_array_push(ctx->drops);
        if (drop == NULL) {
            return -1;
        }

        drop->start = ctx->sse->event_start;
        drop->end = ctx->sse->offset;
        drop->open = ctx->sse->after_cr;
    }

    ngx_http_ai_gateway_take_usage(ctx);

    if (ctx->translate) {
        (void) ngx_http_ai_gateway_translate_event(r, ctx, name, name_len);
    }

    ctx->sse_head_len = 0;

    ngx_http_ai_gateway_walk_reset(ctx->walk);

    /* walk_stream() takes the next event, if it is a usual chunk */
    return ctx->sse_fast ? NGX_HTTP_AI_GATEWAY_WALK_PAUSE : 0;
}


/* after a usual chunk that walk_stream() walked: what sse_data() and
 * sse_event() do for one */

static int
ngx_http_ai_gateway_sse_chunk(void *data)
{
    ngx_http_request_t         *r = data;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    if (ctx->walk->text_seen && !ctx->ttft_set) {
        ngx_http_ai_gateway_set_ttft(r, ctx);
    }


    ngx_http_ai_gateway_walk_reset(ctx->walk);

    return 0;
}


static int
ngx_http_ai_gateway_sse_keepalive(void *data)
{
    ngx_http_request_t         *r = data;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    return ngx_http_ai_gateway_guard_keepalive(r, ctx) == NGX_OK ? 0 : -1;
}


/* the translated stream, read again for the output guard */

static int
ngx_http_ai_gateway_guard_sse_data(void *data, const u_char *p, size_t len)
{
    ngx_http_request_t         *r = data;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    return ngx_http_ai_gateway_guard_data(r, ctx, p, len) == NGX_OK ? 0 : -1;
}


static int
ngx_http_ai_gateway_guard_sse_event(void *data, const u_char *name,
    size_t name_len)
{
    ngx_http_request_t         *r = data;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    /* the translation has left out what the client did not ask for */
    return ngx_http_ai_gateway_guard_event(r, ctx, name, name_len, 0)
           == NGX_OK ? 0 : -1;
}


static int
ngx_http_ai_gateway_text(void *data, ngx_http_ai_gateway_text_e kind,
    const u_char *p, size_t len)
{
    ngx_http_request_t               *r = data;
    ngx_buf_t                        *b, **bp;
    ngx_http_ai_gateway_ctx_t        *ctx;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    /* the output guardrail records what the client got, masked */
    if (ctx->capture_overflow || ctx->gout) {
        return 0;
    }

    bp = (kind == NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS) ? &ctx->capture_args
                                                     : &ctx->capture;

    /* the walker writes what fits itself (sink_last): here is the rest */

    if (ngx_http_ai_gateway_append(r, bp, p, len, mcf->max_payload)
        == NGX_DECLINED)
    {
        ctx->capture_overflow = 1;

        if (ctx->walk) {
            ctx->walk->sink_last[NGX_HTTP_AI_GATEWAY_TEXT_CONTENT] = NULL;
            ctx->walk->sink_last[NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS] = NULL;
        }

        return 0;
    }

    if (ctx->walk && *bp) {
        /* the next pieces go straight to the buffer, up to the room it
         * has and max_payload */
        b = *bp;
        ctx->walk->sink_last[kind] = &b->last;
        ctx->walk->sink_end[kind] = ngx_min(b->end,
                                            b->pos + mcf->max_payload);
    }

    return 0;
}


/*
 * Appends to a growing buffer of at most max bytes (NGX_DECLINED beyond);
 * it doubles, so that capture costs O(n) for n bytes.
 */

ngx_int_t
ngx_http_ai_gateway_append(ngx_http_request_t *r, ngx_buf_t **bp,
    const u_char *p, size_t len, size_t max)
{
    size_t      size, used;
    ngx_buf_t  *b, *nb;

    b = *bp;
    used = b ? (size_t) (b->last - b->pos) : 0;

    if (len > max - used) {
        return NGX_DECLINED;
    }

    if (b == NULL || (size_t) (b->end - b->last) < len) {
        size = (b == NULL) ? 4096 : (size_t) (b->end - b->start) * 2;
        size = ngx_max(size, used + len);
        size = ngx_min(size, max);

        nb = ngx_create_temp_buf(r->pool, size);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        if (b) {
            nb->last = ngx_cpymem(nb->last, b->pos, used);
            ngx_pfree(r->pool, b->start);
        }

        *bp = nb;
        b = nb;
    }

    b->last = ngx_cpymem(b->last, p, len);

    return NGX_OK;
}


/*
 * The client did not ask for usage in its stream, so the usage chunk we
 * asked for is cut out.  Bytes are passed on up to the end of the last
 * whole event, less the cut ones; a partial event waits in ctx->held.
 *
 * What is passed on from the upstream's buffers is not copied: our links
 * point into them, and the last link into a buffer is its shadow.  That
 * buffer stays busy (pos < last) until the client has taken our link, so
 * that proxy does not read into it meanwhile: a slow client slows the
 * upstream down, as with plain proxy_pass.  Only a partial event at the
 * end of a buffer (a few hundred bytes) is copied, into ctx->held.
 */

static ngx_int_t
ngx_http_ai_gateway_hide(ngx_http_request_t *r, ngx_http_ai_gateway_ctx_t *ctx,
    ngx_chain_t *in)
{
    size_t        len;
    uint64_t      upto, in_start, o;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_uint_t    last_buf, last_in_chain, flush, stop;
    ngx_chain_t  *cl, *out, **ll;

    last_buf = 0;
    last_in_chain = 0;
    flush = 0;
    len = 0;

    for (cl = in; cl; cl = cl->next) {
        last_buf |= cl->buf->last_buf;
        last_in_chain |= cl->buf->last_in_chain;
        flush |= cl->buf->flush;

        if (ngx_buf_in_memory(cl->buf)) {
            len += cl->buf->last - cl->buf->pos;
        }
    }

    /* the feed has parsed all of in: it began at in_start */
    in_start = ctx->sse->offset - len;

    /* up to the last blank line: whole events, and blocks without data
     * (keepalive comments) at once */
    upto = last_buf ? ctx->sse->offset : ctx->sse->event_start;
    stop = 0;

    /* what is held: the partial event after the last whole one */
    if (ctx->sse->offset - ctx->sse->event_start
        > NGX_HTTP_AI_GATEWAY_HOLD_MAX)
    {
        /*
         * An event larger than we hold back (no usage chunk is): it goes
         * on as it is, and so does the rest of the stream.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: an SSE event over %uz bytes, the usage "
                      "chunk is no longer cut from this stream",
                      (size_t) NGX_HTTP_AI_GATEWAY_HOLD_MAX);
        upto = ctx->sse->offset;
        stop = 1;
    }

    ngx_http_ai_gateway_close_drops(ctx, in, in_start);

    out = NULL;
    ll = &out;

    /* what was held, up to upto, is copied out */

    if (ngx_http_ai_gateway_emit_held(r, ctx, ngx_min(upto, in_start), &ll)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the buffers: links up to upto, the rest held */

    o = in_start;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (!ngx_buf_in_memory(b)) {
            continue;
        }

        len = b->last - b->pos;

        if (ngx_http_ai_gateway_emit_links(r, ctx, b, o, upto, &ll)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (o + len > upto
            && ngx_http_ai_gateway_append(r, &ctx->held,
                                 b->last - (size_t) (o + len - ngx_max(o, upto)),
                                 (size_t) (o + len - ngx_max(o, upto)),
                                 (size_t) -1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        o += len;
    }

    if (upto > ctx->held_start) {
        ctx->held_start = upto;
        ngx_http_ai_gateway_done_drops(ctx->drops, upto);
    }

    if (stop) {
        ctx->drops = NULL;
    }

    /* proxy's flush (after the header of an unbuffered answer, and with
     * each read) goes on too: the header and keepalives are not held */
    if (last_buf || last_in_chain || flush) {
        if (out == NULL) {
            if (ngx_http_ai_gateway_hide_link(r, ctx, &ll) == NULL) {
                return NGX_ERROR;
            }
        }

        for (cl = out; cl->next; cl = cl->next) { /* void */ }

        cl->buf->last_buf = last_buf;
        cl->buf->last_in_chain = last_in_chain;
        cl->buf->flush |= flush;
    }

    rc = ngx_http_next_body_filter(r, out);

    ngx_http_ai_gateway_hide_done(ctx, out);

    return rc;
}


/*
 * A cut event whose blank line ended at a buffer's last byte, a '\r', was
 * dispatched there; the '\n' that may start the next buffer is part of its
 * line end, and goes with it once it is here.  (The parser makes that byte
 * part of no event.)
 */

static void
ngx_http_ai_gateway_close_drops(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_chain_t *in, uint64_t in_start)
{
    u_char                       *p;
    uint64_t                      o;
    ngx_uint_t                    i;
    ngx_chain_t                  *cl;
    ngx_http_ai_gateway_range_t  *d;

    d = ctx->drops->elts;

    for (i = 0; i < ctx->drops->nelts; i++) {

        if (!d[i].open || d[i].end >= ctx->sse->offset) {
            continue;
        }

        d[i].open = 0;
        p = NULL;

        if (d[i].end < in_start) {
            /* held since the last call ([held_start, in_start)) */
            if (ctx->held != NULL && d[i].end >= ctx->held_start) {
                p = ctx->held->pos + (d[i].end - ctx->held_start);
            }

        } else {
            o = in_start;

            for (cl = in; cl; cl = cl->next) {
                if (!ngx_buf_in_memory(cl->buf)) {
                    continue;
                }

                if (d[i].end < o + (cl->buf->last - cl->buf->pos)) {
                    p = cl->buf->pos + (d[i].end - o);
                    break;
                }

                o += cl->buf->last - cl->buf->pos;
            }
        }

        if (p != NULL && *p == '\n') {
            d[i].end++;
        }
    }
}


/* the cuts passed on before upto are done; an open one waits for its '\n' */

static void
ngx_http_ai_gateway_done_drops(ngx_array_t *drops, uint64_t upto)
{
    ngx_uint_t                    i, n;
    ngx_http_ai_gateway_range_t  *d;

    d = drops->elts;
    n = 0;

    for (i = 0; i < drops->nelts; i++) {
        if (d[i].end > upto || d[i].open) {
            d[n++] = d[i];
        }
    }

    drops->nelts = n;
}


/* the next stretch of [*pos, end) that no cut covers; 0: none is left */

static ngx_uint_t
ngx_http_ai_gateway_kept(ngx_array_t *drops, uint64_t *pos, uint64_t end,
    uint64_t *to)
{
    uint64_t                      limit;
    ngx_uint_t                    i;
    ngx_http_ai_gateway_range_t  *d;

    /* the cuts are whole events, in stream order, none overlapping */

    d = drops->elts;
    limit = end;

    for (i = 0; i < drops->nelts; i++) {
        if (d[i].end <= *pos) {
            continue;
        }

        if (d[i].start <= *pos) {
            *pos = d[i].end;
            continue;
        }

        limit = ngx_min(d[i].start, end);
        break;
    }

    if (*pos >= limit) {
        return 0;
    }

    *to = limit;

    return 1;
}


/* a link of ours at *ll: a buffer without memory of its own */

static ngx_buf_t *
ngx_http_ai_gateway_hide_link(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t ***ll)
{
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &ctx->sfree);
    if (cl == NULL) {
        return NULL;
    }

    ngx_memzero(cl->buf, sizeof(ngx_buf_t));
    cl->buf->tag = (ngx_buf_tag_t) &ngx_http_ai_gateway_module;
    cl->next = NULL;

    **ll = cl;
    *ll = &cl->next;

    return cl->buf;
}


/* the held bytes before the stream offset until, less the cuts: copied
 * into one buffer of ours, and no longer held */

static ngx_int_t
ngx_http_ai_gateway_emit_held(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uint64_t until, ngx_chain_t ***ll)
{
    size_t        need, len;
    uint64_t      pos, to;
    ngx_buf_t    *b, *held;
    ngx_chain_t  *cl;

    held = ctx->held;

    if (held == NULL || until <= ctx->held_start) {
        return NGX_OK;
    }

    need = (size_t) (until - ctx->held_start);
    pos = ctx->held_start;
    b = NULL;

    while (ngx_http_ai_gateway_kept(ctx->drops, &pos, until, &to)) {

        if (b == NULL) {
            cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            b = cl->buf;

            if (b->start == NULL || (size_t) (b->end - b->start) < need) {
                ngx_memzero(b, sizeof(ngx_buf_t));

                b->start = ngx_palloc(r->pool, ngx_max(need, 1024));
                if (b->start == NULL) {
                    return NGX_ERROR;
                }

                b->end = b->start + ngx_max(need, 1024);
            }

            b->pos = b->start;
            b->last = b->start;
            b->temporary = 1;
            b->flush = 1;
            b->tag = (ngx_buf_tag_t) &ngx_http_ai_gateway_module;

            cl->next = NULL;
            **ll = cl;
            *ll = &cl->next;
        }

        b->last = ngx_cpymem(b->last, held->pos + (pos - ctx->held_start),
                             (size_t) (to - pos));
        pos = to;
    }

    /* what is left is a partial event: to the front */

    len = (size_t) (held->last - held->pos) - need;
    ngx_memmove(held->pos, held->pos + need, len);
    held->last = held->pos + len;
    ctx->held_start = until;

    return NGX_OK;
}


/*
 * Links into the upstream's buffer b, at stream offset o, for its bytes
 * before upto less the cuts.  The last link is b's shadow: b is taken
 * (pos = last) when the client has taken that link, in hide_done(); a
 * buffer without links is taken now.
 */

static ngx_int_t
ngx_http_ai_gateway_emit_links(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t *b, uint64_t o, uint64_t upto,
    ngx_chain_t ***ll)
{
    uint64_t    pos, end, to;
    ngx_buf_t  *l;

    pos = o;
    end = ngx_min(o + (b->last - b->pos), upto);
    l = NULL;

    while (pos < end && ngx_http_ai_gateway_kept(ctx->drops, &pos, end, &to)) {
        l = ngx_http_ai_gateway_hide_link(r, ctx, ll);
        if (l == NULL) {
            return NGX_ERROR;
        }

        l->memory = 1;
        l->pos = b->pos + (pos - o);
        l->last = b->pos + (to - o);
        pos = to;
    }

    if (l == NULL) {
        b->pos = b->last;
        return NGX_OK;
    }

    l->shadow = b;
    l->last_shadow = 1;
    l->flush = 1;
    l->recycled = b->recycled;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ai_gateway: links into upstream buffer %p, %O bytes",
                   b->pos, (off_t) (end - o));

    return NGX_OK;
}


/* our links the client has taken: their buffers back to their owners */

static void
ngx_http_ai_gateway_hide_done(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_chain_t *out)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    for (ll = &ctx->busy; *ll; ll = &(*ll)->next) { /* void */ }

    *ll = out;

    while (ctx->busy) {
        cl = ctx->busy;
        b = cl->buf;

        if (ngx_buf_size(b) != 0) {
            break;
        }

        ctx->busy = cl->next;

        if (b->shadow) {
            b->shadow->pos = b->shadow->last;
            b->shadow = NULL;
        }

        if (b->temporary) {
            cl->next = ctx->free;
            ctx->free = cl;

        } else {
            cl->next = ctx->sfree;
            ctx->sfree = cl;
        }
    }

    ctx->hold = (ctx->busy != NULL);
}


/* an event that ends a stream: the walker's fast path leaves those to us */

static int
ngx_http_ai_gateway_end_event(const u_char *name, size_t len)
{
    ngx_str_t  *e;

    for (e = ngx_http_ai_gateway_end_events; e->len; e++) {
        if (e->len == len && ngx_strncmp(e->data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}
