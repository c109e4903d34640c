
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * OpenAI Chat Completions <-> Anthropic Messages (see the header for the
 * mapping decisions).
 *
 * Input is parsed with jansson.  Output is never built as a tree: it is
 * written straight into the caller's buffer by a few small writers (a
 * string escaper, numbers, and a compact dumper for the pieces of input
 * that pass through as they are: tool schemas, tool call arguments).  The
 * writers keep going after the buffer failed to grow and only mark it, so
 * the translation code checks for memory once, at the end; a public
 * function that fails puts the buffer back as it found it.
 *
 * Our own dumper, rather than json_dumps(): reals are written in their
 * shortest form that reads back the same (0.7, not 0.69999999999999996),
 * and the output lands in the caller's memory without a copy.
 */


#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_ai_gateway_translate.h"


#define ngx_http_ai_gateway_translate_lit(b, s)                               \
    ngx_http_ai_gateway_translate_add(b, (const unsigned char *) s,           \
                                      sizeof(s) - 1)

#define ngx_http_ai_gateway_translate_cstr(b, s)                              \
    ngx_http_ai_gateway_translate_str(b, (const unsigned char *) s,           \
                                      strlen(s))


/* the roles of chat messages, as Anthropic sees them */
typedef enum {
    NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM = 0,   /* system, developer */
    NGX_HTTP_AI_GATEWAY_TRANSLATE_USER,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL          /* a user message */
} ngx_http_ai_gateway_translate_role_e;


typedef enum {
    NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE_GIVEN = 0,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_AUTO,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_ANY,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_TOOL
} ngx_http_ai_gateway_translate_choice_e;


typedef enum {
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_OTHER = 0,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_START,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_START,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_DELTA,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_STOP,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_DELTA,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_STOP,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_PING,
    NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_ERROR
} ngx_http_ai_gateway_translate_event_e;


typedef struct {
    const char  *name;
    size_t       len;
    unsigned     kind;
} ngx_http_ai_gateway_translate_event_t;


typedef struct {
    const char  *anthropic;     /* Anthropic's error type */
    unsigned     status;        /* the status Anthropic sends it with */
    const char  *type;          /* OpenAI's */
    const char  *code;
} ngx_http_ai_gateway_translate_errmap_t;


