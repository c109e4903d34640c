
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The output guardrail.
 *
 * A JSON answer is held whole (up to NGX_HTTP_AI_GATEWAY_GUARD_JSON_MAX),
 * its header too, so that a block can still answer 400: then it is sent
 * as it came, masked, or replaced by the error.
 *
 * A stream goes on event by event.  The text of each delta (OpenAI chat
 * and completions chunks, Responses text deltas, Anthropic text deltas) is
 * held back while it may be the beginning of a match: the last word, and
 * a number's groups before it (phone numbers, cards and IBANs have
 * spaces), at most NGX_HTTP_AI_GATEWAY_GUARD_HOLD bytes.  The event goes
 * out at once with the text that is safe, masked; the rest joins the next
 * delta, or the event that ends the text (the finish_reason chunk, or an
 * extra text delta before Anthropic's content_block_stop).  Keywords and
 * patterns are also looked for across deltas, with the last bytes already
 * sent.  A block ends the stream with an error event in the provider's
 * shape and the end of the stream.  Tool-call arguments are masked piece
 * by piece, without holding back.
 *
 * With safety=, a JSON answer that passed the other checks is shown to the
 * safety model (a subrequest, as for the input) while it is held: the
 * request is marked buffered, so that nginx does not finalize it, and
 * ngx_http_writer() calls the body filter again (with no data) once the
 * subrequest is done; then the answer, or the error, goes on.  Streams
 * are not shown to it: their text has reached the client before it is
 * whole (see README, "Guardrails").
 *
 * Where an Anthropic answer is translated, the guard judges what the
 * client gets: the translated JSON answer, or the translated stream read
 * by a second SSE parser (ngx_http_ai_gateway_filter.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_guard.h"


#define NGX_HTTP_AI_GATEWAY_GUARD_JSON_MAX   (8 * 1024 * 1024)
#define NGX_HTTP_AI_GATEWAY_GUARD_EVENT_MAX  (1024 * 1024)
#define NGX_HTTP_AI_GATEWAY_GUARD_HOLD       256
#define NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK   256
#define NGX_HTTP_AI_GATEWAY_GUARD_TEXTS      8

/* r->buffered while a JSON answer waits for the safety model (the bits
 * 0x01, 0x02 and 0x04 are the SSI, sub and copy filters'; the image
 * filter uses 0x08 too, in c->buffered) */
#define NGX_HTTP_AI_GATEWAY_BUFFERED         0x08

/* the guard's buffers: their own tag, as the translation's (which the
 * guard reads where answers are translated) have the module's */
#define NGX_HTTP_AI_GATEWAY_GOUT_TAG                                          \
    ((ngx_buf_tag_t) &ngx_http_ai_gateway_gout_tag)

static u_char  ngx_http_ai_gateway_gout_tag;


/* a delta's working copies: its text, the text scanned, the text masked */
#define NGX_HTTP_AI_GATEWAY_GOUT_ALL      0
#define NGX_HTTP_AI_GATEWAY_GOUT_SCAN     1
#define NGX_HTTP_AI_GATEWAY_GOUT_MASKED   2
#define NGX_HTTP_AI_GATEWAY_GOUT_SCRATCH  3


/* one text being streamed: a choice, a content block */
typedef struct {
    u_char                        key[24];
    size_t                        key_len;
    ngx_buf_t                    *held;
    u_char                        back[NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK];
    size_t                        back_len;
} ngx_http_ai_gateway_guard_text_t;


typedef struct {
    ngx_http_ai_gateway_guard_t  *guard;
    ngx_buf_t                    *json;
    ngx_buf_t                    *event;
    ngx_http_ai_gateway_translate_buf_t  out;
    ngx_chain_t                  *free;
    ngx_chain_t                  *busy;
    /* streams only: NGX_HTTP_AI_GATEWAY_GUARD_TEXTS of them, 2.4 KB that
     * a JSON answer does without */
    ngx_http_ai_gateway_guard_text_t    *texts;
    ngx_uint_t                    ntexts;
    /* a delta's working copies, reused: see gout_scratch() */
    u_char                       *scratch[NGX_HTTP_AI_GATEWAY_GOUT_SCRATCH];
    size_t                        scratch_size[NGX_HTTP_AI_GATEWAY_GOUT_SCRATCH];
    unsigned                      sse:1;
    unsigned                      anthropic:1;
    unsigned                      header_held:1;
    unsigned                      passthrough:1;
    unsigned                      blocked:1;
    unsigned                      last:1;
    unsigned                      waiting:1;     /* for the safety model */
    ngx_http_ai_gateway_safety_t  safety;
    ngx_str_t                     safety_body;
    ngx_str_t                     answer;        /* to send if it passes */
} ngx_http_ai_gateway_gout_t;


static ngx_int_t ngx_http_ai_gateway_gout_json(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t *in, ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_send_held(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_gout_answer(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, u_char *p, size_t len,
    ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_verdict(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_refuse(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_uint_t status, ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_append(ngx_http_request_t *r,
    json_t *owner, const char *field, ngx_str_t *text);
static ngx_int_t ngx_http_ai_gateway_gout_delta(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const char *key, ngx_uint_t hold);
static ngx_int_t ngx_http_ai_gateway_gout_flush_text(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *key, ngx_str_t *text);
static ngx_http_ai_gateway_guard_text_t *ngx_http_ai_gateway_gout_text(
    ngx_http_ai_gateway_gout_t *go, const char *key);
static size_t ngx_http_ai_gateway_gout_hold(const u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_gout_detect(
    ngx_http_ai_gateway_guard_scan_t *s, ngx_http_ai_gateway_guard_text_t *t,
    const u_char *p, size_t len, u_char *all);
static u_char *ngx_http_ai_gateway_gout_scratch(ngx_pool_t *pool,
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t which, size_t size);
static ngx_int_t ngx_http_ai_gateway_gout_emit(ngx_http_ai_gateway_gout_t *go,
    const u_char *name, size_t name_len, json_t *data);
static ngx_int_t ngx_http_ai_gateway_gout_emit_raw(
    ngx_http_ai_gateway_gout_t *go, const u_char *name, size_t name_len,
    const u_char *data, size_t len);
static ngx_int_t ngx_http_ai_gateway_gout_block(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *category);
static ngx_int_t ngx_http_ai_gateway_gout_chain(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t last, ngx_chain_t **out);
static void ngx_http_ai_gateway_gout_capture(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t **bp, const u_char *p,
    size_t len);


/*
 * The header filter's part: NGX_OK to pass the header on now, NGX_DONE
 * when it is held (JSON answers), NGX_DECLINED when the answer is not
 * guarded (errors, other encodings).
 */

ngx_int_t
ngx_http_ai_gateway_guard_header(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_gout_t      *go;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->guard_out == NULL || ctx->resp_encoded
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE
        || r->headers_out.status < NGX_HTTP_OK)
    {
        return NGX_DECLINED;
    }

    go = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_gout_t));
    if (go == NULL) {
        return NGX_ERROR;
    }

    go->guard = lcf->guard_out;
    go->sse = ctx->resp_sse;
    go->anthropic = (ctx->api == NGX_HTTP_AI_GATEWAY_API_ANTHROPIC_MESSAGES);

    ngx_http_ai_gateway_translate_buf_init(&go->out,
                                           ngx_http_ai_gateway_pool_resize,
                                           r->pool);
    ctx->gout = go;

    /* the usage chunk is left out of what we write, not cut afterwards */
    ctx->drops = NULL;

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_weak_etag(r);

    if (go->sse) {
        go->texts = ngx_pcalloc(r->pool, NGX_HTTP_AI_GATEWAY_GUARD_TEXTS
                                    * sizeof(ngx_http_ai_gateway_guard_text_t));
        if (go->texts == NULL) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    go->header_held = 1;

    return NGX_DONE;
}


/* the body filter's part: what goes on instead of "in" */

ngx_int_t
ngx_http_ai_gateway_guard_body(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out)
{
    ngx_uint_t                   last;
    ngx_chain_t                 *cl;
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    if (!go->sse) {
        return ngx_http_ai_gateway_gout_json(r, ctx, go, in, out);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf) {
            last = 1;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return ngx_http_ai_gateway_gout_chain(r, go, last, out);
}


static ngx_int_t
ngx_http_ai_gateway_gout_json(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t *in, ngx_chain_t **out)
{
    ngx_int_t                         rc;
    ngx_uint_t                        last;
    ngx_chain_t                      *cl, **ll;
    ngx_http_ai_gateway_guard_scan_t  s;

    if (go->waiting) {
        /* ngx_http_writer() again, with no data */
        return ngx_http_ai_gateway_gout_verdict(r, ctx, go, out);
    }

    if (go->passthrough) {
        /* the caller passes "in" on itself: its chain links are not ours */
        return NGX_DECLINED;
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf) {
            last = 1;
        }

        if (ngx_buf_in_memory(cl->buf)
            && ngx_http_ai_gateway_append(r, &go->json, cl->buf->pos,
                                          cl->buf->last - cl->buf->pos,
                                          NGX_HTTP_AI_GATEWAY_GUARD_JSON_MAX)
               != NGX_OK)
        {
            goto too_large;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (!last) {
        return NGX_OK;
    }

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = go->guard;
    s.pool = r->pool;

    if (go->guard->safety.len && go->json) {
        s.texts = json_array();
        if (s.texts == NULL) {
            return NGX_ERROR;
        }
    }

    rc = go->json ? ngx_http_ai_gateway_guard_json(&s, go->json->pos,
                                                   go->json->last
                                                   - go->json->pos)
                  : NGX_OK;

    if (s.texts) {
        /* the texts the safety model is shown: masked ones masked */
        if (rc == NGX_OK && json_array_size(s.texts)
            && ngx_http_ai_gateway_guard_safety_body(r->pool, s.texts,
                                                     &go->safety_body)
               != NGX_OK)
        {
            /* as a safety model that failed: on_error decides, below */
            go->safety.state = NGX_HTTP_AI_GATEWAY_SAFETY_FAILED;
            go->safety.category = "no request";
        }

        json_decref(s.texts);
    }

    if (rc == NGX_DECLINED
        || (rc == NGX_ERROR && go->guard->on_error == NGX_HTTP_AI_GATEWAY_GUARD_DENY))
    {
        ngx_http_ai_gateway_guard_note(r, ctx, "output", s.category,
                                       rc == NGX_ERROR ? "error" : "block");
        go->out.len = 0;
        (void) ngx_http_ai_gateway_gout_block(r, ctx, go, s.category);

        return ngx_http_ai_gateway_gout_refuse(r, ctx, go, NGX_HTTP_BAD_REQUEST,
                                               out);
    }

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the output guardrail could not inspect "
                      "the answer (%s): sent as it is (on_error=allow)",
                      s.category);
        ngx_http_ai_gateway_guard_note(r, ctx, "output", s.category, "error");
    }

    if (s.masks) {
        ngx_http_ai_gateway_guard_mask_note(r, ctx, "output", s.mask_types);

        /* the record stores what the client got */
        if (ctx->capture) {
            ctx->capture->last = ctx->capture->pos;
        }

        ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture,
                                         s.document.data, s.document.len);

        go->answer = s.document;

    } else if (go->json) {
        go->answer.data = go->json->pos;
        go->answer.len = go->json->last - go->json->pos;
    }

    if (go->safety.state == NGX_HTTP_AI_GATEWAY_SAFETY_FAILED) {
        return ngx_http_ai_gateway_gout_verdict(r, ctx, go, out);
    }

    if (go->safety_body.len) {
        if (ngx_http_ai_gateway_guard_safety_ask(r, &go->guard->safety,
                                                 &go->safety_body,
                                                 &go->safety)
            != NGX_OK)
        {
            /* no subrequest: as a safety model that failed (on_error) */
            go->safety.state = NGX_HTTP_AI_GATEWAY_SAFETY_FAILED;
            go->safety.category = "no subrequest";

            return ngx_http_ai_gateway_gout_verdict(r, ctx, go, out);
        }

        /* the header stays held, and nginx waits for us */
        go->waiting = 1;
        r->buffered |= NGX_HTTP_AI_GATEWAY_BUFFERED;

        return NGX_OK;
    }

    return ngx_http_ai_gateway_gout_answer(r, go, go->answer.data,
                                           go->answer.len, out);

too_large:

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "ai_gateway: an answer larger than %uz bytes is not "
                  "inspected by the output guardrail",
                  (size_t) NGX_HTTP_AI_GATEWAY_GUARD_JSON_MAX);

    ngx_http_ai_gateway_guard_note(r, ctx, "output", "too_large", "error");

    if (go->guard->on_error == NGX_HTTP_AI_GATEWAY_GUARD_DENY) {
        return NGX_ERROR;
    }

    /* what was held, then the rest as it comes: from the buffer that did
     * not fit (those before it are in go->json), in links of our own, as
     * the caller's links are the caller's to free */
    go->passthrough = 1;

    if (ngx_http_ai_gateway_gout_send_held(r, go,
                                           go->json ? go->json->pos : NULL,
                                           go->json ? (size_t) (go->json->last
                                                      - go->json->pos) : 0)
        != NGX_OK
        || ngx_http_ai_gateway_gout_chain(r, go, 0, out) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (ll = out; *ll; ll = &(*ll)->next) { /* void */ }

    for ( /* void */ ; cl; cl = cl->next) {
        *ll = ngx_alloc_chain_link(r->pool);
        if (*ll == NULL) {
            return NGX_ERROR;
        }

        (*ll)->buf = cl->buf;
        ll = &(*ll)->next;
    }

    *ll = NULL;

    return NGX_OK;
}


/* the header, and the answer after it, as the last output */

static ngx_int_t
ngx_http_ai_gateway_gout_answer(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, u_char *p, size_t len, ngx_chain_t **out)
{
    if (ngx_http_ai_gateway_gout_send_held(r, go, p, len) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ai_gateway_gout_chain(r, go, 1, out);
}


/* the safety model's answer about a held JSON answer */

static ngx_int_t
ngx_http_ai_gateway_gout_verdict(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t **out)
{
    u_char  *m;

    if (go->safety.state == NGX_HTTP_AI_GATEWAY_SAFETY_RUNNING) {
        return NGX_OK;
    }

    go->waiting = 0;
    r->buffered &= ~NGX_HTTP_AI_GATEWAY_BUFFERED;

    switch (go->safety.state) {

    case NGX_HTTP_AI_GATEWAY_SAFETY_CLEAN:
        break;

    case NGX_HTTP_AI_GATEWAY_SAFETY_FLAGGED:
        ngx_http_ai_gateway_guard_note(r, ctx, "output", go->safety.category,
                                       "block");
        go->out.len = 0;

        if (ngx_http_ai_gateway_gout_block(r, ctx, go, go->safety.category)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_ai_gateway_gout_refuse(r, ctx, go, NGX_HTTP_BAD_REQUEST,
                                               out);

    default: /* NGX_HTTP_AI_GATEWAY_SAFETY_FAILED */
        ngx_http_ai_gateway_guard_note(r, ctx, "output", "safety", "error");

        if (go->guard->on_error == NGX_HTTP_AI_GATEWAY_GUARD_ALLOW) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "ai_gateway: the safety model did not answer "
                          "(%s): the answer is sent (on_error=allow)",
                          go->safety.category);
            break;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: 503 guardrail_unavailable: the safety "
                      "model did not answer about the output (%s)",
                      go->safety.category);

        go->out.len = 0;
        m = (u_char *) "The safety check is unavailable. Please retry later.";

        if (ngx_http_ai_gateway_translate_error_json(&go->out, (char *) m,
                                                     ngx_strlen(m),
                                                     "server_error",
                                                     "guardrail_unavailable")
                != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK
            || ngx_http_ai_gateway_translate_buf_room(&go->out, 1)
               != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
        {
            return NGX_ERROR;
        }

        go->out.p[go->out.len++] = LF;

        return ngx_http_ai_gateway_gout_refuse(r, ctx, go,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               out);
    }

    return ngx_http_ai_gateway_gout_answer(r, go, go->answer.data,
                                           go->answer.len, out);
}


/* the error in go->out instead of the answer */

static ngx_int_t
ngx_http_ai_gateway_gout_refuse(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_uint_t status, ngx_chain_t **out)
{
    go->blocked = 1;

    /* the inference record stores what the client got: the error, never
     * the answer that was refused */
    if (ctx->capture) {
        ctx->capture->last = ctx->capture->pos;
    }

    ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture, go->out.p,
                                     go->out.len);

    r->headers_out.status = status;
    r->headers_out.status_line.len = 0;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    return ngx_http_ai_gateway_gout_answer(r, go, go->out.p, go->out.len,
                                           out);
}


ngx_uint_t
ngx_http_ai_gateway_guard_waiting(ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    return go != NULL && go->waiting;
}


/* the held header goes on now, with the body that follows it in go->out */

static ngx_int_t
ngx_http_ai_gateway_gout_send_held(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, u_char *p, size_t len)
{
    ngx_int_t  rc;

    if (go->out.p != p) {
        /*
         * go->out shows the held bytes (pool memory) instead of a copy:
         * the out-chain copies them once; cap == len makes any append
         * grow into new memory first.
         */
        go->out.p = p;
        go->out.len = len;
        go->out.cap = len;
    }

    go->header_held = 0;

    if (!go->passthrough) {
        r->headers_out.content_length_n = go->out.len;
    }

    rc = ngx_http_ai_gateway_next_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        go->out.len = 0;
        return (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK;
    }

    return NGX_OK;
}


/*
 * One SSE event, whole (its data in go->event): passed on as it is,
 * changed, or not at all (the usage chunk we asked for, what follows a
 * block).
 */

ngx_int_t
ngx_http_ai_gateway_guard_event(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *name, size_t name_len,
    ngx_uint_t hide)
{
    char                        key[24];
    size_t                      i, n;
    json_t                     *root, *choices, *c, *delta, *tc, *fn, *e;
    u_char                     *p;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_str_t                   rest;
    const char                 *type;
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;
    p = go->event ? go->event->pos : (u_char *) "";
    len = go->event ? (size_t) (go->event->last - go->event->pos) : 0;

    if (go->event) {
        go->event->last = go->event->pos;
    }

    if (go->blocked || hide) {
        return NGX_OK;
    }

    if (len == 6 && ngx_strncmp(p, "[DONE]", 6) == 0) {
        return ngx_http_ai_gateway_gout_emit_raw(go, name, name_len, p, len);
    }

    root = json_loadb((const char *) p, len, 0, NULL);

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        /* not ours to judge: passed on */
        return ngx_http_ai_gateway_gout_emit_raw(go, name, name_len, p, len);
    }

    rc = NGX_OK;
    type = json_string_value(json_object_get(root, "type"));

    if (type && ngx_strcmp(type, "content_block_delta") == 0) {
        /* Anthropic */
        n = (size_t) json_integer_value(json_object_get(root, "index"));
        delta = json_object_get(root, "delta");
        ngx_snprintf((u_char *) key, sizeof(key), "a%uz%Z", n);

        if (json_object_get(delta, "text")) {
            rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta, "text",
                                                key, 1);

        } else if (json_object_get(delta, "partial_json")) {
            rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta,
                                                "partial_json", key, 0);
        }

    } else if (type && ngx_strcmp(type, "content_block_stop") == 0) {
        n = (size_t) json_integer_value(json_object_get(root, "index"));
        ngx_snprintf((u_char *) key, sizeof(key), "a%uz%Z", n);

        rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

        if (rc == NGX_OK && rest.len) {
            /* what was held back goes out before the block ends */
            e = json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type",
                          "content_block_delta", "index", (json_int_t) n,
                          "delta", "type", "text_delta", "text",
                          rest.data, rest.len);
            if (e == NULL) {
                rc = NGX_ERROR;

            } else {
                rc = ngx_http_ai_gateway_gout_emit(go,
                                   (u_char *) "content_block_delta",
                                   sizeof("content_block_delta") - 1, e);
                json_decref(e);
            }
        }

    } else if (type && ngx_strcmp(type, "response.output_text.delta") == 0) {
        ngx_snprintf((u_char *) key, sizeof(key), "r%uz.%uz%Z",
                     (size_t) json_integer_value(json_object_get(root,
                                                         "output_index")),
                     (size_t) json_integer_value(json_object_get(root,
                                                         "content_index")));
        rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, root, "delta", key, 1);

    } else if (type && ngx_strcmp(type, "response.output_text.done") == 0) {
        ngx_snprintf((u_char *) key, sizeof(key), "r%uz.%uz%Z",
                     (size_t) json_integer_value(json_object_get(root,
                                                         "output_index")),
                     (size_t) json_integer_value(json_object_get(root,
                                                         "content_index")));

        rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

        if (rc == NGX_OK && rest.len) {
            e = json_pack("{s:s,s:O,s:O,s:s%}", "type",
                          "response.output_text.delta", "output_index",
                          json_object_get(root, "output_index"),
                          "content_index",
                          json_object_get(root, "content_index"),
                          "delta", rest.data, rest.len);
            if (e == NULL) {
                rc = NGX_ERROR;

            } else {
                rc = ngx_http_ai_gateway_gout_emit(go,
                                   (u_char *) "response.output_text.delta",
                                   sizeof("response.output_text.delta") - 1,
                                   e);
                json_decref(e);
            }
        }

    } else if ((choices = json_object_get(root, "choices"))
               && json_is_array(choices))
    {
        /* OpenAI chat and completions chunks */
        json_array_foreach(choices, i, c) {
            if (rc != NGX_OK) {
                /* a block (or an error) in one choice ends the chunk: the
                 * next choice must not clear it */
                break;
            }

            n = (size_t) json_integer_value(json_object_get(c, "index"));
            ngx_snprintf((u_char *) key, sizeof(key), "c%uz%Z", n);

            delta = json_object_get(c, "delta");

            if (delta && json_is_string(json_object_get(delta, "content"))) {
                rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta,
                                                    "content", key, 1);

            } else if (json_is_string(json_object_get(c, "text"))) {
                rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, c, "text",
                                                    key, 1);
            }

            json_array_foreach(json_object_get(delta, "tool_calls"), n, tc) {
                fn = json_object_get(tc, "function");

                if (rc == NGX_OK && json_object_get(fn, "arguments")) {
                    rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, fn,
                                                        "arguments", "tool",
                                                        0);
                }
            }

            if (rc != NGX_OK || json_is_null(json_object_get(c,
                                                       "finish_reason"))
                || json_object_get(c, "finish_reason") == NULL)
            {
                continue;
            }

            /* the last chunk of this choice takes what was held back,
             * after its own text (a last chunk may carry text too) */
            rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

            if (rc == NGX_OK && rest.len) {
                rc = ngx_http_ai_gateway_gout_append(r, delta ? delta : c,
                                                     delta ? "content"
                                                           : "text",
                                                     &rest);
            }
        }
    }

    if (rc == NGX_DECLINED) {
        json_decref(root);
        return ngx_http_ai_gateway_gout_block(r, ctx, go, ctx->gout_category);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_ai_gateway_gout_emit(go, name, name_len, root);
    }

    json_decref(root);

    return rc;
}


