
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The response walker and the usage parser: see
 * ngx_http_ai_gateway_usage.h for what they find.
 *
 * The walker is a byte state machine over JSON tokens that keeps, per
 * nesting level, whether it is an object and (for the levels that rules
 * can match) the key in force there, as an index into a small table.  An
 * array takes its own key from the level above, so that its elements are
 * seen as values of the array's key.  Strings are most of the bytes: those
 * that no rule wants are skipped in bulk, and output text is counted and
 * passed on per run of plain bytes, with only escapes decoded one by one.
 *
 * The walker is lax: it checks the structure (brackets, colons, commas,
 * the spelling of true/false/null, the characters of numbers, escapes) but
 * not the grammar of numbers, control characters or UTF-8 in strings.
 * Anything that jansson accepts, it accepts.
 *
 * Output text is passed to on_text in whole UTF-8 characters: a character
 * split between two buffers is held back (utf8) until its last byte comes.
 * Invalid UTF-8 is passed on as it is; lone surrogates in "\u" escapes are
 * decoded to U+FFFD.
 */


#include <stddef.h>
#include <string.h>

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_USAGE_NO_SIMD)
#include <emmintrin.h>
#endif

#include "ngx_http_ai_gateway_json.h"
#include "ngx_http_ai_gateway_usage.h"


typedef enum {
    NGX_HTTP_AI_GATEWAY_WALK_VALUE = 0,      /* a value is expected */
    NGX_HTTP_AI_GATEWAY_WALK_VALUE_OR_CLOSE, /* after '[' */
    NGX_HTTP_AI_GATEWAY_WALK_KEY_OR_CLOSE,   /* after '{' */
    NGX_HTTP_AI_GATEWAY_WALK_KEY,            /* after ',' in an object */
    NGX_HTTP_AI_GATEWAY_WALK_COLON,
    NGX_HTTP_AI_GATEWAY_WALK_AFTER,          /* after a value: ',' or close */
    NGX_HTTP_AI_GATEWAY_WALK_STRING,
    NGX_HTTP_AI_GATEWAY_WALK_LITERAL,        /* true, false, null, a number */
    NGX_HTTP_AI_GATEWAY_WALK_DONE,           /* after the top-level value */
    NGX_HTTP_AI_GATEWAY_WALK_ERROR,          /* not JSON: stopped */
    NGX_HTTP_AI_GATEWAY_WALK_STOPPED         /* on_text stopped the walk */
} ngx_http_ai_gateway_walk_state_e;


/* what a string is read for */
typedef enum {
    NGX_HTTP_AI_GATEWAY_STR_SKIP = 0,
    NGX_HTTP_AI_GATEWAY_STR_KEY,
    NGX_HTTP_AI_GATEWAY_STR_TEXT,            /* output text */
    NGX_HTTP_AI_GATEWAY_STR_SHORT            /* model, finish, "type" */
} ngx_http_ai_gateway_str_mode_e;


typedef enum {
    NGX_HTTP_AI_GATEWAY_SHORT_MODEL = 0,
    NGX_HTTP_AI_GATEWAY_SHORT_FINISH,
    NGX_HTTP_AI_GATEWAY_SHORT_TYPE
} ngx_http_ai_gateway_short_e;


/* the keys the rules need; NONE: no key (the top, or no key read yet) */
typedef enum {
    NGX_HTTP_AI_GATEWAY_WK_NONE = 0,
    NGX_HTTP_AI_GATEWAY_WK_OTHER,
    NGX_HTTP_AI_GATEWAY_WK_USAGE,
    NGX_HTTP_AI_GATEWAY_WK_MESSAGE,
    NGX_HTTP_AI_GATEWAY_WK_RESPONSE,
    NGX_HTTP_AI_GATEWAY_WK_MODEL,
    NGX_HTTP_AI_GATEWAY_WK_CHOICES,
    NGX_HTTP_AI_GATEWAY_WK_DELTA,
    NGX_HTTP_AI_GATEWAY_WK_CONTENT,
    NGX_HTTP_AI_GATEWAY_WK_TEXT,
    NGX_HTTP_AI_GATEWAY_WK_ARGUMENTS,
    NGX_HTTP_AI_GATEWAY_WK_FUNCTION,
    NGX_HTTP_AI_GATEWAY_WK_PARTIAL_JSON,
    NGX_HTTP_AI_GATEWAY_WK_FINISH_REASON,
    NGX_HTTP_AI_GATEWAY_WK_STOP_REASON,
    NGX_HTTP_AI_GATEWAY_WK_STATUS,
    NGX_HTTP_AI_GATEWAY_WK_TOOL_CALLS,
    NGX_HTTP_AI_GATEWAY_WK_OUTPUT,
    NGX_HTTP_AI_GATEWAY_WK_TYPE
} ngx_http_ai_gateway_walk_key_e;


/* literal: the index of the word, or this for a number */
#define NGX_HTTP_AI_GATEWAY_WALK_NUMBER  3

static const struct {
    const char  *word;
    unsigned     len;
} ngx_http_ai_gateway_walk_words[] = {
    { "true", 4 },
    { "false", 5 },
    { "null", 4 },
};


#define NGX_HTTP_AI_GATEWAY_WALK_NEST                                         \
    (sizeof(((ngx_http_ai_gateway_walk_t *) 0)->nest) * 8)

#define ngx_http_ai_gateway_walk_object(w, d)                                 \
    (((w)->nest[((d) - 1) >> 3] >> (((d) - 1) & 7)) & 1)

#define ngx_http_ai_gateway_walk_value_end(w)                                 \
    (w)->state = (w)->depth ? NGX_HTTP_AI_GATEWAY_WALK_AFTER                  \
                            : NGX_HTTP_AI_GATEWAY_WALK_DONE


#if defined(__GNUC__)
#define ngx_http_ai_gateway_walk_inline  inline __attribute__((always_inline))
#else
#define ngx_http_ai_gateway_walk_inline  inline
#endif


static ngx_http_ai_gateway_walk_inline int ngx_http_ai_gateway_walk_push(
    ngx_http_ai_gateway_walk_t *w, unsigned object);
static ngx_http_ai_gateway_walk_inline int ngx_http_ai_gateway_walk_is_usage(
    ngx_http_ai_gateway_walk_t *w);
static void ngx_http_ai_gateway_walk_string_start(
    ngx_http_ai_gateway_walk_t *w);
static int ngx_http_ai_gateway_walk_string(ngx_http_ai_gateway_walk_t *w,
    const unsigned char **pp, const unsigned char *end);
static int ngx_http_ai_gateway_walk_decoded(ngx_http_ai_gateway_walk_t *w,
    const unsigned char **pp, const unsigned char *end);
static int ngx_http_ai_gateway_walk_escape(ngx_http_ai_gateway_walk_t *w,
    unsigned c, unsigned char *out, size_t *n);
static int ngx_http_ai_gateway_walk_out(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len);
static int ngx_http_ai_gateway_walk_emit(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len);
static void ngx_http_ai_gateway_walk_key_end(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *key);
static void ngx_http_ai_gateway_walk_string_end(
    ngx_http_ai_gateway_walk_t *w);
static void ngx_http_ai_gateway_walk_short(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *s, size_t len);
static int ngx_http_ai_gateway_walk_remember(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *doc, size_t len);
static void ngx_http_ai_gateway_walk_replay(ngx_http_ai_gateway_walk_t *w);
static void ngx_http_ai_gateway_walk_replay_results(
    ngx_http_ai_gateway_walk_t *w);
static size_t ngx_http_ai_gateway_walk_chunk(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, const unsigned char *end,
    ngx_http_ai_gateway_name_pt is_end);
static ngx_http_ai_gateway_walk_inline unsigned
    ngx_http_ai_gateway_walk_key_lookup(const unsigned char *key, size_t len);
static void ngx_http_ai_gateway_walk_capture(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len);
static void ngx_http_ai_gateway_walk_captured(ngx_http_ai_gateway_walk_t *w);
static int ngx_http_ai_gateway_walk_fail(ngx_http_ai_gateway_walk_t *w);
static unsigned ngx_http_ai_gateway_walk_type_delta(const unsigned char *s,
    size_t len);
static ngx_http_ai_gateway_walk_inline const unsigned char *
    ngx_http_ai_gateway_walk_skip_plain(const unsigned char *p,
    const unsigned char *end);
static ngx_http_ai_gateway_walk_inline const unsigned char *
    ngx_http_ai_gateway_walk_skip_digits(const unsigned char *p,
    const unsigned char *end);
static size_t ngx_http_ai_gateway_walk_utf8_tail(const unsigned char *p,
    size_t len, unsigned *need);
static size_t ngx_http_ai_gateway_walk_utf8_put(unsigned char *out,
    unsigned code);
static unsigned ngx_http_ai_gateway_walk_hex4(const unsigned char *p);


static ngx_http_ai_gateway_walk_inline uint32_t
ngx_http_ai_gateway_walk_w32(const void *p)
{
    uint32_t  v;

    memcpy(&v, p, 4);
    return v;
}


static ngx_http_ai_gateway_walk_inline uint64_t
ngx_http_ai_gateway_walk_w64(const void *p)
{
    uint64_t  v;

    memcpy(&v, p, 8);
    return v;
}


void
ngx_http_ai_gateway_walk_init(ngx_http_ai_gateway_walk_t *w,
    unsigned mode, ngx_http_ai_gateway_text_pt on_text, void *data)
{
    memset(w, 0, offsetof(ngx_http_ai_gateway_walk_t, usage));

    w->mode = mode;
    w->on_text = on_text;
    w->data = data;

    ngx_http_ai_gateway_walk_reset(w);
}


/* called for each SSE event: cheap, no large buffer is cleared */

void
ngx_http_ai_gateway_walk_reset(ngx_http_ai_gateway_walk_t *w)
{
    /* a document cut within the prefix ended there: walked as it was */
    if (w->memo_pending) {
        (void) ngx_http_ai_gateway_walk_flush(w);
    }

    w->malformed = 0;

    w->state = NGX_HTTP_AI_GATEWAY_WALK_VALUE;
    w->depth = 0;
    w->str_mode = NGX_HTTP_AI_GATEWAY_STR_SKIP;
    w->escape = 0;
    w->key_other = 0;
    w->short_cut = 0;
    w->type_delta = NGX_HTTP_AI_GATEWAY_DELTA_TEXT;
    w->capturing = 0;
    w->capture_overflow = 0;
    w->capture_len = 0;
    w->uescape_len = 0;
    w->utf8_pending = 0;

    w->doc_start = 1;
    w->model_set = 0;
    w->finish_set = 0;
    w->choice_seen = 0;
}


/*
 * The bytes of a document that waited as the start of the remembered
 * prefix (walk_feed()) are walked the general way, from the memo's copy of
 * them: they are the same.  They hold no output text (the prefix ends at
 * the first) and no usage (a prefix with one is not remembered).
 */

int
ngx_http_ai_gateway_walk_flush(ngx_http_ai_gateway_walk_t *w)
{
    size_t  n;

    n = w->memo_pending;

    if (n == 0) {
        return 0;
    }

    w->memo_pending = 0;

    return ngx_http_ai_gateway_walk_feed(w, w->memo, n);
}


/*
 * The walk is threaded: each state is a label that reads its bytes and
 * jumps to the next state's label, and w->state is only written when the
 * buffer ends in it (or a helper takes over).  Whole tokens in the buffer
 * take fast paths: a key is matched in place once its closing quote is
 * found, strings no rule wants are skipped by the SIMD scan, and true,
 * false, null and runs of digits are taken in one step.  A token cut by
 * the end of the buffer, an escape in a key, and decoded strings that do
 * not fit the fast path go through the general string code, with the same
 * results.
 */

#define ngx_http_ai_gateway_walk_need(st)                                     \
    if (p == end) {                                                           \
        w->state = NGX_HTTP_AI_GATEWAY_WALK_##st;                             \
        goto done;                                                            \
    }