static unsigned char *ngx_http_ai_gateway_translate_reserve(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n);
static void ngx_http_ai_gateway_translate_add(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_esc(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_str(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_jstr(
    ngx_http_ai_gateway_translate_buf_t *b, json_t *s);
static void ngx_http_ai_gateway_translate_int(
    ngx_http_ai_gateway_translate_buf_t *b, int64_t v);
static void ngx_http_ai_gateway_translate_uint(
    ngx_http_ai_gateway_translate_buf_t *b, uint64_t v);
static void ngx_http_ai_gateway_translate_real(
    ngx_http_ai_gateway_translate_buf_t *b, double d);
static void ngx_http_ai_gateway_translate_json(
    ngx_http_ai_gateway_translate_buf_t *b, json_t *j);
static int ngx_http_ai_gateway_translate_end(
    ngx_http_ai_gateway_translate_buf_t *b, size_t len0, int rc);
static size_t ngx_http_ai_gateway_translate_cut(unsigned char *dst,
    size_t max, const unsigned char *src, size_t n);
static json_t *ngx_http_ai_gateway_translate_load(const unsigned char *p,
    size_t len, json_error_t *err, int *rc);

static int ngx_http_ai_gateway_translate_invalid(
    ngx_http_ai_gateway_translate_request_t *req, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int ngx_http_ai_gateway_translate_root(json_t *root,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_tool_choice(json_t *root,
    const char **name, ngx_http_ai_gateway_translate_request_t *req);
static int ngx_http_ai_gateway_translate_role(json_t *m, size_t i,
    ngx_http_ai_gateway_translate_request_t *req);
static int ngx_http_ai_gateway_translate_messages(json_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_blocks(json_t *m, size_t i,
    int role, int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_parts(json_t *content, size_t i,
    int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_media(json_t *url, size_t i,
    size_t k, const char *block, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_tool_calls(json_t *calls,
    size_t i, int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_system(json_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_tools(json_t *tools,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);

static void ngx_http_ai_gateway_translate_read_usage(json_t *usage,
    uint64_t *input, uint64_t *cache_read, uint64_t *cache_creation,
    uint64_t *output);
static void ngx_http_ai_gateway_translate_prompt_usage(
    ngx_http_ai_gateway_translate_buf_t *b, uint64_t input, uint64_t output,
    uint64_t cached);
static const ngx_http_ai_gateway_translate_errmap_t *
    ngx_http_ai_gateway_translate_errmap(const char *type, unsigned status);
static void ngx_http_ai_gateway_translate_error_obj(
    ngx_http_ai_gateway_translate_buf_t *b, json_t *err, unsigned status);

static void ngx_http_ai_gateway_translate_head(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b);
static void ngx_http_ai_gateway_translate_delta(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b);
static void ngx_http_ai_gateway_translate_delta_end(
    ngx_http_ai_gateway_translate_buf_t *b, const char *finish);
static void ngx_http_ai_gateway_translate_content(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b, json_t *text);
static int ngx_http_ai_gateway_translate_message_start(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_block_start(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_fast_delta(
    ngx_http_ai_gateway_translate_stream_t *st, const unsigned char *p,
    size_t len, ngx_http_ai_gateway_translate_buf_t *b);
static const unsigned char *ngx_http_ai_gateway_translate_scan(
    const unsigned char *p, const unsigned char *end);
static int ngx_http_ai_gateway_translate_block_delta(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_message_delta(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static void ngx_http_ai_gateway_translate_message_stop(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b);


static const ngx_http_ai_gateway_translate_event_t
    ngx_http_ai_gateway_translate_events[] =
{
    { "message_start", sizeof("message_start") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_START },
    { "content_block_start", sizeof("content_block_start") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_START },
    { "content_block_delta", sizeof("content_block_delta") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_DELTA },
    { "content_block_stop", sizeof("content_block_stop") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_STOP },
    { "message_delta", sizeof("message_delta") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_DELTA },
    { "message_stop", sizeof("message_stop") - 1,
      NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_STOP },
    { "ping", sizeof("ping") - 1, NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_PING },
    { "error", sizeof("error") - 1, NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_ERROR },
    { NULL, 0, 0 }
};


/*
 * Anthropic's error types.  The 4xx ones whose names OpenAI-compatible
 * servers use as well are kept; everything on Anthropic's side is a
 * "server_error" to an OpenAI client.
 */
static const ngx_http_ai_gateway_translate_errmap_t
    ngx_http_ai_gateway_translate_errmaps[] =
{
    { "invalid_request_error", 400, "invalid_request_error",
      "invalid_request_error" },
    { "authentication_error", 401, "authentication_error",
      "invalid_api_key" },
    { "billing_error", 402, "insufficient_quota", "insufficient_quota" },
    { "permission_error", 403, "permission_error", "permission_error" },
    { "not_found_error", 404, "not_found_error", "not_found_error" },
    { "request_too_large", 413, "invalid_request_error",
      "request_too_large" },
    { "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded" },
    { "api_error", 500, "server_error", "api_error" },
    { "timeout_error", 504, "server_error", "timeout_error" },
    { "overloaded_error", 529, "server_error", "overloaded_error" },
    { NULL, 0, NULL, NULL }
};

static const ngx_http_ai_gateway_translate_errmap_t
    ngx_http_ai_gateway_translate_errmap_4xx =
{
    NULL, 400, "invalid_request_error", "upstream_error"
};

static const ngx_http_ai_gateway_translate_errmap_t
    ngx_http_ai_gateway_translate_errmap_5xx =
{
    NULL, 500, "server_error", "upstream_error"
};


/* the buffer */


void
ngx_http_ai_gateway_translate_buf_init(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_translate_resize_pt resize, void *ctx)
{
    memset(b, 0, sizeof(ngx_http_ai_gateway_translate_buf_t));

    b->resize = resize;
    b->ctx = ctx;
}


void
ngx_http_ai_gateway_translate_buf_free(ngx_http_ai_gateway_translate_buf_t *b)
{
    if (b->p != NULL) {
        if (b->resize) {
            (void) b->resize(b->ctx, b->p, b->len, 0);

        } else {
            free(b->p);
        }
    }

    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = 0;
}


int
ngx_http_ai_gateway_translate_buf_room(ngx_http_ai_gateway_translate_buf_t *b,
    size_t n)
{
    return ngx_http_ai_gateway_translate_reserve(b, n) != NULL
           ? NGX_HTTP_AI_GATEWAY_TRANSLATE_OK
           : NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
}


/* room for n more bytes and the closing NUL, or NULL (b->failed is set) */

static unsigned char *
ngx_http_ai_gateway_translate_reserve(ngx_http_ai_gateway_translate_buf_t *b,
    size_t n)
{
    size_t   cap;
    void    *p;

    if (b->failed) {
        return NULL;
    }

    if (b->cap > b->len && b->cap - b->len > n) {
        return b->p + b->len;
    }

    if (n > ((size_t) -1) / 4 - b->len) {
        b->failed = 1;
        return NULL;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len <= n || cap <= b->len) {
        cap *= 2;
    }

    if (b->resize) {
        p = b->resize(b->ctx, b->p, b->p ? b->len : 0, cap);

    } else {
        p = realloc(b->p, cap);
    }

    if (p == NULL) {
        b->failed = 1;
        return NULL;
    }

    b->p = p;
    b->cap = cap;

    return b->p + b->len;
}


static void
ngx_http_ai_gateway_translate_add(ngx_http_ai_gateway_translate_buf_t *b,
    const unsigned char *p, size_t n)
{
    unsigned char  *d;

    d = ngx_http_ai_gateway_translate_reserve(b, n);
    if (d == NULL) {
        return;
    }

    if (n) {
        memcpy(d, p, n);
    }

    b->len += n;
    b->p[b->len] = '\0';
}


/*
 * The inside of a JSON string: '"', '\\' and control characters escaped,
 * everything else (UTF-8 included) as it is.  Our input comes from jansson,
 * which has checked the UTF-8.
 */

static void
ngx_http_ai_gateway_translate_esc(ngx_http_ai_gateway_translate_buf_t *b,
    const unsigned char *p, size_t n)
{
    size_t                k;
    unsigned              c;
    unsigned char        *d;
    const unsigned char  *end, *q;

    static const char     hex[] = "0123456789abcdef";

    end = p + n;

    while (p < end) {
        q = p;

        while (q < end && *q >= 0x20 && *q != '"' && *q != '\\') {
            q++;
        }

        if (q != p) {
            ngx_http_ai_gateway_translate_add(b, p, q - p);
        }

        if (q == end) {
            return;
        }

        c = *q;
        p = q + 1;

        d = ngx_http_ai_gateway_translate_reserve(b, 6);
        if (d == NULL) {
            return;
        }

        d[0] = '\\';
        k = 2;

        switch (c) {
        case '"':
        case '\\':
            d[1] = (unsigned char) c;
            break;
        case '\n':
            d[1] = 'n';
            break;
        case '\r':
            d[1] = 'r';
            break;
        case '\t':
            d[1] = 't';
            break;
        case '\b':
            d[1] = 'b';
            break;
        case '\f':
            d[1] = 'f';
            break;
        default:
            d[1] = 'u';
            d[2] = '0';
            d[3] = '0';
            d[4] = hex[c >> 4];
            d[5] = hex[c & 0xf];
            k = 6;
            break;
        }

        b->len += k;
        b->p[b->len] = '\0';
    }
}


static void
ngx_http_ai_gateway_translate_str(ngx_http_ai_gateway_translate_buf_t *b,
    const unsigned char *p, size_t n)
{
    ngx_http_ai_gateway_translate_lit(b, "\"");
    ngx_http_ai_gateway_translate_esc(b, p, n);
    ngx_http_ai_gateway_translate_lit(b, "\"");
}


/* a jansson string, NUL bytes included */

static void
ngx_http_ai_gateway_translate_jstr(ngx_http_ai_gateway_translate_buf_t *b,
    json_t *s)
{
    ngx_http_ai_gateway_translate_str(b,
                                (const unsigned char *) json_string_value(s),
                                json_string_length(s));
}


static void
ngx_http_ai_gateway_translate_int(ngx_http_ai_gateway_translate_buf_t *b,
    int64_t v)
{
    int   n;
    char  s[24];

    n = snprintf(s, sizeof(s), "%lld", (long long) v);

    ngx_http_ai_gateway_translate_add(b, (unsigned char *) s, n);
}


static void
ngx_http_ai_gateway_translate_uint(ngx_http_ai_gateway_translate_buf_t *b,
    uint64_t v)
{
    int   n;
    char  s[24];

    n = snprintf(s, sizeof(s), "%llu", (unsigned long long) v);

    ngx_http_ai_gateway_translate_add(b, (unsigned char *) s, n);
}


/*
 * The fewest digits that read back as the same double; a ".0" keeps an
 * integral value a real, as jansson does.  jansson has no NaN or infinity.
 */

static void
ngx_http_ai_gateway_translate_real(ngx_http_ai_gateway_translate_buf_t *b,
    double d)
{
    int   n, prec;
    char  s[40];

    for (prec = 15; /* void */; prec++) {
        n = snprintf(s, sizeof(s) - 2, "%.*g", prec, d);

        if (prec == 17 || strtod(s, NULL) == d) {
            break;
        }
    }

    if (strpbrk(s, ".eE") == NULL) {
        s[n++] = '.';
        s[n++] = '0';
    }

    ngx_http_ai_gateway_translate_add(b, (unsigned char *) s, n);
}


/* compact JSON of a jansson value; its depth is bounded by the parser's */

static void
ngx_http_ai_gateway_translate_json(ngx_http_ai_gateway_translate_buf_t *b,
    json_t *j)
{
    int          first;
    size_t       i;
    json_t      *v;
    const char  *key;

    switch (json_typeof(j)) {

    case JSON_OBJECT:
        ngx_http_ai_gateway_translate_lit(b, "{");
        first = 1;

        json_object_foreach(j, key, v) {
            if (!first) {
                ngx_http_ai_gateway_translate_lit(b, ",");
            }

            first = 0;
            ngx_http_ai_gateway_translate_cstr(b, key);
            ngx_http_ai_gateway_translate_lit(b, ":");
            ngx_http_ai_gateway_translate_json(b, v);
        }

        ngx_http_ai_gateway_translate_lit(b, "}");
        break;

    case JSON_ARRAY:
        ngx_http_ai_gateway_translate_lit(b, "[");

        json_array_foreach(j, i, v) {
            if (i) {
                ngx_http_ai_gateway_translate_lit(b, ",");
            }

            ngx_http_ai_gateway_translate_json(b, v);
        }

        ngx_http_ai_gateway_translate_lit(b, "]");
        break;

    case JSON_STRING:
        ngx_http_ai_gateway_translate_jstr(b, j);
        break;

    case JSON_INTEGER:
        ngx_http_ai_gateway_translate_int(b, json_integer_value(j));
        break;

    case JSON_REAL:
        ngx_http_ai_gateway_translate_real(b, json_real_value(j));
        break;

    case JSON_TRUE:
        ngx_http_ai_gateway_translate_lit(b, "true");
        break;

    case JSON_FALSE:
        ngx_http_ai_gateway_translate_lit(b, "false");
        break;

    default: /* JSON_NULL */
        ngx_http_ai_gateway_translate_lit(b, "null");
        break;
    }
}


/* a public function's last step: on failure, the buffer as it was */

static int
ngx_http_ai_gateway_translate_end(ngx_http_ai_gateway_translate_buf_t *b,
    size_t len0, int rc)
{
    if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_OK && b->failed) {
        rc = NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
    }

    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        b->len = len0;

        if (b->p != NULL) {
            b->p[len0] = '\0';
        }
    }

    return rc;
}


/* copies at most max bytes, never half a UTF-8 character */

static size_t
ngx_http_ai_gateway_translate_cut(unsigned char *dst, size_t max,
    const unsigned char *src, size_t n)
{
    if (n > max) {
        n = max;

        while (n > 0 && (src[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    memcpy(dst, src, n);

    return n;
}


/* NUL bytes are allowed in strings: "\u0000" is valid JSON */

static json_t *
ngx_http_ai_gateway_translate_load(const unsigned char *p, size_t len,
    json_error_t *err, int *rc)
{
    json_t  *root;

    root = json_loadb((const char *) p, len, JSON_ALLOW_NUL, err);

    if (root == NULL) {
        *rc = (json_error_code(err) == json_error_out_of_memory)
              ? NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM
              : NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    return root;
}


/* the request */


int
ngx_http_ai_gateway_translate_request(const unsigned char *body, size_t len,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int           rc;
    size_t        len0;
    json_t       *root;
    json_error_t  err;

    memset(req, 0, sizeof(ngx_http_ai_gateway_translate_request_t));

    len0 = out->len;
    out->failed = 0;

    root = ngx_http_ai_gateway_translate_load(body, len, &err, &rc);

    if (root == NULL) {
        if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID) {
            (void) ngx_http_ai_gateway_translate_invalid(req,
                       "the request body is not valid JSON: %s", err.text);
        }

        return rc;
    }

    rc = ngx_http_ai_gateway_translate_root(root, conf, req, out);

    json_decref(root);

    return ngx_http_ai_gateway_translate_end(out, len0, rc);
}


static int
ngx_http_ai_gateway_translate_invalid(
    ngx_http_ai_gateway_translate_request_t *req, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    (void) vsnprintf(req->error, sizeof(req->error), fmt, args);
    va_end(args);

    req->status = 400;

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
}


/*
 * The top-level fields are checked before anything is written, the
 * messages while they are written; the output is dropped on any error.
 */

static int
ngx_http_ai_gateway_translate_root(json_t *root,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int          rc, choice, no_parallel;
    size_t       i;
    double       t;
    json_t      *messages, *model, *v, *tools, *temperature, *top_p, *stop,
                *user;
    uint64_t     max;
    const char  *name, *tool;

    if (!json_is_object(root)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "the request body must be a JSON object");
    }

    messages = json_object_get(root, "messages");

    if (messages == NULL || json_is_null(messages)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' is a required property");
    }

    if (!json_is_array(messages)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' must be an array");
    }

    if (json_array_size(messages) == 0) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' must not be empty");
    }

    v = json_object_get(root, "n");

    if (v != NULL && !json_is_null(v)
        && !(json_is_integer(v) && json_integer_value(v) == 1))
    {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'n' must be 1: the fallback provider gives one choice");
    }

    v = json_object_get(root, "functions");

    if (v == NULL || json_is_null(v)) {
        v = json_object_get(root, "function_call");
    }

    if (v != NULL && !json_is_null(v)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'functions' and 'function_call' are not supported, "
                   "use 'tools' and 'tool_choice'");
    }

    model = json_object_get(root, "model");

    if (json_is_string(model)) {
        req->model_len = ngx_http_ai_gateway_translate_cut(req->model,
                             sizeof(req->model),
                             (const unsigned char *) json_string_value(model),
                             json_string_length(model));

    } else if (model != NULL && !json_is_null(model)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'model' must be a string");

    } else if (conf->model == NULL) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'model' is a required property");
    }

    /* max_completion_tokens replaces max_tokens in OpenAI's API */

    name = "max_completion_tokens";
    v = json_object_get(root, name);

    if (v == NULL || json_is_null(v)) {
        name = "max_tokens";
        v = json_object_get(root, name);
    }

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'%s' must be a positive integer", name);
        }

        max = (uint64_t) json_integer_value(v);

    } else {
        max = conf->default_max_tokens
              ? conf->default_max_tokens
              : NGX_HTTP_AI_GATEWAY_TRANSLATE_DEFAULT_MAX_TOKENS;
    }

    if (conf->max_tokens_limit && max > conf->max_tokens_limit) {
        max = conf->max_tokens_limit;
    }

    req->max_tokens = max;

    v = json_object_get(root, "stream");

    if (v != NULL && !json_is_null(v) && !json_is_boolean(v)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'stream' must be a boolean");
    }

    req->stream = json_is_true(v);

    v = json_object_get(root, "stream_options");

    if (json_is_object(v)) {
        req->include_usage = json_is_true(json_object_get(v,
                                                          "include_usage"));
    }

    temperature = json_object_get(root, "temperature");

    if (json_is_null(temperature)) {
        temperature = NULL;
    }

    t = 0;

    if (temperature != NULL) {
        t = json_number_value(temperature);

        if (!json_is_number(temperature) || t < 0 || t > 2) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'temperature' must be a number from 0 to 2");
        }
    }

    top_p = json_object_get(root, "top_p");

    if (json_is_null(top_p)) {
        top_p = NULL;
    }

    if (top_p != NULL && !json_is_number(top_p)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'top_p' must be a number");
    }

    stop = json_object_get(root, "stop");

    if (json_is_null(stop)) {
        stop = NULL;
    }

    if (json_is_array(stop)) {
        json_array_foreach(stop, i, v) {
            if (!json_is_string(v)) {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'stop' must be a string or an array of strings");
            }
        }

    } else if (stop != NULL && !json_is_string(stop)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'stop' must be a string or an array of strings");
    }

    user = json_object_get(root, "user");

    if (!json_is_string(user)) {
        user = json_object_get(root, "safety_identifier");

        if (!json_is_string(user)) {
            user = NULL;
        }
    }

    tools = json_object_get(root, "tools");

    if (json_is_null(tools)) {
        tools = NULL;
    }

    if (tools != NULL && !json_is_array(tools)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'tools' must be an array");
    }

    if (json_array_size(tools) == 0) {
        tools = NULL;
    }

    choice = ngx_http_ai_gateway_translate_tool_choice(root, &tool, req);
    if (choice < 0) {
        return choice;
    }

    no_parallel = json_is_false(json_object_get(root, "parallel_tool_calls"));

    /* the request */

    ngx_http_ai_gateway_translate_lit(out, "{\"model\":");

    if (conf->model != NULL) {
        ngx_http_ai_gateway_translate_str(out,
                                          (const unsigned char *) conf->model,
                                          conf->model_len);

    } else {
        ngx_http_ai_gateway_translate_jstr(out, model);
    }

    ngx_http_ai_gateway_translate_lit(out, ",\"max_tokens\":");
    ngx_http_ai_gateway_translate_uint(out, max);

    rc = ngx_http_ai_gateway_translate_messages(messages, req, out);
    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        return rc;
    }

    rc = ngx_http_ai_gateway_translate_system(messages, req, out);
    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        return rc;
    }

    /* Anthropic wants tools for a tool_choice: without them it is moot */

    if (tools != NULL) {
        rc = ngx_http_ai_gateway_translate_tools(tools, req, out);
        if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
            return rc;
        }

        if (no_parallel
            && choice == NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE_GIVEN)
        {
            choice = NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_AUTO;
        }

        switch (choice) {

        case NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_AUTO:
            ngx_http_ai_gateway_translate_lit(out,
                                        ",\"tool_choice\":{\"type\":\"auto\"");
            break;

        case NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_ANY:
            ngx_http_ai_gateway_translate_lit(out,
                                         ",\"tool_choice\":{\"type\":\"any\"");
            break;

        case NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE:
            /* nothing to run in parallel */
            no_parallel = 0;
            ngx_http_ai_gateway_translate_lit(out,
                                        ",\"tool_choice\":{\"type\":\"none\"");
            break;

        case NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_TOOL:
            ngx_http_ai_gateway_translate_lit(out,
                          ",\"tool_choice\":{\"type\":\"tool\",\"name\":");
            ngx_http_ai_gateway_translate_cstr(out, tool);
            break;

        default:
            break;
        }

        if (choice != NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE_GIVEN) {
            if (no_parallel) {
                ngx_http_ai_gateway_translate_lit(out,
                                       ",\"disable_parallel_tool_use\":true");
            }

            ngx_http_ai_gateway_translate_lit(out, "}");
        }
    }

    if (stop != NULL) {
        ngx_http_ai_gateway_translate_lit(out, ",\"stop_sequences\":");

        if (json_is_string(stop)) {
            ngx_http_ai_gateway_translate_lit(out, "[");
            ngx_http_ai_gateway_translate_jstr(out, stop);
            ngx_http_ai_gateway_translate_lit(out, "]");

        } else {
            ngx_http_ai_gateway_translate_json(out, stop);
        }
    }

    if (temperature != NULL) {
        ngx_http_ai_gateway_translate_lit(out, ",\"temperature\":");

        if (t > 1) {
            ngx_http_ai_gateway_translate_lit(out, "1.0");

        } else {
            ngx_http_ai_gateway_translate_json(out, temperature);
        }

    } else if (top_p != NULL) {
        ngx_http_ai_gateway_translate_lit(out, ",\"top_p\":");
        ngx_http_ai_gateway_translate_json(out, top_p);
    }

    if (req->stream) {
        ngx_http_ai_gateway_translate_lit(out, ",\"stream\":true");
    }

    if (user != NULL) {
        ngx_http_ai_gateway_translate_lit(out, ",\"metadata\":{\"user_id\":");
        ngx_http_ai_gateway_translate_jstr(out, user);
        ngx_http_ai_gateway_translate_lit(out, "}");
    }

    ngx_http_ai_gateway_translate_lit(out, "}");

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/* returns a _CHOICE_ value, or _INVALID */

static int
ngx_http_ai_gateway_translate_tool_choice(json_t *root, const char **name,
    ngx_http_ai_gateway_translate_request_t *req)
{
    json_t      *choice, *type, *fname;
    const char  *s;

    *name = NULL;

    choice = json_object_get(root, "tool_choice");

    if (choice == NULL || json_is_null(choice)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE_GIVEN;
    }

    if (json_is_string(choice)) {
        s = json_string_value(choice);

        if (strcmp(s, "auto") == 0) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_AUTO;
        }

        if (strcmp(s, "required") == 0) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_ANY;
        }

        if (strcmp(s, "none") == 0) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE;
        }

    } else if (json_is_object(choice)) {
        type = json_object_get(choice, "type");
        fname = json_object_get(json_object_get(choice, "function"),
                                "name");

        if (json_is_string(type)
            && strcmp(json_string_value(type), "function") == 0
            && json_is_string(fname))
        {
            *name = json_string_value(fname);
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_TOOL;
        }
    }

    return ngx_http_ai_gateway_translate_invalid(req,
               "'tool_choice' must be \"auto\", \"required\", \"none\" or "
               "{\"type\":\"function\",\"function\":{\"name\":...}}");
}


/* returns a _ROLE_ value, or _INVALID */

static int
ngx_http_ai_gateway_translate_role(json_t *m, size_t i,
    ngx_http_ai_gateway_translate_request_t *req)
{
    json_t      *role;
    const char  *s;

    if (!json_is_object(m)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu]' must be an object", i);
    }

    role = json_object_get(m, "role");

    if (!json_is_string(role)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].role' must be a string", i);
    }

    s = json_string_value(role);

    if (strcmp(s, "user") == 0) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_USER;
    }

    if (strcmp(s, "assistant") == 0) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT;
    }

    if (strcmp(s, "tool") == 0) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL;
    }

    if (strcmp(s, "system") == 0 || strcmp(s, "developer") == 0) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM;
    }

    if (strcmp(s, "function") == 0) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].role': \"function\" is not supported, "
                   "use \"tool\"", i);
    }

    return ngx_http_ai_gateway_translate_invalid(req,
               "'messages[%zu].role' is not one of \"system\", "
               "\"developer\", \"user\", \"assistant\", \"tool\"", i);
}


