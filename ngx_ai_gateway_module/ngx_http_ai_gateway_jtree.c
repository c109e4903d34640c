
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The parser is a recursive descent over the bytes.  The values of the
 * containers still open wait on a stack (in the arena); when a container
 * closes, its values move to one array of the arena, so that children are
 * contiguous: index access is O(1), and a tree costs one node (48 bytes) a
 * value plus the stack's high water mark.  Plain runs inside strings are
 * skipped by ngx_http_ai_gateway_json_skip_plain() (SIMD where it can).
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_json.h"
#include "ngx_http_ai_gateway_jtree.h"


/* blocks from alloc(): at least this, doubling up to the maximum */
#define NGX_HTTP_AI_GATEWAY_JTREE_BLOCK      8192
#define NGX_HTTP_AI_GATEWAY_JTREE_BLOCK_MAX  (1024 * 1024)

/* the stack's first size, in nodes */
#define NGX_HTTP_AI_GATEWAY_JTREE_STACK      32

/* the longest literal _eq() compares with */
#define NGX_HTTP_AI_GATEWAY_JTREE_EQ_MAX     63


/* at the start of a block, aligned: nginx's ngx_pnalloc() does not */
struct ngx_http_ai_gateway_jtree_block_s {
    ngx_http_ai_gateway_jtree_block_t  *next;
    void                               *mem;
    size_t                              size;
};


typedef struct {
    const unsigned char                *start;
    const unsigned char                *p;
    const unsigned char                *end;
    ngx_http_ai_gateway_jtree_arena_t  *arena;
    ngx_http_ai_gateway_jtree_error_t  *err;
    ngx_http_ai_gateway_jtree_t        *stack;
    size_t                              top;
    size_t                              cap;
    unsigned                            depth;
} ngx_http_ai_gateway_jtree_parser_t;


static int ngx_http_ai_gateway_jtree_value(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v);
static int ngx_http_ai_gateway_jtree_object(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v);
static int ngx_http_ai_gateway_jtree_array(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v);
static inline int ngx_http_ai_gateway_jtree_next(
    ngx_http_ai_gateway_jtree_parser_t *s, unsigned char close);
static int ngx_http_ai_gateway_jtree_push(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v);
static int ngx_http_ai_gateway_jtree_close(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v,
    size_t base);
static int ngx_http_ai_gateway_jtree_str(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v,
    int key);
static int ngx_http_ai_gateway_jtree_num(
    ngx_http_ai_gateway_jtree_parser_t *s, ngx_http_ai_gateway_jtree_t *v);
static int ngx_http_ai_gateway_jtree_literal(
    ngx_http_ai_gateway_jtree_parser_t *s, const char *word, size_t len);
static int ngx_http_ai_gateway_jtree_hex4(const unsigned char *p,
    unsigned *code);
static inline int ngx_http_ai_gateway_jtree_token(
    ngx_http_ai_gateway_jtree_parser_t *s);
static int ngx_http_ai_gateway_jtree_space(
    ngx_http_ai_gateway_jtree_parser_t *s);
static int ngx_http_ai_gateway_jtree_fail(
    ngx_http_ai_gateway_jtree_parser_t *s, const char *text);
static int ngx_http_ai_gateway_jtree_nomem(
    ngx_http_ai_gateway_jtree_parser_t *s);


#define ngx_http_ai_gateway_jtree_align(n)  (((n) + 7) & ~((size_t) 7))


void
ngx_http_ai_gateway_jtree_arena_init(ngx_http_ai_gateway_jtree_arena_t *a,
    void *buf, size_t size, ngx_http_ai_gateway_jtree_alloc_pt alloc,
    ngx_http_ai_gateway_jtree_free_pt free, void *ctx)
{
    uintptr_t  p;

    a->pos = NULL;
    a->last = NULL;
    a->blocks = NULL;
    a->alloc = alloc;
    a->free = free;
    a->ctx = ctx;
    a->no_nul = 0;

    if (buf != NULL) {
        p = ngx_http_ai_gateway_jtree_align((uintptr_t) buf);

        if (p <= (uintptr_t) buf + size) {
            a->pos = (unsigned char *) p;
            a->last = (unsigned char *) buf + size;
        }
    }
}


