
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Incremental SSE parser.  The rules are the WHATWG "event stream" ones,
 * byte by byte, so any split of the stream gives the same events and the
 * same data; nothing of the data is copied: on_data gets pointers into the
 * caller's buffer (and a static "\n" between two data lines).
 *
 * Offsets, as seen from a callback (sse->offset):
 *   - on_data: just after the last byte of the piece; for the "\n" between
 *     two data lines, just after the ':' of the second "data" line (after
 *     its line end when it is a bare "data" line);
 *   - on_event: just after the blank line's line end.  A blank "\r\n" ends
 *     after the '\n' when both bytes are in the buffer.  When the '\r' is
 *     the last byte of the buffer, the event is dispatched at once, with
 *     the offset just after the '\r', and a '\n' that starts the next
 *     buffer is then taken as the rest of that line end: it belongs to no
 *     event (the next one starts after it, so that cutting it out leaves
 *     the line end before whole).  So [event_start, offset) of the events
 *     tile the stream but for that one byte.
 * event_start moves at every blank line: a block without data (a comment
 * as keepalive, "id:", "retry:") dispatches no event, but it is not part
 * of the next event's bytes either, so that a caller that cuts an event
 * out (the usage chunk) leaves the blocks around it, and one that passes
 * whole blocks on passes keepalives at once.  Comments within an event's
 * block are its bytes.  A UTF-8 BOM at the start of the stream is skipped
 * as the spec says, and is part of the first block's bytes.
 *
 * Before a callback is called, the parser's state is that after the bytes
 * up to sse->offset: a caller that stops the parser may feed the rest of
 * the stream from that offset later and lose nothing.
 */


#include <string.h>

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_SSE_NO_SIMD)
#include <emmintrin.h>
#endif

#include "ngx_http_ai_gateway_sse.h"


typedef enum {
    NGX_HTTP_AI_GATEWAY_SSE_BOM = 0,     /* at the start: a UTF-8 BOM? */
    NGX_HTTP_AI_GATEWAY_SSE_LINE = NGX_HTTP_AI_GATEWAY_SSE_AT_LINE,
                                         /* at the start of a line */
    NGX_HTTP_AI_GATEWAY_SSE_FIELD,       /* in a field name */
    NGX_HTTP_AI_GATEWAY_SSE_DATA,        /* in the value of "data" */
    NGX_HTTP_AI_GATEWAY_SSE_NAME,        /* in the value of "event" */
    NGX_HTTP_AI_GATEWAY_SSE_SKIP         /* a comment, an ignored field */
} ngx_http_ai_gateway_sse_state_e;


typedef enum {
    NGX_HTTP_AI_GATEWAY_SSE_OTHER = 0,
    NGX_HTTP_AI_GATEWAY_SSE_FIELD_DATA,
    NGX_HTTP_AI_GATEWAY_SSE_FIELD_EVENT
} ngx_http_ai_gateway_sse_field_e;


/*
 * field_len stops here, one past the size of field_buf: a name this long
 * is neither "data" nor "event"
 */
#define NGX_HTTP_AI_GATEWAY_SSE_LONG  9


static int ngx_http_ai_gateway_sse_field(ngx_http_ai_gateway_sse_t *sse,
    unsigned c);
static int ngx_http_ai_gateway_sse_data_field(ngx_http_ai_gateway_sse_t *sse,
    unsigned c);
static int ngx_http_ai_gateway_sse_dispatch(ngx_http_ai_gateway_sse_t *sse);
static const unsigned char *ngx_http_ai_gateway_sse_find_eol(
    const unsigned char *p, const unsigned char *end);


static const unsigned char  ngx_http_ai_gateway_sse_bom[3] = {
    0xef, 0xbb, 0xbf
};

static const unsigned char  ngx_http_ai_gateway_sse_lf = '\n';


