
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Usage and inference records, written in the log phase: one JSON line
 * each, formatted straight into one buffer whose size is computed first.
 * Column names follow the Databricks usage and inference tables.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_prefilter.h"
#include "ngx_http_ai_gateway_json.h"
#include "ngx_http_ai_gateway_siphash.h"


typedef struct {
    u_char                      *start;
    u_char                      *pos;
    u_char                      *end;
    ngx_http_ai_gateway_sink_t  *sink;     /* written in its buffer */
    ngx_uint_t                   overflow; /* a string had no room */
} ngx_http_ai_gateway_out_t;


/* the stretches of a payload that credentials cover (see redact()) */
typedef struct {
    ngx_http_request_t  *request;
    ngx_str_t           *payload;
    ngx_array_t         *cuts;          /* of ngx_http_ai_gateway_cut_t */
} ngx_http_ai_gateway_redact_t;


typedef struct {
    size_t  start;
    size_t  end;
} ngx_http_ai_gateway_cut_t;


static void ngx_http_ai_gateway_usage_record(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_main_conf_t *mcf);
static void ngx_http_ai_gateway_inference_record(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_main_conf_t *mcf);
static ngx_int_t ngx_http_ai_gateway_assemble(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *text);
static ngx_int_t ngx_http_ai_gateway_redact(ngx_http_request_t *r,
    ngx_str_t *payload);
static ngx_int_t ngx_http_ai_gateway_find_secret(
    ngx_http_ai_gateway_redact_t *rd, ngx_str_t *secret, ngx_str_t *escaped);
static int ngx_http_ai_gateway_cut_cmp(const void *one, const void *two);
static ngx_int_t ngx_http_ai_gateway_cut(ngx_http_ai_gateway_redact_t *rd);

static void ngx_http_ai_gateway_request_time(ngx_http_request_t *r,
    u_char *time, ngx_str_t *date, ngx_str_t *iso);
