
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * OpenAI Chat Completions <-> Anthropic Messages (see the header for the
 * mapping decisions).
 *
 * Input is parsed by ngx_http_ai_gateway_jtree.c into a tree in an arena:
 * its first 8 KiB on the stack, which is all a chat request of a few KiB or
 * an SSE event needs, more from the output buffer's allocator (nginx: the
 * request's pool), all freed when the call returns.  Strings are decoded
 * only when they must be, and those whose escapes are the writer's own
 * (most: plain text, "\n", "\"") are copied to the output as they are.
 *
 * Output is never built as a tree: it is
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


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_ai_gateway_jtree.h"
#include "ngx_http_ai_gateway_translate.h"


/* the arena's first block, on the stack */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_ARENA  8192


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


static inline unsigned char *ngx_http_ai_gateway_translate_reserve(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n);
static unsigned char *ngx_http_ai_gateway_translate_grow(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n);
static inline void ngx_http_ai_gateway_translate_add(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_esc(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_str(
    ngx_http_ai_gateway_translate_buf_t *b, const unsigned char *p,
    size_t n);
static void ngx_http_ai_gateway_translate_jesc(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *s);
static void ngx_http_ai_gateway_translate_jstr(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *s);
static void ngx_http_ai_gateway_translate_cjstr(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *s);
static const unsigned char *ngx_http_ai_gateway_translate_sval(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *s,
    size_t *len);
static void ngx_http_ai_gateway_translate_int(
    ngx_http_ai_gateway_translate_buf_t *b, int64_t v);
static void ngx_http_ai_gateway_translate_uint(
    ngx_http_ai_gateway_translate_buf_t *b, uint64_t v);
static void ngx_http_ai_gateway_translate_real(
    ngx_http_ai_gateway_translate_buf_t *b, double d);
static int ngx_http_ai_gateway_translate_short_real(
    ngx_http_ai_gateway_jtree_t *j);
static void ngx_http_ai_gateway_translate_json(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *j);
static int ngx_http_ai_gateway_translate_end(
    ngx_http_ai_gateway_translate_buf_t *b, size_t len0, int rc);
static size_t ngx_http_ai_gateway_translate_cut(unsigned char *dst,
    size_t max, const unsigned char *src, size_t n);
static void ngx_http_ai_gateway_translate_arena(
    ngx_http_ai_gateway_jtree_arena_t *a, void *buf, size_t size,
    ngx_http_ai_gateway_translate_buf_t *out);
static void *ngx_http_ai_gateway_translate_arena_alloc(void *ctx,
    size_t size);
static void ngx_http_ai_gateway_translate_arena_free(void *ctx, void *p,
    size_t size);
static ngx_http_ai_gateway_jtree_t *ngx_http_ai_gateway_translate_load(
    const unsigned char *p, size_t len, ngx_http_ai_gateway_jtree_arena_t *a,
    ngx_http_ai_gateway_jtree_error_t *err, int *rc);

static int ngx_http_ai_gateway_translate_invalid(
    ngx_http_ai_gateway_translate_request_t *req, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int ngx_http_ai_gateway_translate_root(
    ngx_http_ai_gateway_jtree_t *root,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a);
static int ngx_http_ai_gateway_translate_tool_choice(
    ngx_http_ai_gateway_jtree_t *root, ngx_http_ai_gateway_jtree_t **name,
    ngx_http_ai_gateway_translate_request_t *req);
static int ngx_http_ai_gateway_translate_role(ngx_http_ai_gateway_jtree_t *m,
    size_t i, ngx_http_ai_gateway_translate_request_t *req);
static int ngx_http_ai_gateway_translate_messages(
    ngx_http_ai_gateway_jtree_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a);
static int ngx_http_ai_gateway_translate_blocks(
    ngx_http_ai_gateway_jtree_t *m, size_t i, int role, int *first,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a);
static int ngx_http_ai_gateway_translate_parts(
    ngx_http_ai_gateway_jtree_t *content, size_t i, int *first,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_media(
    ngx_http_ai_gateway_jtree_t *url, size_t i, size_t k, const char *block,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_tool_calls(
    ngx_http_ai_gateway_jtree_t *calls, size_t i, int *first,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a);
static int ngx_http_ai_gateway_translate_system(
    ngx_http_ai_gateway_jtree_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);
static int ngx_http_ai_gateway_translate_tools(
    ngx_http_ai_gateway_jtree_t *tools,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);

static void ngx_http_ai_gateway_translate_read_usage(
    ngx_http_ai_gateway_jtree_t *usage, uint64_t *input,
    uint64_t *cache_read, uint64_t *cache_creation, uint64_t *output);
static void ngx_http_ai_gateway_translate_prompt_usage(
    ngx_http_ai_gateway_translate_buf_t *b, uint64_t input, uint64_t output,
    uint64_t cached);
static const ngx_http_ai_gateway_translate_errmap_t *
    ngx_http_ai_gateway_translate_errmap(ngx_http_ai_gateway_jtree_t *type,
    unsigned status);
static void ngx_http_ai_gateway_translate_error_obj(
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *err,
    unsigned status);

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
    ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *text);
static int ngx_http_ai_gateway_translate_message_start(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_block_start(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_fast_delta(
    ngx_http_ai_gateway_translate_stream_t *st, const unsigned char *p,
    size_t len, ngx_http_ai_gateway_translate_buf_t *b);
static const unsigned char *ngx_http_ai_gateway_translate_scan(
    const unsigned char *p, const unsigned char *end);
static int ngx_http_ai_gateway_translate_block_delta(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b);
static void ngx_http_ai_gateway_translate_block_stop(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b);
static int ngx_http_ai_gateway_translate_message_delta(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
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
ngx_http_ai_gateway_translate_buf_reserve(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n)
{
    (void) ngx_http_ai_gateway_translate_reserve(b, n);
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


/*
 * Room for n more bytes and the closing NUL, or NULL (b->failed is set).
 * Inline: a translation writes in small pieces, a hundred and more for a
 * chat request, and nearly all of them fit.
 */

static inline __attribute__((always_inline)) unsigned char *
ngx_http_ai_gateway_translate_reserve(ngx_http_ai_gateway_translate_buf_t *b,
    size_t n)
{
    if (b->cap > b->len && b->cap - b->len > n && !b->failed) {
        return b->p + b->len;
    }

    return ngx_http_ai_gateway_translate_grow(b, n);
}


static unsigned char *
ngx_http_ai_gateway_translate_grow(ngx_http_ai_gateway_translate_buf_t *b,
    size_t n)
{
    size_t   cap;
    void    *p;

    if (b->failed) {
        return NULL;
    }

    if (n > ((size_t) -1) / 4 - b->len) {
        b->failed = 1;
        return NULL;
    }

    if (b->cap == 0) {
        /* the first size as asked (_buf_reserve()), not rounded up to a
         * power of two: pool memory is not given back */
        cap = (n < 256) ? 256 : n + 1;

    } else {
        cap = b->cap;

        while (cap - b->len <= n || cap <= b->len) {
            cap *= 2;
        }
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


/* inline: most pieces are literals of a few bytes, copied in place */

static inline __attribute__((always_inline)) void
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
 * everything else (UTF-8 included) as it is.  Our input comes from the
 * parser, which has checked the UTF-8.
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


/*
 * A parsed string, NUL bytes included: quoted (jstr) or not (jesc).  Not a
 * string: "" (as jansson's NULL value of length 0 made it).
 */

static void
ngx_http_ai_gateway_translate_jstr(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *s)
{
    ngx_http_ai_gateway_translate_lit(b, "\"");
    ngx_http_ai_gateway_translate_jesc(b, s);
    ngx_http_ai_gateway_translate_lit(b, "\"");
}


static void
ngx_http_ai_gateway_translate_jesc(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *s)
{
    size_t                len;
    const unsigned char  *p;

    if (ngx_http_ai_gateway_jtree_is(s, STRING) && s->verbatim) {
        ngx_http_ai_gateway_translate_add(b, s->u.str, s->len);
        return;
    }

    p = ngx_http_ai_gateway_translate_sval(b, s, &len);

    ngx_http_ai_gateway_translate_esc(b, p, len);
}


/* a string up to a NUL byte, as jansson's value was used as a C string */

static void
ngx_http_ai_gateway_translate_cjstr(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *s)
{
    size_t                len;
    const unsigned char  *p, *nul;

    p = ngx_http_ai_gateway_translate_sval(b, s, &len);

    if (p != NULL && (nul = memchr(p, '\0', len)) != NULL) {
        len = nul - p;
    }

    ngx_http_ai_gateway_translate_str(b, p, len);
}


/*
 * A string's decoded bytes; for anything else NULL and length 0.  Decoding
 * may need memory: when there is none, the buffer fails.
 */

static const unsigned char *
ngx_http_ai_gateway_translate_sval(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *s, size_t *len)
{
    const unsigned char  *p;

    p = ngx_http_ai_gateway_jtree_string(s, len);

    if (p == NULL && ngx_http_ai_gateway_jtree_is(s, STRING)) {
        b->failed = 1;
    }

    return p;
}


static void
ngx_http_ai_gateway_translate_int(ngx_http_ai_gateway_translate_buf_t *b,
    int64_t v)
{
    if (v < 0) {
        ngx_http_ai_gateway_translate_lit(b, "-");
        ngx_http_ai_gateway_translate_uint(b, 0 - (uint64_t) v);
        return;
    }

    ngx_http_ai_gateway_translate_uint(b, (uint64_t) v);
}


/* "%llu", without printf()'s cost */

static void
ngx_http_ai_gateway_translate_uint(ngx_http_ai_gateway_translate_buf_t *b,
    uint64_t v)
{
    unsigned char   s[24], *p;

    p = ngx_http_ai_gateway_json_digits(s + sizeof(s), v);

    ngx_http_ai_gateway_translate_add(b, p, s + sizeof(s) - p);
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


/*
 * A real written as "0.7" is written back so by _real(): at most 15
 * significant digits (DBL_DIG: the "%.15g" of its double is that text),
 * no exponent, no trailing zero, and not below 0.0001 ("%g" would switch
 * to an exponent).  Most reals in requests are such, and this spares a
 * strtod() and a printf().
 */

static int
ngx_http_ai_gateway_translate_short_real(ngx_http_ai_gateway_jtree_t *j)
{
    size_t                digits, zeros;
    const unsigned char  *p, *end;

    p = j->u.str;
    end = p + j->len;

    if (*p == '-') {
        p++;
    }

    digits = 0;
    zeros = 0;

    if (*p == '0') {
        p++;

        if (p == end || *p != '.') {
            return 0;
        }

        /* 0.000x: the zeros are no significant digits */

        for (p++; p < end && *p == '0'; p++) {
            zeros++;
        }

        if (zeros > 3) {
            return 0;
        }

    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            digits++;
            p++;
        }

        if (p == end || *p != '.') {
            return 0;
        }

        p++;
    }

    while (p < end && *p >= '0' && *p <= '9') {
        digits++;
        p++;
    }

    return p == end && digits != 0 && digits <= 15 && end[-1] != '0';
}


/*
 * Compact JSON of a parsed value; its depth is bounded by the parser's.
 * As jansson's dumper: integers and reals as their values, not their text
 * ("-0" is 0, "1e2" is 100.0); a key given twice where it came first, with
 * the value it had last.
 */

static void
ngx_http_ai_gateway_translate_json(ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_jtree_t *j)
{
    size_t                        i, k, n;
    ngx_http_ai_gateway_jtree_t  *v, *m;

    switch (j->type) {

    case NGX_HTTP_AI_GATEWAY_JTREE_OBJECT:
        ngx_http_ai_gateway_translate_lit(b, "{");
        n = 0;

        for (i = 0; i < j->len; i++) {
            m = &j->u.child[i];

            for (k = 0; k < i; k++) {
                if (j->u.child[k].key_len == m->key_len
                    && memcmp(j->u.child[k].key, m->key, m->key_len) == 0)
                {
                    break;
                }
            }

            if (k < i) {
                continue;
            }

            v = m;

            for (k = i + 1; k < j->len; k++) {
                if (j->u.child[k].key_len == m->key_len
                    && memcmp(j->u.child[k].key, m->key, m->key_len) == 0)
                {
                    v = &j->u.child[k];
                }
            }

            if (n++) {
                ngx_http_ai_gateway_translate_lit(b, ",");
            }

            ngx_http_ai_gateway_translate_str(b, m->key, m->key_len);
            ngx_http_ai_gateway_translate_lit(b, ":");
            ngx_http_ai_gateway_translate_json(b, v);
        }

        ngx_http_ai_gateway_translate_lit(b, "}");
        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_ARRAY:
        ngx_http_ai_gateway_translate_lit(b, "[");

        for (i = 0; i < j->len; i++) {
            if (i) {
                ngx_http_ai_gateway_translate_lit(b, ",");
            }

            ngx_http_ai_gateway_translate_json(b, &j->u.child[i]);
        }

        ngx_http_ai_gateway_translate_lit(b, "]");
        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_STRING:
        ngx_http_ai_gateway_translate_jstr(b, j);
        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_INTEGER:
        /* JSON integers have no leading zeros or '+': the text is "%lld" */

        if (j->len == 2 && j->u.str[0] == '-' && j->u.str[1] == '0') {
            ngx_http_ai_gateway_translate_lit(b, "0");

        } else {
            ngx_http_ai_gateway_translate_add(b, j->u.str, j->len);
        }

        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_REAL:
        if (ngx_http_ai_gateway_translate_short_real(j)) {
            ngx_http_ai_gateway_translate_add(b, j->u.str, j->len);

        } else {
            ngx_http_ai_gateway_translate_real(b,
                                           ngx_http_ai_gateway_jtree_number(j));
        }

        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_TRUE:
        ngx_http_ai_gateway_translate_lit(b, "true");
        break;

    case NGX_HTTP_AI_GATEWAY_JTREE_FALSE:
        ngx_http_ai_gateway_translate_lit(b, "false");
        break;

    default: /* NGX_HTTP_AI_GATEWAY_JTREE_NULL */
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


/*
 * The arena of a call: buf (on the caller's stack) first, then blocks from
 * the output buffer's allocator.
 */

static void
ngx_http_ai_gateway_translate_arena(ngx_http_ai_gateway_jtree_arena_t *a,
    void *buf, size_t size, ngx_http_ai_gateway_translate_buf_t *out)
{
    ngx_http_ai_gateway_jtree_arena_init(a, buf, size,
                                     ngx_http_ai_gateway_translate_arena_alloc,
                                     ngx_http_ai_gateway_translate_arena_free,
                                     out);
}


static void *
ngx_http_ai_gateway_translate_arena_alloc(void *ctx, size_t size)
{
    ngx_http_ai_gateway_translate_buf_t  *out = ctx;

    if (out->resize) {
        return out->resize(out->ctx, NULL, 0, size);
    }

    return malloc(size);
}


static void
ngx_http_ai_gateway_translate_arena_free(void *ctx, void *p, size_t size)
{
    ngx_http_ai_gateway_translate_buf_t  *out = ctx;

    if (out->resize) {
        (void) out->resize(out->ctx, p, size, 0);

    } else {
        free(p);
    }
}


/* NUL bytes are allowed in strings: "\u0000" is valid JSON */

static ngx_http_ai_gateway_jtree_t *
ngx_http_ai_gateway_translate_load(const unsigned char *p, size_t len,
    ngx_http_ai_gateway_jtree_arena_t *a,
    ngx_http_ai_gateway_jtree_error_t *err, int *rc)
{
    ngx_http_ai_gateway_jtree_t  *root;

    root = ngx_http_ai_gateway_jtree_parse(p, len, a, err);

    if (root == NULL) {
        *rc = err->nomem ? NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM
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
    int                                 rc;
    ngx_http_ai_gateway_jtree_t        *root;
    ngx_http_ai_gateway_jtree_arena_t   a;
    ngx_http_ai_gateway_jtree_error_t   err;
    unsigned char                       stack[
                                          NGX_HTTP_AI_GATEWAY_TRANSLATE_ARENA];

    ngx_http_ai_gateway_translate_arena(&a, stack, sizeof(stack), out);

    root = ngx_http_ai_gateway_translate_load(body, len, &a, &err, &rc);

    if (root == NULL) {
        memset(req, 0, sizeof(ngx_http_ai_gateway_translate_request_t));
        out->failed = 0;

        if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID) {
            (void) ngx_http_ai_gateway_translate_invalid(req,
                       "the request body is not valid JSON: %s at byte %zu",
                       err.text, err.offset);
        }

    } else {
        rc = ngx_http_ai_gateway_translate_request_tree(root, &a, conf, req,
                                                        out);
    }

    ngx_http_ai_gateway_jtree_arena_free(&a);

    return rc;
}


int
ngx_http_ai_gateway_translate_request_tree(ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_jtree_arena_t *a,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int     rc;
    size_t  len0;

    memset(req, 0, sizeof(ngx_http_ai_gateway_translate_request_t));

    len0 = out->len;
    out->failed = 0;

    rc = ngx_http_ai_gateway_translate_root(root, conf, req, out, a);

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
ngx_http_ai_gateway_translate_root(ngx_http_ai_gateway_jtree_t *root,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a)
{
    int                           rc, choice, no_parallel;
    size_t                        i, n;
    double                        t;
    uint64_t                      max;
    const char                   *name;
    const unsigned char          *s;
    ngx_http_ai_gateway_jtree_t  *messages, *model, *v, *tools, *temperature,
                                 *top_p, *stop, *user, *tool;

    if (!ngx_http_ai_gateway_jtree_is(root, OBJECT)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "the request body must be a JSON object");
    }

    messages = ngx_http_ai_gateway_jtree_get(root, "messages");

    if (ngx_http_ai_gateway_jtree_is_none(messages)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' is a required property");
    }

    if (!ngx_http_ai_gateway_jtree_is(messages, ARRAY)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' must be an array");
    }

    if (ngx_http_ai_gateway_jtree_size(messages) == 0) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages' must not be empty");
    }

    v = ngx_http_ai_gateway_jtree_get(root, "n");

    if (!ngx_http_ai_gateway_jtree_is_none(v)
        && !(ngx_http_ai_gateway_jtree_is(v, INTEGER)
             && ngx_http_ai_gateway_jtree_integer(v) == 1))
    {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'n' must be 1: the fallback provider gives one choice");
    }

    v = ngx_http_ai_gateway_jtree_get(root, "functions");

    if (ngx_http_ai_gateway_jtree_is_none(v)) {
        v = ngx_http_ai_gateway_jtree_get(root, "function_call");
    }

    if (!ngx_http_ai_gateway_jtree_is_none(v)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'functions' and 'function_call' are not supported, "
                   "use 'tools' and 'tool_choice'");
    }

    model = ngx_http_ai_gateway_jtree_get(root, "model");

    if (ngx_http_ai_gateway_jtree_is(model, STRING)) {
        s = ngx_http_ai_gateway_translate_sval(out, model, &n);
        if (s == NULL) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
        }

        req->model_len = ngx_http_ai_gateway_translate_cut(req->model,
                                                           sizeof(req->model),
                                                           s, n);

    } else if (!ngx_http_ai_gateway_jtree_is_none(model)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'model' must be a string");

    } else if (conf->model == NULL) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'model' is a required property");
    }

    /* max_completion_tokens replaces max_tokens in OpenAI's API */

    name = "max_completion_tokens";
    v = ngx_http_ai_gateway_jtree_get(root, name);

    if (ngx_http_ai_gateway_jtree_is_none(v)) {
        name = "max_tokens";
        v = ngx_http_ai_gateway_jtree_get(root, name);
    }

    if (!ngx_http_ai_gateway_jtree_is_none(v)) {
        if (!ngx_http_ai_gateway_jtree_is(v, INTEGER)
            || ngx_http_ai_gateway_jtree_integer(v) <= 0)
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'%s' must be a positive integer", name);
        }

        max = (uint64_t) ngx_http_ai_gateway_jtree_integer(v);

    } else {
        max = conf->default_max_tokens
              ? conf->default_max_tokens
              : NGX_HTTP_AI_GATEWAY_TRANSLATE_DEFAULT_MAX_TOKENS;
    }

    if (conf->max_tokens_limit && max > conf->max_tokens_limit) {
        max = conf->max_tokens_limit;
    }

    req->max_tokens = max;

    v = ngx_http_ai_gateway_jtree_get(root, "stream");

    if (!ngx_http_ai_gateway_jtree_is_none(v)
        && !ngx_http_ai_gateway_jtree_is(v, TRUE)
        && !ngx_http_ai_gateway_jtree_is(v, FALSE))
    {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'stream' must be a boolean");
    }

    req->stream = ngx_http_ai_gateway_jtree_is(v, TRUE);

    v = ngx_http_ai_gateway_jtree_get(root, "stream_options");

    if (ngx_http_ai_gateway_jtree_is(v, OBJECT)) {
        v = ngx_http_ai_gateway_jtree_get(v, "include_usage");
        req->include_usage = ngx_http_ai_gateway_jtree_is(v, TRUE);
    }

    temperature = ngx_http_ai_gateway_jtree_get(root, "temperature");

    if (ngx_http_ai_gateway_jtree_is(temperature, NULL)) {
        temperature = NULL;
    }

    t = 0;

    if (temperature != NULL) {
        t = ngx_http_ai_gateway_jtree_number(temperature);

        if (!ngx_http_ai_gateway_jtree_is_number(temperature)
            || t < 0 || t > 2)
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'temperature' must be a number from 0 to 2");
        }
    }

    top_p = ngx_http_ai_gateway_jtree_get(root, "top_p");

    if (ngx_http_ai_gateway_jtree_is(top_p, NULL)) {
        top_p = NULL;
    }

    if (top_p != NULL && !ngx_http_ai_gateway_jtree_is_number(top_p)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'top_p' must be a number");
    }

    stop = ngx_http_ai_gateway_jtree_get(root, "stop");

    if (ngx_http_ai_gateway_jtree_is(stop, NULL)) {
        stop = NULL;
    }

    if (ngx_http_ai_gateway_jtree_is(stop, ARRAY)) {
        ngx_http_ai_gateway_jtree_foreach(stop, i, v) {
            if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'stop' must be a string or an array of strings");
            }
        }

    } else if (stop != NULL && !ngx_http_ai_gateway_jtree_is(stop, STRING)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'stop' must be a string or an array of strings");
    }

    user = ngx_http_ai_gateway_jtree_get(root, "user");

    if (!ngx_http_ai_gateway_jtree_is(user, STRING)) {
        user = ngx_http_ai_gateway_jtree_get(root, "safety_identifier");

        if (!ngx_http_ai_gateway_jtree_is(user, STRING)) {
            user = NULL;
        }
    }

    tools = ngx_http_ai_gateway_jtree_get(root, "tools");

    if (ngx_http_ai_gateway_jtree_is(tools, NULL)) {
        tools = NULL;
    }

    if (tools != NULL && !ngx_http_ai_gateway_jtree_is(tools, ARRAY)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'tools' must be an array");
    }

    if (ngx_http_ai_gateway_jtree_size(tools) == 0) {
        tools = NULL;
    }

    choice = ngx_http_ai_gateway_translate_tool_choice(root, &tool, req);
    if (choice < 0) {
        return choice;
    }

    v = ngx_http_ai_gateway_jtree_get(root, "parallel_tool_calls");
    no_parallel = ngx_http_ai_gateway_jtree_is(v, FALSE);

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

    rc = ngx_http_ai_gateway_translate_messages(messages, req, out, a);
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
            ngx_http_ai_gateway_translate_cjstr(out, tool);
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

        if (ngx_http_ai_gateway_jtree_is(stop, STRING)) {
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
ngx_http_ai_gateway_translate_tool_choice(ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_jtree_t **name,
    ngx_http_ai_gateway_translate_request_t *req)
{
    ngx_http_ai_gateway_jtree_t  *choice, *type, *fname;

    *name = NULL;

    choice = ngx_http_ai_gateway_jtree_get(root, "tool_choice");

    if (ngx_http_ai_gateway_jtree_is_none(choice)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE_GIVEN;
    }

    if (ngx_http_ai_gateway_jtree_is(choice, STRING)) {
        if (ngx_http_ai_gateway_jtree_eq(choice, "auto", 0)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_AUTO;
        }

        if (ngx_http_ai_gateway_jtree_eq(choice, "required", 0)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_ANY;
        }

        if (ngx_http_ai_gateway_jtree_eq(choice, "none", 0)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_NONE;
        }

    } else if (ngx_http_ai_gateway_jtree_is(choice, OBJECT)) {
        type = ngx_http_ai_gateway_jtree_get(choice, "type");
        fname = ngx_http_ai_gateway_jtree_get(
                    ngx_http_ai_gateway_jtree_get(choice, "function"), "name");

        if (ngx_http_ai_gateway_jtree_eq(type, "function", 0)
            && ngx_http_ai_gateway_jtree_is(fname, STRING))
        {
            *name = fname;
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_CHOICE_TOOL;
        }
    }

    return ngx_http_ai_gateway_translate_invalid(req,
               "'tool_choice' must be \"auto\", \"required\", \"none\" or "
               "{\"type\":\"function\",\"function\":{\"name\":...}}");
}


/* returns a _ROLE_ value, or _INVALID */

static int
ngx_http_ai_gateway_translate_role(ngx_http_ai_gateway_jtree_t *m, size_t i,
    ngx_http_ai_gateway_translate_request_t *req)
{
    ngx_http_ai_gateway_jtree_t  *role;

    if (!ngx_http_ai_gateway_jtree_is(m, OBJECT)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu]' must be an object", i);
    }

    role = ngx_http_ai_gateway_jtree_get(m, "role");

    if (!ngx_http_ai_gateway_jtree_is(role, STRING)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].role' must be a string", i);
    }

    if (ngx_http_ai_gateway_jtree_eq(role, "user", 0)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_USER;
    }

    if (ngx_http_ai_gateway_jtree_eq(role, "assistant", 0)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT;
    }

    if (ngx_http_ai_gateway_jtree_eq(role, "tool", 0)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL;
    }

    if (ngx_http_ai_gateway_jtree_eq(role, "system", 0)
        || ngx_http_ai_gateway_jtree_eq(role, "developer", 0))
    {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM;
    }

    if (ngx_http_ai_gateway_jtree_eq(role, "function", 0)) {
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
ngx_http_ai_gateway_translate_messages(ngx_http_ai_gateway_jtree_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a)
{
    int                           rc, role, r, run, first_block, assistant,
                                  calls;
    size_t                        i, j, k, n, count, written;
    ngx_http_ai_gateway_jtree_t  *m, *content, *v;

    n = ngx_http_ai_gateway_jtree_size(messages);
    written = 0;

    ngx_http_ai_gateway_translate_lit(out, ",\"messages\":[");

    for (i = 0; i < n; i = j) {
        m = ngx_http_ai_gateway_jtree_at(messages, i);

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
            r = ngx_http_ai_gateway_translate_role(
                    ngx_http_ai_gateway_jtree_at(messages, j), j, req);
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

        content = ngx_http_ai_gateway_jtree_get(m, "content");

        v = ngx_http_ai_gateway_jtree_get(m, "tool_calls");
        calls = ngx_http_ai_gateway_jtree_is(v, ARRAY)
                ? ngx_http_ai_gateway_jtree_size(v) != 0
                : !ngx_http_ai_gateway_jtree_is_none(v);

        v = ngx_http_ai_gateway_jtree_get(m, "function_call");
        calls |= !ngx_http_ai_gateway_jtree_is_none(v);

        /* a lone message with string content keeps its string */

        if (count == 1
            && role != NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL
            && ngx_http_ai_gateway_jtree_is(content, STRING)
            && !(assistant && calls))
        {
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
            continue;
        }

        ngx_http_ai_gateway_translate_lit(out, "[");
        first_block = 1;

        for (k = i; k < j; k++) {
            m = ngx_http_ai_gateway_jtree_at(messages, k);
            r = ngx_http_ai_gateway_translate_role(m, k, req);

            if (r == NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM) {
                continue;
            }

            rc = ngx_http_ai_gateway_translate_blocks(m, k, r, &first_block,
                                                      req, out, a);
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
ngx_http_ai_gateway_translate_blocks(ngx_http_ai_gateway_jtree_t *m, size_t i,
    int role, int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a)
{
    int                           rc;
    size_t                        k;
    ngx_http_ai_gateway_jtree_t  *content, *id, *part, *text, *calls;

    content = ngx_http_ai_gateway_jtree_get(m, "content");

    if (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_TOOL) {
        id = ngx_http_ai_gateway_jtree_get(m, "tool_call_id");

        if (!ngx_http_ai_gateway_jtree_is(id, STRING)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_call_id' must be a string", i);
        }

        if (!ngx_http_ai_gateway_jtree_is(content, STRING)
            && !ngx_http_ai_gateway_jtree_is(content, ARRAY))
        {
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

        if (ngx_http_ai_gateway_jtree_is(content, STRING)) {
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        }

        ngx_http_ai_gateway_translate_lit(out, "[");

        ngx_http_ai_gateway_jtree_foreach(content, k, part) {
            text = ngx_http_ai_gateway_jtree_get(part, "text");

            if (!ngx_http_ai_gateway_jtree_is(text, STRING)
                || !ngx_http_ai_gateway_jtree_eq(
                        ngx_http_ai_gateway_jtree_get(part, "type"), "text", 0))
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

    if (ngx_http_ai_gateway_jtree_is(content, STRING)) {

        /* Anthropic refuses empty text blocks */

        if (content->len) {
            if (!*first) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            *first = 0;

            ngx_http_ai_gateway_translate_lit(out,
                                              "{\"type\":\"text\",\"text\":");
            ngx_http_ai_gateway_translate_jstr(out, content);
            ngx_http_ai_gateway_translate_lit(out, "}");
        }

    } else if (ngx_http_ai_gateway_jtree_is(content, ARRAY)) {
        rc = ngx_http_ai_gateway_translate_parts(content, i, first, req, out);
        if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
            return rc;
        }

    } else if (!ngx_http_ai_gateway_jtree_is_none(content)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content' must be a string or an array", i);

    } else if (role == NGX_HTTP_AI_GATEWAY_TRANSLATE_USER) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content' is a required property", i);
    }

    if (role != NGX_HTTP_AI_GATEWAY_TRANSLATE_ASSISTANT) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (!ngx_http_ai_gateway_jtree_is_none(
             ngx_http_ai_gateway_jtree_get(m, "function_call")))
    {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].function_call' is not supported, "
                   "use 'tool_calls'", i);
    }

    calls = ngx_http_ai_gateway_jtree_get(m, "tool_calls");

    if (ngx_http_ai_gateway_jtree_is_none(calls)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (!ngx_http_ai_gateway_jtree_is(calls, ARRAY)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].tool_calls' must be an array", i);
    }

    return ngx_http_ai_gateway_translate_tool_calls(calls, i, first, req,
                                                    out, a);
}


static int
ngx_http_ai_gateway_translate_parts(ngx_http_ai_gateway_jtree_t *content,
    size_t i, int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                           rc;
    size_t                        k;
    const char                   *type;
    ngx_http_ai_gateway_jtree_t  *part, *v, *url;

    ngx_http_ai_gateway_jtree_foreach(content, k, part) {
        v = ngx_http_ai_gateway_jtree_get(part, "type");

        if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].content[%zu].type' must be a string",
                       i, k);
        }

        type = ngx_http_ai_gateway_jtree_eq(v, "text", 0) ? "text"
               : ngx_http_ai_gateway_jtree_eq(v, "refusal", 0) ? "refusal"
               : NULL;

        if (type != NULL) {
            v = ngx_http_ai_gateway_jtree_get(part, type);

            if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
                return ngx_http_ai_gateway_translate_invalid(req,
                           "'messages[%zu].content[%zu].%s' must be a string",
                           i, k, type);
            }

            if (v->len == 0) {
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

        if (ngx_http_ai_gateway_jtree_eq(v, "image_url", 0)) {
            v = ngx_http_ai_gateway_jtree_get(part, "image_url");
            url = ngx_http_ai_gateway_jtree_is(v, OBJECT)
                  ? ngx_http_ai_gateway_jtree_get(v, "url") : v;

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

        if (ngx_http_ai_gateway_jtree_eq(v, "file", 0)) {
            v = ngx_http_ai_gateway_jtree_get(part, "file");
            url = ngx_http_ai_gateway_jtree_get(v, "file_data");

            if (!ngx_http_ai_gateway_jtree_is(url, STRING)) {
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
ngx_http_ai_gateway_translate_media(ngx_http_ai_gateway_jtree_t *url, size_t i,
    size_t k, const char *block, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    size_t                n, header;
    const unsigned char  *s, *comma, *semi;

    if (!ngx_http_ai_gateway_jtree_is(url, STRING)) {
        return ngx_http_ai_gateway_translate_invalid(req,
                   "'messages[%zu].content[%zu]': the URL must be a string",
                   i, k);
    }

    s = ngx_http_ai_gateway_translate_sval(out, url, &n);
    if (s == NULL) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
    }

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
ngx_http_ai_gateway_translate_tool_calls(ngx_http_ai_gateway_jtree_t *calls,
    size_t i, int *first, ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out,
    ngx_http_ai_gateway_jtree_arena_t *a)
{
    int                                 rc;
    size_t                              k, n;
    const unsigned char                *p;
    ngx_http_ai_gateway_jtree_t        *call, *type, *id, *fn, *name, *args,
                                       *input;
    ngx_http_ai_gateway_jtree_error_t   err;

    ngx_http_ai_gateway_jtree_foreach(calls, k, call) {
        type = ngx_http_ai_gateway_jtree_get(call, "type");
        id = ngx_http_ai_gateway_jtree_get(call, "id");
        fn = ngx_http_ai_gateway_jtree_get(call, "function");
        name = ngx_http_ai_gateway_jtree_get(fn, "name");

        if (type != NULL && !ngx_http_ai_gateway_jtree_eq(type, "function", 0))
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu].type' must be "
                       "\"function\"", i, k);
        }

        if (!ngx_http_ai_gateway_jtree_is(id, STRING)
            || !ngx_http_ai_gateway_jtree_is(name, STRING))
        {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu]' needs an 'id' and a "
                       "'function.name'", i, k);
        }

        args = ngx_http_ai_gateway_jtree_get(fn, "arguments");
        input = NULL;

        if (ngx_http_ai_gateway_jtree_is(args, STRING)) {
            p = ngx_http_ai_gateway_translate_sval(out, args, &n);
            if (p == NULL) {
                return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
            }

            /* some clients send "" for a call without arguments */

            while (n && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            {
                p++;
                n--;
            }

            if (n) {
                input = ngx_http_ai_gateway_translate_load(p, n, a, &err,
                                                           &rc);

                if (input == NULL) {
                    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID) {
                        return rc;
                    }

                    return ngx_http_ai_gateway_translate_invalid(req,
                               "'messages[%zu].tool_calls[%zu].function."
                               "arguments' is not valid JSON: %s at byte %zu",
                               i, k, err.text, err.offset);
                }
            }

        } else if (ngx_http_ai_gateway_jtree_is(args, OBJECT)) {
            input = args;

        } else if (!ngx_http_ai_gateway_jtree_is_none(args)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].tool_calls[%zu].function.arguments' "
                       "must be a string", i, k);
        }

        if (input != NULL && !ngx_http_ai_gateway_jtree_is(input, OBJECT)) {
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

        } else {
            ngx_http_ai_gateway_translate_lit(out, "{}");
        }

        ngx_http_ai_gateway_translate_lit(out, "}");
    }

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


/* the texts of system and developer messages, joined with blank lines */

static int
ngx_http_ai_gateway_translate_system(ngx_http_ai_gateway_jtree_t *messages,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                           opened;
    size_t                        i, k, n, len;
    ngx_http_ai_gateway_jtree_t  *m, *content, *part, *text, *one;

    opened = 0;
    n = ngx_http_ai_gateway_jtree_size(messages);

    for (i = 0; i < n; i++) {
        m = ngx_http_ai_gateway_jtree_at(messages, i);

        /* the roles were checked by the messages */

        if (ngx_http_ai_gateway_translate_role(m, i, req)
            != NGX_HTTP_AI_GATEWAY_TRANSLATE_SYSTEM)
        {
            continue;
        }

        content = ngx_http_ai_gateway_jtree_get(m, "content");

        if (ngx_http_ai_gateway_jtree_is(content, STRING)) {
            one = content;
            len = 1;

        } else if (ngx_http_ai_gateway_jtree_is(content, ARRAY)) {
            one = NULL;
            len = ngx_http_ai_gateway_jtree_size(content);

        } else {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'messages[%zu].content' must be a string or an array",
                       i);
        }

        for (k = 0; k < len; k++) {
            text = one;

            if (text == NULL) {
                part = ngx_http_ai_gateway_jtree_at(content, k);
                text = ngx_http_ai_gateway_jtree_get(part, "text");

                if (!ngx_http_ai_gateway_jtree_is(text, STRING)
                    || !ngx_http_ai_gateway_jtree_eq(
                           ngx_http_ai_gateway_jtree_get(part, "type"),
                           "text", 0))
                {
                    return ngx_http_ai_gateway_translate_invalid(req,
                               "'messages[%zu].content[%zu]' must be a text "
                               "part", i, k);
                }
            }

            if (text->len == 0) {
                continue;
            }

            if (opened) {
                ngx_http_ai_gateway_translate_lit(out, "\\n\\n");

            } else {
                ngx_http_ai_gateway_translate_lit(out, ",\"system\":\"");
                opened = 1;
            }

            ngx_http_ai_gateway_translate_jesc(out, text);
        }
    }

    if (opened) {
        ngx_http_ai_gateway_translate_lit(out, "\"");
    }

    return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
}


static int
ngx_http_ai_gateway_translate_tools(ngx_http_ai_gateway_jtree_t *tools,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    size_t                        k;
    ngx_http_ai_gateway_jtree_t  *tool, *type, *fn, *name, *desc, *params;

    ngx_http_ai_gateway_translate_lit(out, ",\"tools\":[");

    ngx_http_ai_gateway_jtree_foreach(tools, k, tool) {
        type = ngx_http_ai_gateway_jtree_get(tool, "type");
        fn = ngx_http_ai_gateway_jtree_get(tool, "function");
        name = ngx_http_ai_gateway_jtree_get(fn, "name");
        desc = ngx_http_ai_gateway_jtree_get(fn, "description");
        params = ngx_http_ai_gateway_jtree_get(fn, "parameters");

        if (!ngx_http_ai_gateway_jtree_eq(type, "function", 0)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].type' must be \"function\"", k);
        }

        if (!ngx_http_ai_gateway_jtree_is(name, STRING)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].function.name' must be a string", k);
        }

        if (ngx_http_ai_gateway_jtree_is(params, NULL)) {
            params = NULL;
        }

        if (params != NULL && !ngx_http_ai_gateway_jtree_is(params, OBJECT)) {
            return ngx_http_ai_gateway_translate_invalid(req,
                       "'tools[%zu].function.parameters' must be an object",
                       k);
        }

        if (k) {
            ngx_http_ai_gateway_translate_lit(out, ",");
        }

        ngx_http_ai_gateway_translate_lit(out, "{\"name\":");
        ngx_http_ai_gateway_translate_jstr(out, name);

        if (ngx_http_ai_gateway_jtree_is(desc, STRING)) {
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


/* a chat.completion's end, after its message: the finish reason and the
 * usage (both readers of Anthropic answers end so) */

static void
ngx_http_ai_gateway_translate_completion_end(
    ngx_http_ai_gateway_translate_buf_t *out, const char *finish,
    uint64_t input, uint64_t output, uint64_t cached)
{
    if (finish != NULL) {
        ngx_http_ai_gateway_translate_cstr(out, finish);

    } else {
        ngx_http_ai_gateway_translate_lit(out, "null");
    }

    ngx_http_ai_gateway_translate_lit(out, "}],\"usage\":");
    ngx_http_ai_gateway_translate_prompt_usage(out, input, output, cached);
    ngx_http_ai_gateway_translate_lit(out, "}");
}


/*
 * The usual Anthropic message, translated in one pass without a tree: an
 * object whose keys and strings hold no escapes, text blocks only, usage
 * counts as plain integers, other members plain values (or objects of
 * them).  Anything else, or a known key twice, is the tree's (DECLINED).
 * What it writes is what the tree path writes for the same answer: the
 * unit test compares the two on every answer it has and on mutations.
 */

#define NGX_HTTP_AI_GATEWAY_TF_TEXTS     8

typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
} ngx_http_ai_gateway_tf_t;


static void
ngx_http_ai_gateway_tf_ws(ngx_http_ai_gateway_tf_t *f)
{
    f->p = ngx_http_ai_gateway_json_skip_ws(f->p, f->end);
}


/* a string without escapes: its bytes (valid UTF-8, no control) */

static int
ngx_http_ai_gateway_tf_str(ngx_http_ai_gateway_tf_t *f,
    const unsigned char **s, size_t *n)
{
    size_t                need;
    const unsigned char  *p;

    if (f->p == f->end || *f->p != '"') {
        return -1;
    }

    p = f->p + 1;
    *s = p;

    for ( ;; ) {
        p = ngx_http_ai_gateway_json_skip_plain(p, f->end);

        if (p == f->end || *p == '\\' || *p < 0x20) {
            return -1;
        }

        if (*p == '"') {
            break;
        }

        need = ngx_http_ai_gateway_json_utf8_char(p, f->end);

        if (need == 0) {
            return -1;
        }

        p += need;
    }

    *n = p - *s;
    f->p = p + 1;

    return 0;
}


/* a count: digits, no sign, fraction or exponent, at most 17 of them */

static int
ngx_http_ai_gateway_tf_uint(ngx_http_ai_gateway_tf_t *f, uint64_t *v)
{
    size_t  n;

    if (f->p == f->end || *f->p < '0' || *f->p > '9'
        || (*f->p == '0' && f->end - f->p > 1 && f->p[1] >= '0'
            && f->p[1] <= '9'))
    {
        return -1;
    }

    *v = 0;

    for (n = 0; f->p < f->end && *f->p >= '0' && *f->p <= '9'; n++) {
        if (n == 17) {
            return -1;
        }

        *v = *v * 10 + (*f->p++ - '0');
    }

    if (f->p < f->end && (*f->p == '.' || *f->p == 'e' || *f->p == 'E')) {
        return -1;
    }

    return 0;
}


/* after a member: 1 another follows (its quote is next), 0 the object
 * ended, -1 neither */

static int
ngx_http_ai_gateway_tf_next(ngx_http_ai_gateway_tf_t *f)
{
    ngx_http_ai_gateway_tf_ws(f);

    if (f->p == f->end) {
        return -1;
    }

    if (*f->p == '}') {
        f->p++;
        return 0;
    }

    if (*f->p++ != ',') {
        return -1;
    }

    ngx_http_ai_gateway_tf_ws(f);

    return 1;
}


/* a member's key and the colon after it */

static int
ngx_http_ai_gateway_tf_key(ngx_http_ai_gateway_tf_t *f,
    const unsigned char **k, size_t *n)
{
    if (ngx_http_ai_gateway_tf_str(f, k, n) != 0) {
        return -1;
    }

    ngx_http_ai_gateway_tf_ws(f);

    if (f->p == f->end || *f->p++ != ':') {
        return -1;
    }

    ngx_http_ai_gateway_tf_ws(f);

    return 0;
}


/* past a plain value: a string, a count, null, true, false, or (nest) an
 * object of those */

static int
ngx_http_ai_gateway_tf_skip(ngx_http_ai_gateway_tf_t *f, int nest)
{
    int                   rc;
    size_t                n;
    uint64_t              v;
    const unsigned char  *s;

    if (f->p == f->end) {
        return -1;
    }

    switch (*f->p) {

    case '"':
        return ngx_http_ai_gateway_tf_str(f, &s, &n);

    case 'n':
    case 't':
        if (f->end - f->p >= 4
            && (memcmp(f->p, "null", 4) == 0 || memcmp(f->p, "true", 4) == 0))
        {
            f->p += 4;
            return 0;
        }

        return -1;

    case 'f':
        if (f->end - f->p >= 5 && memcmp(f->p, "false", 5) == 0) {
            f->p += 5;
            return 0;
        }

        return -1;

    case '{':
        if (!nest) {
            return -1;
        }

        f->p++;
        ngx_http_ai_gateway_tf_ws(f);

        if (f->p < f->end && *f->p == '}') {
            f->p++;
            return 0;
        }

        do {
            if (ngx_http_ai_gateway_tf_key(f, &s, &n) != 0
                || ngx_http_ai_gateway_tf_skip(f, 0) != 0)
            {
                return -1;
            }

            rc = ngx_http_ai_gateway_tf_next(f);

        } while (rc == 1);

        return rc;

    default:
        return ngx_http_ai_gateway_tf_uint(f, &v);
    }
}


#define ngx_http_ai_gateway_tf_is(k, n, s)                                    \
    ((n) == sizeof(s) - 1 && memcmp(k, s, sizeof(s) - 1) == 0)


/* one content block: {"type":"text","text":"..."} and plain members */

static int
ngx_http_ai_gateway_tf_block(ngx_http_ai_gateway_tf_t *f,
    const unsigned char **text, size_t *text_len)
{
    int                   rc, seen;
    size_t                n, tn;
    const unsigned char  *k, *t;

    if (f->p == f->end || *f->p++ != '{') {
        return -1;
    }

    ngx_http_ai_gateway_tf_ws(f);
    seen = 0;

    do {
        if (ngx_http_ai_gateway_tf_key(f, &k, &n) != 0) {
            return -1;
        }

        if (ngx_http_ai_gateway_tf_is(k, n, "type")) {
            if ((seen & 1)
                || ngx_http_ai_gateway_tf_str(f, &t, &tn) != 0
                || !ngx_http_ai_gateway_tf_is(t, tn, "text"))
            {
                return -1;
            }

            seen |= 1;

        } else if (ngx_http_ai_gateway_tf_is(k, n, "text")) {
            if ((seen & 2)
                || ngx_http_ai_gateway_tf_str(f, text, text_len) != 0)
            {
                return -1;
            }

            seen |= 2;

        } else if (ngx_http_ai_gateway_tf_skip(f, 0) != 0) {
            return -1;
        }

        rc = ngx_http_ai_gateway_tf_next(f);

    } while (rc == 1);

    return (rc == 0 && seen == 3) ? 0 : -1;
}


/* the usage object: the four counts, plain members beside them */

static int
ngx_http_ai_gateway_tf_usage(ngx_http_ai_gateway_tf_t *f, uint64_t *counts)
{
    int                   rc, i, seen;
    size_t                n;
    const unsigned char  *k;

    static const char  *names[4] = {
        "input_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "output_tokens"
    };

    if (f->p == f->end || *f->p++ != '{') {
        return -1;
    }

    ngx_http_ai_gateway_tf_ws(f);

    if (f->p < f->end && *f->p == '}') {
        f->p++;
        return 0;
    }

    seen = 0;

    do {
        if (ngx_http_ai_gateway_tf_key(f, &k, &n) != 0) {
            return -1;
        }

        for (i = 0; i < 4; i++) {
            if (n == strlen(names[i]) && memcmp(k, names[i], n) == 0) {
                break;
            }
        }

        if (i < 4) {
            if ((seen & (1 << i))
                || ngx_http_ai_gateway_tf_uint(f, &counts[i]) != 0)
            {
                return -1;
            }

            seen |= 1 << i;

        } else if (ngx_http_ai_gateway_tf_skip(f, 1) != 0) {
            return -1;
        }

        rc = ngx_http_ai_gateway_tf_next(f);

    } while (rc == 1);

    return rc;
}


int
ngx_http_ai_gateway_translate_response_fast(const unsigned char *body,
    size_t len, int64_t created, const unsigned char *model,
    size_t model_len, ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                        rc, seen, usage;
    size_t                     n, i, ntexts, id_len, model_str_len,
                               stop_len, len0;
    size_t                     text_len[NGX_HTTP_AI_GATEWAY_TF_TEXTS];
    uint64_t                   counts[4];
    const unsigned char       *k, *t, *id, *model_str, *stop;
    const unsigned char       *text[NGX_HTTP_AI_GATEWAY_TF_TEXTS];
    ngx_http_ai_gateway_tf_t   f;

    enum { ID = 1, TYPE = 2, MODEL = 4, CONTENT = 8, STOP = 16, USAGE = 32 };

    f.p = body;
    f.end = body + len;

    ngx_http_ai_gateway_tf_ws(&f);

    if (f.p == f.end || *f.p++ != '{') {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
    }

    ngx_http_ai_gateway_tf_ws(&f);

    seen = 0;
    usage = 0;
    ntexts = 0;
    id = NULL;
    id_len = 0;
    model_str = NULL;
    model_str_len = 0;
    stop = NULL;
    stop_len = 0;
    memset(counts, 0, sizeof(counts));

    do {
        if (ngx_http_ai_gateway_tf_key(&f, &k, &n) != 0) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
        }

#define ngx_http_ai_gateway_tf_once(bit)                                      \
        if (seen & (bit)) {                                                   \
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;                           \
        }                                                                     \
        seen |= (bit)

        if (ngx_http_ai_gateway_tf_is(k, n, "id")) {
            ngx_http_ai_gateway_tf_once(ID);
            rc = ngx_http_ai_gateway_tf_str(&f, &id, &id_len);

        } else if (ngx_http_ai_gateway_tf_is(k, n, "type")) {
            ngx_http_ai_gateway_tf_once(TYPE);
            rc = ngx_http_ai_gateway_tf_str(&f, &t, &i);

            if (rc == 0 && !ngx_http_ai_gateway_tf_is(t, i, "message")) {
                rc = -1;
            }

        } else if (ngx_http_ai_gateway_tf_is(k, n, "model")) {
            ngx_http_ai_gateway_tf_once(MODEL);
            rc = ngx_http_ai_gateway_tf_str(&f, &model_str, &model_str_len);

        } else if (ngx_http_ai_gateway_tf_is(k, n, "content")) {
            ngx_http_ai_gateway_tf_once(CONTENT);

            if (f.p == f.end || *f.p++ != '[') {
                return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
            }

            ngx_http_ai_gateway_tf_ws(&f);
            rc = 0;

            if (f.p < f.end && *f.p == ']') {
                f.p++;

            } else {
                for ( ;; ) {
                    if (ntexts == NGX_HTTP_AI_GATEWAY_TF_TEXTS
                        || ngx_http_ai_gateway_tf_block(&f, &text[ntexts],
                                                        &text_len[ntexts])
                           != 0)
                    {
                        return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
                    }

                    ntexts++;
                    ngx_http_ai_gateway_tf_ws(&f);

                    if (f.p == f.end) {
                        return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
                    }

                    if (*f.p == ']') {
                        f.p++;
                        break;
                    }

                    if (*f.p++ != ',') {
                        return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
                    }

                    ngx_http_ai_gateway_tf_ws(&f);
                }
            }

        } else if (ngx_http_ai_gateway_tf_is(k, n, "stop_reason")) {
            ngx_http_ai_gateway_tf_once(STOP);

            if (f.end - f.p >= 4 && memcmp(f.p, "null", 4) == 0) {
                f.p += 4;
                rc = 0;

            } else {
                rc = ngx_http_ai_gateway_tf_str(&f, &stop, &stop_len);
            }

        } else if (ngx_http_ai_gateway_tf_is(k, n, "usage")) {
            ngx_http_ai_gateway_tf_once(USAGE);
            rc = ngx_http_ai_gateway_tf_usage(&f, counts);
            usage = 1;

        } else {
            rc = ngx_http_ai_gateway_tf_skip(&f, 1);
        }

#undef ngx_http_ai_gateway_tf_once

        if (rc != 0) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
        }

        rc = ngx_http_ai_gateway_tf_next(&f);

    } while (rc == 1);

    ngx_http_ai_gateway_tf_ws(&f);

    if (rc != 0 || f.p != f.end || !(seen & CONTENT)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED;
    }

    /* as translate_response_tree() writes it */

    len0 = out->len;
    out->failed = 0;

    if (u != NULL) {
        u->input_tokens = counts[0] + counts[1] + counts[2];
        u->output_tokens = counts[3];
        u->cached_tokens = counts[1];
        u->found = usage;
    }

    ngx_http_ai_gateway_translate_lit(out, "{\"id\":\"chatcmpl-");

    if (id != NULL) {
        i = (id_len >= 4 && memcmp(id, "msg_", 4) == 0) ? 4 : 0;
        ngx_http_ai_gateway_translate_add(out, id + i, id_len - i);
    }

    ngx_http_ai_gateway_translate_lit(out,
                          "\",\"object\":\"chat.completion\",\"created\":");
    ngx_http_ai_gateway_translate_int(out, created);
    ngx_http_ai_gateway_translate_lit(out, ",\"model\":");

    if (model_str != NULL) {
        ngx_http_ai_gateway_translate_lit(out, "\"");
        ngx_http_ai_gateway_translate_add(out, model_str, model_str_len);
        ngx_http_ai_gateway_translate_lit(out, "\"");

    } else {
        ngx_http_ai_gateway_translate_str(out, model, model ? model_len : 0);
    }

    ngx_http_ai_gateway_translate_lit(out,
        ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"");

    for (i = 0; i < ntexts; i++) {
        ngx_http_ai_gateway_translate_add(out, text[i], text_len[i]);
    }

    ngx_http_ai_gateway_translate_lit(out,
                                "\"},\"logprobs\":null,\"finish_reason\":");

    ngx_http_ai_gateway_translate_completion_end(out,
                    ngx_http_ai_gateway_translate_finish_reason(stop, stop_len),
                    counts[0] + counts[1] + counts[2], counts[3], counts[1]);

    return ngx_http_ai_gateway_translate_end(out, len0,
                                             NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
}

#undef ngx_http_ai_gateway_tf_is


int
ngx_http_ai_gateway_translate_response(const unsigned char *body, size_t len,
    int64_t created, const unsigned char *model, size_t model_len,
    ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int  rc;

    /* an answer about as long as the one translated: one allocation */
    (void) ngx_http_ai_gateway_translate_reserve(out, len + 256);

    rc = ngx_http_ai_gateway_translate_response_fast(body, len, created,
                                                     model, model_len, u,
                                                     out);

    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED) {
        return rc;
    }

    return ngx_http_ai_gateway_translate_response_tree(body, len, created,
                                                       model, model_len, u,
                                                       out);
}


int
ngx_http_ai_gateway_translate_response_tree(const unsigned char *body,
    size_t len, int64_t created, const unsigned char *model,
    size_t model_len, ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out)
{
    int                                   rc, text, tools;
    size_t                                i, n, len0;
    uint64_t                              input, cache_read, cache_creation,
                                          output;
    const char                           *finish;
    const unsigned char                  *s;
    ngx_http_ai_gateway_jtree_t          *root, *content, *block, *type, *v,
                                         *id;
    ngx_http_ai_gateway_jtree_arena_t     a;
    ngx_http_ai_gateway_jtree_error_t     err;
    ngx_http_ai_gateway_translate_buf_t   args;
    unsigned char                         stack[
                                          NGX_HTTP_AI_GATEWAY_TRANSLATE_ARENA];

    len0 = out->len;
    out->failed = 0;

    /* an answer about as long as the one translated: one allocation */
    (void) ngx_http_ai_gateway_translate_reserve(out, len + 256);

    ngx_http_ai_gateway_translate_arena(&a, stack, sizeof(stack), out);

    root = ngx_http_ai_gateway_translate_load(body, len, &a, &err, &rc);
    if (root == NULL) {
        ngx_http_ai_gateway_jtree_arena_free(&a);
        return rc;
    }

    content = ngx_http_ai_gateway_jtree_get(root, "content");
    type = ngx_http_ai_gateway_jtree_get(root, "type");

    if (!ngx_http_ai_gateway_jtree_is(content, ARRAY)
        || (type != NULL && !ngx_http_ai_gateway_jtree_eq(type, "message", 0)))
    {
        ngx_http_ai_gateway_jtree_arena_free(&a);
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    input = 0;
    cache_read = 0;
    cache_creation = 0;
    output = 0;

    v = ngx_http_ai_gateway_jtree_get(root, "usage");

    ngx_http_ai_gateway_translate_read_usage(v, &input, &cache_read,
                                             &cache_creation, &output);

    if (u != NULL) {
        u->input_tokens = input + cache_read + cache_creation;
        u->output_tokens = output;
        u->cached_tokens = cache_read;
        u->found = ngx_http_ai_gateway_jtree_is(v, OBJECT);
    }

    ngx_http_ai_gateway_translate_lit(out, "{\"id\":\"chatcmpl-");

    id = ngx_http_ai_gateway_jtree_get(root, "id");

    if (ngx_http_ai_gateway_jtree_is(id, STRING)) {
        i = ngx_http_ai_gateway_jtree_eq(id, "msg_", 1) ? 4 : 0;

        if (id->verbatim) {
            ngx_http_ai_gateway_translate_add(out, id->u.str + i,
                                              id->len - i);

        } else {
            s = ngx_http_ai_gateway_translate_sval(out, id, &n);

            if (s != NULL) {
                ngx_http_ai_gateway_translate_esc(out, s + i, n - i);
            }
        }
    }

    ngx_http_ai_gateway_translate_lit(out,
                          "\",\"object\":\"chat.completion\",\"created\":");
    ngx_http_ai_gateway_translate_int(out, created);
    ngx_http_ai_gateway_translate_lit(out, ",\"model\":");

    v = ngx_http_ai_gateway_jtree_get(root, "model");

    if (ngx_http_ai_gateway_jtree_is(v, STRING)) {
        ngx_http_ai_gateway_translate_jstr(out, v);

    } else {
        ngx_http_ai_gateway_translate_str(out, model, model ? model_len : 0);
    }

    ngx_http_ai_gateway_translate_lit(out,
        ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":");

    text = 0;
    tools = 0;

    ngx_http_ai_gateway_jtree_foreach(content, i, block) {
        type = ngx_http_ai_gateway_jtree_get(block, "type");

        if (ngx_http_ai_gateway_jtree_eq(type, "text", 0)) {
            v = ngx_http_ai_gateway_jtree_get(block, "text");

            if (ngx_http_ai_gateway_jtree_is(v, STRING) && v->len) {
                text++;
            }

        } else if (ngx_http_ai_gateway_jtree_eq(type, "tool_use", 0)) {
            tools++;
        }
    }

    /* the text blocks, joined: blocks split around citations, say */

    if (text == 0 && tools) {
        ngx_http_ai_gateway_translate_lit(out, "null");

    } else {
        ngx_http_ai_gateway_translate_lit(out, "\"");

        ngx_http_ai_gateway_jtree_foreach(content, i, block) {
            type = ngx_http_ai_gateway_jtree_get(block, "type");
            v = ngx_http_ai_gateway_jtree_get(block, "text");

            if (ngx_http_ai_gateway_jtree_eq(type, "text", 0)
                && ngx_http_ai_gateway_jtree_is(v, STRING))
            {
                ngx_http_ai_gateway_translate_jesc(out, v);
            }
        }

        ngx_http_ai_gateway_translate_lit(out, "\"");
    }

    if (tools) {
        ngx_http_ai_gateway_translate_lit(out, ",\"tool_calls\":[");
        ngx_http_ai_gateway_translate_buf_init(&args, out->resize, out->ctx);
        tools = 0;

        ngx_http_ai_gateway_jtree_foreach(content, i, block) {
            type = ngx_http_ai_gateway_jtree_get(block, "type");

            if (!ngx_http_ai_gateway_jtree_eq(type, "tool_use", 0)) {
                continue;
            }

            if (tools++) {
                ngx_http_ai_gateway_translate_lit(out, ",");
            }

            ngx_http_ai_gateway_translate_lit(out, "{\"id\":");
            ngx_http_ai_gateway_translate_jstr(out,
                                   ngx_http_ai_gateway_jtree_get(block, "id"));

            ngx_http_ai_gateway_translate_lit(out,
                         ",\"type\":\"function\",\"function\":{\"name\":");
            ngx_http_ai_gateway_translate_jstr(out,
                                 ngx_http_ai_gateway_jtree_get(block, "name"));

            /* the arguments are a string: the input's compact JSON */

            ngx_http_ai_gateway_translate_lit(out, ",\"arguments\":");
            v = ngx_http_ai_gateway_jtree_get(block, "input");
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

    v = ngx_http_ai_gateway_jtree_get(root, "stop_reason");
    finish = NULL;

    if (ngx_http_ai_gateway_jtree_is(v, STRING)) {
        s = ngx_http_ai_gateway_translate_sval(out, v, &n);
        finish = ngx_http_ai_gateway_translate_finish_reason(s, n);
    }

    ngx_http_ai_gateway_translate_completion_end(out, finish,
                                         input + cache_read + cache_creation,
                                         output, cache_read);

    ngx_http_ai_gateway_jtree_arena_free(&a);

    return ngx_http_ai_gateway_translate_end(out, len0,
                                             NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);
}


/* Anthropic's usage fields, those present */

static void
ngx_http_ai_gateway_translate_read_usage(ngx_http_ai_gateway_jtree_t *usage,
    uint64_t *input, uint64_t *cache_read, uint64_t *cache_creation,
    uint64_t *output)
{
    ngx_http_ai_gateway_jtree_t  *v;

    if (!ngx_http_ai_gateway_jtree_is(usage, OBJECT)) {
        return;
    }

    v = ngx_http_ai_gateway_jtree_get(usage, "input_tokens");
    if (ngx_http_ai_gateway_jtree_is(v, INTEGER) && v->v.integer >= 0) {
        *input = ngx_http_ai_gateway_jtree_integer(v);
    }

    v = ngx_http_ai_gateway_jtree_get(usage, "cache_read_input_tokens");
    if (ngx_http_ai_gateway_jtree_is(v, INTEGER) && v->v.integer >= 0) {
        *cache_read = ngx_http_ai_gateway_jtree_integer(v);
    }

    v = ngx_http_ai_gateway_jtree_get(usage, "cache_creation_input_tokens");
    if (ngx_http_ai_gateway_jtree_is(v, INTEGER) && v->v.integer >= 0) {
        *cache_creation = ngx_http_ai_gateway_jtree_integer(v);
    }

    v = ngx_http_ai_gateway_jtree_get(usage, "output_tokens");
    if (ngx_http_ai_gateway_jtree_is(v, INTEGER) && v->v.integer >= 0) {
        *output = ngx_http_ai_gateway_jtree_integer(v);
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
    int                                 rc;
    size_t                              len0;
    ngx_http_ai_gateway_jtree_t        *root;
    ngx_http_ai_gateway_jtree_arena_t   a;
    ngx_http_ai_gateway_jtree_error_t   err;
    unsigned char                       stack[
                                          NGX_HTTP_AI_GATEWAY_TRANSLATE_ARENA];

    len0 = out->len;
    out->failed = 0;

    ngx_http_ai_gateway_translate_arena(&a, stack, sizeof(stack), out);

    root = ngx_http_ai_gateway_translate_load(body, len, &a, &err, &rc);

    if (root == NULL && rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM) {
        ngx_http_ai_gateway_jtree_arena_free(&a);
        return rc;
    }

    /* anything but Anthropic's error object: the status says it all */

    ngx_http_ai_gateway_translate_error_obj(out,
                                  ngx_http_ai_gateway_jtree_get(root, "error"),
                                  status);

    ngx_http_ai_gateway_jtree_arena_free(&a);

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
ngx_http_ai_gateway_translate_errmap(ngx_http_ai_gateway_jtree_t *type,
    unsigned status)
{
    const ngx_http_ai_gateway_translate_errmap_t  *e;

    for (e = ngx_http_ai_gateway_translate_errmaps; e->anthropic; e++) {
        if (type != NULL ? ngx_http_ai_gateway_jtree_eq(type, e->anthropic, 0)
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
    ngx_http_ai_gateway_jtree_t *err, unsigned status)
{
    int                                            n;
    const char                                    *code;
    ngx_http_ai_gateway_jtree_t                   *type, *message, *anthropic;
    char                                           text[80];
    const ngx_http_ai_gateway_translate_errmap_t  *e;

    type = ngx_http_ai_gateway_jtree_get(err, "type");
    message = ngx_http_ai_gateway_jtree_get(err, "message");

    if (!ngx_http_ai_gateway_jtree_is(type, STRING)) {
        type = NULL;
    }

    e = ngx_http_ai_gateway_translate_errmap(type, status);

    /* OpenAI clients look for this code to shorten the conversation */

    code = e->code;
    anthropic = NULL;

    if (type != NULL && e->anthropic == NULL) {
        anthropic = type;
    }

    if (ngx_http_ai_gateway_jtree_eq(message, "prompt is too long", 1)) {
        code = "context_length_exceeded";
        anthropic = NULL;
    }

    ngx_http_ai_gateway_translate_lit(b, "{\"error\":{\"message\":");

    if (ngx_http_ai_gateway_jtree_is(message, STRING)) {
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

    /* Anthropic's own type, when OpenAI has no code for it */

    if (anthropic != NULL) {
        ngx_http_ai_gateway_translate_cjstr(b, anthropic);

    } else {
        ngx_http_ai_gateway_translate_cstr(b, code);
    }

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
    unsigned                                      kind;
    ngx_http_ai_gateway_jtree_t                  *root, *v;
    ngx_http_ai_gateway_jtree_arena_t             a;
    ngx_http_ai_gateway_jtree_error_t             err;
    const ngx_http_ai_gateway_translate_event_t  *e;
    unsigned char                                 stack[
                                          NGX_HTTP_AI_GATEWAY_TRANSLATE_ARENA];

    if (st->done) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    len0 = out->len;
    out->failed = 0;
    root = NULL;

    ngx_http_ai_gateway_translate_arena(&a, stack, sizeof(stack), out);

    if (name_len == 0) {
        root = ngx_http_ai_gateway_translate_load(data, data_len, &a, &err,
                                                  &rc);
        if (root == NULL) {
            ngx_http_ai_gateway_jtree_arena_free(&a);
            return rc;
        }

        v = ngx_http_ai_gateway_jtree_get(root, "type");

        if (ngx_http_ai_gateway_jtree_is(v, STRING)) {
            name = ngx_http_ai_gateway_jtree_string(v, &name_len);

            if (name == NULL) {
                ngx_http_ai_gateway_jtree_arena_free(&a);
                return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
            }
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

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_PING:
        /*
         * A comment in its place: OpenAI's clients skip comments, and the
         * connection shows life while the model thinks (a client or a
         * load balancer with an idle timeout would otherwise give up)
         */
        ngx_http_ai_gateway_jtree_arena_free(&a);
        ngx_http_ai_gateway_translate_lit(out, ": ping\n\n");
        return ngx_http_ai_gateway_translate_end(out, len0,
                                           NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_OTHER:
        ngx_http_ai_gateway_jtree_arena_free(&a);
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_BLOCK_STOP:
        ngx_http_ai_gateway_jtree_arena_free(&a);
        ngx_http_ai_gateway_translate_block_stop(st, out);
        return ngx_http_ai_gateway_translate_end(out, len0,
                                           NGX_HTTP_AI_GATEWAY_TRANSLATE_OK);

    case NGX_HTTP_AI_GATEWAY_TRANSLATE_EV_MESSAGE_STOP:
        ngx_http_ai_gateway_jtree_arena_free(&a);
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
        root = ngx_http_ai_gateway_translate_load(data, data_len, &a, &err,
                                                  &rc);
        if (root == NULL) {
            ngx_http_ai_gateway_jtree_arena_free(&a);
            return rc;
        }
    }

    if (!ngx_http_ai_gateway_jtree_is(root, OBJECT)) {
        ngx_http_ai_gateway_jtree_arena_free(&a);
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
                                  ngx_http_ai_gateway_jtree_get(root, "error"),
                                  0);
        ngx_http_ai_gateway_translate_lit(out, "\n\ndata: [DONE]\n\n");
        rc = NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        break;
    }

    ngx_http_ai_gateway_jtree_arena_free(&a);

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
    ngx_http_ai_gateway_translate_buf_t *b, ngx_http_ai_gateway_jtree_t *text)
{
    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b, "{\"content\":");
    ngx_http_ai_gateway_translate_jstr(b, text);
    ngx_http_ai_gateway_translate_lit(b, "}");
    ngx_http_ai_gateway_translate_delta_end(b, NULL);
}


static int
ngx_http_ai_gateway_translate_message_start(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    size_t                        skip, n;
    const unsigned char          *s;
    ngx_http_ai_gateway_jtree_t  *msg, *v;

    msg = ngx_http_ai_gateway_jtree_get(root, "message");

    if (!ngx_http_ai_gateway_jtree_is(msg, OBJECT)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    v = ngx_http_ai_gateway_jtree_get(msg, "id");

    if (ngx_http_ai_gateway_jtree_is(v, STRING)) {
        s = ngx_http_ai_gateway_translate_sval(b, v, &n);
        if (s == NULL) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
        }

        skip = ngx_http_ai_gateway_jtree_eq(v, "msg_", 1) ? 4 : 0;
        st->id_len = ngx_http_ai_gateway_translate_cut(st->id,
                                                       sizeof(st->id),
                                                       s + skip, n - skip);
    }

    v = ngx_http_ai_gateway_jtree_get(msg, "model");

    if (ngx_http_ai_gateway_jtree_is(v, STRING)) {
        s = ngx_http_ai_gateway_translate_sval(b, v, &n);
        if (s == NULL) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
        }

        st->model_len = ngx_http_ai_gateway_translate_cut(st->model,
                                                          sizeof(st->model),
                                                          s, n);
    }

    v = ngx_http_ai_gateway_jtree_get(msg, "usage");

    if (ngx_http_ai_gateway_jtree_is(v, OBJECT)) {
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
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    ngx_http_ai_gateway_jtree_t  *block, *type, *id, *name, *text;

    block = ngx_http_ai_gateway_jtree_get(root, "content_block");
    type = ngx_http_ai_gateway_jtree_get(block, "type");

    if (!ngx_http_ai_gateway_jtree_is(type, STRING)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    st->in_tool = 0;

    if (ngx_http_ai_gateway_jtree_eq(type, "tool_use", 0)) {
        id = ngx_http_ai_gateway_jtree_get(block, "id");
        name = ngx_http_ai_gateway_jtree_get(block, "name");

        if (!ngx_http_ai_gateway_jtree_is(id, STRING)
            || !ngx_http_ai_gateway_jtree_is(name, STRING))
        {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        /*
         * Anthropic streams one block after the other, never interleaved:
         * the block open now is the one its deltas are for.
         */

        st->in_tool = 1;
        st->tool_args = 0;
        st->tool_block = ngx_http_ai_gateway_jtree_integer(
                             ngx_http_ai_gateway_jtree_get(root, "index"));
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

    if (ngx_http_ai_gateway_jtree_eq(type, "text", 0)) {
        text = ngx_http_ai_gateway_jtree_get(block, "text");

        if (ngx_http_ai_gateway_jtree_is(text, STRING) && text->len) {
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

    st->tool_args = 1;

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
 * when it is not one the parser would take as it is (unescaped control
 * characters, bad escapes, invalid UTF-8) or is something we would rather
 * not pass on (\u escapes of surrogates: the parser checks their pairing).
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
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    ngx_http_ai_gateway_jtree_t  *delta, *type, *v;

    delta = ngx_http_ai_gateway_jtree_get(root, "delta");
    type = ngx_http_ai_gateway_jtree_get(delta, "type");

    if (!ngx_http_ai_gateway_jtree_is(type, STRING)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    if (ngx_http_ai_gateway_jtree_eq(type, "text_delta", 0)) {
        v = ngx_http_ai_gateway_jtree_get(delta, "text");

        if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        if (v->len) {
            ngx_http_ai_gateway_translate_content(st, b, v);
        }

        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    if (ngx_http_ai_gateway_jtree_eq(type, "input_json_delta", 0)) {
        v = ngx_http_ai_gateway_jtree_get(delta, "partial_json");

        if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
        }

        /* a server tool's input, or the empty first piece: nothing */

        if (!st->in_tool
            || ngx_http_ai_gateway_jtree_integer(
                   ngx_http_ai_gateway_jtree_get(root, "index"))
               != st->tool_block
            || v->len == 0)
        {
            return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
        }

        st->tool_args = 1;

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


/*
 * A tool block ends: a tool without input streamed only empty pieces,
 * and an OpenAI client parses the arguments it put together, so they
 * are "{}", as in a JSON answer, not ""
 */

static void
ngx_http_ai_gateway_translate_block_stop(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    if (!st->in_tool || st->tool_args) {
        return;
    }

    st->tool_args = 1;

    ngx_http_ai_gateway_translate_delta(st, b);
    ngx_http_ai_gateway_translate_lit(b, "{\"tool_calls\":[{\"index\":");
    ngx_http_ai_gateway_translate_uint(b, st->tool_index);
    ngx_http_ai_gateway_translate_lit(b,
                                  ",\"function\":{\"arguments\":\"{}\"}}]}");
    ngx_http_ai_gateway_translate_delta_end(b, NULL);
}


static int
ngx_http_ai_gateway_translate_message_delta(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_translate_buf_t *b)
{
    size_t                        n;
    const char                   *finish;
    const unsigned char          *s;
    ngx_http_ai_gateway_jtree_t  *delta, *v;

    delta = ngx_http_ai_gateway_jtree_get(root, "delta");

    if (!ngx_http_ai_gateway_jtree_is(delta, OBJECT)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;
    }

    /* output_tokens here is the total; newer streams repeat the input too */

    v = ngx_http_ai_gateway_jtree_get(root, "usage");

    if (ngx_http_ai_gateway_jtree_is(v, OBJECT)) {
        st->usage_found = 1;
        ngx_http_ai_gateway_translate_read_usage(v, &st->input_tokens,
                                                 &st->cache_read,
                                                 &st->cache_creation,
                                                 &st->output_tokens);
    }

    v = ngx_http_ai_gateway_jtree_get(delta, "stop_reason");

    if (!ngx_http_ai_gateway_jtree_is(v, STRING)) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_OK;
    }

    s = ngx_http_ai_gateway_translate_sval(b, v, &n);
    if (s == NULL) {
        return NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM;
    }

    finish = ngx_http_ai_gateway_translate_finish_reason(s, n);

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