void *
ngx_http_ai_gateway_jtree_alloc(ngx_http_ai_gateway_jtree_arena_t *a,
    size_t size)
{
    size_t                              bsize, hdr;
    unsigned char                      *p, *mem;
    ngx_http_ai_gateway_jtree_block_t  *b;

    size = ngx_http_ai_gateway_jtree_align(size);

    if (a->pos == NULL || (size_t) (a->last - a->pos) < size) {
        if (a->alloc == NULL) {
            return NULL;
        }

        /* room to align the block, too */
        hdr = ngx_http_ai_gateway_jtree_align(
                  sizeof(ngx_http_ai_gateway_jtree_block_t)) + 8;

        /* fewer blocks for big documents: each twice the last */

        bsize = NGX_HTTP_AI_GATEWAY_JTREE_BLOCK;

        if (a->blocks != NULL && a->blocks->size >= bsize / 2) {
            bsize = a->blocks->size * 2;
        }

        if (bsize > NGX_HTTP_AI_GATEWAY_JTREE_BLOCK_MAX) {
            bsize = NGX_HTTP_AI_GATEWAY_JTREE_BLOCK_MAX;
        }

        if (size > (size_t) -1 - hdr) {
            return NULL;
        }

        if (bsize < hdr + size) {
            bsize = hdr + size;
        }

        mem = a->alloc(a->ctx, bsize);
        if (mem == NULL) {
            return NULL;
        }

        b = (ngx_http_ai_gateway_jtree_block_t *)
                ngx_http_ai_gateway_jtree_align((uintptr_t) mem);
        b->next = a->blocks;
        b->mem = mem;
        b->size = bsize;
        a->blocks = b;
        a->pos = (unsigned char *) b + hdr - 8;
        a->last = mem + bsize;
    }

    p = a->pos;
    a->pos += size;

    return p;
}


void
ngx_http_ai_gateway_jtree_arena_free(ngx_http_ai_gateway_jtree_arena_t *a)
{
    ngx_http_ai_gateway_jtree_block_t  *b, *next;

    for (b = a->blocks; b; b = next) {
        next = b->next;

        if (a->free != NULL) {
            a->free(a->ctx, b->mem, b->size);
        }
    }

    a->blocks = NULL;
    a->pos = NULL;
    a->last = NULL;
}


ngx_http_ai_gateway_jtree_t *
ngx_http_ai_gateway_jtree_parse(const unsigned char *p, size_t len,
    ngx_http_ai_gateway_jtree_arena_t *a,
    ngx_http_ai_gateway_jtree_error_t *err)
{
    int                                  rc;
    ngx_http_ai_gateway_jtree_t         *root;
    ngx_http_ai_gateway_jtree_parser_t   s;

    err->text = NULL;
    err->offset = 0;
    err->nomem = 0;

    s.start = p;
    s.p = p;
    s.end = p + len;
    s.arena = a;
    s.err = err;
    s.stack = NULL;
    s.top = 0;
    s.cap = 0;
    s.depth = 1;

    s.p = ngx_http_ai_gateway_json_skip_ws(s.p, s.end);

    if (s.p == s.end || (*s.p != '{' && *s.p != '[')) {
        (void) ngx_http_ai_gateway_jtree_fail(&s, "'[' or '{' expected");
        return NULL;
    }

    root = ngx_http_ai_gateway_jtree_alloc(a,
                                       sizeof(ngx_http_ai_gateway_jtree_t));
    if (root == NULL) {
        (void) ngx_http_ai_gateway_jtree_nomem(&s);
        return NULL;
    }

    root->key = NULL;
    root->key_len = 0;
    root->escaped = 0;
    root->verbatim = 0;

    if (*s.p == '{') {
        rc = ngx_http_ai_gateway_jtree_object(&s, root);

    } else {
        rc = ngx_http_ai_gateway_jtree_array(&s, root);
    }

    if (rc != 0) {
        return NULL;
    }

    s.p = ngx_http_ai_gateway_json_skip_ws(s.p, s.end);

    if (s.p != s.end) {
        (void) ngx_http_ai_gateway_jtree_fail(&s, "end of file expected");
        return NULL;
    }

    return root;
}


/*
 * The next token, which must be there: in compact JSON, as providers and
 * SDKs send it, it is the next byte, seen without a call.
 */

static inline int
ngx_http_ai_gateway_jtree_token(ngx_http_ai_gateway_jtree_parser_t *s)
{
    if (s->p < s->end && *s->p > ' ') {
        return 0;
    }

    return ngx_http_ai_gateway_jtree_space(s);
}


/* skips white space to the next token, which must be there */