/* owner[field] = owner[field] (a string, or none) followed by text */

static ngx_int_t
ngx_http_ai_gateway_gout_append(ngx_http_request_t *r, json_t *owner,
    const char *field, ngx_str_t *text)
{
    u_char  *p;
    size_t   len;
    json_t  *v;

    v = json_object_get(owner, field);
    len = json_is_string(v) ? json_string_length(v) : 0;

    if (len == 0) {
        return json_object_set_new(owner, field,
                                   json_stringn_nocheck((char *) text->data,
                                                        text->len))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, len + text->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, json_string_value(v), len);
    ngx_memcpy(p + len, text->data, text->len);

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) p,
                                                    len + text->len))
           == 0 ? NGX_OK : NGX_ERROR;
}


/*
 * A text delta: detection over what was sent before and what is new;
 * with hold, what may still become a match waits for the next delta.
 * NGX_DECLINED: blocked (ctx->gout_category says why).
 */

static ngx_int_t
ngx_http_ai_gateway_gout_delta(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const char *key, ngx_uint_t hold)
{
    u_char                            *p, *all, *scan;
    size_t                             len, held, keep, n, count;
    json_t                            *v;
    ngx_int_t                          rc;
    ngx_http_ai_gateway_guard_scan_t   s;
    ngx_http_ai_gateway_guard_text_t  *t;

    v = json_object_get(owner, field);
    if (!json_is_string(v)) {
        return NGX_OK;
    }

    t = ngx_http_ai_gateway_gout_text(go, key);
    if (t == NULL) {
        return NGX_ERROR;
    }

    held = t->held ? (size_t) (t->held->last - t->held->pos) : 0;
    len = json_string_length(v);

    all = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                           NGX_HTTP_AI_GATEWAY_GOUT_ALL,
                                           held + len + 1);
    scan = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                            NGX_HTTP_AI_GATEWAY_GOUT_SCAN,
                                            t->back_len + held + len);
    if (all == NULL || scan == NULL) {
        return NGX_ERROR;
    }

    p = all;
    if (held) {
        p = ngx_cpymem(p, t->held->pos, held);
    }
    p = ngx_cpymem(p, json_string_value(v), len);
    len = p - all;

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = go->guard;
    s.pool = r->pool;

    rc = ngx_http_ai_gateway_gout_detect(&s, t, all, len, scan);

    if (rc != NGX_OK) {
        ctx->gout_category = s.category;
        ngx_http_ai_gateway_guard_note(r, ctx, "output", s.category,
                                       rc == NGX_ERROR ? "error" : "block");
        return NGX_DECLINED;
    }

    keep = hold ? ngx_http_ai_gateway_gout_hold(all, len) : 0;
    n = len - keep;

    if (t->held) {
        t->held->last = t->held->pos;
    }

    if (keep
        && ngx_http_ai_gateway_append(r, &t->held, all + n, keep,
                                      NGX_HTTP_AI_GATEWAY_GUARD_HOLD * 2)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the part that goes out now, masked */

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_MASK && n) {
        count = 0;
        (void) ngx_http_ai_gateway_pii_mask(all, n, go->guard->pii_types,
                                            NULL, &count);

        if (count) {
            ngx_http_ai_gateway_guard_mask_note(r, ctx, "output",
                          ngx_http_ai_gateway_guard_mask_types(all, n,
                                                     go->guard->pii_types));

            p = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                         NGX_HTTP_AI_GATEWAY_GOUT_MASKED,
                                         NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(n));
            if (p == NULL) {
                return NGX_ERROR;
            }

            n = ngx_http_ai_gateway_pii_mask(all, n, go->guard->pii_types, p,
                                             NULL);
            all = p;
        }
    }

    /* what was sent, for keywords and patterns across deltas */
    if (n >= NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK) {
        ngx_memcpy(t->back, all + n - NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK,
                   NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK);
        t->back_len = NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK;

    } else {
        keep = ngx_min(t->back_len, NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK - n);
        ngx_memmove(t->back, t->back + t->back_len - keep, keep);
        ngx_memcpy(t->back + keep, all, n);
        t->back_len = keep + n;
    }

    if (hold) {
        ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture, all, n);

    } else {
        ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture_args, all, n);
    }

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) all, n)) == 0
           ? NGX_OK : NGX_ERROR;
}


