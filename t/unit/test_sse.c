
/*
 * Unit tests for the SSE parser: fixed provider-like streams with the
 * expected events written out, each fed whole, byte by byte, split at every
 * point and in random chunks; a plain whole-buffer reference parser (the
 * WHATWG rules, line by line) checks random streams the same way; event
 * offsets must slice out exactly the event's bytes; a callback that stops
 * the parser must let it go on from sse->offset.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_sse.h"


#include "check.h"






/* what a run of the parser (or the reference) saw */

#define MAX_EVENTS  256

typedef struct {
    char      name[NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX + 1];
    size_t    name_len;
    buf_t     data;
    uint64_t  start;
    uint64_t  end;
} event_t;

typedef struct {
    event_t   ev[MAX_EVENTS];
    size_t    n;
    buf_t     pending;          /* data of the event not yet dispatched */
    uint64_t  offset;           /* at the end */
    int       rc;
} result_t;


static void
result_free(result_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        buf_free(&r->ev[i].data);
    }

    buf_free(&r->pending);
    memset(r, 0, sizeof(result_t));
}


/* the recorder behind the callbacks, with the checks made in them */

typedef struct {
    result_t                   *res;
    ngx_http_ai_gateway_sse_t  *sse;
    const unsigned char        *stream;
    size_t                      stream_len;
    const unsigned char        *chunk;      /* the buffer being fed */
    size_t                      chunk_len;
    uint64_t                    chunk_off;  /* its offset in the stream */
    int                         stop_at;    /* return 7 at this callback */
    int                         calls;
    const char                 *what;
} rec_t;


static int
on_data(void *data, const unsigned char *p, size_t len)
{
    rec_t     *r = data;
    uint64_t   off;

    r->calls++;

    CHECK(len > 0, "%s: empty on_data", r->what);

    off = r->sse->offset;

    if (p >= r->chunk && p < r->chunk + r->chunk_len) {
        /* zero-copy: a piece of the caller's buffer, ending at offset */
        CHECK(p + len <= r->chunk + r->chunk_len
              && r->chunk_off + (uint64_t) (p + len - r->chunk) == off,
              "%s: on_data piece at %llu+%zu, offset %llu", r->what,
              (unsigned long long) (r->chunk_off + (p - r->chunk)), len,
              (unsigned long long) off);

    } else {
        /* the "\n" between two data lines, after the ':' or line end */
        CHECK(len == 1 && *p == '\n' && off > 0 && off <= r->stream_len
              && (r->stream[off - 1] == ':' || r->stream[off - 1] == '\n'
                  || r->stream[off - 1] == '\r'),
              "%s: on_data outside the buffer at offset %llu", r->what,
              (unsigned long long) off);
    }

    buf_add(&r->res->pending, p, len);

    return (r->calls == r->stop_at) ? 7 : 0;
}


static int
on_event(void *data, const unsigned char *name, size_t name_len)
{
    rec_t    *r = data;
    event_t  *e;

    r->calls++;

    CHECK(name_len <= NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX, "%s: name too long",
          r->what);
    CHECK(r->sse->event_start < r->sse->offset
          && r->sse->offset <= r->chunk_off + r->chunk_len,
          "%s: event offsets %llu-%llu", r->what,
          (unsigned long long) r->sse->event_start,
          (unsigned long long) r->sse->offset);

    if (r->res->n == MAX_EVENTS) {
        CHECK(0, "%s: too many events", r->what);
        return 1;
    }

    e = &r->res->ev[r->res->n++];
    memcpy(e->name, name, name_len);
    e->name[name_len] = '\0';
    e->name_len = name_len;
    e->data = r->res->pending;
    memset(&r->res->pending, 0, sizeof(buf_t));
    buf_add(&e->data, "", 0);
    e->start = r->sse->event_start;
    e->end = r->sse->offset;

    return (r->calls == r->stop_at) ? 7 : 0;
}


/*
 * Feeds the stream in chunks of the given sizes (0-terminated list, the
 * rest in one chunk), each copied to a buffer of its exact size so that
 * any read outside it is caught by ASan.  boundary[i] is set for each
 * chunk boundary i.
 */