static int
ngx_http_ai_gateway_jtree_space(ngx_http_ai_gateway_jtree_parser_t *s)
{
    s->p = ngx_http_ai_gateway_json_skip_ws(s->p, s->end);

    if (s->p == s->end) {
        return ngx_http_ai_gateway_jtree_fail(s, "unexpected end of input");
    }

    return 0;
}


static int
ngx_http_ai_gateway_jtree_fail(ngx_http_ai_gateway_jtree_parser_t *s,
    const char *text)
{
    if (s->err->text == NULL) {
        s->err->text = text;
        s->err->offset = s->p - s->start;
    }

    return -1;
}


static int
ngx_http_ai_gateway_jtree_nomem(ngx_http_ai_gateway_jtree_parser_t *s)
{
    s->err->nomem = 1;

    return ngx_http_ai_gateway_jtree_fail(s, "out of memory");
}


/* jansson counts every value, scalars too, against the depth limit */

static int
ngx_http_ai_gateway_jtree_value(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v)
{
    int  rc;

    if (++s->depth > NGX_HTTP_AI_GATEWAY_JTREE_MAX_DEPTH) {
        return ngx_http_ai_gateway_jtree_fail(s,
                                              "maximum parsing depth reached");
    }

    v->escaped = 0;
    v->verbatim = 0;

    switch (*s->p) {

    case '"':
        rc = ngx_http_ai_gateway_jtree_str(s, v, 0);
        break;

    case '{':
        rc = ngx_http_ai_gateway_jtree_object(s, v);
        break;

    case '[':
        rc = ngx_http_ai_gateway_jtree_array(s, v);
        break;

    case 't':
        v->type = NGX_HTTP_AI_GATEWAY_JTREE_TRUE;
        rc = ngx_http_ai_gateway_jtree_literal(s, "true", 4);
        break;

    case 'f':
        v->type = NGX_HTTP_AI_GATEWAY_JTREE_FALSE;
        rc = ngx_http_ai_gateway_jtree_literal(s, "false", 5);
        break;

    case 'n':
        v->type = NGX_HTTP_AI_GATEWAY_JTREE_NULL;
        rc = ngx_http_ai_gateway_jtree_literal(s, "null", 4);
        break;

    default:
        rc = ngx_http_ai_gateway_jtree_num(s, v);
        break;
    }

    s->depth--;

    return rc;
}


static int
ngx_http_ai_gateway_jtree_object(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v)
{
    int                           rc;
    size_t                        base, len;
    unsigned char                *key;
    ngx_http_ai_gateway_jtree_t   k, m;

    base = s->top;
    v->type = NGX_HTTP_AI_GATEWAY_JTREE_OBJECT;

    s->p++;   /* '{' */

    if (ngx_http_ai_gateway_jtree_token(s) != 0) {
        return -1;
    }

    if (*s->p == '}') {
        s->p++;
        return ngx_http_ai_gateway_jtree_close(s, v, base);
    }

    for ( ;; ) {
        if (*s->p != '"') {
            return ngx_http_ai_gateway_jtree_fail(s, "string expected");
        }

        if (ngx_http_ai_gateway_jtree_str(s, &k, 1) != 0) {
            return -1;
        }

        /* keys are looked up often: decoded once */

        if (k.escaped) {
            key = ngx_http_ai_gateway_jtree_alloc(s->arena, k.len);
            if (key == NULL) {
                return ngx_http_ai_gateway_jtree_nomem(s);
            }

            len = ngx_http_ai_gateway_json_unescape(key, k.u.str, k.len);
            m.key = key;
            m.key_len = len;

        } else {
            m.key = k.u.str;
            m.key_len = k.len;
        }

        if (ngx_http_ai_gateway_jtree_token(s) != 0) {
            return -1;
        }

        if (*s->p != ':') {
            return ngx_http_ai_gateway_jtree_fail(s, "':' expected");
        }

        s->p++;

        if (ngx_http_ai_gateway_jtree_token(s) != 0) {
            return -1;
        }

        if (ngx_http_ai_gateway_jtree_value(s, &m) != 0
            || ngx_http_ai_gateway_jtree_push(s, &m) != 0)
        {
            return -1;
        }

        rc = ngx_http_ai_gateway_jtree_next(s, '}');

        if (rc != 1) {
            return rc ? -1 : ngx_http_ai_gateway_jtree_close(s, v, base);
        }
    }
}