static ngx_uint_t ngx_http_ai_gateway_status(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ai_gateway_aborted(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static void ngx_http_ai_gateway_upstreams(ngx_http_request_t *r,
    ngx_str_t *addr, ngx_uint_t *attempts, ngx_msec_t *latency);
static uint64_t    ngx_http_ai_gateway_id_key[2];
static uint64_t    ngx_http_ai_gateway_id_counter;
static ngx_uint_t  ngx_http_ai_gateway_id_ready;


static ngx_str_t *ngx_http_ai_gateway_request_id(ngx_http_request_t *r,
    ngx_http_ai_gateway_main_conf_t *mcf);
static ngx_str_t *ngx_http_ai_gateway_client_request_id(ngx_http_request_t *r);
static ngx_msec_t ngx_http_ai_gateway_elapsed(ngx_http_request_t *r);
static size_t ngx_http_ai_gateway_escape_len(ngx_str_t *s);
static ngx_int_t ngx_http_ai_gateway_record_end(ngx_http_request_t *r,
    ngx_http_ai_gateway_out_t *o, ngx_http_ai_gateway_sink_t *sink,
    const char *kind);
static ngx_int_t ngx_http_ai_gateway_record_start(ngx_http_request_t *r,
    ngx_http_ai_gateway_sink_t *sink, size_t len,
    ngx_http_ai_gateway_out_t *o);
static void ngx_http_ai_gateway_put(ngx_http_ai_gateway_out_t *o,
    const char *text);
static void ngx_http_ai_gateway_put_str_value(ngx_http_ai_gateway_out_t *o,
    ngx_str_t *s);
static void ngx_http_ai_gateway_put_int_value(ngx_http_ai_gateway_out_t *o,
    int64_t n);
static void ngx_http_ai_gateway_put_bool_value(ngx_http_ai_gateway_out_t *o,
    ngx_uint_t b);
static void ngx_http_ai_gateway_put_usd_value(ngx_http_ai_gateway_out_t *o,
    int64_t pico);


/*
 * "key": is one constant, its length known, so that the copy is a few
 * moves, not strlen() and memcpy() calls: records have two dozen keys.
 * The keys are literals.
 */

#define ngx_http_ai_gateway_put_key(o, key)                                   \
    (o)->pos = ngx_cpymem((o)->pos, "\"" key "\":", sizeof("\"" key "\":") - 1)

/* "key": and a value of a type: str, int, bool or usd */
#define ngx_http_ai_gateway_put_field(o, key, type, v)                        \
    (ngx_http_ai_gateway_put_key(o, key),                                     \
     ngx_http_ai_gateway_put_##type##_value(o, v))

#define ngx_http_ai_gateway_put_str(o, key, s)                                \
    ngx_http_ai_gateway_put_field(o, key, str, s)
#define ngx_http_ai_gateway_put_int(o, key, n)                                \
    ngx_http_ai_gateway_put_field(o, key, int, n)
#define ngx_http_ai_gateway_put_bool(o, key, b)                               \
    ngx_http_ai_gateway_put_field(o, key, bool, b)
#define ngx_http_ai_gateway_put_usd(o, key, pico)                             \
    ngx_http_ai_gateway_put_field(o, key, usd, pico)


/* fixed text of a record, keys and numbers, beside its strings */
#define NGX_HTTP_AI_GATEWAY_RECORD_FIXED  2048


static ngx_str_t  ngx_http_ai_gateway_source[] = {
    ngx_string("provider"),
    ngx_string("estimate"),
    ngx_string("none")
};


ngx_int_t
ngx_http_ai_gateway_log_handler(ngx_http_request_t *r)
{
    ngx_http_ai_gateway_ctx_t        *ctx;
    ngx_http_ai_gateway_tokens_t      t;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_ai_gateway_get_ctx(r);

    if (ctx == NULL || ctx->logged) {
        return NGX_OK;
    }

    ctx->logged = 1;

    if (ctx->early) {
        /*
         * The handler never took the ctx the rewrite phase made: a model
         * request that nginx's own checks refused gets its record; one
         * that a rewrite sent to a location without the gateway, where it
         * was answered, is no model request there.  The user is read now:
         * a variable read in the rewrite phase may not be set yet.
         */
        if (r->headers_out.status < NGX_HTTP_BAD_REQUEST) {
            return NGX_OK;
        }

        (void) ngx_http_ai_gateway_user(r, ctx);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    ngx_http_ai_gateway_resp_results(r, ctx);

    ngx_http_ai_gateway_limit_settle(r, ctx);

    if (mcf->metrics && mcf->zone) {
        ngx_http_ai_gateway_tokens(r, ctx, &t);
        ngx_http_ai_gateway_metrics_count(r, ctx, &t,
                                          ngx_http_ai_gateway_cost(r, ctx, &t));
    }

    if (ctx->track && (mcf->usage_log || mcf->usage_stream.len)) {
        ngx_http_ai_gateway_usage_record(r, ctx, mcf);
    }

    if (ctx->infer && mcf->inference_log) {
        ngx_http_ai_gateway_inference_record(r, ctx, mcf);
    }

    return NGX_OK;
}


/*
 * The provider's counts when it gave them for a whole answer; otherwise
 * estimates from the text seen (characters / 4), never less than what the
 * provider had reported so far.  An error answer without usage cost
 * nothing.
 */

void
ngx_http_ai_gateway_tokens(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_tokens_t *t)
{
    int64_t                       in_est, out_est;
    uint64_t                      out_chars;
    ngx_uint_t                    complete;
    ngx_http_ai_gateway_usage_t  *u;

    u = &ctx->usage;

    /* the results whole, whenever they are read (variables too) */
    ngx_http_ai_gateway_resp_results(r, ctx);

    out_chars = ctx->walk ? ctx->walk->text_chars : 0;
    complete = ctx->resp_done && (!ctx->resp_sse || ctx->resp_end_event);

    in_est = (ngx_http_ai_gateway_input_chars(ctx)
              + NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN - 1)
             / NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN;
    out_est = (out_chars + NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN - 1)
              / NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN;

    t->cached_input = u->cached_input;
    t->reasoning = u->reasoning;
    t->source = NGX_HTTP_AI_GATEWAY_SOURCE_PROVIDER;

    if (u->input < 0 && u->output < 0
        && (ctx->resp_status >= NGX_HTTP_BAD_REQUEST || !ctx->inspected))
    {
        t->input = 0;
        t->output = 0;
        t->total = 0;
        t->source = NGX_HTTP_AI_GATEWAY_SOURCE_NONE;
        return;
    }

    t->input = (u->input >= 0) ? u->input : in_est;

    if (u->output >= 0) {
        t->output = complete ? u->output : ngx_max(u->output, out_est);

    } else {
        /* embeddings have no output; a cut stream has what it showed */
        t->output = out_est;
    }

    if (!complete || u->input < 0 || (u->output < 0 && out_chars)) {
        t->source = NGX_HTTP_AI_GATEWAY_SOURCE_ESTIMATE;
    }

    if (u->total >= 0 && t->source == NGX_HTTP_AI_GATEWAY_SOURCE_PROVIDER) {
        t->total = u->total;

    } else {
        t->total = t->input + t->output;
    }
}


static void
ngx_http_ai_gateway_usage_record(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_main_conf_t *mcf)
{
    u_char                        time[32];
    size_t                        len;
    ngx_str_t                     addr, model, rtime, *id, *cid, *api;
    ngx_str_t                     resp_model, *limit;
    ngx_msec_t                    ulat;
    ngx_uint_t                    attempts;
    ngx_http_ai_gateway_out_t     o;
    ngx_http_ai_gateway_sink_t   *sink;
    ngx_http_ai_gateway_tokens_t  t;

    ngx_http_ai_gateway_tokens(r, ctx, &t);
    ngx_http_ai_gateway_upstreams(r, &addr, &attempts, &ulat);

    id = ngx_http_ai_gateway_request_id(r, mcf);
    cid = ngx_http_ai_gateway_client_request_id(r);
    api = ngx_http_ai_gateway_api_name(ctx->api);

    ngx_http_ai_gateway_request_time(r, time, NULL, &rtime);

    model = ctx->model;
    resp_model.len = ctx->walk ? ctx->walk->model_len : 0;
    resp_model.data = ctx->walk ? ctx->walk->model : NULL;

    limit = ctx->limit_status
            ? ngx_http_ai_gateway_limit_status(ctx, 1, r->pool) : NULL;

    len = NGX_HTTP_AI_GATEWAY_RECORD_FIXED
          + ngx_http_ai_gateway_escape_len(id)
          + (cid ? ngx_http_ai_gateway_escape_len(cid) : 0)
          + ngx_http_ai_gateway_escape_len(&ctx->user)
          + ngx_http_ai_gateway_escape_len(&ctx->endpoint)
          + ngx_http_ai_gateway_escape_len(&model)
          + ngx_http_ai_gateway_escape_len(&resp_model)
          + ngx_http_ai_gateway_escape_len(&addr)
          + ngx_http_ai_gateway_escape_len(limit)
          + ngx_http_ai_gateway_escape_len(&ctx->guardrail);

    /* written in the file's buffer, unless Redis takes the record too */
    sink = (mcf->usage_log && !mcf->usage_stream.len) ? mcf->usage_log : NULL;

    if (ngx_http_ai_gateway_record_start(r, sink, len, &o) != NGX_OK) {
        return;
    }

    ngx_http_ai_gateway_put(&o, "{");
    ngx_http_ai_gateway_put_str(&o, "request_id", id);
    ngx_http_ai_gateway_put_str(&o, "client_request_id", cid);
    ngx_http_ai_gateway_put_str(&o, "request_time", &rtime);
    ngx_http_ai_gateway_put_str(&o, "requester",
                                ctx->user.len ? &ctx->user : NULL);
    ngx_http_ai_gateway_put_str(&o, "endpoint", &ctx->endpoint);
    ngx_http_ai_gateway_put_str(&o, "api", ctx->inspected ? api : NULL);
    ngx_http_ai_gateway_put_str(&o, "model", model.len ? &model : NULL);
    ngx_http_ai_gateway_put_str(&o, "response_model",
                                resp_model.len ? &resp_model : NULL);
    ngx_http_ai_gateway_put_str(&o, "upstream_addr", addr.len ? &addr : NULL);
    ngx_http_ai_gateway_put_int(&o, "upstream_attempts", attempts);
    ngx_http_ai_gateway_put_int(&o, "status_code",
                                ngx_http_ai_gateway_status(r));
    ngx_http_ai_gateway_put_bool(&o, "request_streaming", ctx->stream == 1);
    ngx_http_ai_gateway_put_int(&o, "input_token_count", t.input);
    ngx_http_ai_gateway_put_int(&o, "output_token_count", t.output);
    ngx_http_ai_gateway_put_int(&o, "total_token_count", t.total);
    ngx_http_ai_gateway_put_int(&o, "cached_input_token_count",
                                t.cached_input);
    ngx_http_ai_gateway_put_int(&o, "reasoning_token_count", t.reasoning);
    ngx_http_ai_gateway_put_usd(&o, "cost_usd",
                                ngx_http_ai_gateway_cost(r, ctx, &t));
    ngx_http_ai_gateway_put_str(&o, "token_count_source",
                                &ngx_http_ai_gateway_source[t.source]);
    ngx_http_ai_gateway_put_int(&o, "input_character_count",
                             (int64_t) ngx_http_ai_gateway_input_chars(ctx));
    ngx_http_ai_gateway_put_int(&o, "output_character_count",
                                ctx->walk ? (int64_t) ctx->walk->text_chars
                                          : 0);
    ngx_http_ai_gateway_put_int(&o, "latency_ms",
                                ngx_http_ai_gateway_elapsed(r));
    ngx_http_ai_gateway_put_int(&o, "ttft_ms",
                                ctx->ttft_set ? (int64_t) ctx->ttft : -1);
    ngx_http_ai_gateway_put_int(&o, "upstream_latency_ms",
                                attempts ? (int64_t) ulat : -1);
    ngx_http_ai_gateway_put_str(&o, "rate_limit", limit);
    ngx_http_ai_gateway_put_str(&o, "guardrail",
                                ctx->guardrail.len ? &ctx->guardrail : NULL);
    ngx_http_ai_gateway_put_bool(&o, "client_aborted",
                                 ngx_http_ai_gateway_aborted(r, ctx));

    /* the last ',' becomes the closing brace */
    o.pos[-1] = '}';
    ngx_http_ai_gateway_put(&o, "\n");

    if (ngx_http_ai_gateway_record_end(r, &o, mcf->usage_log, "usage")
        == NGX_OK
        && mcf->usage_stream.len)
    {
        ngx_http_ai_gateway_stream_write(mcf, r->connection->log, o.start,
                                         o.pos - o.start);
    }
}


static void
ngx_http_ai_gateway_inference_record(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_main_conf_t *mcf)
{
    u_char                     time[32];
    size_t                     len;
    ngx_str_t                  request, response, rdate, rtime, *id, *cid;
    ngx_uint_t                 req_over, resp_over;
    ngx_http_ai_gateway_out_t  o;

    id = ngx_http_ai_gateway_request_id(r, mcf);
    cid = ngx_http_ai_gateway_client_request_id(r);

    ngx_http_ai_gateway_request_time(r, time, &rdate, &rtime);

    /* the client's body as it sent it: headers, and so keys, are not in */
    request.data = ctx->body;
    request.len = ctx->body_len;
    req_over = (ctx->body_len > mcf->max_payload);

    ngx_str_null(&response);
    resp_over = ctx->capture_overflow;

    if (!resp_over) {
        if (ctx->resp_sse) {
            if (ngx_http_ai_gateway_assemble(r, ctx, &response) != NGX_OK) {
                return;
            }

        } else if (ctx->capture) {
            response.data = ctx->capture->pos;
            response.len = ctx->capture->last - ctx->capture->pos;
        }
    }

    /* a payload left out (over max_payload) is not looked at */
    if ((!req_over && ngx_http_ai_gateway_redact(r, &request) != NGX_OK)
        || ngx_http_ai_gateway_redact(r, &response) != NGX_OK)
    {
        return;
    }

    len = NGX_HTTP_AI_GATEWAY_RECORD_FIXED
          + ngx_http_ai_gateway_escape_len(id)
          + (cid ? ngx_http_ai_gateway_escape_len(cid) : 0)
          + ngx_http_ai_gateway_escape_len(&ctx->user)
          + ngx_http_ai_gateway_escape_len(&ctx->endpoint)
          + (req_over ? 0 : ngx_http_ai_gateway_escape_len(&request))
          + ngx_http_ai_gateway_escape_len(&response);

    if (ngx_http_ai_gateway_record_start(r, mcf->inference_log, len, &o)
        != NGX_OK)
    {
        return;
    }

    ngx_http_ai_gateway_put(&o, "{");
    ngx_http_ai_gateway_put_str(&o, "request_date", &rdate);
    ngx_http_ai_gateway_put_str(&o, "request_id", id);
    ngx_http_ai_gateway_put_str(&o, "client_request_id", cid);
    ngx_http_ai_gateway_put_str(&o, "request_time", &rtime);
    ngx_http_ai_gateway_put_int(&o, "status_code",
                                ngx_http_ai_gateway_status(r));
    ngx_http_ai_gateway_put_int(&o, "execution_duration_ms",
                                ngx_http_ai_gateway_elapsed(r));
    ngx_http_ai_gateway_put_str(&o, "requester",
                                ctx->user.len ? &ctx->user : NULL);
    ngx_http_ai_gateway_put_str(&o, "endpoint", &ctx->endpoint);
    ngx_http_ai_gateway_put_str(&o, "request",
                                req_over || !request.len ? NULL : &request);
    ngx_http_ai_gateway_put_str(&o, "response",
                                response.len ? &response : NULL);

    ngx_http_ai_gateway_put(&o, "\"logging_error_codes\":[");

    if (req_over) {
        ngx_http_ai_gateway_put(&o, "\"MAX_REQUEST_SIZE_EXCEEDED\"");
    }

    if (resp_over) {
        ngx_http_ai_gateway_put(&o, req_over ? ",\"MAX_RESPONSE_SIZE_EXCEEDED\""
                                             : "\"MAX_RESPONSE_SIZE_EXCEEDED\"");
    }

    ngx_http_ai_gateway_put(&o, "]}\n");

    (void) ngx_http_ai_gateway_record_end(r, &o, mcf->inference_log,
                                          "inference");
}


/*
 * Where a record of at most len bytes is written: in the sink's buffer
 * when it has the room (the record is not built and then copied there),
 * otherwise in the pool, and o->sink is NULL.
 */

static ngx_int_t
ngx_http_ai_gateway_record_start(ngx_http_request_t *r,
    ngx_http_ai_gateway_sink_t *sink, size_t len, ngx_http_ai_gateway_out_t *o)
{
    o->sink = NULL;
    o->start = NULL;
    o->overflow = 0;

    if (sink) {
        o->start = ngx_http_ai_gateway_sink_reserve(sink, r->connection->log,
                                                    len);
        o->sink = (o->start != NULL) ? sink : NULL;
    }

    if (o->start == NULL) {
        o->start = ngx_pnalloc(r->pool, len);
        if (o->start == NULL) {
            return NGX_ERROR;
        }
    }

    o->pos = o->start;
    o->end = o->start + len;

    return NGX_OK;
}


/*
 * The record written from o->start to o->pos goes to the sink: committed
 * where it was written in its buffer, or given to it.  One sized wrong (a
 * bug, never a reason to corrupt memory) is dropped: NGX_ERROR.
 */

static ngx_int_t
ngx_http_ai_gateway_record_end(ngx_http_request_t *r,
    ngx_http_ai_gateway_out_t *o, ngx_http_ai_gateway_sink_t *sink,
    const char *kind)
{
    if (o->overflow) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ai_gateway: %s record larger than its room, dropped",
                      kind);
        return NGX_ERROR;
    }

    if (o->sink) {
        ngx_http_ai_gateway_sink_commit(o->sink, o->pos);

    } else if (sink) {
        ngx_http_ai_gateway_sink_write(sink, r->connection->log, o->start,
                                       o->pos - o->start);
    }

    return NGX_OK;
}


/*
 * A stream is stored as the message it assembled to, in one shape for
 * every provider: {"model", "content", "tool_arguments", "finish_reason",
 * "usage": {"input_tokens", "output_tokens", "total_tokens"}}.
 */

static ngx_int_t
ngx_http_ai_gateway_assemble(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *text)
{
    size_t                        len;
    ngx_str_t                     content, args, model, finish;
    ngx_http_ai_gateway_out_t     o;
    ngx_http_ai_gateway_tokens_t  t;

    ngx_str_null(&content);
    ngx_str_null(&args);

    if (ctx->capture) {
        content.data = ctx->capture->pos;
        content.len = ctx->capture->last - ctx->capture->pos;
    }

    if (ctx->capture_args) {
        args.data = ctx->capture_args->pos;
        args.len = ctx->capture_args->last - ctx->capture_args->pos;
    }

    /* no walker: the header filter failed before it made one */
    model.data = ctx->walk ? ctx->walk->model : NULL;
    model.len = ctx->walk ? ctx->walk->model_len : 0;
    finish.data = ctx->walk ? ctx->walk->finish : NULL;
    finish.len = ctx->walk ? ctx->walk->finish_len : 0;

    ngx_http_ai_gateway_tokens(r, ctx, &t);

    len = 512 + ngx_http_ai_gateway_escape_len(&content)
          + ngx_http_ai_gateway_escape_len(&args)
          + ngx_http_ai_gateway_escape_len(&model)
          + ngx_http_ai_gateway_escape_len(&finish);

    text->data = ngx_pnalloc(r->pool, len);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    o.pos = text->data;
    o.end = text->data + len;

    ngx_http_ai_gateway_put(&o, "{");
    ngx_http_ai_gateway_put_str(&o, "model", model.len ? &model : NULL);
    ngx_http_ai_gateway_put_str(&o, "content", &content);
    ngx_http_ai_gateway_put_str(&o, "tool_arguments",
                                args.len ? &args : NULL);
    ngx_http_ai_gateway_put_str(&o, "finish_reason",
                                finish.len ? &finish : NULL);
    ngx_http_ai_gateway_put(&o, "\"usage\":{");
    ngx_http_ai_gateway_put_int(&o, "input_tokens", t.input);
    ngx_http_ai_gateway_put_int(&o, "output_tokens", t.output);
    ngx_http_ai_gateway_put_int(&o, "total_tokens", t.total);
    o.pos[-1] = '}';
    ngx_http_ai_gateway_put(&o, "}");

    text->len = o.pos - text->data;

    return NGX_OK;
}


/*
 * Credentials are cut out of payloads, wherever a body or an echoing
 * upstream put them: those the client sent (Authorization, x-api-key,
 * api-key) and the gateway's own (ai_gateway_secret), which it sends
 * upstream; each also as it is written inside a JSON string.  Every
 * occurrence of every one is found in the payload as it is, and the
 * stretches they cover, merged, are replaced at once: one secret within or
 * across another cannot leave the rest of it behind.
 */

static ngx_int_t
ngx_http_ai_gateway_redact(ngx_http_request_t *r, ngx_str_t *payload)
{
    u_char                             *p;
    ngx_str_t                           secret;
    ngx_uint_t                          i;
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_redact_t        rd;
    ngx_http_ai_gateway_secret_t       *s;
    ngx_http_ai_gateway_main_conf_t    *mcf;
    ngx_http_ai_gateway_header_iter_t   it;

    if (payload->len == 0) {
        return NGX_OK;
    }

    rd.request = r;
    rd.payload = payload;
    rd.cuts = NULL;

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {

        if (!ngx_http_ai_gateway_header_in_is(h, "authorization")
            && !ngx_http_ai_gateway_header_in_is(h, "x-api-key")
            && !ngx_http_ai_gateway_header_in_is(h, "api-key"))
        {
            continue;
        }

        secret = h->value;

        /* the credential of "Bearer <key>" or "Basic <token>" */
        p = ngx_strlchr(secret.data, secret.data + secret.len, ' ');
        if (p) {
            secret.len -= p + 1 - secret.data;
            secret.data = p + 1;
        }

        if (ngx_http_ai_gateway_find_secret(&rd, &secret, NULL) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    if (mcf->secrets != NULL) {
        s = mcf->secrets->elts;

        for (i = 0; i < mcf->secrets->nelts; i++) {
            if (ngx_http_ai_gateway_find_secret(&rd, &s[i].value,
                                                &s[i].escaped)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return (rd.cuts == NULL) ? NGX_OK : ngx_http_ai_gateway_cut(&rd);
}


/* the stretches of the payload that secret covers, as it is and escaped
 * (escaped: made here when NULL) */

static ngx_int_t
ngx_http_ai_gateway_find_secret(ngx_http_ai_gateway_redact_t *rd,
    ngx_str_t *secret, ngx_str_t *escaped)
{
    u_char                     *p, *last, *e;
    size_t                      start;
    ngx_str_t                   form;
    ngx_uint_t                  k, first;
    ngx_http_ai_gateway_cut_t  *c;

    /* short values would match innocent text */
    if (secret->len < 8 || rd->payload->len < secret->len) {
        return NGX_OK;
    }

    form = *secret;

    for (k = 0; k < 2; k++) {

        if (k == 1) {
            /* as a JSON string has it ('"', '\\' and control bytes
             * escaped): looked for only when that differs */
            if (escaped != NULL) {
                form = *escaped;

            } else {
                e = ngx_pnalloc(rd->request->pool, 6 * secret->len + 16);
                if (e == NULL) {
                    return NGX_ERROR;
                }

                form.data = e;
                form.len = ngx_http_ai_gateway_json_escape(e, secret->data,
                                                           secret->len)
                           - e;
            }

            if (form.len == secret->len) {
                break;
            }
        }

        last = rd->payload->data + rd->payload->len;
        first = rd->cuts ? rd->cuts->nelts : 0;

        for (p = rd->payload->data;
             (p = (u_char *) ngx_http_ai_gateway_prefilter_find(p, last - p,
                                                    form.data, form.len))
             != NULL;
             p++)
        {
            start = p - rd->payload->data;

            /* a form's matches come in order: one that overlaps or
             * touches the last one extends it, so that a payload of
             * repeats makes one cut, not one a byte */
            if (rd->cuts != NULL && rd->cuts->nelts > first) {
                c = (ngx_http_ai_gateway_cut_t *) rd->cuts->elts
                    + rd->cuts->nelts - 1;

                if (start <= c->end) {
                    c->end = start + form.len;
                    continue;
                }
            }

            if (rd->cuts == NULL) {
                rd->cuts = ngx_array_create(rd->request->pool, 4,
                                            sizeof(ngx_http_ai_gateway_cut_t));
                if (rd->cuts == NULL) {
                    return NGX_ERROR;
                }
            }

            c = ngx_array_push(rd->cuts);
            if (c == NULL) {
                return NGX_ERROR;
            }

            c->start = start;
            c->end = start + form.len;
        }
    }

    return NGX_OK;
}


static int
ngx_http_ai_gateway_cut_cmp(const void *one, const void *two)
{
    const ngx_http_ai_gateway_cut_t  *a = one, *b = two;

    return (a->start > b->start) - (a->start < b->start);
}


/* the payload with each merged stretch as "[REDACTED]" */

static ngx_int_t
ngx_http_ai_gateway_cut(ngx_http_ai_gateway_redact_t *rd)
{
    u_char                     *d, *copy, *data;
    size_t                      pos, end;
    ngx_uint_t                  i, n;
    ngx_http_ai_gateway_cut_t  *c;

    static ngx_str_t  redacted = ngx_string("[REDACTED]");

    c = rd->cuts->elts;
    n = rd->cuts->nelts;

    /* the forms' runs, each in order, merged by one O(n log n) sort */
    ngx_qsort(c, n, sizeof(ngx_http_ai_gateway_cut_t),
              ngx_http_ai_gateway_cut_cmp);

    /* at most one "[REDACTED]" a cut */
    copy = ngx_pnalloc(rd->request->pool,
                       rd->payload->len + n * redacted.len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    data = rd->payload->data;
    d = copy;
    pos = 0;

    for (i = 0; i < n; /* void */) {
        d = ngx_cpymem(d, data + pos, c[i].start - pos);

        /* this stretch and all that overlap or touch it */
        end = c[i].end;

        for (i++; i < n && c[i].start <= end; i++) {
            end = ngx_max(end, c[i].end);
        }

        d = ngx_cpymem(d, redacted.data, redacted.len);
        pos = end;
    }

    d = ngx_cpymem(d, data + pos, rd->payload->len - pos);

    rd->payload->data = copy;
    rd->payload->len = d - copy;

    return NGX_OK;
}


/*
 * The request's arrival in UTC: "2026-11-26T13:30:27.123Z" in time (32
 * bytes), and its date part, the first 10 bytes, in date when asked.
 */

static void
ngx_http_ai_gateway_request_time(ngx_http_request_t *r, u_char *time,
    ngx_str_t *date, ngx_str_t *iso)
{
    u_char    *p;
    ngx_tm_t   tm;

    /* the second's part, kept: requests of one second share it (both
     * records of a request, and those of its neighbours) */
    static time_t  sec = -1;
    static u_char  second[sizeof("2026-11-26T17:45:58") - 1];

#define ngx_http_ai_gateway_put2(p, n)                                        \
    *p++ = (u_char) ('0' + (n) / 10 % 10); *p++ = (u_char) ('0' + (n) % 10)

    if (r->start_sec != sec) {
        ngx_gmtime(r->start_sec, &tm);

        /* "2026-11-26T17:45:58", digit by digit: ngx_sprintf() costs ten
         * times as much */

        p = second;
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_year / 100);
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_year);
        *p++ = '-';
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_mon);
        *p++ = '-';
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_mday);
        *p++ = 'T';
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_hour);
        *p++ = ':';
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_min);
        *p++ = ':';
        ngx_http_ai_gateway_put2(p, tm.ngx_tm_sec);

        sec = r->start_sec;
    }

    p = ngx_cpymem(time, second, sizeof(second));
    *p++ = '.';
    *p++ = (u_char) ('0' + r->start_msec / 100 % 10);
    ngx_http_ai_gateway_put2(p, r->start_msec);
    *p++ = 'Z';

#undef ngx_http_ai_gateway_put2

    iso->data = time;
    iso->len = p - time;

    if (date) {
        date->data = time;
        date->len = sizeof("2026-11-26") - 1;
    }
}


/* as nginx's $status */

static ngx_uint_t
ngx_http_ai_gateway_status(ngx_http_request_t *r)
{
    if (r->err_status) {
        return r->err_status;
    }

    return r->headers_out.status;
}


/* the client left before the whole answer reached it */

static ngx_uint_t
ngx_http_ai_gateway_aborted(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    if (ctx->resp_done) {
        return 0;
    }

    return r->connection->error
           || ngx_http_ai_gateway_status(r) == NGX_HTTP_CLIENT_CLOSED_REQUEST;
}


/* every server tried, as $upstream_addr lists them, and their time */

static void
ngx_http_ai_gateway_upstreams(ngx_http_request_t *r, ngx_str_t *addr,
    ngx_uint_t *attempts, ngx_msec_t *latency)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_upstream_state_t  *state;

    ngx_str_null(addr);
    *attempts = 0;
    *latency = 0;

    if (r->upstream_states == NULL || r->upstream_states->nelts == 0) {
        return;
    }

    state = r->upstream_states->elts;
    len = 0;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer) {
            len += state[i].peer->len + 2;
        }
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return;
    }

    addr->data = p;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer == NULL) {
            continue;
        }

        if (*attempts) {
            *p++ = ',';
            *p++ = ' ';
        }

        p = ngx_cpymem(p, state[i].peer->data, state[i].peer->len);

        (*attempts)++;

        if (state[i].response_time != (ngx_msec_t) -1) {
            *latency += state[i].response_time;
        }
    }

    addr->len = p - addr->data;
}


