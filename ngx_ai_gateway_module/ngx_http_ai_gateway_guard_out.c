
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
/* texts of a stream followed at once: places for 8 are made at first */
#define NGX_HTTP_AI_GATEWAY_GUARD_TEXTS      8
#define NGX_HTTP_AI_GATEWAY_GUARD_TEXTS_MAX  256
/* a JWT is held whole up to this, until it is known to be one */
#define NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD  (16 * 1024)

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


/* the events a text comes in (for the rest sent at the stream's end) */
#define NGX_HTTP_AI_GATEWAY_GOUT_CHAT        0   /* choices[].delta.content */
#define NGX_HTTP_AI_GATEWAY_GOUT_COMPLETION  1   /* choices[].text */
#define NGX_HTTP_AI_GATEWAY_GOUT_ANTHROPIC   2   /* content_block_delta */
#define NGX_HTTP_AI_GATEWAY_GOUT_RESPONSES   3   /* output_text.delta */
/* a tool's arguments, JSON text: held while a string or a number of
 * them is not whole (gout_args_cut()) */
#define NGX_HTTP_AI_GATEWAY_GOUT_TOOL        4   /* tool_calls[].function */
#define NGX_HTTP_AI_GATEWAY_GOUT_TOOL_ANTHROPIC  5   /* input_json_delta */
#define NGX_HTTP_AI_GATEWAY_GOUT_TOOL_RESPONSES  6   /* function_call_... */
/* gout_text(): find a text, make no place for it */
#define NGX_HTTP_AI_GATEWAY_GOUT_FIND        7

#define NGX_HTTP_AI_GATEWAY_GOUT_SECRETS                                      \
    NGX_HTTP_AI_GATEWAY_PII_BIT(NGX_HTTP_AI_GATEWAY_PII_SECRET)

/* a secret being dropped: the rest of a PEM block, of a token (a JWT) */
#define NGX_HTTP_AI_GATEWAY_GOUT_PEM         1
#define NGX_HTTP_AI_GATEWAY_GOUT_TOKEN       2