/*
 * A working buffer of at least size bytes, kept for the next delta: one
 * allocation a delta would hold pool memory for every delta of a long
 * stream until the request ends.  It grows by doubling, so what all the
 * buffers it replaces take is at most twice the largest.  The texts put
 * in it are copied out (jansson, the capture) before the next delta.
 */

static u_char *
ngx_http_ai_gateway_gout_scratch(ngx_pool_t *pool,
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t which, size_t size)
{
    u_char  *p;

    if (go->scratch[which] && go->scratch_size[which] >= size) {
        return go->scratch[which];
    }

    size = ngx_max(size, 2 * go->scratch_size[which]);
    size = ngx_max(size, 256);

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NULL;
    }

    if (go->scratch[which]) {
        /* a large allocation goes back at once; a small one stays */
        (void) ngx_pfree(pool, go->scratch[which]);
    }

    go->scratch[which] = p;
    go->scratch_size[which] = size;

    return p;
}


/* the end of a text: what is held goes out, masked */

static ngx_int_t
ngx_http_ai_gateway_gout_flush_text(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *key, ngx_str_t *text)
{
    u_char                            *p;
    size_t                             len, count;
    ngx_http_ai_gateway_guard_text_t  *t;

    ngx_str_null(text);

    t = ngx_http_ai_gateway_gout_text(go, key);

    if (t == NULL || t->held == NULL || t->held->last == t->held->pos) {
        return NGX_OK;
    }

    p = t->held->pos;
    len = t->held->last - t->held->pos;
    t->held->last = t->held->pos;

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_MASK) {
        count = 0;
        (void) ngx_http_ai_gateway_pii_mask(p, len, go->guard->pii_types, NULL,
                                            &count);
        if (count) {
            ngx_http_ai_gateway_guard_mask_note(r, ctx, "output",
                          ngx_http_ai_gateway_guard_mask_types(p, len,
                                                     go->guard->pii_types));

            text->data = ngx_pnalloc(r->pool,
                                     NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len));
            if (text->data == NULL) {
                return NGX_ERROR;
            }

            text->len = ngx_http_ai_gateway_pii_mask(p, len,
                                                     go->guard->pii_types,
                                                     text->data, NULL);
            ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture, text->data,
                                             text->len);
            return NGX_OK;
        }
    }

    text->data = ngx_pnalloc(r->pool, len);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(text->data, p, len);
    text->len = len;

    ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture, text->data,
                                             text->len);

    return NGX_OK;
}