static void
run(const unsigned char *s, size_t len, const size_t *sizes, int stop_at,
    result_t *res, char *boundary, const char *what)
{
    int                         rc;
    size_t                      pos, n;
    unsigned char              *copy;
    rec_t                       rec;
    ngx_http_ai_gateway_sse_t   sse;

    memset(res, 0, sizeof(result_t));
    memset(&rec, 0, sizeof(rec_t));

    rec.res = res;
    rec.sse = &sse;
    rec.stream = s;
    rec.stream_len = len;
    rec.stop_at = stop_at;
    rec.what = what;

    ngx_http_ai_gateway_sse_init(&sse, on_data, on_event, &rec);

    pos = 0;

    while (pos < len) {
        n = (sizes && *sizes) ? *sizes++ : len - pos;
        if (n > len - pos) {
            n = len - pos;
        }

        if (boundary && pos) {
            boundary[pos] = 1;
        }

        copy = malloc(n ? n : 1);
        memcpy(copy, s + pos, n);

        rec.chunk = copy;
        rec.chunk_len = n;
        rec.chunk_off = pos;

        CHECK(sse.offset == pos, "%s: offset %llu before a feed at %zu", what,
              (unsigned long long) sse.offset, pos);

        rc = ngx_http_ai_gateway_sse_feed(&sse, copy, n);

        if (rc != 0) {
            /* stopped: go on from the offset reached */
            CHECK(rc == 7 && stop_at, "%s: feed returned %d", what, rc);
            CHECK(sse.offset >= pos && sse.offset <= pos + n,
                  "%s: offset after a stop", what);
            res->rc = rc;
            rec.stop_at = 0;
            free(copy);
            pos = sse.offset;

            if (boundary && pos) {
                boundary[pos] = 1;
            }

            continue;
        }

        CHECK(sse.offset == pos + n, "%s: offset %llu after a feed to %zu",
              what, (unsigned long long) sse.offset, pos + n);

        free(copy);
        pos += n;
    }

    res->offset = sse.offset;
}


/*
 * The reference: the spec's algorithm on the whole stream, line by line.
 * An event ends after its blank line's line end ("\r\n" whole); the data
 * of an unfinished last line is counted as the parser reports it.
 */

static void
reference(const unsigned char *s, size_t len, result_t *res)
{
    int       has_data;
    size_t    pos, eol, next, colon, vstart, flen, n;
    event_t  *e;
    char      name[NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX + 1];
    size_t    name_len;
    uint64_t  start;

    memset(res, 0, sizeof(result_t));

    pos = 0;

    if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
        pos = 3;
    }

    has_data = 0;
    name_len = 0;
    start = 0;

    while (pos < len) {
        eol = pos;
        while (eol < len && s[eol] != '\r' && s[eol] != '\n') {
            eol++;
        }

        colon = pos;
        while (colon < eol && s[colon] != ':') {
            colon++;
        }

        flen = colon - pos;
        vstart = colon + 1;
        if (vstart < eol && s[vstart] == ' ') {
            vstart++;
        }

        if (eol == len) {
            /* an unfinished line: the data the parser has passed on */
            if (colon < eol && flen == 4 && memcmp(s + pos, "data", 4) == 0)
            {
                if (has_data) {
                    buf_add(&res->pending, "\n", 1);
                }

                buf_add(&res->pending, s + vstart, eol - vstart);
            }

            break;
        }

        next = eol + 1;
        if (s[eol] == '\r' && next < len && s[next] == '\n') {
            next++;
        }

        if (eol == pos) {
            if (has_data) {
                e = &res->ev[res->n++];
                memcpy(e->name, name, name_len);
                e->name[name_len] = '\0';
                e->name_len = name_len;
                e->data = res->pending;
                memset(&res->pending, 0, sizeof(buf_t));
                buf_add(&e->data, "", 0);
                e->start = start;
                e->end = next;
                has_data = 0;
            }

            /* a block without data ends here too: no event's bytes */
            start = next;
            name_len = 0;

        } else if (s[pos] == ':') {
            /* a comment */

        } else {
            if (colon == eol) {
                vstart = eol;
            }

            if (flen == 4 && memcmp(s + pos, "data", 4) == 0) {
                if (has_data) {
                    buf_add(&res->pending, "\n", 1);
                }

                buf_add(&res->pending, s + vstart, eol - vstart);
                has_data = 1;

            } else if (flen == 5 && memcmp(s + pos, "event", 5) == 0) {
                n = eol - vstart;
                if (n > NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX) {
                    n = NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX;
                }

                memcpy(name, s + vstart, n);
                name_len = n;
            }
        }

        pos = next;
    }

    res->offset = len;
}


