
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * A small JSON parser that builds a compact read-only tree in an arena.
 * It accepts exactly what jansson's json_loadb(data, len, JSON_ALLOW_NUL,
 * ..) accepts: an object or an array at the top, RFC 8259 grammar, valid
 * UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF),
 * "\u0000" in string values but not in keys, integers within int64, finite
 * reals, depth <= 2048.  With duplicate keys the last one wins, as in
 * jansson.  One difference: jansson skips a NUL byte right after a number
 * or a literal ("[1\0]" passes: its pushback buffer takes NUL for empty);
 * here that byte is invalid, as anywhere outside strings.
 *
 * Nothing is copied from the input but escaped keys: strings point into
 * it, and their escapes are decoded only when asked for.  The input must
 * outlive the tree.  No nginx dependency: unit-tested alone, and against
 * jansson (t/unit/test_jtree.c).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_JTREE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_JTREE_H_INCLUDED_


#include <stddef.h>
#include <string.h>
#include <stdint.h>

#include "ngx_http_ai_gateway_json.h"


/* jansson's JSON_PARSER_MAX_DEPTH */
#define NGX_HTTP_AI_GATEWAY_JTREE_MAX_DEPTH  2048


typedef enum {
    NGX_HTTP_AI_GATEWAY_JTREE_NULL = 0,
    NGX_HTTP_AI_GATEWAY_JTREE_TRUE,
    NGX_HTTP_AI_GATEWAY_JTREE_FALSE,
    NGX_HTTP_AI_GATEWAY_JTREE_INTEGER,
    NGX_HTTP_AI_GATEWAY_JTREE_REAL,
    NGX_HTTP_AI_GATEWAY_JTREE_STRING,
    NGX_HTTP_AI_GATEWAY_JTREE_ARRAY,
    NGX_HTTP_AI_GATEWAY_JTREE_OBJECT
} ngx_http_ai_gateway_jtree_type_e;


/*
 * Memory for trees: bump allocation in blocks.  The first block may be
 * the caller's (say, on the stack); more come from alloc(), and go back
 * to free() (may be NULL) in _arena_free().  Nothing is freed before.
 */
typedef void *(*ngx_http_ai_gateway_jtree_alloc_pt)(void *ctx, size_t size);
typedef void (*ngx_http_ai_gateway_jtree_free_pt)(void *ctx, void *p,
    size_t size);

typedef struct ngx_http_ai_gateway_jtree_block_s
    ngx_http_ai_gateway_jtree_block_t;

typedef struct {
    unsigned char                         *pos;
    unsigned char                         *last;
    /* the blocks from alloc(), newest first */
    ngx_http_ai_gateway_jtree_block_t     *blocks;
    ngx_http_ai_gateway_jtree_alloc_pt     alloc;
    ngx_http_ai_gateway_jtree_free_pt      free;
    void                                  *ctx;
    /* "\u0000" refused in values too, as the request scanner refuses it */
    unsigned                               no_nul:1;
} ngx_http_ai_gateway_jtree_arena_t;


typedef struct ngx_http_ai_gateway_jtree_s  ngx_http_ai_gateway_jtree_t;

struct ngx_http_ai_gateway_jtree_s {
    /* an object member's key, decoded (not NUL-terminated) */
    const unsigned char                   *key;
    size_t                                 key_len;

    union {
        /* strings: the bytes between the quotes, or the decoded bytes;
         * numbers: their text */
        const unsigned char               *str;
        /* arrays, objects: the values, in order */
        ngx_http_ai_gateway_jtree_t       *child;
    } u;

    /* bytes of str; or the number of children */
    size_t                                 len;

    union {
        int64_t                            integer;
        /* strings with escapes: where to decode them */
        ngx_http_ai_gateway_jtree_arena_t *arena;
    } v;

    unsigned                               type:4;
    /* str has escapes still */
    unsigned                               escaped:1;
    /*
     * str has no escapes but the shortest ones of quotes, backslashes and
     * control characters (\" \\ \b \f \n \r \t, else \u00xx in lower
     * case): it is the decoded string as a writer that escapes just those
     * would write it, and may be copied to such a writer's output as it is
     */
    unsigned                               verbatim:1;
};


typedef struct {
    const char                            *text;
    size_t                                 offset;
    /* the arena ran dry: no fault of the input */
    unsigned                               nomem:1;
} ngx_http_ai_gateway_jtree_error_t;


void ngx_http_ai_gateway_jtree_arena_init(
    ngx_http_ai_gateway_jtree_arena_t *a, void *buf, size_t size,
    ngx_http_ai_gateway_jtree_alloc_pt alloc,
    ngx_http_ai_gateway_jtree_free_pt free, void *ctx);
void *ngx_http_ai_gateway_jtree_alloc(ngx_http_ai_gateway_jtree_arena_t *a,
    size_t size);
void ngx_http_ai_gateway_jtree_arena_free(
    ngx_http_ai_gateway_jtree_arena_t *a);

/* the root (an object or an array), or NULL and err says why */
ngx_http_ai_gateway_jtree_t *ngx_http_ai_gateway_jtree_parse(
    const unsigned char *p, size_t len, ngx_http_ai_gateway_jtree_arena_t *a,
    ngx_http_ai_gateway_jtree_error_t *err);