int
ngx_http_ai_gateway_walk_feed(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len)
{
    int                   rc;
    size_t                n, from;
    unsigned              c, d, k, mode, obj;
    uint64_t              chars;
    unsigned              effects;
    const unsigned char  *end, *cap, *q, *doc, *memo_q, *suffix;

    if (w->state == NGX_HTTP_AI_GATEWAY_WALK_ERROR) {
        return -1;
    }

    if (w->state == NGX_HTTP_AI_GATEWAY_WALK_STOPPED) {
        return 0;
    }

    end = p + len;
    rc = 0;

    /* the captured bytes are copied a run at a time: from cap to p */
    cap = p;

    /* the document's start, while its prefix may be remembered */
    doc = NULL;

    /* the quote of the text after a remembered prefix, and the bytes
     * after that text (see the suffix memo below) */
    memo_q = NULL;
    suffix = NULL;
    effects = 0;

    /* how much of the remembered prefix these bytes go on from: (size_t)
     * -1 for none, 0 at a document's start, more when it was cut */
    from = (size_t) -1;

    if (w->doc_start && len) {
        w->doc_start = 0;
        doc = p;

        if (w->memo_len && w->memo_mode == w->mode) {
            from = 0;
        }

    } else if (w->memo_pending && len) {
        from = w->memo_pending;
    }

    if (from != (size_t) -1) {
        n = w->memo_len - from;
        q = w->memo + from;

        if (len >= n && memcmp(p, q, n) == 0) {
            /* on to the quote that starts the text, the prefix's last
             * byte */
            w->memo_pending = 0;
            ngx_http_ai_gateway_walk_replay(w);
            p += n - 1;
            doc = NULL;
            memo_q = p;

        } else if (len < n && !w->no_wait && memcmp(p, q, len) == 0) {
            /*
             * The document is cut within what may be the prefix (at the
             * end of a buffer): its bytes are the memo's, so nothing is
             * kept but how many; the next ones decide.
             */
            w->memo_pending = from + len;
            return 0;

        } else if (from) {
            /* not the prefix after all: its start is walked from the
             * memo's copy, then these bytes */
            rc = ngx_http_ai_gateway_walk_flush(w);

            if (rc != 0 || w->state == NGX_HTTP_AI_GATEWAY_WALK_ERROR) {
                return rc ? rc : -1;
            }
        }
    }

    /* is the innermost open container an object */
    d = w->depth;
    obj = d ? ngx_http_ai_gateway_walk_object(w, d) : 0;

resume:

    if (p == end) {
        goto done;
    }

    switch (w->state) {
    case NGX_HTTP_AI_GATEWAY_WALK_STRING:
        goto string;
    case NGX_HTTP_AI_GATEWAY_WALK_VALUE_OR_CLOSE:
        goto value_or_close;
    case NGX_HTTP_AI_GATEWAY_WALK_VALUE:
        goto value;
    case NGX_HTTP_AI_GATEWAY_WALK_KEY_OR_CLOSE:
        goto key_or_close;
    case NGX_HTTP_AI_GATEWAY_WALK_KEY:
        goto key;
    case NGX_HTTP_AI_GATEWAY_WALK_COLON:
        goto colon;
    case NGX_HTTP_AI_GATEWAY_WALK_AFTER:
        goto after;
    case NGX_HTTP_AI_GATEWAY_WALK_LITERAL:
        goto literal;
    case NGX_HTTP_AI_GATEWAY_WALK_DONE:
        goto top_done;
    default:
        /* ERROR or STOPPED, set by a string: not reached */
        goto done;
    }

value_or_close:

    ngx_http_ai_gateway_walk_need(VALUE_OR_CLOSE);
    c = *p;

    if (c == ']') {
        goto close;
    }

    if (ngx_http_ai_gateway_json_ws(c)) {
        p++;
        goto value_or_close;
    }

    goto value_c;

value:

    ngx_http_ai_gateway_walk_need(VALUE);
    c = *p;

value_c:

    switch (c) {

    case ' ': case '\t': case '\n': case '\r':
        /* (value_or_close takes its own white space) */
        p++;
        goto value;

    case '"':
        p++;
        d = w->depth;

        if (d == 0 || d > NGX_HTTP_AI_GATEWAY_WALK_DEPTH
            || w->path[d - 1] <= NGX_HTTP_AI_GATEWAY_WK_OTHER)
        {
            /* most strings: no rule wants them */
            goto skip;
        }

        ngx_http_ai_gateway_walk_string_start(w);
        mode = w->str_mode;

        if (mode == NGX_HTTP_AI_GATEWAY_STR_SKIP) {
            goto skip;
        }

        if (mode == NGX_HTTP_AI_GATEWAY_STR_TEXT && doc != NULL) {
            /* the first output text of the document: what came before,
             * and its quote, is remembered for the next one */
            if (ngx_http_ai_gateway_walk_remember(w, doc, p - doc)) {
                memo_q = p - 1;
            }

            doc = NULL;
        }

        q = ngx_http_ai_gateway_walk_skip_plain(p, end);

        if (q == end || *q != '"') {
            /* an escape, or the end of the buffer: decoded in general */
            w->state = NGX_HTTP_AI_GATEWAY_WALK_STRING;
            goto string;
        }

        n = q - p;

        if (mode == NGX_HTTP_AI_GATEWAY_STR_SHORT) {
            if (n > NGX_HTTP_AI_GATEWAY_SHORT_MAX) {
                w->state = NGX_HTTP_AI_GATEWAY_WALK_STRING;
                goto string;
            }

            ngx_http_ai_gateway_walk_short(w, p, n);
            p = q + 1;
            goto value_end;
        }

        /* output text, whole in the buffer */

        chars = ngx_http_ai_gateway_json_utf8_count(p, q);
        w->text_chars += chars;
        w->effects++;

        if (chars) {
            w->text_seen = 1;
        }

        rc = ngx_http_ai_gateway_walk_emit(w, p, n);
        if (rc != 0) {
            p = q;
            goto done;
        }

        if (p - 1 != memo_q) {
            p = q + 1;
            goto value_end;
        }

        p = q + 1;

        if (w->suffix_len && (size_t) (end - p) >= w->suffix_len
            && memcmp(p, w->suffix, w->suffix_len) == 0)
        {
            /* the rest of the document as after the last text: it only
             * closes what the prefix opened */
            p += w->suffix_len;
            w->depth = 0;
            goto top_done;
        }

        suffix = p;
        effects = w->effects;
        goto value_end;

    case '{':
        if (w->depth == 2
            && w->path[0] == NGX_HTTP_AI_GATEWAY_WK_CHOICES
            && !ngx_http_ai_gateway_walk_object(w, 2))
        {
            /* an element of the top-level "choices": a chunk with
             * something for the client, not the usage chunk alone */
            w->choice_seen = 1;
        }

        if (!w->capturing && ngx_http_ai_gateway_walk_is_usage(w)) {
            /* a prefix with a capture is not remembered */
            doc = NULL;

            w->capturing = 1;
            w->effects++;
            w->capture_overflow = 0;
            w->capture_len = 0;
            w->capture_depth = w->depth + 1;
            cap = p;
        }

        if (ngx_http_ai_gateway_walk_push(w, 1) != 0) {
            goto malformed;
        }

        obj = 1;
        p++;
        goto key_or_close;

    case '[':
        if (ngx_http_ai_gateway_walk_push(w, 0) != 0) {
            goto malformed;
        }

        obj = 0;
        p++;
        goto value_or_close;

    case 't':
    case 'f':
    case 'n':
        k = (c == 't') ? 0 : (c == 'f') ? 1 : 2;

        /* the whole word: its last four bytes ("alse" for false) */
        n = ngx_http_ai_gateway_walk_words[k].len;

        if ((size_t) (end - p) >= n
            && ngx_http_ai_gateway_walk_w32(p + n - 4)
               == ngx_http_ai_gateway_walk_w32(
                      ngx_http_ai_gateway_walk_words[k].word + n - 4))
        {
            p += n;
            goto value_end;
        }

        /* cut by the end of the buffer, or not a literal */

        w->literal = k;
        w->literal_pos = 1;
        p++;
        goto word;

    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            p++;
            goto number;
        }

        goto malformed;
    }

skip:

    /* a string no rule wants: only its end matters */

    for ( ;; ) {
        q = ngx_http_ai_gateway_walk_skip_plain(p, end);

        if (q == end) {
            break;
        }

        if (*q == '"') {
            p = q + 1;
            goto value_end;
        }

        /* a backslash hides the byte after it */

        if (end - q < 2) {
            break;
        }

        p = q + 2;
    }

    w->str_mode = NGX_HTTP_AI_GATEWAY_STR_SKIP;
    w->escape = 0;
    w->state = NGX_HTTP_AI_GATEWAY_WALK_STRING;

string:

    /* the general string code, from a string's start or its middle */

    rc = ngx_http_ai_gateway_walk_string(w, &p, end);
    if (rc != 0) {
        goto done;
    }

    goto resume;

key_or_close:

    ngx_http_ai_gateway_walk_need(KEY_OR_CLOSE);
    c = *p;

    if (c == '"') {
        goto key_c;
    }

    if (c == '}') {
        goto close;
    }

    if (ngx_http_ai_gateway_json_ws(c)) {
        p++;
        goto key_or_close;
    }

    goto malformed;

key:

    ngx_http_ai_gateway_walk_need(KEY);
    c = *p;

    if (c != '"') {
        if (ngx_http_ai_gateway_json_ws(c)) {
            p++;
            goto key;
        }

        goto malformed;
    }

key_c:

    p++;
    q = ngx_http_ai_gateway_walk_skip_plain(p, end);

    if (q == end || *q != '"') {
        /* cut by the end of the buffer, or with an escape */
        w->str_mode = NGX_HTTP_AI_GATEWAY_STR_KEY;
        w->escape = 0;
        w->key_other = 0;
        w->key_len = 0;
        w->state = NGX_HTTP_AI_GATEWAY_WALK_STRING;
        goto string;
    }

    /* the whole key is in this buffer, as usual */

    d = w->depth;

    if (d <= NGX_HTTP_AI_GATEWAY_WALK_DEPTH) {
        w->path[d - 1] = ngx_http_ai_gateway_walk_key_lookup(p, q - p);
    }

    p = q + 1;

colon:

    ngx_http_ai_gateway_walk_need(COLON);
    c = *p;

    if (c == ':') {
        p++;
        goto value;
    }

    if (ngx_http_ai_gateway_json_ws(c)) {
        p++;
        goto colon;
    }

    goto malformed;

literal:

    if (w->literal == NGX_HTTP_AI_GATEWAY_WALK_NUMBER) {
        goto number;
    }

word:

    /* the rest of true, false or null, a byte at a time */

    ngx_http_ai_gateway_walk_need(LITERAL);
    c = *p;

    if (c != (unsigned char)
             ngx_http_ai_gateway_walk_words[w->literal].word[w->literal_pos])
    {
        goto malformed;
    }

    p++;

    if (++w->literal_pos == ngx_http_ai_gateway_walk_words[w->literal].len) {
        goto value_end;
    }

    goto word;

number:

    /* the rest of a number: the characters numbers are made of */

    p = ngx_http_ai_gateway_walk_skip_digits(p, end);

    while (p < end) {
        c = *p;

        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E'
              || c == '+' || c == '-'))
        {
            /* the number ended before c: c is looked at again */
            goto value_end;
        }

        p++;
    }

    w->literal = NGX_HTTP_AI_GATEWAY_WALK_NUMBER;
    w->state = NGX_HTTP_AI_GATEWAY_WALK_LITERAL;
    goto done;

