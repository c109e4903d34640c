
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Usage and output text from provider responses, fed incrementally.
 *
 * The response walker follows one JSON document (a whole JSON answer, or
 * the data of one SSE event) across any split into buffers, tracking only
 * what it needs: string/escape state, nesting, and the key path.  It
 *   - captures the raw text of the "usage" objects (at the top, or under
 *     "message" / "response"), and the "model" and finish reason strings;
 *   - counts the code points of output text and reports each piece of it.
 * It never builds a tree; the small captured usage object is decoded by
 * ngx_http_ai_gateway_usage_parse().  No nginx dependency: unit-tested
 * alone (t/unit/test_usage.c).
 *
 * Output text, by the key K of the string and the key P of the object that
 * holds it (for array elements: the array's key; "" at the top):
 *   JSON answers:  (content, message)  OpenAI chat
 *                  (arguments, function)  OpenAI tool calls
 *                  (text, choices)  OpenAI completions
 *                  (text, content)  Anthropic messages, OpenAI responses
 *   SSE events:    (content, delta)  OpenAI chat chunks
 *                  (arguments, function)  OpenAI tool call chunks
 *                  (text, choices)  OpenAI completion chunks
 *                  (text, delta), (partial_json, delta)  Anthropic deltas
 *                  (delta, "")  OpenAI responses "*.delta" events
 * Events that repeat the whole answer (response.completed, *.done) hold
 * text only under other keys, so nothing is counted twice.
 *
 * Streams: a chunk mostly repeats the bytes of the one before around a new
 * piece of text.  The walker remembers that prefix and suffix (usage.c),
 * and ngx_http_ai_gateway_walk_stream() walks a whole "data:" event made
 * of them at once, with the same results as the event parsed and walked;
 * a chunk cut by a buffer's end within the prefix waits as a count.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_USAGE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_USAGE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "ngx_http_ai_gateway_sse.h"


#define NGX_HTTP_AI_GATEWAY_WALK_JSON      0

#define NGX_HTTP_AI_GATEWAY_DELTA_TEXT       0
#define NGX_HTTP_AI_GATEWAY_DELTA_ARGUMENTS  1
#define NGX_HTTP_AI_GATEWAY_DELTA_OTHER      2
#define NGX_HTTP_AI_GATEWAY_WALK_SSE       1

/* deeper paths are walked but not matched */
#define NGX_HTTP_AI_GATEWAY_WALK_DEPTH     8
/* a usage object larger than this is not captured (real ones: ~300 B) */
#define NGX_HTTP_AI_GATEWAY_USAGE_MAX      2048
#define NGX_HTTP_AI_GATEWAY_SHORT_MAX      128
/* the longest document prefix the walker remembers (private) */
#define NGX_HTTP_AI_GATEWAY_WALK_MEMO      384
#define NGX_HTTP_AI_GATEWAY_WALK_SUFFIX    64


/* what a piece of output text is, for the assembled stream message */
typedef enum {
    NGX_HTTP_AI_GATEWAY_TEXT_CONTENT = 0,    /* message text */
    NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS       /* tool call arguments */
} ngx_http_ai_gateway_text_e;


/*
 * Called with decoded output text (UTF-8), in pieces: a long string may
 * come in several calls.  Returns 0 to go on.
 */
typedef int (*ngx_http_ai_gateway_text_pt)(void *data,
    ngx_http_ai_gateway_text_e kind, const unsigned char *p, size_t len);


typedef struct {
    /* the caller's */
    unsigned                      mode;          /* _WALK_JSON or _WALK_SSE */
    ngx_http_ai_gateway_text_pt   on_text;       /* may be NULL */
    void                         *data;
    unsigned                      no_wait:1;     /* cut prefixes walked at
                                                    once (tests compare) */
    /* the caller's too: text of each kind (text_e) is written at
     * *sink_last[kind] (which it moves) while it fits before
     * sink_end[kind], and on_text is called only when it does not: a
     * streamed token costs no call.  NULL: none. */
    unsigned char               **sink_last[2];
    unsigned char                *sink_end[2];

    /* results, kept over ngx_http_ai_gateway_walk_reset() */
    uint64_t                      text_chars;    /* code points of text */
    unsigned                      text_seen:1;   /* non-empty text seen */
    unsigned                      malformed:1;   /* not JSON: walk stopped */

    size_t                        usage_len;     /* the last one captured */
    unsigned                      usage_found:1; /* a complete one is in */
    unsigned                      usage_new:1;   /* set at each capture;
                                                    the caller clears it */
    unsigned                      choice_seen:1; /* this document's
                                                    "choices" has an
                                                    element (reset per
                                                    document) */

    size_t                        model_len;     /* decoded; 0: none yet */

    /* "finish_reason" / "stop_reason" / responses "status": decoded */
    size_t                        finish_len;

    /* private: the walker's state, reset per document (the implementation
     * may change these fields freely) */
    unsigned                      state;
    unsigned                      depth;         /* open containers */
    unsigned                      str_mode;      /* what the string is for */
    unsigned                      text_kind;
    unsigned                      short_target;  /* model, finish or type */
    unsigned                      short_len;
    unsigned                      literal;       /* true, false, null, 0-9 */
    unsigned                      literal_pos;
    unsigned                      escape:1;      /* after a backslash */
    unsigned                      key_other:1;   /* not a key of the table */
    unsigned                      short_cut:1;   /* the string was cut */
    /* what a Responses event's "type" makes of its "delta": 0 text (or
     * no type yet), 1 tool arguments, 2 neither (reasoning, audio) */
    unsigned                      type_delta:2;
    unsigned                      capturing:1;
    unsigned                      capture_overflow:1;
    unsigned                      capture_depth;
    unsigned                      uescape_len;   /* an escape, split */
    unsigned char                 uescape[12];
    unsigned                      utf8_pending;  /* a character, split */
    unsigned                      utf8_need;
    unsigned char                 utf8[4];
    size_t                        key_len;
    unsigned char                 key[24];
    /* key at each depth: an index into the walker's known-key table */
    unsigned char                 path[NGX_HTTP_AI_GATEWAY_WALK_DEPTH];
    /* a bit per depth, set for an object; deeper documents are malformed */
    unsigned char                 nest[128];
    size_t                        capture_len;

    /* the prefix memo: the first bytes of a document, up to its first
     * output text, and the walk's state there (see usage.c) */
    unsigned                      doc_start:1;   /* nothing fed since reset */
    unsigned                      model_set:1;   /* written by this document */
    unsigned                      finish_set:1;
    unsigned                      memo_model:1;  /* written by the prefix */
    unsigned                      memo_finish:1;
    unsigned                      memo_choice:1;
    unsigned                      memo_type_delta:2;
    unsigned                      memo_text_kind;    /* of its text */
    unsigned                      model_memo:1;  /* model is the memo's */
    size_t                        memo_pending;  /* bytes of the prefix
                                                    seen, in a cut
                                                    document */
    unsigned                      memo_mode;
    unsigned                      memo_depth;
    size_t                        memo_len;      /* 0: none */
    size_t                        memo_model_len;
    size_t                        memo_finish_len;
    unsigned char                 memo_nest;
    unsigned char                 memo_path[NGX_HTTP_AI_GATEWAY_WALK_DEPTH];

    /* the suffix memo: the bytes after that text to the document's end,
     * when they did nothing but close it (see usage.c) */
    size_t                        suffix_len;    /* 0: none */
    unsigned                      effects;       /* results written */

    /*
     * The buffers, last (from usage on): only read within their lengths
     * above, so that walk_init() clears the fields before them and not
     * these 5 KB.  usage: the last usage object captured; model and
     * finish: decoded.
     */
    unsigned char                 usage[NGX_HTTP_AI_GATEWAY_USAGE_MAX];
    unsigned char                 model[NGX_HTTP_AI_GATEWAY_SHORT_MAX];
    unsigned char                 finish[NGX_HTTP_AI_GATEWAY_SHORT_MAX];
    unsigned char                 short_buf[NGX_HTTP_AI_GATEWAY_SHORT_MAX];
    unsigned char                 capture[NGX_HTTP_AI_GATEWAY_USAGE_MAX];
    unsigned char                 memo[NGX_HTTP_AI_GATEWAY_WALK_MEMO];
    unsigned char                 memo_model_buf[NGX_HTTP_AI_GATEWAY_SHORT_MAX];
    unsigned char                 memo_finish_buf[NGX_HTTP_AI_GATEWAY_SHORT_MAX];
    unsigned char                 suffix[NGX_HTTP_AI_GATEWAY_WALK_SUFFIX];
} ngx_http_ai_gateway_walk_t;


void ngx_http_ai_gateway_walk_init(ngx_http_ai_gateway_walk_t *w,
    unsigned mode, ngx_http_ai_gateway_text_pt on_text, void *data);

/* starts a new document (the next SSE event), keeping the results */
void ngx_http_ai_gateway_walk_reset(ngx_http_ai_gateway_walk_t *w);

/* returns 0, -1 when the input is not JSON (w->malformed is set), or the
 * nonzero value on_text returned */
int ngx_http_ai_gateway_walk_feed(ngx_http_ai_gateway_walk_t *w,
    const unsigned char *p, size_t len);

/*
 * A document cut within the remembered prefix waits for its next bytes to
 * tell whether it is the prefix; before the walk's results are read,
 * this walks what waits (the next walk_feed() and walk_reset() do it
 * themselves).  Returns as walk_feed().
 */
int ngx_http_ai_gateway_walk_flush(ngx_http_ai_gateway_walk_t *w);

/*
 * A stream's bytes, to sse (whose on_data feeds w, and whose on_event
 * resets it) with a fast path for the usual chunk: a whole event
 * "data: " DOC "\n\n" (after an "event: NAME" line that is_end() does not
 * call an end) whose DOC is the prefix the walker remembered, a text
 * without escapes and the remembered suffix is walked at once, the
 * parser skips it, and on_chunk(data) is called where on_event would be
 * (it must reset w too).  Other events go to ngx_http_ai_gateway_sse_feed()
 * one at a time: their on_event returns NGX_HTTP_AI_GATEWAY_WALK_PAUSE
 * (after doing its work) so that the fast path may take the next one.
 * The results are those of sse_feed() alone (t/unit/test_usage.c).
 * Returns 0 or what a callback returned.
 */
#define NGX_HTTP_AI_GATEWAY_WALK_PAUSE  0x5041

typedef int (*ngx_http_ai_gateway_chunk_pt)(void *data);
/* nonzero for an event name that ends a stream (on_event's business) */
typedef int (*ngx_http_ai_gateway_name_pt)(const unsigned char *name,
    size_t len);

int ngx_http_ai_gateway_walk_stream(ngx_http_ai_gateway_sse_t *sse,
    ngx_http_ai_gateway_walk_t *w, const unsigned char *p, size_t len,
    ngx_http_ai_gateway_chunk_pt on_chunk, ngx_http_ai_gateway_name_pt is_end,
    void *data);


/* token counts; -1 where the provider did not say */
typedef struct {
    int64_t  input;            /* all input tokens, cached ones included */
    int64_t  output;           /* all output tokens, reasoning included */
    int64_t  total;
    int64_t  cached_input;     /* cache reads */
    int64_t  cache_creation;   /* Anthropic cache writes */
    int64_t  reasoning;
} ngx_http_ai_gateway_usage_t;


void ngx_http_ai_gateway_usage_init(ngx_http_ai_gateway_usage_t *u);

/*
 * Merges one usage object (the raw JSON text of it) into u: OpenAI chat,
 * completions and embeddings (prompt_tokens, completion_tokens,
 * total_tokens, prompt_tokens_details.cached_tokens,
 * completion_tokens_details.reasoning_tokens), OpenAI responses
 * (input_tokens, output_tokens, total_tokens, input_tokens_details.
 * cached_tokens, output_tokens_details.reasoning_tokens) and Anthropic
 * (input_tokens, output_tokens, cache_read_input_tokens,
 * cache_creation_input_tokens; input = the sum of the three input counts,
 * since Anthropic's input_tokens leaves the cached ones out).  A later
 * object overrides the fields it has (Anthropic's message_delta after
 * message_start).  total is input + output when not given.
 * Returns 0, or -1 when the text is not a JSON object.
 */
int ngx_http_ai_gateway_usage_parse(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *json, size_t len);

/*
 * Merges the top-level "usage" object of a whole JSON answer into u, as
 * usage_parse() does, reading it from the answer's end (OpenAI and
 * Anthropic write it last or next to last) rather than walking the whole
 * answer.  With duplicate keys the last one counts, as in jansson.  Returns
 * 0, or -1 when it finds none, or anything it did not expect (then u is
 * untouched, and the caller walks the answer).  Valid JSON is assumed,
 * never trusted: it reads only within [doc, doc + len).
 */
int ngx_http_ai_gateway_usage_find_tail(ngx_http_ai_gateway_usage_t *u,
    const unsigned char *doc, size_t len);


#endif /* _NGX_HTTP_AI_GATEWAY_USAGE_H_INCLUDED_ */