#define ngx_http_ai_gateway_jtree_is(n, t)                                    \
    ((n) != NULL && (n)->type == NGX_HTTP_AI_GATEWAY_JTREE_##t)

#define ngx_http_ai_gateway_jtree_is_number(n)                                \
    (ngx_http_ai_gateway_jtree_is(n, INTEGER)                                 \
     || ngx_http_ai_gateway_jtree_is(n, REAL))

/* null for a missing value too */
#define ngx_http_ai_gateway_jtree_is_none(n)                                  \
    ((n) == NULL || (n)->type == NGX_HTTP_AI_GATEWAY_JTREE_NULL)


/* for (i = 0; v = the i-th value of a; i++), a an array or NULL */
#define ngx_http_ai_gateway_jtree_foreach(a, i, v)                            \
    for ((i) = 0;                                                             \
         (i) < ngx_http_ai_gateway_jtree_size(a)                              \
         && ((v) = &(a)->u.child[i]) != NULL;                                 \
         (i)++)


/* the last member with this key (the last duplicate counts); NULL when
 * none, or o is no object */
static inline ngx_http_ai_gateway_jtree_t *
ngx_http_ai_gateway_jtree_get(const ngx_http_ai_gateway_jtree_t *o,
    const char *key)
{
    size_t                        i, len;
    ngx_http_ai_gateway_jtree_t  *m;

    /* inline: with a literal key, the length and the memcmp() are
     * constants, and most members differ in length */

    if (o == NULL || o->type != NGX_HTTP_AI_GATEWAY_JTREE_OBJECT) {
        return NULL;
    }

    len = strlen(key);

    for (i = o->len; i-- > 0; /* void */) {
        m = &o->u.child[i];

        if (m->key_len == len && memcmp(m->key, key, len) == 0) {
            return m;
        }
    }

    return NULL;
}

/* children of an array (0 for anything else) */
size_t ngx_http_ai_gateway_jtree_size(const ngx_http_ai_gateway_jtree_t *a);
ngx_http_ai_gateway_jtree_t *ngx_http_ai_gateway_jtree_at(
    const ngx_http_ai_gateway_jtree_t *a, size_t i);

/* an integer's value; 0 for anything else */
int64_t ngx_http_ai_gateway_jtree_integer(const ngx_http_ai_gateway_jtree_t *n);
/* a number's value; 0 for anything else */
double ngx_http_ai_gateway_jtree_number(const ngx_http_ai_gateway_jtree_t *n);

/*
 * A string's decoded bytes (not NUL-terminated unless decoded; they may
 * hold NUL bytes).  Escapes are decoded on the first call, into the
 * parser's arena.  NULL, *len 0: not a string, or out of memory.
 */
const unsigned char *ngx_http_ai_gateway_jtree_string(
    ngx_http_ai_gateway_jtree_t *n, size_t *len);

/*
 * The string is s as C sees it: what comes before a NUL byte is s (as
 * strcmp() on jansson's string value).  0 for anything not a string.
 * prefix: s is the start of the string, rather than all of it.
 */
int ngx_http_ai_gateway_jtree_eq_decoded(
    const ngx_http_ai_gateway_jtree_t *n, const char *s, int prefix);

/* inline for the usual string without escapes: a length and a memcmp()
 * that the compiler makes of a literal s (roles, types, finish reasons) */
static inline int
ngx_http_ai_gateway_jtree_eq(const ngx_http_ai_gateway_jtree_t *n,
    const char *s, int prefix)
{
    size_t  len;

    if (n == NULL || n->type != NGX_HTTP_AI_GATEWAY_JTREE_STRING) {
        return 0;
    }

    if (n->escaped) {
        return ngx_http_ai_gateway_jtree_eq_decoded(n, s, prefix);
    }

    len = strlen(s);

    if (prefix) {
        return n->len >= len && memcmp(n->u.str, s, len) == 0;
    }

    /* as strcmp() on the string: a NUL ends it (one that a string decoded
     * in place, its escapes gone, may hold) */
    return (n->len == len || (n->len > len && n->u.str[len] == '\0'))
           && memcmp(n->u.str, s, len) == 0;
}


/*
 * The facts ngx_http_ai_gateway_json_scan() reports of a document, from
 * its tree (an object, parsed with no_nul): the same top-level fields,
 * the last duplicate winning, and the same prompt text count.  Strings and
 * numbers get their spans in the document; objects, arrays and literals
 * do not (start NULL).  input_chars is left 0:
 * ngx_http_ai_gateway_jtree_input_chars() counts it when it is wanted.
 * t/unit/test_jtree.c checks both agree.
 */
void ngx_http_ai_gateway_jtree_facts(ngx_http_ai_gateway_jtree_t *root,
    ngx_http_ai_gateway_json_facts_t *facts);
uint64_t ngx_http_ai_gateway_jtree_input_chars(
    ngx_http_ai_gateway_jtree_t *root);


#endif /* _NGX_HTTP_AI_GATEWAY_JTREE_H_INCLUDED_ */