/* one text being streamed: a choice, a content block; key_len 0: free */
typedef struct {
    u_char                        key[24];
    size_t                        key_len;
    ngx_buf_t                    *held;
    u_char                        back[NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK];
    size_t                        back_len;
    json_int_t                    index;
    json_int_t                    index2;
    unsigned                      kind:3;
    unsigned                      secret:2;
    unsigned                      in_str:1;     /* arguments: where held
                                                   starts, in a string */
    unsigned                      segs:3;       /* a token's segments */
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
    ngx_uint_t                    nalloc;
    /* an OpenAI chunk's fields but its choices: for the rest of a text
     * sent at the stream's end */
    json_t                       *chunk;
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
    unsigned                      encoded:1;     /* refused: compressed */
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
static ngx_int_t ngx_http_ai_gateway_gout_encoded(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_refuse(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_uint_t status, ngx_chain_t **out);
static ngx_int_t ngx_http_ai_gateway_gout_append(ngx_http_request_t *r,
    json_t *owner, const char *field, ngx_str_t *text);
static ngx_int_t ngx_http_ai_gateway_gout_delta(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const char *key, ngx_uint_t kind,
    json_int_t index, json_int_t index2);
static ngx_int_t ngx_http_ai_gateway_gout_too_many(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_gout_pii_block(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, unsigned types);
static ngx_int_t ngx_http_ai_gateway_gout_judge(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, const u_char *p, size_t len,
    u_char *scan);
static ngx_int_t ngx_http_ai_gateway_gout_join(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, ngx_http_ai_gateway_guard_text_t *t,
    json_t *v, u_char **all, u_char **scan, size_t *len);
static void ngx_http_ai_gateway_gout_remember(
    ngx_http_ai_gateway_guard_text_t *t, const u_char *p, size_t n);
static ngx_int_t ngx_http_ai_gateway_gout_flush_text(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *key, ngx_str_t *text);
static ngx_int_t ngx_http_ai_gateway_gout_flush(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, ngx_str_t *text);
static ngx_int_t ngx_http_ai_gateway_gout_flush_all(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go);
static ngx_int_t ngx_http_ai_gateway_gout_emit_rest(
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t kind, json_int_t index,
    json_int_t index2, ngx_str_t *rest, json_t *item_id);
static json_t *ngx_http_ai_gateway_gout_rest_event(
    ngx_http_ai_gateway_gout_t *go, ngx_uint_t kind, json_int_t index,
    json_int_t index2, ngx_str_t *rest);
static ngx_int_t ngx_http_ai_gateway_gout_remember_chunk(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, json_t *root);
static void ngx_http_ai_gateway_gout_chunk_cleanup(void *data);
static ngx_http_ai_gateway_guard_text_t *ngx_http_ai_gateway_gout_text(
    ngx_http_request_t *r, ngx_http_ai_gateway_gout_t *go, const char *key,
    ngx_uint_t kind);
static size_t ngx_http_ai_gateway_gout_hold(const u_char *p, size_t len);
static size_t ngx_http_ai_gateway_gout_jwt_in(const u_char *p, size_t len);
static ngx_uint_t ngx_http_ai_gateway_gout_pem_closed(const u_char *p,
    size_t len);
static size_t ngx_http_ai_gateway_gout_end_start(const u_char *p, size_t len);
static ngx_uint_t ngx_http_ai_gateway_gout_b64url(u_char c);
static ngx_uint_t ngx_http_ai_gateway_gout_alnum(u_char c);
static unsigned ngx_http_ai_gateway_gout_segments(const u_char *p,
    size_t len);
static size_t ngx_http_ai_gateway_gout_settle(const u_char *p, size_t len,
    size_t n, unsigned types);
static int ngx_http_ai_gateway_gout_settle_match(void *data,
    ngx_http_ai_gateway_pii_match_t *m);
static ngx_uint_t ngx_http_ai_gateway_gout_sep(u_char c);
static ngx_uint_t ngx_http_ai_gateway_gout_numberish(const u_char *p,
    size_t len);
static size_t ngx_http_ai_gateway_gout_number_tail(const u_char *p,
    size_t len);
static size_t ngx_http_ai_gateway_gout_pem_open(const u_char *p, size_t len);
static size_t ngx_http_ai_gateway_gout_secret_start(const u_char *p,
    size_t len, ngx_uint_t *secret);
static const u_char *ngx_http_ai_gateway_gout_find(const u_char *p,
    size_t len, const char *lit, size_t n);
static int ngx_http_ai_gateway_gout_open(void *data,
    ngx_http_ai_gateway_pii_match_t *m);
static size_t ngx_http_ai_gateway_gout_secret_drop(
    ngx_http_ai_gateway_guard_text_t *t, const u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_gout_mask_string(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field);
static json_t *ngx_http_ai_gateway_gout_load_lone(ngx_http_request_t *r,
    const u_char *p, size_t len);
static ngx_uint_t ngx_http_ai_gateway_gout_kind(ngx_http_ai_gateway_gout_t *go,
    const char *key);
static ngx_int_t ngx_http_ai_gateway_gout_flush_tools(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_int_t choice);
static ngx_int_t ngx_http_ai_gateway_gout_args(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, json_t *v, json_t *owner,
    const char *field);
static size_t ngx_http_ai_gateway_gout_args_cut(const u_char *p, size_t len,
    ngx_uint_t in_str, ngx_uint_t *cut_in_str, unsigned types);
static ngx_int_t ngx_http_ai_gateway_gout_args_out(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const u_char *p, size_t len, ngx_uint_t in_str, ngx_str_t *out);
static ngx_int_t ngx_http_ai_gateway_gout_mask_args(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_gout_mask_item(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *item);
static ngx_int_t ngx_http_ai_gateway_gout_responses(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *type, json_t *root);
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

    if (lcf->guard_out == NULL
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE
        || r->headers_out.status < NGX_HTTP_OK)
    {
        return NGX_DECLINED;
    }

    if (ctx->resp_encoded
        && lcf->guard_out->on_error == NGX_HTTP_AI_GATEWAY_GUARD_ALLOW)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the output guardrail cannot inspect a "
                      "compressed answer: sent as it is (on_error=allow)");
        ngx_http_ai_gateway_guard_note(r, ctx, "output", "encoded", "error");
        return NGX_DECLINED;
    }

    go = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_gout_t));
    if (go == NULL) {
        return NGX_ERROR;
    }

    go->guard = lcf->guard_out;

    if (ctx->resp_encoded) {
        /* refused whole, a stream too: its events cannot be read */
        go->encoded = 1;
        go->header_held = 1;
        ctx->gout = go;
        ctx->drops = NULL;

        ngx_http_ai_gateway_translate_buf_init(&go->out,
                                               ngx_http_ai_gateway_pool_resize,
                                               r->pool);
        ngx_http_clear_content_length(r);
        ngx_http_clear_accept_ranges(r);

        return NGX_DONE;
    }
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

        go->nalloc = NGX_HTTP_AI_GATEWAY_GUARD_TEXTS;

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
    ngx_int_t                    rc;
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

    if (last && !go->blocked) {
        /* a stream that ended without [DONE]: what is held goes out */
        rc = ngx_http_ai_gateway_gout_flush_all(r, ctx, go);

        if (rc == NGX_DECLINED) {
            rc = ngx_http_ai_gateway_gout_block(r, ctx, go,
                                                ctx->gout_category);
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
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

        if (go->encoded) {
            /* dropped: see gout_encoded() */
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
            continue;
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

    if (go->encoded) {
        return ngx_http_ai_gateway_gout_encoded(r, ctx, go, out);
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


/*
 * A compressed answer (an upstream that ignored "Accept-Encoding:
 * identity") with on_error=deny: the output guardrail cannot read it, so
 * the client gets a 502 instead, as for a safety model that failed.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_encoded(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_chain_t **out)
{
    u_char  *m;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "ai_gateway: 502 guardrail_unavailable: the output "
                  "guardrail cannot inspect a compressed answer "
                  "(on_error=deny)");
    ngx_http_ai_gateway_guard_note(r, ctx, "output", "encoded", "error");

    if (r->headers_out.content_encoding) {
        r->headers_out.content_encoding->hash = 0;
        r->headers_out.content_encoding = NULL;
    }

    go->out.len = 0;
    m = (u_char *) "The upstream's answer could not be inspected.";

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

    return ngx_http_ai_gateway_gout_refuse(r, ctx, go, NGX_HTTP_BAD_GATEWAY,
                                           out);
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
    json_t                     *root, *choices, *c, *delta, *tc, *fn;
    u_char                     *p;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_str_t                   rest;
    ngx_uint_t                  kind;
    json_int_t                  index, index2;
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
        /* texts that no finish_reason chunk ended: their rest first */
        rc = ngx_http_ai_gateway_gout_flush_all(r, ctx, go);

        if (rc == NGX_DECLINED) {
            return ngx_http_ai_gateway_gout_block(r, ctx, go,
                                                  ctx->gout_category);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ai_gateway_gout_emit_raw(go, name, name_len, p, len);
    }

    root = json_loadb((const char *) p, len, JSON_ALLOW_NUL, NULL);

    if (root == NULL) {
        /* a lone surrogate ("\ud83d" cut from its pair) is the one thing
         * jansson refuses that clients read: as U+FFFD, it is judged */
        root = ngx_http_ai_gateway_gout_load_lone(r, p, len);
    }

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        /* not ours to judge: passed on */
        return ngx_http_ai_gateway_gout_emit_raw(go, name, name_len, p, len);
    }

    rc = NGX_OK;
    type = json_string_value(json_object_get(root, "type"));

    if (type && ngx_strcmp(type, "content_block_delta") == 0) {
        /* Anthropic */
        index = json_integer_value(json_object_get(root, "index"));
        delta = json_object_get(root, "delta");
        ngx_snprintf((u_char *) key, sizeof(key), "a%L%Z", (int64_t) index);

        if (json_object_get(delta, "text")) {
            rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta, "text",
                                       key, NGX_HTTP_AI_GATEWAY_GOUT_ANTHROPIC,
                                       index, 0);

        } else if (json_object_get(delta, "partial_json")) {
            rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta,
                                       "partial_json", key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_TOOL_ANTHROPIC,
                                       index, 0);
        }

    } else if (type && ngx_strcmp(type, "content_block_stop") == 0) {
        index = json_integer_value(json_object_get(root, "index"));
        ngx_snprintf((u_char *) key, sizeof(key), "a%L%Z", (int64_t) index);

        kind = ngx_http_ai_gateway_gout_kind(go, key);
        rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

        if (rc == NGX_OK && rest.len) {
            /* what was held back goes out before the block ends */
            rc = ngx_http_ai_gateway_gout_emit_rest(go, kind, index, 0,
                                                    &rest, NULL);
        }

    } else if (type && ngx_strcmp(type, "response.output_text.delta") == 0) {
        index = json_integer_value(json_object_get(root, "output_index"));
        index2 = json_integer_value(json_object_get(root, "content_index"));
        ngx_snprintf((u_char *) key, sizeof(key), "r%L.%L%Z", (int64_t) index,
                     (int64_t) index2);

        rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, root, "delta", key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_RESPONSES,
                                       index, index2);

    } else if (type && ngx_strcmp(type, "response.output_text.done") == 0) {
        index = json_integer_value(json_object_get(root, "output_index"));
        index2 = json_integer_value(json_object_get(root, "content_index"));
        ngx_snprintf((u_char *) key, sizeof(key), "r%L.%L%Z", (int64_t) index,
                     (int64_t) index2);

        rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

        if (rc == NGX_OK && rest.len) {
            rc = ngx_http_ai_gateway_gout_emit_rest(go,
                                       NGX_HTTP_AI_GATEWAY_GOUT_RESPONSES,
                                       index, index2, &rest,
                                       json_object_get(root, "item_id"));
        }

        /* the whole text again: masked as the deltas were */
        if (rc == NGX_OK) {
            rc = ngx_http_ai_gateway_gout_mask_string(r, ctx, go, root,
                                                      "text");
        }

    } else if (type && ngx_strcmp(type, "message_stop") == 0) {
        /* an Anthropic stream whose blocks had no content_block_stop */
        rc = ngx_http_ai_gateway_gout_flush_all(r, ctx, go);

    } else if (type && ngx_strncmp(type, "response.", 9) == 0) {
        rc = ngx_http_ai_gateway_gout_responses(r, ctx, go, type, root);

    } else if ((choices = json_object_get(root, "choices"))
               && json_is_array(choices))
    {
        /* OpenAI chat and completions chunks */
        if (ngx_http_ai_gateway_gout_remember_chunk(r, go, root) != NGX_OK) {
            rc = NGX_ERROR;
        }

        json_array_foreach(choices, i, c) {
            if (rc != NGX_OK) {
                /* a block (or an error) in one choice ends the chunk: the
                 * next choice must not clear it */
                break;
            }

            index = json_integer_value(json_object_get(c, "index"));
            ngx_snprintf((u_char *) key, sizeof(key), "c%L%Z",
                         (int64_t) index);

            delta = json_object_get(c, "delta");

            if (delta && json_is_string(json_object_get(delta, "content"))) {
                rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, delta,
                                       "content", key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_CHAT, index,
                                       0);

            } else if (json_is_string(json_object_get(c, "text"))) {
                rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, c, "text",
                                       key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_COMPLETION,
                                       index, 0);
            }

            json_array_foreach(json_object_get(delta, "tool_calls"), n, tc) {
                fn = json_object_get(tc, "function");

                if (rc == NGX_OK && json_object_get(fn, "arguments")) {
                    index2 = json_integer_value(json_object_get(tc, "index"));
                    ngx_snprintf((u_char *) key, sizeof(key), "t%L.%L%Z",
                                 (int64_t) index, (int64_t) index2);

                    rc = ngx_http_ai_gateway_gout_delta(r, ctx, go, fn,
                                       "arguments", key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_TOOL, index,
                                       index2);
                }
            }

            if (rc != NGX_OK || json_is_null(json_object_get(c,
                                                       "finish_reason"))
                || json_object_get(c, "finish_reason") == NULL)
            {
                continue;
            }

            /* the tool calls' held arguments, in chunks before this one */
            rc = ngx_http_ai_gateway_gout_flush_tools(r, ctx, go, index);

            if (rc != NGX_OK) {
                continue;
            }

            ngx_snprintf((u_char *) key, sizeof(key), "c%L%Z",
                         (int64_t) index);

            /* the last chunk of this choice takes what was held back,
             * after its own text (a last chunk may carry text too): in
             * its delta for chat (made when it has none, or null), in its
             * "text" for completions */
            kind = ngx_http_ai_gateway_gout_kind(go, key);
            rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

            if (rc == NGX_OK && rest.len) {
                if (kind == NGX_HTTP_AI_GATEWAY_GOUT_COMPLETION) {
                    rc = ngx_http_ai_gateway_gout_append(r, c, "text", &rest);

                } else {
                    if (!json_is_object(delta)) {
                        delta = json_object();

                        if (delta == NULL
                            || json_object_set_new(c, "delta", delta) != 0)
                        {
                            return NGX_ERROR;
                        }
                    }

                    rc = ngx_http_ai_gateway_gout_append(r, delta, "content",
                                                         &rest);
                }
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


/* the kind of the text of key (NGX_HTTP_AI_GATEWAY_GOUT_FIND: none) */

static ngx_uint_t
ngx_http_ai_gateway_gout_kind(ngx_http_ai_gateway_gout_t *go, const char *key)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(key);

    for (i = 0; go->texts && i < go->ntexts; i++) {
        if (go->texts[i].key_len == len
            && ngx_strncmp(go->texts[i].key, key, len) == 0)
        {
            return go->texts[i].kind;
        }
    }

    return NGX_HTTP_AI_GATEWAY_GOUT_FIND;
}


/* a choice ends: its tool calls' held arguments go out, a chunk each */

static ngx_int_t
ngx_http_ai_gateway_gout_flush_tools(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_int_t choice)
{
    ngx_int_t                          rc;
    ngx_str_t                          rest;
    ngx_uint_t                         i;
    json_int_t                         index2;
    ngx_http_ai_gateway_guard_text_t  *t;

    for (i = 0; i < go->ntexts; i++) {
        t = &go->texts[i];

        if (t->key_len == 0 || t->kind != NGX_HTTP_AI_GATEWAY_GOUT_TOOL
            || t->index != choice)
        {
            continue;
        }

        index2 = t->index2;

        rc = ngx_http_ai_gateway_gout_flush(r, ctx, go, t, &rest);

        if (rc != NGX_OK) {
            return rc;
        }

        if (rest.len == 0) {
            continue;
        }

        rc = ngx_http_ai_gateway_gout_emit_rest(go,
                                                NGX_HTTP_AI_GATEWAY_GOUT_TOOL,
                                                choice, index2, &rest, NULL);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * A piece of a tool's arguments, JSON text.  What goes out is cut where
 * no string or number of the text is open (gout_args_cut()): a PII value
 * is then whole in one piece, and its string is masked decoded and
 * encoded again (gout_args_out()), so that the arguments stay JSON.  A
 * string longer than NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD goes out in
 * parts, cut as a text would be.  Keywords and patterns are looked for in
 * the text as it is, across pieces.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_args(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, json_t *v, json_t *owner,
    const char *field)
{
    u_char                            *all, *scan;
    size_t                             len, cut, keep;
    ngx_int_t                          rc;
    ngx_str_t                          out;
    ngx_uint_t                         in_str, cut_in_str;

    if (ngx_http_ai_gateway_gout_join(r, go, t, v, &all, &scan, &len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    in_str = t->in_str;

    cut = ngx_http_ai_gateway_gout_args_cut(all, len, in_str, &cut_in_str,
                                            go->guard->pii
                                            != NGX_HTTP_AI_GATEWAY_GUARD_NONE
                                            ? go->guard->pii_types : 0);
    keep = len - cut;

    /* keywords and patterns on what goes out (PII below, decoded) */
    if (ngx_http_ai_gateway_gout_judge(r, ctx, go, t, all, cut, scan)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (keep
        && ngx_http_ai_gateway_append(r, &t->held, all + cut, keep,
                                      NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD
                                      + NGX_HTTP_AI_GATEWAY_GUARD_HOLD)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    t->in_str = cut_in_str;

    rc = ngx_http_ai_gateway_gout_args_out(r, ctx, go, all, cut, in_str,
                                           &out);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_ai_gateway_gout_remember(t, out.data, out.len);

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) out.data,
                                                    out.len)) == 0
           ? NGX_OK : NGX_ERROR;
}


/*
 * Where a piece of JSON text may be cut: after the last byte that ends a
 * value or separates two (outside any string, number or word), so that
 * what is held starts outside a string; when that would hold more than
 * NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD bytes (a very long string), where
 * a text would be cut, but never inside an escape or a surrogate pair.
 * *cut_in_str: whether the cut is inside a string.
 */

static size_t
ngx_http_ai_gateway_gout_args_cut(const u_char *p, size_t len,
    ngx_uint_t in_str, ngx_uint_t *cut_in_str, unsigned types)
{
    u_char      c;
    size_t      i, n, cut, cut2;
    ngx_uint_t  str, esc, cut_str;

    str = in_str;
    esc = 0;
    cut = 0;
    cut_str = in_str;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (str) {
            if (esc) {
                esc = 0;

            } else if (c == '\\') {
                esc = 1;

            } else if (c == '"') {
                str = 0;
                cut = i + 1;
                cut_str = 0;
            }

            continue;
        }

        if (c == '"') {
            /* before a string: the string is held whole */
            cut = i;
            cut_str = 0;
            str = 1;
            continue;
        }

        if (c == '{' || c == '}' || c == '[' || c == ']' || c == ','
            || c == ':' || c == ' ' || c == '\n' || c == '\r' || c == '\t')
        {
            cut = i + 1;
            cut_str = 0;
        }
    }

    if (len - cut <= NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD) {
        /* a string up to 16 KiB waits whole: a key or a token in it is
         * masked whole */
        *cut_in_str = cut_str;
        return cut;
    }

    /* a long open string (or word): cut as a text, outside escapes */

    cut2 = len - ngx_http_ai_gateway_gout_hold(p + cut, len - cut);

    if (types) {
        /* no match is cut (a key block, a JWT in the string): it waits
         * whole, up to what a text may hold */
        cut2 = ngx_http_ai_gateway_gout_settle(p, len, cut2, types);
    }

    if (cut2 < cut || len - cut2 > NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD) {
        cut2 = len - NGX_HTTP_AI_GATEWAY_GUARD_HOLD;
    }

    str = cut_str;

    for (i = cut; i < cut2; i++) {
        c = p[i];

        if (!str) {
            str = (c == '"');
            continue;
        }

        if (c == '\\') {
            /* an escape is not cut: "\uXXXX" is 6 bytes, the others 2, a
             * surrogate pair 12 */
            n = (i + 1 < len && p[i + 1] == 'u') ? 6 : 2;

            if (n == 6 && i + 12 <= len && (p[i + 2] == 'd' || p[i + 2] == 'D')
                && ngx_strchr("89abAB", p[i + 3]) && p[i + 3] != '\0'
                && p[i + 6] == '\\' && p[i + 7] == 'u')
            {
                n = 12;
            }

            if (i + n > cut2) {
                cut2 = i;
                break;
            }

            i += n - 1;
            continue;
        }

        if (c == '"') {
            str = 0;
        }
    }

    *cut_in_str = str;

    return cut2;
}


/*
 * A part of a tool's arguments that goes out: each string in it (whole,
 * or the part of one at its start or end) decoded, its PII masked, and
 * encoded again; the rest as it is.  With pii=block, PII in it blocks
 * (NGX_DECLINED).
 */

static ngx_int_t
ngx_http_ai_gateway_gout_args_out(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const u_char *p, size_t len, ngx_uint_t in_str, ngx_str_t *out)
{
    u_char        *d, *m;
    size_t         i, j, n, count;
    unsigned       types, all;
    ngx_str_t      str;
    const u_char  *q;

    out->data = (u_char *) p;
    out->len = len;

    if (len == 0 || go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_NONE) {
        goto done;
    }

    /* the strings decoded, masked and encoded again: at most each byte as
     * a mask 5 times longer, each of those escaped as "\u00XX" */
    d = ngx_pnalloc(r->pool, NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len) * 6 + 1);
    if (d == NULL) {
        return NGX_ERROR;
    }

    out->data = d;
    all = 0;

    for (i = 0; i < len; /* void */) {

        if (!in_str) {
            q = memchr(p + i, '"', len - i);
            n = (q ? (size_t) (q - p) + 1 : len) - i;
            d = ngx_cpymem(d, p + i, n);
            i += n;
            in_str = (q != NULL);
            continue;
        }

        /* a string's bytes up to its closing quote, or the end */

        for (j = i; j < len && p[j] != '"'; j++) {
            if (p[j] == '\\') {
                j++;
            }
        }

        j = ngx_min(j, len);

        if (ngx_http_ai_gateway_guard_decode(r->pool, p + i, p + j, &str)
            != NGX_OK)
        {
            /* not JSON: as it is */
            d = ngx_cpymem(d, p + i, j - i);

        } else {
            types = ngx_http_ai_gateway_guard_mask_types(str.data, str.len,
                                                  go->guard->pii_types);

            if (types == 0) {
                d = ngx_cpymem(d, p + i, j - i);

            } else if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
                return ngx_http_ai_gateway_gout_pii_block(r, ctx, types);

            } else {
                all |= types;

                m = ngx_pnalloc(r->pool,
                                NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(str.len));
                if (m == NULL) {
                    return NGX_ERROR;
                }

                n = ngx_http_ai_gateway_pii_mask(str.data, str.len,
                                                 go->guard->pii_types, m,
                                                 &count);
                d = (u_char *) ngx_escape_json(d, m, n);
            }
        }

        i = j;

        if (i < len) {
            *d++ = '"';
            i++;
            in_str = 0;
        }
    }

    out->len = d - out->data;

    if (all) {
        ngx_http_ai_gateway_guard_mask_note(r, ctx, "output", all);
    }

done:

    ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture_args, out->data,
                                     out->len);

    return NGX_OK;
}