static int
ngx_http_ai_gateway_jtree_array(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v)
{
    int                          rc;
    size_t                       base;
    ngx_http_ai_gateway_jtree_t  e;

    base = s->top;
    v->type = NGX_HTTP_AI_GATEWAY_JTREE_ARRAY;

    s->p++;   /* '[' */

    if (ngx_http_ai_gateway_jtree_token(s) != 0) {
        return -1;
    }

    if (*s->p == ']') {
        s->p++;
        return ngx_http_ai_gateway_jtree_close(s, v, base);
    }

    e.key = NULL;
    e.key_len = 0;

    for ( ;; ) {
        if (ngx_http_ai_gateway_jtree_value(s, &e) != 0
            || ngx_http_ai_gateway_jtree_push(s, &e) != 0)
        {
            return -1;
        }

        rc = ngx_http_ai_gateway_jtree_next(s, ']');

        if (rc != 1) {
            return rc ? -1 : ngx_http_ai_gateway_jtree_close(s, v, base);
        }
    }
}


/*
 * After a member or an element: 0 at the closing bracket (consumed), 1
 * after a comma and the white space after it (the next one follows), -1
 * on an error.
 */

static inline int
ngx_http_ai_gateway_jtree_next(ngx_http_ai_gateway_jtree_parser_t *s,
    unsigned char close)
{
    if (ngx_http_ai_gateway_jtree_token(s) != 0) {
        return -1;
    }

    if (*s->p == close) {
        s->p++;
        return 0;
    }

    if (*s->p != ',') {
        return ngx_http_ai_gateway_jtree_fail(s, close == '}' ? "'}' expected"
                                                              : "']' expected");
    }

    s->p++;

    return (ngx_http_ai_gateway_jtree_token(s) != 0) ? -1 : 1;
}


static int
ngx_http_ai_gateway_jtree_push(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v)
{
    size_t                        cap;
    ngx_http_ai_gateway_jtree_t  *stack;

    if (s->top == s->cap) {
        /* the old stack stays in the arena: at most as big as the new */

        cap = s->cap ? s->cap * 2 : NGX_HTTP_AI_GATEWAY_JTREE_STACK;

        if (cap > (size_t) -1 / sizeof(ngx_http_ai_gateway_jtree_t)) {
            return ngx_http_ai_gateway_jtree_nomem(s);
        }

        stack = ngx_http_ai_gateway_jtree_alloc(s->arena,
                                  cap * sizeof(ngx_http_ai_gateway_jtree_t));
        if (stack == NULL) {
            return ngx_http_ai_gateway_jtree_nomem(s);
        }

        if (s->top) {
            memcpy(stack, s->stack,
                   s->top * sizeof(ngx_http_ai_gateway_jtree_t));
        }

        s->stack = stack;
        s->cap = cap;
    }

    s->stack[s->top++] = *v;

    return 0;
}


/* the values from base up leave the stack for the container's array */

static int
ngx_http_ai_gateway_jtree_close(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v, size_t base)
{
    size_t                        n;
    ngx_http_ai_gateway_jtree_t  *child;

    n = s->top - base;
    child = NULL;

    if (n) {
        child = ngx_http_ai_gateway_jtree_alloc(s->arena,
                                    n * sizeof(ngx_http_ai_gateway_jtree_t));
        if (child == NULL) {
            return ngx_http_ai_gateway_jtree_nomem(s);
        }

        memcpy(child, s->stack + base,
               n * sizeof(ngx_http_ai_gateway_jtree_t));
    }

    s->top = base;
    v->u.child = child;
    v->len = n;

    return 0;
}


/*
 * Validates one string: the UTF-8 rules are jansson's (no overlong forms,
 * no surrogates, nothing above U+10FFFF), and keys must not hold NUL.
 */