void
ngx_http_ai_gateway_sse_init(ngx_http_ai_gateway_sse_t *sse,
    ngx_http_ai_gateway_sse_data_pt on_data,
    ngx_http_ai_gateway_sse_event_pt on_event, void *data)
{
    memset(sse, 0, sizeof(ngx_http_ai_gateway_sse_t));

    sse->on_data = on_data;
    sse->on_event = on_event;
    sse->data = data;
    sse->state = NGX_HTTP_AI_GATEWAY_SSE_BOM;
}


int
ngx_http_ai_gateway_sse_feed(ngx_http_ai_gateway_sse_t *sse,
    const unsigned char *p, size_t len)
{
    int                   rc;
    size_t                n;
    unsigned              c;
    const unsigned char  *end, *q;

    end = p + len;

    while (p < end) {

        switch (sse->state) {

        case NGX_HTTP_AI_GATEWAY_SSE_BOM:

            /* field_len counts the BOM bytes seen so far */

            if (*p == ngx_http_ai_gateway_sse_bom[sse->field_len]) {
                p++;
                sse->offset++;

                if (++sse->field_len == 3) {
                    sse->field_len = 0;
                    sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;
                }

                continue;
            }

            if (sse->field_len == 0) {
                sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;
                continue;
            }

            /* the start of a BOM, then something else: that is the start
             * of a field name, and not one we know */

            sse->field_len = NGX_HTTP_AI_GATEWAY_SSE_LONG;
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_FIELD;
            continue;

        case NGX_HTTP_AI_GATEWAY_SSE_LINE:
            c = *p;

            if (sse->after_cr) {
                sse->after_cr = 0;

                if (c == '\n') {
                    /* the rest of the line end before: when that line
                     * ended an event, the next one starts after it, so
                     * that cutting the next event leaves it in place */
                    if (sse->event_start == sse->offset) {
                        sse->event_start++;
                    }

                    p++;
                    sse->offset++;
                    continue;
                }
            }

            if (c == '\n' || c == '\r') {

                /* a blank line: its line end is part of the event */

                p++;
                sse->offset++;

                if (c == '\r') {
                    if (p == end) {
                        sse->after_cr = 1;

                    } else if (*p == '\n') {
                        p++;
                        sse->offset++;
                    }
                }

                rc = ngx_http_ai_gateway_sse_dispatch(sse);
                if (rc != 0) {
                    return rc;
                }

                continue;
            }

            if (c == ':') {
                p++;
                sse->offset++;
                sse->comment = 1;
                sse->state = NGX_HTTP_AI_GATEWAY_SSE_SKIP;
                continue;
            }

            if (c == 'd' && end - p >= 5 && memcmp(p + 1, "ata:", 4) == 0) {

                /* most lines: "data:" whole in the buffer */

                p += 5;
                sse->offset += 5;

                rc = ngx_http_ai_gateway_sse_data_field(sse, ':');
                if (rc != 0) {
                    return rc;
                }

                goto data;
            }

            sse->field_len = 0;
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_FIELD;

            /* fall through */

        case NGX_HTTP_AI_GATEWAY_SSE_FIELD:
            q = p;

            while (q < end && *q != ':' && *q != '\r' && *q != '\n') {
                if (sse->field_len < NGX_HTTP_AI_GATEWAY_SSE_LONG) {
                    if (sse->field_len < sizeof(sse->field_buf)) {
                        sse->field_buf[sse->field_len] = *q;
                    }

                    sse->field_len++;
                }

                q++;
            }

            sse->offset += q - p;
            p = q;

            if (p == end) {
                continue;
            }

            c = *p++;
            sse->offset++;

            rc = ngx_http_ai_gateway_sse_field(sse, c);
            if (rc != 0) {
                return rc;
            }

            continue;

        case NGX_HTTP_AI_GATEWAY_SSE_DATA:
        data:

            if (p == end) {
                continue;
            }

            if (sse->skip_space) {
                sse->skip_space = 0;

                if (*p == ' ') {
                    p++;
                    sse->offset++;
                    continue;
                }
            }

            q = ngx_http_ai_gateway_sse_find_eol(p, end);

            if (q != p) {
                n = q - p;
                sse->offset += n;

                if (sse->on_data) {
                    rc = sse->on_data(sse->data, p, n);
                    if (rc != 0) {
                        return rc;
                    }
                }

                p = q;

                if (p == end) {
                    continue;
                }
            }

            c = *p++;
            sse->offset++;
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;

            if (c == '\n' && p != end && *p == '\n') {

                /* the blank line that ends the event, as usual */

                p++;
                sse->offset++;
                sse->after_cr = 0;

                rc = ngx_http_ai_gateway_sse_dispatch(sse);
                if (rc != 0) {
                    return rc;
                }

                continue;
            }

            sse->after_cr = (c == '\r');
            continue;

        case NGX_HTTP_AI_GATEWAY_SSE_NAME:

            if (sse->skip_space) {
                sse->skip_space = 0;

                if (*p == ' ') {
                    p++;
                    sse->offset++;
                    continue;
                }
            }

            q = ngx_http_ai_gateway_sse_find_eol(p, end);

            /* longer names are cut */
            n = q - p;

            if (n > NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX - sse->name_len) {
                n = NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX - sse->name_len;
            }

            memcpy(sse->name + sse->name_len, p, n);
            sse->name_len += n;

            sse->offset += q - p;
            p = q;

            if (p == end) {
                continue;
            }

            c = *p++;
            sse->offset++;
            sse->after_cr = (c == '\r');
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;
            continue;

        default: /* NGX_HTTP_AI_GATEWAY_SSE_SKIP */

            q = ngx_http_ai_gateway_sse_find_eol(p, end);

            sse->offset += q - p;
            p = q;

            if (p == end) {
                continue;
            }

            c = *p++;
            sse->offset++;
            sse->after_cr = (c == '\r');
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;
            continue;
        }
    }

    return 0;
}