/*
 * The Responses API's other events repeat what the deltas streamed: the
 * whole text of a part ("response.content_part.done"), of an output item
 * ("response.output_item.done"), of the answer ("response.completed"),
 * and a function call's arguments, which come as deltas of their own.
 * Each text there is masked (or blocks) as a JSON answer's would.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_responses(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *type, json_t *root)
{
    char        key[24];
    size_t      i;
    json_t     *v, *item;
    ngx_int_t   rc;
    ngx_str_t   rest;
    json_int_t  index;

    if (ngx_strcmp(type, "response.function_call_arguments.delta") == 0) {
        index = json_integer_value(json_object_get(root, "output_index"));
        ngx_snprintf((u_char *) key, sizeof(key), "f%L%Z", (int64_t) index);

        return ngx_http_ai_gateway_gout_delta(r, ctx, go, root, "delta", key,
                                       NGX_HTTP_AI_GATEWAY_GOUT_TOOL_RESPONSES,
                                       index, 0);
    }

    if (ngx_strcmp(type, "response.function_call_arguments.done") == 0) {
        index = json_integer_value(json_object_get(root, "output_index"));
        ngx_snprintf((u_char *) key, sizeof(key), "f%L%Z", (int64_t) index);

        rc = ngx_http_ai_gateway_gout_flush_text(r, ctx, go, key, &rest);

        if (rc == NGX_OK && rest.len) {
            /* the held rest in a delta of its own, before the whole */
            rc = ngx_http_ai_gateway_gout_emit_rest(go,
                                       NGX_HTTP_AI_GATEWAY_GOUT_TOOL_RESPONSES,
                                       index, 0, &rest,
                                       json_object_get(root, "item_id"));
        }

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ai_gateway_gout_mask_string(r, ctx, go, root,
                                                    "arguments");
    }

    v = json_object_get(root, "part");

    if (json_is_object(v)) {
        return ngx_http_ai_gateway_gout_mask_string(r, ctx, go, v, "text");
    }

    v = json_object_get(root, "item");

    if (json_is_object(v)) {
        return ngx_http_ai_gateway_gout_mask_item(r, ctx, go, v);
    }

    v = json_object_get(json_object_get(root, "response"), "output");

    json_array_foreach(v, i, item) {
        rc = ngx_http_ai_gateway_gout_mask_item(r, ctx, go, item);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/* an output item: a message's text parts, a function call's arguments */

static ngx_int_t
ngx_http_ai_gateway_gout_mask_item(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *item)
{
    size_t      i;
    json_t     *part;
    ngx_int_t   rc;

    rc = ngx_http_ai_gateway_gout_mask_string(r, ctx, go, item, "arguments");

    json_array_foreach(json_object_get(item, "content"), i, part) {
        if (rc == NGX_OK) {
            rc = ngx_http_ai_gateway_gout_mask_string(r, ctx, go, part,
                                                      "text");
        }
    }

    return rc;
}


/*
 * Whole arguments (JSON text): masked in their strings, or NGX_ABORT for a
 * block; NGX_DECLINED when they are no JSON object (masked as a text).
 */

static ngx_int_t
ngx_http_ai_gateway_gout_mask_args(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const u_char *p, size_t len)
{
    ngx_int_t                          rc;
    ngx_http_ai_gateway_guard_t        g;
    ngx_http_ai_gateway_guard_scan_t   s;

    g = *go->guard;
    g.keywords = NULL;
    g.deny = NULL;
    g.allow = NULL;

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = &g;
    s.pool = r->pool;

    rc = ngx_http_ai_gateway_guard_json_all(&s, p, len);

    if (rc == NGX_ERROR) {
        return NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
        ctx->gout_category = s.category;
        ngx_http_ai_gateway_guard_note(r, ctx, "output", s.category, "block");
        return NGX_ABORT;
    }

    if (s.masks == 0) {
        return NGX_OK;
    }

    ngx_http_ai_gateway_guard_mask_note(r, ctx, "output", s.mask_types);

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) s.document.data,
                                                    s.document.len)) == 0
           ? NGX_OK : NGX_ERROR;
}