static ngx_http_ai_gateway_guard_text_t *
ngx_http_ai_gateway_gout_text(ngx_http_ai_gateway_gout_t *go, const char *key)
{
    size_t                             len;
    ngx_uint_t                         i;
    ngx_http_ai_gateway_guard_text_t  *t;

    if (go->texts == NULL) {
        return NULL;
    }

    len = ngx_strlen(key);

    for (i = 0; i < go->ntexts; i++) {
        t = &go->texts[i];

        if (t->key_len == len && ngx_strncmp(t->key, key, len) == 0) {
            return t;
        }
    }

    if (go->ntexts == NGX_HTTP_AI_GATEWAY_GUARD_TEXTS
        || len > sizeof(go->texts[0].key))
    {
        return NULL;
    }

    t = &go->texts[go->ntexts++];
    ngx_memcpy(t->key, key, len);
    t->key_len = len;

    return t;
}


/*
 * How many bytes at the end may still grow into a match: the last word
 * (no white space in it), and when it has digits (or the text ends in a
 * space after a digit), the groups of digits and letters before it that
 * single spaces separate ("+1 415 555", "DE89 3704").
 */

static size_t
ngx_http_ai_gateway_gout_hold(const u_char *p, size_t len)
{
    size_t      i, groups, digits;
    ngx_uint_t  space;

    i = len;
    digits = 0;

    while (i > 0 && p[i - 1] == ' ') {
        i--;
    }

    if (i < len && (i == 0 || !(p[i - 1] >= '0' && p[i - 1] <= '9'))) {
        /* a finished word */
        return 0;
    }

    for (groups = 0; i > 0 && len - i < NGX_HTTP_AI_GATEWAY_GUARD_HOLD; ) {

        space = (p[i - 1] == ' ');

        if (space) {
            if (!digits || groups >= 6 || i < 2 || p[i - 2] == ' '
                || p[i - 2] == '\n' || p[i - 2] == '\t')
            {
                break;
            }

            groups++;
            digits = 0;
            i--;
            continue;
        }

        if (p[i - 1] == '\n' || p[i - 1] == '\t' || p[i - 1] == '\r') {
            break;
        }

        if (p[i - 1] >= '0' && p[i - 1] <= '9') {
            digits++;
        }

        i--;
    }

    /*
     * Held at most NGX_HTTP_AI_GATEWAY_GUARD_HOLD bytes: where that cut a
     * UTF-8 character (text without spaces, as Chinese or Japanese is),
     * the character goes out whole, so that no event carries half of one
     */
    while (i < len && (p[i] & 0xc0) == 0x80) {
        i++;
    }

    /* a group without digits before the space ends the number */
    while (i < len && p[i] == ' ') {
        i++;
    }

    return len - i;
}