/*
 * The field name is complete: c, already consumed, is the ':' or the line
 * end that ended it.  Without a ':' the whole line is the name and the
 * value is empty ("data" alone is an empty data line).
 */

static int
ngx_http_ai_gateway_sse_field(ngx_http_ai_gateway_sse_t *sse, unsigned c)
{
    int  field;

    field = NGX_HTTP_AI_GATEWAY_SSE_OTHER;

    if (sse->field_len == 4 && memcmp(sse->field_buf, "data", 4) == 0) {
        field = NGX_HTTP_AI_GATEWAY_SSE_FIELD_DATA;

    } else if (sse->field_len == 5
               && memcmp(sse->field_buf, "event", 5) == 0)
    {
        field = NGX_HTTP_AI_GATEWAY_SSE_FIELD_EVENT;
    }

    if (c == ':') {
        sse->skip_space = 1;

        switch (field) {
        case NGX_HTTP_AI_GATEWAY_SSE_FIELD_DATA:
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_DATA;
            break;

        case NGX_HTTP_AI_GATEWAY_SSE_FIELD_EVENT:
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_NAME;
            break;

        default:
            sse->state = NGX_HTTP_AI_GATEWAY_SSE_SKIP;
            break;
        }

    } else {
        sse->after_cr = (c == '\r');
        sse->state = NGX_HTTP_AI_GATEWAY_SSE_LINE;
    }

    if (field == NGX_HTTP_AI_GATEWAY_SSE_FIELD_EVENT) {
        /* the last "event" line wins */
        sse->name_len = 0;
        return 0;
    }

    if (field != NGX_HTTP_AI_GATEWAY_SSE_FIELD_DATA) {
        return 0;
    }

    return ngx_http_ai_gateway_sse_data_field(sse, c);
}


/* a "data" field name is complete: c, as above */