/* owner[field], a whole text: PII masked, or NGX_DECLINED (pii=block) */

static ngx_int_t
ngx_http_ai_gateway_gout_mask_string(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field)
{
    u_char        *out;
    size_t         len, count;
    json_t        *v;
    unsigned       types;
    ngx_int_t      rc;
    const u_char  *p;

    v = json_object_get(owner, field);

    if (!json_is_string(v) || go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_NONE)
    {
        return NGX_OK;
    }

    p = (const u_char *) json_string_value(v);
    len = json_string_length(v);

    if (ngx_strcmp(field, "arguments") == 0) {
        /* JSON text: PII in its strings, so that a mask keeps it JSON */
        rc = ngx_http_ai_gateway_gout_mask_args(r, ctx, go, owner, field, p,
                                                len);
        if (rc != NGX_DECLINED) {
            return (rc == NGX_ABORT) ? NGX_DECLINED : rc;
        }
    }

    types = ngx_http_ai_gateway_guard_mask_types(p, len, go->guard->pii_types);

    if (types == 0) {
        return NGX_OK;
    }

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
        return ngx_http_ai_gateway_gout_pii_block(r, ctx, types);
    }

    ngx_http_ai_gateway_guard_mask_note(r, ctx, "output", types);

    out = ngx_pnalloc(r->pool, NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len));
    if (out == NULL) {
        return NGX_ERROR;
    }

    len = ngx_http_ai_gateway_pii_mask(p, len, go->guard->pii_types, out,
                                       &count);

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) out, len)) == 0
           ? NGX_OK : NGX_ERROR;
}


/*
 * The event's JSON with each escaped surrogate that is not half of a pair
 * written "\ufffd", loaded; NULL when that changes nothing or does not
 * load either.
 */

static json_t *
ngx_http_ai_gateway_gout_load_lone(ngx_http_request_t *r, const u_char *p,
    size_t len)
{
    u_char      *d, *q;
    size_t       i;
    ngx_int_t    c, next;
    ngx_uint_t   fixed;

    d = ngx_pnalloc(r->pool, len);
    if (d == NULL) {
        return NULL;
    }

    q = d;
    fixed = 0;

    for (i = 0; i < len; /* void */) {
        if (p[i] != '\\' || i + 1 == len) {
            *q++ = p[i++];
            continue;
        }

        if (p[i + 1] != 'u' || len - i < 6) {
            *q++ = p[i++];
            *q++ = p[i++];
            continue;
        }

        c = ngx_hextoi((u_char *) p + i + 2, 4);
        next = (len - i >= 12 && p[i + 6] == '\\' && p[i + 7] == 'u')
               ? ngx_hextoi((u_char *) p + i + 8, 4) : -1;

        if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
            /* a pair */
            q = ngx_cpymem(q, p + i, 12);
            i += 12;
            continue;
        }

        if (c >= 0xd800 && c <= 0xdfff) {
            q = ngx_cpymem(q, "\\ufffd", 6);
            fixed = 1;

        } else {
            q = ngx_cpymem(q, p + i, 6);
        }

        i += 6;
    }

    if (!fixed) {
        return NULL;
    }

    return json_loadb((const char *) d, q - d, JSON_ALLOW_NUL, NULL);
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
 * unless it is a tool's arguments, what may still become a match waits
 * for the next delta.  A PEM block or a JWT that runs to the text's end is
 * a secret at once: "[REDACTED_SECRET]" goes out for it, and the rest of
 * it is dropped as it comes (gout_secret_drop()), so that a long key needs
 * no long hold.  NGX_DECLINED: blocked (ctx->gout_category says why).
 */