/*
 * An event dispatched at a '\r' that ended a buffer ends before the '\n'
 * after it, which the next event starts with: the same place, once moved
 * over that '\n'.
 */

static uint64_t
norm(const unsigned char *s, size_t len, uint64_t x)
{
    if (x > 0 && x < len && s[x - 1] == '\r' && s[x] == '\n') {
        return x + 1;
    }

    return x;
}


/*
 * Compares a run with the reference (or the whole feed); boundary tells
 * where the chunk boundaries were, the only places where an offset may be
 * before the '\n' of a "\r\n".
 */

static void
compare(const unsigned char *s, size_t len, result_t *ref, result_t *got,
    const char *boundary, const char *what)
{
    size_t  i, n;

    CHECK(got->n == ref->n, "%s: %zu events, expected %zu", what, got->n,
          ref->n);

    n = got->n < ref->n ? got->n : ref->n;

    for (i = 0; i < n; i++) {
        CHECK(got->ev[i].name_len == ref->ev[i].name_len
              && memcmp(got->ev[i].name, ref->ev[i].name,
                        ref->ev[i].name_len) == 0,
              "%s: event %zu name \"%s\", expected \"%s\"", what, i,
              got->ev[i].name, ref->ev[i].name);

        CHECK(got->ev[i].data.len == ref->ev[i].data.len
              && memcmp(got->ev[i].data.p, ref->ev[i].data.p,
                        ref->ev[i].data.len) == 0,
              "%s: event %zu data \"%s\", expected \"%s\"", what, i,
              got->ev[i].data.p, ref->ev[i].data.p);

        CHECK(norm(s, len, got->ev[i].start) == norm(s, len, ref->ev[i].start)
              && norm(s, len, got->ev[i].end) == norm(s, len, ref->ev[i].end),
              "%s: event %zu at %llu-%llu, expected %llu-%llu", what, i,
              (unsigned long long) got->ev[i].start,
              (unsigned long long) got->ev[i].end,
              (unsigned long long) ref->ev[i].start,
              (unsigned long long) ref->ev[i].end);

        if (got->ev[i].end != ref->ev[i].end) {
            CHECK(boundary && boundary[got->ev[i].end]
                  && got->ev[i].end + 1 == ref->ev[i].end,
                  "%s: event %zu ends at %llu, not at a buffer's end", what,
                  i, (unsigned long long) got->ev[i].end);
        }

        /* where the last one ended or later (after blocks without data),
         * or after the '\n' of its "\r\n" when a buffer ended at the '\r'
         * (that byte belongs to no event) */
        CHECK(i == 0 ? 1
                     : got->ev[i].start >= got->ev[i - 1].end
                       || (got->ev[i].start == got->ev[i - 1].end + 1
                           && got->ev[i - 1].end > 0
                           && s[got->ev[i - 1].end - 1] == '\r'
                           && s[got->ev[i - 1].end] == '\n'
                           && boundary && boundary[got->ev[i - 1].end]),
              "%s: event %zu does not start where the last one ended", what,
              i);
    }

    CHECK(got->pending.len == ref->pending.len
          && (ref->pending.len == 0
              || memcmp(got->pending.p, ref->pending.p, ref->pending.len)
                 == 0),
          "%s: pending data \"%s\", expected \"%s\"", what,
          got->pending.p ? got->pending.p : "",
          ref->pending.p ? ref->pending.p : "");

    CHECK(got->offset == len, "%s: offset %llu at the end, expected %zu",
          what, (unsigned long long) got->offset, len);
}


/* every way of feeding one stream must give what the reference gives */