/*
 * Anthropic wants user and assistant messages in turn: a run of messages
 * of one Anthropic role (system messages left out, tool results counted as
 * user messages) becomes one message with the content blocks of all.
 */

static int
ngx_http_ai_gateway_translate_messages(json_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int      rc, role, r, run, first_block, assistant, calls;
    size_t   i, j, k, n, count, written;
    json_t  *m, *content, *v;

    n = json_array_size(messages);
    written = 0;

    ngx_http_ai_gateway_translate_lit(out, ",\"messages\":[");

    for (i = 0; i < n; i = j) {
        m = json_array_get(messages, i);

        role = ngx_http_ai_gateway_translate_role(m, i, req);
        if (role < 0) {
            return role;
        }

        if (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM) {
            j = i + 1;
            continue;
        }

        assistant = (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT);
        count = 0;

        for (j = i; j < n; j++) {
            r = ngx_http_ai_gateway_translate_role(json_array_get(messages, j),
                                                   j, req);
            if (r < 0) {
                return r;
            }

            if (r == NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM) {
                continue;
            }

            run = (r == NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT);

            if (run != assistant) {
                break;
            }

            count++;
        }

        if (written++) {
            ngx_http_ai_gateway_translate_lit(out, ",");
        }

        if (assistant) {
            ngx_http_ai_gateway_translate_lit(out,
                                    "{\"role\":\"assistant\",\"content\":");

        } else {
            ngx_http_ai_gateway_translate_lit(out,
                                    "{\"role\":\"user\",\"content\":");
        }

        content = json_object_get(m, "content");

        v = json_object_get(m, "tool_calls");
        calls = json_is_array(v) ? json_array_size(v) != 0
                                 : v != NULL && !json_is_null(v);

        v = json_object_get(m, "function_call");
        calls |= v != NULL && !json_is_null(v);

        /* a lone message with string content keeps its string */

        if (count == 1
            && role != NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL
            && json_is_string(content)
            && !(assistant && calls))
        {
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
            continue;
        }

        ngx_http_ai_gateway_translate_lit(out, "[");
        first_block = 1;

        for (k = i; k < j; k++) {
            m = json_array_get(messages, k);
            r = ngx_http_ai_gateway_translate_role(m, k, req);

            if (r == NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM) {
                continue;
            }

            rc = ngx_http_ai_gateway_translate_blocks(m, k, r, &first_block,
                                                      req, out);
            if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
                return rc;
            }
        }

        ngx_http_ai_gateway_translate_lit(out, "]}");
    }

    if (written == 0) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' must have a user or assistant message");
    }

    ngx_http_ai_gateway_translate_lit(out, "]");

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/* the content blocks of one message, after those already written */