static ngx_int_t
ngx_http_ai_gateway_gout_delta(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    json_t *owner, const char *field, const char *key, ngx_uint_t kind,
    json_int_t index, json_int_t index2)
{
    u_char                            *all, *scan, *out;
    size_t                             len, keep, n, count, start, d;
    json_t                            *v;
    unsigned                           types;
    ngx_uint_t                         secret;
    ngx_http_ai_gateway_guard_text_t  *t;

    v = json_object_get(owner, field);
    if (!json_is_string(v)) {
        return NGX_OK;
    }

    t = ngx_http_ai_gateway_gout_text(r, go, key, kind);
    if (t == NULL) {
        return ngx_http_ai_gateway_gout_too_many(r, ctx);
    }

    t->index = index;
    t->index2 = index2;

    if (kind >= NGX_HTTP_AI_GATEWAY_GOUT_TOOL) {
        return ngx_http_ai_gateway_gout_args(r, ctx, go, t, v, owner, field);
    }

    if (ngx_http_ai_gateway_gout_join(r, go, t, v, &all, &scan, &len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (t->secret) {
        /* the rest of a secret already masked: dropped */
        d = ngx_http_ai_gateway_gout_secret_drop(t, all, len);

        if (t->secret) {
            /* what may be the start of its end waits */
            if (len > d
                && ngx_http_ai_gateway_append(r, &t->held, all + d, len - d,
                                              NGX_HTTP_AI_GATEWAY_GUARD_HOLD)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            return json_object_set_new(owner, field, json_string("")) == 0
                   ? NGX_OK : NGX_ERROR;
        }

        all += d;
        len -= d;
    }

    keep = ngx_http_ai_gateway_gout_hold(all, len);
    secret = 0;

    if ((go->guard->pii_types & NGX_HTTP_AI_GATEWAY_GOUT_SECRETS)
        && go->guard->pii != NGX_HTTP_AI_GATEWAY_GUARD_NONE)
    {
        start = ngx_http_ai_gateway_gout_secret_start(all, len, &secret);

        if (secret) {
            if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
                return ngx_http_ai_gateway_gout_pii_block(r, ctx,
                                          NGX_HTTP_AI_GATEWAY_GOUT_SECRETS);
            }

            /* the secret from start on is masked now, what follows it is
             * dropped: nothing waits */
            keep = len - start;
        }
    }

    n = len - keep;

    if (!secret && go->guard->pii != NGX_HTTP_AI_GATEWAY_GUARD_NONE) {
        /* no match is cut: it goes out whole, or waits whole */
        n = ngx_http_ai_gateway_gout_settle(all, len, n,
                                            go->guard->pii_types);
        keep = len - n;

        if (keep > NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD) {
            /* a match longer than we hold is a key or a key block: masked
             * now, its rest dropped as it comes */
            secret = (keep > 11
                      && ngx_strncmp(all + n, "-----BEGIN ", 11) == 0)
                     ? NGX_HTTP_AI_GATEWAY_GOUT_PEM
                     : NGX_HTTP_AI_GATEWAY_GOUT_TOKEN;

            if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
                return ngx_http_ai_gateway_gout_pii_block(r, ctx,
                                          NGX_HTTP_AI_GATEWAY_GOUT_SECRETS);
            }
        }
    }

    /*
     * Keywords and patterns, on what goes out (with what was sent before
     * it): a held word may still grow ("exploit" of "exploits"), and is
     * judged when it goes out, or at the text's end (gout_flush())
     */
    if (ngx_http_ai_gateway_gout_judge(r, ctx, go, t, all, n, scan)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK && n) {
        types = ngx_http_ai_gateway_guard_mask_types(all, n,
                                                     go->guard->pii_types);
        if (types) {
            return ngx_http_ai_gateway_gout_pii_block(r, ctx, types);
        }
    }

    if (keep && !secret
        && ngx_http_ai_gateway_append(r, &t->held, all + n, keep,
                                      NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD
                                      + NGX_HTTP_AI_GATEWAY_GUARD_HOLD)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the part that goes out now, masked */

    out = all;

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_MASK && (n || secret)) {
        count = 0;

        if (n) {
            (void) ngx_http_ai_gateway_pii_mask(all, n, go->guard->pii_types,
                                                NULL, &count);
        }

        if (count || secret) {
            ngx_http_ai_gateway_guard_mask_note(r, ctx, "output",
                          (n ? ngx_http_ai_gateway_guard_mask_types(all, n,
                                                     go->guard->pii_types)
                             : 0)
                          | (secret ? NGX_HTTP_AI_GATEWAY_GOUT_SECRETS : 0));

            out = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                         NGX_HTTP_AI_GATEWAY_GOUT_MASKED,
                                         NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(n)
                                         + sizeof("[REDACTED_SECRET]"));
            if (out == NULL) {
                return NGX_ERROR;
            }

            n = count ? ngx_http_ai_gateway_pii_mask(all, n,
                                                     go->guard->pii_types,
                                                     out, NULL)
                      : (size_t) (ngx_cpymem(out, all, n) - out);

            if (secret) {
                n = ngx_cpymem(out + n, "[REDACTED_SECRET]",
                               sizeof("[REDACTED_SECRET]") - 1) - out;
                t->secret = secret;
                t->segs = ngx_http_ai_gateway_gout_segments(all + len - keep,
                                                            keep);

                /* a start of the end line ("-----EN") waits for the rest */
                d = (secret == NGX_HTTP_AI_GATEWAY_GOUT_PEM)
                    ? ngx_http_ai_gateway_gout_end_start(all + len - keep,
                                                         keep)
                    : 0;

                if (d && ngx_http_ai_gateway_append(r, &t->held,
                                            all + len - d, d,
                                            NGX_HTTP_AI_GATEWAY_GUARD_HOLD)
                         != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }
        }
    }

    ngx_http_ai_gateway_gout_remember(t, out, n);

    ngx_http_ai_gateway_gout_capture(r, ctx, &ctx->capture, out, n);

    return json_object_set_new(owner, field,
                               json_stringn_nocheck((char *) out, n)) == 0
           ? NGX_OK : NGX_ERROR;
}


/*
 * What was held of the text, then the delta's: in "all" (a working copy),
 * with room for the look-back before it in "scan"; the held part is taken.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_join(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, ngx_http_ai_gateway_guard_text_t *t,
    json_t *v, u_char **all, u_char **scan, size_t *len)
{
    u_char  *p;
    size_t   held, n;

    held = t->held ? (size_t) (t->held->last - t->held->pos) : 0;
    n = json_string_length(v);

    *all = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                            NGX_HTTP_AI_GATEWAY_GOUT_ALL,
                                            held + n + 1);
    *scan = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                             NGX_HTTP_AI_GATEWAY_GOUT_SCAN,
                                             t->back_len + held + n);
    if (*all == NULL || *scan == NULL) {
        return NGX_ERROR;
    }

    p = *all;

    if (held) {
        p = ngx_cpymem(p, t->held->pos, held);
        t->held->last = t->held->pos;
    }

    p = ngx_cpymem(p, json_string_value(v), n);
    *len = p - *all;

    return NGX_OK;
}


/* what was sent, for keywords and patterns across deltas */

static void
ngx_http_ai_gateway_gout_remember(ngx_http_ai_gateway_guard_text_t *t,
    const u_char *p, size_t n)
{
    size_t  keep;

    if (n >= NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK) {
        ngx_memcpy(t->back, p + n - NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK,
                   NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK);
        t->back_len = NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK;
        return;
    }

    keep = ngx_min(t->back_len, NGX_HTTP_AI_GATEWAY_GUARD_LOOKBACK - n);
    ngx_memmove(t->back, t->back + t->back_len - keep, keep);
    ngx_memcpy(t->back + keep, p, n);
    t->back_len = keep + n;
}


/*
 * Keywords and patterns on p, after what was sent (so that a word split
 * over deltas is seen; scan has room for both): NGX_DECLINED blocks.  PII
 * is judged apart, on what goes out only: what was sent was masked.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_judge(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, const u_char *p, size_t len,
    u_char *scan)
{
    u_char                            *q;
    ngx_int_t                          rc;
    ngx_http_ai_gateway_guard_t        g;
    ngx_http_ai_gateway_guard_scan_t   s;

    g = *go->guard;
    g.pii = NGX_HTTP_AI_GATEWAY_GUARD_NONE;

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = &g;
    s.pool = r->pool;

    q = ngx_cpymem(scan, t->back, t->back_len);
    ngx_memcpy(q, p, len);

    rc = ngx_http_ai_gateway_guard_text(&s, scan, t->back_len + len);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    ctx->gout_category = s.category;
    ngx_http_ai_gateway_guard_note(r, ctx, "output", s.category,
                                   rc == NGX_ERROR ? "error" : "block");

    return NGX_DECLINED;
}


/* PII of these types blocks the stream: the first type names it */

static ngx_int_t
ngx_http_ai_gateway_gout_pii_block(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, unsigned types)
{
    ctx->gout_category = ngx_http_ai_gateway_guard_pii_category(
                                                          ffs(types) - 1);
    ngx_http_ai_gateway_guard_note(r, ctx, "output", ctx->gout_category,
                                   "block");

    return NGX_DECLINED;
}


/* more texts at once than we follow: the stream ends, as for a block */

static ngx_int_t
ngx_http_ai_gateway_gout_too_many(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "ai_gateway: the output guardrail follows at most %d "
                  "texts of a stream at once: the stream is ended",
                  NGX_HTTP_AI_GATEWAY_GUARD_TEXTS_MAX);

    ctx->gout_category = "too_many_texts";
    ngx_http_ai_gateway_guard_note(r, ctx, "output", ctx->gout_category,
                                   "error");

    return NGX_DECLINED;
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


/*
 * The end of a text: what is held goes out, masked, or blocks; the text's
 * place is free again.  The rest of a secret being dropped is dropped.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_flush_text(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    const char *key, ngx_str_t *text)
{
    ngx_http_ai_gateway_guard_text_t  *t;

    ngx_str_null(text);

    t = ngx_http_ai_gateway_gout_text(r, go, key,
                                      NGX_HTTP_AI_GATEWAY_GOUT_FIND);
    if (t == NULL) {
        return NGX_OK;
    }

    return ngx_http_ai_gateway_gout_flush(r, ctx, go, t, text);
}


static ngx_int_t
ngx_http_ai_gateway_gout_flush(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go,
    ngx_http_ai_gateway_guard_text_t *t, ngx_str_t *text)
{
    u_char                            *p, *scan;
    size_t                             len, count;
    unsigned                           types;

    ngx_str_null(text);

    p = t->held ? t->held->pos : NULL;
    len = t->held ? (size_t) (t->held->last - t->held->pos) : 0;

    if (t->held) {
        t->held->last = t->held->pos;
    }

    if (t->secret == NGX_HTTP_AI_GATEWAY_GOUT_PEM) {
        /* the unended rest of a key block */
        len = 0;
    }

    /* (a token's secret holds at most the '.' after it: it goes out) */

    if (len && (go->guard->keywords || go->guard->deny)) {
        /* the held end, with what was sent before it: keywords, patterns */
        scan = ngx_http_ai_gateway_gout_scratch(r->pool, go,
                                                NGX_HTTP_AI_GATEWAY_GOUT_SCAN,
                                                t->back_len + len);
        if (scan == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_ai_gateway_gout_judge(r, ctx, go, t, p, len, scan)
            != NGX_OK)
        {
            t->key_len = 0;
            return NGX_DECLINED;
        }
    }

    /* free: the buffer stays for the next text in this place (t->kind
     * and t->in_str are read below) */
    t->key_len = 0;
    t->back_len = 0;
    t->secret = 0;

    if (len == 0) {
        return NGX_OK;
    }

    if (t->kind >= NGX_HTTP_AI_GATEWAY_GOUT_TOOL) {
        return ngx_http_ai_gateway_gout_args_out(r, ctx, go, p, len,
                                                 t->in_str, text);
    }

    if (go->guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
        types = ngx_http_ai_gateway_guard_mask_types(p, len,
                                                     go->guard->pii_types);
        if (types) {
            return ngx_http_ai_gateway_gout_pii_block(r, ctx, types);
        }
    }

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