static ngx_int_t
ngx_http_ai_gateway_gout_detect(ngx_http_ai_gateway_guard_scan_t *s,
    ngx_http_ai_gateway_guard_text_t *t, const u_char *p, size_t len,
    u_char *all)
{
    u_char      *q;
    ngx_int_t    rc;
    unsigned     pii;

    /* across deltas: with what was sent, so that a split word is seen
     * (all has room for back_len + len) */
    q = ngx_cpymem(all, t->back, t->back_len);
    ngx_memcpy(q, p, len);

    /* PII is judged on the new text only: what was sent was masked */
    pii = s->guard->pii;
    s->guard->pii = NGX_HTTP_AI_GATEWAY_GUARD_NONE;

    rc = ngx_http_ai_gateway_guard_text(s, all, t->back_len + len);

    s->guard->pii = pii;

    if (rc != NGX_OK || pii != NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
        return rc;
    }

    /* a match that may still grow is judged when it is whole */
    len -= ngx_http_ai_gateway_gout_hold(p, len);

    s->guard->pii = NGX_HTTP_AI_GATEWAY_GUARD_BLOCK;
    rc = (len && ngx_http_ai_gateway_guard_mask_types(p, len, s->guard->pii_types))
         ? NGX_DECLINED : NGX_OK;

    if (rc == NGX_DECLINED) {
        s->category = ngx_http_ai_gateway_guard_pii_category(
                          ffs(ngx_http_ai_gateway_guard_mask_types(p, len,
                                                 s->guard->pii_types)) - 1);
    }

    return rc;
}