static int
ngx_http_ai_gateway_translate_blocks(json_t *m, size_t i, int role,
    int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int      rc;
    size_t   k;
    json_t  *content, *id, *part, *text, *calls;

    content = json_object_get(m, "content");

    if (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL) {
        id = json_object_get(m, "tool_call_id");

        if (!json_is_string(id)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_call_id' must be a string", i);
        }

        if (!json_is_string(content) && !json_is_array(content)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].content' must be a string or an array",
                       i);
        }

        if (!*first) {
            ngx_http_ai_gateway_translate_lit(out, ",");
        }

        *first = 0;

        ngx_http_ai_gateway_translate_lit(out,
                              "{\"type\":\"tool_result\",\"tool_use_id\":");
        ngx_http_ai_gateway_translate_jstr(out, id);
        ngx_http_ai_gateway_translate_lit(out, ",\"content\":");

        if (json_is_string(content)) {
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        }

        ngx_http_ai_gateway_translate_lit(out, "[");

        json_array_foreach(content, k, part) {
            text = json_object_get(part, "text");

            if (!json_is_string(text)
                || !json_is_string(json_object_get(part, "type"))
                || strcmp(json_string_value(json_object_get(part, "type")),
                          "text") != 0)
            {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'messages[%zu].content[%zu]' must be a text part",
                           i, k);
            }

            if (k) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            ngx_http_ai_gateway_translate_lit(out,
                                              "{\"type\":\"text\",\"text\":");
            ngx_http_ai_gateway_translate_jstr(out, text);
            ngx_http_ai_gateway_translate_lit(out, "}");
        }

        ngx_http_ai_gateway_translate_lit(out, "]}");

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (json_is_string(content)) {

        /* Anthropic refuses empty text blocks */

        if (json_string_length(content)) {
            if (!*first) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            *first = 0;

            ngx_http_ai_gateway_translate_lit(out,
                                              "{\"type\":\"text\",\"text\":");
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
        }

    } else if (json_is_array(content)) {
        rc = ngx_http_ai_gateway_translate_parts(content, i, first, req, out);
        if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
            return rc;
        }

    } else if (content != NULL && !json_is_null(content)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content' must be a string or an array", i);

    } else if (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_USER) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content' is a required property", i);
    }

    if (role != NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (json_object_get(m, "function_call") != NULL
        && !json_is_null(json_object_get(m, "function_call")))
    {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].function_call' is not supported, "
                   "use 'tool_calls'", i);
    }

    calls = json_object_get(m, "tool_calls");

    if (calls == NULL || json_is_null(calls)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (!json_is_array(calls)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].tool_calls' must be an array", i);
    }

    return ngx_http_ai_gateway_translate_tool_calls(calls, i, first, req,
                                                    out);
}


static int
ngx_http_ai_gateway_translate_parts(json_t *content, size_t i, int *first,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int          rc;
    size_t       k;
    json_t      *part, *v, *url;
    const char  *type;

    json_array_foreach(content, k, part) {
        v = json_object_get(part, "type");

        if (!json_is_string(v)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].content[%zu].type' must be a string",
                       i, k);
        }

        type = json_string_value(v);

        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            v = json_object_get(part, type);

            if (!json_is_string(v)) {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'messages[%zu].content[%zu].%s' must be a string",
                           i, k, type);
            }

            if (json_string_length(v) == 0) {
                continue;
            }

            if (!*first) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            *first = 0;

            ngx_http_ai_gateway_translate_lit(out,
                                              "{\"type\":\"text\",\"text\":");
            ngx_http_ai_gateway_translate_jstr(out, v);
            ngx_http_ai_gateway_translate_lit(out, "}");
            continue;
        }

        if (strcmp(type, "image_url") == 0) {
            v = json_object_get(part, "image_url");
            url = json_is_object(v) ? json_object_get(v, "url") : v;

            if (!*first) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            *first = 0;

            rc = ngx_http_ai_gateway_translate_media(url, i, k, "image", req,
                                                     out);
            if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
                return rc;
            }

            continue;
        }

        if (strcmp(type, "file") == 0) {
            v = json_object_get(part, "file");
            url = json_object_get(v, "file_data");

            if (!json_is_string(url)) {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'messages[%zu].content[%zu].file': only "
                           "'file_data' is supported", i, k);
            }

            if (!*first) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            *first = 0;

            rc = ngx_http_ai_gateway_translate_media(url, i, k, "document",
                                                     req, out);
            if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
                return rc;
            }

            continue;
        }

        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content[%zu].type' is not supported by "
                   "the fallback provider", i, k);
    }

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/*
 * An image or a file: "data:<media type>[;param]*;base64,<data>" is
 * inline, an http(s) URL is Anthropic's to fetch.
 */