/*
 * The stream ends ([DONE], or its last buffer) with texts that still hold
 * bytes (no finish_reason chunk came, or no content_block_stop): each rest
 * goes out in an event of its own, of the shape its text came in.
 */

static ngx_int_t
ngx_http_ai_gateway_gout_flush_all(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_gout_t *go)
{
    ngx_int_t                          rc;
    ngx_str_t                          rest;
    ngx_uint_t                         i, kind;
    json_int_t                         index, index2;
    ngx_http_ai_gateway_guard_text_t  *t;

    for (i = 0; i < go->ntexts; i++) {
        t = &go->texts[i];

        if (t->key_len == 0) {
            continue;
        }

        kind = t->kind;
        index = t->index;
        index2 = t->index2;

        rc = ngx_http_ai_gateway_gout_flush(r, ctx, go, t, &rest);

        if (rc != NGX_OK || rest.len == 0) {
            if (rc != NGX_OK) {
                return rc;
            }

            continue;
        }

        rc = ngx_http_ai_gateway_gout_emit_rest(go, kind, index, index2,
                                                &rest, NULL);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * The event that carries the rest of a text, written under its kind's
 * event name (none for OpenAI chunks); item_id, when the event that ends
 * the text has one, is copied into it
 */

static ngx_int_t
ngx_http_ai_gateway_gout_emit_rest(ngx_http_ai_gateway_gout_t *go,
    ngx_uint_t kind, json_int_t index, json_int_t index2, ngx_str_t *rest,
    json_t *item_id)
{
    json_t     *e;
    ngx_str_t   name;
    ngx_int_t   rc;

    e = ngx_http_ai_gateway_gout_rest_event(go, kind, index, index2, rest);
    if (e == NULL) {
        return NGX_ERROR;
    }

    if (item_id != NULL) {
        (void) json_object_set(e, "item_id", item_id);
    }

    switch (kind) {

    case NGX_HTTP_AI_GATEWAY_GOUT_ANTHROPIC:
    case NGX_HTTP_AI_GATEWAY_GOUT_TOOL_ANTHROPIC:
        ngx_str_set(&name, "content_block_delta");
        break;

    case NGX_HTTP_AI_GATEWAY_GOUT_RESPONSES:
        ngx_str_set(&name, "response.output_text.delta");
        break;

    case NGX_HTTP_AI_GATEWAY_GOUT_TOOL_RESPONSES:
        ngx_str_set(&name, "response.function_call_arguments.delta");
        break;

    default:
        ngx_str_null(&name);
    }

    rc = ngx_http_ai_gateway_gout_emit(go, name.data, name.len, e);
    json_decref(e);

    return rc;
}


/* an event that carries the rest of a text */

static json_t *
ngx_http_ai_gateway_gout_rest_event(ngx_http_ai_gateway_gout_t *go,
    ngx_uint_t kind, json_int_t index, json_int_t index2, ngx_str_t *rest)
{
    json_t  *e, *choices;

    switch (kind) {

    case NGX_HTTP_AI_GATEWAY_GOUT_ANTHROPIC:
        return json_pack("{s:s,s:I,s:{s:s,s:s%}}", "type",
                         "content_block_delta", "index", index, "delta",
                         "type", "text_delta", "text", rest->data, rest->len);

    case NGX_HTTP_AI_GATEWAY_GOUT_TOOL_ANTHROPIC:
        return json_pack("{s:s,s:I,s:{s:s,s:s%}}", "type",
                         "content_block_delta", "index", index, "delta",
                         "type", "input_json_delta", "partial_json",
                         rest->data, rest->len);

    case NGX_HTTP_AI_GATEWAY_GOUT_TOOL_RESPONSES:
        return json_pack("{s:s,s:I,s:s%}", "type",
                         "response.function_call_arguments.delta",
                         "output_index", index, "delta", rest->data,
                         rest->len);

    case NGX_HTTP_AI_GATEWAY_GOUT_TOOL:
        choices = json_pack("[{s:I,s:{s:[{s:I,s:{s:s%}}]},s:n}]", "index",
                            index, "delta", "tool_calls", "index", index2,
                            "function", "arguments", rest->data, rest->len,
                            "finish_reason");
        break;

    case NGX_HTTP_AI_GATEWAY_GOUT_RESPONSES:
        return json_pack("{s:s,s:I,s:I,s:s%}", "type",
                         "response.output_text.delta", "output_index", index,
                         "content_index", index2, "delta", rest->data,
                         rest->len);

    case NGX_HTTP_AI_GATEWAY_GOUT_COMPLETION:
        choices = json_pack("[{s:I,s:s%,s:n}]", "index", index, "text",
                            rest->data, rest->len, "finish_reason");
        break;

    default: /* NGX_HTTP_AI_GATEWAY_GOUT_CHAT */
        choices = json_pack("[{s:I,s:{s:s%},s:n}]", "index", index, "delta",
                            "content", rest->data, rest->len,
                            "finish_reason");
        break;
    }

    if (choices == NULL) {
        return NULL;
    }

    e = go->chunk ? json_copy(go->chunk) : json_object();

    if (e == NULL || json_object_set_new(e, "choices", choices) != 0) {
        json_decref(e);
        return NULL;
    }

    return e;
}


/* the first OpenAI chunk's fields (id, model, ...), for gout_rest_event() */

static ngx_int_t
ngx_http_ai_gateway_gout_remember_chunk(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, json_t *root)
{
    ngx_pool_cleanup_t  *cln;

    if (go->chunk != NULL) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    go->chunk = json_copy(root);
    if (go->chunk == NULL) {
        return NGX_ERROR;
    }

    (void) json_object_del(go->chunk, "choices");
    (void) json_object_del(go->chunk, "usage");

    cln->handler = ngx_http_ai_gateway_gout_chunk_cleanup;
    cln->data = go;

    return NGX_OK;
}


static void
ngx_http_ai_gateway_gout_chunk_cleanup(void *data)
{
    ngx_http_ai_gateway_gout_t  *go = data;

    json_decref(go->chunk);
    go->chunk = NULL;
}


/*
 * The text of key, or a place made for it when kind is a text's kind
 * (NGX_HTTP_AI_GATEWAY_GOUT_FIND: only found).  Places are reused once
 * their text ended; up to NGX_HTTP_AI_GATEWAY_GUARD_TEXTS_MAX at once.
 */

static ngx_http_ai_gateway_guard_text_t *
ngx_http_ai_gateway_gout_text(ngx_http_request_t *r,
    ngx_http_ai_gateway_gout_t *go, const char *key, ngx_uint_t kind)
{
    size_t                             len;
    ngx_uint_t                         i, n;
    ngx_http_ai_gateway_guard_text_t  *t, *free, *texts;

    if (go->texts == NULL) {
        return NULL;
    }

    len = ngx_strlen(key);
    free = NULL;

    for (i = 0; i < go->ntexts; i++) {
        t = &go->texts[i];

        if (t->key_len == len && ngx_strncmp(t->key, key, len) == 0) {
            return t;
        }

        if (t->key_len == 0 && free == NULL) {
            free = t;
        }
    }

    if (kind == NGX_HTTP_AI_GATEWAY_GOUT_FIND || len > sizeof(t->key)) {
        return NULL;
    }

    if (free == NULL) {
        if (go->ntexts == go->nalloc) {
            n = go->nalloc * 2;

            if (n > NGX_HTTP_AI_GATEWAY_GUARD_TEXTS_MAX) {
                return NULL;
            }

            texts = ngx_pcalloc(r->pool,
                                n * sizeof(ngx_http_ai_gateway_guard_text_t));
            if (texts == NULL) {
                return NULL;
            }

            ngx_memcpy(texts, go->texts,
                       go->ntexts * sizeof(ngx_http_ai_gateway_guard_text_t));
            (void) ngx_pfree(r->pool, go->texts);

            go->texts = texts;
            go->nalloc = n;
        }

        free = &go->texts[go->ntexts++];
    }

    t = free;
    ngx_memcpy(t->key, key, len);
    t->key_len = len;
    t->back_len = 0;
    t->secret = 0;
    t->in_str = 0;
    t->segs = 0;
    t->kind = kind;
    t->index = 0;
    t->index2 = 0;

    return t;
}


/*
 * How many bytes at the end may still grow into a match:
 *   - the last word (no white space in it), at most
 *     NGX_HTTP_AI_GATEWAY_GUARD_HOLD bytes of it, but a whole JWT ("eyJ")
 *     up to NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD: it is masked as a
 *     secret as soon as its third segment begins (gout_secret_start());
 *   - when that word is number-like (or the text ends in spaces after
 *     one), the number-like groups before it that single spaces separate
 *     ("+1 415 555", "(415) ", "GB82 WEST 1234");
 *   - a PEM header not yet whole ("-----BEGIN RSA PRIV").
 */

static size_t
ngx_http_ai_gateway_gout_hold(const u_char *p, size_t len)
{
    size_t      i, j, k, e, n, from, pem;
    ngx_uint_t  end_space;

    pem = ngx_http_ai_gateway_gout_pem_open(p, len);

    i = len;

    while (i > 0 && p[i - 1] == ' ') {
        i--;
    }

    end_space = (i < len);

    /* the last word: [j, i) */

    for (j = i;
         j > 0 && !ngx_http_ai_gateway_gout_sep(p[j - 1])
         && i - j <= NGX_HTTP_AI_GATEWAY_GUARD_SECRET_HOLD;
         j--)
    {
        /* void */
    }

    if (i == j) {
        return len - ngx_min(pem, len);
    }

    if (end_space && !ngx_http_ai_gateway_gout_numberish(p + j, i - j)) {
        return len - pem;
    }

    if (!end_space && i - j > NGX_HTTP_AI_GATEWAY_GUARD_HOLD) {
        /* a JWT in it (after a quote, "Bearer:", "x="): held from there */
        k = ngx_http_ai_gateway_gout_jwt_in(p + j, i - j);

        if (k != (size_t) -1) {
            return len - ngx_min(j + k, pem);
        }
    }

    if (!end_space && i - j > NGX_HTTP_AI_GATEWAY_GUARD_HOLD) {
        /*
         * A long run without white space (Chinese or Japanese text): its
         * last NGX_HTTP_AI_GATEWAY_GUARD_HOLD bytes, and where that cut a
         * UTF-8 character, the character goes out whole, so that no event
         * carries half of one
         */
        from = len - NGX_HTTP_AI_GATEWAY_GUARD_HOLD;

        /*
         * Not inside an ASCII word ("exploit|ation" of a URL): keywords
         * would take the cut for a word's end.  The cut moves back (more
         * is held, never less), up to 64 bytes; a longer word is cut
         * where it is
         */
        e = (from > 64) ? from - 64 : 0;

        for (k = from; k > e && ngx_http_ai_gateway_gout_alnum(p[k - 1])
                       && ngx_http_ai_gateway_gout_alnum(p[k]); k--)
        {
            /* void */
        }

        if (k > e || k == 0) {
            /* (at 0, all waits: the next delta cuts further on) */
            from = k;
        }

        while (from < len && (p[from] & 0xc0) == 0x80) {
            from++;
        }

        return len - ngx_min(from, pem);
    }

    from = j;

    if (ngx_http_ai_gateway_gout_numberish(p + j, i - j)) {

        for ( ;; ) {

            /* a single space, and a group before it: [k, e) */

            if (from < 2 || p[from - 1] != ' '
                || ngx_http_ai_gateway_gout_sep(p[from - 2]))
            {
                break;
            }

            e = from - 1;

            for (k = e; k > 0 && !ngx_http_ai_gateway_gout_sep(p[k - 1])
                        && len - k <= NGX_HTTP_AI_GATEWAY_GUARD_HOLD; k--)
            {
                /* void */
            }

            if (e - k > 16
                || (k > 0 && !ngx_http_ai_gateway_gout_sep(p[k - 1]))
                || !ngx_http_ai_gateway_gout_numberish(p + k, e - k))
            {
                n = ngx_http_ai_gateway_gout_number_tail(p, e);

                if (n == e - k && n && (k == 0 || p[k - 1] == ' ')) {
                    /* a long group of digits: the number goes on */
                    from = k;
                    continue;
                }

                /* a label glued to a number ("Telefonnummer:+49",
                 * "号码：4111"): its number-like end, and no further */
                from = e - n;
                break;
            }

            from = k;
        }
    }

    return len - ngx_min(from, pem);
}


/*
 * Where a JWT may start in a long word ("eyJ" after no base64 byte), its
 * last such place; (size_t) -1 when there is none
 */

static size_t
ngx_http_ai_gateway_gout_jwt_in(const u_char *p, size_t len)
{
    size_t  k;
    u_char  c;

    for (k = len - 2; k-- > 0; /* void */) {
        if (p[k] != 'e' || p[k + 1] != 'y' || p[k + 2] != 'J') {
            continue;
        }

        c = k ? p[k - 1] : ' ';

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
        {
            return k;
        }
    }

    return (size_t) -1;
}


static ngx_uint_t
ngx_http_ai_gateway_gout_sep(u_char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}


/*
 * A group that may be part of a phone number, a card or an IBAN: with a
 * digit, or up to 4 capitals ("WEST", an IBAN's bank code, or its "W" that
 * a delta ended with), or only "()+-./" (the "(" of "(415)")
 */

static ngx_uint_t
ngx_http_ai_gateway_gout_numberish(const u_char *p, size_t len)
{
    size_t      i;
    ngx_uint_t  upper, punct;

    upper = (len <= 4);
    punct = 1;

    for (i = 0; i < len; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            return 1;
        }

        if (!(p[i] >= 'A' && p[i] <= 'Z')) {
            upper = 0;
        }

        if (ngx_strchr("()+-./", p[i]) == NULL || p[i] == '\0') {
            punct = 0;
        }
    }

    return upper || punct;
}


/* the length of the number-like end of a group ("+49" of "Tel.:+49"), 0
 * when it is glued to a letter or digit */

static size_t
ngx_http_ai_gateway_gout_number_tail(const u_char *p, size_t len)
{
    size_t  n;
    u_char  c;

    /* p[0..len) is the text up to the group's end: the byte before the
     * tail is looked at even when it is far back */

    c = ' ';

    for (n = 0; n < len && n <= NGX_HTTP_AI_GATEWAY_GUARD_HOLD; n++) {
        c = p[len - n - 1];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || c == '('
              || c == ')' || c == '+' || c == '-' || c == '.' || c == '/'))
        {
            break;
        }
    }

    if (n > NGX_HTTP_AI_GATEWAY_GUARD_HOLD) {
        return 0;
    }

    if (n == len) {
        c = ' ';
    }

    /*
     * Only after a label's end (':', '：', '='), or a punctuation in the
     * tail itself ("example.com/4111", "co.uk.GB82": the detectors see a
     * boundary there): a cut inside a word ("exploit|DB 2") would give
     * keywords and patterns a word boundary that is not there
     */
    while (n && ngx_http_ai_gateway_gout_alnum(c)) {
        c = p[len - n];
        n--;
    }

    return n;
}


