
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Guardrail text engines, on decoded UTF-8 text: PII detectors combined in
 * one left-to-right scan, masking with "[REDACTED_<LABEL>]", and a keyword
 * engine (Aho-Corasick on word boundaries).  All of them run in time linear
 * in the length of the text, whatever the text, and the scans allocate
 * nothing.  No nginx dependency: unit-tested alone (t/unit/test_pii.c).
 *
 * What the detectors take (the .c file says why for each rule):
 *
 *   email   local@domain.tld: the local part is the run of [A-Za-z0-9._%+-]
 *           before the '@' (after its last "..", a single leading dot
 *           dropped), 1-64 bytes, not ending with a dot; the domain has at
 *           least two labels of [A-Za-z0-9-] (1-63 bytes, no '-' at either
 *           end), at most 253 bytes, and ends with its last label of two or
 *           more letters ("a@b.example.123" gives "a@b.example").
 *   phone   '+', a digit 1-9, then digit groups, 8-15 digits in all: the
 *           groups separated by one ' ', '-' or '.' (after a '-' or a '.',
 *           only that one again), one of them may be in parentheses
 *           ("+44 (0)20 7946 0958"), those after the second have two or
 *           more digits, and a sequence of more than 15 digits is no phone
 *           number.  Or North American 3-3-4: "(555) 123-4567",
 *           "555-123-4567", "555.123.4567", "555 123 4567" (one separator
 *           for both places), optionally after "1-", "1 " or "1.".  A bare
 *           run of digits without '+' is not a phone: order numbers, ids and
 *           timestamps look the same.
 *   ssn     "AAA-GG-SSSS" or "AAA GG SSSS", area not 000, 666 or 900-999,
 *           group not 00, serial not 0000.
 *   card    13-19 digits, contiguous or grouped by one kind of separator
 *           (' ' or '-') as 4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4 or 4-4-5, with
 *           no group before and none after but for one of 1-3 digits after
 *           a space ("4111 1111 1111 1111 12/25"); Luhn-valid, with a known
 *           IIN: Visa 4, Mastercard 51-55 and 2221-2720, Amex 34 and 37,
 *           Discover 6011, 644-649 and 65, JCB 3528-3589, Diners 300-305,
 *           36 and 38, UnionPay 62.
 *   iban    two upper-case letters of a country of the IBAN registry, two
 *           check digits (not 00, 01 or 99), the BBAN in upper case, the
 *           length of that country, compact or in groups of four separated
 *           by single spaces, mod-97 == 1.
 *   ipv4    a dotted quad of 0-255 without leading zeros, not preceded by a
 *           word character or a dot ("v1.2.3.4" is a version), not followed
 *           by a word character or by a dot and a digit ("1.2.3.4.5").
 *   ipv6    RFC 4291 text forms with at most one "::", 8 groups without it,
 *           an optional dotted quad for the last 32 bits ("::ffff:1.2.3.4"),
 *           at least one decimal digit in it ("dead::beef" and "Abc::Def"
 *           are taken for code), and not "::" alone.
 *   secret  PEM private keys, from "-----BEGIN <...PRIVATE KEY...>-----" to
 *           the next "-----END <label>-----", or to the end of the text when
 *           there is none (a key cut short is still a key); AWS access keys
 *           (AKIA or ASIA and 16 [A-Z0-9]); "sk-" and 20 or more
 *           [A-Za-z0-9_-] (OpenAI, "sk-proj-", Anthropic "sk-ant-");
 *           GitHub "ghp_" (also gho_, ghu_, ghs_, ghr_) and 36 [A-Za-z0-9],
 *           "github_pat_" and 22 or more [A-Za-z0-9_]; Google "AIza" and 35
 *           [A-Za-z0-9_-]; Slack "xox[abprs]-" and 20 or more [A-Za-z0-9_-];
 *           JWTs: three or more dot-separated base64url segments of 10 or
 *           more bytes each, the first starting "eyJ".
 *
 * Boundaries: all but PEM blocks must not be glued to a word character
 * [A-Za-z0-9_] on either side; numbers must not continue a number ("12-",
 * "1.", "+" before them, "-5" or ".5" after them).  Bytes >= 0x80 count as
 * boundaries here, so that PII written next to CJK or other text without
 * spaces is found.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_PII_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_PII_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