static int
ngx_http_ai_gateway_translate_media(json_t *url, size_t i, size_t k,
    const char *block, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    size_t                n, header;
    const unsigned char  *s, *comma, *semi;

    if (!json_is_string(url)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content[%zu]': the URL must be a string",
                   i, k);
    }

    s = (const unsigned char *) json_string_value(url);
    n = json_string_length(url);

    if (n > 5 && strncasecmp((const char *) s, "data:", 5) == 0) {
        comma = memchr(s, ',', n);

        if (comma == NULL) {
            goto bad;
        }

        header = comma - s;

        if (header < 5 + sizeof(";base64") - 1
            || strncasecmp((const char *) comma - (sizeof(";base64") - 1),
                           ";base64", sizeof(";base64") - 1) != 0)
        {
            goto bad;
        }

        semi = memchr(s + 5, ';', header - 5);

        if (semi == s + 5) {
            goto bad;
        }

        ngx_http_ai_gateway_translate_lit(out, "{\"type\":");
        ngx_http_ai_gateway_translate_cstr(out, block);
        ngx_http_ai_gateway_translate_lit(out,
                      ",\"source\":{\"type\":\"base64\",\"media_type\":");
        ngx_http_ai_gateway_translate_str(out, s + 5, semi - (s + 5));
        ngx_http_ai_gateway_translate_lit(out, ",\"data\":");
        ngx_http_ai_gateway_translate_str(out, comma + 1, n - header - 1);
        ngx_http_ai_gateway_translate_lit(out, "}}");

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if ((n > 8 && strncasecmp((const char *) s, "https://", 8) == 0)
        || (n > 7 && strncasecmp((const char *) s, "http://", 7) == 0))
    {
        ngx_http_ai_gateway_translate_lit(out, "{\"type\":");
        ngx_http_ai_gateway_translate_cstr(out, block);
        ngx_http_ai_gateway_translate_lit(out,
                                  ",\"source\":{\"type\":\"url\",\"url\":");
        ngx_http_ai_gateway_translate_jstr(out, url);
        ngx_http_ai_gateway_translate_lit(out, "}}");

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

bad:

    return ngx_http_ai_gateway_translate_invalid(req,
               "'messages[%zu].content[%zu]': the URL must be http(s) or "
               "a base64 data URL", i, k);
}


/* an assistant's tool calls: tool_use blocks, arguments parsed */

static int
ngx_http_ai_gateway_translate_tool_calls(json_t *calls, size_t i,
    int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                   rc;
    size_t                k, n;
    json_t               *call, *type, *id, *fn, *name, *args, *input;
    json_error_t          err;
    const unsigned char  *p;

    json_array_foreach(calls, k, call) {
        type = json_object_get(call, "type");
        id = json_object_get(call, "id");
        fn = json_object_get(call, "function");
        name = json_object_get(fn, "name");

        if (type != NULL
            && !(json_is_string(type)
                 && strcmp(json_string_value(type), "function") == 0))
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu].type' must be "
                       "\"function\"", i, k);
        }

        if (!json_is_string(id) || !json_is_string(name)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu]' needs an 'id' and a "
                       "'function.name'", i, k);
        }

        args = json_object_get(fn, "arguments");
        input = NULL;

        if (json_is_string(args)) {
            p = (const unsigned char *) json_string_value(args);
            n = json_string_length(args);

            /* some clients send "" for a call without arguments */

            while (n && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            {
                p++;
                n--;
            }

            if (n) {
                input = ngx_http_ai_gateway_translate_load(p, n, &err, &rc);

                if (input == NULL) {
                    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID) {
                        return rc;
                    }

                    return ngx_http_ai_gateway_translate_invalid(req,
                               "'messages[%zu].tool_calls[%zu].function."
                               "arguments' is not valid JSON: %s",
                               i, k, err.text);
                }
            }

        } else if (json_is_object(args)) {
            input = json_incref(args);

        } else if (args != NULL && !json_is_null(args)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu].function.arguments' "
                       "must be a string", i, k);
        }

        if (input != NULL && !json_is_object(input)) {
            json_decref(input);

            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu].function.arguments' "
                       "must be a JSON object", i, k);
        }

        if (!*first) {
            ngx_http_ai_gateway_translate_lit(out, ",");
        }

        *first = 0;

        ngx_http_ai_gateway_translate_lit(out,
                                          "{\"type\":\"tool_use\",\"id\":");
        ngx_http_ai_gateway_translate_jstr(out, id);
        ngx_http_ai_gateway_translate_lit(out, ",\"name\":");
        ngx_http_ai_gateway_translate_jstr(out, name);
        ngx_http_ai_gateway_translate_lit(out, ",\"input\":");

        if (input != NULL) {
            ngx_http_ai_gateway_translate_json(out, input);
            json_decref(input);

        } else {
            ngx_http_ai_gateway_translate_lit(out, "{}");
        }

        ngx_http_ai_gateway_translate_lit(out, "}");
    }

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/* the texts of system and developer messages, joined with blank lines */

static int
ngx_http_ai_gateway_translate_system(json_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int      opened;
    size_t   i, k, n, len;
    json_t  *m, *content, *part, *text, *one;

    opened = 0;
    n = json_array_size(messages);

    for (i = 0; i < n; i++) {
        m = json_array_get(messages, i);

        /* the roles were checked by the messages */

        if (ngx_http_ai_gateway_translate_role(m, i, req)
            != NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM)
        {
            continue;
        }

        content = json_object_get(m, "content");

        if (json_is_string(content)) {
            one = content;
            len = 1;

        } else if (json_is_array(content)) {
            one = NULL;
            len = json_array_size(content);

        } else {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].content' must be a string or an array",
                       i);
        }

        for (k = 0; k < len; k++) {
            text = one;

            if (text == NULL) {
                part = json_array_get(content, k);
                text = json_object_get(part, "text");

                if (!json_is_string(text)
                    || !json_is_string(json_object_get(part, "type"))
                    || strcmp(json_string_value(json_object_get(part, "type")),
                              "text") != 0)
                {
                    return ngx_http_ai_gateway_translate_invalid(req,
                               "'messages[%zu].content[%zu]' must be a text "
                               "part", i, k);
                }
            }

            if (json_string_length(text) == 0) {
                continue;
            }

            if (opened) {
                ngx_http_ai_gateway_translate_lit(out, "\\n\\n");

            } else {
                ngx_http_ai_gateway_translate_lit(out, ",\"system\":\"");
                opened = 1;
            }

            ngx_http_ai_gateway_translate_esc(out,
                                (const unsigned char *) json_string_value(text),
                                json_string_length(text));
        }
    }

    if (opened) {
        ngx_http_ai_gateway_translate_lit(out, "\"");
    }

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


static int
ngx_http_ai_gateway_translate_tools(json_t *tools,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    size_t   k;
    json_t  *tool, *type, *fn, *name, *desc, *params;

    ngx_http_ai_gateway_translate_lit(out, ",\"tools\":[");

    json_array_foreach(tools, k, tool) {
        type = json_object_get(tool, "type");
        fn = json_object_get(tool, "function");
        name = json_object_get(fn, "name");
        desc = json_object_get(fn, "description");
        params = json_object_get(fn, "parameters");

        if (!json_is_string(type)
            || strcmp(json_string_value(type), "function") != 0)
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].type' must be \"function\"", k);
        }

        if (!json_is_string(name)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].function.name' must be a string", k);
        }

        if (json_is_null(params)) {
            params = NULL;
        }

        if (params != NULL && !json_is_object(params)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].function.parameters' must be an object",
                       k);
        }

        if (k) {
            ngx_http_ai_gateway_translate_lit(out, ",");
        }

        ngx_http_ai_gateway_translate_lit(out, "{\"name\":");
        ngx_http_ai_gateway_translate_jstr(out, name);

        if (json_is_string(desc)) {
            ngx_http_ai_gateway_translate_lit(out, ",\"description\":");
            ngx_http_ai_gateway_translate_jstr(out, desc);
        }

        ngx_http_ai_gateway_translate_lit(out, ",\"input_schema\":");

        if (params != NULL) {
            ngx_http_ai_gateway_translate_json(out, params);

        } else {
            ngx_http_ai_gateway_translate_lit(out,
                                  "{\"type\":\"object\",\"properties\":{}}");
        }

        ngx_http_ai_gateway_translate_lit(out, "}");
    }

    ngx_http_ai_gateway_translate_lit(out, "]");

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/* the JSON answer */