close:

    /* c is '}' or ']', closing the container at w->depth */

    d = w->depth;

    if (d == 0 || (c == '}') != obj) {
        goto malformed;
    }

    p++;

    if (w->capturing && d == w->capture_depth) {
        ngx_http_ai_gateway_walk_capture(w, cap, p - cap);
        ngx_http_ai_gateway_walk_captured(w);
    }

    w->depth = --d;

    if (d == 0) {
        if (suffix != NULL && w->effects == effects
            && (size_t) (p - suffix) <= NGX_HTTP_AI_GATEWAY_WALK_SUFFIX)
        {
            memcpy(w->suffix, suffix, p - suffix);
            w->suffix_len = p - suffix;
        }

        goto top_done;
    }

    obj = ngx_http_ai_gateway_walk_object(w, d);
    goto after;

value_end:

    if (w->depth == 0) {
        goto top_done;
    }

after:

    ngx_http_ai_gateway_walk_need(AFTER);
    c = *p;

    if (c == ',') {
        p++;

        if (obj) {
            goto key;
        }

        goto value;
    }

    if (c == '}' || c == ']') {
        goto close;
    }

    if (ngx_http_ai_gateway_json_ws(c)) {
        p++;
        goto after;
    }

    goto malformed;

top_done:

    /* after the top-level value: white space only */

    ngx_http_ai_gateway_walk_need(DONE);
    c = *p;

    if (ngx_http_ai_gateway_json_ws(c)) {
        p++;
        goto top_done;
    }

    goto malformed;

done:

    if (w->capturing) {
        ngx_http_ai_gateway_walk_capture(w, cap, p - cap);
    }

    return rc;

malformed:

    return ngx_http_ai_gateway_walk_fail(w);
}

#undef ngx_http_ai_gateway_walk_need


/*
 * The stream's fast path (see usage.h).  The event is taken only when all
 * of it is in the buffer and checked, so that nothing is done for one the
 * general path must read.
 */

int
ngx_http_ai_gateway_walk_stream(ngx_http_ai_gateway_sse_t *sse,
    ngx_http_ai_gateway_walk_t *w, const unsigned char *p, size_t len,
    ngx_http_ai_gateway_chunk_pt on_chunk,
    ngx_http_ai_gateway_name_pt is_end, void *data)
{
    int                   rc;
    size_t                n;
    uint64_t              start;
    const unsigned char  *end;

    end = p + len;

    while (p < end) {

        if (ngx_http_ai_gateway_sse_between(sse)) {
            n = ngx_http_ai_gateway_walk_chunk(w, p, end, is_end);

            if (n) {
                ngx_http_ai_gateway_sse_skip(sse, n);
                p += n;

                /* as on_event, on_chunk sees the event at [event_start,
                 * offset) */
                rc = on_chunk(data);

                ngx_http_ai_gateway_sse_next(sse);

                if (rc != 0) {
                    return rc;
                }

                continue;
            }
        }

        /* one event the general way: its on_event pauses the parser */

        start = sse->offset;

        rc = ngx_http_ai_gateway_sse_feed(sse, p, end - p);

        if (rc != NGX_HTTP_AI_GATEWAY_WALK_PAUSE) {
            return rc;
        }

        p += sse->offset - start;
    }

    return 0;
}


/*
 * "data: " DOC "\n\n" at p, perhaps after an "event: NAME" line, DOC being
 * the remembered prefix (up to the quote of the text), a text of ASCII and
 * valid UTF-8 without escapes, its quote and the remembered suffix: walked
 * as walk_feed() walks DOC on its memo path (the prefix's state, the text,
 * the suffix that closes the document), and the event's length returned.
 * 0, with nothing done, for anything else.
 */

static size_t
ngx_http_ai_gateway_walk_chunk(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, const unsigned char *end,
    ngx_http_ai_gateway_name_pt is_end)
{
    size_t                m, n, k, cont, h;
    const unsigned char  *doc, *t, *q, *d;

    m = w->memo_len;
    n = w->suffix_len;

    if (!w->doc_start || m == 0 || n == 0 || w->memo_mode != w->mode
        || w->state != NGX_HTTP_AI_GATEWAY_WALK_VALUE)
    {
        return 0;
    }

    /*
     * An "event: NAME" line first (Anthropic's streams) when NAME is whole
     * in the parser's buffer for it, has no '\r', and ends no stream: the
     * only thing the caller does with a name
     */

    h = 0;

    if (*p == 'e' && end - p > 7 && memcmp(p, "event: ", 7) == 0) {
        k = end - p - 7;

        if (k > NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX + 1) {
            k = NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX + 1;
        }

        q = memchr(p + 7, '\n', k);

        if (q == NULL || q == p + 7 || is_end == NULL
            || memchr(p + 7, '\r', q - (p + 7)) != NULL
            || is_end(p + 7, q - (p + 7)))
        {
            return 0;
        }

        h = q + 1 - p;
    }

    d = p + h;

    if ((size_t) (end - d) < 6 + m + 1 + n + 2
        || memcmp(d, "data: ", 6) != 0)
    {
        return 0;
    }

    doc = d + 6;

    if (memcmp(doc, w->memo, m) != 0) {
        return 0;
    }

    t = doc + m;
    cont = 0;

    /* the text: printable ASCII and valid UTF-8 characters, no escape */

    for (q = t; /* void */; q += k) {
        q = ngx_http_ai_gateway_json_skip_plain(q, end);

        if (q == end || *q < 0x80) {
            break;
        }

        k = ngx_http_ai_gateway_json_utf8_char(q, end);

        if (k == 0) {
            return 0;
        }

        cont += k - 1;
    }

    if ((size_t) (end - q) < 1 + n + 2 || *q != '"'
        || memcmp(q + 1, w->suffix, n) != 0
        || q[1 + n] != '\n' || q[2 + n] != '\n')
    {
        return 0;
    }

    /*
     * What walk_feed()'s memo path leaves behind: the results the prefix
     * writes (model, finish reason), and those of the text, whose kind
     * was remembered with the prefix (string_start() found it there, and
     * finds the same after the same prefix).  The walk's own state is not
     * restored: the document ends here, and on_chunk() resets it.
     */

    w->doc_start = 0;
    ngx_http_ai_gateway_walk_replay_results(w);
    w->text_kind = w->memo_text_kind;

    /* a character a byte, but for UTF-8's continuation bytes */
    w->text_chars += (q - t) - cont;
    w->effects++;

    if (q != t) {
        w->text_seen = 1;
    }

    if (ngx_http_ai_gateway_walk_emit(w, t, q - t) == 0) {
        /* the suffix closed all that the prefix opened */
        w->depth = 0;
        w->state = NGX_HTTP_AI_GATEWAY_WALK_DONE;
    }

    return q + 3 + n - p;
}


/*
 * The prefix memo.  The walk of a document's bytes up to its first output
 * text depends on nothing but those bytes and the mode, and does nothing
 * but set the walk's state (nesting, keys), "type", and model and finish
 * reason: so when the next document starts with the same bytes, as the
 * chunks of a stream mostly do ({"id":...,"model":...,"choices":[{...
 * "delta":{"content": in every OpenAI chunk), that state is set at once
 * and the walk goes on from the text.  A prefix with a usage capture, or
 * with text (there is none before the first), is not remembered.
 *
 * Here the walk has just read the quote that starts the first output
 * text, the last of the len bytes of the document in its first buffer.
 * The quote is part of the prefix: before it the walk may be in a state
 * that a ']' would have closed (after '['), but at a quote all states
 * that expect a value are the same.
 *
 * The suffix memo goes with it: after that first text, the walk's state
 * is again the same in every document with the prefix, so the bytes that
 * follow the text, when they only close the document (no text, model,
 * finish reason, "type" or usage: w->effects unchanged) and fit in
 * NGX_HTTP_AI_GATEWAY_WALK_SUFFIX, are remembered too; the next document
 * whose text is followed by the same bytes is done at once.  A chunk is
 * then a compare, the text, and a compare ({"content":" word"} and
 * "},"finish_reason":null}]}" around it).
 */

static int
ngx_http_ai_gateway_walk_remember(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *doc, size_t len)
{
    unsigned  d;

    d = w->depth;

    if (len > NGX_HTTP_AI_GATEWAY_WALK_MEMO
        || d > NGX_HTTP_AI_GATEWAY_WALK_DEPTH)
    {
        return 0;
    }

    /* a suffix belongs to the prefix it followed */
    w->suffix_len = 0;

    memcpy(w->memo, doc, len);
    w->memo_len = len;
    w->memo_mode = w->mode;

    /* levels 1 to 8: their bits are in nest[0] */
    w->memo_depth = d;
    w->memo_nest = w->nest[0];
    memcpy(w->memo_path, w->path, NGX_HTTP_AI_GATEWAY_WALK_DEPTH);
    w->memo_type_delta = w->type_delta;
    w->memo_text_kind = w->text_kind;

    w->memo_model = w->model_set;

    if (w->model_set) {
        memcpy(w->memo_model_buf, w->model, w->model_len);
        w->memo_model_len = w->model_len;
    }

    /* the model now is the memo's: replays need not copy it */
    w->model_memo = w->model_set;

    w->memo_finish = w->finish_set;
    w->memo_choice = w->choice_seen;

    if (w->finish_set) {
        memcpy(w->memo_finish_buf, w->finish, w->finish_len);
        w->memo_finish_len = w->finish_len;
    }

    return 1;
}


/* the document starts with the remembered prefix: the walk as before its
 * last byte, the quote, which is read again */

static void
ngx_http_ai_gateway_walk_replay(ngx_http_ai_gateway_walk_t *w)
{
    w->state = NGX_HTTP_AI_GATEWAY_WALK_VALUE;
    w->depth = w->memo_depth;
    w->nest[0] = w->memo_nest;
    memcpy(w->path, w->memo_path, NGX_HTTP_AI_GATEWAY_WALK_DEPTH);
    w->type_delta = w->memo_type_delta;

    /* (walk_chunk()'s documents need not: they carry no usage) */
    w->choice_seen = w->memo_choice;

    ngx_http_ai_gateway_walk_replay_results(w);
}


/* what the prefix writes of the walk's results */

static void
ngx_http_ai_gateway_walk_replay_results(ngx_http_ai_gateway_walk_t *w)
{
    if (w->memo_model) {
        /* a copy only when another model was written since */
        if (!w->model_memo) {
            memcpy(w->model, w->memo_model_buf, w->memo_model_len);
            w->model_len = w->memo_model_len;
            w->model_memo = 1;
        }

        w->model_set = 1;
    }

    if (w->memo_finish) {
        memcpy(w->finish, w->memo_finish_buf, w->memo_finish_len);
        w->finish_len = w->memo_finish_len;
        w->finish_set = 1;
    }
}


static int
ngx_http_ai_gateway_walk_fail(ngx_http_ai_gateway_walk_t *w)
{
    w->malformed = 1;
    w->capturing = 0;
    w->state = NGX_HTTP_AI_GATEWAY_WALK_ERROR;

    return -1;
}


static ngx_http_ai_gateway_walk_inline int
ngx_http_ai_gateway_walk_push(ngx_http_ai_gateway_walk_t *w, unsigned object)
{
    unsigned  d;

    d = w->depth;

    if (d == NGX_HTTP_AI_GATEWAY_WALK_NEST) {
        return -1;
    }

    if (object) {
        w->nest[d >> 3] |= (unsigned char) (1 << (d & 7));

    } else {
        w->nest[d >> 3] &= (unsigned char) ~(1 << (d & 7));
    }

    if (d < NGX_HTTP_AI_GATEWAY_WALK_DEPTH) {
        /* an array's elements are values of the array's key */
        w->path[d] = object ? NGX_HTTP_AI_GATEWAY_WK_NONE
                            : (d ? w->path[d - 1]
                                 : NGX_HTTP_AI_GATEWAY_WK_NONE);
    }

    w->depth = d + 1;

    return 0;
}


/* is the object starting here usage, message.usage or response.usage */

static ngx_http_ai_gateway_walk_inline int
ngx_http_ai_gateway_walk_is_usage(ngx_http_ai_gateway_walk_t *w)
{
    unsigned  d;

    d = w->depth;

    if (d == 0 || d > 2
        || !ngx_http_ai_gateway_walk_object(w, d)
        || w->path[d - 1] != NGX_HTTP_AI_GATEWAY_WK_USAGE)
    {
        return 0;
    }

    return d == 1
           || w->path[0] == NGX_HTTP_AI_GATEWAY_WK_MESSAGE
           || w->path[0] == NGX_HTTP_AI_GATEWAY_WK_RESPONSE;
}