typedef enum {
    NGX_HTTP_AI_GATEWAY_PII_EMAIL = 0,
    NGX_HTTP_AI_GATEWAY_PII_PHONE,
    NGX_HTTP_AI_GATEWAY_PII_SSN,
    NGX_HTTP_AI_GATEWAY_PII_CARD,
    NGX_HTTP_AI_GATEWAY_PII_IBAN,
    NGX_HTTP_AI_GATEWAY_PII_IPV4,
    NGX_HTTP_AI_GATEWAY_PII_IPV6,
    NGX_HTTP_AI_GATEWAY_PII_SECRET,
    NGX_HTTP_AI_GATEWAY_PII_NTYPES
} ngx_http_ai_gateway_pii_type_e;


#define NGX_HTTP_AI_GATEWAY_PII_BIT(type)  (1u << (type))
#define NGX_HTTP_AI_GATEWAY_PII_ALL                                           \
    ((1u << NGX_HTTP_AI_GATEWAY_PII_NTYPES) - 1)

/*
 * A large enough output for masking len bytes: a match is at least 3 bytes
 * long ("::1") and its replacement at most 5 times as long as the match
 * ("[REDACTED_IPV6]" for 3 bytes, "[REDACTED_SECRET]" for 20 or more).
 */
#define NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len)  ((len) * 5)


typedef struct {
    size_t  start;
    size_t  end;            /* one past the last byte */
    int     type;
} ngx_http_ai_gateway_pii_match_t;


/* returns 0 to go on, anything else to stop the scan (which returns it) */
typedef int (*ngx_http_ai_gateway_pii_pt)(void *data,
    ngx_http_ai_gateway_pii_match_t *m);


/* "email", "phone", ...: the type, or -1 when the name is unknown */
int ngx_http_ai_gateway_pii_type(const unsigned char *name, size_t len);
/* "email", "phone", ...; NULL for a type out of range */
const char *ngx_http_ai_gateway_pii_name(int type);
/* "EMAIL", "PHONE", ... as in "[REDACTED_EMAIL]"; NULL out of range */
const char *ngx_http_ai_gateway_pii_label(int type);

/*
 * Makes the scan's tables for types ahead of its first use (it makes them
 * itself otherwise); _simd(0) turns the AVX2 steps off (the 16-byte ones
 * remain), _simd(1) back on where the CPU has AVX2: for the tests, which
 * check both.
 */
void ngx_http_ai_gateway_pii_prepare(unsigned types);
void ngx_http_ai_gateway_pii_simd(int on);

/*
 * Reports the matches of the types in the bitmask, left to right and not
 * overlapping: at each position the longest match that starts there wins,
 * on a tie the type that comes first in the enum; the scan goes on after
 * its end.  Returns 0, or what the callback returned to stop.
 */
int ngx_http_ai_gateway_pii_scan(const unsigned char *p, size_t len,
    unsigned types, ngx_http_ai_gateway_pii_pt cb, void *data);

/*
 * Writes the text with each match replaced by "[REDACTED_<LABEL>]" to out
 * (NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len) bytes), or only measures it when
 * out is NULL.  Returns the output's length; the number of matches goes to
 * *count when count is not NULL.
 */
size_t ngx_http_ai_gateway_pii_mask(const unsigned char *p, size_t len,
    unsigned types, unsigned char *out, size_t *count);