static int
ngx_http_ai_gateway_jtree_str(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v, int key)
{
    unsigned              c, code, low, escaped, verbatim;
    size_t                need;
    const unsigned char  *p, *end;

    p = s->p + 1;
    end = s->end;
    escaped = 0;
    verbatim = 1;

    v->u.str = p;

    for ( ;; ) {

        /* the common case: a run of printable ASCII */
        p = ngx_http_ai_gateway_json_skip_plain(p, end);

        if (p == end) {
            s->p = p;
            return ngx_http_ai_gateway_jtree_fail(s, "premature end of input");
        }

        c = *p;

        if (c == '"') {
            break;
        }

        if (c < 0x20) {
            s->p = p;
            return ngx_http_ai_gateway_jtree_fail(s,
                                                "control character in string");
        }

        if (c == '\\') {
            escaped = 1;

            if (end - p < 2) {
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s,
                                                    "premature end of input");
            }

            switch (p[1]) {
            case '"': case '\\': case 'b': case 'f': case 'n': case 'r':
            case 't':
                p += 2;
                continue;

            case '/':
                verbatim = 0;
                p += 2;
                continue;

            case 'u':
                break;

            default:
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s, "invalid escape");
            }

            if (end - p < 6 || ngx_http_ai_gateway_jtree_hex4(p + 2, &code)) {
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s, "invalid \\u escape");
            }

            if (code == 0 && key) {
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s,
                                      "NUL byte in object key not supported");
            }

            if (code == 0 && s->arena->no_nul) {
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s,
                                      "\\u0000 is not allowed");
            }

            if (code >= 0xdc00 && code <= 0xdfff) {
                s->p = p;
                return ngx_http_ai_gateway_jtree_fail(s,
                                                  "invalid Unicode surrogate");
            }

            if (code >= 0xd800 && code <= 0xdbff) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u'
                    || ngx_http_ai_gateway_jtree_hex4(p + 8, &low)
                    || low < 0xdc00 || low > 0xdfff)
                {
                    s->p = p;
                    return ngx_http_ai_gateway_jtree_fail(s,
                                                  "invalid Unicode surrogate");
                }

                p += 6;
            }

            /* the writer's own form: \u00xx, lower case, no short form */

            if (code >= 0x20 || (p[5] >= 'A' && p[5] <= 'F')
                || code == '\b' || code == '\f' || code == '\n'
                || code == '\r' || code == '\t')
            {
                verbatim = 0;
            }

            p += 6;
            continue;
        }

        /* a multi-byte UTF-8 sequence */

        need = ngx_http_ai_gateway_json_utf8_char(p, end);

        if (need == 0) {
            s->p = p;
            return ngx_http_ai_gateway_jtree_fail(s, "invalid UTF-8");
        }

        p += need;
    }

    v->type = NGX_HTTP_AI_GATEWAY_JTREE_STRING;
    v->len = p - v->u.str;
    v->escaped = escaped;
    v->verbatim = verbatim;
    v->v.arena = s->arena;

    s->p = p + 1;

    return 0;
}


static int
ngx_http_ai_gateway_jtree_hex4(const unsigned char *p, unsigned *code)
{
    unsigned  i, c, v;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            c = (c | 0x20) - 'a' + 10;

        } else {
            return -1;
        }

        v = (v << 4) | c;
    }

    *code = v;

    return 0;
}


/*
 * Integers must fit int64_t (jansson's json_int_t); reals must be finite,
 * as strtod() sees them.  A real without an exponent and with fewer than
 * 300 digits is below DBL_MAX: only others are converted here.
 */

static int
ngx_http_ai_gateway_jtree_num(ngx_http_ai_gateway_jtree_parser_t *s,
    ngx_http_ai_gateway_jtree_t *v)
{
    int                   neg, real, exp;
    double                d;
    uint64_t              u, limit;
    const unsigned char  *p, *start;

    p = s->p;
    start = p;
    neg = 0;
    real = 0;
    exp = 0;
    u = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }

    if (p == s->end || *p < '0' || *p > '9') {
        return ngx_http_ai_gateway_jtree_fail(s, "invalid token");
    }

    limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

    if (*p == '0') {
        p++;

    } else {
        while (p < s->end && *p >= '0' && *p <= '9') {
            if (u > (limit - (*p - '0')) / 10) {
                u = limit + 1;   /* overflow, unless this is a real */

            } else {
                u = u * 10 + (*p - '0');
            }

            p++;
        }
    }

    if (p < s->end && *p == '.') {
        real = 1;
        p++;

        if (p == s->end || *p < '0' || *p > '9') {
            s->p = p;
            return ngx_http_ai_gateway_jtree_fail(s, "invalid number");
        }

        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < s->end && (*p == 'e' || *p == 'E')) {
        real = 1;
        exp = 1;
        p++;

        if (p < s->end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == s->end || *p < '0' || *p > '9') {
            s->p = p;
            return ngx_http_ai_gateway_jtree_fail(s, "invalid number");
        }

        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    s->p = p;
    v->u.str = start;
    v->len = p - start;

    if (!real) {
        if (u > limit) {
            s->p = start;
            return ngx_http_ai_gateway_jtree_fail(s, "too big integer");
        }

        v->type = NGX_HTTP_AI_GATEWAY_JTREE_INTEGER;
        v->v.integer = neg ? (int64_t) (0 - u) : (int64_t) u;

        return 0;
    }

    v->type = NGX_HTTP_AI_GATEWAY_JTREE_REAL;
    v->v.integer = 0;

    if (exp || v->len >= 300) {
        errno = 0;
        d = ngx_http_ai_gateway_jtree_number(v);

        if (errno == ERANGE && (d > 1.0 || d < -1.0)) {
            s->p = start;
            return ngx_http_ai_gateway_jtree_fail(s, "real number overflow");
        }
    }

    return 0;
}