/* the same id as $request_id in access_log and proxy_set_header */

static ngx_str_t *
ngx_http_ai_gateway_request_id(ngx_http_request_t *r,
    ngx_http_ai_gateway_main_conf_t *mcf)
{
    u_char                     *p;
    uint64_t                    n, h[2];
    ngx_str_t                  *s;
    ngx_http_variable_value_t  *v;

    s = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (s == NULL) {
        return NULL;
    }

    v = &r->variables[mcf->request_id_index];

    if (!v->valid && !v->not_found && ngx_http_ai_gateway_id_ready) {
        /*
         * $request_id not asked for yet: set it, as nginx would, to 32 hex
         * digits of 16 pseudorandom bytes, but from SipHash-2-4 of a
         * counter under the worker's random key (about 200 instructions)
         * instead of RAND_bytes() (about 10,000).  The access log and
         * anything else that reads $request_id later see the same id.
         */
        p = ngx_pnalloc(r->pool, 32);
        if (p == NULL) {
            return NULL;
        }

        n = ngx_http_ai_gateway_id_counter++;
        h[0] = ngx_http_ai_gateway_siphash(ngx_http_ai_gateway_id_key, 2 * n);
        h[1] = ngx_http_ai_gateway_siphash(ngx_http_ai_gateway_id_key,
                                           2 * n + 1);
        ngx_hex_dump(p, (u_char *) h, 16);

        v->data = p;
        v->len = 32;
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;
    }

    v = ngx_http_get_indexed_variable(r, mcf->request_id_index);

    if (v == NULL || v->not_found) {
        ngx_str_null(s);
        return s;
    }

    s->data = v->data;
    s->len = v->len;

    return s;
}