int
ngx_http_ai_gateway_translate_response(const unsigned char *body, size_t len,
    int64_t created, const unsigned char *model, size_t model_len,
    ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                                   rc, text, tools;
    size_t                                i, len0;
    json_t                               *root, *content, *block, *type, *v,
                                         *id;
    uint64_t                              input, cache_read, cache_creation,
                                          output;
    json_error_t                          err;
    const char                           *s, *finish;
    ngx_http_ai_gateway_translate_buf_t   args;

    len0 = out->len;
    out->failed = 0;
    root = ngx_http_ai_gateway_translate_load(body, len, &err, &rc);
    if (root == NULL) {
        return rc;
    }

    content = json_object_get(root, "content");
    type = json_object_get(root, "type");

    if (!json_is_array(content)
        || (type != NULL
            && !(json_is_string(type)
                 && strcmp(json_string_value(type), "message") == 0)))
    {
        json_decref(root);
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    input = 0;
    cache_read = 0;
    cache_creation = 0;
    output = 0;

    v = json_object_get(root, "usage");

    ngx_http_ai_gateway_translate_read_usage(v, &input, &cache_read,
                                             &cache_creation, &output);

    if (u != NULL) {
        u->input_tokens = input + cache_read + cache_creation;
        u->output_tokens = output;
        u->cached_tokens = cache_read;
        u->found = json_is_object(v);
    }

    ngx_http_ai_gateway_translate_lit(out, "{\"id\":\"chatcmpl-");

    id = json_object_get(root, "id");

    if (json_is_string(id)) {
        s = json_string_value(id);
        i = (strncmp(s, "msg_", 4) == 0) ? 4 : 0;

        ngx_http_ai_gateway_translate_esc(out, (const unsigned char *) s + i,
                                          json_string_length(id) - i);
    }

    ngx_http_ai_gateway_translate_lit(out,
                          "\",\"object\":\"chat.completion\",\"created\":");
    ngx_http_ai_gateway_translate_int(out, created);
    ngx_http_ai_gateway_translate_lit(out, ",\"model\":");

    v = json_object_get(root, "model");

    if (json_is_string(v)) {
        ngx_http_ai_gateway_translate_jstr(out, v);

    } else {
        ngx_http_ai_gateway_translate_str(out, model, model ? model_len : 0);
    }

    ngx_http_ai_gateway_translate_lit(out,
        ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":");

    text = 0;
    tools = 0;

    json_array_foreach(content, i, block) {
        type = json_object_get(block, "type");

        if (!json_is_string(type)) {
            continue;
        }

        s = json_string_value(type);

        if (strcmp(s, "text") == 0) {
            v = json_object_get(block, "text");

            if (json_string_length(v)) {
                text++;
            }

        } else if (strcmp(s, "tool_use") == 0) {
            tools++;
        }
    }

    /* the text blocks, joined: blocks split around citations, say */

    if (text == 0 && tools) {
        ngx_http_ai_gateway_translate_lit(out, "null");

    } else {
        ngx_http_ai_gateway_translate_lit(out, "\"");

        json_array_foreach(content, i, block) {
            type = json_object_get(block, "type");
            v = json_object_get(block, "text");

            if (json_is_string(type)
                && strcmp(json_string_value(type), "text") == 0
                && json_is_string(v))
            {
                ngx_http_ai_gateway_translate_esc(out,
                                  (const unsigned char *) json_string_value(v),
                                  json_string_length(v));
            }
        }

        ngx_http_ai_gateway_translate_lit(out, "\"");
    }

    if (tools) {
        ngx_http_ai_gateway_translate_lit(out, ",\"tool_calls\":[");
        ngx_http_ai_gateway_translate_buf_init(&args, out->resize, out->ctx);
        tools = 0;

        json_array_foreach(content, i, block) {
            type = json_object_get(block, "type");

            if (!json_is_string(type)
                || strcmp(json_string_value(type), "tool_use") != 0)
            {
                continue;
            }

            if (tools++) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            ngx_http_ai_gateway_translate_lit(out, "{\"id\":");
            v = json_object_get(block, "id");
            ngx_http_ai_gateway_translate_str(out,
                                  (const unsigned char *) json_string_value(v),
                                  json_string_length(v));

            ngx_http_ai_gateway_translate_lit(out,
                         ",\"type\":\"function\",\"function\":{\"name\":");
            v = json_object_get(block, "name");
            ngx_http_ai_gateway_translate_str(out,
                                  (const unsigned char *) json_string_value(v),
                                  json_string_length(v));

            /* the arguments are a string: the input's compact JSON */

            ngx_http_ai_gateway_translate_lit(out, ",\"arguments\":");
            v = json_object_get(block, "input");
            args.len = 0;

            if (v != NULL) {
                ngx_http_ai_gateway_translate_json(&args, v);

            } else {
                ngx_http_ai_gateway_translate_lit(&args, "{}");
            }

            if (args.failed) {
                out->failed = 1;

            } else {
                ngx_http_ai_gateway_translate_str(out, args.p, args.len);
            }

            ngx_http_ai_gateway_translate_lit(out, "}}");
        }

        ngx_http_ai_gateway_translate_buf_free(&args);
        ngx_http_ai_gateway_translate_lit(out, "]");
    }

    ngx_http_ai_gateway_translate_lit(out,
                                  "},\"logprobs\":null,\"finish_reason\":");

    v = json_object_get(root, "stop_reason");
    finish = NULL;

    if (json_is_string(v)) {
        finish = ngx_http_ai_gateway_translate_finish_reason(
                     (const unsigned char *) json_string_value(v),
                     json_string_length(v));
    }

    if (finish != NULL) {
        ngx_http_ai_gateway_translate_cstr(out, finish);

    } else {
        ngx_http_ai_gateway_translate_lit(out, "null");
    }

    ngx_http_ai_gateway_translate_lit(out, "}],\"usage\":");
    ngx_http_ai_gateway_translate_prompt_usage(out,
                                         input + cache_read + cache_creation,
                                         output, cache_read);
    ngx_http_ai_gateway_translate_lit(out, "}");

    json_decref(root);

    return ngx_http_ai_gateway_translate_end(out, len0,
                                             NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
}


/* Anthropic's usage fields, those present */

static void
ngx_http_ai_gateway_translate_read_usage(json_t *usage, uint64_t *input,
    uint64_t *cache_read, uint64_t *cache_creation, uint64_t *output)
{
    json_t  *v;

    if (!json_is_object(usage)) {
        return;
    }

    v = json_object_get(usage, "input_tokens");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *input = json_integer_value(v);
    }

    v = json_object_get(usage, "cache_read_input_tokens");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *cache_read = json_integer_value(v);
    }

    v = json_object_get(usage, "cache_creation_input_tokens");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *cache_creation = json_integer_value(v);
    }

    v = json_object_get(usage, "output_tokens");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *output = json_integer_value(v);
    }
}


static void
ngx_http_ai_gateway_translate_prompt_usage(
    ngx_http_ai_gateway_translate_buf_t *b, uint64_t input, uint64_t output,
    uint64_t cached)
{
    ngx_http_ai_gateway_translate_lit(b, "{\"prompt_tokens\":");
    ngx_http_ai_gateway_translate_uint(b, input);
    ngx_http_ai_gateway_translate_lit(b, ",\"completion_tokens\":");
    ngx_http_ai_gateway_translate_uint(b, output);
    ngx_http_ai_gateway_translate_lit(b, ",\"total_tokens\":");
    ngx_http_ai_gateway_translate_uint(b, input + output);
    ngx_http_ai_gateway_translate_lit(b,
                         ",\"prompt_tokens_details\":{\"cached_tokens\":");
    ngx_http_ai_gateway_translate_uint(b, cached);
    ngx_http_ai_gateway_translate_lit(b, "}}");
}


const char *
ngx_http_ai_gateway_translate_finish_reason(const unsigned char *stop_reason,
    size_t len)
{
    if (stop_reason == NULL) {
        return NULL;
    }

#define ngx_http_ai_gateway_translate_is(s)                                   \
    (len == sizeof(s) - 1 && memcmp(stop_reason, s, len) == 0)

    if (ngx_http_ai_gateway_translate_is("max_tokens")
        || ngx_http_ai_gateway_translate_is("model_context_window_exceeded"))
    {
        return "length";
    }

    if (ngx_http_ai_gateway_translate_is("tool_use")) {
        return "tool_calls";
    }

    if (ngx_http_ai_gateway_translate_is("refusal")) {
        return "content_filter";
    }

#undef ngx_http_ai_gateway_translate_is

    /* end_turn, stop_sequence, pause_turn, and what comes later */

    return "stop";
}


/* errors */


unsigned
ngx_http_ai_gateway_translate_status(unsigned status)
{
    return (status == 529) ? 503 : status;
}


