
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Request inspection: the body is read (bounded, without blocking), kept
 * whole in memory, scanned once for the request facts, and judged.  Errors
 * get the OpenAI error shape.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_json.h"


/* a chunked body starts with this much room and doubles */
#define NGX_HTTP_AI_GATEWAY_CHUNKED_PREALLOC  16384


static ngx_int_t ngx_http_ai_gateway_reject(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
static ngx_int_t ngx_http_ai_gateway_reject_early(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
static ngx_int_t ngx_http_ai_gateway_json_content_type(ngx_http_request_t *r);
static void ngx_http_ai_gateway_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ai_gateway_body_append(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t *b);
static ngx_int_t ngx_http_ai_gateway_body_gather(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static void ngx_http_ai_gateway_inspect(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_inspect_tree(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts);
static ngx_http_ai_gateway_tree_t *ngx_http_ai_gateway_tree_get(
    ngx_http_request_t *r);
static void ngx_http_ai_gateway_tree_put(void *data);
static ngx_int_t ngx_http_ai_gateway_user_lookup(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_ai_gateway_check_types(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts);
static ngx_int_t ngx_http_ai_gateway_type_error(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_key_e key,
    const char *expected);
static void ngx_http_ai_gateway_set_error(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t status, const char *code,
    ngx_str_t *message);
static ngx_int_t ngx_http_ai_gateway_copy_string(ngx_http_request_t *r,
    ngx_http_ai_gateway_json_value_t *v, ngx_str_t *s);
static ngx_uint_t ngx_http_ai_gateway_token_budgets(
    ngx_http_ai_gateway_loc_conf_t *lcf);
static ngx_int_t ngx_http_ai_gateway_stream_options(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts);
static ngx_http_ai_gateway_api_e ngx_http_ai_gateway_detect_api(
    ngx_http_request_t *r, ngx_http_ai_gateway_json_facts_t *facts,
    ngx_str_t *uri_model);


typedef struct {
    ngx_str_t                  suffix;
    ngx_http_ai_gateway_api_e  api;
} ngx_http_ai_gateway_api_uri_t;


/* longest first: "/chat/completions" also ends with "/completions" */
static ngx_http_ai_gateway_api_uri_t  ngx_http_ai_gateway_api_uris[] = {
    { ngx_string("/chat/completions"), NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT },
    { ngx_string("/completions"), NGX_HTTP_AI_GATEWAY_API_OPENAI_COMPLETIONS },
    { ngx_string("/embeddings"), NGX_HTTP_AI_GATEWAY_API_OPENAI_EMBEDDINGS },
    { ngx_string("/responses"), NGX_HTTP_AI_GATEWAY_API_OPENAI_RESPONSES },
    { ngx_string("/messages"), NGX_HTTP_AI_GATEWAY_API_ANTHROPIC_MESSAGES },
    { ngx_null_string, NGX_HTTP_AI_GATEWAY_API_UNKNOWN }
};


static ngx_str_t  ngx_http_ai_gateway_api_names[] = {
    ngx_string("unknown"),
    ngx_string("openai_chat"),
    ngx_string("openai_completions"),
    ngx_string("openai_responses"),
    ngx_string("openai_embeddings"),
    ngx_string("anthropic_messages")
};


static ngx_str_t  ngx_http_ai_gateway_databricks_prefix =
    ngx_string("/serving-endpoints/");
static ngx_str_t  ngx_http_ai_gateway_databricks_suffix =
    ngx_string("/invocations");


/*
 * The rewrite phase: a model request (a POST) in a location with usage
 * tracking gets its ctx here, before nginx's own checks (rewrite's return,
 * limit_req, allow/deny, auth_request) may refuse it, so that a refused one
 * still gets its usage record (who asked, the status, no tokens), also
 * after an error_page has taken it elsewhere (the ctx is found again after
 * internal redirects).  The handler takes the ctx over when the request
 * gets that far.  Other methods (GET /v1/models) are no model requests.
 */

/* the location's endpoint name: ai_gateway_endpoint, or its own name */

ngx_str_t
ngx_http_ai_gateway_endpoint_name(ngx_http_request_t *r,
    ngx_http_ai_gateway_loc_conf_t *lcf)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->endpoint.len) {
        return lcf->endpoint;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    return clcf->name;
}


ngx_int_t
ngx_http_ai_gateway_mark(ngx_http_request_t *r)
{
    ngx_http_ai_gateway_ctx_t       *ctx;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    /*
     * A translated request in another location (an error_page after the
     * Anthropic upstream failed): it goes on as it was, before that
     * location's rewrites see its URI and whatever answers it ("return",
     * a static file) is taken for an Anthropic answer.  Every location
     * runs this phase, and this handler before the rewrite module's.
     */
    if (r == r->main) {
        ctx = ngx_http_ai_gateway_get_ctx(r);

        if (ctx != NULL && ctx->translate) {
            ngx_http_ai_gateway_untranslate(r, ctx);
        }
    }

    if (!lcf->enable || !lcf->usage_tracking || r != r->main
        || r->method != NGX_HTTP_POST
        || ngx_http_ai_gateway_get_ctx(r) != NULL)
    {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ai_gateway_create_ctx(r);
    if (ctx == NULL) {
        /* the handler tries again, and fails the request there */
        return NGX_DECLINED;
    }

    ctx->early = 1;
    ctx->track = 1;
    ctx->endpoint = ngx_http_ai_gateway_endpoint_name(r, lcf);

    /*
     * A user header is read now (an error_page may take the request to a
     * location without ai_gateway_user); a user made of variables only
     * at the end (a map of a variable that "set" has not set yet would be
     * cached empty).
     */
    if (lcf->user_header.len) {
        (void) ngx_http_ai_gateway_user(r, ctx);
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_ai_gateway_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_ai_gateway_ctx_t       *ctx;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    /* a subrequest (the safety model's, say) is not a model request */
    if (!lcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ai_gateway_get_ctx(r);

    if (ctx != NULL && !ctx->early) {

        /* the phases run again: after the body was read, or a redirect */

        if (ctx->state == NGX_HTTP_AI_GATEWAY_STATE_READING) {
            return NGX_DONE;
        }

        if (ctx->status) {
            rc = ngx_http_ai_gateway_send_error(r, ctx->status,
                                                ctx->error_type,
                                                ctx->error_code,
                                                &ctx->error_message);
            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }

        if (!ctx->inspected) {
            return NGX_DECLINED;
        }

        /* the models of this location, and of the client's key */

        rc = ngx_http_ai_gateway_provider_check(r, ctx);

        if (rc != NGX_OK) {
            return (rc == NGX_DONE) ? NGX_DONE
                                    : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the safety model, before anything is counted or forwarded */

        rc = ngx_http_ai_gateway_guard_safety(r, ctx);

        if (rc == NGX_AGAIN) {
            /* the subrequest's end runs the phases again */
            return NGX_DONE;
        }

        if (rc != NGX_OK) {
            return (rc == NGX_DONE) ? NGX_DONE
                                    : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the limits, once, in the first location that inspected */

        rc = ngx_http_ai_gateway_limit(r, ctx);

        if (rc == NGX_DONE) {
            return NGX_DONE;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* what this location's upstream is sent */

        rc = ngx_http_ai_gateway_provider_prepare(r, ctx);

        if (rc == NGX_DONE) {
            return NGX_DONE;
        }

        return (rc == NGX_ERROR) ? NGX_HTTP_INTERNAL_SERVER_ERROR
                                 : NGX_DECLINED;
    }

    if (r->method != NGX_HTTP_POST) {
        /* GET /v1/models and the like: no body to inspect, a key to know */
        rc = ngx_http_ai_gateway_provider_access(r, NULL);

        if (rc != NGX_OK) {
            return (rc == NGX_DONE) ? NGX_DONE
                                    : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_DECLINED;
    }

    if (ctx == NULL) {
        ctx = ngx_http_ai_gateway_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        /* made in the rewrite phase: this location's from here on */
        ctx->early = 0;
        ctx->user_evaluated = 0;
        ngx_str_null(&ctx->user);
    }

    /* rejected requests get records too */
    ctx->track = lcf->usage_tracking;
    ctx->infer = lcf->inference_table;
    ctx->endpoint = ngx_http_ai_gateway_endpoint_name(r, lcf);

    /* a key before anything else: nothing is read for an unknown one */

    rc = ngx_http_ai_gateway_provider_access(r, ctx);

    if (rc != NGX_OK) {
        return (rc == NGX_DONE) ? NGX_DONE : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ai_gateway_json_content_type(r) != NGX_OK) {
        return ngx_http_ai_gateway_reject_early(r,
                          NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                          "unsupported_media_type",
                          "Unsupported Content-Type: the request body must "
                          "be JSON (application/json).");
    }

    if (r->headers_in.content_length_n == 0
        || (r->headers_in.content_length_n < 0 && !r->headers_in.chunked))
    {
        return ngx_http_ai_gateway_reject_early(r, NGX_HTTP_BAD_REQUEST,
                          "empty_body",
                          "The request body is empty: a JSON object is "
                          "required.");
    }

    if (r->headers_in.content_length_n > (off_t) lcf->max_body) {
        return ngx_http_ai_gateway_reject_early(r,
                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                          "request_too_large",
                          "The request body is larger than the gateway "
                          "accepts (ai_gateway_max_body).");
    }

    ctx->body_size = r->headers_in.chunked
                     ? ngx_min(lcf->max_body,
                               NGX_HTTP_AI_GATEWAY_CHUNKED_PREALLOC)
                     : (size_t) r->headers_in.content_length_n;

    ctx->body = ngx_pnalloc(r->pool, ctx->body_size);
    if (ctx->body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->state = NGX_HTTP_AI_GATEWAY_STATE_READING;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_ai_gateway_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


/*
 * A phase handler's NGX_OK would mean "go on to the next phase", so a
 * response we sent ourselves is finalized here and the phases stop.
 */

static ngx_int_t
ngx_http_ai_gateway_reject(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    ngx_int_t  rc;
    ngx_str_t  msg;

    msg.data = (u_char *) message;
    msg.len = ngx_strlen(message);

    rc = ngx_http_ai_gateway_send_error(r, status, "invalid_request_error",
                                        code, &msg);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/* a rejection before the body was read: the body is discarded first */

static ngx_int_t
ngx_http_ai_gateway_reject_early(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    ngx_int_t  rc;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ai_gateway: %ui %s: %s", status, code, message);

    if (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* no "100 Continue": the client need not send what we refuse */
        r->expect_tested = 1;
        r->keepalive = 0;
        r->lingering_close = 1;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_ai_gateway_reject(r, status, code, message);
}


/*
 * application/json and the "+json" types, with any parameters; a request
 * without a Content-Type is taken as JSON, as the providers do.
 */

static ngx_int_t
ngx_http_ai_gateway_json_content_type(ngx_http_request_t *r)
{
    u_char           *p, *last;
    size_t            len;
    ngx_table_elt_t  *h;

    h = r->headers_in.content_type;

    if (h == NULL) {
        return NGX_OK;
    }

    p = h->value.data;
    last = p + h->value.len;

    while (p < last && *p != ';' && *p != ' ' && *p != '\t') {
        p++;
    }

    len = p - h->value.data;

    /* as clients write it, then in any case (ngx_strncasecmp() costs some
     * 15 instructions a byte) */
    if (len == sizeof("application/json") - 1
        && (ngx_memcmp(h->value.data, "application/json", len) == 0
            || ngx_strncasecmp(h->value.data, (u_char *) "application/json",
                               len)
               == 0))
    {
        return NGX_OK;
    }

    if (len > sizeof("application/+json") - 1
        && ngx_strncasecmp(h->value.data, (u_char *) "application/", 12) == 0
        && ngx_strncasecmp(p - 5, (u_char *) "+json", 5) == 0)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The request body filter keeps the whole body in one buffer of ours, so
 * that it is scanned in place and never spills to a temporary file, and
 * hands it on as one buffer when the last part has arrived.  The buffers it
 * takes are marked consumed, so nginx reuses its read buffer meanwhile.
 */

ngx_int_t
ngx_http_ai_gateway_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_buf_t                  *b;
    ngx_uint_t                  last;
    ngx_chain_t                *cl, out;
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ai_gateway_module);

    if (ctx == NULL || ctx->state != NGX_HTTP_AI_GATEWAY_STATE_READING) {
        return ngx_http_ai_gateway_next_request_body_filter(r, in);
    }

    ctx->body_filtered = 1;
    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_http_ai_gateway_body_append(r, ctx, b) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->pos = b->last;

        if (b->last_buf) {
            last = 1;
        }
    }

    if (!last) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->body_len && !ctx->too_large) {
        b->temporary = 1;
        b->start = ctx->body;
        b->pos = ctx->body;
        b->last = ctx->body + ctx->body_len;
        b->end = b->last;
    }

    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_ai_gateway_next_request_body_filter(r, &out);
}


static ngx_int_t
ngx_http_ai_gateway_body_append(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_buf_t *b)
{
    size_t                           size, n;
    u_char                          *p;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    size = b->last - b->pos;

    if (size == 0 || ctx->too_large) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (size > lcf->max_body - ctx->body_len) {
        /* a chunked body grew past the limit: read it to the end, unkept */
        ctx->too_large = 1;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: chunked request body is larger than "
                      "ai_gateway_max_body %uz", lcf->max_body);
        return NGX_OK;
    }

    if (size > ctx->body_size - ctx->body_len) {
        n = ngx_max(ctx->body_size * 2, ctx->body_len + size);
        n = ngx_min(n, lcf->max_body);

        p = ngx_pnalloc(r->pool, n);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, ctx->body, ctx->body_len);
        ngx_pfree(r->pool, ctx->body);

        ctx->body = p;
        ctx->body_size = n;
    }

    ngx_memcpy(ctx->body + ctx->body_len, b->pos, size);
    ctx->body_len += size;

    return NGX_OK;
}


static void
ngx_http_ai_gateway_body_handler(ngx_http_request_t *r)
{
    ngx_http_ai_gateway_ctx_t  *ctx;

    ctx = ngx_http_ai_gateway_get_ctx(r);

    ctx->state = NGX_HTTP_AI_GATEWAY_STATE_DONE;

    if (ctx->too_large) {
        r->keepalive = 0;
        ngx_str_set(&ctx->error_message,
                    "The request body is larger than the gateway accepts "
                    "(ai_gateway_max_body).");
        ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large",
                                      &ctx->error_message);

    } else if (!ctx->body_filtered
               && ngx_http_ai_gateway_body_gather(r, ctx) != NGX_OK)
    {
        ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        ctx->error_type = "server_error";
        ctx->error_code = "internal_error";
        ngx_str_set(&ctx->error_message,
                    "The gateway could not read the request body.");

    } else {
        ngx_http_ai_gateway_inspect(r, ctx);
    }

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * The body was read before our handler ran (by another module): take it
 * from r->request_body when it is in memory.
 */

static ngx_int_t
ngx_http_ai_gateway_body_gather(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    size_t        len;
    u_char       *p;
    ngx_chain_t  *cl;

    if (r->request_body == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ai_gateway: request body was buffered to a file "
                          "before inspection");
            return NGX_ERROR;
        }

        len += cl->buf->last - cl->buf->pos;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->body = p;
    ctx->body_len = len;
    ctx->body_size = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    return NGX_OK;
}


static void
ngx_http_ai_gateway_inspect(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    int                               rc, lazy;
    ngx_str_t                         msg, uri_model;
    ngx_uint_t                        budgets;
    ngx_http_ai_gateway_loc_conf_t   *lcf;
    ngx_http_ai_gateway_main_conf_t  *mcf;
    ngx_http_ai_gateway_json_facts_t  facts;

    if (ctx->body_len == 0) {
        ngx_str_set(&msg, "The request body is empty: a JSON object is "
                          "required.");
        ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "empty_body", &msg);
        return;
    }

    if (ngx_http_ai_gateway_inspect_tree(r, ctx, &facts) == NGX_OK) {
        rc = NGX_HTTP_AI_GATEWAY_JSON_OK;
        lazy = 1;

    } else {
        lazy = 0;
        rc = ngx_http_ai_gateway_json_scan(ctx->body, ctx->body_len, &facts);
    }

    if (rc == NGX_HTTP_AI_GATEWAY_JSON_INVALID) {
        msg.data = ngx_pnalloc(r->pool, 160);
        if (msg.data == NULL) {
            return;
        }

        msg.len = ngx_snprintf(msg.data, 160,
                               "We could not parse the JSON body of your "
                               "request: %s at byte %uz.",
                               facts.error, facts.error_offset)
                  - msg.data;

        ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "invalid_json", &msg);
        return;
    }

    if (rc == NGX_HTTP_AI_GATEWAY_JSON_NOT_OBJECT) {
        ngx_str_set(&msg, "The request body must be a JSON object.");
        ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "invalid_json", &msg);
        return;
    }

    if (ngx_http_ai_gateway_check_types(r, ctx, &facts) != NGX_OK) {
        return;
    }

    ngx_str_null(&uri_model);

    ctx->api = ngx_http_ai_gateway_detect_api(r, &facts, &uri_model);

    if (facts.field[NGX_HTTP_AI_GATEWAY_KEY_MODEL].type
        == NGX_HTTP_AI_GATEWAY_JSON_STRING)
    {
        if (ngx_http_ai_gateway_copy_string(r,
                            &facts.field[NGX_HTTP_AI_GATEWAY_KEY_MODEL],
                            &ctx->model)
            != NGX_OK)
        {
            return;
        }

    } else if (uri_model.len) {
        ctx->model = uri_model;

    } else {
        ngx_str_set(&msg, "you must provide a model parameter");
        ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "missing_model", &msg);
        return;
    }

    if (facts.field[NGX_HTTP_AI_GATEWAY_KEY_USER].type
            == NGX_HTTP_AI_GATEWAY_JSON_STRING
        && ngx_http_ai_gateway_copy_string(r,
                            &facts.field[NGX_HTTP_AI_GATEWAY_KEY_USER],
                            &ctx->client_user)
           != NGX_OK)
    {
        return;
    }

    /* the tree's facts leave the prompt uncounted until asked; set only
     * for a request that passed the checks above, as the count itself */
    ctx->input_chars = facts.input_chars;
    ctx->input_chars_lazy = lazy;
    ctx->inspected = 1;

    (void) ngx_http_ai_gateway_user(r, ctx);

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    /* answers are read for records and for token budgets */
    budgets = ngx_http_ai_gateway_token_budgets(lcf);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    /* the usage is read for records, budgets and metrics; the answer is
     * read for those and for the output guardrail (and a translation) */
    ctx->read_usage = ctx->track || ctx->infer || budgets || mcf->metrics;
    ctx->parse = ctx->read_usage || lcf->guard_out;

    if (ctx->parse) {
        ngx_http_ai_gateway_identity_encoding(r);
    }

    /* before anything is forwarded or counted: a block ends it here */
    if (ngx_http_ai_gateway_guard_input(r, ctx) != NGX_OK) {
        return;
    }

    if (ctx->stream == 1
        && (ctx->api == NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT
            || ctx->api == NGX_HTTP_AI_GATEWAY_API_OPENAI_COMPLETIONS)
        && (lcf->stream_usage == NGX_CONF_UNSET ? ctx->read_usage
                                                : lcf->stream_usage))
    {
        (void) ngx_http_ai_gateway_stream_options(r, ctx, &facts);
    }

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ai_gateway: api:%V model:\"%V\" stream:%i "
                   "max_tokens:%L input_chars:%uL body:%uz",
                   ngx_http_ai_gateway_api_name(ctx->api), &ctx->model,
                   ctx->stream, ctx->max_tokens,
                   ngx_http_ai_gateway_input_chars(ctx), ctx->body_len);
}


/*
 * The first block of a body's tree (the tree and TREE_FIRST bytes): one of
 * the worker's spare blocks, given back when the request's pool goes (its
 * log handlers have run by then).  It comes back warm, and the tree takes
 * none of the request's pool (3 KiB of a 4 KiB block).  At most
 * TREE_SPARE are kept.
 */

#define NGX_HTTP_AI_GATEWAY_TREE_SPARE  32

typedef struct ngx_http_ai_gateway_tree_spare_s
    ngx_http_ai_gateway_tree_spare_t;

struct ngx_http_ai_gateway_tree_spare_s {
    ngx_http_ai_gateway_tree_spare_t  *next;
};

static ngx_http_ai_gateway_tree_spare_t  *ngx_http_ai_gateway_tree_spare;
static ngx_uint_t                         ngx_http_ai_gateway_tree_nspare;


static ngx_http_ai_gateway_tree_t *
ngx_http_ai_gateway_tree_get(ngx_http_request_t *r)
{
    void                *p;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    p = ngx_http_ai_gateway_tree_spare;

    if (p != NULL) {
        ngx_http_ai_gateway_tree_spare = ngx_http_ai_gateway_tree_spare->next;
        ngx_http_ai_gateway_tree_nspare--;

    } else {
        p = ngx_alloc(sizeof(ngx_http_ai_gateway_tree_t)
                      + NGX_HTTP_AI_GATEWAY_TREE_FIRST, r->connection->log);
        if (p == NULL) {
            return NULL;
        }
    }

    cln->handler = ngx_http_ai_gateway_tree_put;
    cln->data = p;

    return p;
}


static void
ngx_http_ai_gateway_tree_put(void *data)
{
    ngx_http_ai_gateway_tree_spare_t  *s = data;

    if (ngx_http_ai_gateway_tree_nspare >= NGX_HTTP_AI_GATEWAY_TREE_SPARE
        || ngx_exiting || ngx_terminate)
    {
        ngx_free(s);
        return;
    }

    s->next = ngx_http_ai_gateway_tree_spare;
    ngx_http_ai_gateway_tree_spare = s;
    ngx_http_ai_gateway_tree_nspare++;
}


/* the worker exits: the spare blocks go (the module's memory is unmapped
 * after this, and with it the list) */

void
ngx_http_ai_gateway_tree_exit(void)
{
    ngx_http_ai_gateway_tree_spare_t  *s;

    while (ngx_http_ai_gateway_tree_spare != NULL) {
        s = ngx_http_ai_gateway_tree_spare;
        ngx_http_ai_gateway_tree_spare = s->next;
        ngx_free(s);
    }

    ngx_http_ai_gateway_tree_nspare = 0;
}


/*
 * Where the location translates the body, it is parsed into its tree now,
 * and the facts are read from the tree rather than scanned: the body is
 * read once, not twice.  NGX_DECLINED: the scanner gives the facts (an
 * invalid body, for the scanner's error message; an array; a stream, for
 * the spans stream_options needs; guardrails on the input, which may
 * replace the body); the tree, when there is one, still serves the
 * translation.  Bodies over NGX_HTTP_AI_GATEWAY_TREE_MAX are scanned, and
 * parsed for the translation into memory freed at once, as before.
 */

static ngx_int_t
ngx_http_ai_gateway_inspect_tree(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts)
{
    u_char                             *first;
    ngx_http_ai_gateway_tree_t         *t;
    ngx_http_ai_gateway_jtree_t        *root;
    ngx_http_ai_gateway_loc_conf_t     *lcf;
    ngx_http_ai_gateway_jtree_error_t   err;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    /* the tree is kept for the request's life: for bodies of ordinary size
     * only */
    if (lcf->upstream_api != NGX_HTTP_AI_GATEWAY_UPSTREAM_ANTHROPIC
        || lcf->guard_in != NULL
        || ctx->body_len > NGX_HTTP_AI_GATEWAY_TREE_MAX)
    {
        return NGX_DECLINED;
    }

    t = ngx_http_ai_gateway_tree_get(r);
    if (t == NULL) {
        return NGX_DECLINED;
    }

    first = (u_char *) (t + 1);

    ngx_http_ai_gateway_jtree_arena_init(&t->arena, first,
                                         NGX_HTTP_AI_GATEWAY_TREE_FIRST,
                                         ngx_http_ai_gateway_pool_alloc, NULL,
                                         r->pool);
    t->arena.no_nul = 1;

    root = ngx_http_ai_gateway_jtree_parse(ctx->body, ctx->body_len,
                                           &t->arena, &err);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ai_gateway: body tree of %uz bytes: %uz of the first "
                   "%uz, %s", ctx->body_len,
                   (size_t) (t->arena.pos - first),
                   (size_t) NGX_HTTP_AI_GATEWAY_TREE_FIRST,
                   t->arena.blocks ? "and more blocks" : "no more");

    if (root == NULL || root->type != NGX_HTTP_AI_GATEWAY_JTREE_OBJECT) {
        return NGX_DECLINED;
    }

    t->root = root;
    t->body = ctx->body;
    t->len = ctx->body_len;
    ctx->tree = t;

    /* the prompt's text is counted when something asks for it */
    ngx_http_ai_gateway_jtree_facts(root, facts);

    if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_STREAM].type
        == NGX_HTTP_AI_GATEWAY_JSON_TRUE)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * The prompt's text in code points, for estimates, token reservations,
 * records and $ai_input_characters: counted by the scan, or from the
 * body's tree on the first call (a translation alone never asks).
 */

uint64_t
ngx_http_ai_gateway_input_chars(ngx_http_ai_gateway_ctx_t *ctx)
{
    if (ctx->input_chars_lazy) {
        ctx->input_chars_lazy = 0;
        ctx->input_chars =
                  ngx_http_ai_gateway_jtree_input_chars(ctx->tree->root);
    }

    return ctx->input_chars;
}


/* the types the providers accept; null stands for "not given" */

static ngx_int_t
ngx_http_ai_gateway_check_types(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts)
{
    ngx_uint_t                         k;
    ngx_str_t                          msg;
    ngx_http_ai_gateway_json_value_t  *v;

    v = &facts->field[NGX_HTTP_AI_GATEWAY_KEY_MODEL];

    if (v->type != NGX_HTTP_AI_GATEWAY_JSON_STRING
        && v->type != NGX_HTTP_AI_GATEWAY_JSON_ABSENT
        && v->type != NGX_HTTP_AI_GATEWAY_JSON_NULL)
    {
        return ngx_http_ai_gateway_type_error(r, ctx,
                                              NGX_HTTP_AI_GATEWAY_KEY_MODEL,
                                              "a string");
    }

    v = &facts->field[NGX_HTTP_AI_GATEWAY_KEY_STREAM];

    switch (v->type) {
    case NGX_HTTP_AI_GATEWAY_JSON_TRUE:
        ctx->stream = 1;
        break;
    case NGX_HTTP_AI_GATEWAY_JSON_FALSE:
        ctx->stream = 0;
        break;
    case NGX_HTTP_AI_GATEWAY_JSON_ABSENT:
    case NGX_HTTP_AI_GATEWAY_JSON_NULL:
        break;
    default:
        return ngx_http_ai_gateway_type_error(r, ctx,
                                              NGX_HTTP_AI_GATEWAY_KEY_STREAM,
                                              "a boolean");
    }

    /* the newer names win: max_completion_tokens replaced max_tokens */

    for (k = NGX_HTTP_AI_GATEWAY_KEY_MAX_TOKENS;
         k <= NGX_HTTP_AI_GATEWAY_KEY_MAX_OUTPUT_TOKENS;
         k++)
    {
        v = &facts->field[k];

        if (v->type == NGX_HTTP_AI_GATEWAY_JSON_ABSENT
            || v->type == NGX_HTTP_AI_GATEWAY_JSON_NULL)
        {
            continue;
        }

        if (v->type != NGX_HTTP_AI_GATEWAY_JSON_INTEGER) {
            return ngx_http_ai_gateway_type_error(r, ctx, k, "an integer");
        }

        if (v->integer < 0) {
            msg.data = ngx_pnalloc(r->pool, 120);
            if (msg.data == NULL) {
                return NGX_ERROR;
            }

            msg.len = ngx_sprintf(msg.data, "Invalid '%s': integer below "
                                  "minimum value. Expected a value >= 0.",
                                  ngx_http_ai_gateway_json_key_name(k))
                      - msg.data;

            ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                          "integer_below_min_value", &msg);
            return NGX_ERROR;
        }

        ctx->max_tokens = v->integer;
    }

    v = &facts->field[NGX_HTTP_AI_GATEWAY_KEY_USER];

    if (v->type != NGX_HTTP_AI_GATEWAY_JSON_STRING
        && v->type != NGX_HTTP_AI_GATEWAY_JSON_ABSENT
        && v->type != NGX_HTTP_AI_GATEWAY_JSON_NULL)
    {
        return ngx_http_ai_gateway_type_error(r, ctx,
                                              NGX_HTTP_AI_GATEWAY_KEY_USER,
                                              "a string");
    }

    v = &facts->field[NGX_HTTP_AI_GATEWAY_KEY_MESSAGES];

    if (v->type != NGX_HTTP_AI_GATEWAY_JSON_ARRAY
        && v->type != NGX_HTTP_AI_GATEWAY_JSON_ABSENT)
    {
        return ngx_http_ai_gateway_type_error(r, ctx,
                                              NGX_HTTP_AI_GATEWAY_KEY_MESSAGES,
                                              "an array");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_type_error(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_key_e key,
    const char *expected)
{
    ngx_str_t  msg;

    msg.data = ngx_pnalloc(r->pool, 100);
    if (msg.data == NULL) {
        return NGX_ERROR;
    }

    msg.len = ngx_sprintf(msg.data, "Invalid type for '%s': expected %s.",
                          ngx_http_ai_gateway_json_key_name(key), expected)
              - msg.data;

    ngx_http_ai_gateway_set_error(r, ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                  &msg);

    return NGX_ERROR;
}


static void
ngx_http_ai_gateway_set_error(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t status, const char *code,
    ngx_str_t *message)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ai_gateway: %ui %s: %V", status, code, message);

    ctx->status = status;
    ctx->error_type = "invalid_request_error";
    ctx->error_code = code;
    ctx->error_message = *message;
}


static ngx_int_t
ngx_http_ai_gateway_copy_string(ngx_http_request_t *r,
    ngx_http_ai_gateway_json_value_t *v, ngx_str_t *s)
{
    if (!v->escaped) {
        /* the body outlives the request's phases: point into it */
        s->data = (u_char *) v->str;
        s->len = v->len;
        return NGX_OK;
    }

    s->data = ngx_pnalloc(r->pool, v->len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    s->len = ngx_http_ai_gateway_json_unescape(s->data, v->str, v->len);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ai_gateway_token_budgets(ngx_http_ai_gateway_loc_conf_t *lcf)
{
    ngx_uint_t                    i;
    ngx_http_ai_gateway_limit_t  *limit;

    if (lcf->limits == NULL) {
        return 0;
    }

    limit = lcf->limits->elts;

    for (i = 0; i < lcf->limits->nelts; i++) {
        if (limit[i].tokens) {
            return 1;
        }
    }

    return 0;
}


/*
 * OpenAI streams report usage only when asked: the gateway asks for the
 * client (stream_options.include_usage), and the filter hides the extra
 * chunk from clients that did not.  The body is spliced, not rebuilt; only
 * an existing stream_options object goes through jansson.
 */

static ngx_int_t
ngx_http_ai_gateway_stream_options(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_json_facts_t *facts)
{
    char                              *dump;
    u_char                            *body, *p, *brace;
    size_t                             len, dlen;
    json_t                            *root;
    const u_char                      *at;
    ngx_http_ai_gateway_json_value_t  *v;

    static u_char  member[] = "\"stream_options\":{\"include_usage\":true},";

    v = &facts->field[NGX_HTTP_AI_GATEWAY_KEY_STREAM_OPTIONS];
    dump = NULL;

    switch (v->type) {

    case NGX_HTTP_AI_GATEWAY_JSON_ABSENT:
        /* right after the opening brace: the body is a non-empty object */
        brace = ngx_strlchr(ctx->body, ctx->body + ctx->body_len, '{');
        at = brace + 1;
        dlen = sizeof(member) - 1;
        len = ctx->body_len + dlen;
        break;

    case NGX_HTTP_AI_GATEWAY_JSON_NULL:
    case NGX_HTTP_AI_GATEWAY_JSON_OBJECT:
        root = json_loadb((const char *) v->start, v->raw_len, 0, NULL);

        if (json_is_true(json_object_get(root, "include_usage"))) {
            ctx->client_usage = 1;
            json_decref(root);
            return NGX_OK;
        }

        if (root == NULL || json_is_null(root)) {
            json_decref(root);
            root = json_object();
        }

        if (json_object_set_new(root, "include_usage", json_true()) != 0
            || (dump = json_dumps(root, JSON_COMPACT)) == NULL)
        {
            json_decref(root);
            return NGX_ERROR;
        }

        json_decref(root);

        at = v->start;
        dlen = ngx_strlen(dump);
        len = ctx->body_len - v->raw_len + dlen;
        break;

    default:
        /* a wrong type is the provider's to reject */
        return NGX_DECLINED;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        free(dump);
        return NGX_ERROR;
    }

    p = ngx_cpymem(body, ctx->body, at - ctx->body);

    if (dump) {
        p = ngx_cpymem(p, dump, dlen);
        at += v->raw_len;
        free(dump);

    } else {
        p = ngx_cpymem(p, member, dlen);
    }

    ngx_memcpy(p, at, ctx->body + ctx->body_len - at);

    if (ngx_http_ai_gateway_replace_body(r, body, len) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->hide_usage = 1;

    return NGX_OK;
}


/*
 * What the upstream gets; ctx->body stays the client's own (for the hash
 * and the inference table).
 */

ngx_int_t
ngx_http_ai_gateway_replace_body(ngx_http_request_t *r, u_char *body,
    size_t len)
{
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_table_elt_t          *h;
    ngx_http_request_body_t  *rb;

    rb = r->request_body;

    if (rb == NULL || rb->temp_file) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the request body is in a file, "
                      "it is forwarded unchanged");
        return NGX_DECLINED;
    }

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->temporary = 1;
    b->start = body;
    b->pos = body;
    b->last = body + len;
    b->end = b->last;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;

    rb->bufs = cl;

    r->headers_in.content_length_n = len;

    h = r->headers_in.content_length;

    if (h) {
        h->value.data = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }

        h->value.len = ngx_http_ai_gateway_write_uint(h->value.data, len)
                       - h->value.data;
    }

    return NGX_OK;
}


/*
 * Upstream answers must be readable: the proxied request says "identity",
 * while nginx's gzip filter still sees what the client accepts.
 */

void
ngx_http_ai_gateway_identity_encoding(ngx_http_request_t *r)
{
    ngx_table_elt_t                    *h, *copy;
    ngx_http_ai_gateway_header_iter_t   it;

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {

        if (!ngx_http_ai_gateway_header_in_is(h, "accept-encoding")) {
            continue;
        }

#if (NGX_HTTP_GZIP || NGX_HTTP_HEADERS)
        if (r->headers_in.accept_encoding == h) {
            copy = ngx_palloc(r->pool, sizeof(ngx_table_elt_t));
            if (copy == NULL) {
                return;
            }

            *copy = *h;
            r->headers_in.accept_encoding = copy;
        }
#else
        (void) copy;
#endif

        ngx_str_set(&h->value, "identity");
    }
}


/*
 * The URI names the API where it follows the providers' paths; otherwise
 * (Databricks invocations, custom paths) the body's keys tell.
 */

static ngx_http_ai_gateway_api_e
ngx_http_ai_gateway_detect_api(ngx_http_request_t *r,
    ngx_http_ai_gateway_json_facts_t *facts, ngx_str_t *uri_model)
{
    u_char                         *p, *last;
    ngx_str_t                      *uri;
    ngx_http_ai_gateway_api_uri_t  *a;

    uri = &r->uri;

    for (a = ngx_http_ai_gateway_api_uris; a->suffix.len; a++) {
        if (uri->len >= a->suffix.len
            && ngx_strncmp(uri->data + uri->len - a->suffix.len,
                           a->suffix.data, a->suffix.len) == 0)
        {
            return a->api;
        }
    }

    /* /serving-endpoints/{name}/invocations names the model */

    p = ngx_strlcasestrn(uri->data, uri->data + uri->len,
                         ngx_http_ai_gateway_databricks_prefix.data,
                         ngx_http_ai_gateway_databricks_prefix.len - 1);

    if (p != NULL
        && uri->len > ngx_http_ai_gateway_databricks_suffix.len
        && ngx_strncmp(uri->data + uri->len
                       - ngx_http_ai_gateway_databricks_suffix.len,
                       ngx_http_ai_gateway_databricks_suffix.data,
                       ngx_http_ai_gateway_databricks_suffix.len) == 0)
    {
        p += ngx_http_ai_gateway_databricks_prefix.len;
        last = uri->data + uri->len - ngx_http_ai_gateway_databricks_suffix.len;

        if (p < last && ngx_strlchr(p, last, '/') == NULL) {
            uri_model->data = p;
            uri_model->len = last - p;
        }
    }

    if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_MESSAGES].type) {
        if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_ANTHROPIC_VERSION].type
            || facts->field[NGX_HTTP_AI_GATEWAY_KEY_SYSTEM].type)
        {
            return NGX_HTTP_AI_GATEWAY_API_ANTHROPIC_MESSAGES;
        }

        return NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT;
    }

    if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_PROMPT].type) {
        return NGX_HTTP_AI_GATEWAY_API_OPENAI_COMPLETIONS;
    }

    if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_INPUT].type) {
        if (facts->field[NGX_HTTP_AI_GATEWAY_KEY_INSTRUCTIONS].type
            || facts->field[NGX_HTTP_AI_GATEWAY_KEY_MAX_OUTPUT_TOKENS].type
            || facts->field[NGX_HTTP_AI_GATEWAY_KEY_PREVIOUS_RESPONSE_ID].type
            || facts->field[NGX_HTTP_AI_GATEWAY_KEY_STREAM].type)
        {
            return NGX_HTTP_AI_GATEWAY_API_OPENAI_RESPONSES;
        }

        return NGX_HTTP_AI_GATEWAY_API_OPENAI_EMBEDDINGS;
    }

    return NGX_HTTP_AI_GATEWAY_API_UNKNOWN;
}