/*
 * A string value starts: the rules by its key K, the key P of the object
 * holding it, the depth, and the mode (see the header) tell what it is.
 */

static void
ngx_http_ai_gateway_walk_string_start(ngx_http_ai_gateway_walk_t *w)
{
    unsigned  d, k, pk, obj, sse, mode;

    w->str_mode = NGX_HTTP_AI_GATEWAY_STR_SKIP;
    w->escape = 0;

    d = w->depth;

    if (d == 0 || d > NGX_HTTP_AI_GATEWAY_WALK_DEPTH) {
        return;
    }

    k = w->path[d - 1];

    if (k <= NGX_HTTP_AI_GATEWAY_WK_OTHER) {
        return;   /* most strings */
    }

    obj = ngx_http_ai_gateway_walk_object(w, d);

    /* in an array, the string is a value of the array's key, so P is the
     * key above that */
    if (obj) {
        pk = (d >= 2) ? w->path[d - 2] : NGX_HTTP_AI_GATEWAY_WK_NONE;

    } else {
        pk = (d >= 3) ? w->path[d - 3] : NGX_HTTP_AI_GATEWAY_WK_NONE;
    }

    sse = (w->mode == NGX_HTTP_AI_GATEWAY_WALK_SSE);
    mode = NGX_HTTP_AI_GATEWAY_STR_SKIP;
    w->text_kind = NGX_HTTP_AI_GATEWAY_TEXT_CONTENT;

    switch (k) {

    case NGX_HTTP_AI_GATEWAY_WK_CONTENT:
        if (pk == (sse ? NGX_HTTP_AI_GATEWAY_WK_DELTA
                       : NGX_HTTP_AI_GATEWAY_WK_MESSAGE))
        {
            mode = NGX_HTTP_AI_GATEWAY_STR_TEXT;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_TEXT:
        if (pk == NGX_HTTP_AI_GATEWAY_WK_CHOICES
            || pk == (sse ? NGX_HTTP_AI_GATEWAY_WK_DELTA
                          : NGX_HTTP_AI_GATEWAY_WK_CONTENT))
        {
            mode = NGX_HTTP_AI_GATEWAY_STR_TEXT;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_ARGUMENTS:
        if (pk == NGX_HTTP_AI_GATEWAY_WK_FUNCTION) {
            mode = NGX_HTTP_AI_GATEWAY_STR_TEXT;
            w->text_kind = NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_PARTIAL_JSON:
        if (sse && pk == NGX_HTTP_AI_GATEWAY_WK_DELTA) {
            mode = NGX_HTTP_AI_GATEWAY_STR_TEXT;
            w->text_kind = NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_DELTA:

        /* OpenAI responses "*.delta" events; "type" comes first there,
         * and tells the answer's text from a reasoning summary's */

        if (sse && d == 1 && obj
            && w->type_delta != NGX_HTTP_AI_GATEWAY_DELTA_OTHER)
        {
            mode = NGX_HTTP_AI_GATEWAY_STR_TEXT;

            if (w->type_delta == NGX_HTTP_AI_GATEWAY_DELTA_ARGUMENTS) {
                w->text_kind = NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS;
            }
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_MODEL:
        if (obj
            && (d == 1
                || (d == 2 && (pk == NGX_HTTP_AI_GATEWAY_WK_MESSAGE
                               || pk == NGX_HTTP_AI_GATEWAY_WK_RESPONSE))))
        {
            mode = NGX_HTTP_AI_GATEWAY_STR_SHORT;
            w->short_target = NGX_HTTP_AI_GATEWAY_SHORT_MODEL;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_FINISH_REASON:
        if (obj && pk == NGX_HTTP_AI_GATEWAY_WK_CHOICES) {
            mode = NGX_HTTP_AI_GATEWAY_STR_SHORT;
            w->short_target = NGX_HTTP_AI_GATEWAY_SHORT_FINISH;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_STOP_REASON:
        if (obj && (d == 1 || pk == NGX_HTTP_AI_GATEWAY_WK_DELTA)) {
            mode = NGX_HTTP_AI_GATEWAY_STR_SHORT;
            w->short_target = NGX_HTTP_AI_GATEWAY_SHORT_FINISH;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_STATUS:
        if (obj
            && ((d == 2 && pk == NGX_HTTP_AI_GATEWAY_WK_RESPONSE)
                || (d == 1 && !sse)))
        {
            mode = NGX_HTTP_AI_GATEWAY_STR_SHORT;
            w->short_target = NGX_HTTP_AI_GATEWAY_SHORT_FINISH;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_WK_TYPE:
        if (sse && d == 1 && obj) {
            mode = NGX_HTTP_AI_GATEWAY_STR_SHORT;
            w->short_target = NGX_HTTP_AI_GATEWAY_SHORT_TYPE;
        }

        break;
    }

    if (mode == NGX_HTTP_AI_GATEWAY_STR_SHORT) {
        w->short_len = 0;
        w->short_cut = 0;
    }

    w->str_mode = mode;
}


/*
 * Reads string bytes from *pp up to and including the closing quote, or to
 * the end of the buffer.  Returns 0, -1 (malformed: state set), or what
 * on_text returned (the walk then is stopped).
 */

static int
ngx_http_ai_gateway_walk_string(ngx_http_ai_gateway_walk_t *w,
    const unsigned char **pp, const unsigned char *end)
{
    size_t                n;
    const unsigned char  *p, *q, *key;

    /* the general path: counted as writing results, to be safe */
    w->effects++;

    if (w->str_mode >= NGX_HTTP_AI_GATEWAY_STR_TEXT) {
        return ngx_http_ai_gateway_walk_decoded(w, pp, end);
    }

    /* skipped strings and keys: an escape only hides the byte after '\' */

    p = *pp;
    key = w->key;

    for ( ;; ) {

        if (w->escape) {
            if (p == end) {
                break;
            }

            w->escape = 0;
            p++;
        }

        q = ngx_http_ai_gateway_walk_skip_plain(p, end);

        if (w->str_mode == NGX_HTTP_AI_GATEWAY_STR_KEY && !w->key_other) {
            n = q - p;

            if (w->key_len == 0 && q != end && *q == '"') {
                /* the whole key is in this buffer, as usual: no copy */
                key = p;
                w->key_len = n;

            } else if (n > sizeof(w->key) - w->key_len) {
                w->key_other = 1;

            } else {
                memcpy(w->key + w->key_len, p, n);
                w->key_len += n;
            }
        }

        p = q;

        if (p == end) {
            break;
        }

        p++;

        if (*q == '"') {
            *pp = p;

            if (w->str_mode == NGX_HTTP_AI_GATEWAY_STR_KEY) {
                ngx_http_ai_gateway_walk_key_end(w, key);

            } else {
                ngx_http_ai_gateway_walk_string_end(w);
            }

            return 0;
        }

        /* a backslash: keys with escapes are not ours */
        w->key_other = 1;
        w->escape = 1;
    }

    *pp = p;

    return 0;
}


/* output text, and short strings: decoded */

static int
ngx_http_ai_gateway_walk_decoded(ngx_http_ai_gateway_walk_t *w,
    const unsigned char **pp, const unsigned char *end)
{
    int                   rc;
    size_t                n, keep;
    uint64_t              chars;
    unsigned              need;
    unsigned char         out[8];
    const unsigned char  *p, *q;

    p = *pp;

    for ( ;; ) {

        if (w->uescape_len) {
            if (p == end) {
                break;
            }

            rc = ngx_http_ai_gateway_walk_escape(w, *p, out, &n);

            if (rc == -1) {
                *pp = p;
                return ngx_http_ai_gateway_walk_fail(w);
            }

            if (rc == 0) {
                p++;
            }

            if (n) {
                rc = ngx_http_ai_gateway_walk_out(w, out, n);
                if (rc != 0) {
                    *pp = p;
                    return rc;
                }
            }

            continue;
        }

        if (w->utf8_pending) {

            /* the rest of a character split between buffers */

            while (p < end && w->utf8_pending < w->utf8_need
                   && w->utf8_pending < sizeof(w->utf8)
                   && (*p & 0xc0) == 0x80)
            {
                w->utf8[w->utf8_pending++] = *p++;
            }

            if (p == end && w->utf8_pending < w->utf8_need) {
                break;
            }

            /* counted with the run that had its first byte */

            n = w->utf8_pending;
            w->utf8_pending = 0;

            rc = ngx_http_ai_gateway_walk_emit(w, w->utf8, n);
            if (rc != 0) {
                *pp = p;
                return rc;
            }

            continue;
        }

        q = ngx_http_ai_gateway_walk_skip_plain(p, end);

        if (q != p) {
            n = q - p;

            if (w->str_mode == NGX_HTTP_AI_GATEWAY_STR_SHORT) {
                ngx_http_ai_gateway_walk_out(w, p, n);

            } else {
                chars = ngx_http_ai_gateway_json_utf8_count(p, q);
                w->text_chars += chars;

                if (chars) {
                    w->text_seen = 1;
                }

                if (q == end) {
                    keep = ngx_http_ai_gateway_walk_utf8_tail(p, n, &need);

                    if (keep != n) {
                        memcpy(w->utf8, p + keep, n - keep);
                        w->utf8_pending = n - keep;
                        w->utf8_need = need;
                        n = keep;
                    }
                }

                rc = ngx_http_ai_gateway_walk_emit(w, p, n);
                if (rc != 0) {
                    *pp = q;
                    return rc;
                }
            }

            p = q;
        }

        if (p == end) {
            break;
        }

        p++;

        if (*q == '"') {
            *pp = p;
            ngx_http_ai_gateway_walk_string_end(w);
            return 0;
        }

        w->uescape[0] = '\\';
        w->uescape_len = 1;
    }

    *pp = p;

    return 0;
}


/*
 * Decoded bytes of the current string (an escape, or a run of a short
 * string): output text is counted and passed on, a short string is kept
 * up to its limit.
 */

static int
ngx_http_ai_gateway_walk_out(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len)
{
    size_t  n;

    if (w->str_mode == NGX_HTTP_AI_GATEWAY_STR_SHORT) {
        n = NGX_HTTP_AI_GATEWAY_SHORT_MAX - w->short_len;

        if (len > n) {
            len = n;
            w->short_cut = 1;
        }

        memcpy(w->short_buf + w->short_len, p, len);
        w->short_len += len;

        return 0;
    }

    n = ngx_http_ai_gateway_json_utf8_count(p, p + len);
    w->text_chars += n;

    if (n) {
        w->text_seen = 1;
    }

    return ngx_http_ai_gateway_walk_emit(w, p, len);
}


static int
ngx_http_ai_gateway_walk_emit(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len)
{
    int       rc;
    unsigned  k;

    if (len == 0 || w->on_text == NULL) {
        return 0;
    }

    k = w->text_kind;

    if (w->sink_last[k] != NULL
        && (size_t) (w->sink_end[k] - *w->sink_last[k]) >= len)
    {
        memcpy(*w->sink_last[k], p, len);
        *w->sink_last[k] += len;
        return 0;
    }

    rc = w->on_text(w->data, (ngx_http_ai_gateway_text_e) w->text_kind, p,
                    len);

    if (rc != 0) {
        w->state = NGX_HTTP_AI_GATEWAY_WALK_STOPPED;
    }

    return rc;
}


/*
 * One byte of an escape in a decoded string; w->uescape holds the escape
 * so far, from its backslash, and a high surrogate waits there for its low
 * half.  Decoded bytes go to out.  Returns 0 when c was used, 1 when it is
 * to be read again as a string byte, -1 when it cannot be JSON.
 */

static int
ngx_http_ai_gateway_walk_escape(ngx_http_ai_gateway_walk_t *w, unsigned c,
    unsigned char *out, size_t *n)
{
    unsigned  code, low;

    *n = 0;

    switch (w->uescape_len) {

    case 6:

        /* "\uD8xx": a low half must follow */

        if (c == '\\') {
            w->uescape[w->uescape_len++] = '\\';
            return 0;
        }

        *n = ngx_http_ai_gateway_walk_utf8_put(out, 0xfffd);
        w->uescape_len = 0;

        return 1;

    case 1:
    case 7:

        /* the byte after a backslash */

        if (c == 'u') {
            w->uescape[w->uescape_len++] = 'u';
            return 0;
        }

        if (w->uescape_len == 7) {
            *n = ngx_http_ai_gateway_walk_utf8_put(out, 0xfffd);
        }

        switch (c) {
        case '"': case '\\': case '/':
            break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        default:
            return -1;
        }

        out[(*n)++] = (unsigned char) c;
        w->uescape_len = 0;

        return 0;
    }

    /* a hex digit of "\uXXXX" */

    if (!((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')))
    {
        return -1;
    }

    w->uescape[w->uescape_len++] = (unsigned char) c;

    if (w->uescape_len == 6) {
        code = ngx_http_ai_gateway_walk_hex4(w->uescape + 2);

        if (code >= 0xd800 && code <= 0xdbff) {
            return 0;
        }

        if (code >= 0xdc00 && code <= 0xdfff) {
            code = 0xfffd;
        }

        *n = ngx_http_ai_gateway_walk_utf8_put(out, code);
        w->uescape_len = 0;

        return 0;
    }

    if (w->uescape_len < 12) {
        return 0;
    }

    code = ngx_http_ai_gateway_walk_hex4(w->uescape + 2);
    low = ngx_http_ai_gateway_walk_hex4(w->uescape + 8);

    if (low >= 0xdc00 && low <= 0xdfff) {
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        *n = ngx_http_ai_gateway_walk_utf8_put(out, code);
        w->uescape_len = 0;

        return 0;
    }

    /* a high half without its low half */

    *n = ngx_http_ai_gateway_walk_utf8_put(out, 0xfffd);

    if (low >= 0xd800 && low <= 0xdbff) {
        /* another high half: it waits in turn */
        memcpy(w->uescape + 2, w->uescape + 8, 4);
        w->uescape_len = 6;

        return 0;
    }

    *n += ngx_http_ai_gateway_walk_utf8_put(out + *n, low);
    w->uescape_len = 0;

    return 0;
}


/* key holds the key_len bytes of the key: in w->key, or in the buffer */

static void
ngx_http_ai_gateway_walk_key_end(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *key)
{
    unsigned  d;

    d = w->depth;

    if (d <= NGX_HTTP_AI_GATEWAY_WALK_DEPTH) {
        w->path[d - 1] = w->key_other
                         ? NGX_HTTP_AI_GATEWAY_WK_OTHER
                         : ngx_http_ai_gateway_walk_key_lookup(key,
                                                               w->key_len);
    }

    w->state = NGX_HTTP_AI_GATEWAY_WALK_COLON;
}


/* a value string ends */

static void
ngx_http_ai_gateway_walk_string_end(ngx_http_ai_gateway_walk_t *w)
{
    size_t    len;
    unsigned  need;

    if (w->str_mode == NGX_HTTP_AI_GATEWAY_STR_SHORT) {
        len = w->short_len;

        if (w->short_cut) {
            /* not in the middle of a character */
            len = ngx_http_ai_gateway_walk_utf8_tail(w->short_buf, len, &need);
        }

        ngx_http_ai_gateway_walk_short(w, w->short_buf, len);
    }

    ngx_http_ai_gateway_walk_value_end(w);
}


/* a short string's decoded value, whole (or cut at a character) */

static void
ngx_http_ai_gateway_walk_short(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *s, size_t len)
{
    w->effects++;

    switch (w->short_target) {

    case NGX_HTTP_AI_GATEWAY_SHORT_MODEL:
        if (len) {
            memcpy(w->model, s, len);
            w->model_len = len;
            w->model_set = 1;
            w->model_memo = 0;
        }

        break;

    case NGX_HTTP_AI_GATEWAY_SHORT_FINISH:
        if (len) {
            memcpy(w->finish, s, len);
            w->finish_len = len;
            w->finish_set = 1;
        }

        break;

    default: /* NGX_HTTP_AI_GATEWAY_SHORT_TYPE */
        w->type_delta = ngx_http_ai_gateway_walk_type_delta(s, len);
        break;
    }
}


/*
 * A Responses event's "type": its "delta" is the answer's text
 * ("response.output_text.delta", "response.refusal.delta"), a tool's
 * arguments ("response.function_call_arguments.delta", a custom tool's
 * input), or something else the client is not answered with: reasoning
 * text and summaries, audio, transcripts.  Other APIs' types leave their
 * deltas text, or arguments where the type says so.
 */

static unsigned
ngx_http_ai_gateway_walk_type_delta(const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i + 9 <= len; i++) {
        if (memcmp(s + i, "arguments", 9) == 0) {
            return NGX_HTTP_AI_GATEWAY_DELTA_ARGUMENTS;
        }
    }

    if (len < 9 || memcmp(s, "response.", 9) != 0) {
        return NGX_HTTP_AI_GATEWAY_DELTA_TEXT;
    }

#define ngx_http_ai_gateway_type_is(t)                                        \
    (len == sizeof(t) - 1 && memcmp(s, t, sizeof(t) - 1) == 0)

    if (ngx_http_ai_gateway_type_is("response.output_text.delta")
        || ngx_http_ai_gateway_type_is("response.refusal.delta"))
    {
        return NGX_HTTP_AI_GATEWAY_DELTA_TEXT;
    }

    if (ngx_http_ai_gateway_type_is("response.custom_tool_call_input.delta"))
    {
        return NGX_HTTP_AI_GATEWAY_DELTA_ARGUMENTS;
    }

#undef ngx_http_ai_gateway_type_is

    return NGX_HTTP_AI_GATEWAY_DELTA_OTHER;
}


/*
 * Every key of every object goes through here: the length and a byte pick
 * the one key of the table it can be, and a compare of two (overlapping)
 * words tells.
 */

/* key[0..n) == s, for a literal s of 4 to 16 bytes */

static ngx_http_ai_gateway_walk_inline int
ngx_http_ai_gateway_walk_key_is(const unsigned char *key, const char *s,
    size_t n)
{
    if (n >= 8) {
        return ngx_http_ai_gateway_walk_w64(key)
               == ngx_http_ai_gateway_walk_w64(s)
               && ngx_http_ai_gateway_walk_w64(key + n - 8)
                  == ngx_http_ai_gateway_walk_w64(s + n - 8);
    }

    return ngx_http_ai_gateway_walk_w32(key) == ngx_http_ai_gateway_walk_w32(s)
           && ngx_http_ai_gateway_walk_w32(key + n - 4)
              == ngx_http_ai_gateway_walk_w32(s + n - 4);
}


static ngx_http_ai_gateway_walk_inline unsigned
ngx_http_ai_gateway_walk_key_lookup(const unsigned char *key, size_t len)
{
#define ngx_http_ai_gateway_walk_key(s, index)                                \
    if (ngx_http_ai_gateway_walk_key_is(key, s, sizeof(s) - 1)) {             \
        return NGX_HTTP_AI_GATEWAY_WK_##index;                                \
    }                                                                         \
    return NGX_HTTP_AI_GATEWAY_WK_OTHER

    switch (len) {

    case 4:
        switch (key[1]) {
        case 'e': ngx_http_ai_gateway_walk_key("text", TEXT);
        case 'y': ngx_http_ai_gateway_walk_key("type", TYPE);
        default: return NGX_HTTP_AI_GATEWAY_WK_OTHER;
        }

    case 5:
        switch (key[0]) {
        case 'u': ngx_http_ai_gateway_walk_key("usage", USAGE);
        case 'm': ngx_http_ai_gateway_walk_key("model", MODEL);
        case 'd': ngx_http_ai_gateway_walk_key("delta", DELTA);
        default: return NGX_HTTP_AI_GATEWAY_WK_OTHER;
        }

    case 6:
        switch (key[0]) {
        case 's': ngx_http_ai_gateway_walk_key("status", STATUS);
        case 'o': ngx_http_ai_gateway_walk_key("output", OUTPUT);
        default: return NGX_HTTP_AI_GATEWAY_WK_OTHER;
        }

    case 7:
        switch (key[1]) {
        case 'e': ngx_http_ai_gateway_walk_key("message", MESSAGE);
        case 'h': ngx_http_ai_gateway_walk_key("choices", CHOICES);
        case 'o': ngx_http_ai_gateway_walk_key("content", CONTENT);
        default: return NGX_HTTP_AI_GATEWAY_WK_OTHER;
        }

    case 8:
        switch (key[0]) {
        case 'r': ngx_http_ai_gateway_walk_key("response", RESPONSE);
        case 'f': ngx_http_ai_gateway_walk_key("function", FUNCTION);
        default: return NGX_HTTP_AI_GATEWAY_WK_OTHER;
        }

    case 9:
        ngx_http_ai_gateway_walk_key("arguments", ARGUMENTS);

    case 10:
        ngx_http_ai_gateway_walk_key("tool_calls", TOOL_CALLS);

    case 11:
        ngx_http_ai_gateway_walk_key("stop_reason", STOP_REASON);

    case 12:
        ngx_http_ai_gateway_walk_key("partial_json", PARTIAL_JSON);

    case 13:
        ngx_http_ai_gateway_walk_key("finish_reason", FINISH_REASON);

    default:
        return NGX_HTTP_AI_GATEWAY_WK_OTHER;
    }

#undef ngx_http_ai_gateway_walk_key
}


static void
ngx_http_ai_gateway_walk_capture(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len)
{
    if (w->capture_overflow) {
        return;
    }

    if (len > NGX_HTTP_AI_GATEWAY_USAGE_MAX - w->capture_len) {
        /* too big for a usage object: keep the one we have */
        w->capture_overflow = 1;
        return;
    }

    memcpy(w->capture + w->capture_len, p, len);
    w->capture_len += len;
}


static void
ngx_http_ai_gateway_walk_captured(ngx_http_ai_gateway_walk_t *w)
{
    w->capturing = 0;

    if (w->capture_overflow) {
        return;
    }

    memcpy(w->usage, w->capture, w->capture_len);
    w->usage_len = w->capture_len;
    w->usage_found = 1;
    w->usage_new = 1;
}


/*
 * Returns the first quote or backslash at or after p, or end: 16 bytes a
 * step with SSE2, 8 with plain 64-bit words elsewhere.  Unlike the request
 * scanner's, it lets control characters and UTF-8 through: the walker does
 * not validate them.
 */

static ngx_http_ai_gateway_walk_inline const unsigned char *
ngx_http_ai_gateway_walk_skip_plain(const unsigned char *p,
    const unsigned char *end)
{
#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_USAGE_NO_SIMD)
    int      mask;
    __m128i  v, quote, bslash;

    quote = _mm_set1_epi8('"');
    bslash = _mm_set1_epi8('\\');

    /* keys and most values are shorter than 16 bytes: a first step */

    if (end - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                              _mm_cmpeq_epi8(v, bslash)));

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }

    while (end - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                              _mm_cmpeq_epi8(v, bslash)));

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }
#else
    uint64_t  x, q, b, m;

#define NGX_HTTP_AI_GATEWAY_WALK_ONES  0x0101010101010101ULL
#define NGX_HTTP_AI_GATEWAY_WALK_HIGH  0x8080808080808080ULL

    while (end - p >= 8) {
        memcpy(&x, p, 8);

        q = x ^ (NGX_HTTP_AI_GATEWAY_WALK_ONES * '"');
        b = x ^ (NGX_HTTP_AI_GATEWAY_WALK_ONES * '\\');
        m = (((q - NGX_HTTP_AI_GATEWAY_WALK_ONES) & ~q)
             | ((b - NGX_HTTP_AI_GATEWAY_WALK_ONES) & ~b))
            & NGX_HTTP_AI_GATEWAY_WALK_HIGH;

        if (m) {
            break;
        }

        p += 8;
    }
#endif

    while (p < end && *p != '"' && *p != '\\') {
        p++;
    }

    return p;
}


/*
 * Skips whole words of 8 ASCII digits (timestamps, token counts); the
 * caller takes the rest of a number a byte at a time.
 */

static ngx_http_ai_gateway_walk_inline const unsigned char *
ngx_http_ai_gateway_walk_skip_digits(const unsigned char *p,
    const unsigned char *end)
{
    uint64_t  x;

    while (end - p >= 8) {
        x = ngx_http_ai_gateway_walk_w64(p);

        /* each byte 0x30-0x39: high nibble 3, and + 6 keeps it 3 (no
         * carry crosses bytes then) */
        if ((x & 0xf0f0f0f0f0f0f0f0ULL) != 0x3030303030303030ULL
            || ((x + 0x0606060606060606ULL) & 0xf0f0f0f0f0f0f0f0ULL)
               != 0x3030303030303030ULL)
        {
            break;
        }

        p += 8;
    }

    return p;
}


/*
 * Returns how much of p[0..len) is whole characters: an incomplete UTF-8
 * sequence at the end is left out, and *need is its full length.
 */

static size_t
ngx_http_ai_gateway_walk_utf8_tail(const unsigned char *p, size_t len,
    unsigned *need)
{
    size_t    i;
    unsigned  c;

    for (i = 1; i <= 3 && i <= len; i++) {
        c = p[len - i];

        if ((c & 0xc0) == 0x80) {
            continue;
        }

        if (c < 0xc0) {
            break;   /* ASCII */
        }

        *need = (c >= 0xf0) ? 4 : (c >= 0xe0) ? 3 : 2;

        if (i < *need) {
            return len - i;
        }

        break;
    }

    return len;
}


static size_t
ngx_http_ai_gateway_walk_utf8_put(unsigned char *out, unsigned code)
{
    if (code < 0x80) {
        out[0] = (unsigned char) code;
        return 1;
    }

    if (code < 0x800) {
        out[0] = (unsigned char) (0xc0 | (code >> 6));
        out[1] = (unsigned char) (0x80 | (code & 0x3f));
        return 2;
    }

    if (code < 0x10000) {
        out[0] = (unsigned char) (0xe0 | (code >> 12));
        out[1] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
        out[2] = (unsigned char) (0x80 | (code & 0x3f));
        return 3;
    }

    out[0] = (unsigned char) (0xf0 | (code >> 18));
    out[1] = (unsigned char) (0x80 | ((code >> 12) & 0x3f));
    out[2] = (unsigned char) (0x80 | ((code >> 6) & 0x3f));
    out[3] = (unsigned char) (0x80 | (code & 0x3f));
    return 4;
}


/* the digits were checked as they came */

static unsigned
ngx_http_ai_gateway_walk_hex4(const unsigned char *p)
{
    unsigned  i, c, v;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];
        c = (c <= '9') ? c - '0' : (c | 0x20) - 'a' + 10;
        v = (v << 4) | c;
    }

    return v;
}


void
ngx_http_ai_gateway_usage_init(ngx_http_ai_gateway_usage_t *u)
{
    u->input = -1;
    u->output = -1;
    u->total = -1;
    u->cached_input = -1;
    u->cache_creation = -1;
    u->reasoning = -1;
}


/*
 * Anthropic's input_tokens leaves out the cache reads and writes; OpenAI's
 * responses input_tokens has them.  An object is taken as Anthropic's when
 * it has a cache_*_input_tokens field, or when an earlier one did (then
 * cache_creation is set) and it has no input_tokens_details: that is
 * message_delta after message_start.
 */

/*
 * The numbers of a usage object, read in one pass without building a tree:
 * usage objects are small and flat, and this runs once or twice per
 * request.  Invalid JSON is refused, as jansson would; with duplicate keys
 * the last one counts, as in jansson.
 */

typedef enum {
    NGX_HTTP_AI_GATEWAY_U_PROMPT = 0,
    NGX_HTTP_AI_GATEWAY_U_COMPLETION,
    NGX_HTTP_AI_GATEWAY_U_TOTAL,
    NGX_HTTP_AI_GATEWAY_U_INPUT,
    NGX_HTTP_AI_GATEWAY_U_OUTPUT,
    NGX_HTTP_AI_GATEWAY_U_CACHE_READ,
    NGX_HTTP_AI_GATEWAY_U_CACHE_WRITE,
    NGX_HTTP_AI_GATEWAY_U_PROMPT_CACHED,
    NGX_HTTP_AI_GATEWAY_U_COMPLETION_REASONING,
    NGX_HTTP_AI_GATEWAY_U_INPUT_CACHED,
    NGX_HTTP_AI_GATEWAY_U_OUTPUT_REASONING,
    NGX_HTTP_AI_GATEWAY_U_LAST
} ngx_http_ai_gateway_ufield_e;


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    int64_t               v[NGX_HTTP_AI_GATEWAY_U_LAST];
    unsigned              has[NGX_HTTP_AI_GATEWAY_U_LAST];
    unsigned              input_details;     /* key present at the top */
    unsigned              prefix;            /* more text may follow */
    struct ngx_http_ai_gateway_urec_s  *rec; /* the fast scan's counts */
} ngx_http_ai_gateway_uscan_t;


/*
 * A provider writes the same usage object in every answer, only its counts
 * change: {"prompt_tokens":231,"completion_tokens":48,...}.  The last one
 * the fast scan read is remembered as its text between the counts and the
 * field each count is, and the next object is first matched against it:
 * a comparison of the text and the digits read, where the scan looks up
 * every key.  Anything else (another shape, more white space, a count
 * that is not an integer) fails the match, and the scan reads the object.
 * Per process: a worker has one thread.
 */

#define NGX_HTTP_AI_GATEWAY_UMEMO_TEXT  384
#define NGX_HTTP_AI_GATEWAY_UMEMO_NUMS  24

typedef struct ngx_http_ai_gateway_urec_s {
    /* where the fast scan found each count, and which field it is */
    const unsigned char  *start[NGX_HTTP_AI_GATEWAY_UMEMO_NUMS];
    const unsigned char  *end[NGX_HTTP_AI_GATEWAY_UMEMO_NUMS];
    signed char           field[NGX_HTTP_AI_GATEWAY_UMEMO_NUMS];
    unsigned              n;
    unsigned              overflow;
} ngx_http_ai_gateway_urec_t;


typedef struct {
    unsigned char  text[NGX_HTTP_AI_GATEWAY_UMEMO_TEXT];
    /* the text before count i is text[lit[i] .. lit[i + 1]); the text
     * after the last count, to the object's end, is text[lit[n] ..
     * lit[n + 1]) */
    uint16_t       lit[NGX_HTTP_AI_GATEWAY_UMEMO_NUMS + 2];
    signed char    field[NGX_HTTP_AI_GATEWAY_UMEMO_NUMS];
    unsigned       n;
    unsigned       input_details;
    unsigned       valid;
} ngx_http_ai_gateway_umemo_t;


static ngx_http_ai_gateway_umemo_t  ngx_http_ai_gateway_umemo;

#if (NGX_HTTP_AI_GATEWAY_UMEMO_COUNT)
/* for the unit test: how many objects the memo read */
unsigned long  ngx_http_ai_gateway_umemo_hits;
#endif


static const struct {
    const char  *key;
    size_t       len;
    int          field;        /* at the top, or -1 */
    int          sub;          /* its object's "cached" / "reasoning" field */
} ngx_http_ai_gateway_ukeys[] = {
    { "prompt_tokens", 13, NGX_HTTP_AI_GATEWAY_U_PROMPT, -1 },
    { "completion_tokens", 17, NGX_HTTP_AI_GATEWAY_U_COMPLETION, -1 },
    { "total_tokens", 12, NGX_HTTP_AI_GATEWAY_U_TOTAL, -1 },
    { "input_tokens", 12, NGX_HTTP_AI_GATEWAY_U_INPUT, -1 },
    { "output_tokens", 13, NGX_HTTP_AI_GATEWAY_U_OUTPUT, -1 },
    { "cache_read_input_tokens", 23, NGX_HTTP_AI_GATEWAY_U_CACHE_READ, -1 },
    { "cache_creation_input_tokens", 27, NGX_HTTP_AI_GATEWAY_U_CACHE_WRITE,
      -1 },
    { "prompt_tokens_details", 21, -1, NGX_HTTP_AI_GATEWAY_U_PROMPT_CACHED },
    { "completion_tokens_details", 25, -1,
      NGX_HTTP_AI_GATEWAY_U_COMPLETION_REASONING },
    { "input_tokens_details", 20, -1, NGX_HTTP_AI_GATEWAY_U_INPUT_CACHED },
    { "output_tokens_details", 21, -1,
      NGX_HTTP_AI_GATEWAY_U_OUTPUT_REASONING },
    { NULL, 0, -1, -1 }
};


static int ngx_http_ai_gateway_uscan_value(ngx_http_ai_gateway_uscan_t *s,
    int field, int sub, unsigned depth);
static int ngx_http_ai_gateway_usage_read(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *json, size_t len, size_t *used);
static void ngx_http_ai_gateway_urec_add(ngx_http_ai_gateway_urec_t *rec,
    const unsigned char *start, const unsigned char *end, int field);
static void ngx_http_ai_gateway_umemo_keep(ngx_http_ai_gateway_uscan_t *s,
    const unsigned char *json, ngx_http_ai_gateway_urec_t *rec);
static int ngx_http_ai_gateway_umemo_match(ngx_http_ai_gateway_uscan_t *s);
static ngx_http_ai_gateway_walk_inline void
    ngx_http_ai_gateway_uscan_member(ngx_http_ai_gateway_uscan_t *s,
    const unsigned char *k, size_t klen, unsigned depth, int sub, int *field,
    int *nsub);


/* the index of a top-level key in ukeys, or -1: by its length and first
 * letter, then one comparison with a literal, which the compiler makes a
 * few word compares rather than a call */

#define ngx_http_ai_gateway_ukey_is(k, s, i)                                  \
    (memcmp(k, s, sizeof(s) - 1) == 0 ? (i) : -1)

static ngx_http_ai_gateway_walk_inline int
ngx_http_ai_gateway_uscan_key(const unsigned char *k, size_t klen)
{
    switch (klen) {
    case 12:
        return (k[0] == 't')
               ? ngx_http_ai_gateway_ukey_is(k, "total_tokens", 2)
               : ngx_http_ai_gateway_ukey_is(k, "input_tokens", 3);
    case 13:
        return (k[0] == 'p')
               ? ngx_http_ai_gateway_ukey_is(k, "prompt_tokens", 0)
               : ngx_http_ai_gateway_ukey_is(k, "output_tokens", 4);
    case 17:
        return ngx_http_ai_gateway_ukey_is(k, "completion_tokens", 1);
    case 20:
        return ngx_http_ai_gateway_ukey_is(k, "input_tokens_details", 9);
    case 21:
        return (k[0] == 'p')
               ? ngx_http_ai_gateway_ukey_is(k, "prompt_tokens_details", 7)
               : ngx_http_ai_gateway_ukey_is(k, "output_tokens_details", 10);
    case 23:
        return ngx_http_ai_gateway_ukey_is(k, "cache_read_input_tokens", 5);
    case 25:
        return ngx_http_ai_gateway_ukey_is(k, "completion_tokens_details", 8);
    case 27:
        return ngx_http_ai_gateway_ukey_is(k, "cache_creation_input_tokens",
                                           6);
    default:
        return -1;
    }
}

#undef ngx_http_ai_gateway_ukey_is


static void
ngx_http_ai_gateway_uscan_ws(ngx_http_ai_gateway_uscan_t *s)
{
    s->p = ngx_http_ai_gateway_json_skip_ws(s->p, s->end);
}


/* a string; its raw bytes (between the quotes) in *k, *klen */

static int
ngx_http_ai_gateway_uscan_string(ngx_http_ai_gateway_uscan_t *s,
    const unsigned char **k, size_t *klen)
{
    unsigned              c;
    const unsigned char  *start, *q;

    if (s->p == s->end || *s->p != '"') {
        return -1;
    }

    start = s->p + 1;

    /* mostly plain ASCII up to the quote: the request scan's SIMD run;
     * from where it stops, one pass finds the closing quote, steps over
     * escapes (so that \" does not end the string) and refuses control
     * characters */
    q = ngx_http_ai_gateway_json_skip_plain(start, s->end);

    for ( /* void */ ; q < s->end; q++) {
        c = *q;

        if (c == '"') {
            break;
        }

        if (c == '\\' && ++q == s->end) {
            return -1;
        }

        if (*q < 0x20) {
            return -1;
        }
    }

    if (q == s->end) {
        return -1;
    }

    *k = start;
    *klen = q - start;

    s->p = q + 1;

    return 0;
}


/* a number: integers and reals, kept when >= 0 and below 2^62 */

static int
ngx_http_ai_gateway_uscan_number(ngx_http_ai_gateway_uscan_t *s, int field)
{
    int                   neg, digits;
    int64_t               n;
    const unsigned char  *p;

    p = s->p;
    neg = 0;
    n = 0;
    digits = 0;

    if (p < s->end && *p == '-') {
        neg = 1;
        p++;
    }

    while (p < s->end && *p >= '0' && *p <= '9') {
        if (n < ((int64_t) 1 << 58)) {
            n = n * 10 + (*p - '0');
        }

        digits++;
        p++;
    }

    if (digits == 0) {
        return -1;
    }

    /* a fraction or an exponent: a whole-number real is still a count */
    while (p < s->end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e'
                          || *p == 'E' || *p == '+' || *p == '-'))
    {
        if (*p == 'e' || *p == 'E') {
            field = -1;
        }

        p++;
    }

    s->p = p;

    if (field >= 0 && !neg && n < ((int64_t) 1 << 58)) {
        s->v[field] = n;
        s->has[field] = 1;
    }

    return 0;
}


/*
 * After a member or an element: 0 at the closing bracket (consumed), 1
 * after a comma (the next one follows), -1 on anything else.
 */

static int
ngx_http_ai_gateway_uscan_next(ngx_http_ai_gateway_uscan_t *s, int close)
{
    ngx_http_ai_gateway_uscan_ws(s);

    if (s->p == s->end) {
        return -1;
    }

    if (*s->p == close) {
        s->p++;
        return 0;
    }

    if (*s->p != ',') {
        return -1;
    }

    s->p++;
    ngx_http_ai_gateway_uscan_ws(s);

    return 1;
}


static int
ngx_http_ai_gateway_uscan_object(ngx_http_ai_gateway_uscan_t *s, int sub,
    unsigned depth)
{
    int                   rc, field, nsub;
    size_t                klen;
    const unsigned char  *k;

    s->p++;   /* '{' */
    ngx_http_ai_gateway_uscan_ws(s);

    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }

    for ( ;; ) {
        if (ngx_http_ai_gateway_uscan_string(s, &k, &klen) != 0) {
            return -1;
        }

        ngx_http_ai_gateway_uscan_member(s, k, klen, depth, sub, &field,
                                         &nsub);

        ngx_http_ai_gateway_uscan_ws(s);

        if (s->p == s->end || *s->p != ':') {
            return -1;
        }

        s->p++;
        ngx_http_ai_gateway_uscan_ws(s);

        if (ngx_http_ai_gateway_uscan_value(s, field, nsub, depth + 1) != 0) {
            return -1;
        }

        rc = ngx_http_ai_gateway_uscan_next(s, '}');

        if (rc != 1) {
            return rc;
        }
    }
}


static int
ngx_http_ai_gateway_uscan_value(ngx_http_ai_gateway_uscan_t *s, int field,
    int sub, unsigned depth)
{
    int                   rc;
    size_t                len;
    const unsigned char  *k;

    if (s->p == s->end || depth > 16) {
        return -1;
    }

    switch (*s->p) {

    case '{':
        return ngx_http_ai_gateway_uscan_object(s, sub, depth);

    case '[':
        s->p++;
        ngx_http_ai_gateway_uscan_ws(s);

        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }

        for ( ;; ) {
            if (ngx_http_ai_gateway_uscan_value(s, -1, -1, depth + 1) != 0) {
                return -1;
            }

            rc = ngx_http_ai_gateway_uscan_next(s, ']');

            if (rc != 1) {
                return rc;
            }
        }

    case '"':
        return ngx_http_ai_gateway_uscan_string(s, &k, &len);

    case 't':
    case 'f':
    case 'n':
        len = (*s->p == 'f') ? 5 : 4;

        if ((size_t) (s->end - s->p) < len
            || memcmp(s->p, *s->p == 't' ? "true" : *s->p == 'f' ? "false"
                                                                 : "null",
                      len) != 0)
        {
            return -1;
        }

        s->p += len;
        return 0;

    default:
        return ngx_http_ai_gateway_uscan_number(s, field);
    }
}


/*
 * What a member of key k holds: *field, the count it is (or -1), and
 * *nsub, the count of a "details" object it opens (or -1); at depth 1 (the
 * usage object itself) or 2 (in the details object of field sub).
 */

static ngx_http_ai_gateway_walk_inline void
ngx_http_ai_gateway_uscan_member(ngx_http_ai_gateway_uscan_t *s,
    const unsigned char *k, size_t klen, unsigned depth, int sub, int *field,
    int *nsub)
{
    int  i;

    *field = -1;
    *nsub = -1;

    if (depth == 1) {
        i = ngx_http_ai_gateway_uscan_key(k, klen);

        if (i >= 0) {
            *field = ngx_http_ai_gateway_ukeys[i].field;
            *nsub = ngx_http_ai_gateway_ukeys[i].sub;

            if (*nsub == NGX_HTTP_AI_GATEWAY_U_INPUT_CACHED) {
                s->input_details = 1;
            }
        }

        return;
    }

    if (depth == 2 && sub >= 0) {
        if (klen == 13 && memcmp(k, "cached_tokens", 13) == 0
            && (sub == NGX_HTTP_AI_GATEWAY_U_PROMPT_CACHED
                || sub == NGX_HTTP_AI_GATEWAY_U_INPUT_CACHED))
        {
            *field = sub;

        } else if (klen == 16 && memcmp(k, "reasoning_tokens", 16) == 0
                   && (sub == NGX_HTTP_AI_GATEWAY_U_COMPLETION_REASONING
                       || sub == NGX_HTTP_AI_GATEWAY_U_OUTPUT_REASONING))
        {
            *field = sub;
        }
    }
}


/*
 * A count of the fast paths (the fast scan, the memo) at *pp, a digit: an
 * integer without a leading zero, of 17 digits at most (below the general
 * scan's 2^58).  0 with its value in *v and *pp after it; 1 for anything
 * else, which the general scan reads.
 */

static ngx_http_ai_gateway_walk_inline int
ngx_http_ai_gateway_ucount(const unsigned char **pp, const unsigned char *end,
    int64_t *v)
{
    size_t                digits;
    int64_t               n;
    const unsigned char  *p;

    p = *pp;

    if (*p == '0' && end - p > 1 && p[1] >= '0' && p[1] <= '9') {
        return 1;
    }

    n = 0;
    digits = 0;

    while (p < end && *p >= '0' && *p <= '9') {
        if (++digits > 17) {
            return 1;
        }

        n = n * 10 + (*p++ - '0');
    }

    *v = n;
    *pp = p;

    return 0;
}


/*
 * The usage object as providers write it: no white space, no escapes,
 * counts as plain integers, strings and nulls beside them, and objects one
 * level down.  Read in one loop, with the general scan's results; anything
 * else returns 1, and the general scan reads the text from its start.
 * This runs for every answer under a token budget or usage tracking.
 */

static int
ngx_http_ai_gateway_uscan_fast(ngx_http_ai_gateway_uscan_t *s)
{
    int                   field, sub, nsub;
    unsigned              depth;
    size_t                klen;
    int64_t               n;
    const unsigned char  *p, *end, *k, *q;

    p = s->p;
    end = s->end;

    /* "{}" and objects in objects are the general scan's */
    if (end - p < 2 || p[0] != '{' || p[1] != '"') {
        return 1;
    }

    p++;
    depth = 1;
    sub = -1;

    for ( ;; ) {

        /* a key, in plain ASCII: the caller's checks made sure of its
         * quote */

        k = ++p;
        p = ngx_http_ai_gateway_json_skip_plain(p, end);

        if (end - p < 3 || p[0] != '"' || p[1] != ':') {
            return 1;
        }

        klen = p - k;
        p += 2;

        ngx_http_ai_gateway_uscan_member(s, k, klen, depth, sub, &field,
                                         &nsub);

        /* the value */

        if (*p >= '0' && *p <= '9') {
            q = p;

            if (ngx_http_ai_gateway_ucount(&p, end, &n) != 0) {
                return 1;
            }

            if (field >= 0) {
                s->v[field] = n;
                s->has[field] = 1;
            }

            if (s->rec) {
                ngx_http_ai_gateway_urec_add(s->rec, q, p, field);
            }

        } else if (*p == '"') {
            p = ngx_http_ai_gateway_json_skip_plain(p + 1, end);

            if (p == end || *p != '"') {
                return 1;
            }

            p++;

        } else if (*p == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) {
            p += 4;

        } else if (*p == '{' && depth == 1 && end - p > 1 && p[1] == '"') {
            p++;
            depth = 2;
            sub = nsub;
            continue;

        } else {
            return 1;
        }

        /* after the value: the next key, or the ends of objects */

        for ( ;; ) {
            if (p == end) {
                return 1;
            }

            if (*p == ',') {
                p++;

                if (p == end || *p != '"') {
                    return 1;
                }

                break;
            }

            if (*p != '}') {
                return 1;
            }

            p++;

            if (depth == 1) {
                s->p = p;
                return (p == end || s->prefix) ? 0 : 1;
            }

            depth = 1;
            sub = -1;
        }
    }
}


static void
ngx_http_ai_gateway_urec_add(ngx_http_ai_gateway_urec_t *rec,
    const unsigned char *start, const unsigned char *end, int field)
{
    if (rec->n == NGX_HTTP_AI_GATEWAY_UMEMO_NUMS) {
        rec->overflow = 1;
        return;
    }

    rec->start[rec->n] = start;
    rec->end[rec->n] = end;
    rec->field[rec->n] = (signed char) field;
    rec->n++;
}


/* the object at json that the fast scan read, remembered */

static void
ngx_http_ai_gateway_umemo_keep(ngx_http_ai_gateway_uscan_t *s,
    const unsigned char *json, ngx_http_ai_gateway_urec_t *rec)
{
    size_t                        len, total;
    unsigned                      i;
    const unsigned char          *from, *to;
    ngx_http_ai_gateway_umemo_t  *m;

    m = &ngx_http_ai_gateway_umemo;

    if (rec->overflow) {
        return;
    }

    total = 0;

    for (i = 0; i < rec->n; i++) {
        total += rec->end[i] - rec->start[i];
    }

    if ((size_t) (s->p - json) - total > NGX_HTTP_AI_GATEWAY_UMEMO_TEXT) {
        return;
    }

    m->valid = 0;
    m->lit[0] = 0;
    from = json;

    for (i = 0; i <= rec->n; i++) {
        to = (i < rec->n) ? rec->start[i] : s->p;
        len = to - from;

        memcpy(m->text + m->lit[i], from, len);
        m->lit[i + 1] = (uint16_t) (m->lit[i] + len);

        if (i < rec->n) {
            m->field[i] = rec->field[i];
            from = rec->end[i];
        }
    }

    m->n = rec->n;
    m->input_details = s->input_details;
    m->valid = 1;
}


/* 0 when the object at s->p has the remembered one's shape: its counts
 * are then in s, and s->p after it */

static int
ngx_http_ai_gateway_umemo_match(ngx_http_ai_gateway_uscan_t *s)
{
    size_t                        len;
    int64_t                       n;
    unsigned                      i;
    const unsigned char          *p, *end, *lit;
    ngx_http_ai_gateway_umemo_t  *m;

    m = &ngx_http_ai_gateway_umemo;

    if (!m->valid) {
        return 1;
    }

    p = s->p;
    end = s->end;

    for (i = 0; /* void */; i++) {
        lit = m->text + m->lit[i];
        len = m->lit[i + 1] - m->lit[i];

        if ((size_t) (end - p) < len || memcmp(p, lit, len) != 0) {
            goto fail;
        }

        p += len;

        if (i == m->n) {
            break;
        }

        /* a count as the fast scan takes it */

        if (p == end || *p < '0' || *p > '9'
            || ngx_http_ai_gateway_ucount(&p, end, &n) != 0)
        {
            goto fail;
        }

        if (m->field[i] >= 0) {
            s->v[(int) m->field[i]] = n;
            s->has[(int) m->field[i]] = 1;
        }
    }

    if (p != end && !s->prefix) {
        goto fail;
    }

    s->input_details = m->input_details;
    s->p = p;

#if (NGX_HTTP_AI_GATEWAY_UMEMO_COUNT)
    ngx_http_ai_gateway_umemo_hits++;
#endif

    return 0;

fail:

    /* the counts read so far are not the object's */
    memset(s->has, 0, sizeof(s->has));

    return 1;
}


int
ngx_http_ai_gateway_usage_parse(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *json, size_t len)
{
    return ngx_http_ai_gateway_usage_read(u, json, len, NULL);
}


/* with used, the object may be followed by more text: *used is its length */

static int
ngx_http_ai_gateway_usage_read(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *json, size_t len, size_t *used)
{
    int                          has_input, has_read, has_write, anthropic;
    int64_t                      raw;
    ngx_http_ai_gateway_urec_t   rec;
    ngx_http_ai_gateway_uscan_t  s;

    memset(&s, 0, sizeof(s));
    s.p = json;
    s.end = json + len;
    s.prefix = (used != NULL);

    if (ngx_http_ai_gateway_umemo_match(&s) == 0) {
        goto found;
    }

    rec.n = 0;
    rec.overflow = 0;
    s.rec = &rec;

    if (ngx_http_ai_gateway_uscan_fast(&s) == 0) {
        ngx_http_ai_gateway_umemo_keep(&s, json, &rec);

    } else {

        /* from the start again, with nothing of the fast scan */

        memset(&s, 0, sizeof(s));
        s.p = json;
        s.end = json + len;

        ngx_http_ai_gateway_uscan_ws(&s);

        if (s.p == s.end || *s.p != '{'
            || ngx_http_ai_gateway_uscan_object(&s, -1, 1) != 0)
        {
            return -1;
        }

        if (used == NULL) {
            ngx_http_ai_gateway_uscan_ws(&s);

            if (s.p != s.end) {
                return -1;
            }
        }
    }

found:

    if (used != NULL) {
        *used = s.p - json;
    }

#define ngx_http_ai_gateway_utake(f, dst)                                     \
    if (s.has[f]) { (dst) = s.v[f]; }

    /* OpenAI chat, completions, embeddings */
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_PROMPT, u->input);
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_COMPLETION, u->output);
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_PROMPT_CACHED,
                              u->cached_input);
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_COMPLETION_REASONING,
                              u->reasoning);

    /* OpenAI responses, and Anthropic's output */
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_OUTPUT, u->output);
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_INPUT_CACHED,
                              u->cached_input);
    ngx_http_ai_gateway_utake(NGX_HTTP_AI_GATEWAY_U_OUTPUT_REASONING,
                              u->reasoning);

