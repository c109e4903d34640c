
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * PII scan.  Every match starts either at the start of the text, after a
 * byte that is not a word byte [A-Za-z0-9_], or (PEM blocks) at a '-': so
 * the scan looks at word starts and punctuation only, and skips the rest of
 * a word once nothing started at its first byte.  At a candidate position a
 * table gives the detectors that can start with its byte, and each one
 * looks ahead a bounded number of bytes (a few dozen at most: a card's
 * groups, an IBAN, an IPv6 address) or consumes what it reads:
 *
 *   - e-mail addresses are found from their '@': the next '@' is searched
 *     once (memchr), the address around it worked out once (at most 65
 *     bytes back, 253 forward), and the scan takes it when it reaches its
 *     start, so a long local part is not read again from each byte;
 *   - the unbounded secrets ("sk-...", JWTs, PEM blocks) either match all
 *     they read, or fail within a bounded number of bytes, or (JWTs) fail
 *     after segments that no other JWT can start in, since a JWT must not
 *     follow a base64url byte or a dot.
 *
 * So each byte is read a bounded number of times, and the callback gets
 * the matches in order.  The rules for each type are in the header.
 *
 * Between candidates the scan skips: a byte can start a match only if a
 * detector takes it and the byte after it (the tests that the filter
 * below starts with: "be" is no IPv6 address, "sh" no secret), so with
 * SSE2 the positions of such first bytes at word starts are found 32
 * bytes a step, and only those are looked up; ordinary text costs a few
 * instructions a byte.  In numbers and lists the next candidate is near,
 * and 16 bytes are looked at one by one first.  The scan still looks at
 * every position where a match can start, where an address starts, and
 * after each '@' (to find the next one).
 *
 * The keyword engine is at the end of this file.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_pii.h"

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_PII_NO_SIMD)
#define NGX_HTTP_AI_GATEWAY_PII_SSE2  1
#include <emmintrin.h>
#endif

/* AVX2, in functions compiled for it and called only when the CPU has it */
#if (NGX_HTTP_AI_GATEWAY_PII_SSE2) && defined(__GNUC__)                       \
    && defined(__x86_64__)
#define NGX_HTTP_AI_GATEWAY_PII_AVX2  1
#include "ngx_http_ai_gateway_simd.h"
#endif


/* byte classes */
#define NGX_HTTP_AI_GATEWAY_PII_DIGIT  0x01
#define NGX_HTTP_AI_GATEWAY_PII_UPPER  0x02
#define NGX_HTTP_AI_GATEWAY_PII_LOWER  0x04
#define NGX_HTTP_AI_GATEWAY_PII_HEX    0x08
#define NGX_HTTP_AI_GATEWAY_PII_WORD   0x10    /* [A-Za-z0-9_] */
#define NGX_HTTP_AI_GATEWAY_PII_LOCAL  0x20    /* [A-Za-z0-9._%+-] */
#define NGX_HTTP_AI_GATEWAY_PII_B64    0x40    /* [A-Za-z0-9_-] */
#define NGX_HTTP_AI_GATEWAY_PII_LABEL  0x80    /* [A-Za-z0-9-] */

#define ngx_http_ai_gateway_pii_is(c, bits)                                   \
    (ngx_http_ai_gateway_pii_cls[(unsigned char) (c)] & (bits))

#define ngx_http_ai_gateway_pii_isdigit(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_DIGIT)
#define ngx_http_ai_gateway_pii_isword(c)                                     \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_WORD)
#define ngx_http_ai_gateway_pii_isupper(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_UPPER)
#define ngx_http_ai_gateway_pii_ishex(c)                                      \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_HEX)
#define ngx_http_ai_gateway_pii_isb64(c)                                      \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_B64)
#define ngx_http_ai_gateway_pii_islabel(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_LABEL)
#define ngx_http_ai_gateway_pii_islocal(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_LOCAL)
#define ngx_http_ai_gateway_pii_isalpha(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_UPPER               \
                                  |NGX_HTTP_AI_GATEWAY_PII_LOWER)
#define ngx_http_ai_gateway_pii_isupnum(c)                                    \
    ngx_http_ai_gateway_pii_is(c, NGX_HTTP_AI_GATEWAY_PII_UPPER               \
                                  |NGX_HTTP_AI_GATEWAY_PII_DIGIT)