static void
check_stream(const unsigned char *s, size_t len, const char *what,
    int thorough)
{
    int        k;
    char      *boundary;
    size_t     i, j, *sizes;
    result_t   ref, whole, got, one;
    char       label[128];

    reference(s, len, &ref);

    run(s, len, NULL, 0, &whole, NULL, what);
    compare(s, len, &ref, &whole, NULL, what);

    /* the events' bytes, alone, are the same events */

    for (i = 0; i < whole.n; i++) {

        /* (BOM bytes inside the stream would be a BOM at the start) */
        if (i > 0 && whole.ev[i].end - whole.ev[i].start >= 3
            && memcmp(s + whole.ev[i].start, "\xef\xbb\xbf", 3) == 0)
        {
            continue;
        }

        snprintf(label, sizeof(label), "%s: event %zu alone", what, i);
        run(s + whole.ev[i].start, whole.ev[i].end - whole.ev[i].start,
            NULL, 0, &one, NULL, label);

        CHECK(one.n == 1 && one.ev[0].start == 0
              && one.ev[0].end == whole.ev[i].end - whole.ev[i].start
              && one.ev[0].name_len == whole.ev[i].name_len
              && memcmp(one.ev[0].name, whole.ev[i].name,
                        one.ev[0].name_len) == 0
              && one.ev[0].data.len == whole.ev[i].data.len
              && memcmp(one.ev[0].data.p, whole.ev[i].data.p,
                        one.ev[0].data.len) == 0,
              "%s", label);

        result_free(&one);
    }

    boundary = calloc(len + 2, 1);
    sizes = calloc(len + 2, sizeof(size_t));

    /* byte by byte */

    for (i = 0; i < len; i++) {
        sizes[i] = 1;
    }

    snprintf(label, sizeof(label), "%s: byte by byte", what);
    memset(boundary, 0, len + 2);
    run(s, len, sizes, 0, &got, boundary, label);
    compare(s, len, &ref, &got, boundary, label);
    result_free(&got);

    /* every split point, and every pair of them for short streams */

    for (i = 1; i < len; i++) {
        sizes[0] = i;
        sizes[1] = 0;

        snprintf(label, sizeof(label), "%s: split at %zu", what, i);
        memset(boundary, 0, len + 2);
        run(s, len, sizes, 0, &got, boundary, label);
        compare(s, len, &ref, &got, boundary, label);
        result_free(&got);

        if (!thorough || len > 300) {
            continue;
        }

        for (j = i + 1; j < len; j++) {
            sizes[0] = i;
            sizes[1] = j - i;
            sizes[2] = 0;

            snprintf(label, sizeof(label), "%s: split at %zu, %zu", what,
                     i, j);
            memset(boundary, 0, len + 2);
            run(s, len, sizes, 0, &got, boundary, label);
            compare(s, len, &ref, &got, boundary, label);
            result_free(&got);
        }
    }

    /* random chunks */

    for (k = 0; k < (thorough ? 200 : 20); k++) {
        size_t  max, total;

        max = 1 + rng() % (k % 4 == 0 ? 4 : k % 4 == 1 ? 17 : 200);
        total = 0;
        i = 0;

        while (total < len) {
            sizes[i] = 1 + rng() % max;
            total += sizes[i++];
        }

        sizes[i] = 0;

        snprintf(label, sizeof(label), "%s: random chunks %d", what, k);
        memset(boundary, 0, len + 2);
        run(s, len, sizes, 0, &got, boundary, label);
        compare(s, len, &ref, &got, boundary, label);
        result_free(&got);
    }

    /* a callback stops the parser at each call in turn; the run goes on
     * from sse->offset and must see the same */

    for (k = 1; thorough && k < 4000; k++) {
        snprintf(label, sizeof(label), "%s: stopped at call %d", what, k);
        memset(boundary, 0, len + 2);
        run(s, len, NULL, k, &got, boundary, label);

        if (got.rc == 0) {
            result_free(&got);
            break;
        }

        compare(s, len, &ref, &got, boundary, label);
        result_free(&got);
    }

    free(boundary);
    free(sizes);
    result_free(&ref);
    result_free(&whole);
}


/*
 * Fixed streams: each a list of pieces, a piece being the bytes of one
 * event (with any comments or data-less blocks before it) and the event
 * expected; a last piece with a NULL name is an unfinished event, its data
 * the data passed on so far.
 */

typedef struct {
    const char  *bytes;
    const char  *name;
    const char  *data;
} piece_t;