#undef ngx_http_ai_gateway_utake

    /* input_tokens: OpenAI responses or Anthropic */

    has_input = s.has[NGX_HTTP_AI_GATEWAY_U_INPUT];
    has_read = s.has[NGX_HTTP_AI_GATEWAY_U_CACHE_READ];
    has_write = s.has[NGX_HTTP_AI_GATEWAY_U_CACHE_WRITE];
    raw = has_input ? s.v[NGX_HTTP_AI_GATEWAY_U_INPUT] : -1;

    anthropic = has_read || has_write
                || (u->cache_creation >= 0 && !s.input_details);

    if (anthropic) {

        if (!has_input && u->input >= 0) {
            /* the uncached part of the input we had */
            raw = u->input - (u->cached_input > 0 ? u->cached_input : 0)
                  - (u->cache_creation > 0 ? u->cache_creation : 0);

            if (raw < 0) {
                raw = 0;
            }

        } else if (!has_input) {
            raw = -1;
        }

        if (has_read) {
            u->cached_input = s.v[NGX_HTTP_AI_GATEWAY_U_CACHE_READ];
        }

        if (has_write) {
            u->cache_creation = s.v[NGX_HTTP_AI_GATEWAY_U_CACHE_WRITE];
        }

        if (raw >= 0 && (has_input || has_read || has_write)) {
            u->input = raw + (u->cached_input > 0 ? u->cached_input : 0)
                       + (u->cache_creation > 0 ? u->cache_creation : 0);
        }

    } else if (has_input) {
        u->input = raw;
    }

    if (s.has[NGX_HTTP_AI_GATEWAY_U_TOTAL]) {
        u->total = s.v[NGX_HTTP_AI_GATEWAY_U_TOTAL];

    } else if (u->input >= 0 && u->output >= 0) {
        u->total = u->input + u->output;
    }

    return 0;
}



