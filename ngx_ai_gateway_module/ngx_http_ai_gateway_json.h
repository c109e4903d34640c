
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
 * The first byte at or after p that JSON strings must escape or that is not
 * ASCII (a quote, a backslash, < 0x20, >= 0x80), or end: a fast scan.
 */
const unsigned char *ngx_http_ai_gateway_json_skip_plain(
    const unsigned char *p, const unsigned char *end);

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
