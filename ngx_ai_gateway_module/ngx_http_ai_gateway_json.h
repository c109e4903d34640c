
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * One-pass JSON scanner for LLM request bodies.  It validates the whole
 * document as strictly as jansson's json_loadb() with flags 0 does, and
 * picks up the few facts the gateway needs on the way, without building a
 * tree.  No nginx dependency: unit-tested alone (t/unit).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_JSON_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_JSON_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
#include <emmintrin.h>
#endif


/* jansson's JSON_PARSER_MAX_DEPTH */
#define NGX_HTTP_AI_GATEWAY_JSON_MAX_DEPTH  2048


#define NGX_HTTP_AI_GATEWAY_JSON_OK          0
#define NGX_HTTP_AI_GATEWAY_JSON_INVALID    -1
#define NGX_HTTP_AI_GATEWAY_JSON_NOT_OBJECT -2


/* what a top-level field held, as the last duplicate key left it */
typedef enum {
    NGX_HTTP_AI_GATEWAY_JSON_ABSENT = 0,
    NGX_HTTP_AI_GATEWAY_JSON_NULL,
    NGX_HTTP_AI_GATEWAY_JSON_STRING,
    NGX_HTTP_AI_GATEWAY_JSON_INTEGER,
    NGX_HTTP_AI_GATEWAY_JSON_REAL,
    NGX_HTTP_AI_GATEWAY_JSON_TRUE,
    NGX_HTTP_AI_GATEWAY_JSON_FALSE,
    NGX_HTTP_AI_GATEWAY_JSON_OBJECT,
    NGX_HTTP_AI_GATEWAY_JSON_ARRAY
} ngx_http_ai_gateway_json_type_e;


typedef struct {
    ngx_http_ai_gateway_json_type_e   type;
    /* strings: the raw bytes between the quotes */
    const unsigned char              *str;
    size_t                            len;
    unsigned                          escaped:1;
    /* integers */
    int64_t                           integer;
    /* the value's whole text in the document, for splicing */
    const unsigned char              *start;
    size_t                            raw_len;
} ngx_http_ai_gateway_json_value_t;


typedef enum {
    NGX_HTTP_AI_GATEWAY_KEY_MODEL = 0,
    NGX_HTTP_AI_GATEWAY_KEY_STREAM,
    NGX_HTTP_AI_GATEWAY_KEY_MAX_TOKENS,
    NGX_HTTP_AI_GATEWAY_KEY_MAX_COMPLETION_TOKENS,
    NGX_HTTP_AI_GATEWAY_KEY_MAX_OUTPUT_TOKENS,
    NGX_HTTP_AI_GATEWAY_KEY_USER,
    NGX_HTTP_AI_GATEWAY_KEY_MESSAGES,
    NGX_HTTP_AI_GATEWAY_KEY_SYSTEM,
    NGX_HTTP_AI_GATEWAY_KEY_PROMPT,
    NGX_HTTP_AI_GATEWAY_KEY_INPUT,
    NGX_HTTP_AI_GATEWAY_KEY_INSTRUCTIONS,
    NGX_HTTP_AI_GATEWAY_KEY_STREAM_OPTIONS,
    /* hints only: they tell API kinds apart when the URI does not */
    NGX_HTTP_AI_GATEWAY_KEY_ANTHROPIC_VERSION,
    NGX_HTTP_AI_GATEWAY_KEY_ENCODING_FORMAT,
    NGX_HTTP_AI_GATEWAY_KEY_DIMENSIONS,
    NGX_HTTP_AI_GATEWAY_KEY_PREVIOUS_RESPONSE_ID,
    NGX_HTTP_AI_GATEWAY_KEY_LAST
} ngx_http_ai_gateway_json_key_e;


typedef struct {
    ngx_http_ai_gateway_json_value_t  field[NGX_HTTP_AI_GATEWAY_KEY_LAST];

    /* Unicode code points of the prompt text, see the .c file */
    uint64_t                          input_chars;

    /* set when NGX_HTTP_AI_GATEWAY_JSON_INVALID is returned */
    const char                       *error;
    size_t                            error_offset;
} ngx_http_ai_gateway_json_facts_t;


int ngx_http_ai_gateway_json_scan(const unsigned char *data, size_t len,
    ngx_http_ai_gateway_json_facts_t *facts);

/*
 * Decodes a string's raw bytes (as the scanner validated them) into dst,
 * which needs at most len bytes: decoding never grows a JSON string.
 * Returns the decoded length.
 */