/*
 * The top-level usage of a whole JSON answer, read from its end.
 *
 * The last "usage" key is found by a search from the end.  Its opening
 * quote is a string's (an even number of backslashes precedes it), and a
 * string holds no unescaped quote, so it is a key named usage.  It is the
 * top-level one when what follows its object is a list of members that
 * ends the document: a key one level down would leave a bracket more to
 * close.  So for valid JSON this reads what jansson reads (the last key
 * wins), looking at the usage and the members after it only, with keys
 * compared as written: a later duplicate spelled with escapes ("\u0075sage")
 * is not seen (nor by the walker), and what comes before the usage is not
 * judged.  Anything it does not expect returns -1, and the caller walks the
 * answer.
 */

/* after a string's opening quote: the byte after its closing one, or NULL */

static const unsigned char *
ngx_http_ai_gateway_tail_string(const unsigned char *p,
    const unsigned char *end)
{
    for ( ;; ) {
        p = ngx_http_ai_gateway_json_skip_plain(p, end);

        if (p >= end) {
            return NULL;
        }

        if (*p == '"') {
            return p + 1;
        }

        if (*p == '\\') {
            if (end - p < 2) {
                return NULL;
            }

            p += 2;
            continue;
        }

        /* a control character or a byte of UTF-8: not judged here */
        p++;
    }
}