/* the worker's key for request ids; without one, nginx's own ids */

void
ngx_http_ai_gateway_request_id_init(ngx_cycle_t *cycle)
{
    if (RAND_bytes((u_char *) ngx_http_ai_gateway_id_key,
                   sizeof(ngx_http_ai_gateway_id_key))
        != 1)
    {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "ai_gateway: RAND_bytes() failed: request ids come "
                      "from nginx's $request_id");
        return;
    }

    ngx_http_ai_gateway_id_counter = 0;
    ngx_http_ai_gateway_id_ready = 1;
}


static ngx_str_t *
ngx_http_ai_gateway_client_request_id(ngx_http_request_t *r)
{
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_header_iter_t   it;

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {
        if (ngx_http_ai_gateway_header_in_is(h, "x-client-request-id")) {
            return &h->value;
        }
    }

    return NULL;
}


static ngx_msec_t
ngx_http_ai_gateway_elapsed(ngx_http_request_t *r)
{
    ngx_time_t      *tp;
    ngx_msec_int_t   ms;

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    return (ngx_msec_t) ngx_max(ms, 0);
}


static size_t
ngx_http_ai_gateway_escape_len(ngx_str_t *s)
{
    /* worst case: every byte becomes "\u00XX" or "\ufffd" */
    return (s && s->data) ? 6 * s->len + 2 : 0;
}