size_t ngx_http_ai_gateway_json_unescape(unsigned char *dst,
    const unsigned char *src, size_t len);

/*
 * Writes src as the inside of a JSON string (no quotes), valid UTF-8
 * whatever src holds: invalid bytes become U+FFFD.  dst needs 6 * len
 * bytes: the function may store up to 16 bytes at once within them.
 * Returns the end of what it wrote.
 */
unsigned char *ngx_http_ai_gateway_json_escape(unsigned char *dst,
    const unsigned char *src, size_t len);

/* JSON's white space, and the first byte past a run of it (or end): the
 * scanner, the tree parser, the response walker and the answer readers */
#define ngx_http_ai_gateway_json_ws(c)                                        \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

static inline const unsigned char *
ngx_http_ai_gateway_json_skip_ws(const unsigned char *p,
    const unsigned char *end)
{
    while (p < end && ngx_http_ai_gateway_json_ws(*p)) {
        p++;
    }

    return p;
}


/*
 * The decimal digits of n, written backwards to end at end; returns where
 * they start (at most 20 bytes before end).  Two digits a division: the
 * records, the limit headers, the translations and the Redis commands
 * write many numbers a request.
 */
static inline unsigned char *
ngx_http_ai_gateway_json_digits(unsigned char *end, uint64_t n)
{
    static const char  pairs[] =
        "00010203040506070809101112131415161718192021222324"
        "25262728293031323334353637383940414243444546474849"
        "50515253545556575859606162636465666768697071727374"
        "75767778798081828384858687888990919293949596979899";

    while (n >= 100) {
        end -= 2;
        memcpy(end, &pairs[(n % 100) * 2], 2);
        n /= 100;
    }

    if (n >= 10) {
        end -= 2;
        memcpy(end, &pairs[n * 2], 2);

    } else {
        *--end = (unsigned char) ('0' + n);
    }

    return end;
}


#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)

/* the quotes and backslashes among 16 bytes */

static inline __m128i
ngx_http_ai_gateway_json_quotes(__m128i v)
{
    return _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                        _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
}


/* the bytes that end a plain run among 16 (those to escape, and those not
 * ASCII), given their quotes and backslashes: a signed compare, so bytes
 * >= 0x80 (negative) are below 0x20 too */

static inline unsigned
ngx_http_ai_gateway_json_stops16(__m128i v, __m128i quotes)
{
    return (unsigned) _mm_movemask_epi8(
               _mm_or_si128(quotes, _mm_cmplt_epi8(v, _mm_set1_epi8(0x20))));
}

#endif


/*
 * The first byte at or after p that JSON strings must escape or that is not
 * ASCII (a quote, a backslash, < 0x20, >= 0x80), or end: 16 bytes a step
 * with SSE2, 8 with plain 64-bit words elsewhere.  Prompts, answers and
 * streams are mostly such runs, and the parsers call this for every
 * string: inline (always: with -flto the compiler would otherwise make it
 * one shared function), so that a short key costs no call.
 */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline const unsigned char *
ngx_http_ai_gateway_json_skip_plain(const unsigned char *p,
    const unsigned char *end)
{
#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
    unsigned  mask;

#define ngx_http_ai_gateway_json_stops(at)                                    \
    ngx_http_ai_gateway_json_stops16(                                         \
        _mm_loadu_si128((const __m128i *) (at)),                              \
        ngx_http_ai_gateway_json_quotes(                                      \
            _mm_loadu_si128((const __m128i *) (at))))

    if (end - p >= 16) {

        /* a key or a short value ends in the first 16 bytes */
        mask = ngx_http_ai_gateway_json_stops(p);

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;

        /* a text: 32 bytes a step */
        while (end - p >= 32) {
            mask = ngx_http_ai_gateway_json_stops(p)
                   | (ngx_http_ai_gateway_json_stops(p + 16) << 16);

            if (mask) {
                return p + __builtin_ctz(mask);
            }

            p += 32;
        }

        if (end - p >= 16) {
            mask = ngx_http_ai_gateway_json_stops(p);

            if (mask) {
                return p + __builtin_ctz(mask);
            }

            p += 16;
        }
    }

#undef ngx_http_ai_gateway_json_stops
#else
    uint64_t  x, q, b, m;

#define NGX_HTTP_AI_GATEWAY_JSON_ONES  0x0101010101010101ULL
#define NGX_HTTP_AI_GATEWAY_JSON_HIGH  0x8080808080808080ULL

    while (end - p >= 8) {
        memcpy(&x, p, 8);

        /* the usual "has a zero byte" tricks; a false alarm only means
         * that the byte loop below looks at this word */
        q = x ^ (NGX_HTTP_AI_GATEWAY_JSON_ONES * '"');
        b = x ^ (NGX_HTTP_AI_GATEWAY_JSON_ONES * '\\');
        m = (x | ((x - NGX_HTTP_AI_GATEWAY_JSON_ONES * 0x20) & ~x)
             | ((q - NGX_HTTP_AI_GATEWAY_JSON_ONES) & ~q)
             | ((b - NGX_HTTP_AI_GATEWAY_JSON_ONES) & ~b))
            & NGX_HTTP_AI_GATEWAY_JSON_HIGH;

        if (m) {
            break;
        }

        p += 8;
    }
#endif

    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
        p++;
    }

    return p;
}