/* the byte after the value at p, or NULL */

static const unsigned char *
ngx_http_ai_gateway_tail_value(const unsigned char *p,
    const unsigned char *end)
{
    unsigned              c;
    size_t                depth;
    const unsigned char  *q;

    c = *p;

    if (c == '"') {
        return ngx_http_ai_gateway_tail_string(p + 1, end);
    }

    if (c != '{' && c != '[') {
        /* a number, true, false or null */
        for (q = p; q < end; q++) {
            c = *q;

            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
                  || c == '.' || c == '+' || c == '-' || c == 'E'))
            {
                break;
            }
        }

        return (q > p) ? q : NULL;
    }

    depth = 0;

    while (p < end) {
        c = *p++;

        if (c == '"') {
            p = ngx_http_ai_gateway_tail_string(p, end);

            if (p == NULL) {
                return NULL;
            }

        } else if (c == '{' || c == '[') {
            depth++;

        } else if ((c == '}' || c == ']') && --depth == 0) {
            return p;
        }
    }

    return NULL;
}


/* the members after the usage, and the end of the document */

static int
ngx_http_ai_gateway_tail_rest(const unsigned char *p, const unsigned char *end)
{
    for ( ;; ) {
        p = ngx_http_ai_gateway_json_skip_ws(p, end);

        if (p == end) {
            return 0;
        }

        if (*p == '}') {
            return ngx_http_ai_gateway_json_skip_ws(p + 1, end) == end;
        }

        if (*p != ',') {
            return 0;
        }

        p = ngx_http_ai_gateway_json_skip_ws(p + 1, end);

        if (p == end || *p != '"') {
            return 0;
        }

        p = ngx_http_ai_gateway_tail_string(p + 1, end);

        if (p == NULL) {
            return 0;
        }

        p = ngx_http_ai_gateway_json_skip_ws(p, end);

        if (p == end || *p != ':') {
            return 0;
        }

        p = ngx_http_ai_gateway_json_skip_ws(p + 1, end);

        if (p == end) {
            return 0;
        }

        p = ngx_http_ai_gateway_tail_value(p, end);

        if (p == NULL) {
            return 0;
        }
    }
}