ngx_str_t *
ngx_http_ai_gateway_api_name(ngx_http_ai_gateway_api_e api)
{
    return &ngx_http_ai_gateway_api_names[api];
}


/*
 * The requester, from ai_gateway_user, fixed at the first inspection so
 * that a redirect to a location with other settings does not change who
 * is counted.
 */

ngx_str_t *
ngx_http_ai_gateway_user(ngx_http_request_t *r, ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    if (ctx != NULL && ctx->user_evaluated) {
        return &ctx->user;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (ctx == NULL) {
        return NULL;
    }

    if (lcf->user_header.len
        && ngx_http_ai_gateway_user_lookup(r, &lcf->user_header, &ctx->user)
           == NGX_OK)
    {
        ctx->user_evaluated = 1;
        return &ctx->user;
    }

    if (lcf->user != NULL
        && ngx_http_complex_value(r, lcf->user, &ctx->user) != NGX_OK)
    {
        ngx_str_null(&ctx->user);
        return NULL;
    }

    ctx->user_evaluated = 1;

    return &ctx->user;
}


/*
 * "ai_gateway_user $http_x_user;", as usual: the header is looked up
 * here, where nginx's variable would compare every header's name with
 * strncasecmp() (its NAME in lowercase, '_' for '-').
 */

ngx_int_t
ngx_http_ai_gateway_user_header(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *name)
{
    u_char  c;
    size_t  i, n;

    ngx_str_null(name);

    if (value->len <= sizeof("$http_") - 1
        || ngx_strncasecmp(value->data, (u_char *) "$http_",
                           sizeof("$http_") - 1)
           != 0)
    {
        return NGX_OK;
    }

    n = value->len - (sizeof("$http_") - 1);

    for (i = 0; i < n; i++) {
        c = ngx_tolower(value->data[sizeof("$http_") - 1 + i]);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            /* more than the variable: nginx's script evaluates it */
            return NGX_OK;
        }
    }

    /* in lowercase, as nginx compares variable names */
    name->data = ngx_pnalloc(cf->pool, n);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(name->data, value->data + sizeof("$http_") - 1, n);
    name->len = n;

    return NGX_OK;
}


