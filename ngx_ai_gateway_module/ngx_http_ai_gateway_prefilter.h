
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * A literal prefilter for PCRE2 patterns: from a pattern's text, sets of
 * literals such that any match contains one literal of each set (as an
 * ASCII-caseless substring).  A text that lacks a set cannot match, and
 * the pattern is not run on it.  Most texts hold none of a deny list's literals, and
 * memmem() over a lowercased copy is far cheaper than running the pattern.
 *
 * The extraction reads the pattern conservatively: whatever it does not
 * understand ends the literal at hand, or gives up (an empty set: the
 * pattern always runs).  It never claims a literal a match can do without:
 * optional items, lookarounds, verbs such as (*ACCEPT), escapes it cannot
 * read, \Q..\E and the extended syntax (?x) are never taken for literals.
 * Under PCRE2_UTF caseless matching, 'k' and 's' also match U+212A and
 * U+017F, so they end a literal too.  No nginx dependency: unit-tested
 * alone and against PCRE2 (t/unit/test_prefilter.c).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_PREFILTER_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_PREFILTER_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* literals in a set (the alternatives of a group), bytes kept of each */
#define NGX_HTTP_AI_GATEWAY_PREFILTER_SET  8
#define NGX_HTTP_AI_GATEWAY_PREFILTER_LEN  32

/* shorter literals are not worth a search: PCRE2 looks for one byte */
#define NGX_HTTP_AI_GATEWAY_PREFILTER_MIN  3

/* sets of a pattern without alternatives at its top, all required:
 * "prompt.*reveal" needs both */
#define NGX_HTTP_AI_GATEWAY_PREFILTER_AND  4


/* literals one of which must occur; lowercased (ASCII) */
typedef struct {
    unsigned char  lit[NGX_HTTP_AI_GATEWAY_PREFILTER_SET]
                      [NGX_HTTP_AI_GATEWAY_PREFILTER_LEN];
    size_t         len[NGX_HTTP_AI_GATEWAY_PREFILTER_SET];
    unsigned       n;
} ngx_http_ai_gateway_prefilter_set_t;


/* sets that must all occur (the best first); n 0: the pattern always runs */
typedef struct {
    ngx_http_ai_gateway_prefilter_set_t  set[NGX_HTTP_AI_GATEWAY_PREFILTER_AND];
    unsigned                             n;
} ngx_http_ai_gateway_prefilter_t;


/*
 * The literals of many patterns (a guardrail's deny list) looked for in
 * one pass: which of them a text holds.  With SSSE3 (asked of the CPU at
 * run time) sixteen places a step: the first bytes (three or four) of
 * every literal are looked up by their nibbles in tables of eight buckets
 * (the "Teddy" scheme of Hyperscan), and only the places that pass for a
 * bucket are compared with its literals.  Elsewhere, one search per
 * literal.
 */
#define NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI  64

typedef struct {
    unsigned char  lit[NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI]
                      [NGX_HTTP_AI_GATEWAY_PREFILTER_LEN];
    unsigned char  len[NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI];
    unsigned       n;
    /* the literals of each bucket, and the nibbles of their first three
     * bytes: bit b of lo[j][x] says a literal of bucket b has a byte j
     * whose low nibble is x */
    uint64_t       bucket[8];
    unsigned char  lo[4][16];
    unsigned char  hi[4][16];
    /* each literal's first four bytes (three, and a zero, when it has no
     * more) and the mask of those that count: most places that pass the
     * tables are told apart with one compare */
    uint32_t       head[NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI];
    uint32_t       head_mask[NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI];
    /* the bytes looked up: four when every literal has four */
    unsigned       width;
    unsigned       simd:2;   /* 2: AVX2, 1: SSSE3, 0: neither */
} ngx_http_ai_gateway_prefilter_multi_t;


void ngx_http_ai_gateway_prefilter_init(ngx_http_ai_gateway_prefilter_t *pf,
    const unsigned char *pattern, size_t len);

/* dst gets src with ASCII letters lowercased (dst may be src) */
void ngx_http_ai_gateway_prefilter_lower(unsigned char *dst,
    const unsigned char *src, size_t len);

/* 0: the text (lowercased) holds none of the literals, no match is
 * possible; 1: it may match */
int ngx_http_ai_gateway_prefilter_test(
    const ngx_http_ai_gateway_prefilter_t *pf, const unsigned char *lower,
    size_t len);

/* m zeroed: empty.  _add() returns the literal's index (the same for the
 * same literal), -1 when it does not fit; _compile() after the last */
int ngx_http_ai_gateway_prefilter_multi_add(
    ngx_http_ai_gateway_prefilter_multi_t *m, const unsigned char *lit,
    size_t len);
void ngx_http_ai_gateway_prefilter_multi_compile(
    ngx_http_ai_gateway_prefilter_multi_t *m);

/* bit i set: literal i occurs in the text (lowercased) */
uint64_t ngx_http_ai_gateway_prefilter_multi_scan(
    const ngx_http_ai_gateway_prefilter_multi_t *m,
    const unsigned char *lower, size_t len);

/* the first occurrence of lit (n bytes) in text, exactly, or NULL */
const unsigned char *ngx_http_ai_gateway_prefilter_find(
    const unsigned char *text, size_t len, const unsigned char *lit,
    size_t n);


#endif /* _NGX_HTTP_AI_GATEWAY_PREFILTER_H_INCLUDED_ */