/*
 * Keywords and phrases, matched case-insensitively (ASCII letters folded,
 * other bytes compared exactly), on word boundaries: a keyword that starts
 * (ends) with an ASCII word character [A-Za-z0-9_] matches only where the
 * text byte before (after) it is not a word byte, or at the start (end) of
 * the text.  Word bytes are [A-Za-z0-9_] and the bytes of UTF-8 sequences
 * (>= 0x80), so "ass" matches neither "class" nor "assé", while a keyword
 * that starts or ends with a non-ASCII character needs no boundary on that
 * side (so "炸弹" is found in CJK text, which has no spaces).  A run of
 * white space (space, \t, \n, \v, \f, \r) in a keyword or in the text counts
 * as one space: "kill  you" and "kill\nyou" match the phrase "kill you".
 *
 * Build: create, add, compile (after which add fails); then find and scan
 * from any number of callers.  Memory comes from the allocator given to
 * create (malloc and free when NULL); free() may be NULL, for a pool.  The
 * automaton takes 4 * states * (classes + 2) bytes and 16 KiB for a
 * prefilter: states are at most the keywords' bytes and one more for each
 * word start in them, classes the distinct bytes of all keywords
 * (case-folded) plus two.  Matching takes 2 KiB of stack and allocates
 * nothing.
 */

#define NGX_HTTP_AI_GATEWAY_KW_MAX_LEN    256  /* after white space folding */

#define NGX_HTTP_AI_GATEWAY_KW_EMPTY     -1
#define NGX_HTTP_AI_GATEWAY_KW_TOO_LONG  -2
#define NGX_HTTP_AI_GATEWAY_KW_NOMEM     -3
#define NGX_HTTP_AI_GATEWAY_KW_COMPILED  -4
#define NGX_HTTP_AI_GATEWAY_KW_TOO_MANY  -5


typedef struct {
    void   *(*alloc)(void *data, size_t size);
    void    (*free)(void *data, void *p);
    void     *data;
} ngx_http_ai_gateway_kw_allocator_t;

typedef struct ngx_http_ai_gateway_kw_s  ngx_http_ai_gateway_kw_t;

/* called for each occurrence; returns 0 to go on, anything else to stop */
typedef int (*ngx_http_ai_gateway_kw_pt)(void *data, size_t start,
    size_t end, int index);


ngx_http_ai_gateway_kw_t *ngx_http_ai_gateway_kw_create(
    const ngx_http_ai_gateway_kw_allocator_t *allocator);

/*
 * Returns the keyword's index (0, 1, ... in the order of addition; a
 * keyword added again, up to case and white space, keeps its first index),
 * or NGX_HTTP_AI_GATEWAY_KW_EMPTY (nothing but white space), _TOO_LONG,
 * _NOMEM, _COMPILED.
 */
int ngx_http_ai_gateway_kw_add(ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *word, size_t len);

/* returns 0, or NGX_HTTP_AI_GATEWAY_KW_NOMEM or _TOO_MANY */
int ngx_http_ai_gateway_kw_compile(ngx_http_ai_gateway_kw_t *kw);

/* after _compile(): 0 turns the AVX2 steps of the prefilter off (the
 * 16-byte ones remain), 1 back on where the CPU has AVX2; for the tests,
 * which check both against a reference */
void ngx_http_ai_gateway_kw_simd(ngx_http_ai_gateway_kw_t *kw, int on);

/*
 * The leftmost occurrence (the longest of those that start there): returns
 * 1 and sets [*start, *end) and *index, or returns 0.  An empty or not yet
 * compiled set finds nothing.
 */
int ngx_http_ai_gateway_kw_find(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t *start, size_t *end,
    int *index);

/*
 * Every occurrence, overlapping ones included, in the order of their ends
 * (longest first for one end).  Returns 0, or what the callback returned.
 */
int ngx_http_ai_gateway_kw_scan(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, ngx_http_ai_gateway_kw_pt cb,
    void *data);

void ngx_http_ai_gateway_kw_free(ngx_http_ai_gateway_kw_t *kw);


#endif /* _NGX_HTTP_AI_GATEWAY_PII_H_INCLUDED_ */