#define END  { NULL, NULL, NULL }


static const piece_t  openai_lf[] = {
    { "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
      "\"content\":\"\"},\"finish_reason\":null}]}\n\n",
      "",
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
      "\"content\":\"\"},\"finish_reason\":null}]}" },
    { "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\\n\"}}]}\n\n",
      "", "{\"choices\":[{\"delta\":{\"content\":\"Hi\\n\"}}]}" },
    { "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\n",
      "", "{\"choices\":[],\"usage\":{\"prompt_tokens\":5}}" },
    { "data: [DONE]\n\n", "", "[DONE]" },
    END
};

static const piece_t  openai_crlf[] = {
    { "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n",
      "", "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}" },
    { ": keepalive\r\n\r\n", NULL, "" },
    { "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n",
      "", "{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}" },
    { "data: [DONE]\r\n\r\n", "", "[DONE]" },
    END
};

static const piece_t  anthropic[] = {
    { "event: message_start\n"
      "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
      "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
      "message_start",
      "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
      "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}" },
    { "event: ping\ndata: {\"type\": \"ping\"}\n\n",
      "ping", "{\"type\": \"ping\"}" },
    { ": ping\n\n", NULL, "" },
    { "event: content_block_delta\n"
      "data: {\"type\":\"content_block_delta\",\"index\":0,"
      "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
      "content_block_delta",
      "{\"type\":\"content_block_delta\",\"index\":0,"
      "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}" },
    { "event: message_delta\r\n"
      "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
      "\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n",
      "message_delta",
      "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
      "\"end_turn\"},\"usage\":{\"output_tokens\":15}}" },
    { "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
      "message_stop", "{\"type\":\"message_stop\"}" },
    END
};

static const piece_t  fields[] = {
    { ": ping\n\n: ping\n\n", NULL, "" },
    { "id: 7\nretry: 1000\nfoo: bar\nid\ndata: x\n\n", "", "x" },
    /* the name is reset by a blank line, even with no data before it */
    { "event: lost\n\n", NULL, "" },
    { "data: y\n\n", "", "y" },
    { "data: a\ndata\ndata:b\ndata:  c\n\n", "", "a\n\nb\n c" },
    { "event:e1\nevent: e2\ndata:\n\n", "e2", "" },
    { "Data: no\ndata : no\ndatax: no\nevents: no\ndata: a:b: c\n\n",
      "", "a:b: c" },
    { "event\ndata\n\n", "", "" },
    { "event: x\n:data: no\ndata:\tt\n\n", "x", "\tt" },
    { "event: \ndata: \n\n", "", "" },
    { "\n\n\r\n\r\r", NULL, "" },
    { "data: z\n\n", "", "z" },
    { "data: unfinished", NULL, "unfinished" },
    END
};

static const piece_t  lone_cr[] = {
    { "data: a\rdata: b\r\r", "", "a\nb" },
    { "event: x\r\ndata: c\n\r\n", "x", "c" },
    { "data: d\r\r", "", "d" },
    { ":c\rdata:e\r\n\r", "", "e" },
    END
};

static const piece_t  bom[] = {
    { "\xef\xbb\xbf" "data: bom\n\n", "", "bom" },
    /* only at the start: here it is part of a field name */
    { "\xef\xbb\xbf" "data: x\n\n", NULL, "" },
    { "data: y\n\n", "", "y" },
    END
};

static const piece_t  half_bom[] = {
    { "\xef\xbb" "data: x\n\n", NULL, "" },
    { "data: y\n\n", "", "y" },
    { "\xef\xbb\xbf" ":\n\xef\n\xef:\ndata:\xef\xbb\xbf\n\n", "",
      "\xef\xbb\xbf" },
    END
};

static const piece_t  bom_only[] = {
    { "\xef\xbb\xbf", NULL, "" },
    END
};

static const piece_t  trailing[] = {
    { "data: one\n\n", "", "one" },
    { "event: two\ndata: 2a\ndata:", NULL, "2a\n" },
    END
};

static const piece_t  trailing_cr[] = {
    { "data: one\n\n", "", "one" },
    { "data: two\r\r", "", "two" },
    END
};

static const piece_t  empty[] = {
    END
};