static int
ngx_http_ai_gateway_jtree_literal(ngx_http_ai_gateway_jtree_parser_t *s,
    const char *word, size_t len)
{
    if ((size_t) (s->end - s->p) < len || memcmp(s->p, word, len) != 0) {
        return ngx_http_ai_gateway_jtree_fail(s, "invalid token");
    }

    s->p += len;

    return 0;
}


size_t
ngx_http_ai_gateway_jtree_size(const ngx_http_ai_gateway_jtree_t *a)
{
    if (a == NULL || a->type != NGX_HTTP_AI_GATEWAY_JTREE_ARRAY) {
        return 0;
    }

    return a->len;
}


ngx_http_ai_gateway_jtree_t *
ngx_http_ai_gateway_jtree_at(const ngx_http_ai_gateway_jtree_t *a, size_t i)
{
    if (a == NULL || a->type != NGX_HTTP_AI_GATEWAY_JTREE_ARRAY
        || i >= a->len)
    {
        return NULL;
    }

    return &a->u.child[i];
}


int64_t
ngx_http_ai_gateway_jtree_integer(const ngx_http_ai_gateway_jtree_t *n)
{
    if (n == NULL || n->type != NGX_HTTP_AI_GATEWAY_JTREE_INTEGER) {
        return 0;
    }

    return n->v.integer;
}


/*
 * Reals without an exponent and with at most 15 digits (0.7, 12.5) are a
 * mantissa below 2^53 and a power of ten up to 10^22, both exact doubles:
 * one division rounds correctly (Clinger's fast path), as strtod() would.
 * Others go to strtod(), which wants a NUL: their text is copied.
 */

double
ngx_http_ai_gateway_jtree_number(const ngx_http_ai_gateway_jtree_t *n)
{
    char                  buf[128], *copy;
    double                d;
    size_t                digits, frac;
    uint64_t              m;
    const unsigned char  *p, *end;

    static const double   pow10[] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
        1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
    };

    if (n == NULL) {
        return 0;
    }

    if (n->type == NGX_HTTP_AI_GATEWAY_JTREE_INTEGER) {
        return (double) n->v.integer;
    }

    if (n->type != NGX_HTTP_AI_GATEWAY_JTREE_REAL) {
        return 0;
    }

    p = n->u.str;
    end = p + n->len;
    p += (*p == '-');
    m = 0;
    digits = 0;
    frac = 0;

    for ( /* void */ ; p < end && digits <= 15; p++) {
        if (*p == '.') {
            frac = 1;
            continue;
        }

        if (*p < '0' || *p > '9') {
            break;
        }

        m = m * 10 + (*p - '0');
        digits += (m != 0);
        frac += (frac != 0);
    }

    if (p == end && digits <= 15 && frac >= 2 && frac - 1 <= 22) {
        d = (double) m / pow10[frac - 1];
        return (*n->u.str == '-') ? -d : d;
    }

    copy = buf;

    if (n->len >= sizeof(buf)) {
        copy = malloc(n->len + 1);
        if (copy == NULL) {
            return 0;
        }
    }

    memcpy(copy, n->u.str, n->len);
    copy[n->len] = '\0';

    d = strtod(copy, NULL);

    if (copy != buf) {
        free(copy);
    }

    return d;
}


const unsigned char *
ngx_http_ai_gateway_jtree_string(ngx_http_ai_gateway_jtree_t *n, size_t *len)
{
    unsigned char  *d;

    *len = 0;

    if (n == NULL || n->type != NGX_HTTP_AI_GATEWAY_JTREE_STRING) {
        return NULL;
    }

    if (n->escaped) {
        /* decoding never makes a JSON string longer */

        d = ngx_http_ai_gateway_jtree_alloc(n->v.arena, n->len + 1);
        if (d == NULL) {
            return NULL;
        }

        n->len = ngx_http_ai_gateway_json_unescape(d, n->u.str, n->len);
        d[n->len] = '\0';
        n->u.str = d;
        n->escaped = 0;
        n->verbatim = 0;
    }

    *len = n->len;

    return n->u.str;
}


