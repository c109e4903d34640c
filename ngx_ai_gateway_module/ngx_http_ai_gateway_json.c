
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The scanner accepts exactly what jansson's json_loadb(data, len, 0, ..)
 * accepts (an object or an array at the top, RFC 8259 grammar, valid UTF-8,
 * no "\u0000", integers within int64, finite reals, depth <= 2048) and
 * reports the top-level fields as jansson would see them: with duplicate
 * keys the last one wins.  t/unit/test_json.c checks both against jansson.
 *
 * Prompt text (input_chars) is the sum of the Unicode code points of:
 *   - the top-level "system", "prompt", "input" and "instructions" values,
 *     when strings, or of the strings in them when arrays;
 *   - in objects inside those or inside "messages": the "content", "text"
 *     and "output" values, counted by the same rule, recursively.
 * So message contents, text parts, tool results and Anthropic system blocks
 * count, while roles, types, names, image URLs and base64 data do not.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
#include <emmintrin.h>
#endif

#include "ngx_http_ai_gateway_json.h"


#if defined(__GNUC__)
#define ngx_http_ai_gateway_json_inline  inline __attribute__((always_inline))
#else
#define ngx_http_ai_gateway_json_inline  inline
#endif



typedef enum {
    NGX_HTTP_AI_GATEWAY_ROLE_NONE = 0,
    NGX_HTTP_AI_GATEWAY_ROLE_TEXT,        /* strings here are prompt text */
    NGX_HTTP_AI_GATEWAY_ROLE_CONTAINER    /* text lives in known keys */
} ngx_http_ai_gateway_json_role_e;


typedef struct {
    const unsigned char               *start;
    const unsigned char               *p;
    const unsigned char               *end;
    ngx_http_ai_gateway_json_facts_t  *facts;
    unsigned                           depth;
} ngx_http_ai_gateway_json_scanner_t;


static int ngx_http_ai_gateway_json_value(
    ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars,
    ngx_http_ai_gateway_json_value_t *v);
static int ngx_http_ai_gateway_json_object(
    ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars, int top);
static int ngx_http_ai_gateway_json_array(
    ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars);
static int ngx_http_ai_gateway_json_string(
    ngx_http_ai_gateway_json_scanner_t *s, uint64_t *chars,
    ngx_http_ai_gateway_json_value_t *v);
static int ngx_http_ai_gateway_json_number(
    ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_value_t *v);
static int ngx_http_ai_gateway_json_literal(
    ngx_http_ai_gateway_json_scanner_t *s, const char *word, size_t len);
static int ngx_http_ai_gateway_json_hex4(const unsigned char *p,
    unsigned *code);
static int ngx_http_ai_gateway_json_key_lookup(const unsigned char *key,
    size_t len, int escaped, int top);
static ngx_http_ai_gateway_json_inline int ngx_http_ai_gateway_json_token(
    ngx_http_ai_gateway_json_scanner_t *s);
static int ngx_http_ai_gateway_json_fail(
    ngx_http_ai_gateway_json_scanner_t *s, const char *error);


static const struct {
    const char  *name;
    size_t       len;
} ngx_http_ai_gateway_json_keys[] = {
    { "model", 5 },
    { "stream", 6 },
    { "max_tokens", 10 },
    { "max_completion_tokens", 21 },
    { "max_output_tokens", 17 },
    { "user", 4 },
    { "messages", 8 },
    { "system", 6 },
    { "prompt", 6 },
    { "input", 5 },
    { "instructions", 12 },
    { "stream_options", 14 },
    { "anthropic_version", 17 },
    { "encoding_format", 15 },
    { "dimensions", 10 },
    { "previous_response_id", 20 },
};


/* the keys that hold text inside a container object, in slot order:
 * "content", "text", "output" (json_key_find()) */
#define NGX_HTTP_AI_GATEWAY_JSON_TEXT_SLOTS  3


