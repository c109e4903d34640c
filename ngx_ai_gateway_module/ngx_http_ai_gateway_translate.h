
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * OpenAI Chat Completions <-> Anthropic Messages, for a fallback location
 * that proxies an OpenAI-format client to Anthropic:
 *   - the client's chat request becomes a Messages request;
 *   - Anthropic's JSON answer, error answer or SSE events become the
 *     chat.completion, error object or chat.completion.chunk events the
 *     client expects.
 * Input is parsed by our own parser (ngx_http_ai_gateway_jtree.h) into an
 * arena: a few KiB on the stack, more from the output buffer's resize()
 * (nginx: the pool), freed before the call returns.  Output is written
 * straight into a growable buffer whose memory the caller may supply.  No
 * nginx dependency: unit-tested alone (t/unit/test_translate.c).
 *
 * Mapping decisions, where the two APIs do not match one to one:
 *   - "system" and "developer" messages, wherever they are, make the
 *     top-level "system" string: their non-empty texts (each string, each
 *     text part) joined with "\n\n";
 *   - consecutive messages of one Anthropic role merge into one message
 *     (tool results are "user" messages); a lone message with string
 *     content keeps its string, others get content blocks, empty texts
 *     left out;
 *   - image_url parts: a base64 data URL is a base64 image, an http(s)
 *     URL a url image; "file" parts with file_data are base64 documents;
 *     other URLs, file ids and audio are 400;
 *   - a "tool" message's content stays a string, or becomes text blocks
 *     when it was an array of text parts;
 *   - tool call arguments "" (or blanks) are {}; other non-objects: 400;
 *   - tool_choice "none" is {"type":"none"}: the tools stay defined, so a
 *     history with tool calls is still valid;
 *   - parallel_tool_calls false is disable_parallel_tool_use on the
 *     tool_choice ("auto" when the client gave none); without tools,
 *     tool_choice and parallel_tool_calls are dropped;
 *   - max_completion_tokens wins over max_tokens;
 *   - temperature is clamped to 1 (Anthropic's range is 0..1): the common
 *     values below 1 keep their meaning; top_p is dropped when temperature
 *     is given, since recent Claude models refuse both;
 *   - "user" (else "safety_identifier") is metadata.user_id;
 *   - n other than 1, deprecated "functions" / "function_call" and the
 *     "function" role are 400; fields Anthropic has no counterpart for
 *     (penalties, logit_bias, logprobs, seed, response_format,
 *     reasoning_effort, store, metadata, service_tier, ...) are dropped;
 *   - answers report the model Anthropic names (the model that answered),
 *     the id is "chatcmpl-" + Anthropic's id without its "msg_";
 *   - an answer's content is its text blocks joined; null when it has
 *     tool calls and no text, "" when it has neither;
 *   - thinking blocks and deltas, and blocks of server tools, are left out
 *     of answers;
 *   - chunks carry "logprobs":null as OpenAI's do; text and tool argument
 *     deltas may keep the JSON escapes Anthropic wrote ("\u00e9");
 *   - JSON integers beyond 64 bits make the body invalid (jansson's limit,
 *     kept when the parser replaced jansson).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_TRANSLATE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_TRANSLATE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include "ngx_http_ai_gateway_jtree.h"


#define NGX_HTTP_AI_GATEWAY_TRANSLATE_OK        0
/* the input is not what it should be: nothing was written */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID  -1
/* the buffer could not grow: nothing was written */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM    -2

#define NGX_HTTP_AI_GATEWAY_TRANSLATE_DEFAULT_MAX_TOKENS  4096

/* longer strings are cut, at a character boundary */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_MODEL_MAX  256
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_ID_MAX     128
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_ERROR_MAX  256


/*
 * Grows (or, with new_size 0, frees) a buffer: returns the new memory with
 * the first old_size bytes of old in it, or NULL.  nginx: ngx_pnalloc and
 * a copy, freeing nothing.
 */
typedef void *(*ngx_http_ai_gateway_translate_resize_pt)(void *ctx, void *old,
    size_t old_size, size_t new_size);


/*
 * Output: bytes are appended at p + len; p[len] is always '\0' once
 * something was written.  A function that fails leaves len as it was, so
 * the caller never sees half an answer or half an event.
 */
typedef struct {
    unsigned char                            *p;
    size_t                                    len;
    size_t                                    cap;
    /* NULL: realloc() and free() */
    ngx_http_ai_gateway_translate_resize_pt   resize;
    void                                     *ctx;
    /* private: set when growing failed */
    unsigned                                  failed:1;
} ngx_http_ai_gateway_translate_buf_t;


/* room for n bytes at once, for an output whose size is known about */
void ngx_http_ai_gateway_translate_buf_reserve(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n);
void ngx_http_ai_gateway_translate_buf_init(
    ngx_http_ai_gateway_translate_buf_t *b,
    ngx_http_ai_gateway_translate_resize_pt resize, void *ctx);
void ngx_http_ai_gateway_translate_buf_free(
    ngx_http_ai_gateway_translate_buf_t *b);
/* room for n more bytes at p + len: _OK, or _NOMEM (the buffer failed) */
int ngx_http_ai_gateway_translate_buf_room(
    ngx_http_ai_gateway_translate_buf_t *b, size_t n);


/* the fallback's settings */
typedef struct {
    /* max_tokens when the client gave none; 0: 4096 */
    uint64_t                                  default_max_tokens;
    /* larger max_tokens are cut to this (the model's limit); 0: none */
    uint64_t                                  max_tokens_limit;
    /* the Anthropic model to ask; NULL: the client's "model" */
    const char                               *model;
    size_t                                    model_len;
} ngx_http_ai_gateway_translate_conf_t;


/* what the request translation learned */
typedef struct {
    /* the client's "model" (empty when none) */
    unsigned char     model[NGX_HTTP_AI_GATEWAY_TRANSLATE_MODEL_MAX];
    size_t            model_len;
    /* the max_tokens sent to Anthropic */
    uint64_t          max_tokens;
    unsigned          stream:1;
    /* stream_options.include_usage was true: see _stream_init() */
    unsigned          include_usage:1;

    /* on _INVALID: the HTTP status for the client (400) and why */
    unsigned          status;
    char              error[NGX_HTTP_AI_GATEWAY_TRANSLATE_ERROR_MAX];
} ngx_http_ai_gateway_translate_request_t;


/* token counts, in OpenAI's sense */
typedef struct {
    /* input_tokens + cache_read_input_tokens + cache_creation_input_tokens */
    uint64_t          input_tokens;
    uint64_t          output_tokens;
    /* cache_read_input_tokens */
    uint64_t          cached_tokens;
    /* Anthropic reported usage */
    unsigned          found:1;
} ngx_http_ai_gateway_translate_usage_t;


/*
 * An OpenAI chat request body -> an Anthropic Messages request body.
 * Returns _OK, _INVALID (req->status and req->error say why; answer the
 * client with ngx_http_ai_gateway_translate_error_json()) or _NOMEM.
 */
int ngx_http_ai_gateway_translate_request(const unsigned char *body,
    size_t len, const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);

/* the same from the body's tree, parsed already (in arena, which the
 * strings' escapes are decoded into) */
int ngx_http_ai_gateway_translate_request_tree(
    ngx_http_ai_gateway_jtree_t *root, ngx_http_ai_gateway_jtree_arena_t *a,
    const ngx_http_ai_gateway_translate_conf_t *conf,
    ngx_http_ai_gateway_translate_request_t *req,
    ngx_http_ai_gateway_translate_buf_t *out);

/*
 * An Anthropic message (a 2xx JSON answer) -> a chat.completion.  created:
 * the caller's clock; model: used when the answer has none (may be NULL).
 * u (may be NULL) gets the usage.  Returns _OK, _INVALID when the body is
 * not a message (then see _error()), or _NOMEM.
 */
int ngx_http_ai_gateway_translate_response(const unsigned char *body,
    size_t len, int64_t created, const unsigned char *model,
    size_t model_len, ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out);

/*
 * The same through the tree alone.  _response() first tries the usual
 * answer in one pass without a tree (plain strings, text blocks, integer
 * counts), and gives the rest to this; the unit test holds them to the
 * same output.
 */
int ngx_http_ai_gateway_translate_response_tree(const unsigned char *body,
    size_t len, int64_t created, const unsigned char *model,
    size_t model_len, ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out);

/* the one-pass reader alone: _OK, or _DECLINED with out as it was (and u
 * untouched) for the tree to read */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED   1

int ngx_http_ai_gateway_translate_response_fast(const unsigned char *body,
    size_t len, int64_t created, const unsigned char *model,
    size_t model_len, ngx_http_ai_gateway_translate_usage_t *u,
    ngx_http_ai_gateway_translate_buf_t *out);

/*
 * An Anthropic error answer -> {"error":{"message","type","code"}}.  Any
 * body will do: without Anthropic's error object, status says what it
 * was.  Types: invalid_request_error, request_too_large ->
 * "invalid_request_error"; authentication_error, permission_error,
 * not_found_error, rate_limit_error kept; billing_error ->
 * "insufficient_quota"; api_error, overloaded_error, timeout_error and
 * other 5xx -> "server_error".  code: OpenAI's well-known one where there
 * is one (invalid_api_key, rate_limit_exceeded, insufficient_quota,
 * context_length_exceeded), else Anthropic's type.  Returns _OK or _NOMEM.
 */
int ngx_http_ai_gateway_translate_error(const unsigned char *body,
    size_t len, unsigned status, ngx_http_ai_gateway_translate_buf_t *out);

/* the status for the client: Anthropic's 529 (overloaded) is 503 */
unsigned ngx_http_ai_gateway_translate_status(unsigned status);

/* writes {"error":{"message","type","code"}}; returns _OK or _NOMEM */
int ngx_http_ai_gateway_translate_error_json(
    ngx_http_ai_gateway_translate_buf_t *out, const char *message,
    size_t len, const char *type, const char *code);

/*
 * Anthropic's stop_reason -> OpenAI's finish_reason: end_turn,
 * stop_sequence, pause_turn -> "stop"; max_tokens,
 * model_context_window_exceeded -> "length"; tool_use -> "tool_calls";
 * refusal -> "content_filter"; others "stop"; NULL (JSON null) -> NULL.
 */
const char *ngx_http_ai_gateway_translate_finish_reason(
    const unsigned char *stop_reason, size_t len);


/*
 * The stream translation: one per response, fed the events of Anthropic's
 * SSE stream one by one, whole (as ngx_http_ai_gateway_sse_t delivers
 * them).  It keeps no parsed JSON between events.
 */
typedef struct {
    int64_t           created;
    uint64_t          input_tokens;       /* Anthropic's, uncached */
    uint64_t          cache_read;
    uint64_t          cache_creation;
    uint64_t          output_tokens;
    /* the content block being streamed, if a tool_use, and its number
     * among the answer's tool calls */
    int64_t           tool_block;
    unsigned          tool_index;
    unsigned          tools;              /* tool calls so far */
    size_t            id_len;
    size_t            model_len;
    unsigned char     id[NGX_HTTP_AI_GATEWAY_TRANSLATE_ID_MAX];
    unsigned char     model[NGX_HTTP_AI_GATEWAY_TRANSLATE_MODEL_MAX];
    unsigned          include_usage:1;
    unsigned          in_tool:1;
    unsigned          tool_args:1;     /* the open tool's input began */
    unsigned          usage_found:1;
    /* message_stop or an error was translated: "[DONE]" was written */
    unsigned          done:1;
} ngx_http_ai_gateway_translate_stream_t;


/* model: until message_start names one (may be NULL) */
void ngx_http_ai_gateway_translate_stream_init(
    ngx_http_ai_gateway_translate_stream_t *st, int64_t created,
    unsigned include_usage, const unsigned char *model, size_t model_len);

/*
 * One event: its name (empty: the data's "type" says) and its data.
 * Appends zero or more "data: ...\n\n" events for the client:
 *   message_start -> the first chunk (role "assistant", content "");
 *   content_block_start -> a tool call's id and name (text: nothing);
 *   content_block_delta -> content, or a tool call's arguments piece
 *       (thinking, signature and citations deltas: nothing);
 *   message_delta -> the chunk with the finish_reason;
 *   message_stop -> the usage chunk (with include_usage), "[DONE]";
 *   error -> the error object, "[DONE]";
 *   ping, content_block_stop, unknown events, anything after "[DONE]":
 *       nothing, and their data is not even parsed.
 * Returns _OK, _INVALID when the data is not what the event should carry
 * (end the stream, e.g. with _stream_fail()), or _NOMEM.
 */
int ngx_http_ai_gateway_translate_stream_feed(
    ngx_http_ai_gateway_translate_stream_t *st, const unsigned char *name,
    size_t name_len, const unsigned char *data, size_t data_len,
    ngx_http_ai_gateway_translate_buf_t *out);

/*
 * Ends a stream that cannot go on (malformed or cut upstream stream): an
 * error object ("server_error", code "upstream_error") and "[DONE]",
 * unless "[DONE]" was written already.  Returns _OK or _NOMEM.
 */
int ngx_http_ai_gateway_translate_stream_fail(
    ngx_http_ai_gateway_translate_stream_t *st, const char *message,
    size_t len, ngx_http_ai_gateway_translate_buf_t *out);

/* the usage seen so far */
void ngx_http_ai_gateway_translate_stream_usage(
    ngx_http_ai_gateway_translate_stream_t *st,
    ngx_http_ai_gateway_translate_usage_t *u);


#endif /* _NGX_HTTP_AI_GATEWAY_TRANSLATE_H_INCLUDED_ */