/*
 * An escaped string is compared without the arena: a prefix of its raw
 * bytes is decoded on the stack, long enough (6 bytes an escape at most,
 * 12 for a surrogate pair cut short) for one byte more than s.
 */

int
ngx_http_ai_gateway_jtree_eq_decoded(const ngx_http_ai_gateway_jtree_t *n,
    const char *s, int prefix)
{
    size_t                i, len;
    unsigned char         buf[(NGX_HTTP_AI_GATEWAY_JTREE_EQ_MAX + 1) * 6
                              + 12];
    const unsigned char  *p;

    if (n == NULL || n->type != NGX_HTTP_AI_GATEWAY_JTREE_STRING) {
        return 0;
    }

    p = n->u.str;
    len = n->len;

    if (n->escaped) {
        if (strlen(s) > NGX_HTTP_AI_GATEWAY_JTREE_EQ_MAX) {
            return 0;
        }

        len = ngx_http_ai_gateway_json_unescape(buf, p,
                                       len < sizeof(buf) ? len : sizeof(buf));
        p = buf;
    }

    /* a byte loop: s is short, and usually differs at once */

    for (i = 0; i < len && s[i] != '\0' && p[i] == (unsigned char) s[i]; i++)
    {
        /* void */
    }

    return s[i] == '\0' && (prefix || i == len || p[i] == '\0');
}


/* ---- the request facts, from a tree ---- */


/* as in the scanner: prompt text, containers of text, neither */
#define NGX_HTTP_AI_GATEWAY_JTREE_TEXT       1
#define NGX_HTTP_AI_GATEWAY_JTREE_CONTAINER  2


static uint64_t ngx_http_ai_gateway_jtree_chars(
    const ngx_http_ai_gateway_jtree_t *n, unsigned role);
static uint64_t ngx_http_ai_gateway_jtree_code_points(
    const ngx_http_ai_gateway_jtree_t *n);


void
ngx_http_ai_gateway_jtree_facts(ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_json_facts_t *facts)
{
    int                                k;
    size_t                             i;
    ngx_http_ai_gateway_jtree_t       *n;
    ngx_http_ai_gateway_json_value_t  *v;

    static const unsigned char  types[] = {
        NGX_HTTP_AI_GATEWAY_JSON_NULL,       /* JTREE_NULL */
        NGX_HTTP_AI_GATEWAY_JSON_TRUE,       /* JTREE_TRUE */
        NGX_HTTP_AI_GATEWAY_JSON_FALSE,      /* JTREE_FALSE */
        NGX_HTTP_AI_GATEWAY_JSON_INTEGER,    /* JTREE_INTEGER */
        NGX_HTTP_AI_GATEWAY_JSON_REAL,       /* JTREE_REAL */
        NGX_HTTP_AI_GATEWAY_JSON_STRING,     /* JTREE_STRING */
        NGX_HTTP_AI_GATEWAY_JSON_ARRAY,      /* JTREE_ARRAY */
        NGX_HTTP_AI_GATEWAY_JSON_OBJECT      /* JTREE_OBJECT */
    };

    memset(facts, 0, sizeof(ngx_http_ai_gateway_json_facts_t));

    /* the members in order: a duplicate key replaces what came before */

    for (i = 0; i < root->len; i++) {
        n = &root->u.child[i];
        k = ngx_http_ai_gateway_json_key_find(n->key, n->key_len, 1);

        if (k < 0) {
            continue;
        }

        v = &facts->field[k];
        memset(v, 0, sizeof(ngx_http_ai_gateway_json_value_t));
        v->type = types[n->type];

        switch (n->type) {

        case NGX_HTTP_AI_GATEWAY_JTREE_STRING:
            /* not decoded yet: the bytes between the quotes */
            v->str = n->u.str;
            v->len = n->len;
            v->escaped = n->escaped;
            v->start = n->u.str - 1;
            v->raw_len = n->len + 2;
            break;

        case NGX_HTTP_AI_GATEWAY_JTREE_INTEGER:
            v->integer = n->v.integer;
            /* fall through */

        case NGX_HTTP_AI_GATEWAY_JTREE_REAL:
            v->start = n->u.str;
            v->raw_len = n->len;
            break;

        default:
            break;
        }
    }
}