static ngx_int_t
ngx_http_ai_gateway_gout_emit(ngx_http_ai_gateway_gout_t *go,
    const u_char *name, size_t name_len, json_t *data)
{
    char       *dump;
    ngx_int_t   rc;

    dump = json_dumps(data, JSON_COMPACT|JSON_REAL_PRECISION(16));
    if (dump == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_ai_gateway_gout_emit_raw(go, name, name_len, (u_char *) dump,
                                           ngx_strlen(dump));
    free(dump);

    return rc;
}


static ngx_int_t
ngx_http_ai_gateway_gout_emit_raw(ngx_http_ai_gateway_gout_t *go,
    const u_char *name, size_t name_len, const u_char *data, size_t len)
{
    u_char  *p;

    if (ngx_http_ai_gateway_translate_buf_room(&go->out, name_len + len + 16)
        != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
    {
        return NGX_ERROR;
    }

    p = go->out.p + go->out.len;

    if (name_len) {
        p = ngx_cpymem(p, "event: ", 7);
        p = ngx_cpymem(p, name, name_len);
        *p++ = LF;
    }

    p = ngx_cpymem(p, "data: ", 6);
    p = ngx_cpymem(p, data, len);
    *p++ = LF;
    *p++ = LF;

    go->out.len = p - go->out.p;

    return NGX_OK;
}


/* the stream ends here, in the provider's shape */

static ngx_int_t
ngx_http_ai_gateway_gout_block(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *category)
{
    u_char  msg[160], *m;

    go->blocked = 1;

    m = ngx_snprintf(msg, sizeof(msg) - 1, "The response was blocked by the "
                     "output guardrail (%s).", category ? category : "");
    *m = '\0';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ai_gateway: guardrail_blocked: output %s",
                  category ? category : "");

    if (!go->sse) {
        /* as ngx_http_ai_gateway_send_error() writes it: a line */
        if (ngx_http_ai_gateway_translate_error_json(&go->out, (char *) msg,
                                                     m - msg,
                                                     "invalid_request_error",
                                                     "guardrail_blocked")
                != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK
            || ngx_http_ai_gateway_translate_buf_room(&go->out, 1)
               != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
        {
            return NGX_ERROR;
        }

        go->out.p[go->out.len++] = LF;

        return NGX_OK;
    }

    if (go->anthropic) {
        u_char  data[320], *d;

        d = ngx_snprintf(data, sizeof(data), "{\"type\":\"error\",\"error\":"
                         "{\"type\":\"invalid_request_error\",\"message\":"
                         "\"%s\"}}", msg);

        return ngx_http_ai_gateway_gout_emit_raw(go, (u_char *) "error", 5,
                                                 data, d - data);
    }

    {
        size_t                               before;
        ngx_http_ai_gateway_translate_buf_t  tmp;

        ngx_http_ai_gateway_translate_buf_init(&tmp,
                                               ngx_http_ai_gateway_pool_resize,
                                               r->pool);

        if (ngx_http_ai_gateway_translate_error_json(&tmp, (char *) msg,
                                                     m - msg,
                                                     "invalid_request_error",
                                                     "guardrail_blocked")
            != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
        {
            return NGX_ERROR;
        }

        before = go->out.len;

        if (ngx_http_ai_gateway_gout_emit_raw(go, NULL, 0, tmp.p, tmp.len)
            != NGX_OK
            || ngx_http_ai_gateway_gout_emit_raw(go, NULL, 0,
                                                 (u_char *) "[DONE]", 6)
               != NGX_OK)
        {
            go->out.len = before;
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* go->out as a buffer of ours for the next filter */

static ngx_int_t
ngx_http_ai_gateway_gout_chain(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t last, ngx_chain_t **out)
{
    go->last = last;

    return ngx_http_ai_gateway_out_chain(r, &go->free, &go->out, last, go->sse,
                                         NGX_HTTP_AI_GATEWAY_GOUT_TAG, out);
}


void
ngx_http_ai_gateway_guard_update(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t **out)
{
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    ngx_chain_update_chains(r->pool, &go->free, &go->busy, out,
                            NGX_HTTP_AI_GATEWAY_GOUT_TAG);
}


/* an SSE event's data, in pieces: kept until the event ends */

ngx_int_t
ngx_http_ai_gateway_guard_data(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *p, size_t len)
{
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    return ngx_http_ai_gateway_append(r, &go->event, p, len,
                                      NGX_HTTP_AI_GATEWAY_GUARD_EVENT_MAX);
}


/* what we passed on that the client has not taken yet */

ngx_uint_t
ngx_http_ai_gateway_guard_busy(ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    return go != NULL && go->busy != NULL;
}


ngx_uint_t
ngx_http_ai_gateway_guard_held(ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_gout_t  *go;

    go = ctx->gout;

    return go != NULL && go->header_held;
}


/* the inference record: the text the client got, masked */

static void
ngx_http_ai_gateway_gout_capture(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t **bp, const u_char *p,
    size_t len)
{
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (!ctx->infer || ctx->capture_overflow || len == 0) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    if (ngx_http_ai_gateway_append(r, bp, p, len, mcf->max_payload)
        == NGX_DECLINED)
    {
        ctx->capture_overflow = 1;
    }
}