static const piece_t  comments_only[] = {
    { ": a\n\n: b\r\n\r\n:\r\r", NULL, "" },
    END
};


/* builds the stream, checks the whole feed against the pieces, then every
 * way of feeding it against the reference */

static void
check_pieces(const piece_t *pc, const char *what)
{
    size_t          i, len, n, nev;
    buf_t           s, pending;
    result_t        res, ref;
    unsigned char  *copy;
    uint64_t        start;

    memset(&s, 0, sizeof(buf_t));
    memset(&pending, 0, sizeof(buf_t));
    buf_add(&s, "", 0);
    buf_add(&pending, "", 0);

    nev = 0;

    for (i = 0; pc[i].bytes; i++) {
        buf_add(&s, pc[i].bytes, strlen(pc[i].bytes));

        if (pc[i].name) {
            nev++;

        } else {
            buf_add(&pending, pc[i].data, strlen(pc[i].data));
        }
    }

    len = s.len;
    copy = malloc(len + 1);
    memcpy(copy, s.p, len);

    run(copy, len, NULL, 0, &res, NULL, what);

    CHECK(res.n == nev, "%s: %zu events, expected %zu", what, res.n, nev);

    start = 0;
    n = 0;

    for (i = 0; pc[i].bytes && n < res.n; i++) {
        if (pc[i].name == NULL) {
            /* blocks without data (or the unfinished rest) */
            start += strlen(pc[i].bytes);
            continue;
        }

        CHECK(strcmp(res.ev[n].name, pc[i].name) == 0,
              "%s: event %zu name \"%s\", expected \"%s\"", what, n,
              res.ev[n].name, pc[i].name);
        CHECK(res.ev[n].data.len == strlen(pc[i].data)
              && memcmp(res.ev[n].data.p, pc[i].data, res.ev[n].data.len)
                 == 0,
              "%s: event %zu data \"%s\", expected \"%s\"", what, n,
              res.ev[n].data.p, pc[i].data);
        CHECK(res.ev[n].start == start
              && res.ev[n].end == start + strlen(pc[i].bytes),
              "%s: event %zu at %llu-%llu, expected %llu-%llu", what, n,
              (unsigned long long) res.ev[n].start,
              (unsigned long long) res.ev[n].end,
              (unsigned long long) start,
              (unsigned long long) (start + strlen(pc[i].bytes)));

        start += strlen(pc[i].bytes);
        n++;
    }

    CHECK(res.pending.len == pending.len
          && memcmp(res.pending.p ? res.pending.p : "", pending.p,
                    pending.len) == 0,
          "%s: pending \"%s\", expected \"%s\"", what,
          res.pending.p ? res.pending.p : "", pending.p);

    /* the reference agrees with the expectations too */
    reference(copy, len, &ref);
    compare(copy, len, &ref, &res, NULL, what);

    result_free(&ref);
    result_free(&res);

    check_stream(copy, len, what, 1);

    free(copy);
    buf_free(&s);
    buf_free(&pending);
}


/* event names longer than the limit are cut; long data lines */

static void
test_long(void)
{
    size_t          i;
    buf_t           s;
    result_t        res;
    char            name[NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX + 1];

    memset(&s, 0, sizeof(buf_t));

    buf_add(&s, "event: ", 7);
    for (i = 0; i < 100; i++) {
        buf_add(&s, i < 50 ? "n" : "m", 1);
    }
    buf_add(&s, "\ndata: z\n\n", 10);

    run((unsigned char *) s.p, s.len, NULL, 0, &res, NULL, "long name");

    memset(name, 'n', 50);
    memset(name + 50, 'm', NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX - 50);
    name[NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX] = '\0';

    CHECK(res.n == 1 && strcmp(res.ev[0].name, name) == 0,
          "long name: \"%s\"", res.n ? res.ev[0].name : "");
    result_free(&res);

    check_stream((unsigned char *) s.p, s.len, "long name", 1);
    buf_free(&s);

    /* data lines of every length around the 8 and 16 byte steps, and
     * long ones, with line ends at every place in the last step */

    for (i = 0; i < 5000; i += (i < 80 ? 1 : 997)) {
        size_t  k;

        memset(&s, 0, sizeof(buf_t));
        buf_add(&s, "data: ", 6);

        for (k = 0; k < i; k++) {
            buf_add(&s, &"abcdefghij\xc3\xa9\x7f\x0b\x0c"[rng() % 15], 1);
        }

        buf_add(&s, i % 3 == 0 ? "\r\n\r\n" : i % 3 == 1 ? "\n\n" : "\r\r",
                i % 3 == 0 ? 4 : 2);
        buf_add(&s, "data: x\n", 8);

        check_stream((unsigned char *) s.p, s.len, "long data", i < 40);
        buf_free(&s);
    }
}