static int
ngx_http_ai_gateway_sse_data_field(ngx_http_ai_gateway_sse_t *sse,
    unsigned c)
{
    if (c == ':') {
        sse->skip_space = 1;
        sse->state = NGX_HTTP_AI_GATEWAY_SSE_DATA;
    }

    if (!sse->has_data) {
        sse->has_data = 1;
        return 0;
    }

    /*
     * The spec appends "\n" after each data line and drops the last one at
     * dispatch; passing it before each data line but the first is the
     * same, and needs no look ahead.
     */

    if (sse->on_data) {
        return sse->on_data(sse->data, &ngx_http_ai_gateway_sse_lf, 1);
    }

    return 0;
}


/* a blank line: the end of an event, if it had data */

static int
ngx_http_ai_gateway_sse_dispatch(ngx_http_ai_gateway_sse_t *sse)
{
    int     rc;
    size_t  n;

    n = sse->name_len;
    sse->name_len = 0;

    if (!sse->has_data) {
        sse->event_start = sse->offset;

        if (sse->comment) {
            sse->comment = 0;

            if (sse->on_keepalive) {
                return sse->on_keepalive(sse->data);
            }
        }

        return 0;
    }

    sse->has_data = 0;
    sse->comment = 0;

    /*
     * The callback sees the event's bytes as [event_start, offset); the
     * name's bytes stay in sse->name until the next "event" line.
     */

    rc = 0;

    if (sse->on_event) {
        rc = sse->on_event(sse->data, sse->name, n);
    }

    sse->event_start = sse->offset;

    return rc;
}


/*
 * Returns the first '\r' or '\n' at or after p, or end: 16 bytes a step
 * with SSE2, 8 with plain 64-bit words elsewhere.  Data lines (a JSON
 * document each) are most of a stream.
 */

static const unsigned char *
ngx_http_ai_gateway_sse_find_eol(const unsigned char *p,
    const unsigned char *end)
{
#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_SSE_NO_SIMD)
    unsigned  mask;
    __m128i   v, w, cr, lf;

    cr = _mm_set1_epi8('\r');
    lf = _mm_set1_epi8('\n');

    /* two steps at a time: a data line is a few hundred bytes */

    while (end - p >= 32) {
        v = _mm_loadu_si128((const __m128i *) p);
        w = _mm_loadu_si128((const __m128i *) (p + 16));

        mask = (unsigned) _mm_movemask_epi8(
                              _mm_or_si128(_mm_cmpeq_epi8(v, cr),
                                           _mm_cmpeq_epi8(v, lf)))
               | (unsigned) _mm_movemask_epi8(
                              _mm_or_si128(_mm_cmpeq_epi8(w, cr),
                                           _mm_cmpeq_epi8(w, lf))) << 16;

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 32;
    }

    while (end - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr),
                                              _mm_cmpeq_epi8(v, lf)));

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }
#else
    uint64_t  x, r, n, m;

#define NGX_HTTP_AI_GATEWAY_SSE_ONES  0x0101010101010101ULL
#define NGX_HTTP_AI_GATEWAY_SSE_HIGH  0x8080808080808080ULL

    while (end - p >= 8) {
        memcpy(&x, p, 8);

        /* "has a zero byte", on x with '\r' and with '\n' cleared */
        r = x ^ (NGX_HTTP_AI_GATEWAY_SSE_ONES * '\r');
        n = x ^ (NGX_HTTP_AI_GATEWAY_SSE_ONES * '\n');
        m = (((r - NGX_HTTP_AI_GATEWAY_SSE_ONES) & ~r)
             | ((n - NGX_HTTP_AI_GATEWAY_SSE_ONES) & ~n))
            & NGX_HTTP_AI_GATEWAY_SSE_HIGH;

        if (m) {
            break;
        }

        p += 8;
    }
#endif

    while (p < end && *p != '\r' && *p != '\n') {
        p++;
    }

    return p;
}