/* the start of the last "usage" (with its quotes) within [doc, doc + n),
 * or -1 */

static ptrdiff_t
ngx_http_ai_gateway_tail_key(const unsigned char *doc, size_t n)
{
    size_t   j, starts;
#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
    int      mask;
    __m128i  quote, m;
#endif

    if (n < 7) {
        return -1;
    }

    /* where it may start: its closing quote is within the n bytes */
    starts = n - 6;

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)

    quote = _mm_set1_epi8('"');

    /* 16 starts at a time: a quote there and one six bytes on */

    while (starts >= 16) {
        starts -= 16;

        m = _mm_and_si128(
                _mm_cmpeq_epi8(
                    _mm_loadu_si128((const __m128i *) (doc + starts)),
                    quote),
                _mm_cmpeq_epi8(
                    _mm_loadu_si128((const __m128i *) (doc + starts + 6)),
                    quote));

        mask = _mm_movemask_epi8(m);

        while (mask) {
            j = starts + 31 - __builtin_clz((unsigned) mask);

            if (memcmp(doc + j + 1, "usage", 5) == 0) {
                return (ptrdiff_t) j;
            }

            mask &= ~(1 << (j - starts));
        }
    }

#endif

    for (j = starts; j-- > 0; /* void */) {
        if (doc[j] == '"' && doc[j + 6] == '"'
            && memcmp(doc + j + 1, "usage", 5) == 0)
        {
            return (ptrdiff_t) j;
        }
    }

    return -1;
}


int
ngx_http_ai_gateway_usage_find_tail(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *doc, size_t len)
{
    size_t                        k, used;
    ptrdiff_t                     j;
    const unsigned char          *p, *end;
    ngx_http_ai_gateway_usage_t   t;

    end = doc + len;
    p = NULL;

    for (j = ngx_http_ai_gateway_tail_key(doc, len);
         j >= 0;
         j = ngx_http_ai_gateway_tail_key(doc, (size_t) j + 6))
    {
        /* an even number of backslashes before the opening quote */
        for (k = (size_t) j; k > 0 && doc[k - 1] == '\\'; k--) {
            /* void */
        }

        if (((size_t) j - k) % 2) {
            continue;
        }

        p = ngx_http_ai_gateway_json_skip_ws(doc + j + 7, end);

        /* the string "usage" as a value, not a key */
        if (p == end || *p != ':') {
            p = NULL;
            continue;
        }

        break;
    }

    if (p == NULL) {
        return -1;
    }

    p = ngx_http_ai_gateway_json_skip_ws(p + 1, end);

    if (p == end || *p != '{') {
        return -1;
    }

    t = *u;

    if (ngx_http_ai_gateway_usage_read(&t, p, end - p, &used) != 0
        || !ngx_http_ai_gateway_tail_rest(p + used, end))
    {
        return -1;
    }

    *u = t;

    return 0;
}