#undef NGX_HTTP_AI_GATEWAY_JSON_ONES
#undef NGX_HTTP_AI_GATEWAY_JSON_HIGH


/*
 * The first quote, backslash or control byte at or after p, or end: the
 * same runs as ngx_http_ai_gateway_json_skip_plain(), bytes >= 0x80
 * included, for a reader that does not check the encoding (the guard's
 * walk, after the inspection did): Chinese or Japanese text would
 * otherwise cost a step a byte.
 */
static inline const unsigned char *
ngx_http_ai_gateway_json_skip_text(const unsigned char *p,
    const unsigned char *end)
{
#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
    unsigned  mask;

    /* bytes <= 0x1f: those that max(v, 0x1f) leaves at 0x1f */
#define ngx_http_ai_gateway_json_text_stops(at)                               \
    ngx_http_ai_gateway_json_text_stops16(                                    \
        _mm_loadu_si128((const __m128i *) (at)))
#define ngx_http_ai_gateway_json_text_stops16(v)                              \
    (unsigned) _mm_movemask_epi8(                                             \
        _mm_or_si128(ngx_http_ai_gateway_json_quotes(v),                      \
                     _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)),     \
                                    _mm_set1_epi8(0x1f))))

    /* texts: 32 bytes a step */
    while (end - p >= 32) {
        mask = ngx_http_ai_gateway_json_text_stops(p)
               | ngx_http_ai_gateway_json_text_stops(p + 16) << 16;

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 32;
    }

    if (end - p >= 16) {
        mask = ngx_http_ai_gateway_json_text_stops(p);

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }

#undef ngx_http_ai_gateway_json_text_stops
#undef ngx_http_ai_gateway_json_text_stops16
#endif

    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) {
        p++;
    }

    return p;
}

/*
 * The length of the valid UTF-8 character at p (its first byte >= 0x80),
 * or 0: no overlong form, surrogate or code point past U+10FFFF, and all
 * its bytes before end.  The scanner, the tree parser and the stream's
 * fast path all take strings by it.
 */
static inline size_t
ngx_http_ai_gateway_json_utf8_char(const unsigned char *p,
    const unsigned char *end)
{
    size_t    i, need;
    uint32_t  c, code, min;

    c = p[0];

    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        min = 0x80;
        code = c & 0x1f;

    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        min = 0x800;
        code = c & 0x0f;

    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        min = 0x10000;
        code = c & 0x07;

    } else {
        return 0;
    }

    if ((size_t) (end - p) <= need) {
        return 0;
    }

    for (i = 1; i <= need; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        code = (code << 6) | (p[i] & 0x3f);
    }

    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
        return 0;
    }

    return need + 1;
}

/*
 * Code points in valid UTF-8 text: the bytes that are not 10xxxxxx.  For
 * the request's prompt text, the answer's and the stream's tokens.
 */
uint64_t ngx_http_ai_gateway_json_utf8_count(const unsigned char *p,
    const unsigned char *end);

/*
 * The index of a decoded key: among the top-level fields (top) or among
 * the text keys of a container ("content" 0, "text" 1, "output" 2); -1.
 */
int ngx_http_ai_gateway_json_key_find(const unsigned char *key, size_t len,
    int top);

/* the name of a key, for error messages */
const char *ngx_http_ai_gateway_json_key_name(
    ngx_http_ai_gateway_json_key_e key);


#endif /* _NGX_HTTP_AI_GATEWAY_JSON_H_INCLUDED_ */