/*
 * The header NAME names, as $http_NAME gives it: nothing when there is
 * none.  A name that comes twice is left to nginx (NGX_DECLINED): 1.23
 * and later join the values, 1.22 takes the first.
 */

static ngx_int_t
ngx_http_ai_gateway_user_lookup(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char                             c;
    size_t                             i;
    ngx_table_elt_t                   *h, *found;
    ngx_http_ai_gateway_header_iter_t  it;

    found = NULL;
    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers,
                                                &it)))
    {
        if (h->key.len != name->len || h->hash == 0) {
            continue;
        }

        for (i = 0; i < name->len; i++) {
            c = h->lowcase_key[i];

            if ((c == '-' ? '_' : c) != name->data[i]) {
                break;
            }
        }

        if (i < name->len) {
            continue;
        }

        if (found) {
            return NGX_DECLINED;
        }

        found = h;
    }

    if (found) {
        *value = found->value;

    } else {
        ngx_str_set(value, "");
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_ai_gateway_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, ngx_str_t *message)
{
    size_t        len, tlen, clen;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    tlen = ngx_strlen(type);
    clen = ngx_strlen(code);

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\",\"code\":\"\"}}\n")
          - 1 + message->len
          + ngx_escape_json(NULL, message->data, message->len) + tlen + clen;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, "{\"error\":{\"message\":\"",
                         sizeof("{\"error\":{\"message\":\"") - 1);
    b->last = (u_char *) ngx_escape_json(b->last, message->data, message->len);
    b->last = ngx_cpymem(b->last, "\",\"type\":\"", sizeof("\",\"type\":\"") - 1);
    b->last = ngx_cpymem(b->last, type, tlen);
    b->last = ngx_cpymem(b->last, "\",\"code\":\"", sizeof("\",\"code\":\"") - 1);
    b->last = ngx_cpymem(b->last, code, clen);
    b->last = ngx_cpymem(b->last, "\"}}\n", sizeof("\"}}\n") - 1);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