#define NGX_HTTP_AI_GATEWAY_PII_T(type)                                       \
    NGX_HTTP_AI_GATEWAY_PII_BIT(NGX_HTTP_AI_GATEWAY_PII_##type)

/* the SIMD skip apart from the scan (for registers), small helpers inline */
#if defined(__GNUC__)
#define ngx_http_ai_gateway_pii_noinline  __attribute__((noinline))
#define ngx_http_ai_gateway_pii_inline    inline __attribute__((always_inline))
#else
#define ngx_http_ai_gateway_pii_noinline
#define ngx_http_ai_gateway_pii_inline    inline
#endif


typedef struct {
    const unsigned char  *p;
    size_t                len;
    /* the first '@' at or after the scan position (len: none), and the
     * address around it, [email_start, email_end); email_end 0: none */
    size_t                at;
    size_t                email_start;
    size_t                email_end;
    /* where the skip stops: the address's start, else after the '@' */
    size_t                stop;
} ngx_http_ai_gateway_pii_scan_t;


typedef struct {
    const unsigned char  *p;
    unsigned char        *out;
    size_t                pos;      /* the text is copied up to here */
    size_t                len;      /* of the output */
    size_t                count;
} ngx_http_ai_gateway_pii_mask_t;


static size_t ngx_http_ai_gateway_pii_skip(ngx_http_ai_gateway_pii_scan_t *s,
    size_t i, unsigned types);
static ngx_http_ai_gateway_pii_noinline size_t ngx_http_ai_gateway_pii_next(
    const unsigned char *p, size_t len, size_t i, size_t lim, unsigned types);
static ngx_http_ai_gateway_pii_inline int ngx_http_ai_gateway_pii_cand(
    const unsigned char *p, size_t len, size_t j, unsigned types);
#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
static size_t ngx_http_ai_gateway_pii_next32(const unsigned char *p,
    size_t len, size_t *at, size_t lim, unsigned types);
#endif

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
typedef struct ngx_http_ai_gateway_pii_pairs_s  ngx_http_ai_gateway_pii_pairs_t;
static const ngx_http_ai_gateway_pii_pairs_t *ngx_http_ai_gateway_pii_pairs(
    unsigned types);
#endif

/* -1: not asked of the CPU yet */
static int  ngx_http_ai_gateway_pii_avx2 = -1;

static ngx_http_ai_gateway_pii_inline size_t ngx_http_ai_gateway_pii_bytes(
    const unsigned char *p, size_t len, size_t i, size_t lim, unsigned types);
#if (NGX_HTTP_AI_GATEWAY_PII_SSE2)
static ngx_http_ai_gateway_pii_inline void ngx_http_ai_gateway_pii_classify(
    const unsigned char *p, uint32_t *word, uint32_t *lead, uint32_t *punct);
#endif
static int ngx_http_ai_gateway_pii_maybe(const unsigned char *p, size_t len,
    size_t i, unsigned m);
static unsigned ngx_http_ai_gateway_pii_filter(const unsigned char *p,
    size_t len, size_t i, unsigned m);
static unsigned ngx_http_ai_gateway_pii_filter_ipv6(const unsigned char *p,
    size_t len, size_t i, unsigned m);
static void ngx_http_ai_gateway_pii_email(ngx_http_ai_gateway_pii_scan_t *s,
    size_t i);
static void ngx_http_ai_gateway_pii_address(ngx_http_ai_gateway_pii_scan_t *s,
    size_t i);
static size_t ngx_http_ai_gateway_pii_phone(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_intl(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_nanp(const unsigned char *p,
    size_t len, size_t i, int after_prefix);
static size_t ngx_http_ai_gateway_pii_ssn(const unsigned char *p, size_t len,
    size_t i);
static size_t ngx_http_ai_gateway_pii_card(const unsigned char *p,
    size_t len, size_t i);
static int ngx_http_ai_gateway_pii_card_valid(const unsigned char *d,
    size_t n);
static size_t ngx_http_ai_gateway_pii_iban(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_ipv4(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_quad(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_ipv6(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_secret(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_pem(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_pem_label(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_jwt(const unsigned char *p,
    size_t len, size_t i);
static size_t ngx_http_ai_gateway_pii_digits(const unsigned char *p,
    size_t len, size_t i, size_t max);
static size_t ngx_http_ai_gateway_pii_run(const unsigned char *p,
    size_t len, size_t i, unsigned cls);
static int ngx_http_ai_gateway_pii_num_left(const unsigned char *p,
    size_t i);
static int ngx_http_ai_gateway_pii_num_right(const unsigned char *p,
    size_t len, size_t e);
static int ngx_http_ai_gateway_pii_mask_match(void *data,
    ngx_http_ai_gateway_pii_match_t *m);


static const struct {
    const char  *name;
    const char  *label;
    const char  *redacted;
    size_t       redacted_len;
} ngx_http_ai_gateway_pii_types[] = {
    { "email",  "EMAIL",  "[REDACTED_EMAIL]",  16 },
    { "phone",  "PHONE",  "[REDACTED_PHONE]",  16 },
    { "ssn",    "SSN",    "[REDACTED_SSN]",    14 },
    { "card",   "CARD",   "[REDACTED_CARD]",   15 },
    { "iban",   "IBAN",   "[REDACTED_IBAN]",   15 },
    { "ipv4",   "IPV4",   "[REDACTED_IPV4]",   15 },
    { "ipv6",   "IPV6",   "[REDACTED_IPV6]",   15 },
    { "secret", "SECRET", "[REDACTED_SECRET]", 17 },
};


/* the byte classes above, of 0x00-0x7f; the bytes >= 0x80 have none */

static const unsigned char  ngx_http_ai_gateway_pii_cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00,     /*  !"#$%&' */
    0x00, 0x00, 0x00, 0x20, 0x00, 0xe0, 0x20, 0x00,     /* ()*+,-./ */
    0xf9, 0xf9, 0xf9, 0xf9, 0xf9, 0xf9, 0xf9, 0xf9,     /* 01234567 */
    0xf9, 0xf9, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 89:;<=>? */
    0x00, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xf2,     /* @ABCDEFG */
    0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2,     /* HIJKLMNO */
    0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2,     /* PQRSTUVW */
    0xf2, 0xf2, 0xf2, 0x00, 0x00, 0x00, 0x00, 0x70,     /* XYZ[\]^_ */
    0x00, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xf4,     /* `abcdefg */
    0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4,     /* hijklmno */
    0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4, 0xf4,     /* pqrstuvw */
    0xf4, 0xf4, 0xf4, 0x00, 0x00, 0x00, 0x00, 0x00,     /* xyz{|}~  */
};


/*
 * The types whose matches can start with a byte (the bits of
 * NGX_HTTP_AI_GATEWAY_PII_BIT()); e-mail addresses are found from their
 * '@' instead
 */

static const unsigned char  ngx_http_ai_gateway_pii_start[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /*  !"#$%&' */
    0x02, 0x00, 0x00, 0x02, 0x00, 0x80, 0x00, 0x00,     /* ()*+,-./ */
    0x6e, 0x6e, 0x6e, 0x6e, 0x6e, 0x6e, 0x6e, 0x6e,     /* 01234567 */
    0x6e, 0x6e, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 89:;<=>? */
    0x00, 0xd0, 0x50, 0x50, 0x50, 0x50, 0x50, 0x10,     /* @ABCDEFG */
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,     /* HIJKLMNO */
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,     /* PQRSTUVW */
    0x10, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,     /* XYZ[\]^_ */
    0x00, 0x40, 0x40, 0x40, 0x40, 0xc0, 0x40, 0x80,     /* `abcdefg */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* hijklmno */
    0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,     /* pqrstuvw */
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* xyz{|}~  */
};


/*
 * The first two bytes of secrets: a bit for each kind, set for its first
 * and for its second bytes ("-----", "AKIA", "ASIA", "AIza", "sk-",
 * "eyJ", "ghp_", "github_pat_", "xox"); no byte is both a first and a
 * second one of different kinds; the bytes >= 0x80 have none.
 */

static const unsigned char  ngx_http_ai_gateway_pii_sec[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /*  !"#$%&' */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,     /* ()*+,-./ */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 01234567 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 89:;<=>? */
    0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* @ABCDEFG */
    0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,     /* HIJKLMNO */
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,     /* PQRSTUVW */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* XYZ[\]^_ */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x10,     /* `abcdefg */
    0x10, 0x10, 0x00, 0x04, 0x00, 0x00, 0x00, 0x20,     /* hijklmno */
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,     /* pqrstuvw */
    0x20, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* xyz{|}~  */
};


/*
 * The types that a byte can be the second byte of, for those that ask for
 * one: IPv6 addresses a hex digit or ':', IBANs an upper case letter,
 * secrets one of "-KSIkyhio"; the others take any (the bytes >= 0x80 are
 * none of those)
 */

#define NGX_HTTP_AI_GATEWAY_PII_ANY_SECOND                                    \
    (NGX_HTTP_AI_GATEWAY_PII_ALL & ~(NGX_HTTP_AI_GATEWAY_PII_T(IPV6)          \
                                     | NGX_HTTP_AI_GATEWAY_PII_T(IBAN)        \
                                     | NGX_HTTP_AI_GATEWAY_PII_T(SECRET)))

/*
 * The types that the bytes c d can start (secrets: those of "sk", "sh",
 * "ek"..., the rest is for ngx_http_ai_gateway_pii_maybe())
 */
#define ngx_http_ai_gateway_pii_pair(c, d, types)                             \
    (ngx_http_ai_gateway_pii_start[c] & (types)                               \
     & (ngx_http_ai_gateway_pii_second[d] | NGX_HTTP_AI_GATEWAY_PII_ANY_SECOND))

/* m: the pair's types; only the secrets of the wrong first byte: none */
#define ngx_http_ai_gateway_pii_pair_ok(m, c, d)                              \
    ((m) != NGX_HTTP_AI_GATEWAY_PII_T(SECRET)                                 \
     || (ngx_http_ai_gateway_pii_sec[c] & ngx_http_ai_gateway_pii_sec[d]))

static const unsigned char  ngx_http_ai_gateway_pii_second[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /*  !"#$%&' */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00,     /* ()*+,-./ */
    0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,     /* 01234567 */
    0x40, 0x40, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 89:;<=>? */
    0x00, 0x50, 0x50, 0x50, 0x50, 0x50, 0x50, 0x10,     /* @ABCDEFG */
    0x10, 0x90, 0x10, 0x90, 0x10, 0x10, 0x10, 0x10,     /* HIJKLMNO */
    0x10, 0x10, 0x10, 0x90, 0x10, 0x10, 0x10, 0x10,     /* PQRSTUVW */
    0x10, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,     /* XYZ[\]^_ */
    0x00, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x00,     /* `abcdefg */
    0x80, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80,     /* hijklmno */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* pqrstuvw */
    0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* xyz{|}~  */
};


/* IBAN lengths, from the SWIFT IBAN registry */

static const char  ngx_http_ai_gateway_pii_iban_lengths[][3] = {
    { 'A', 'D', 24 }, { 'A', 'E', 23 }, { 'A', 'L', 28 }, { 'A', 'T', 20 },
    { 'A', 'Z', 28 }, { 'B', 'A', 20 }, { 'B', 'E', 16 }, { 'B', 'G', 22 },
    { 'B', 'H', 22 }, { 'B', 'I', 27 }, { 'B', 'R', 29 }, { 'B', 'Y', 28 },
    { 'C', 'H', 21 }, { 'C', 'R', 22 }, { 'C', 'Y', 28 }, { 'C', 'Z', 24 },
    { 'D', 'E', 22 }, { 'D', 'J', 27 }, { 'D', 'K', 18 }, { 'D', 'O', 28 },
    { 'E', 'E', 20 }, { 'E', 'G', 29 }, { 'E', 'S', 24 }, { 'F', 'I', 18 },
    { 'F', 'K', 18 }, { 'F', 'O', 18 }, { 'F', 'R', 27 }, { 'G', 'B', 22 },
    { 'G', 'E', 22 }, { 'G', 'I', 23 }, { 'G', 'L', 18 }, { 'G', 'R', 27 },
    { 'G', 'T', 28 }, { 'H', 'N', 28 }, { 'H', 'R', 21 }, { 'H', 'U', 28 },
    { 'I', 'E', 22 }, { 'I', 'L', 23 }, { 'I', 'Q', 23 }, { 'I', 'S', 26 },
    { 'I', 'T', 27 }, { 'J', 'O', 30 }, { 'K', 'W', 30 }, { 'K', 'Z', 20 },
    { 'L', 'B', 28 }, { 'L', 'C', 32 }, { 'L', 'I', 21 }, { 'L', 'T', 20 },
    { 'L', 'U', 20 }, { 'L', 'V', 21 }, { 'L', 'Y', 25 }, { 'M', 'C', 27 },
    { 'M', 'D', 24 }, { 'M', 'E', 22 }, { 'M', 'K', 19 }, { 'M', 'N', 20 },
    { 'M', 'R', 27 }, { 'M', 'T', 31 }, { 'M', 'U', 30 }, { 'N', 'I', 28 },
    { 'N', 'L', 18 }, { 'N', 'O', 15 }, { 'O', 'M', 23 }, { 'P', 'K', 24 },
    { 'P', 'L', 28 }, { 'P', 'S', 29 }, { 'P', 'T', 25 }, { 'Q', 'A', 29 },
    { 'R', 'O', 24 }, { 'R', 'S', 22 }, { 'R', 'U', 33 }, { 'S', 'A', 24 },
    { 'S', 'C', 31 }, { 'S', 'D', 18 }, { 'S', 'E', 24 }, { 'S', 'I', 19 },
    { 'S', 'K', 24 }, { 'S', 'M', 27 }, { 'S', 'O', 23 }, { 'S', 'T', 25 },
    { 'S', 'V', 28 }, { 'T', 'L', 23 }, { 'T', 'N', 24 }, { 'T', 'R', 26 },
    { 'U', 'A', 29 }, { 'V', 'A', 22 }, { 'V', 'G', 24 }, { 'X', 'K', 20 },
    { 'Y', 'E', 30 },
};


/* card groupings, longest first (the first valid one wins): the number of
 * groups, their lengths */

static const unsigned char  ngx_http_ai_gateway_pii_card_groups[][6] = {
    { 5, 4, 4, 4, 4, 3 },
    { 4, 4, 4, 4, 4, 0 },
    { 3, 4, 6, 5, 0, 0 },
    { 3, 4, 6, 4, 0, 0 },
    { 3, 4, 4, 5, 0, 0 },
};


int
ngx_http_ai_gateway_pii_type(const unsigned char *name, size_t len)
{
    int  t;

    for (t = 0; t < NGX_HTTP_AI_GATEWAY_PII_NTYPES; t++) {
        if (strlen(ngx_http_ai_gateway_pii_types[t].name) == len
            && memcmp(ngx_http_ai_gateway_pii_types[t].name, name, len) == 0)
        {
            return t;
        }
    }

    return -1;
}


const char *
ngx_http_ai_gateway_pii_name(int type)
{
    if (type < 0 || type >= NGX_HTTP_AI_GATEWAY_PII_NTYPES) {
        return NULL;
    }

    return ngx_http_ai_gateway_pii_types[type].name;
}


const char *
ngx_http_ai_gateway_pii_label(int type)
{
    if (type < 0 || type >= NGX_HTTP_AI_GATEWAY_PII_NTYPES) {
        return NULL;
    }

    return ngx_http_ai_gateway_pii_types[type].label;
}


void
ngx_http_ai_gateway_pii_simd(int on)
{
    (void) on;

    ngx_http_ai_gateway_pii_avx2 = 0;

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
    if (on) {
        __builtin_cpu_init();
        ngx_http_ai_gateway_pii_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
#endif
}


void
ngx_http_ai_gateway_pii_prepare(unsigned types)
{
    (void) types;

    if (ngx_http_ai_gateway_pii_avx2 < 0) {
        ngx_http_ai_gateway_pii_simd(1);
    }

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
    if (ngx_http_ai_gateway_pii_avx2) {
        (void) ngx_http_ai_gateway_pii_pairs(types);
    }
#endif
}


int
ngx_http_ai_gateway_pii_scan(const unsigned char *p, size_t len,
    unsigned types, ngx_http_ai_gateway_pii_pt cb, void *data)
{
    int                              rc;
    size_t                           i, e, best;
    unsigned                         c, m, type;
    ngx_http_ai_gateway_pii_scan_t   s;
    ngx_http_ai_gateway_pii_match_t  match;

    if (ngx_http_ai_gateway_pii_avx2 < 0) {
        ngx_http_ai_gateway_pii_simd(1);
    }

    s.p = p;
    s.len = len;
    s.at = len;
    s.email_start = 0;
    s.email_end = 0;
    s.stop = len;

    if (types & NGX_HTTP_AI_GATEWAY_PII_T(EMAIL)) {
        ngx_http_ai_gateway_pii_email(&s, 0);
    }

    i = 0;

    while (i < len) {

        if (i > s.at) {
            ngx_http_ai_gateway_pii_email(&s, i);
        }

        c = p[i];
        m = ngx_http_ai_gateway_pii_start[c] & types;

        if (m) {
            m = ngx_http_ai_gateway_pii_filter(p, len, i, m);
        }

        best = 0;
        type = 0;

        if (s.email_end && s.email_start == i) {
            best = s.email_end;
            type = NGX_HTTP_AI_GATEWAY_PII_EMAIL;
        }

        if (m) {
            /* in type order: a longer match replaces, an equal one not */

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(PHONE)) {
                e = ngx_http_ai_gateway_pii_phone(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_PHONE;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(SSN)) {
                e = ngx_http_ai_gateway_pii_ssn(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_SSN;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(CARD)) {
                e = ngx_http_ai_gateway_pii_card(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_CARD;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(IBAN)) {
                e = ngx_http_ai_gateway_pii_iban(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_IBAN;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(IPV4)) {
                e = ngx_http_ai_gateway_pii_ipv4(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_IPV4;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(IPV6)) {
                e = ngx_http_ai_gateway_pii_ipv6(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_IPV6;
                }
            }

            if (m & NGX_HTTP_AI_GATEWAY_PII_T(SECRET)) {
                e = ngx_http_ai_gateway_pii_secret(p, len, i);
                if (e > best) {
                    best = e;
                    type = NGX_HTTP_AI_GATEWAY_PII_SECRET;
                }
            }
        }

        if (best) {
            match.start = i;
            match.end = best;
            match.type = type;

            rc = cb(data, &match);
            if (rc != 0) {
                return rc;
            }

            i = best;
            continue;
        }

        i = ngx_http_ai_gateway_pii_skip(&s, i + 1, types);
    }

    return 0;
}


/*
 * Where the scan looks next, from i (> 0): nothing starts in the rest of a
 * word (an address's start never follows a word byte either), so at the
 * next byte that is no word byte or starts a word, and whose type bits
 * and next byte pass the first tests of a detector of types; or where the
 * address found from the last '@' starts; or len.  After the '@' the next
 * one is looked for on the way, as the scan did from the first byte it
 * looked at after it: no '@' is skipped, being no word byte.
 */

static size_t
ngx_http_ai_gateway_pii_skip(ngx_http_ai_gateway_pii_scan_t *s, size_t i,
    unsigned types)
{
    size_t  n, lim;

    for ( ;; ) {
        lim = s->stop;

        if (lim < i) {
            /* the address's start is behind (in a match) */
            lim = (s->at < s->len) ? s->at + 1 : s->len;
            s->stop = lim;
        }

        /* in numbers and lists the next one is often near: a few bytes
         * one by one first */

        n = (lim - i > 16) ? i + 16 : lim;
        i = ngx_http_ai_gateway_pii_bytes(s->p, s->len, i, n, types);

        if (i < n) {
            return i;
        }

        if (n < lim) {
            i = ngx_http_ai_gateway_pii_next(s->p, s->len, i, lim, types);

            if (i < lim) {
                return i;
            }
        }

        /* at the address's start, at the end, or after the '@' */

        if (lim == s->len || lim != s->at + 1) {
            return lim;
        }

        ngx_http_ai_gateway_pii_email(s, lim);
    }
}


/*
 * The first position in [i, lim) that is no word byte or starts a word
 * and can start a match of types by its byte and the next, or lim.  With
 * SSE2 32 bytes a step give the positions of the bytes that may start
 * something (digits, upper case letters, a-g, s, x, ':' at word starts,
 * and '(', '+', '-'), and only those are looked up: prose has a few in 16
 * bytes, most of them no match's first bytes (" be", " de", " sh").
 */

static ngx_http_ai_gateway_pii_noinline size_t
ngx_http_ai_gateway_pii_next(const unsigned char *p, size_t len, size_t i,
    size_t lim, unsigned types)
{
#if (NGX_HTTP_AI_GATEWAY_PII_SSE2)
    size_t    j;
    uint32_t  x, w, lead, punct, cand, cin;
    unsigned  m;

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
    if (ngx_http_ai_gateway_pii_avx2) {
        j = ngx_http_ai_gateway_pii_next32(p, len, &i, lim, types);
        if (j < len) {
            return j;
        }
    }
#endif

    cin = ngx_http_ai_gateway_pii_isword(p[i - 1]) ? 1 : 0;

    /* more than 32 bytes: each candidate has a next byte */

    while (lim - i > 32) {
        ngx_http_ai_gateway_pii_classify(p + i, &w, &lead, &punct);
        ngx_http_ai_gateway_pii_classify(p + i + 16, &x, &cand, &m);

        w |= x << 16;

        /* a ':' after a word byte starts nothing: an IPv6 address
         * follows no word byte */
        cand = ((lead | cand << 16) & ~((w << 1) | cin)) | punct | m << 16;
        cin = w >> 31;

        while (cand) {
            j = i + __builtin_ctz(cand);

            if (ngx_http_ai_gateway_pii_cand(p, len, j, types)) {
                return j;
            }

            cand &= cand - 1;
        }

        i += 32;
    }
#endif

    return ngx_http_ai_gateway_pii_bytes(p, len, i, lim, types);
}


/* whether a candidate j of the SIMD steps (with a next byte) can start a
 * match of types */

static ngx_http_ai_gateway_pii_inline int
ngx_http_ai_gateway_pii_cand(const unsigned char *p, size_t len, size_t j,
    unsigned types)
{
    uint32_t  x;
    unsigned  c, d, m;

    c = p[j];
    d = p[j + 1];
    m = ngx_http_ai_gateway_pii_pair(c, d, types);

    if (m == 0 || !ngx_http_ai_gateway_pii_pair_ok(m, c, d)) {
        return 0;
    }

    x = 1;

    if (m == NGX_HTTP_AI_GATEWAY_PII_T(IPV6) && len - j >= 5) {
        /* a ':' in the next 4 bytes: a zero byte of x */
        memcpy(&x, p + j + 1, 4);
        x ^= 0x3a3a3a3a;
        x = (x - 0x01010101) & ~x & 0x80808080;
    }

    return x && ngx_http_ai_gateway_pii_maybe(p, len, j, m);
}


#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)

/*
 * The pairs of bytes c d that pass ngx_http_ai_gateway_pii_cand()'s first
 * test for types, as nibble tables (the "Teddy" scheme of the guard's
 * literal prefilter, _prefilter.c): bit b of lo[j][x] says that a pair
 * of bucket b (by its first byte: digits, upper case letters, four groups
 * of lower case ones: a-f, the hex digits of IPv6 addresses, apart from
 * the letters of few pairs, so that prose passes less; three of the rest)
 * has a byte j with the low nibble
 * x.  A superset of the pairs: made once a process for each set of types
 * asked for, on first use.
 */

struct ngx_http_ai_gateway_pii_pairs_s {
    unsigned char  lo[2][16];
    unsigned char  hi[2][16];
    unsigned char  made;
};

static ngx_http_ai_gateway_pii_pairs_t
    ngx_http_ai_gateway_pii_pairs_of[NGX_HTTP_AI_GATEWAY_PII_ALL + 1];


static const ngx_http_ai_gateway_pii_pairs_t *
ngx_http_ai_gateway_pii_pairs(unsigned types)
{
    unsigned                          c, d, k, m, bit, lower;
    ngx_http_ai_gateway_pii_pairs_t  *t;

    t = &ngx_http_ai_gateway_pii_pairs_of[types & NGX_HTTP_AI_GATEWAY_PII_ALL];

    if (t->made) {
        return t;
    }

    for (c = 0; c < 256; c++) {
        for (d = 0; d < 256; d++) {
            m = ngx_http_ai_gateway_pii_pair(c, d, types);

            if (m == 0 || !ngx_http_ai_gateway_pii_pair_ok(m, c, d)) {
                continue;
            }

            /*
             * The bucket by the type and the first byte: the pairs of a
             * type are alike, and a bucket of mixed ones would pass their
             * crossings (IPv6's "e" and hex digits with the secrets' "y"
             * pass "er", "ex", "es")
             */
            for (k = 0; k < NGX_HTTP_AI_GATEWAY_PII_NTYPES; k++) {
                if (!(m & NGX_HTTP_AI_GATEWAY_PII_BIT(k))) {
                    continue;
                }

                lower = (c >= 'a' && c <= 'z');

                bit = (k == NGX_HTTP_AI_GATEWAY_PII_IPV6) ? 2 + lower
                      : (k == NGX_HTTP_AI_GATEWAY_PII_SECRET) ? 4 + lower
                      : (k == NGX_HTTP_AI_GATEWAY_PII_IBAN) ? 6
                      : (c >= '0' && c <= '9') ? 0
                      : (c >= 'A' && c <= 'Z') ? 7 : 1;
                bit = 1u << bit;

                t->lo[0][c & 0x0f] |= bit;
                t->hi[0][c >> 4] |= bit;
                t->lo[1][d & 0x0f] |= bit;
                t->hi[1][d >> 4] |= bit;
            }
        }
    }

    t->made = 1;

    return t;
}




/*
 * ngx_http_ai_gateway_pii_next()'s steps with AVX2, from *at: the same
 * candidates, of which only those whose pair passes the tables are looked
 * at.  Returns the first that can start a match, or len with *at where
 * the steps stopped.
 */

__attribute__((target("avx2")))
static size_t
ngx_http_ai_gateway_pii_next32(const unsigned char *p, size_t len,
    size_t *at, size_t lim, unsigned types)
{
    size_t                                  i, j;
    uint32_t                                w, punct, cand, cin, pass;
    __m256i                                 v, next, nib, r, lo0, hi0, lo1,
                                            hi1;
    const ngx_http_ai_gateway_pii_pairs_t  *t;

    t = ngx_http_ai_gateway_pii_pairs(types);

    lo0 = ngx_http_ai_gateway_simd_table(t->lo[0]);
    hi0 = ngx_http_ai_gateway_simd_table(t->hi[0]);
    lo1 = ngx_http_ai_gateway_simd_table(t->lo[1]);
    hi1 = ngx_http_ai_gateway_simd_table(t->hi[1]);
    nib = _mm256_set1_epi8(0x0f);

    i = *at;
    cin = ngx_http_ai_gateway_pii_isword(p[i - 1]) ? 1 : 0;

    /* more than 32 bytes: each candidate has a next byte */

    for ( /* void */ ; lim - i > 32; i += 32) {
        v = _mm256_loadu_si256((const __m256i *) (p + i));

        /* word bytes and '('-'-', as ngx_http_ai_gateway_pii_classify() */

        w = (uint32_t) _mm256_movemask_epi8(ngx_http_ai_gateway_simd_word(v));

        punct = (uint32_t) _mm256_movemask_epi8(
                    ngx_http_ai_gateway_simd_range(v, '(', '-' + 1 - '('));

        /*
         * The pairs that can start something, at word starts, and '(',
         * '+', '-' anywhere: the 16-byte steps' candidates less those whose
         * pair cannot (the tables know the first bytes, so the steps'
         * test of them is not needed)
         */
        next = _mm256_loadu_si256((const __m256i *) (p + i + 1));

        r = _mm256_and_si256(
                ngx_http_ai_gateway_simd_nibbles(lo0, hi0, v, nib),
                ngx_http_ai_gateway_simd_nibbles(lo1, hi1, next, nib));

        pass = ~(uint32_t) _mm256_movemask_epi8(
                               _mm256_cmpeq_epi8(r, _mm256_setzero_si256()));

        cand = pass & (~((w << 1) | cin) | punct);
        cin = w >> 31;

        for ( /* void */ ; cand; cand &= cand - 1) {
            j = i + __builtin_ctz(cand);

            if (ngx_http_ai_gateway_pii_cand(p, len, j, types)) {
                return j;
            }
        }
    }

    *at = i;

    return len;
}

#endif


#if (NGX_HTTP_AI_GATEWAY_PII_SSE2)

/*
 * The bits of the 16 bytes at p that are word bytes, that start something
 * at a word start ('0'-'g': digits, ':', upper case letters, a-g, and some
 * others that the table lookup drops; 's', 'x'), and that start something
 * anywhere ('('-'-': '(', '+', '-', and some others)
 */

static ngx_http_ai_gateway_pii_inline void
ngx_http_ai_gateway_pii_classify(const unsigned char *p, uint32_t *word,
    uint32_t *lead, uint32_t *punct)
{
    __m128i  v, digits;

    v = _mm_loadu_si128((const __m128i *) p);

    /* signed compares: x + 0x80 - lo < -0x80 + n for lo <= x < lo + n */

    digits = _mm_add_epi8(v, _mm_set1_epi8(0x80 - '0'));

    *word = _mm_movemask_epi8(
        _mm_or_si128(
            _mm_or_si128(_mm_cmplt_epi8(digits, _mm_set1_epi8(-0x80 + 10)),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('_'))),
            _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)),
                                        _mm_set1_epi8(0x80 - 'a')),
                           _mm_set1_epi8(-0x80 + 26))));

    *lead = _mm_movemask_epi8(
        _mm_or_si128(
            _mm_cmplt_epi8(digits, _mm_set1_epi8(-0x80 + 'g' + 1 - '0')),
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('s')),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('x')))));

    *punct = _mm_movemask_epi8(
        _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x80 - '(')),
                       _mm_set1_epi8(-0x80 + '-' + 1 - '(')));
}

#endif


/* the same, a byte a step */

static ngx_http_ai_gateway_pii_inline size_t
ngx_http_ai_gateway_pii_bytes(const unsigned char *p, size_t len, size_t i,
    size_t lim, unsigned types)
{
    unsigned  c, d, m;

    c = p[i - 1];

    for ( ;; ) {

        /* the rest of a word */

        if (ngx_http_ai_gateway_pii_isword(c)) {
            while (i < lim && ngx_http_ai_gateway_pii_isword(p[i])) {
                i++;
            }
        }

        if (i == lim) {
            return lim;
        }

        c = p[i];
        m = ngx_http_ai_gateway_pii_start[c] & types;

        if (m) {
            if (m & NGX_HTTP_AI_GATEWAY_PII_ANY_SECOND) {
                return i;
            }

            d = (i + 1 < len) ? p[i + 1] : 0;
            m &= ngx_http_ai_gateway_pii_second[d];

            if (m && ngx_http_ai_gateway_pii_pair_ok(m, c, d)
                && ngx_http_ai_gateway_pii_maybe(p, len, i, m))
            {
                return i;
            }
        }

        i++;
    }
}


/*
 * Whether a match of the types m, which pass ngx_http_ai_gateway_pii_pair(),
 * can start at i: secrets by their first two bytes together, IPv6
 * addresses by the first group: 1-4 hex digits and a ':', or "::" (prose
 * has many words like "be", "dead")
 */

static int
ngx_http_ai_gateway_pii_maybe(const unsigned char *p, size_t len, size_t i,
    unsigned m)
{
    size_t    n;
    unsigned  c, d;

    c = p[i];
    d = (i + 1 < len) ? p[i + 1] : 0;

    if (m & ~(NGX_HTTP_AI_GATEWAY_PII_T(IPV6)
              | NGX_HTTP_AI_GATEWAY_PII_T(SECRET)))
    {
        return 1;
    }

    if ((m & NGX_HTTP_AI_GATEWAY_PII_T(SECRET))
        && (ngx_http_ai_gateway_pii_sec[c] & ngx_http_ai_gateway_pii_sec[d]))
    {
        return 1;
    }

    if (!(m & NGX_HTTP_AI_GATEWAY_PII_T(IPV6))) {
        return 0;
    }

    if (c == ':') {
        return d == ':';
    }

    for (n = 1;
         n < 5 && i + n < len && ngx_http_ai_gateway_pii_ishex(p[i + n]);
         n++)
    {
        /* void */
    }

    return n < 5 && i + n < len && p[i + n] == ':';
}


/*
 * The first conditions of the detectors, cheap to test, so that most words
 * cost no call: the length of a run of digits and the byte after it, the
 * second byte of a word.  Each detector checks them again.
 */

static unsigned
ngx_http_ai_gateway_pii_filter(const unsigned char *p, size_t len, size_t i,
    unsigned m)
{
    size_t    n;
    unsigned  c, d;

    c = p[i];

    if (ngx_http_ai_gateway_pii_isdigit(c)) {
        n = ngx_http_ai_gateway_pii_digits(p, len, i, 19);
        d = (i + n < len) ? p[i + n] : 0;

        if (!((n == 3 && (d == '-' || d == '.' || d == ' '))
              || (n == 1 && c == '1' && (d == '-' || d == '.' || d == ' '))))
        {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(PHONE);
        }

        if (n != 3 || (d != '-' && d != ' ')) {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(SSN);
        }

        if (n < 13 && (n != 4 || (d != ' ' && d != '-'))) {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(CARD);
        }

        if (n > 3 || d != '.') {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(IPV4);
        }

        if (n > 4 || (d != ':' && !ngx_http_ai_gateway_pii_ishex(d))) {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(IPV6);

        } else if (d != ':' && (m & NGX_HTTP_AI_GATEWAY_PII_T(IPV6))) {
            m = ngx_http_ai_gateway_pii_filter_ipv6(p, len, i, m);
        }

        return m;
    }

    d = (i + 1 < len) ? p[i + 1] : 0;

    if ((m & NGX_HTTP_AI_GATEWAY_PII_T(IPV6)) && c != ':'
        && d != ':' && !ngx_http_ai_gateway_pii_ishex(d))
    {
        m &= ~NGX_HTTP_AI_GATEWAY_PII_T(IPV6);
    }

    if (m & NGX_HTTP_AI_GATEWAY_PII_T(IPV6)) {
        m = ngx_http_ai_gateway_pii_filter_ipv6(p, len, i, m);
    }

    if ((m & NGX_HTTP_AI_GATEWAY_PII_T(IBAN))
        && !ngx_http_ai_gateway_pii_isupper(d))
    {
        m &= ~NGX_HTTP_AI_GATEWAY_PII_T(IBAN);
    }

    if (m & NGX_HTTP_AI_GATEWAY_PII_T(SECRET)) {

        switch (c) {
        case '-':
            n = (d == '-');
            break;
        case 'A':
            n = (d == 'K' || d == 'S' || d == 'I');
            break;
        case 's':
            n = (d == 'k');
            break;
        case 'e':
            n = (d == 'y');
            break;
        case 'g':
            n = (d == 'h' || d == 'i');
            break;
        default: /* 'x' */
            n = (d == 'o');
        }

        if (!n) {
            m &= ~NGX_HTTP_AI_GATEWAY_PII_T(SECRET);
        }
    }

    return m;
}


/*
 * An address starts with "::" or with a group of 1-4 hex digits and a ':'
 * ("dead", "be", "cafe" in prose are no address)
 */

static unsigned
ngx_http_ai_gateway_pii_filter_ipv6(const unsigned char *p, size_t len,
    size_t i, unsigned m)
{
    size_t  n;

    if (p[i] == ':') {
        n = 1;

    } else {
        for (n = 0;
             n < 5 && i + n < len && ngx_http_ai_gateway_pii_ishex(p[i + n]);
             n++)
        {
            /* void */
        }

        if (n == 0 || n == 5) {
            return m & ~NGX_HTTP_AI_GATEWAY_PII_T(IPV6);
        }
    }

    if (i + n == len || p[i + n] != ':') {
        return m & ~NGX_HTTP_AI_GATEWAY_PII_T(IPV6);
    }

    return m;
}


/* finds the next '@' from i, and the address around it */

static void
ngx_http_ai_gateway_pii_email(ngx_http_ai_gateway_pii_scan_t *s, size_t i)
{
    ngx_http_ai_gateway_pii_address(s, i);

    if (s->email_end) {
        s->stop = s->email_start;

    } else {
        s->stop = (s->at < s->len) ? s->at + 1 : s->len;
    }
}


static void
ngx_http_ai_gateway_pii_address(ngx_http_ai_gateway_pii_scan_t *s,
    size_t i)
{
    size_t                at, st, j, ls, n, labels, end, len;
    unsigned              alpha;
    const unsigned char  *p, *q;

    p = s->p;
    len = s->len;

    s->email_end = 0;

    q = memchr(p + i, '@', len - i);
    if (q == NULL) {
        s->at = len;
        return;
    }

    at = q - p;
    s->at = at;

    /*
     * The local part: back over its bytes, to a ".." (it starts after
     * that), or to the first byte of the run, of which a leading dot is
     * punctuation ("see:.john@...").  Over 64 bytes it is not an address.
     */

    for (st = at; st > 0 && ngx_http_ai_gateway_pii_islocal(p[st - 1]);
         st--)
    {
        if (p[st - 1] == '.' && st < at && p[st] == '.') {
            st++;
            goto local;
        }

        if (at - st > 64) {
            return;
        }
    }

    if (st < at && p[st] == '.') {
        st++;
    }

local:

    if (st == at || at - st > 64 || p[at - 1] == '.') {
        return;
    }

    /*
     * The domain: labels, the last one of two or more letters; a label
     * that ends the domain but is no top-level domain ("a@b.example.123")
     * leaves the address before it.
     */

    j = at + 1;
    end = 0;
    labels = 0;

    for ( ;; ) {
        ls = j;
        alpha = 1;

        while (j < len && ngx_http_ai_gateway_pii_islabel(p[j])
               && j - at - 1 < 253)
        {
            if (!ngx_http_ai_gateway_pii_isalpha(p[j])) {
                alpha = 0;
            }

            j++;
        }

        n = j - ls;

        if (n == 0 || n > 63 || p[ls] == '-' || p[j - 1] == '-'
            || (j < len && ngx_http_ai_gateway_pii_islabel(p[j])))
        {
            break;
        }

        labels++;

        if (labels >= 2 && alpha && n >= 2) {
            end = j;
        }

        if (j + 1 < len && p[j] == '.'
            && ngx_http_ai_gateway_pii_islabel(p[j + 1]))
        {
            j++;
            continue;
        }

        break;
    }

    /* "a@b.example_x" is some identifier */

    if (end && !(end < len && ngx_http_ai_gateway_pii_isword(p[end]))) {
        s->email_start = st;
        s->email_end = end;
    }
}


static size_t
ngx_http_ai_gateway_pii_phone(const unsigned char *p, size_t len, size_t i)
{
    size_t  e;

    if (p[i] == '+') {
        return ngx_http_ai_gateway_pii_intl(p, len, i);
    }

    if (!ngx_http_ai_gateway_pii_num_left(p, i)) {
        return 0;
    }

    if (p[i] == '1' && i + 2 < len
        && (p[i + 1] == '-' || p[i + 1] == '.' || p[i + 1] == ' '))
    {
        e = ngx_http_ai_gateway_pii_nanp(p, len, i + 2, 1);
        if (e) {
            return e;
        }
    }

    return ngx_http_ai_gateway_pii_nanp(p, len, i, 0);
}


/*
 * "+<digits>" and groups.  The digits of all groups make the length, so a
 * sequence that goes on beyond 15 digits is some other number, not a phone
 * number with something after it.  What numbers around look like ends the
 * phone number instead: a one-digit group after the second ("+44 20 7946
 * 0958 1 item", "+1 2 3 4 5 6 7 8"), a space after a '-' or '.' separator,
 * or a '-' and a '.' in one number ("+1 234 1.2.3.4.5").
 */

static size_t
ngx_http_ai_gateway_pii_intl(const unsigned char *p, size_t len, size_t i)
{
    size_t    j, n, e, next, digits, groups;
    unsigned  paren, sep;

    if (i > 0 && (ngx_http_ai_gateway_pii_isword(p[i - 1]) || p[i - 1] == '+'))
    {
        return 0;
    }

    j = i + 1;

    if (j == len || p[j] < '1' || p[j] > '9') {
        return 0;
    }

    digits = 0;
    groups = 0;
    paren = 0;
    sep = 0;
    e = 0;

    for ( ;; ) {

        if (p[j] == '(') {
            if (paren) {
                break;
            }

            n = ngx_http_ai_gateway_pii_digits(p, len, j + 1, 4);

            if (n == 0 || n > 4 || j + 1 + n == len || p[j + 1 + n] != ')') {
                break;
            }

            paren = 1;
            next = j + n + 2;

        } else {
            n = ngx_http_ai_gateway_pii_digits(p, len, j, 15);

            if (groups >= 2 && n < 2) {
                break;
            }

            next = j + n;
        }

        digits += n;

        if (digits > 15) {
            return 0;
        }

        groups++;
        e = next;
        j = next;

        if (j + 1 < len
            && (p[j] == ' ' || p[j] == '-' || p[j] == '.')
            && (ngx_http_ai_gateway_pii_isdigit(p[j + 1]) || p[j + 1] == '('))
        {
            if (p[j] == ' ' ? sep != 0 : (sep != 0 && sep != p[j])) {
                break;
            }

            if (p[j] != ' ') {
                sep = p[j];
            }

            j++;
            continue;
        }

        /* "+1(555)...", "(0)30..." */

        if (j < len
            && (p[j] == '(' || (p[j - 1] == ')'
                                && ngx_http_ai_gateway_pii_isdigit(p[j]))))
        {
            continue;
        }

        break;
    }

    if (digits < 8 || !ngx_http_ai_gateway_pii_num_right(p, len, e)) {
        return 0;
    }

    return e;
}


/*
 * North American 3-3-4.  With spaces for separators, a digit group right
 * before or after makes it part of a longer spaced number (a card, a
 * table), not a phone number.
 */

static size_t
ngx_http_ai_gateway_pii_nanp(const unsigned char *p, size_t len, size_t i,
    int after_prefix)
{
    size_t    j, e;
    unsigned  sep, sep2;

    j = i;
    sep = 0;

    if (p[j] == '(') {
        if (ngx_http_ai_gateway_pii_digits(p, len, j + 1, 3) != 3
            || j + 4 == len || p[j + 4] != ')')
        {
            return 0;
        }

        j += 5;

        if (j < len && p[j] == ' ') {
            j++;
        }

    } else {
        if (ngx_http_ai_gateway_pii_digits(p, len, j, 3) != 3
            || j + 3 == len)
        {
            return 0;
        }

        sep = p[j + 3];

        if (sep != '-' && sep != '.' && sep != ' ') {
            return 0;
        }

        j += 4;
    }

    if (ngx_http_ai_gateway_pii_digits(p, len, j, 3) != 3 || j + 3 == len) {
        return 0;
    }

    sep2 = p[j + 3];

    if ((sep2 != '-' && sep2 != '.' && sep2 != ' ')
        || (sep && sep2 != sep))
    {
        return 0;
    }

    j += 4;

    if (ngx_http_ai_gateway_pii_digits(p, len, j, 4) != 4) {
        return 0;
    }

    e = j + 4;

    if (!ngx_http_ai_gateway_pii_num_right(p, len, e)) {
        return 0;
    }

    if (sep2 == ' ') {
        if (e + 1 < len && p[e] == ' '
            && ngx_http_ai_gateway_pii_isdigit(p[e + 1]))
        {
            return 0;
        }

        if (sep == ' ' && !after_prefix && i >= 2 && p[i - 1] == ' '
            && ngx_http_ai_gateway_pii_isdigit(p[i - 2]))
        {
            return 0;
        }
    }

    return e;
}


static size_t
ngx_http_ai_gateway_pii_ssn(const unsigned char *p, size_t len, size_t i)
{
    size_t    e;
    unsigned  sep, area, group, serial;

    if (len - i < 11 || !ngx_http_ai_gateway_pii_num_left(p, i)) {
        return 0;
    }

    sep = p[i + 3];

    if ((sep != '-' && sep != ' ') || p[i + 6] != sep
        || ngx_http_ai_gateway_pii_digits(p, len, i, 3) != 3
        || ngx_http_ai_gateway_pii_digits(p, len, i + 4, 2) != 2
        || ngx_http_ai_gateway_pii_digits(p, len, i + 7, 4) != 4)
    {
        return 0;
    }

    e = i + 11;

    if (!ngx_http_ai_gateway_pii_num_right(p, len, e)) {
        return 0;
    }

    if (sep == ' '
        && ((e + 1 < len && p[e] == ' '
             && ngx_http_ai_gateway_pii_isdigit(p[e + 1]))
            || (i >= 2 && p[i - 1] == ' '
                && ngx_http_ai_gateway_pii_isdigit(p[i - 2]))))
    {
        return 0;
    }

    area = (p[i] - '0') * 100 + (p[i + 1] - '0') * 10 + (p[i + 2] - '0');
    group = (p[i + 4] - '0') * 10 + (p[i + 5] - '0');
    serial = (p[i + 7] - '0') * 1000 + (p[i + 8] - '0') * 100
             + (p[i + 9] - '0') * 10 + (p[i + 10] - '0');

    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
    {
        return 0;
    }

    return e;
}


/*
 * Contiguous, or a grouping of ngx_http_ai_gateway_pii_card_groups with one
 * separator.  The grouping is all the groups there are, or all but a last
 * short spaced one ("4111 1111 1111 1111 12/25"), and no group comes
 * before it: more is a longer grouped number, or an IBAN's digits.
 */

static size_t
ngx_http_ai_gateway_pii_card(const unsigned char *p, size_t len, size_t i)
{
    size_t                j, n, e, k, ng, g[6];
    unsigned              sep;
    unsigned char         d[19];
    const unsigned char  *pat;

    if (!ngx_http_ai_gateway_pii_num_left(p, i)) {
        return 0;
    }

    n = ngx_http_ai_gateway_pii_digits(p, len, i, 19);

    if (n >= 13) {
        e = i + n;

        if (n > 19 || !ngx_http_ai_gateway_pii_num_right(p, len, e)
            || !ngx_http_ai_gateway_pii_card_valid(p + i, n))
        {
            return 0;
        }

        return e;
    }

    if (n != 4 || i + 5 >= len) {
        return 0;
    }

    sep = p[i + 4];

    if ((sep != ' ' && sep != '-')
        || (i >= 2 && p[i - 1] == sep
            && ngx_http_ai_gateway_pii_isdigit(p[i - 2])))
    {
        return 0;
    }

    /* the groups: at most six, their lengths counted up to seven */

    ng = 0;
    j = i;

    for ( ;; ) {
        n = ngx_http_ai_gateway_pii_digits(p, len, j, 6);

        g[ng++] = n;
        j += n;

        if (n > 6 || ng == 6 || j + 1 >= len || p[j] != sep
            || !ngx_http_ai_gateway_pii_isdigit(p[j + 1]))
        {
            break;
        }

        j++;
    }

    for (k = 0;
         k < sizeof(ngx_http_ai_gateway_pii_card_groups)
             / sizeof(ngx_http_ai_gateway_pii_card_groups[0]);
         k++)
    {
        pat = ngx_http_ai_gateway_pii_card_groups[k];

        if (pat[0] > ng) {
            continue;
        }

        e = i;
        n = 0;

        for (j = 0; j < pat[0]; j++) {
            if (g[j] != pat[j + 1]) {
                break;
            }

            if (j > 0) {
                e++;
            }

            memcpy(d + n, p + e, g[j]);
            n += g[j];
            e += g[j];
        }

        if (j == pat[0]
            && (ng == pat[0] || (ng == pat[0] + 1U && g[j] < 4))
            && ngx_http_ai_gateway_pii_num_right(p, len, e)
            && ngx_http_ai_gateway_pii_card_valid(d, n))
        {
            return e;
        }
    }

    return 0;
}


static int
ngx_http_ai_gateway_pii_card_valid(const unsigned char *d, size_t n)
{
    size_t    k;
    unsigned  sum, v, v2, v3, v4;

    /* Luhn: every second digit from the right doubled */

    sum = 0;

    for (k = 0; k < n; k++) {
        v = d[n - 1 - k] - '0';

        if (k & 1) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }

        sum += v;
    }

    if (sum % 10 != 0) {
        return 0;
    }

    v2 = (d[0] - '0') * 10 + (d[1] - '0');
    v3 = v2 * 10 + (d[2] - '0');
    v4 = v3 * 10 + (d[3] - '0');

    return d[0] == '4'                                      /* Visa */
           || (v2 >= 51 && v2 <= 55)                        /* Mastercard */
           || (v4 >= 2221 && v4 <= 2720)
           || v2 == 34 || v2 == 37                          /* Amex */
           || v4 == 6011 || v2 == 65                        /* Discover */
           || (v3 >= 644 && v3 <= 649)
           || (v4 >= 3528 && v4 <= 3589)                    /* JCB */
           || v2 == 36 || v2 == 38                          /* Diners */
           || (v3 >= 300 && v3 <= 305)
           || v2 == 62;                                     /* UnionPay */
}


static size_t
ngx_http_ai_gateway_pii_iban(const unsigned char *p, size_t len, size_t i)
{
    size_t         j, k, n, want, g;
    unsigned       r, ch;
    unsigned char  c[34];

    if (len - i < 15
        || (i > 0 && ngx_http_ai_gateway_pii_isword(p[i - 1]))
        || !ngx_http_ai_gateway_pii_isupper(p[i + 1])
        || !ngx_http_ai_gateway_pii_isdigit(p[i + 2])
        || !ngx_http_ai_gateway_pii_isdigit(p[i + 3]))
    {
        return 0;
    }

    want = 0;

    for (k = 0;
         k < sizeof(ngx_http_ai_gateway_pii_iban_lengths)
             / sizeof(ngx_http_ai_gateway_pii_iban_lengths[0]);
         k++)
    {
        if (ngx_http_ai_gateway_pii_iban_lengths[k][0] == p[i]
            && ngx_http_ai_gateway_pii_iban_lengths[k][1] == p[i + 1])
        {
            want = ngx_http_ai_gateway_pii_iban_lengths[k][2];
            break;
        }
    }

    if (want == 0) {
        return 0;
    }

    memcpy(c, p + i, 4);
    n = 4;
    j = i + 4;

    if (p[j] == ' ') {

        /* "DE89 3704 0044 0532 0130 00" */

        while (n < want) {
            if (j + 1 >= len || p[j] != ' ') {
                return 0;
            }

            j++;
            g = (want - n < 4) ? want - n : 4;

            for (k = 0; k < g; k++) {
                if (j == len || !ngx_http_ai_gateway_pii_isupnum(p[j])) {
                    return 0;
                }

                c[n++] = p[j++];
            }
        }

    } else {
        while (n < want) {
            if (j == len || !ngx_http_ai_gateway_pii_isupnum(p[j])) {
                return 0;
            }

            c[n++] = p[j++];
        }
    }

    if (j < len && ngx_http_ai_gateway_pii_isword(p[j])) {
        return 0;
    }

    /* the check digits are 02-98 */

    if ((c[2] == '0' && c[3] <= '1') || (c[2] == '9' && c[3] == '9')) {
        return 0;
    }

    /* mod 97 of the number with the first four moved to the end and each
     * letter written as 10-35 */

    r = 0;

    for (k = 4; k < n + 4; k++) {
        ch = c[k < n ? k : k - n];

        if (ch <= '9') {
            r = (r * 10 + (ch - '0')) % 97;

        } else {
            r = (r * 100 + (ch - 'A' + 10)) % 97;
        }
    }

    return (r == 1) ? j : 0;
}


static size_t
ngx_http_ai_gateway_pii_ipv4(const unsigned char *p, size_t len, size_t i)
{
    if (i > 0 && (ngx_http_ai_gateway_pii_isword(p[i - 1]) || p[i - 1] == '.'))
    {
        return 0;
    }

    return ngx_http_ai_gateway_pii_quad(p, len, i);
}


/* a dotted quad and its right boundary; 0 if none */

static size_t
ngx_http_ai_gateway_pii_quad(const unsigned char *p, size_t len, size_t i)
{
    size_t    j, k, n;
    unsigned  v;

    j = i;

    for (k = 0; k < 4; k++) {
        if (k > 0) {
            if (j == len || p[j] != '.') {
                return 0;
            }

            j++;
        }

        n = ngx_http_ai_gateway_pii_digits(p, len, j, 3);

        if (n == 0 || n > 3 || (n > 1 && p[j] == '0')) {
            return 0;
        }

        for (v = 0; n; n--) {
            v = v * 10 + (p[j++] - '0');
        }

        if (v > 255) {
            return 0;
        }
    }

    if (j < len
        && (ngx_http_ai_gateway_pii_isword(p[j])
            || (p[j] == '.' && j + 1 < len
                && ngx_http_ai_gateway_pii_isdigit(p[j + 1]))))
    {
        return 0;
    }

    return j;
}


static size_t
ngx_http_ai_gateway_pii_ipv6(const unsigned char *p, size_t len, size_t i)
{
    size_t    j, n, e, groups;
    unsigned  compressed, digit;

    if (i > 0
        && (ngx_http_ai_gateway_pii_isword(p[i - 1]) || p[i - 1] == ':'
            || p[i - 1] == '.'))
    {
        return 0;
    }

    j = i;
    groups = 0;
    compressed = 0;
    digit = 0;

    if (p[j] == ':') {
        if (j + 1 == len || p[j + 1] != ':') {
            return 0;
        }

        compressed = 1;
        j += 2;
    }

    for ( ;; ) {
        for (n = 0;
             n < 5 && j + n < len && ngx_http_ai_gateway_pii_ishex(p[j + n]);
             n++)
        {
            if (ngx_http_ai_gateway_pii_isdigit(p[j + n])) {
                digit = 1;
            }
        }

        if (n == 0 || n == 5) {
            return 0;
        }

        if (j + n + 1 < len && p[j + n] == '.'
            && ngx_http_ai_gateway_pii_isdigit(p[j + n + 1]))
        {
            /* the last 32 bits as a dotted quad */

            e = ngx_http_ai_gateway_pii_quad(p, len, j);
            if (e == 0) {
                return 0;
            }

            groups += 2;
            j = e;
            break;
        }

        groups++;
        j += n;

        if (groups > 8) {
            return 0;
        }

        if (j + 1 < len && p[j] == ':') {

            if (p[j + 1] == ':') {
                if (compressed) {
                    return 0;
                }

                compressed = 1;
                j += 2;

                if (j < len && ngx_http_ai_gateway_pii_ishex(p[j])) {
                    continue;
                }

                /* "fe80::" */
                break;
            }

            if (ngx_http_ai_gateway_pii_ishex(p[j + 1])) {
                j++;
                continue;
            }
        }

        break;
    }

    if ((compressed ? groups > 7 : groups != 8) || !digit) {
        return 0;
    }

    if (j < len
        && (ngx_http_ai_gateway_pii_isword(p[j])
            || (p[j] == ':' && p[j - 1] == ':')
            || (p[j] == '.' && j + 1 < len
                && ngx_http_ai_gateway_pii_isdigit(p[j + 1]))))
    {
        return 0;
    }

    return j;
}


static size_t
ngx_http_ai_gateway_pii_secret(const unsigned char *p, size_t len, size_t i)
{
    size_t  n, rest, lim;

    if (p[i] == '-') {
        return ngx_http_ai_gateway_pii_pem(p, len, i);
    }

    /* tokens do not continue a token or a word, nor a dashed name such as
     * "task-sk-..." */

    if (i > 0 && ngx_http_ai_gateway_pii_isb64(p[i - 1])) {
        return 0;
    }

    rest = len - i;

    switch (p[i]) {

    case 'A':
        if (rest >= 20
            && (memcmp(p + i, "AKIA", 4) == 0
                || memcmp(p + i, "ASIA", 4) == 0))
        {
            for (n = 4; n < 20; n++) {
                if (!ngx_http_ai_gateway_pii_isupnum(p[i + n])) {
                    return 0;
                }
            }

            if (rest > 20 && ngx_http_ai_gateway_pii_isword(p[i + 20])) {
                return 0;
            }

            return i + 20;
        }

        if (rest >= 39 && memcmp(p + i, "AIza", 4) == 0) {
            /* exactly 35: a 36th is looked at, not further */
            lim = (rest > 40) ? i + 40 : len;
            n = ngx_http_ai_gateway_pii_run(p, lim, i + 4,
                                            NGX_HTTP_AI_GATEWAY_PII_B64);
            return (n == 35) ? i + 39 : 0;
        }

        return 0;

    case 's':
        if (rest < 23 || p[i + 1] != 'k' || p[i + 2] != '-') {
            return 0;
        }

        n = ngx_http_ai_gateway_pii_run(p, len, i + 3,
                                        NGX_HTTP_AI_GATEWAY_PII_B64);
        return (n >= 20) ? i + 3 + n : 0;

    case 'e':
        return ngx_http_ai_gateway_pii_jwt(p, len, i);

    case 'g':
        if (rest >= 40 && p[i + 1] == 'h' && p[i + 3] == '_'
            && (p[i + 2] == 'p' || p[i + 2] == 'o' || p[i + 2] == 'u'
                || p[i + 2] == 's' || p[i + 2] == 'r'))
        {
            lim = (rest > 41) ? i + 41 : len;
            n = ngx_http_ai_gateway_pii_run(p, lim, i + 4,
                                            NGX_HTTP_AI_GATEWAY_PII_WORD);

            if (n != 36) {
                return 0;
            }

            for (n = i + 4; n < i + 40; n++) {
                if (p[n] == '_') {
                    return 0;
                }
            }

            return i + 40;
        }

        if (rest >= 33 && memcmp(p + i, "github_pat_", 11) == 0) {
            n = ngx_http_ai_gateway_pii_run(p, len, i + 11,
                                            NGX_HTTP_AI_GATEWAY_PII_WORD);
            return (n >= 22) ? i + 11 + n : 0;
        }

        return 0;

    case 'x':
        if (rest < 25 || p[i + 1] != 'o' || p[i + 2] != 'x' || p[i + 4] != '-'
            || (p[i + 3] != 'a' && p[i + 3] != 'b' && p[i + 3] != 'p'
                && p[i + 3] != 'r' && p[i + 3] != 's'))
        {
            return 0;
        }

        n = ngx_http_ai_gateway_pii_run(p, len, i + 5,
                                        NGX_HTTP_AI_GATEWAY_PII_B64);
        return (n >= 20) ? i + 5 + n : 0;
    }

    return 0;
}


static size_t
ngx_http_ai_gateway_pii_pem(const unsigned char *p, size_t len, size_t i)
{
    size_t                j, n, e;
    const unsigned char  *q;

    if (len - i < 11 + 11 + 5 || memcmp(p + i, "-----BEGIN ", 11) != 0) {
        return 0;
    }

    j = i + 11;
    n = ngx_http_ai_gateway_pii_pem_label(p, len, j);

    if (n < 11) {
        return 0;
    }

    /* "RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PGP PRIVATE KEY BLOCK" */

    for (e = j; e + 11 <= j + n; e++) {
        if (memcmp(p + e, "PRIVATE KEY", 11) == 0) {
            break;
        }
    }

    if (e + 11 > j + n) {
        return 0;
    }

    j += n + 5;

    for ( ;; ) {
        q = memchr(p + j, '-', len - j);
        if (q == NULL) {
            return len;
        }

        j = q - p;

        if (len - j >= 9 + 1 + 5 && memcmp(p + j, "-----END ", 9) == 0) {
            n = ngx_http_ai_gateway_pii_pem_label(p, len, j + 9);

            if (n) {
                return j + 9 + n + 5;
            }
        }

        j++;
    }
}


/* the length of a PEM label at p[i] and the "-----" after it, or 0 */

static size_t
ngx_http_ai_gateway_pii_pem_label(const unsigned char *p, size_t len,
    size_t i)
{
    size_t  n;

    for (n = 0;
         n <= 40 && i + n < len
         && (ngx_http_ai_gateway_pii_isupnum(p[i + n]) || p[i + n] == ' ');
         n++)
    {
        /* void */
    }

    if (n == 0 || n > 40 || len - i - n < 5
        || memcmp(p + i + n, "-----", 5) != 0)
    {
        return 0;
    }

    return n;
}


/* header.payload.signature, and the further segments of an encrypted
 * token */

static size_t
ngx_http_ai_gateway_pii_jwt(const unsigned char *p, size_t len, size_t i)
{
    size_t  j, k, n;

    if (len - i < 10 + 11 + 11 || p[i + 1] != 'y' || p[i + 2] != 'J'
        || (i > 0 && p[i - 1] == '.'))
    {
        return 0;
    }

    j = i;

    for (k = 0; k < 5; k++) {
        if (k > 0) {
            if (j + 1 >= len || p[j] != '.'
                || !ngx_http_ai_gateway_pii_isb64(p[j + 1]))
            {
                break;
            }

            j++;
        }

        n = ngx_http_ai_gateway_pii_run(p, len, j,
                                        NGX_HTTP_AI_GATEWAY_PII_B64);

        if (k < 3 && n < 10) {
            return 0;
        }

        j += n;
    }

    return (k >= 3) ? j : 0;
}


/* the number of digits at p[i], counted up to max + 1 */

static size_t
ngx_http_ai_gateway_pii_digits(const unsigned char *p, size_t len, size_t i,
    size_t max)
{
    size_t  n;

    for (n = 0; n <= max && i + n < len; n++) {
        if (!ngx_http_ai_gateway_pii_isdigit(p[i + n])) {
            break;
        }
    }

    return n;
}


/* the length of the run of bytes of a class at p[i], up to len */

static size_t
ngx_http_ai_gateway_pii_run(const unsigned char *p, size_t len, size_t i,
    unsigned cls)
{
    size_t  j;

    for (j = i; j < len && (ngx_http_ai_gateway_pii_cls[p[j]] & cls); j++) {
        /* void */
    }

    return j - i;
}


/* a number at i is not glued to a word, nor the rest of a number ("12-",
 * "3.", "+") */

static int
ngx_http_ai_gateway_pii_num_left(const unsigned char *p, size_t i)
{
    unsigned  c;

    if (i == 0) {
        return 1;
    }

    c = p[i - 1];

    if (ngx_http_ai_gateway_pii_isword(c) || c == '+') {
        return 0;
    }

    if ((c == '-' || c == '.') && i >= 2
        && ngx_http_ai_gateway_pii_isdigit(p[i - 2]))
    {
        return 0;
    }

    return 1;
}


static int
ngx_http_ai_gateway_pii_num_right(const unsigned char *p, size_t len,
    size_t e)
{
    unsigned  c;

    if (e == len) {
        return 1;
    }

    c = p[e];

    if (ngx_http_ai_gateway_pii_isword(c)) {
        return 0;
    }

    if ((c == '-' || c == '.') && e + 1 < len
        && ngx_http_ai_gateway_pii_isdigit(p[e + 1]))
    {
        return 0;
    }

    return 1;
}


size_t
ngx_http_ai_gateway_pii_mask(const unsigned char *p, size_t len,
    unsigned types, unsigned char *out, size_t *count)
{
    ngx_http_ai_gateway_pii_mask_t  mk;

    mk.p = p;
    mk.out = out;
    mk.pos = 0;
    mk.len = 0;
    mk.count = 0;

    (void) ngx_http_ai_gateway_pii_scan(p, len, types,
                                        ngx_http_ai_gateway_pii_mask_match,
                                        &mk);

    if (out && len > mk.pos) {
        memcpy(out + mk.len, p + mk.pos, len - mk.pos);
    }

    mk.len += len - mk.pos;

    if (count) {
        *count = mk.count;
    }

    return mk.len;
}


static int
ngx_http_ai_gateway_pii_mask_match(void *data,
    ngx_http_ai_gateway_pii_match_t *m)
{
    ngx_http_ai_gateway_pii_mask_t *mk = data;

    size_t  gap, n;

    gap = m->start - mk->pos;
    n = ngx_http_ai_gateway_pii_types[m->type].redacted_len;

    if (mk->out) {
        memcpy(mk->out + mk->len, mk->p + mk->pos, gap);
        memcpy(mk->out + mk->len + gap,
               ngx_http_ai_gateway_pii_types[m->type].redacted, n);
    }

    mk->len += gap + n;
    mk->pos = m->end;
    mk->count++;

    return 0;
}


/*
 * Keyword engine.  Word boundaries are built into the automaton: a mark
 * symbol goes before each ASCII word byte that starts a word, in the
 * keywords and in the text alike, so a keyword that starts with a word
 * byte matches only at a word start, and the matcher does nothing for it
 * at run time.  All the occurrences that end at one position end with the
 * same byte, so the check at their end (no word byte after a keyword that
 * ends with an ASCII word byte) is one test for all of them.
 *
 * The automaton is a full DFA over classes of bytes (the bytes of the
 * keywords, case-folded, white space as ' ', the mark, and one class for
 * all other bytes): one table lookup a byte, two at a word start.  A
 * state's row holds its output, the next state of its output chain, and
 * its transitions; states are known by the offsets of their rows, so a
 * step is one load from the row it is in.  A match starts where its first
 * symbol was: the last KW_MAX_LEN symbols' offsets are kept in a ring on
 * the stack, since a run of white space is one symbol however long it is.
 *
 * In the root state most text bytes start nothing, so the matchers skip
 * to the next byte where the automaton can leave the root, by a
 * prefilter: with SSE2 the word starts of 16 bytes at a time (and the
 * bytes that start keywords anywhere, as '$' or UTF-8 lead bytes), each
 * looked up by its three first bytes in a table of 16 KiB that the
 * compilation fills from the automaton.  From such a byte the automaton
 * runs without the matchers' bookkeeping until it is back in the root or
 * reaches an output; only then do the matchers take over, from that byte.
 */


#define NGX_HTTP_AI_GATEWAY_KW_MARK  256     /* the word-start symbol */
#define NGX_HTTP_AI_GATEWAY_KW_RING  NGX_HTTP_AI_GATEWAY_KW_MAX_LEN
#define NGX_HTTP_AI_GATEWAY_KW_SYMS  0x01ff  /* info: symbols */
#define NGX_HTTP_AI_GATEWAY_KW_END   0x8000  /* info: ends in [A-Za-z0-9_] */
/* states beyond that would make a table of gigabytes */
#define NGX_HTTP_AI_GATEWAY_KW_MAX_NODES  (1u << 24)

/* state rows: the output (a keyword, or NONE), the chain, transitions */
#define NGX_HTTP_AI_GATEWAY_KW_OUT    0
#define NGX_HTTP_AI_GATEWAY_KW_CHAIN  1
#define NGX_HTTP_AI_GATEWAY_KW_TRANS  2
#define NGX_HTTP_AI_GATEWAY_KW_NONE   0xffffffff

#if defined(__GNUC__)
#define ngx_http_ai_gateway_kw_inline  inline __attribute__((always_inline))
#else
#define ngx_http_ai_gateway_kw_inline  inline
#endif

/* ' ', \t, \n, \v, \f, \r */
#define ngx_http_ai_gateway_kw_space(c)                                       \
    ((c) <= ' ' && ((0x100003e00ULL >> (c)) & 1))

#define ngx_http_ai_gateway_kw_wordbyte(c)                                    \
    (ngx_http_ai_gateway_pii_isword(c) || (c) >= 0x80)

/* bytes in the text: white space, word bytes ([A-Za-z0-9_]), and the bytes
 * that a keyword's word boundary takes for word bytes (those and >= 0x80) */
#define NGX_HTTP_AI_GATEWAY_KW_B_SPACE  1
#define NGX_HTTP_AI_GATEWAY_KW_B_WORD   2
#define NGX_HTTP_AI_GATEWAY_KW_B_WB     4

static const unsigned char  ngx_http_ai_gateway_kw_byte[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /*  !"#$%&' */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* ()*+,-./ */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* 01234567 */
    0x06, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* 89:;<=>? */
    0x00, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* @ABCDEFG */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* HIJKLMNO */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* PQRSTUVW */
    0x06, 0x06, 0x06, 0x00, 0x00, 0x00, 0x00, 0x06,     /* XYZ[\]^_ */
    0x00, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* `abcdefg */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* hijklmno */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,     /* pqrstuvw */
    0x06, 0x06, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00,     /* xyz{|}~  */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
};

/*
 * The prefilter's entry for three bytes, x: the first, the second in bits
 * 8-15, the third in bits 16-23; a multiplicative hash to 14 bits
 */
#define NGX_HTTP_AI_GATEWAY_KW_TRI  (1u << 14)
#define ngx_http_ai_gateway_kw_hash(x)                                        \
    ((uint32_t) ((x) * 2654435761u) >> 18)


typedef struct {
    uint32_t  child;            /* 0: none (the root is nobody's child) */
    uint32_t  sibling;
    int32_t   kw;               /* the keyword that ends here, -1: none */
    uint16_t  sym;
} ngx_http_ai_gateway_kw_node_t;


struct ngx_http_ai_gateway_kw_s {
    ngx_http_ai_gateway_kw_allocator_t   a;

    /* the trie, while keywords are added */
    ngx_http_ai_gateway_kw_node_t       *nodes;
    uint32_t                             nnodes;
    uint32_t                             nodes_cap;

    /* per keyword: its symbols (without marks), NGX_HTTP_AI_GATEWAY_KW_END */
    uint16_t                            *info;
    uint32_t                             nkw;
    uint32_t                             kw_cap;
    uint32_t                             maxsym;

    /*
     * The automaton: a row of width words a state.  Its OUT word is the
     * longest keyword that ends in the state (NONE if none), CHAIN the
     * next state whose own keyword is a suffix of that one (0: none, the
     * root has none), TRANS + class the next state.  cls[] and mark are
     * classes plus TRANS.
     */
    uint32_t                            *dfa;
    uint32_t                             mark;
    uint32_t                             cls[256];

    /*
     * The prefilter, for the root state.  lead[c]: the automaton leaves
     * the root on c (after the mark if c is a word byte, as at a word
     * start).  tri[]: by the hash of three bytes, 1 for the bytes c1 c2
     * c3 after which it is not back in the root, or on which it has
     * passed a state with an output; other triples may share the entry.
     * The bytes that are no word bytes and lead (they need no word
     * start): up to 4 ASCII ones in punct[], high when there are such
     * bytes >= 0x80, other when there are more ASCII ones.  tri[] follows
     * the automaton's rows in their memory.
     */
    unsigned char                       *tri;
    unsigned char                        lead[256];
    unsigned char                        punct[4];

    /*
     * The same triples as nibble tables (the "Teddy" scheme of the guard's
     * literal prefilter, _prefilter.c): bit b of tlo[j][x] says that a
     * triple whose first byte is b modulo 8 has a byte j with the low
     * nibble x.  A superset of tri[]: with AVX2 32 places a step pass or
     * fail at once, and only those that pass are hashed.
     */
    unsigned char                        tlo[3][16];
    unsigned char                        thi[3][16];

    unsigned                             npunct:3;
    unsigned                             high:1;
    unsigned                             other:1;
    unsigned                             compiled:1;
    unsigned                             avx2:1;
};


static void *ngx_http_ai_gateway_kw_malloc(void *data, size_t size);
static void ngx_http_ai_gateway_kw_mfree(void *data, void *p);
static void *ngx_http_ai_gateway_kw_grow(ngx_http_ai_gateway_kw_t *kw,
    void *p, size_t used, size_t size);
static uint32_t ngx_http_ai_gateway_kw_child(ngx_http_ai_gateway_kw_t *kw,
    uint32_t node, unsigned sym);
static unsigned ngx_http_ai_gateway_kw_fold(unsigned c);
static void ngx_http_ai_gateway_kw_prefilter(ngx_http_ai_gateway_kw_t *kw);
static uint32_t ngx_http_ai_gateway_kw_step(const ngx_http_ai_gateway_kw_t *kw,
    uint32_t s, unsigned prev, unsigned c);
static size_t ngx_http_ai_gateway_kw_skip(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t i);
static ngx_http_ai_gateway_kw_inline size_t ngx_http_ai_gateway_kw_lead(
    const ngx_http_ai_gateway_kw_t *kw, const unsigned char *p, size_t len,
    size_t i);


static const ngx_http_ai_gateway_kw_allocator_t
    ngx_http_ai_gateway_kw_std = {
    ngx_http_ai_gateway_kw_malloc, ngx_http_ai_gateway_kw_mfree, NULL
};


ngx_http_ai_gateway_kw_t *
ngx_http_ai_gateway_kw_create(
    const ngx_http_ai_gateway_kw_allocator_t *allocator)
{
    ngx_http_ai_gateway_kw_t  *kw;

    if (allocator == NULL) {
        allocator = &ngx_http_ai_gateway_kw_std;
    }

    kw = allocator->alloc(allocator->data, sizeof(ngx_http_ai_gateway_kw_t));
    if (kw == NULL) {
        return NULL;
    }

    memset(kw, 0, sizeof(ngx_http_ai_gateway_kw_t));
    kw->a = *allocator;

    kw->nodes = ngx_http_ai_gateway_kw_grow(kw, NULL, 0, 64
                                   * sizeof(ngx_http_ai_gateway_kw_node_t));
    if (kw->nodes == NULL) {
        ngx_http_ai_gateway_kw_free(kw);
        return NULL;
    }

    kw->nodes_cap = 64;
    kw->nnodes = 1;
    kw->nodes[0].child = 0;
    kw->nodes[0].sibling = 0;
    kw->nodes[0].kw = -1;
    kw->nodes[0].sym = 0;

    return kw;
}


int
ngx_http_ai_gateway_kw_add(ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *word, size_t len)
{
    size_t         k, n;
    uint16_t      *info;
    uint32_t       node;
    unsigned       c, space;
    unsigned char  norm[NGX_HTTP_AI_GATEWAY_KW_MAX_LEN];

    if (kw->compiled) {
        return NGX_HTTP_AI_GATEWAY_KW_COMPILED;
    }

    /* case folded, white space trimmed, runs of it made one space */

    n = 0;
    space = 0;

    for (k = 0; k < len; k++) {
        c = word[k];

        if (ngx_http_ai_gateway_kw_space(c)) {
            space = 1;
            continue;
        }

        if (n + (space && n) >= NGX_HTTP_AI_GATEWAY_KW_MAX_LEN) {
            return NGX_HTTP_AI_GATEWAY_KW_TOO_LONG;
        }

        if (space && n) {
            norm[n++] = ' ';
        }

        space = 0;
        norm[n++] = (unsigned char) ngx_http_ai_gateway_kw_fold(c);
    }

    if (n == 0) {
        return NGX_HTTP_AI_GATEWAY_KW_EMPTY;
    }

    node = 0;

    for (k = 0; k < n; k++) {
        if (ngx_http_ai_gateway_pii_isword(norm[k])
            && (k == 0 || !ngx_http_ai_gateway_kw_wordbyte(norm[k - 1])))
        {
            node = ngx_http_ai_gateway_kw_child(kw, node,
                                                NGX_HTTP_AI_GATEWAY_KW_MARK);
            if (node == 0) {
                goto failed;
            }
        }

        node = ngx_http_ai_gateway_kw_child(kw, node, norm[k]);
        if (node == 0) {
            goto failed;
        }
    }

    if (kw->nodes[node].kw >= 0) {
        return kw->nodes[node].kw;
    }

    if (kw->nkw == kw->kw_cap) {
        info = ngx_http_ai_gateway_kw_grow(kw, kw->info,
                                           kw->nkw * sizeof(uint16_t),
                                           (kw->nkw + 64) * 2
                                           * sizeof(uint16_t));
        if (info == NULL) {
            return NGX_HTTP_AI_GATEWAY_KW_NOMEM;
        }

        kw->info = info;
        kw->kw_cap = (kw->nkw + 64) * 2;
    }

    kw->info[kw->nkw] = (uint16_t) (n
                          | (ngx_http_ai_gateway_pii_isword(norm[n - 1])
                             ? NGX_HTTP_AI_GATEWAY_KW_END : 0));

    if (n > kw->maxsym) {
        kw->maxsym = (uint32_t) n;
    }

    kw->nodes[node].kw = kw->nkw;

    return kw->nkw++;

failed:

    /* the nodes added so far stay, as inner nodes that match nothing */

    return (kw->nnodes >= NGX_HTTP_AI_GATEWAY_KW_MAX_NODES)
           ? NGX_HTTP_AI_GATEWAY_KW_TOO_MANY : NGX_HTTP_AI_GATEWAY_KW_NOMEM;
}


/* the child of a trie node for a symbol, added if needed; 0 on failure */

static uint32_t
ngx_http_ai_gateway_kw_child(ngx_http_ai_gateway_kw_t *kw, uint32_t node,
    unsigned sym)
{
    uint32_t                        ch;
    ngx_http_ai_gateway_kw_node_t  *nodes;

    for (ch = kw->nodes[node].child; ch; ch = kw->nodes[ch].sibling) {
        if (kw->nodes[ch].sym == sym) {
            return ch;
        }
    }

    if (kw->nnodes >= NGX_HTTP_AI_GATEWAY_KW_MAX_NODES) {
        return 0;
    }

    if (kw->nnodes == kw->nodes_cap) {
        nodes = ngx_http_ai_gateway_kw_grow(kw, kw->nodes,
                                 (size_t) kw->nnodes
                                 * sizeof(ngx_http_ai_gateway_kw_node_t),
                                 (size_t) kw->nodes_cap * 2
                                 * sizeof(ngx_http_ai_gateway_kw_node_t));
        if (nodes == NULL) {
            return 0;
        }

        kw->nodes = nodes;
        kw->nodes_cap *= 2;
    }

    ch = kw->nnodes++;

    kw->nodes[ch].child = 0;
    kw->nodes[ch].sibling = kw->nodes[node].child;
    kw->nodes[ch].kw = -1;
    kw->nodes[ch].sym = (uint16_t) sym;
    kw->nodes[node].child = ch;

    return ch;
}


int
ngx_http_ai_gateway_kw_compile(ngx_http_ai_gateway_kw_t *kw)
{
    size_t                          width, cells;
    uint32_t                        s, f, ch, c, head, tail, n, ncls;
    uint32_t                       *dfa, *row, *frow, *fail, *queue, *first;
    unsigned char                  *tri;
    uint16_t                        symcls[NGX_HTTP_AI_GATEWAY_KW_MARK + 1];
    ngx_http_ai_gateway_kw_node_t  *nodes;

    if (kw->compiled) {
        return 0;
    }

    nodes = kw->nodes;
    n = kw->nnodes;

    /* class 0: the bytes of no keyword */

    memset(symcls, 0, sizeof(symcls));
    ncls = 1;

    for (s = 1; s < n; s++) {
        if (symcls[nodes[s].sym] == 0) {
            symcls[nodes[s].sym] = (uint16_t) ncls++;
        }
    }

    width = NGX_HTTP_AI_GATEWAY_KW_TRANS + ncls;
    cells = (size_t) n * width;

    /* row offsets are 32-bit */

    if (cells / width != n || cells > 0xffffffff) {
        return NGX_HTTP_AI_GATEWAY_KW_TOO_MANY;
    }

    /* the rows first, they are aligned */

    dfa = kw->a.alloc(kw->a.data, cells * sizeof(uint32_t)
                                  + NGX_HTTP_AI_GATEWAY_KW_TRI);
    if (dfa == NULL) {
        return NGX_HTTP_AI_GATEWAY_KW_NOMEM;
    }

    tri = (unsigned char *) (dfa + cells);

    fail = kw->a.alloc(kw->a.data, 3 * sizeof(uint32_t) * (size_t) n);
    if (fail == NULL) {
        if (kw->a.free) {
            kw->a.free(kw->a.data, dfa);
        }

        return NGX_HTTP_AI_GATEWAY_KW_NOMEM;
    }

    queue = fail + n;
    first = queue + n;

    /*
     * Breadth first: a state's failure state is shallower, so its row is
     * complete when the state's is made from it.  fail[], first[] and the
     * queue hold trie node numbers; first[]: the node whose own keyword is
     * the longest that ends in a node.
     */

    memset(dfa, 0, width * sizeof(uint32_t));
    dfa[NGX_HTTP_AI_GATEWAY_KW_OUT] = NGX_HTTP_AI_GATEWAY_KW_NONE;
    fail[0] = 0;
    first[0] = 0;

    head = 0;
    tail = 0;
    queue[tail++] = 0;

    while (head < tail) {
        s = queue[head++];
        f = fail[s];
        row = dfa + (size_t) s * width;
        frow = dfa + (size_t) f * width;

        if (s) {
            /* the failure state's transitions, output and chain; then a
             * keyword of its own comes first */

            memcpy(row, frow, width * sizeof(uint32_t));
            first[s] = first[f];

            if (nodes[s].kw >= 0) {
                row[NGX_HTTP_AI_GATEWAY_KW_OUT] = nodes[s].kw;
                row[NGX_HTTP_AI_GATEWAY_KW_CHAIN] =
                                             (uint32_t) (first[f] * width);
                first[s] = s;
            }
        }

        for (ch = nodes[s].child; ch; ch = nodes[ch].sibling) {
            c = NGX_HTTP_AI_GATEWAY_KW_TRANS + symcls[nodes[ch].sym];
            fail[ch] = s ? frow[c] / width : 0;
            row[c] = (uint32_t) (ch * width);
            queue[tail++] = ch;
        }
    }

    if (kw->a.free) {
        kw->a.free(kw->a.data, fail);
        kw->a.free(kw->a.data, kw->nodes);
    }

    kw->nodes = NULL;

    for (c = 0; c < 256; c++) {
        kw->cls[c] = NGX_HTTP_AI_GATEWAY_KW_TRANS
                     + symcls[ngx_http_ai_gateway_kw_fold(c)];
    }

    kw->mark = NGX_HTTP_AI_GATEWAY_KW_TRANS
               + symcls[NGX_HTTP_AI_GATEWAY_KW_MARK];
    kw->tri = tri;
    kw->dfa = dfa;
    kw->compiled = 1;

    ngx_http_ai_gateway_kw_prefilter(kw);

    ngx_http_ai_gateway_kw_simd(kw, 1);

    return 0;
}


void
ngx_http_ai_gateway_kw_simd(ngx_http_ai_gateway_kw_t *kw, int on)
{
    (void) on;

    kw->avx2 = 0;

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
    if (on) {
        __builtin_cpu_init();
        kw->avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
#endif
}


int
ngx_http_ai_gateway_kw_find(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t *start, size_t *end,
    int *index)
{
    size_t           i, cnt, sb, best_sb, best_start, best_end;
    size_t           ring[NGX_HTTP_AI_GATEWAY_KW_RING];
    uint32_t         s, k, best;
    unsigned         c, f, pf;
    const uint32_t  *dfa;

    if (!kw->compiled || kw->nkw == 0) {
        return 0;
    }

    dfa = kw->dfa;

    s = 0;
    cnt = 0;
    best = NGX_HTTP_AI_GATEWAY_KW_NONE;
    best_sb = 0;
    best_start = 0;
    best_end = 0;
    pf = 0;
    i = 0;

    while (i < len) {

        if (s == 0) {
            /* in the root nothing has started: what ends later starts
             * after the best, and nothing starts before the next byte
             * that the prefilter lets through */

            if (best != NGX_HTTP_AI_GATEWAY_KW_NONE) {
                break;
            }

            i = ngx_http_ai_gateway_kw_skip(kw, p, len, i);
            if (i == len) {
                break;
            }

            /* pf: the previous byte's flags, none at the start */

            pf = i ? ngx_http_ai_gateway_kw_byte[p[i - 1]] : 0;
        }

        c = p[i];
        f = ngx_http_ai_gateway_kw_byte[c];

        if (f & pf & NGX_HTTP_AI_GATEWAY_KW_B_SPACE) {
            i++;
            continue;
        }

        if ((f & NGX_HTTP_AI_GATEWAY_KW_B_WORD)
            && !(pf & NGX_HTTP_AI_GATEWAY_KW_B_WB))
        {
            s = dfa[s + kw->mark];
        }

        pf = f;

        s = dfa[s + kw->cls[c]];
        ring[cnt % NGX_HTTP_AI_GATEWAY_KW_RING] = i;
        cnt++;

        k = dfa[s + NGX_HTTP_AI_GATEWAY_KW_OUT];

        if (k != NGX_HTTP_AI_GATEWAY_KW_NONE
            && (!(kw->info[k] & NGX_HTTP_AI_GATEWAY_KW_END) || i + 1 == len
                || !ngx_http_ai_gateway_kw_wordbyte(p[i + 1])))
        {
            /* an occurrence that ends later and starts no later is
             * longer: it wins */

            sb = cnt - (kw->info[k] & NGX_HTTP_AI_GATEWAY_KW_SYMS);

            if (best == NGX_HTTP_AI_GATEWAY_KW_NONE || sb <= best_sb) {
                best = k;
                best_sb = sb;
                best_start = ring[sb % NGX_HTTP_AI_GATEWAY_KW_RING];
                best_end = i + 1;
            }
        }

        /* what ends later starts after best_sb */

        if (best != NGX_HTTP_AI_GATEWAY_KW_NONE
            && cnt - best_sb >= kw->maxsym)
        {
            break;
        }

        i++;
    }

    if (best == NGX_HTTP_AI_GATEWAY_KW_NONE) {
        return 0;
    }

    *start = best_start;
    *end = best_end;
    *index = (int) best;

    return 1;
}


int
ngx_http_ai_gateway_kw_scan(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, ngx_http_ai_gateway_kw_pt cb,
    void *data)
{
    int              rc;
    size_t           i, cnt, sb;
    size_t           ring[NGX_HTTP_AI_GATEWAY_KW_RING];
    uint32_t         s, t, k;
    unsigned         c, f, pf;
    const uint32_t  *dfa;

    if (!kw->compiled || kw->nkw == 0) {
        return 0;
    }

    dfa = kw->dfa;

    s = 0;
    cnt = 0;
    pf = 0;

    for (i = 0; i < len; i++) {

        if (s == 0) {
            i = ngx_http_ai_gateway_kw_skip(kw, p, len, i);
            if (i == len) {
                break;
            }

            /* pf: the previous byte's flags, none at the start */

            pf = i ? ngx_http_ai_gateway_kw_byte[p[i - 1]] : 0;
        }

        c = p[i];
        f = ngx_http_ai_gateway_kw_byte[c];

        if (f & pf & NGX_HTTP_AI_GATEWAY_KW_B_SPACE) {
            continue;
        }

        if ((f & NGX_HTTP_AI_GATEWAY_KW_B_WORD)
            && !(pf & NGX_HTTP_AI_GATEWAY_KW_B_WB))
        {
            s = dfa[s + kw->mark];
        }

        pf = f;

        s = dfa[s + kw->cls[c]];
        ring[cnt % NGX_HTTP_AI_GATEWAY_KW_RING] = i;
        cnt++;

        k = dfa[s + NGX_HTTP_AI_GATEWAY_KW_OUT];

        if (k == NGX_HTTP_AI_GATEWAY_KW_NONE
            || ((kw->info[k] & NGX_HTTP_AI_GATEWAY_KW_END) && i + 1 < len
                && ngx_http_ai_gateway_kw_wordbyte(p[i + 1])))
        {
            continue;
        }

        /* the longest, then the chain of shorter ones */

        t = s;

        for ( ;; ) {
            sb = cnt - (kw->info[k] & NGX_HTTP_AI_GATEWAY_KW_SYMS);

            rc = cb(data, ring[sb % NGX_HTTP_AI_GATEWAY_KW_RING], i + 1,
                    (int) k);
            if (rc != 0) {
                return rc;
            }

            t = dfa[t + NGX_HTTP_AI_GATEWAY_KW_CHAIN];
            if (t == 0) {
                break;
            }

            k = dfa[t + NGX_HTTP_AI_GATEWAY_KW_OUT];
        }
    }

    return 0;
}


/*
 * The prefilter's tables: the automaton run from the root on every byte c1
 * at a word start (after the mark if it is a word byte, as in the text
 * after a boundary), then on every c2 and c3 with the marks and the white
 * space folding that the text would have.  Where it is back in the root
 * after c3 and has passed no output, no occurrence starts at c1; one that
 * starts at c2 or c3 is found from there.
 */

static void
ngx_http_ai_gateway_kw_prefilter(ngx_http_ai_gateway_kw_t *kw)
{
    uint32_t         s1, s2, s3, h;
    unsigned         c1, c2, c3, all, bit;
    const uint32_t  *dfa;

    dfa = kw->dfa;

    memset(kw->tri, 0, NGX_HTTP_AI_GATEWAY_KW_TRI);
    memset(kw->tlo, 0, sizeof(kw->tlo));
    memset(kw->thi, 0, sizeof(kw->thi));

    for (c1 = 0; c1 < 256; c1++) {
        s1 = ngx_http_ai_gateway_pii_isword(c1) ? dfa[kw->mark] : 0;
        s1 = dfa[s1 + kw->cls[c1]];

        if (s1 == 0) {
            continue;
        }

        kw->lead[c1] = 1;

        for (c2 = 0; c2 < 256; c2++) {
            s2 = ngx_http_ai_gateway_kw_step(kw, s1, c1, c2);
            all = (dfa[s1 + NGX_HTTP_AI_GATEWAY_KW_OUT]
                   != NGX_HTTP_AI_GATEWAY_KW_NONE);

            if (s2 == 0 && !all) {
                continue;
            }

            all = all || (dfa[s2 + NGX_HTTP_AI_GATEWAY_KW_OUT]
                          != NGX_HTTP_AI_GATEWAY_KW_NONE);

            for (c3 = 0; c3 < 256; c3++) {
                s3 = all ? 1 : ngx_http_ai_gateway_kw_step(kw, s2, c2, c3);

                if (s3) {
                    h = ngx_http_ai_gateway_kw_hash(c1 | c2 << 8 | c3 << 16);
                    kw->tri[h] = 1;

                    /* the bucket of c1 (a letter's cases share it) */
                    bit = 1u << (c1 & 7);
                    kw->tlo[0][c1 & 0x0f] |= bit;
                    kw->thi[0][c1 >> 4] |= bit;
                    kw->tlo[1][c2 & 0x0f] |= bit;
                    kw->thi[1][c2 >> 4] |= bit;
                    kw->tlo[2][c3 & 0x0f] |= bit;
                    kw->thi[2][c3 >> 4] |= bit;
                }
            }
        }

        if (ngx_http_ai_gateway_pii_isword(c1)) {
            continue;
        }

        /* a byte that leads anywhere, not only at a word start */

        if (c1 >= 0x80) {
            kw->high = 1;

        } else if (kw->npunct < 4) {
            kw->punct[kw->npunct++] = (unsigned char) c1;

        } else {
            kw->other = 1;
        }
    }
}


/* the automaton's step from s on c after the byte prev, as the matchers
 * take it */

static uint32_t
ngx_http_ai_gateway_kw_step(const ngx_http_ai_gateway_kw_t *kw, uint32_t s,
    unsigned prev, unsigned c)
{
    unsigned  f, pf;

    f = ngx_http_ai_gateway_kw_byte[c];
    pf = ngx_http_ai_gateway_kw_byte[prev];

    if (f & pf & NGX_HTTP_AI_GATEWAY_KW_B_SPACE) {
        return s;
    }

    if ((f & NGX_HTTP_AI_GATEWAY_KW_B_WORD)
        && !(pf & NGX_HTTP_AI_GATEWAY_KW_B_WB))
    {
        s = kw->dfa[s + kw->mark];
    }

    return kw->dfa[s + kw->cls[c]];
}


/*
 * From the root state at i: the first byte at or after i where an
 * occurrence may start and end, or len.  The prefilter finds a byte where
 * the automaton can leave the root, and the automaton run from there
 * without the matchers' bookkeeping either comes back to the root (nothing
 * that started on the way is alive: the search goes on after it), or
 * reaches the end of the text, or a state with an output, for which the
 * matcher starts at that byte.  So the matcher reads a byte at most twice.
 */

static size_t
ngx_http_ai_gateway_kw_skip(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t i)
{
    size_t           j;
    uint32_t         s;
    unsigned         c, f, pf;
    const uint32_t  *dfa;

    dfa = kw->dfa;

    for ( ;; ) {
        i = ngx_http_ai_gateway_kw_lead(kw, p, len, i);
        if (i == len) {
            return len;
        }

        s = 0;
        pf = i ? ngx_http_ai_gateway_kw_byte[p[i - 1]] : 0;

        for (j = i; j < len; j++) {
            c = p[j];
            f = ngx_http_ai_gateway_kw_byte[c];

            if (f & pf & NGX_HTTP_AI_GATEWAY_KW_B_SPACE) {
                continue;
            }

            if ((f & NGX_HTTP_AI_GATEWAY_KW_B_WORD)
                && !(pf & NGX_HTTP_AI_GATEWAY_KW_B_WB))
            {
                s = dfa[s + kw->mark];
            }

            pf = f;
            s = dfa[s + kw->cls[c]];

            if (s == 0) {
                break;
            }

            if (dfa[s + NGX_HTTP_AI_GATEWAY_KW_OUT]
                != NGX_HTTP_AI_GATEWAY_KW_NONE)
            {
                return i;
            }
        }

        if (j >= len - 1) {
            return len;
        }

        i = j + 1;
    }
}


#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)

/*
 * The prefilter with AVX2, 32 places a step, from *at: the candidates of
 * the 16-byte steps below (word starts, the leading bytes that need none)
 * that also pass the nibble tables of their three bytes are hashed.
 * Returns the first that passes tri[], or len with *at where the steps
 * stopped (fewer than 32 + 3 bytes left).
 */


__attribute__((target("avx2")))
static size_t
ngx_http_ai_gateway_kw_lead32(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t *at)
{
    size_t    i, j;
    uint32_t  x, w, h, cand, cin, pass;
    unsigned  k, n;
    __m256i   v, v1, v2, nib, r, lo[3], hi[3];

    for (k = 0; k < 3; k++) {
        lo[k] = ngx_http_ai_gateway_simd_table(kw->tlo[k]);
        hi[k] = ngx_http_ai_gateway_simd_table(kw->thi[k]);
    }

    nib = _mm256_set1_epi8(0x0f);
    n = kw->npunct;
    i = *at;

    cin = (i > 0 && ngx_http_ai_gateway_kw_wordbyte(p[i - 1]));

    /* each place has its next two bytes, and a fourth one for the hash */

    for ( /* void */ ; len - i >= 32 + 3; i += 32) {
        v = _mm256_loadu_si256((const __m256i *) (p + i));

        w = (uint32_t) _mm256_movemask_epi8(ngx_http_ai_gateway_simd_word(v));
        h = (uint32_t) _mm256_movemask_epi8(v);

        /* word bytes after no word byte, as the 16-byte steps */
        cand = w & ~(((w | h) << 1) | cin);

        if (kw->high) {
            cand |= h;
        }

        if (kw->other) {
            cand |= ~(w | h);
        }

        for (k = 0; k < n; k++) {
            cand |= (uint32_t) _mm256_movemask_epi8(
                        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(
                                                   (char) kw->punct[k])));
        }

        cin = (w | h) >> 31;

        if (cand == 0) {
            continue;
        }

        v1 = _mm256_loadu_si256((const __m256i *) (p + i + 1));
        v2 = _mm256_loadu_si256((const __m256i *) (p + i + 2));

        r = _mm256_and_si256(
                _mm256_and_si256(
                    ngx_http_ai_gateway_simd_nibbles(lo[0], hi[0], v, nib),
                    ngx_http_ai_gateway_simd_nibbles(lo[1], hi[1], v1, nib)),
                ngx_http_ai_gateway_simd_nibbles(lo[2], hi[2], v2, nib));

        pass = ~(uint32_t) _mm256_movemask_epi8(
                               _mm256_cmpeq_epi8(r, _mm256_setzero_si256()));

        for (cand &= pass; cand; cand &= cand - 1) {
            j = i + __builtin_ctz(cand);

            memcpy(&x, p + j, 4);
            x = ngx_http_ai_gateway_kw_hash(x & 0xffffff);

            if (kw->tri[x]) {
                return j;
            }
        }
    }

    *at = i;

    return len;
}

#endif


/*
 * The prefilter: from i, the first byte where an occurrence may start by
 * lead[] and tri[], or len.  With SSE2 16 bytes a step give the word
 * starts (a word byte after a byte that is no word byte) and the leading
 * bytes that need none, and only those are looked up: ordinary text has
 * two or three a step, and few of their triples lead anywhere.
 */

static ngx_http_ai_gateway_kw_inline size_t
ngx_http_ai_gateway_kw_lead(const ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len, size_t i)
{
    uint32_t  x;
    unsigned  c;
#if (NGX_HTTP_AI_GATEWAY_PII_SSE2)
    size_t    j;
    unsigned  k, n, w, h, cand, cin, extra;
    __m128i   v, word, alpha, digit, punct[4];

#if (NGX_HTTP_AI_GATEWAY_PII_AVX2)
    if (kw->avx2) {
        j = ngx_http_ai_gateway_kw_lead32(kw, p, len, &i);
        if (j < len) {
            return j;
        }
    }
#endif

    n = kw->npunct;
    extra = kw->high || kw->other || n;

    for (k = 0; k < n; k++) {
        punct[k] = _mm_set1_epi8((char) kw->punct[k]);
    }

    cin = (i > 0 && ngx_http_ai_gateway_kw_wordbyte(p[i - 1]));

    /* each candidate has two more bytes, and a fourth one to load */

    while (len - i >= 16 + 3) {
        v = _mm_loadu_si128((const __m128i *) (p + i));

        /* signed compares: x + 0x80 - lo < -0x80 + n for lo <= x < lo + n */

        alpha = _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(v,
                                                  _mm_set1_epi8(0x20)),
                                            _mm_set1_epi8(0x80 - 'a')),
                               _mm_set1_epi8(-0x80 + 26));
        digit = _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x80 - '0')),
                               _mm_set1_epi8(-0x80 + 10));
        word = _mm_or_si128(_mm_or_si128(alpha, digit),
                            _mm_cmpeq_epi8(v, _mm_set1_epi8('_')));

        w = _mm_movemask_epi8(word);
        h = _mm_movemask_epi8(v);

        /* word bytes after no word byte ([A-Za-z0-9_] or >= 0x80) */
        cand = w & ~(((w | h) << 1) | cin);

        if (extra) {
            if (kw->high) {
                cand |= h;
            }

            if (kw->other) {
                cand |= ~(w | h) & 0xffff;
            }

            for (k = 0; k < n; k++) {
                cand |= _mm_movemask_epi8(_mm_cmpeq_epi8(v, punct[k]));
            }
        }

        while (cand) {
            j = i + __builtin_ctz(cand);

            /* the byte and the next two, as the hash takes them (x86
             * is little endian) */
            memcpy(&x, p + j, 4);
            x = ngx_http_ai_gateway_kw_hash(x & 0xffffff);

            if (kw->tri[x]) {
                return j;
            }

            cand &= cand - 1;
        }

        cin = (w | h) >> 15;
        i += 16;
    }
#endif

    for ( /* void */ ; i < len; i++) {
        c = p[i];

        if (!kw->lead[c]
            || (ngx_http_ai_gateway_pii_isword(c) && i > 0
                && ngx_http_ai_gateway_kw_wordbyte(p[i - 1])))
        {
            continue;
        }

        if (len - i < 3) {
            return i;
        }

        x = ngx_http_ai_gateway_kw_hash(c | p[i + 1] << 8
                                        | (uint32_t) p[i + 2] << 16);

        if (kw->tri[x]) {
            return i;
        }
    }

    return len;
}


void
ngx_http_ai_gateway_kw_free(ngx_http_ai_gateway_kw_t *kw)
{
    if (kw == NULL || kw->a.free == NULL) {
        return;
    }

    if (kw->nodes) {
        kw->a.free(kw->a.data, kw->nodes);
    }

    if (kw->info) {
        kw->a.free(kw->a.data, kw->info);
    }

    if (kw->dfa) {
        kw->a.free(kw->a.data, kw->dfa);
    }

    kw->a.free(kw->a.data, kw);
}


/* a copy of size bytes of which used are p's; p freed */

static void *
ngx_http_ai_gateway_kw_grow(ngx_http_ai_gateway_kw_t *kw, void *p,
    size_t used, size_t size)
{
    void  *q;

    q = kw->a.alloc(kw->a.data, size);
    if (q == NULL) {
        return NULL;
    }

    if (used) {
        memcpy(q, p, used);
    }

    if (p && kw->a.free) {
        kw->a.free(kw->a.data, p);
    }

    return q;
}


/* the symbol of a byte: ASCII letters in lower case, white space ' ' */

static unsigned
ngx_http_ai_gateway_kw_fold(unsigned c)
{
    if (c >= 'A' && c <= 'Z') {
        return c | 0x20;
    }

    if (ngx_http_ai_gateway_kw_space(c)) {
        return ' ';
    }

    return c;
}


static void *
ngx_http_ai_gateway_kw_malloc(void *data, size_t size)
{
    (void) data;

    return malloc(size);
}


static void
ngx_http_ai_gateway_kw_mfree(void *data, void *p)
{
    (void) data;

    free(p);
}