static void
ngx_http_ai_gateway_put(ngx_http_ai_gateway_out_t *o, const char *text)
{
    size_t  len;

    len = ngx_strlen(text);

    if ((size_t) (o->end - o->pos) >= len) {
        o->pos = ngx_cpymem(o->pos, text, len);
    }
}


/*
 * Strings are written in the room their escape_len() added to the record's
 * length, and the rest (keys, numbers, nulls) in the fixed part of it.  A
 * string that was not counted must not write past the record's end, into
 * the sink's buffer and what follows it: the record is dropped instead.
 */

static void
ngx_http_ai_gateway_put_str_value(ngx_http_ai_gateway_out_t *o, ngx_str_t *s)
{
    if (s == NULL || s->data == NULL) {
        o->pos = ngx_cpymem(o->pos, "null,", 5);
        return;
    }

    if ((size_t) (o->end - o->pos) < 6 * s->len + 3) {
        o->overflow = 1;
        return;
    }

    *o->pos++ = '"';
    o->pos = ngx_http_ai_gateway_json_escape(o->pos, s->data, s->len);
    *o->pos++ = '"';
    *o->pos++ = ',';
}


static void
ngx_http_ai_gateway_put_int_value(ngx_http_ai_gateway_out_t *o, int64_t n)
{
    if (n < 0) {
        o->pos = ngx_cpymem(o->pos, "null,", 5);
        return;
    }

    o->pos = ngx_http_ai_gateway_write_uint(o->pos, (uint64_t) n);
    *o->pos++ = ',';
}


static void
ngx_http_ai_gateway_put_usd_value(ngx_http_ai_gateway_out_t *o, int64_t pico)
{
    if (pico < 0) {
        o->pos = ngx_cpymem(o->pos, "null,", 5);
        return;
    }

    o->pos = ngx_http_ai_gateway_format_usd(o->pos, pico);
    *o->pos++ = ',';
}


static void
ngx_http_ai_gateway_put_bool_value(ngx_http_ai_gateway_out_t *o, ngx_uint_t b)
{
    o->pos = b ? ngx_cpymem(o->pos, "true,", 5) : ngx_cpymem(o->pos, "false,", 6);
}


/* 1e-12 USD as a decimal number of dollars, trailing zeros cut */

u_char *
ngx_http_ai_gateway_format_usd(u_char *p, int64_t pico)
{
    u_char  *start;

    p = ngx_sprintf(p, "%L.", pico / 1000000000000LL);
    start = p;
    p = ngx_sprintf(p, "%012L", pico % 1000000000000LL);

    while (p > start + 1 && p[-1] == '0') {
        p--;
    }

    return p;
}