/*
 * The prompt text count alone: a walk of the messages' strings that only
 * usage records, token budgets and $ai_input_characters need, so that a
 * translation without them does not pay for it.
 */

uint64_t
ngx_http_ai_gateway_jtree_input_chars(ngx_http_ai_gateway_jtree_t *root)
{
    int                           k;
    size_t                        i;
    uint64_t                      sum, slot[NGX_HTTP_AI_GATEWAY_KEY_LAST];
    ngx_http_ai_gateway_jtree_t  *n;

    memset(slot, 0, sizeof(slot));

    /* a duplicate key replaces what came before */

    for (i = 0; i < root->len; i++) {
        n = &root->u.child[i];
        k = ngx_http_ai_gateway_json_key_find(n->key, n->key_len, 1);

        if (k == NGX_HTTP_AI_GATEWAY_KEY_MESSAGES) {
            slot[k] = ngx_http_ai_gateway_jtree_chars(n,
                                        NGX_HTTP_AI_GATEWAY_JTREE_CONTAINER);

        } else if (k >= NGX_HTTP_AI_GATEWAY_KEY_SYSTEM
                   && k <= NGX_HTTP_AI_GATEWAY_KEY_INSTRUCTIONS)
        {
            slot[k] = ngx_http_ai_gateway_jtree_chars(n,
                                             NGX_HTTP_AI_GATEWAY_JTREE_TEXT);
        }
    }

    sum = 0;

    for (k = 0; k < NGX_HTTP_AI_GATEWAY_KEY_LAST; k++) {
        sum += slot[k];
    }

    return sum;
}


/* the scanner's rule: text strings count; in objects under text or a
 * container, "content", "text" and "output" are text (the last of each) */

static uint64_t
ngx_http_ai_gateway_jtree_chars(const ngx_http_ai_gateway_jtree_t *n,
    unsigned role)
{
    int                           k;
    size_t                        i;
    uint64_t                      sum, slot[3];
    ngx_http_ai_gateway_jtree_t  *c;

    switch (n->type) {

    case NGX_HTTP_AI_GATEWAY_JTREE_STRING:
        return (role == NGX_HTTP_AI_GATEWAY_JTREE_TEXT)
               ? ngx_http_ai_gateway_jtree_code_points(n) : 0;

    case NGX_HTTP_AI_GATEWAY_JTREE_ARRAY:
        for (sum = 0, i = 0; i < n->len; i++) {
            sum += ngx_http_ai_gateway_jtree_chars(&n->u.child[i], role);
        }

        return sum;

    case NGX_HTTP_AI_GATEWAY_JTREE_OBJECT:
        slot[0] = 0;
        slot[1] = 0;
        slot[2] = 0;

        for (i = 0; i < n->len; i++) {
            c = &n->u.child[i];
            k = ngx_http_ai_gateway_json_key_find(c->key, c->key_len, 0);

            if (k >= 0 && k < 3) {
                slot[k] = ngx_http_ai_gateway_jtree_chars(c,
                                             NGX_HTTP_AI_GATEWAY_JTREE_TEXT);
            }
        }

        return slot[0] + slot[1] + slot[2];

    default:
        return 0;
    }
}


/* code points of a string as parsed (valid UTF-8, escapes not decoded):
 * an escape is one, a surrogate pair too */

static uint64_t
ngx_http_ai_gateway_jtree_code_points(const ngx_http_ai_gateway_jtree_t *n)
{
    uint64_t              count;
    const unsigned char  *p, *q, *end;

    p = n->u.str;
    end = p + n->len;

    if (!n->escaped) {
        return ngx_http_ai_gateway_json_utf8_count(p, end);
    }

    count = 0;

    while (p < end) {
        if (*p != '\\') {
            /* the run up to the next escape */
            q = memchr(p, '\\', end - p);
            q = q ? q : end;
            count += ngx_http_ai_gateway_json_utf8_count(p, q);
            p = q;
            continue;
        }

        count++;

        if (p[1] != 'u') {
            p += 2;
            continue;
        }

        /* a high surrogate's pair follows it: the two are one */
        if ((p[2] | 0x20) == 'd' && p[3] >= '8' && (p[3] <= '9'
                                                   || (p[3] | 0x20) == 'a'
                                                   || (p[3] | 0x20) == 'b')
            && end - p >= 12 && p[6] == '\\')
        {
            p += 12;
            continue;
        }

        p += 6;
    }

    return count;
}