/*
 * Where a PEM header begins that is not whole yet ("-----BEGIN RSA PRIV"
 * at the end), within the last 64 bytes; len when there is none
 */

static size_t
ngx_http_ai_gateway_gout_pem_open(const u_char *p, size_t len)
{
    size_t   i, k, from;

    from = (len > 64) ? len - 64 : 0;

    for (i = len; i > from; i--) {
        if (p[i - 1] != '-' || i - 1 + 11 > len
            || ngx_strncmp(p + i - 1, "-----BEGIN ", 11) != 0)
        {
            continue;
        }

        /* the label: capitals, digits and spaces, up to "-----" */
        for (k = i - 1 + 11; k < len; k++) {
            if (p[k] == '-') {
                /* "-----" closes it, whole or cut at the end */
                return (len - k >= 5) ? len : i - 1;
            }

            if (!((p[k] >= 'A' && p[k] <= 'Z') || (p[k] >= '0' && p[k] <= '9')
                  || p[k] == ' '))
            {
                return len;
            }
        }

        return i - 1;
    }

    return len;
}


/*
 * Where a PEM block or a JWT begins that the detector matches up to the
 * text's end, so that it may go on in the next delta; its kind goes to
 * *secret (0: none, len returned).
 */

typedef struct {
    const u_char  *p;
    size_t         len;
    size_t         start;
    ngx_uint_t     secret;
} ngx_http_ai_gateway_gout_open_t;


