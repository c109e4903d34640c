
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Guardrails: the configuration of one direction and the inspection of
 * texts and JSON documents (ngx_http_ai_gateway_guard.c), the output side
 * on answers and streams (ngx_http_ai_gateway_guard_out.c).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_GUARD_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_GUARD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "ngx_http_ai_gateway_pii.h"
#include "ngx_http_ai_gateway_prefilter.h"


#define NGX_HTTP_AI_GATEWAY_GUARD_NONE   0
#define NGX_HTTP_AI_GATEWAY_GUARD_BLOCK  1
#define NGX_HTTP_AI_GATEWAY_GUARD_MASK   2

#define NGX_HTTP_AI_GATEWAY_GUARD_ALLOW  0
#define NGX_HTTP_AI_GATEWAY_GUARD_DENY   1

/* PCRE2 limits: a pattern that needs more is an error, not a hang */
#define NGX_HTTP_AI_GATEWAY_GUARD_MATCH_LIMIT  1000000
#define NGX_HTTP_AI_GATEWAY_GUARD_DEPTH_LIMIT  10000


typedef struct {
    pcre2_code                  *code;
    pcre2_match_data            *match;
    pcre2_match_context         *mctx;
    ngx_uint_t                   line;
    /* the literals a match needs (_prefilter.h): texts lacking them are
     * passed over without running the pattern */
    ngx_http_ai_gateway_prefilter_t  pf;
    /* each set of pf as literals of the list's scan (multi): when the
     * pattern's literals all found room there */
    uint64_t                     sets[NGX_HTTP_AI_GATEWAY_PREFILTER_AND];
    unsigned                     multi:1;
} ngx_http_ai_gateway_guard_pattern_t;


/* the patterns of a file (deny or allow), and their literals, looked for
 * in one pass over a text before any pattern runs */
typedef struct {
    ngx_array_t                             patterns;
    ngx_http_ai_gateway_prefilter_multi_t   lits;
} ngx_http_ai_gateway_guard_list_t;


struct ngx_http_ai_gateway_guard_s {
    ngx_uint_t                   pii;          /* NONE, BLOCK, MASK */
    unsigned                     pii_types;
    ngx_http_ai_gateway_kw_t    *keywords;
    ngx_http_ai_gateway_guard_list_t  *deny;
    ngx_http_ai_gateway_guard_list_t  *allow;
    ngx_str_t                    safety;       /* a location's URI */
    ngx_uint_t                   on_error;
    unsigned                     output:1;
};


/* one inspection: what it found */
typedef struct {
    ngx_http_ai_gateway_guard_t *guard;
    ngx_pool_t                  *pool;
    const char                  *category;     /* of a block or an error */
    ngx_uint_t                   line;         /* of the pattern */
    ngx_str_t                    masked;       /* the last text, masked */
    ngx_str_t                    document;     /* the JSON, masked */
    size_t                       inspected;    /* bytes of text */
    ngx_uint_t                   masks;
    unsigned                     mask_types;
    void                        *texts;        /* json_t array, for safety */
    unsigned                     allowed:1;
} ngx_http_ai_gateway_guard_scan_t;


ngx_int_t ngx_http_ai_gateway_guard_text(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len);
ngx_int_t ngx_http_ai_gateway_guard_json(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len);
/* a JSON string's bytes (no quotes), decoded; NGX_ERROR for bad escapes */
ngx_int_t ngx_http_ai_gateway_guard_decode(ngx_pool_t *pool, const u_char *p,
    const u_char *end, ngx_str_t *out);
ngx_int_t ngx_http_ai_gateway_guard_json_all(
    ngx_http_ai_gateway_guard_scan_t *s, const u_char *p, size_t len);
ngx_int_t ngx_http_ai_gateway_guard_match(
    ngx_http_ai_gateway_guard_list_t *list, const u_char *p, size_t len,
    ngx_uint_t *line);
unsigned ngx_http_ai_gateway_guard_mask_types(const u_char *p, size_t len,
    unsigned types);
const char *ngx_http_ai_gateway_guard_pii_category(int type);


#endif /* _NGX_HTTP_AI_GATEWAY_GUARD_H_INCLUDED_ */