int
ngx_http_ai_gateway_json_scan(const unsigned char *data, size_t len,
    ngx_http_ai_gateway_json_facts_t *facts)
{
    uint64_t                            chars;
    unsigned char                       first;
    ngx_http_ai_gateway_json_scanner_t  s;

    memset(facts, 0, sizeof(ngx_http_ai_gateway_json_facts_t));

    s.start = data;
    s.p = data;
    s.end = data + len;
    s.facts = facts;
    s.depth = 0;

    s.p = ngx_http_ai_gateway_json_skip_ws(s.p, s.end);

    if (s.p == s.end) {
        return ngx_http_ai_gateway_json_fail(&s, "empty document");
    }

    chars = 0;
    first = *s.p;

    if (first == '{') {
        s.depth = 1;

        if (ngx_http_ai_gateway_json_object(&s, NGX_HTTP_AI_GATEWAY_ROLE_NONE,
                                            &chars, 1)
            != 0)
        {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

    } else if (first == '[') {
        s.depth = 1;

        if (ngx_http_ai_gateway_json_array(&s, NGX_HTTP_AI_GATEWAY_ROLE_NONE,
                                           &chars)
            != 0)
        {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

    } else {
        return ngx_http_ai_gateway_json_fail(&s, "'[' or '{' expected");
    }

    s.p = ngx_http_ai_gateway_json_skip_ws(s.p, s.end);

    if (s.p != s.end) {
        return ngx_http_ai_gateway_json_fail(&s, "end of file expected");
    }

    if (first == '[') {
        return NGX_HTTP_AI_GATEWAY_JSON_NOT_OBJECT;
    }

    return NGX_HTTP_AI_GATEWAY_JSON_OK;
}


/* skips white space to the next token, which must be there; inline: it
 * runs between any two tokens, mostly with nothing to skip */

static ngx_http_ai_gateway_json_inline int
ngx_http_ai_gateway_json_token(ngx_http_ai_gateway_json_scanner_t *s)
{
    if (s->p < s->end && !ngx_http_ai_gateway_json_ws(*s->p)) {
        return 0;
    }

    s->p = ngx_http_ai_gateway_json_skip_ws(s->p, s->end);

    if (s->p == s->end) {
        return ngx_http_ai_gateway_json_fail(s, "unexpected end of input");
    }

    return 0;
}


static int
ngx_http_ai_gateway_json_fail(ngx_http_ai_gateway_json_scanner_t *s,
    const char *error)
{
    if (s->facts->error == NULL) {
        s->facts->error = error;
        s->facts->error_offset = s->p - s->start;
    }

    return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
}


static int
ngx_http_ai_gateway_json_value(ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars,
    ngx_http_ai_gateway_json_value_t *v)
{
    int  rc;

    if (s->p == s->end) {
        return ngx_http_ai_gateway_json_fail(s, "unexpected end of input");
    }

    if (++s->depth > NGX_HTTP_AI_GATEWAY_JSON_MAX_DEPTH) {
        return ngx_http_ai_gateway_json_fail(s,
                                             "maximum parsing depth reached");
    }

    v->start = s->p;

    switch (*s->p) {

    case '"':
        rc = ngx_http_ai_gateway_json_string(s,
                        role == NGX_HTTP_AI_GATEWAY_ROLE_TEXT ? chars : NULL,
                        v);
        break;

    case '{':
        v->type = NGX_HTTP_AI_GATEWAY_JSON_OBJECT;
        rc = ngx_http_ai_gateway_json_object(s,
                        role == NGX_HTTP_AI_GATEWAY_ROLE_NONE
                        ? NGX_HTTP_AI_GATEWAY_ROLE_NONE
                        : NGX_HTTP_AI_GATEWAY_ROLE_CONTAINER,
                        chars, 0);
        break;

    case '[':
        v->type = NGX_HTTP_AI_GATEWAY_JSON_ARRAY;
        rc = ngx_http_ai_gateway_json_array(s, role, chars);
        break;

    case 't':
        v->type = NGX_HTTP_AI_GATEWAY_JSON_TRUE;
        rc = ngx_http_ai_gateway_json_literal(s, "true", 4);
        break;

    case 'f':
        v->type = NGX_HTTP_AI_GATEWAY_JSON_FALSE;
        rc = ngx_http_ai_gateway_json_literal(s, "false", 5);
        break;

    case 'n':
        v->type = NGX_HTTP_AI_GATEWAY_JSON_NULL;
        rc = ngx_http_ai_gateway_json_literal(s, "null", 4);
        break;

    default:
        rc = ngx_http_ai_gateway_json_number(s, v);
        break;
    }

    s->depth--;
    v->raw_len = s->p - v->start;

    return rc;
}


static int
ngx_http_ai_gateway_json_object(ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars, int top)
{
    int                               k;
    uint32_t                          seen;
    uint64_t                          slot[NGX_HTTP_AI_GATEWAY_KEY_LAST];
    uint64_t                          n, total;
    ngx_http_ai_gateway_json_role_e   vrole;
    ngx_http_ai_gateway_json_value_t  key, val;

    /*
     * Text counts are kept per key, so that a duplicate key replaces the
     * earlier count, as it replaces the value; "seen" tells which slots
     * hold one (no clearing of all of them per object).
     */
    seen = 0;
    total = 0;

    s->p++;   /* '{' */

    if (ngx_http_ai_gateway_json_token(s) != 0) {
        return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
    }

    if (*s->p == '}') {
        s->p++;
        return 0;
    }

    for ( ;; ) {
        if (*s->p != '"') {
            return ngx_http_ai_gateway_json_fail(s, "string or '}' expected");
        }

        if (ngx_http_ai_gateway_json_string(s, NULL, &key) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (*s->p != ':') {
            return ngx_http_ai_gateway_json_fail(s, "':' expected");
        }

        s->p++;

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        k = -1;
        vrole = NGX_HTTP_AI_GATEWAY_ROLE_NONE;

        if (top || role == NGX_HTTP_AI_GATEWAY_ROLE_CONTAINER) {
            k = ngx_http_ai_gateway_json_key_lookup(key.str, key.len,
                                                    key.escaped, top);
        }

        if (k >= 0) {
            if (!top) {
                vrole = NGX_HTTP_AI_GATEWAY_ROLE_TEXT;

            } else if (k == NGX_HTTP_AI_GATEWAY_KEY_MESSAGES) {
                vrole = NGX_HTTP_AI_GATEWAY_ROLE_CONTAINER;

            } else if (k >= NGX_HTTP_AI_GATEWAY_KEY_SYSTEM
                       && k <= NGX_HTTP_AI_GATEWAY_KEY_INSTRUCTIONS)
            {
                vrole = NGX_HTTP_AI_GATEWAY_ROLE_TEXT;
            }
        }

        n = 0;
        memset(&val, 0, sizeof(val));

        if (ngx_http_ai_gateway_json_value(s, vrole, &n, &val) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (k >= 0) {
            if (seen & ((uint32_t) 1 << k)) {
                total -= slot[k];
            }

            seen |= (uint32_t) 1 << k;
            slot[k] = n;
            total += n;

            if (top) {
                s->facts->field[k] = val;
            }
        }

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (*s->p == '}') {
            s->p++;
            break;
        }

        if (*s->p != ',') {
            return ngx_http_ai_gateway_json_fail(s, "'}' expected");
        }

        s->p++;

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }
    }

    if (top) {
        s->facts->input_chars = total;

    } else {
        *chars += total;
    }

    return 0;
}


static int
ngx_http_ai_gateway_json_array(ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_role_e role, uint64_t *chars)
{
    ngx_http_ai_gateway_json_value_t  val;

    s->p++;   /* '[' */

    if (ngx_http_ai_gateway_json_token(s) != 0) {
        return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
    }

    if (*s->p == ']') {
        s->p++;
        return 0;
    }

    for ( ;; ) {
        if (ngx_http_ai_gateway_json_value(s, role, chars, &val) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }

        if (*s->p == ']') {
            s->p++;
            return 0;
        }

        if (*s->p != ',') {
            return ngx_http_ai_gateway_json_fail(s, "']' expected");
        }

        s->p++;

        if (ngx_http_ai_gateway_json_token(s) != 0) {
            return NGX_HTTP_AI_GATEWAY_JSON_INVALID;
        }
    }
}


/*
 * Validates one string, counting code points when chars is set.
 * UTF-8 rules are jansson's: no overlong forms, no surrogates, nothing
 * above U+10FFFF.
 */

static int
ngx_http_ai_gateway_json_string(ngx_http_ai_gateway_json_scanner_t *s,
    uint64_t *chars, ngx_http_ai_gateway_json_value_t *v)
{
    unsigned              c, code, low;
    size_t                need;
    uint64_t              n;
    const unsigned char  *p, *end, *start;

    p = s->p + 1;
    end = s->end;
    n = 0;

    v->type = NGX_HTTP_AI_GATEWAY_JSON_STRING;
    v->str = p;
    v->escaped = 0;

    for ( ;; ) {

        /* the common case: a run of printable ASCII */
        start = p;
        p = ngx_http_ai_gateway_json_skip_plain(p, end);
        n += p - start;

        if (p == end) {
            s->p = p;
            return ngx_http_ai_gateway_json_fail(s, "premature end of input");
        }

        c = *p;

        if (c == '"') {
            break;
        }

        if (c < 0x20) {
            s->p = p;
            return ngx_http_ai_gateway_json_fail(s,
                                         "control character in string");
        }

        if (c == '\\') {
            v->escaped = 1;

            if (end - p < 2) {
                s->p = p;
                return ngx_http_ai_gateway_json_fail(s,
                                                     "premature end of input");
            }

            switch (p[1]) {
            case '"': case '\\': case '/': case 'b':
            case 'f': case 'n': case 'r': case 't':
                p += 2;
                n++;
                continue;

            case 'u':
                break;

            default:
                s->p = p;
                return ngx_http_ai_gateway_json_fail(s, "invalid escape");
            }

            if (end - p < 6 || ngx_http_ai_gateway_json_hex4(p + 2, &code)) {
                s->p = p;
                return ngx_http_ai_gateway_json_fail(s, "invalid \\u escape");
            }

            if (code == 0) {
                s->p = p;
                return ngx_http_ai_gateway_json_fail(s,
                                             "\\u0000 is not allowed");
            }

            if (code >= 0xdc00 && code <= 0xdfff) {
                s->p = p;
                return ngx_http_ai_gateway_json_fail(s,
                                             "invalid Unicode surrogate");
            }

            if (code >= 0xd800 && code <= 0xdbff) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u'
                    || ngx_http_ai_gateway_json_hex4(p + 8, &low)
                    || low < 0xdc00 || low > 0xdfff)
                {
                    s->p = p;
                    return ngx_http_ai_gateway_json_fail(s,
                                             "invalid Unicode surrogate");
                }

                p += 6;
            }

            p += 6;
            n++;
            continue;
        }

        /*
         * Multi-byte UTF-8 sequences, one after the other (Chinese or
         * Japanese text is all of them: going back to the ASCII scan
         * after each cost more than the check).  The forms that cannot be
         * overlong or surrogates are checked here: two bytes led by
         * C2-DF, three led by E1-EC or EE-EF; the others by utf8_char().
         */

        do {
            c = *p;

            if (c >= 0xe1 && c <= 0xef && c != 0xed && end - p >= 3
                && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80)
            {
                p += 3;

            } else if (c >= 0xc2 && c <= 0xdf && end - p >= 2
                       && (p[1] & 0xc0) == 0x80)
            {
                p += 2;

            } else {
                need = ngx_http_ai_gateway_json_utf8_char(p, end);

                if (need == 0) {
                    s->p = p;
                    return ngx_http_ai_gateway_json_fail(s, "invalid UTF-8");
                }

                p += need;
            }

            n++;

        } while (p < end && *p >= 0x80);
    }

    v->len = p - v->str;
    s->p = p + 1;

    if (chars) {
        *chars += n;
    }

    return 0;
}




static int
ngx_http_ai_gateway_json_hex4(const unsigned char *p, unsigned *code)
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
 * as strtod() sees them.
 */

static int
ngx_http_ai_gateway_json_number(ngx_http_ai_gateway_json_scanner_t *s,
    ngx_http_ai_gateway_json_value_t *v)
{
    int                   neg, real, exp, rc;
    char                  buf[128], *copy;
    double                d;
    size_t                len, digits;
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
        return ngx_http_ai_gateway_json_fail(s, "invalid token");
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

    digits = p - start - neg;

    if (p < s->end && *p == '.') {
        real = 1;
        p++;

        if (p == s->end || *p < '0' || *p > '9') {
            s->p = p;
            return ngx_http_ai_gateway_json_fail(s, "invalid number");
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
            return ngx_http_ai_gateway_json_fail(s, "invalid number");
        }

        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    s->p = p;

    if (!real) {
        if (u > limit) {
            s->p = start;
            return ngx_http_ai_gateway_json_fail(s, "too big integer");
        }

        v->type = NGX_HTTP_AI_GATEWAY_JSON_INTEGER;
        v->integer = neg ? (int64_t) (0 - u) : (int64_t) u;

        return 0;
    }

    v->type = NGX_HTTP_AI_GATEWAY_JSON_REAL;

    /*
     * Without an exponent, 308 digits or fewer before the point stay below
     * DBL_MAX: strtod() could not say otherwise, and it is the dearest part
     * of a number ("temperature":0.7 is in most requests).
     */

    if (!exp && digits <= 308) {
        return 0;
    }

    len = p - start;
    copy = buf;

    if (len >= sizeof(buf)) {
        copy = malloc(len + 1);
        if (copy == NULL) {
            return ngx_http_ai_gateway_json_fail(s, "out of memory");
        }
    }

    memcpy(copy, start, len);
    copy[len] = '\0';

    errno = 0;
    d = strtod(copy, NULL);
    rc = (errno == ERANGE && (d > 1.0 || d < -1.0));

    if (copy != buf) {
        free(copy);
    }

    if (rc) {
        s->p = start;
        return ngx_http_ai_gateway_json_fail(s, "real number overflow");
    }

    return 0;
}


static int
ngx_http_ai_gateway_json_literal(ngx_http_ai_gateway_json_scanner_t *s,
    const char *word, size_t len)
{
    if ((size_t) (s->end - s->p) < len || memcmp(s->p, word, len) != 0) {
        return ngx_http_ai_gateway_json_fail(s, "invalid token");
    }

    s->p += len;

    return 0;
}


/*
 * Returns the slot of a key we care about, or -1.  Keys with escapes are
 * decoded first: "mod\u0065l" is "model" to jansson too.
 */

static int
ngx_http_ai_gateway_json_key_lookup(const unsigned char *key, size_t len,
    int escaped, int top)
{
    unsigned char  buf[128];

    if (escaped) {
        /* an escape is at most six bytes a character: a longer key names
         * more than the 21 characters of the longest key here */
        if (len > sizeof(buf)) {
            return -1;
        }

        len = ngx_http_ai_gateway_json_unescape(buf, key, len);
        key = buf;
    }

    return ngx_http_ai_gateway_json_key_find(key, len, top);
}


int
ngx_http_ai_gateway_json_key_find(const unsigned char *key, size_t len,
    int top)
{
    /* by the length and a letter, then one comparison with a literal, which
     * the compiler makes a few word compares rather than a call */

#define ngx_http_ai_gateway_json_key_is(s, k)                                 \
    (memcmp(key, s, sizeof(s) - 1) == 0 ? NGX_HTTP_AI_GATEWAY_KEY_##k : -1)

    if (!top) {
        /* the text slots */
        switch (len) {
        case 7:
            return memcmp(key, "content", 7) == 0 ? 0 : -1;
        case 4:
            return memcmp(key, "text", 4) == 0 ? 1 : -1;
        case 6:
            return memcmp(key, "output", 6) == 0 ? 2 : -1;
        default:
            return -1;
        }
    }

    switch (len) {
    case 4:
        return ngx_http_ai_gateway_json_key_is("user", USER);
    case 5:
        return (key[0] == 'm') ? ngx_http_ai_gateway_json_key_is("model", MODEL)
                               : ngx_http_ai_gateway_json_key_is("input", INPUT);
    case 6:
        return (key[0] == 'p')
               ? ngx_http_ai_gateway_json_key_is("prompt", PROMPT)
               : (key[1] == 't')
               ? ngx_http_ai_gateway_json_key_is("stream", STREAM)
               : ngx_http_ai_gateway_json_key_is("system", SYSTEM);
    case 8:
        return ngx_http_ai_gateway_json_key_is("messages", MESSAGES);
    case 10:
        return (key[0] == 'm')
               ? ngx_http_ai_gateway_json_key_is("max_tokens", MAX_TOKENS)
               : ngx_http_ai_gateway_json_key_is("dimensions", DIMENSIONS);
    case 12:
        return ngx_http_ai_gateway_json_key_is("instructions", INSTRUCTIONS);
    case 14:
        return ngx_http_ai_gateway_json_key_is("stream_options",
                                               STREAM_OPTIONS);
    case 15:
        return ngx_http_ai_gateway_json_key_is("encoding_format",
                                               ENCODING_FORMAT);
    case 17:
        return (key[0] == 'm')
               ? ngx_http_ai_gateway_json_key_is("max_output_tokens",
                                                 MAX_OUTPUT_TOKENS)
               : ngx_http_ai_gateway_json_key_is("anthropic_version",
                                                 ANTHROPIC_VERSION);
    case 20:
        return ngx_http_ai_gateway_json_key_is("previous_response_id",
                                               PREVIOUS_RESPONSE_ID);
    case 21:
        return ngx_http_ai_gateway_json_key_is("max_completion_tokens",
                                               MAX_COMPLETION_TOKENS);
    default:
        return -1;
    }

#undef ngx_http_ai_gateway_json_key_is
}


size_t
ngx_http_ai_gateway_json_unescape(unsigned char *dst,
    const unsigned char *src, size_t len)
{
    unsigned              code, low;
    unsigned char        *d;
    const unsigned char  *p, *end;

    d = dst;
    p = src;
    end = src + len;

    while (p < end) {
        if (*p != '\\') {
            *d++ = *p++;
            continue;
        }

        if (end - p < 2) {
            break;
        }

        switch (p[1]) {
        case 'b': *d++ = '\b'; p += 2; continue;
        case 'f': *d++ = '\f'; p += 2; continue;
        case 'n': *d++ = '\n'; p += 2; continue;
        case 'r': *d++ = '\r'; p += 2; continue;
        case 't': *d++ = '\t'; p += 2; continue;
        case 'u': break;
        default: *d++ = p[1]; p += 2; continue;
        }

        if (end - p < 6 || ngx_http_ai_gateway_json_hex4(p + 2, &code)) {
            break;
        }

        p += 6;

        if (code >= 0xd800 && code <= 0xdbff && end - p >= 6
            && ngx_http_ai_gateway_json_hex4(p + 2, &low) == 0
            && low >= 0xdc00 && low <= 0xdfff)
        {
            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
            p += 6;
        }

        if (code < 0x80) {
            *d++ = (unsigned char) code;

        } else if (code < 0x800) {
            *d++ = (unsigned char) (0xc0 | (code >> 6));
            *d++ = (unsigned char) (0x80 | (code & 0x3f));

        } else if (code < 0x10000) {
            *d++ = (unsigned char) (0xe0 | (code >> 12));
            *d++ = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
            *d++ = (unsigned char) (0x80 | (code & 0x3f));

        } else {
            *d++ = (unsigned char) (0xf0 | (code >> 18));
            *d++ = (unsigned char) (0x80 | ((code >> 12) & 0x3f));
            *d++ = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
            *d++ = (unsigned char) (0x80 | (code & 0x3f));
        }
    }

    return d - dst;
}


const char *
ngx_http_ai_gateway_json_key_name(ngx_http_ai_gateway_json_key_e key)
{
    if (key >= NGX_HTTP_AI_GATEWAY_KEY_LAST) {
        return "";
    }

    return ngx_http_ai_gateway_json_keys[key].name;
}


/*
 * Code points in valid UTF-8 text: the bytes that are not 10xxxxxx.
 * Streamed tokens are short ASCII runs: two overlapping words without a
 * high bit answer for them.  Longer texts go 16 bytes a step, each lane of
 * acc counting its continuation bytes (up to 255 steps) for
 * _mm_sad_epu8() to add up: no popcount, a libgcc call without -mpopcnt.
 */

uint64_t
ngx_http_ai_gateway_json_utf8_count(const unsigned char *p,
    const unsigned char *end)
{
    uint32_t  w, w2;
    uint64_t  n, cont, x, x2;

    n = end - p;
    cont = 0;

    if (n >= 4 && n <= 16) {
        if (n >= 8) {
            memcpy(&x, p, 8);
            memcpy(&x2, end - 8, 8);
            x |= x2;

        } else {
            memcpy(&w, p, 4);
            memcpy(&w2, end - 4, 4);
            x = w | w2;
        }

        if ((x & 0x8080808080808080ULL) == 0) {
            return n;
        }
    }

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
    {
    unsigned  k;
    __m128i   v, limit, acc, zero, sum;

    /* as signed bytes, 0x80-0xbf are the ones below -64 (0xc0) */
    limit = _mm_set1_epi8((char) 0xc0);
    zero = _mm_setzero_si128();
    acc = zero;
    k = 0;

    for ( /* void */ ; end - p >= 16; p += 16) {
        v = _mm_loadu_si128((const __m128i *) p);
        acc = _mm_sub_epi8(acc, _mm_cmplt_epi8(v, limit));

        if (++k == 255 || end - p < 32) {
            sum = _mm_sad_epu8(acc, zero);
            cont += (uint64_t) _mm_cvtsi128_si32(sum)
                    + (uint64_t) _mm_cvtsi128_si32(_mm_srli_si128(sum, 8));
            acc = zero;
            k = 0;
        }
    }
    }
#endif

    for ( /* void */ ; end - p >= 8; p += 8) {
        memcpy(&x, p, 8);

        /* bit 7 set and bit 6 clear; bit 6 is shifted under bit 7 */
        x &= ~(x << 1) & 0x8080808080808080ULL;

        if (x) {
            cont += __builtin_popcountll(x);
        }
    }

    for ( /* void */ ; p < end; p++) {
        cont += ((*p & 0xc0) == 0x80);
    }

    return n - cont;
}


#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)

/*
 * 16 bytes of src whose only bytes to escape are quotes and backslashes
 * (their bits in mask), as in JSON text, where they come every few bytes:
 * each run after one of them is written with one 16-byte store (the run
 * before the first is in dst already, from the caller's store), rather
 * than the whole block being looked at again after each of them.  The
 * caller makes sure that 32 bytes of src are left, so every load stays
 * within src, and every store within what is left to write (at least one
 * byte of output for each of 16 or more bytes of input).
 */

static inline unsigned char *
ngx_http_ai_gateway_json_escape_quotes(unsigned char *dst,
    const unsigned char *src, unsigned mask)
{
    unsigned  n, pos;

    pos = 0;
    n = __builtin_ctz(mask);

    for ( ;; ) {
        dst += n - pos;

        *dst++ = '\\';
        *dst++ = src[n];

        pos = n + 1;
        mask &= mask - 1;

        _mm_storeu_si128((__m128i *) dst,
                         _mm_loadu_si128((const __m128i *) (src + pos)));

        if (mask == 0) {
            return dst + 16 - pos;
        }

        n = __builtin_ctz(mask);
    }
}


/* 3 to 15 bytes, and zeros after them */

static inline __m128i
ngx_http_ai_gateway_json_load_short(const unsigned char *src, size_t n)
{
    unsigned char  buf[16];

    _mm_storeu_si128((__m128i *) buf, _mm_setzero_si128());

    /* two overlapping copies of a fixed size, no call */
    if (n >= 8) {
        memcpy(buf, src, 8);
        memcpy(buf + n - 8, src + n - 8, 8);

    } else if (n >= 4) {
        memcpy(buf, src, 4);
        memcpy(buf + n - 4, src + n - 4, 4);

    } else {
        buf[0] = src[0];
        buf[1] = src[1];
        buf[2] = src[2];
    }

    return _mm_loadu_si128((const __m128i *) buf);
}

#endif


/*
 * JSON string escaping that also keeps the line valid UTF-8: a header or
 * an upstream may hand us any bytes, and every record must parse.
 */

unsigned char *
ngx_http_ai_gateway_json_escape(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    size_t                n, i;
    uint32_t              code;
    unsigned char         c;
    const unsigned char  *p, *end;

    static unsigned char  hex[] = "0123456789abcdef";

    end = src + len;

    while (src < end) {

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
        if (end - src >= 16) {
            /*
             * 16 bytes stored at once, whatever they are, and dst moved
             * past those that need no escaping.  The store stays within
             * what this call writes anyway: 16 or more bytes of src are
             * left, each at least one byte of output.
             */
            unsigned  mask, qmask;
            __m128i   v, q;

            v = _mm_loadu_si128((const __m128i *) src);
            _mm_storeu_si128((__m128i *) dst, v);

            q = ngx_http_ai_gateway_json_quotes(v);
            mask = ngx_http_ai_gateway_json_stops16(v, q);

            if (mask == 0) {
                src += 16;
                dst += 16;
                continue;
            }

            qmask = (unsigned) _mm_movemask_epi8(q);

            if (qmask == mask && end - src >= 32) {
                dst = ngx_http_ai_gateway_json_escape_quotes(dst, src, mask);
                src += 16;
                continue;
            }

            n = __builtin_ctz(mask);
            src += n;
            dst += n;

        } else if (end - src >= 3) {
            /*
             * The last 3 to 15 bytes (or a short string) at once too,
             * from a copy: reading past src's end could fault.  The store
             * stays within what is left to write: 3 or more bytes of
             * input may take up to 6 bytes each.
             */
            unsigned  mask;
            __m128i   v;

            v = ngx_http_ai_gateway_json_load_short(src, end - src);
            _mm_storeu_si128((__m128i *) dst, v);

            /* not the zeros after the bytes */
            mask = ngx_http_ai_gateway_json_stops16(v,
                                         ngx_http_ai_gateway_json_quotes(v))
                   & ((1u << (end - src)) - 1);

            if (mask == 0) {
                dst += end - src;
                break;
            }

            n = __builtin_ctz(mask);
            src += n;
            dst += n;

        } else
#endif
        {
            /* runs that need no escaping are copied whole */
            p = ngx_http_ai_gateway_json_skip_plain(src, end);

            if (p != src) {
                memcpy(dst, src, p - src);
                dst += p - src;
                src = p;

                if (src == end) {
                    break;
                }
            }
        }

        c = *src;

        if (c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = c;
            src++;
            continue;
        }

        if (c < 0x20) {
            *dst++ = '\\';

            switch (c) {
            case '\n': *dst++ = 'n'; break;
            case '\r': *dst++ = 'r'; break;
            case '\t': *dst++ = 't'; break;
            default:
                *dst++ = 'u'; *dst++ = '0'; *dst++ = '0';
                *dst++ = hex[c >> 4];
                *dst++ = hex[c & 0xf];
            }

            src++;
            continue;
        }

        /* a UTF-8 sequence: copied when valid, else U+FFFD */

        n = (c >= 0xc2 && c <= 0xdf) ? 1
            : (c >= 0xe0 && c <= 0xef) ? 2
            : (c >= 0xf0 && c <= 0xf4) ? 3 : 0;

        code = c & (0x3f >> n);

        for (i = 1; n && i <= n; i++) {
            if (src + i >= end || (src[i] & 0xc0) != 0x80) {
                n = 0;
                break;
            }

            code = (code << 6) | (src[i] & 0x3f);
        }

        if (n == 0
            || (n == 2 && (code < 0x800 || (code >= 0xd800 && code <= 0xdfff)))
            || (n == 3 && (code < 0x10000 || code > 0x10ffff)))
        {
            memcpy(dst, "\\ufffd", 6);
            dst += 6;
            src++;
            continue;
        }

        memcpy(dst, src, n + 1);
        dst += n + 1;
        src += n + 1;
    }

    return dst;
}