static size_t
ngx_http_ai_gateway_gout_secret_start(const u_char *p, size_t len,
    ngx_uint_t *secret)
{
    ngx_http_ai_gateway_gout_open_t   o;

    *secret = 0;

    /* cheap first: a PEM header, or an "eyJ" */
    if (ngx_http_ai_gateway_gout_find(p, len, "eyJ", 3) == NULL
        && ngx_http_ai_gateway_gout_find(p, len, "-----BEGIN ", 11) == NULL)
    {
        return len;
    }

    o.p = p;
    o.len = len;
    o.start = len;
    o.secret = 0;

    (void) ngx_http_ai_gateway_pii_scan(p, len,
                   NGX_HTTP_AI_GATEWAY_PII_BIT(NGX_HTTP_AI_GATEWAY_PII_SECRET),
                   ngx_http_ai_gateway_gout_open, &o);

    *secret = o.secret;

    return o.start;
}


/*
 * n moved off any match it cuts: past a match that ended before len (it
 * goes out whole), or back to the start of one that runs to len (it waits
 * whole).  The hold's rules ("the last word") guess at matches; this knows
 * them, where a long run without spaces was cut at a fixed length.
 */

typedef struct {
    size_t  n;
    size_t  len;
} ngx_http_ai_gateway_gout_cut_t;


static size_t
ngx_http_ai_gateway_gout_settle(const u_char *p, size_t len, size_t n,
    unsigned types)
{
    ngx_http_ai_gateway_gout_cut_t  c;

    if (n == 0) {
        return n;
    }

    c.n = n;
    c.len = len;

    (void) ngx_http_ai_gateway_pii_scan(p, len, types,
                                        ngx_http_ai_gateway_gout_settle_match,
                                        &c);

    return c.n;
}


static int
ngx_http_ai_gateway_gout_settle_match(void *data,
    ngx_http_ai_gateway_pii_match_t *m)
{
    ngx_http_ai_gateway_gout_cut_t  *c = data;

    if (m->start >= c->n) {
        /* left to right: none after this one cuts n */
        return 1;
    }

    if (m->end == c->len) {
        /* it may go on ("-----END RSA PRIVATE " and a space): it waits */
        c->n = m->start;
        return 1;
    }

    if (m->end <= c->n) {
        return 0;
    }

    c->n = m->end;

    return 1;
}


/* the segments of a token so far: its dots, and one */

static unsigned
ngx_http_ai_gateway_gout_segments(const u_char *p, size_t len)
{
    size_t    i;
    unsigned  n;

    for (n = 1, i = 0; i < len && n < 7; i++) {
        if (p[i] == '.') {
            n++;
        }
    }

    return n;
}


static ngx_uint_t
ngx_http_ai_gateway_gout_alnum(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9');
}


static ngx_uint_t
ngx_http_ai_gateway_gout_b64url(u_char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '_';
}


/*
 * The end of p that may be the start of a PEM end line: from the last
 * "-----END " whose label is not closed yet, or the longest end of p that
 * "-----END " starts with
 */

static size_t
ngx_http_ai_gateway_gout_end_start(const u_char *p, size_t len)
{
    size_t  k, from;

    from = (len > 9 + 41 + 5) ? len - (9 + 41 + 5) : 0;

    for (k = len; k > from; k--) {
        if (len - (k - 1) >= 9
            && ngx_strncmp(p + k - 1, "-----END ", 9) == 0)
        {
            return ngx_http_ai_gateway_gout_find(p + k - 1 + 9,
                                                 len - (k - 1) - 9,
                                                 "-----", 5)
                   ? 0 : len - (k - 1);
        }
    }

    for (k = ngx_min(len, 8); k > 0; k--) {
        if (ngx_strncmp(p + len - k, "-----END ", k) == 0) {
            return k;
        }
    }

    return 0;
}


/* a PEM block that ends with its "-----END ...-----" line */

static ngx_uint_t
ngx_http_ai_gateway_gout_pem_closed(const u_char *p, size_t len)
{
    size_t  k;

    if (len < 11 + 9 + 5 + 5 || ngx_strncmp(p + len - 5, "-----", 5) != 0) {
        return 0;
    }

    /* "-----END " before the label that ends the block */
    for (k = len - 5; k > 9 + 11; k--) {
        if (p[k - 1] == ' ' && ngx_strncmp(p + k - 9, "-----END ", 9) == 0) {
            return 1;
        }

        if (!((p[k - 1] >= 'A' && p[k - 1] <= 'Z')
              || (p[k - 1] >= '0' && p[k - 1] <= '9') || p[k - 1] == ' '))
        {
            return 0;
        }
    }

    return 0;
}


static const u_char *
ngx_http_ai_gateway_gout_find(const u_char *p, size_t len, const char *lit,
    size_t n)
{
    const u_char  *q, *end;

    if (len < n) {
        return NULL;
    }

    end = p + len - n + 1;

    while (p < end) {
        q = memchr(p, lit[0], end - p);

        if (q == NULL) {
            return NULL;
        }

        if (ngx_memcmp(q, lit, n) == 0) {
            return q;
        }

        p = q + 1;
    }

    return NULL;
}


static int
ngx_http_ai_gateway_gout_open(void *data, ngx_http_ai_gateway_pii_match_t *m)
{
    ngx_http_ai_gateway_gout_open_t  *o = data;

    if (m->end != o->len) {
        return 0;
    }

    if (o->len - m->start >= 11
        && ngx_strncmp(o->p + m->start, "-----BEGIN ", 11) == 0)
    {
        if (ngx_http_ai_gateway_gout_pem_closed(o->p + m->start,
                                                m->end - m->start)
            || ngx_http_ai_gateway_gout_find(o->p + m->start + 11,
                                             m->end - m->start - 11,
                                             "-----END ", 9)
               != NULL)
        {
            /* whole, or its end line has begun: masked as any match, and
             * gout_settle() keeps it whole (it waits for the rest) */
            return 0;
        }

        o->secret = NGX_HTTP_AI_GATEWAY_GOUT_PEM;

    } else if (o->len - m->start >= 3
               && ngx_strncmp(o->p + m->start, "eyJ", 3) == 0)
    {
        o->secret = NGX_HTTP_AI_GATEWAY_GOUT_TOKEN;

    } else {
        return 0;
    }

    o->start = m->start;

    return 1;
}


/*
 * The rest of a masked secret, at the start of p: the bytes dropped are
 * returned, and t->secret cleared when the secret ended there.  A PEM
 * block ends with its "-----END ...-----" line; up to that, only what may
 * be the start of that line is not dropped (it waits in t->held).  A JWT
 * ends at the first byte that no token has.
 */

static size_t
ngx_http_ai_gateway_gout_secret_drop(ngx_http_ai_gateway_guard_text_t *t,
    const u_char *p, size_t len)
{
    size_t   i, k;

    static const char  end[] = "-----END ";

    if (t->secret == NGX_HTTP_AI_GATEWAY_GOUT_TOKEN) {
        /* the bytes a token has (JWT segments, keys): base64url, and a
         * '.' between two segments ("jwt. Thanks" keeps its '.') */
        for (i = 0; i < len; i++) {
            if (ngx_http_ai_gateway_gout_b64url(p[i])) {
                continue;
            }

            if (p[i] == '.' && i + 1 < len && t->segs < 5
                && ngx_http_ai_gateway_gout_b64url(p[i + 1]))
            {
                /* a JWT has at most 5 segments, as the detector reads it */
                t->segs++;
                continue;
            }

            if (p[i] == '.' && i + 1 == len && t->segs < 5) {
                /* the next delta tells: the '.' waits */
                return i;
            }

            t->secret = 0;
            break;
        }

        return i;
    }

    for (i = 0; i < len; i++) {
        if (p[i] != '-') {
            continue;
        }

        /* "-----END " and its label up to "-----", or a start of them */

        for (k = 0; k < 9 && i + k < len; k++) {
            if (p[i + k] != (u_char) end[k]) {
                break;
            }
        }

        if (i + k == len) {
            /* cut at the end: it waits */
            return i;
        }

        if (k < 9) {
            continue;
        }

        for (k = i + 9; k < len && k - i < 9 + 41; k++) {
            if (p[k] == '-') {
                break;
            }

            if (!((p[k] >= 'A' && p[k] <= 'Z') || (p[k] >= '0' && p[k] <= '9')
                  || p[k] == ' '))
            {
                break;
            }
        }

        if (k == len) {
            return i;
        }

        if (p[k] != '-') {
            continue;
        }

        if (len - k < 5) {
            return i;
        }

        if (ngx_strncmp(p + k, "-----", 5) == 0) {
            t->secret = 0;
            return k + 5;
        }
    }

    return len;
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


/*
 * A keepalive comment of the upstream's: the guard writes the stream's
 * events itself, and passes this one on as a comment of its own, so that
 * the client sees life while the model thinks.
 */

ngx_int_t
ngx_http_ai_gateway_guard_keepalive(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_gout_t  *go;

    static const u_char  comment[] = ": keepalive\n\n";

    go = ctx->gout;

    if (go == NULL || !go->sse || go->blocked) {
        return NGX_OK;
    }

    if (ngx_http_ai_gateway_translate_buf_room(&go->out, sizeof(comment) - 1)
        != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(go->out.p + go->out.len, comment, sizeof(comment) - 1);
    go->out.len += sizeof(comment) - 1;

    return NGX_OK;
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