int
ngx_http_ai_gateway_translate_error(const unsigned char *body, size_t len,
    unsigned status, ngx_http_ai_gateway_translate_buf_t *out)
{
    int           rc;
    size_t        len0;
    json_t       *root;
    json_error_t  err;

    len0 = out->len;
    out->failed = 0;

    root = ngx_http_ai_gateway_translate_load(body, len, &err, &rc);

    if (root == NULL && rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM) {
        return rc;
    }

    /* anything but Anthropic's error object: the status says it all */

    ngx_http_ai_gateway_translate_error_obj(out,
                                         json_object_get(root, "error"),
                                         status);

    json_decref(root);

    return ngx_http_ai_gateway_translate_end(out, len0,
                                             NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
}


int
ngx_http_ai_gateway_translate_error_json(
    ngx_http_ai_gateway_translate_buf_t *out, const char *message, size_t len,
    const char *type, const char *code)
{
    size_t  len0;

    len0 = out->len;
    out->failed = 0;

    ngx_http_ai_gateway_translate_lit(out, "{\"error\":{\"message\":");
    ngx_http_ai_gateway_translate_str(out, (const unsigned char *) message,
                                      len);
    ngx_http_ai_gateway_translate_lit(out, ",\"type\":");
    ngx_http_ai_gateway_translate_cstr(out, type);
    ngx_http_ai_gateway_translate_lit(out, ",\"code\":");
    ngx_http_ai_gateway_translate_cstr(out, code);
    ngx_http_ai_gateway_translate_lit(out, "}}");

    return ngx_http_ai_gateway_translate_end(out, len0,
                                             NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
}


/* by Anthropic's type, else by the status (0: unknown) */

static const ngx_http_ai_gateway_translate_errmap_t *
ngx_http_ai_gateway_translate_errmap(const char *type, unsigned status)
{
    const ngx_http_ai_gateway_translate_errmap_t  *e;

    for (e = ngx_http_ai_gateway_translate_errmaps; e->anthropic; e++) {
        if (type != NULL ? strcmp(type, e->anthropic) == 0
                         : status == e->status)
        {
            return e;
        }
    }

    if (status >= 400 && status < 500) {
        return &ngx_http_ai_gateway_translate_errmap_4xx;
    }

    return &ngx_http_ai_gateway_translate_errmap_5xx;
}


/* Anthropic's {"type","message"} error object (or NULL) -> OpenAI's */

static void
ngx_http_ai_gateway_translate_error_obj(ngx_http_ai_gateway_translate_buf_t *b,
    json_t *err, unsigned status)
{
    int                                            n;
    json_t                                        *type, *message;
    const char                                    *code;
    char                                           text[80];
    const ngx_http_ai_gateway_translate_errmap_t  *e;

    type = json_object_get(err, "type");
    message = json_object_get(err, "message");

    if (!json_is_string(type)) {
        type = NULL;
    }

    e = ngx_http_ai_gateway_translate_errmap(type ? json_string_value(type)
                                                  : NULL, status);

    /* OpenAI clients look for this code to shorten the conversation */

    code = e->code;

    if (type != NULL && e->anthropic == NULL) {
        code = json_string_value(type);
    }

    if (json_is_string(message)
        && strncmp(json_string_value(message), "prompt is too long",
                   sizeof("prompt is too long") - 1) == 0)
    {
        code = "context_length_exceeded";
    }

    ngx_http_ai_gateway_translate_lit(b, "{\"error\":{\"message\":");

    if (json_is_string(message)) {
        ngx_http_ai_gateway_translate_jstr(b, message);

    } else {
        if (status) {
            n = snprintf(text, sizeof(text),
                         "the fallback provider failed with status %u",
                         status);

        } else {
            n = snprintf(text, sizeof(text), "the fallback provider failed");
        }

        ngx_http_ai_gateway_translate_str(b, (unsigned char *) text, n);
    }

    ngx_http_ai_gateway_translate_lit(b, ",\"type\":");
    ngx_http_ai_gateway_translate_cstr(b, e->type);
    ngx_http_ai_gateway_translate_lit(b, ",\"code\":");
    ngx_http_ai_gateway_translate_cstr(b, code);
    ngx_http_ai_gateway_translate_lit(b, "}}");
}


/* the stream */


void
ngx_http_ai_gateway_translate_stream_init(
    ngx_http_ai_gateway_translate_stream_t *st, int64_t created,
    unsigned include_usage, const unsigned char *model, size_t model_len)
{
    memset(st, 0, sizeof(ngx_http_ai_gateway_translate_stream_t));

    st->created = created;
    st->include_usage = include_usage ? 1 : 0;
    st->tool_block = -1;

    if (model != NULL) {
        st->model_len = ngx_http_ai_gateway_translate_cut(st->model,
                                                          sizeof(st->model),
                                                          model, model_len);
    }
}


int
ngx_http_ai_gateway_translate_stream_feed(
    ngx_http_ai_gateway_translate_stream_t *st, const unsigned char *name,
    size_t name_len, const unsigned char *data, size_t data_len,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                                           rc;
    size_t                                        len0;
    json_t                                       *root, *v;
    unsigned                                      kind;
    json_error_t                                  err;
    const ngx_http_ai_gateway_translate_event_t  *e;

    if (st->done) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    len0 = out->len;
    out->failed = 0;
    root = NULL;

    if (name_len == 0) {
        root = ngx_http_ai_gateway_translate_load(data, data_len, &err, &rc);
        if (root == NULL) {
            return rc;
        }

        v = json_object_get(root, "type");

        if (json_is_string(v)) {
            name = (const unsigned char *) json_string_value(v);
            name_len = json_string_length(v);
        }
    }

    kind = NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_OTHER;

    for (e = ngx_http_ai_gateway_translate_events; e->name; e++) {
        if (name_len == e->len && memcmp(name, e->name, e->len) == 0) {
            kind = e->kind;
            break;
        }
    }

    /* the events that make nothing are not parsed: most pings */

    switch (kind) {

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_OTHER:
    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_PING:
    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_STOP:
        json_decref(root);
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_STOP:
        json_decref(root);
        ngx_http_ai_gateway_translate_message_stop(st, out);
        return ngx_http_ai_gateway_translate_end(out, len0,
                                           NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);

    default:
        break;
    }

    if (root == NULL
        && kind == NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_DELTA
        && ngx_http_ai_gateway_translate_fast_delta(st, data, data_len, out))
    {
        return ngx_http_ai_gateway_translate_end(out, len0,
                                           NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
    }

    if (root == NULL) {
        root = ngx_http_ai_gateway_translate_load(data, data_len, &err, &rc);
        if (root == NULL) {
            return rc;
        }
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    switch (kind) {

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_START:
        rc = ngx_http_ai_gateway_translate_message_start(st, root, out);
        break;

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_START:
        rc = ngx_http_ai_gateway_translate_block_start(st, root, out);
        break;

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_DELTA:
        rc = ngx_http_ai_gateway_translate_block_delta(st, root, out);
        break;

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_DELTA:
        rc = ngx_http_ai_gateway_translate_message_delta(st, root, out);
        break;

    default: /* NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_ERROR */
        ngx_http_ai_gateway_translate_lit(out, "data: ");
        ngx_http_ai_gateway_translate_error_obj(out,
                                             json_object_get(root, "error"),
                                             0);
        ngx_http_ai_gateway_translate_lit(out, "\n\ndata: [DONE]\n\n");
        rc = NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        break;
    }

    json_decref(root);

    rc = ngx_http_ai_gateway_translate_end(out, len0, rc);

    if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_OK
        && kind == NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_ERROR)
    {
        st->done = 1;
    }

    return rc;
}


int
ngx_http_ai_gateway_translate_stream_fail(
    ngx_http_ai_gateway_translate_stream_t *st, const char *message,
    size_t len, ngx_http_ai_gateway_translate_buf_t *out)
{
    int     rc;
    size_t  len0;

    if (st->done) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    len0 = out->len;
    out->failed = 0;

    ngx_http_ai_gateway_translate_lit(out, "data: ");

    rc = ngx_http_ai_gateway_translate_error_json(out, message, len,
                                                  "server_error",
                                                  "upstream_error");
    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        out->failed = 1;
    }

    ngx_http_ai_gateway_translate_lit(out, "\n\ndata: [DONE]\n\n");

    rc = ngx_http_ai_gateway_translate_end(out, len0,
                                           NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);

    if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        st->done = 1;
    }

    return rc;
}


void
ngx_http_ai_gateway_translate_stream_usage(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_usage_t *u)
{
    u->input_tokens = st->input_tokens + st->cache_read + st->cache_creation;
    u->output_tokens = st->output_tokens;
    u->cached_tokens = st->cache_read;
    u->found = st->usage_found;
}


/* "data: {" and the fields every chunk has */

static void
ngx_http_ai_gateway_translate_head(ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    ngx_http_ai_gateway_translate_lit(b, "data: {\"id\":\"chatcmpl-");
    ngx_http_ai_gateway_translate_esc(b, st->id, st->id_len);
    ngx_http_ai_gateway_translate_lit(b,
                   "\",\"object\":\"chat.completion.chunk\",\"created\":");
    ngx_http_ai_gateway_translate_int(b, st->created);
    ngx_http_ai_gateway_translate_lit(b, ",\"model\":");
    ngx_http_ai_gateway_translate_str(b, st->model, st->model_len);
}


/* a chunk up to its delta object, which the caller writes */

static void
ngx_http_ai_gateway_translate_delta(ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    ngx_http_ai_gateway_translate_head(st, b);
    ngx_http_ai_gateway_translate_lit(b,
                                  ",\"choices\":[{\"index\":0,\"delta\":");
}


static void
ngx_http_ai_gateway_translate_delta_end(ngx_http_ai_gateway_translate_buf_t *b,
    const char *finish)
{
    ngx_http_ai_gateway_translate_lit(b,
                                  ",\"logprobs\":null,\"finish_reason\":");

    if (finish != NULL) {
        ngx_http_ai_gateway_translate_cstr(b, finish);

    } else {
        ngx_http_ai_gateway_translate_lit(b, "null");
    }

    ngx_http_ai_gateway_translate_lit(b, "}]}\n\n");
}


static void
ngx_http_ai_gateway_translate_content(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b, json_t *text)
{
    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b, "{\"content\":");
    ngx_http_ai_gateway_translate_jstr(b, text);
    ngx_http_ai_gateway_translate_lit(b, "}");
    ngx_http_ai_gateway_translate_delta_end(b, NULL);
}


