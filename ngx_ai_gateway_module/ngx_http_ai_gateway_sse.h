
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Incremental Server-Sent Events parser (WHATWG "event stream" rules):
 * any split of the stream into buffers, "\n", "\r\n" and "\r" line ends,
 * comments (":" lines), fields "event" and "data" (others ignored),
 * multi-line data joined with "\n", an event dispatched at a blank line.
 * No nginx dependency: unit-tested alone (t/unit/test_sse.c).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_SSE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_SSE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* longer event names are cut to this (ours are about 40 bytes at most) */
#define NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX  64


/*
 * Called with the bytes of the current event's data, in pieces as they
 * arrive: the value of each "data:" line (the one leading space removed),
 * with "\n" passed between two data lines of one event.  Returns 0 to go
 * on, anything else to stop the parser (returned by feed()).
 */
typedef int (*ngx_http_ai_gateway_sse_data_pt)(void *data,
    const unsigned char *p, size_t len);

/*
 * Called at the blank line that ends an event that had at least one data
 * line.  name is the last "event:" value (empty when none).  The event's
 * bytes in the stream are [sse->event_start, sse->offset): from the first
 * byte of its first line to just after the blank line.
 */
typedef int (*ngx_http_ai_gateway_sse_event_pt)(void *data,
    const unsigned char *name, size_t name_len);


/*
 * Called (when set, after init) at the blank line that ends a block with a
 * comment and no data: a keepalive, which a caller that writes its own
 * events passes on as one of its own.
 */
typedef int (*ngx_http_ai_gateway_sse_keepalive_pt)(void *data);


typedef struct {
    ngx_http_ai_gateway_sse_data_pt   on_data;
    ngx_http_ai_gateway_sse_event_pt  on_event;
    ngx_http_ai_gateway_sse_keepalive_pt  on_keepalive;
    void                             *data;

    /* bytes consumed so far; during a callback, the current position */
    uint64_t                          offset;
    /* stream offset of the first byte of the current event: the end of
     * the last blank line (of an event, or of a block without data) */
    uint64_t                          event_start;

    /* private */
    unsigned                          state;
    size_t                            field_len;     /* capped at 9 */
    unsigned char                     field_buf[8];
    size_t                            name_len;
    unsigned char                     name[NGX_HTTP_AI_GATEWAY_SSE_NAME_MAX];
    unsigned                          has_data:1;    /* event has data */
    unsigned                          comment:1;     /* block has one */
    unsigned                          skip_space:1;  /* value's first byte */
    unsigned                          after_cr:1;    /* a '\n' here is
                                                        part of a "\r\n" */
} ngx_http_ai_gateway_sse_t;


void ngx_http_ai_gateway_sse_init(ngx_http_ai_gateway_sse_t *sse,
    ngx_http_ai_gateway_sse_data_pt on_data,
    ngx_http_ai_gateway_sse_event_pt on_event, void *data);

/* returns 0, or the nonzero value a callback returned */
int ngx_http_ai_gateway_sse_feed(ngx_http_ai_gateway_sse_t *sse,
    const unsigned char *p, size_t len);

/*
 * Between two events, with nothing of the next one read yet (no line
 * begun, no data, no event name): a caller may then read a whole event
 * itself and account for it with ngx_http_ai_gateway_sse_skip() and
 * ngx_http_ai_gateway_sse_next(), as if the parser had read and dispatched
 * it (without calling back).
 */
#define NGX_HTTP_AI_GATEWAY_SSE_AT_LINE  1    /* sse.c's state */

static inline int
ngx_http_ai_gateway_sse_between(ngx_http_ai_gateway_sse_t *sse)
{
    return sse->state == NGX_HTTP_AI_GATEWAY_SSE_AT_LINE && !sse->after_cr
           && !sse->has_data && sse->name_len == 0;
}

/* the event's n bytes read: [event_start, offset) is the event, as during
 * on_event; then sse_next() starts the next one */
static inline void
ngx_http_ai_gateway_sse_skip(ngx_http_ai_gateway_sse_t *sse, size_t n)
{
    sse->offset += n;
}

static inline void
ngx_http_ai_gateway_sse_next(ngx_http_ai_gateway_sse_t *sse)
{
    sse->event_start = sse->offset;
}


#endif /* _NGX_HTTP_AI_GATEWAY_SSE_H_INCLUDED_ */