/* random streams from the bytes and words that matter */

static void
test_random(void)
{
    int             k;
    size_t          i, n;
    buf_t           s;
    char            label[64];

    static const char  *words[] = {
        "data", "data:", "data: ", "event", "event:", "event: ", ":", " ",
        "\r", "\n", "\r\n", "x", "id: 1", "retry:", "e", "d", "a", "\xef",
        "\xef\xbb\xbf", "{\"a\":1}", "ping", "DATA:", "\t",
    };

    for (k = 0; k < 3000; k++) {
        memset(&s, 0, sizeof(buf_t));
        buf_add(&s, "", 0);

        n = rng() % 40;

        for (i = 0; i < n; i++) {
            const char  *w = words[rng() % (sizeof(words) / sizeof(words[0]))];
            buf_add(&s, w, strlen(w));
        }

        snprintf(label, sizeof(label), "random stream %d", k);
        check_stream((unsigned char *) s.p, s.len, label, k < 50);
        buf_free(&s);
    }
}


/* a NULL callback is allowed */

static void
test_null_callbacks(void)
{
    ngx_http_ai_gateway_sse_t  sse;
    const char                *s = "event: a\ndata: 1\ndata: 2\n\n: c\n\n";

    ngx_http_ai_gateway_sse_init(&sse, NULL, NULL, NULL);
    CHECK(ngx_http_ai_gateway_sse_feed(&sse, (const unsigned char *) s,
                                       strlen(s)) == 0
          && sse.offset == strlen(s) && sse.event_start == strlen(s),
          "NULL callbacks: offset %llu, event_start %llu",
          (unsigned long long) sse.offset,
          (unsigned long long) sse.event_start);
}


/* on_keepalive: once a block with a comment and no data, at its end */

static int
count_keepalive(void *data)
{
    (*(int *) data)++;
    return 0;
}


static void
test_keepalive(void)
{
    int                        n, i;
    size_t                     len;
    ngx_http_ai_gateway_sse_t  sse;
    const char                *s = ": a\n\n: b\r\n: c\r\n\r\nid: 1\n\n"
                                   ": d\ndata: x\n\n\n\n: e\r\r: f";

    /* whole, and a byte at a time: ": a", ": b/: c", ": e"; not the "id"
     * block, the comment of an event, blank lines or the unfinished ": f" */
    for (i = 0; i < 2; i++) {
        n = 0;
        ngx_http_ai_gateway_sse_init(&sse, NULL, NULL, &n);
        sse.on_keepalive = count_keepalive;

        len = strlen(s);

        if (i == 0) {
            (void) ngx_http_ai_gateway_sse_feed(&sse,
                                                (const unsigned char *) s,
                                                len);

        } else {
            for (size_t k = 0; k < len; k++) {
                (void) ngx_http_ai_gateway_sse_feed(&sse,
                                            (const unsigned char *) s + k, 1);
            }
        }

        CHECK(n == 3, "keepalive %s: %d calls, expected 3",
              i ? "byte by byte" : "whole", n);
    }
}


int
main(void)
{
    test_keepalive();
    check_pieces(openai_lf, "openai lf");
    check_pieces(openai_crlf, "openai crlf");
    check_pieces(anthropic, "anthropic");
    check_pieces(fields, "fields");
    check_pieces(lone_cr, "lone cr");
    check_pieces(bom, "bom");
    check_pieces(half_bom, "half bom");
    check_pieces(bom_only, "bom only");
    check_pieces(trailing, "trailing");
    check_pieces(trailing_cr, "trailing cr");
    check_pieces(empty, "empty");
    check_pieces(comments_only, "comments only");

    test_long();
    test_random();
    test_null_callbacks();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