static int
ngx_http_ai_gateway_translate_message_start(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    size_t                skip;
    json_t               *msg, *v;
    const unsigned char  *s;

    msg = json_object_get(root, "message");

    if (!json_is_object(msg)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    v = json_object_get(msg, "id");

    if (json_is_string(v)) {
        s = (const unsigned char *) json_string_value(v);
        skip = (strncmp((const char *) s, "msg_", 4) == 0) ? 4 : 0;

        st->id_len = ngx_http_ai_gateway_translate_cut(st->id,
                                                       sizeof(st->id),
                                                       s + skip,
                                                       json_string_length(v)
                                                       - skip);
    }

    v = json_object_get(msg, "model");

    if (json_is_string(v)) {
        st->model_len = ngx_http_ai_gateway_translate_cut(st->model,
                            sizeof(st->model),
                            (const unsigned char *) json_string_value(v),
                            json_string_length(v));
    }

    v = json_object_get(msg, "usage");

    if (json_is_object(v)) {
        st->usage_found = 1;
        ngx_http_ai_gateway_translate_read_usage(v, &st->input_tokens,
                                                 &st->cache_read,
                                                 &st->cache_creation,
                                                 &st->output_tokens);
    }

    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b,
                                  "{\"role\":\"assistant\",\"content\":\"\"}");
    ngx_http_ai_gateway_translate_delta_end(b, NULL);

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


static int
ngx_http_ai_gateway_translate_block_start(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    json_t      *block, *type, *id, *name, *text;
    const char  *s;

    block = json_object_get(root, "content_block");
    type = json_object_get(block, "type");

    if (!json_is_string(type)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    s = json_string_value(type);
    st->in_tool = 0;

    if (strcmp(s, "tool_use") == 0) {
        id = json_object_get(block, "id");
        name = json_object_get(block, "name");

        if (!json_is_string(id) || !json_is_string(name)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        /*
         * Anthropic streams one block after the other, never interleaved:
         * the block open now is the one its deltas are for.
         */

        st->in_tool = 1;
        st->tool_block = json_integer_value(json_object_get(root, "index"));
        st->tool_index = st->tools++;

        ngx_http_ai_gateway_translate_delta(st, b);
        ngx_http_ai_gateway_translate_lit(b, "{\"tool_calls\":[{\"index\":");
        ngx_http_ai_gateway_translate_uint(b, st->tool_index);
        ngx_http_ai_gateway_translate_lit(b, ",\"id\":");
        ngx_http_ai_gateway_translate_jstr(b, id);
        ngx_http_ai_gateway_translate_lit(b,
                         ",\"type\":\"function\",\"function\":{\"name\":");
        ngx_http_ai_gateway_translate_jstr(b, name);
        ngx_http_ai_gateway_translate_lit(b, ",\"arguments\":\"\"}}]}");
        ngx_http_ai_gateway_translate_delta_end(b, NULL);

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (strcmp(s, "text") == 0) {
        text = json_object_get(block, "text");

        if (json_string_length(text)) {
            ngx_http_ai_gateway_translate_content(st, b, text);
        }
    }

    /* thinking, redacted_thinking, server tools: not for an OpenAI client */

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/*
 * Nearly every event of a stream is a text or tool input delta, and
 * Anthropic writes them in one compact form, keys in one order:
 *   {"type":"content_block_delta","index":N,"delta":{"type":"text_delta",
 *   "text":"..."}}
 * (or "input_json_delta" and "partial_json").  Such an event is taken
 * without a parse (a tree would cost four times the rest): the string,
 * once checked to be valid JSON, goes to the output as it is.  Returns 1
 * when the event was taken, 0 when the general path must see it.
 */

static int
ngx_http_ai_gateway_translate_fast_delta(
    ngx_http_ai_gateway_translate_stream_t *st, const unsigned char *p,
    size_t len, ngx_http_ai_gateway_translate_buf_t *b)
{
    int                   text;
    int64_t               index;
    const unsigned char  *end, *s, *e;

    static const char     head[] =
        "{\"type\":\"content_block_delta\",\"index\":";
    static const char     text_delta[] =
        ",\"delta\":{\"type\":\"text_delta\",\"text\":\"";
    static const char     json_delta[] =
        ",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"";

    end = p + len;

    if (len < sizeof(head) - 1 || memcmp(p, head, sizeof(head) - 1) != 0) {
        return 0;
    }

    p += sizeof(head) - 1;

    if (p == end || *p < '0' || *p > '9') {
        return 0;
    }

    index = 0;

    while (p < end && *p >= '0' && *p <= '9') {
        if (index >= 100000000) {
            return 0;
        }

        index = index * 10 + (*p++ - '0');
    }

    if ((size_t) (end - p) >= sizeof(text_delta) - 1
        && memcmp(p, text_delta, sizeof(text_delta) - 1) == 0)
    {
        text = 1;
        p += sizeof(text_delta) - 1;

    } else if ((size_t) (end - p) >= sizeof(json_delta) - 1
               && memcmp(p, json_delta, sizeof(json_delta) - 1) == 0)
    {
        text = 0;
        p += sizeof(json_delta) - 1;

    } else {
        return 0;
    }

    s = p;
    e = ngx_http_ai_gateway_translate_scan(p, end);

    if (e == NULL || end - e != 3 || memcmp(e, "\"}}", 3) != 0) {
        return 0;
    }

    /* as the general path: empty pieces, other blocks' input: nothing */

    if (e == s) {
        return 1;
    }

    if (text) {
        ngx_http_ai_gateway_translate_delta(st, b);
        ngx_http_ai_gateway_translate_lit(b, "{\"content\":\"");
        ngx_http_ai_gateway_translate_add(b, s, e - s);
        ngx_http_ai_gateway_translate_lit(b, "\"}");
        ngx_http_ai_gateway_translate_delta_end(b, NULL);

        return 1;
    }

    if (!st->in_tool || index != st->tool_block) {
        return 1;
    }

    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b, "{\"tool_calls\":[{\"index\":");
    ngx_http_ai_gateway_translate_uint(b, st->tool_index);
    ngx_http_ai_gateway_translate_lit(b, ",\"function\":{\"arguments\":\"");
    ngx_http_ai_gateway_translate_add(b, s, e - s);
    ngx_http_ai_gateway_translate_lit(b, "\"}}]}");
    ngx_http_ai_gateway_translate_delta_end(b, NULL);

    return 1;
}


/*
 * The inside of a JSON string, from p: returns its closing quote, or NULL
 * when it is not one jansson would take as it is (unescaped control
 * characters, bad escapes, invalid UTF-8) or is something we would rather
 * not pass on (\u escapes of surrogates: jansson checks their pairing).
 */

static const unsigned char *
ngx_http_ai_gateway_translate_scan(const unsigned char *p,
    const unsigned char *end)
{
    unsigned  c, n, lo, hi;

    while (p < end) {
        c = *p;

        if (c == '"') {
            return p;
        }

        if (c < 0x20) {
            return NULL;
        }

        if (c < 0x80 && c != '\\') {
            p++;
            continue;
        }

        if (c == '\\') {
            if (end - p < 2) {
                return NULL;
            }

            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p += 2;
                continue;

            case 'u':
                if (end - p < 6) {
                    return NULL;
                }

                for (n = 2; n < 6; n++) {
                    c = p[n];

                    if (!((c >= '0' && c <= '9')
                          || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')))
                    {
                        return NULL;
                    }
                }

                /* \uD800-\uDFFF */
                if ((p[2] | 0x20) == 'd' && p[3] >= '8') {
                    return NULL;
                }

                p += 6;
                continue;

            default:
                return NULL;
            }
        }

        /* UTF-8: the shortest form, no surrogates, at most U+10FFFF */

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = (c == 0xe0) ? 0xa0 : 0x80;
            hi = (c == 0xed) ? 0x9f : 0xbf;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = (c == 0xf0) ? 0x90 : 0x80;
            hi = (c == 0xf4) ? 0x8f : 0xbf;

        } else {
            return NULL;
        }

        if ((size_t) (end - p) <= n || p[1] < lo || p[1] > hi) {
            return NULL;
        }

        for (c = 2; c <= n; c++) {
            if (p[c] < 0x80 || p[c] > 0xbf) {
                return NULL;
            }
        }

        p += n + 1;
    }

    return NULL;
}


static int
ngx_http_ai_gateway_translate_block_delta(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    json_t      *delta, *type, *v;
    const char  *s;

    delta = json_object_get(root, "delta");
    type = json_object_get(delta, "type");

    if (!json_is_string(type)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    s = json_string_value(type);

    if (strcmp(s, "text_delta") == 0) {
        v = json_object_get(delta, "text");

        if (!json_is_string(v)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        if (json_string_length(v)) {
            ngx_http_ai_gateway_translate_content(st, b, v);
        }

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (strcmp(s, "input_json_delta") == 0) {
        v = json_object_get(delta, "partial_json");

        if (!json_is_string(v)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        /* a server tool's input, or the empty first piece: nothing */

        if (!st->in_tool
            || json_integer_value(json_object_get(root, "index"))
               != st->tool_block
            || json_string_length(v) == 0)
        {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        }

        ngx_http_ai_gateway_translate_delta(st, b);
        ngx_http_ai_gateway_translate_lit(b, "{\"tool_calls\":[{\"index\":");
        ngx_http_ai_gateway_translate_uint(b, st->tool_index);
        ngx_http_ai_gateway_translate_lit(b, ",\"function\":{\"arguments\":");
        ngx_http_ai_gateway_translate_jstr(b, v);
        ngx_http_ai_gateway_translate_lit(b, "}}]}");
        ngx_http_ai_gateway_translate_delta_end(b, NULL);
    }

    /* thinking_delta, signature_delta, citations_delta: nothing */

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


static int
ngx_http_ai_gateway_translate_message_delta(
    ngx_http_ai_gateway_translate_stream_t *st, json_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    json_t      *delta, *v;
    const char  *finish;

    delta = json_object_get(root, "delta");

    if (!json_is_object(delta)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    /* output_tokens here is the total; newer streams repeat the input too */

    v = json_object_get(root, "usage");

    if (json_is_object(v)) {
        st->usage_found = 1;
        ngx_http_ai_gateway_translate_read_usage(v, &st->input_tokens,
                                                 &st->cache_read,
                                                 &st->cache_creation,
                                                 &st->output_tokens);
    }

    v = json_object_get(delta, "stop_reason");

    if (!json_is_string(v)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    finish = ngx_http_ai_gateway_translate_finish_reason(
                 (const unsigned char *) json_string_value(v),
                 json_string_length(v));

    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b, "{}");
    ngx_http_ai_gateway_translate_delta_end(b, finish);

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


static void
ngx_http_ai_gateway_translate_message_stop(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    if (st->include_usage) {
        ngx_http_ai_gateway_translate_head(st, b);
        ngx_http_ai_gateway_translate_lit(b, ",\"choices\":[],\"usage\":");
        ngx_http_ai_gateway_translate_prompt_usage(b,
                          st->input_tokens + st->cache_read
                          + st->cache_creation,
                          st->output_tokens, st->cache_read);
        ngx_http_ai_gateway_translate_lit(b, "}\n\n");
    }

    ngx_http_ai_gateway_translate_lit(b, "data: [DONE]\n\n");

    if (!b->failed) {
        st->done = 1;
    }
}
