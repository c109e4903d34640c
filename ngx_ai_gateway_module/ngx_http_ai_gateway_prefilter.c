
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The literal prefilter of PCRE2 patterns: see the header.  A pattern is
 * read as an alternation of sequences; in a sequence, runs of plain
 * characters are literals, a group is an alternation read the same way
 * (its literals a set, one of which must occur), and the sequence keeps
 * its best candidate: the one whose shortest literal is the longest.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE            /* memmem() */
#endif

#include <string.h>

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD)
#include <emmintrin.h>
#endif

/* SSSE3's byte shuffle, in functions compiled for it and called only when
 * the CPU has it */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))         \
    && !defined(NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD)
#define NGX_HTTP_AI_GATEWAY_PF_TEDDY  1
#include <tmmintrin.h>
#include "ngx_http_ai_gateway_simd.h"
#endif

#include "ngx_http_ai_gateway_prefilter.h"


typedef ngx_http_ai_gateway_prefilter_set_t  ngx_http_ai_gateway_pf_t;


/* nesting of groups read for literals; deeper gives up */
#define NGX_HTTP_AI_GATEWAY_PF_DEPTH  16


static int ngx_http_ai_gateway_pf_alt(const unsigned char *p,
    const unsigned char *end, ngx_http_ai_gateway_pf_t *out, unsigned depth,
    ngx_http_ai_gateway_prefilter_t *all);
static int ngx_http_ai_gateway_pf_seq(const unsigned char *p,
    const unsigned char *end, ngx_http_ai_gateway_pf_t *out, unsigned depth,
    ngx_http_ai_gateway_prefilter_t *all);
static const unsigned char *ngx_http_ai_gateway_pf_group(
    const unsigned char *p, const unsigned char *end,
    const unsigned char **inner, int *plain);
static const unsigned char *ngx_http_ai_gateway_pf_group_end(
    const unsigned char *p, const unsigned char *end);
static const unsigned char *ngx_http_ai_gateway_pf_class(
    const unsigned char *p, const unsigned char *end);
static const unsigned char *ngx_http_ai_gateway_pf_escape(
    const unsigned char *p, const unsigned char *end, int *literal,
    unsigned char *ch);
static const unsigned char *ngx_http_ai_gateway_pf_brace(
    const unsigned char *p, const unsigned char *end);
static const unsigned char *ngx_http_ai_gateway_pf_quantifier(
    const unsigned char *p, const unsigned char *end, int *zero);
static size_t ngx_http_ai_gateway_pf_score(const ngx_http_ai_gateway_pf_t *s);
static void ngx_http_ai_gateway_pf_better(ngx_http_ai_gateway_pf_t *best,
    const ngx_http_ai_gateway_pf_t *s, ngx_http_ai_gateway_prefilter_t *all);
static int ngx_http_ai_gateway_pf_find(const unsigned char *text, size_t len,
    const unsigned char *lit, size_t n);
#if (NGX_HTTP_AI_GATEWAY_PF_TEDDY)
static uint64_t ngx_http_ai_gateway_pf_teddy(
    const ngx_http_ai_gateway_prefilter_multi_t *m, const unsigned char *text,
    size_t len, size_t i, uint64_t found, uint64_t all,
    unsigned char lo[4][16], unsigned char hi[4][16]);
static uint64_t ngx_http_ai_gateway_pf_teddy32(
    const ngx_http_ai_gateway_prefilter_multi_t *m, const unsigned char *text,
    size_t len, uint64_t all);
#endif


#define ngx_http_ai_gateway_pf_alpha(c)                                       \
    (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')

#define ngx_http_ai_gateway_pf_digit(c)  ((c) >= '0' && (c) <= '9')

/* letters with a non-ASCII caseless twin under PCRE2_UTF (K: U+212A,
 * S: U+017F) */
#define ngx_http_ai_gateway_pf_twin(c)                                        \
    (((c) | 0x20) == 'k' || ((c) | 0x20) == 's')


void
ngx_http_ai_gateway_prefilter_init(ngx_http_ai_gateway_prefilter_t *pf,
    const unsigned char *pattern, size_t len)
{
    ngx_http_ai_gateway_pf_t  s;

    memset(pf, 0, sizeof(ngx_http_ai_gateway_prefilter_t));

    /* quoting, comments, verbs and callouts (their strings may hold
     * parentheses) change what a text means: given up */
    if (memmem(pattern, len, "\\Q", 2) || memmem(pattern, len, "(?#", 3)
        || memmem(pattern, len, "(*", 2) || memmem(pattern, len, "(?C", 3))
    {
        return;
    }

    /* without alternatives at the top, pf gets all the sets required */
    if (!ngx_http_ai_gateway_pf_alt(pattern, pattern + len, &s, 0, pf)) {
        memset(pf, 0, sizeof(ngx_http_ai_gateway_prefilter_t));
        return;
    }

    if (pf->n == 0
        && ngx_http_ai_gateway_pf_score(&s)
           >= NGX_HTTP_AI_GATEWAY_PREFILTER_MIN)
    {
        memcpy(&pf->set[0], &s, sizeof(ngx_http_ai_gateway_pf_t));
        pf->n = 1;
    }
}


/* an alternation: every branch must give literals, and the set is all of
 * them; 0: give up on the whole pattern */

static int
ngx_http_ai_gateway_pf_alt(const unsigned char *p, const unsigned char *end,
    ngx_http_ai_gateway_pf_t *out, unsigned depth,
    ngx_http_ai_gateway_prefilter_t *all)
{
    int                             literal, some;
    unsigned                        i;
    unsigned char                   ch;
    const unsigned char            *q, *start;
    ngx_http_ai_gateway_pf_t        s;

    if (depth > NGX_HTTP_AI_GATEWAY_PF_DEPTH) {
        return 0;
    }

    out->n = 0;
    some = 1;
    start = p;

    for (q = p; ; /* void */) {

        if (q < end && *q != '|') {
            if (*q == '\\') {
                q = ngx_http_ai_gateway_pf_escape(q, end, &literal, &ch);

            } else if (*q == '[') {
                q = ngx_http_ai_gateway_pf_class(q, end);

            } else if (*q == '(') {
                q = ngx_http_ai_gateway_pf_group_end(q, end);
                q = q ? q + 1 : NULL;

            } else {
                q++;
            }

            if (q == NULL) {
                return 0;
            }

            continue;
        }

        /* a branch: start .. q; the only one keeps all its sets */

        if (!ngx_http_ai_gateway_pf_seq(start, q, &s, depth,
                                        (start == p && q == end) ? all : NULL))
        {
            return 0;
        }

        if (s.n == 0 || out->n + s.n > NGX_HTTP_AI_GATEWAY_PREFILTER_SET) {
            some = 0;
        }

        for (i = 0; some && i < s.n; i++) {
            memcpy(out->lit[out->n], s.lit[i], s.len[i]);
            out->len[out->n++] = s.len[i];
        }

        if (q == end) {
            break;
        }

        start = ++q;
    }

    if (!some) {
        out->n = 0;
    }

    return 1;
}


#define ngx_http_ai_gateway_pf_end_run()                                      \
    if (rlen) {                                                               \
        run.n = 1;                                                            \
        run.len[0] = rlen;                                                    \
        ngx_http_ai_gateway_pf_better(out, &run, all);                        \
        rlen = 0;                                                             \
    }

#define ngx_http_ai_gateway_pf_add(c)                                         \
    if (rlen < NGX_HTTP_AI_GATEWAY_PREFILTER_LEN) {                           \
        run.lit[0][rlen++] = (unsigned char)                                  \
            (((c) >= 'A' && (c) <= 'Z') ? (c) | 0x20 : (c));                  \
    }

/* a sequence: its best candidate in out (n 0: none); 0: give up */

static int
ngx_http_ai_gateway_pf_seq(const unsigned char *p, const unsigned char *end,
    ngx_http_ai_gateway_pf_t *out, unsigned depth,
    ngx_http_ai_gateway_prefilter_t *all)
{
    int                        literal, zero, plain;
    size_t                     rlen;
    unsigned char              c;
    const unsigned char       *q, *inner;
    ngx_http_ai_gateway_pf_t   run, g;

    out->n = 0;
    rlen = 0;

    while (p < end) {
        c = *p;

        switch (c) {

        case '\\':
            p = ngx_http_ai_gateway_pf_escape(p, end, &literal, &c);
            if (p == NULL) {
                return 0;
            }

            if (literal) {
                goto literal;
            }

            break;

        case '[':
            p = ngx_http_ai_gateway_pf_class(p, end);
            if (p == NULL) {
                return 0;
            }

            break;

        case '(':
            q = ngx_http_ai_gateway_pf_group(p, end, &inner, &plain);
            if (q == NULL) {
                return 0;
            }

            ngx_http_ai_gateway_pf_end_run();

            p = ngx_http_ai_gateway_pf_quantifier(q + 1, end, &zero);
            if (p == NULL) {
                return 0;
            }

            if (plain && !zero) {
                if (!ngx_http_ai_gateway_pf_alt(inner, q, &g, depth + 1, NULL))
                {
                    return 0;
                }

                ngx_http_ai_gateway_pf_better(out, &g, all);
            }

            continue;

        case '.':
        case '^':
        case '$':
            p++;
            break;

        case ')':
        case '|':
        case '*':
        case '+':
        case '?':
        case '{':
            /* not where a well-formed pattern has them */
            return 0;

        default:
            if (c >= 0x80) {
                /* a non-ASCII character: caseless twins are Unicode's */
                for (p++; p < end && (*p & 0xc0) == 0x80; p++) {
                    /* void */
                }

                break;
            }

            p++;
            goto literal;
        }

        /* an item that is no literal, and its quantifier */

        ngx_http_ai_gateway_pf_end_run();

        p = ngx_http_ai_gateway_pf_quantifier(p, end, &zero);
        if (p == NULL) {
            return 0;
        }

        continue;

    literal:

        q = ngx_http_ai_gateway_pf_quantifier(p, end, &zero);
        if (q == NULL) {
            return 0;
        }

        if (ngx_http_ai_gateway_pf_twin(c)) {
            ngx_http_ai_gateway_pf_end_run();

        } else if (q == p) {
            ngx_http_ai_gateway_pf_add(c);

        } else {
            /* "c+" needs one c; "c?", "c*" and "c{0,n}" none */
            if (!zero) {
                ngx_http_ai_gateway_pf_add(c);
            }

            ngx_http_ai_gateway_pf_end_run();
        }

        p = q;
    }

    ngx_http_ai_gateway_pf_end_run();

    return 1;
}


/*
 * A group at p: returns its closing parenthesis; inner is where the
 * alternation to read starts, plain is 1 when its literals are required
 * (capturing, non-capturing, named, with options), 0 when they are not
 * (lookarounds, conditions, recursion and the like, and option settings).
 */

static const unsigned char *
ngx_http_ai_gateway_pf_group(const unsigned char *p, const unsigned char *end,
    const unsigned char **inner, int *plain)
{
    const unsigned char  *q, *s, *close;

    close = ngx_http_ai_gateway_pf_group_end(p, end);
    if (close == NULL) {
        return NULL;
    }

    *plain = 0;
    q = p + 1;

    if (q == close || *q != '?') {
        *plain = 1;
        *inner = q;
        return close;
    }

    q++;

    if (q < close && *q == ':') {
        *plain = 1;
        *inner = q + 1;
        return close;
    }

    if (q < close && (*q == '\'' || (*q == '<' && q + 1 < close
                                     && q[1] != '=' && q[1] != '!')
                      || (*q == 'P' && q + 1 < close && q[1] == '<')))
    {
        /* a named group: its name ends with ' or > */
        for (s = q + 1; s < close && *s != '>' && *s != '\''; s++) {
            /* void */
        }

        if (s < close) {
            *plain = 1;
            *inner = s + 1;
        }

        return close;
    }

    /* options: "(?i)", "(?-i)", "(?i:...)" */

    for (s = q; s < close
                && (ngx_http_ai_gateway_pf_alpha(*s) || *s == '-' || *s == '^');
         s++)
    {
        if (*s == 'x') {
            /* extended syntax: white space and # mean other things */
            return NULL;
        }
    }

    if (s > q && s < close && *s == ':') {
        *plain = 1;
        *inner = s + 1;
    }

    return close;
}


/* the parenthesis that closes the group opened at p */

static const unsigned char *
ngx_http_ai_gateway_pf_group_end(const unsigned char *p,
    const unsigned char *end)
{
    int                   literal;
    unsigned char         ch;
    unsigned              depth;

    depth = 0;

    while (p < end) {

        switch (*p) {

        case '\\':
            p = ngx_http_ai_gateway_pf_escape(p, end, &literal, &ch);
            break;

        case '[':
            p = ngx_http_ai_gateway_pf_class(p, end);
            break;

        case '(':
            depth++;
            p++;
            break;

        case ')':
            if (--depth == 0) {
                return p;
            }

            p++;
            break;

        default:
            p++;
        }

        if (p == NULL) {
            return NULL;
        }
    }

    return NULL;
}


/* past the character class at p */

static const unsigned char *
ngx_http_ai_gateway_pf_class(const unsigned char *p, const unsigned char *end)
{
    const unsigned char  *q;

    p++;

    if (p < end && *p == '^') {
        p++;
    }

    if (p < end && *p == ']') {
        p++;
    }

    while (p < end) {

        if (*p == '\\') {
            p += 2;
            continue;
        }

        if (*p == '[' && p + 1 < end && p[1] == ':') {
            /* [:alpha:] or [:^alpha:]; as in PCRE2, anything else makes
             * the '[' an ordinary character of the class */
            q = p + 2;

            if (q < end && *q == '^') {
                q++;
            }

            while (q < end && ngx_http_ai_gateway_pf_alpha(*q)) {
                q++;
            }

            if (end - q >= 2 && q[0] == ':' && q[1] == ']') {
                p = q + 2;
                continue;
            }
        }

        if (*p == ']') {
            return p + 1;
        }

        p++;
    }

    return NULL;
}


/* past the escape at p; literal 1 and ch when it stands for one ASCII
 * character */

static const unsigned char *
ngx_http_ai_gateway_pf_escape(const unsigned char *p, const unsigned char *end,
    int *literal, unsigned char *ch)
{
    unsigned char         d;
    const unsigned char  *q;

    *literal = 0;

    if (p + 1 >= end) {
        return NULL;
    }

    d = p[1];
    q = p + 2;

    if (d >= 0x80) {
        for ( /* void */ ; q < end && (*q & 0xc0) == 0x80; q++) {
            /* void */
        }

        return q;
    }

    if (!ngx_http_ai_gateway_pf_alpha(d) && !ngx_http_ai_gateway_pf_digit(d))
    {
        *literal = 1;
        *ch = d;
        return q;
    }

    switch (d) {

    case 'Q':
    case 'E':
    case 'g':
    case 'k':
        /* quoting, back references: not read */
        return NULL;

    case 'x':
        if (q < end && *q == '{') {
            return ngx_http_ai_gateway_pf_brace(q, end);
        }

        /* up to two hexadecimal digits */
        if (q < end && (ngx_http_ai_gateway_pf_digit(*q)
                        || ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'f')))
        {
            q++;

            if (q < end && (ngx_http_ai_gateway_pf_digit(*q)
                            || ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'f')))
            {
                q++;
            }
        }

        return q;

    case 'o':
    case 'N':
        if (q < end && *q == '{') {
            return ngx_http_ai_gateway_pf_brace(q, end);
        }

        return q;

    case 'p':
    case 'P':
        if (q < end && *q == '{') {
            return ngx_http_ai_gateway_pf_brace(q, end);
        }

        return (q < end) ? q + 1 : NULL;

    case 'c':
        return (q < end) ? q + 1 : NULL;

    default:
        if (ngx_http_ai_gateway_pf_digit(d)) {
            /* an octal character or a back reference */
            for ( /* void */ ; q < end && ngx_http_ai_gateway_pf_digit(*q); q++)
            {
                /* void */
            }
        }

        return q;
    }
}


static const unsigned char *
ngx_http_ai_gateway_pf_brace(const unsigned char *p, const unsigned char *end)
{
    p = memchr(p, '}', end - p);

    return p ? p + 1 : NULL;
}


/*
 * Past the quantifier at p, if any (p itself when none); zero is 1 when it
 * allows no repetition at all.  NULL: a brace that is no quantifier (a
 * literal brace is not read).
 */

static const unsigned char *
ngx_http_ai_gateway_pf_quantifier(const unsigned char *p,
    const unsigned char *end, int *zero)
{
    unsigned long  min;

    *zero = 0;

    if (p == end) {
        return p;
    }

    switch (*p) {

    case '?':
    case '*':
        *zero = 1;
        p++;
        break;

    case '+':
        p++;
        break;

    case '{':
        p++;

        if (p == end || !ngx_http_ai_gateway_pf_digit(*p)) {
            return NULL;
        }

        for (min = 0; p < end && ngx_http_ai_gateway_pf_digit(*p); p++) {
            min = min * 10 + (*p - '0');

            if (min > 65535) {
                return NULL;
            }
        }

        if (p < end && *p == ',') {
            for (p++; p < end && ngx_http_ai_gateway_pf_digit(*p); p++) {
                /* void */
            }
        }

        if (p == end || *p != '}') {
            return NULL;
        }

        p++;
        *zero = (min == 0);
        break;

    default:
        return p;
    }

    /* lazy or possessive */
    if (p < end && (*p == '?' || *p == '+')) {
        p++;
    }

    return p;
}


/* a set is as good as its shortest literal */

static size_t
ngx_http_ai_gateway_pf_score(const ngx_http_ai_gateway_pf_t *s)
{
    size_t    min;
    unsigned  i;

    if (s->n == 0) {
        return 0;
    }

    for (min = s->len[0], i = 1; i < s->n; i++) {
        if (s->len[i] < min) {
            min = s->len[i];
        }
    }

    return min;
}


/* s, a set a match needs: the best of a sequence so far, and one of the
 * sets all of which a pattern needs (the best ones, best first) */

static void
ngx_http_ai_gateway_pf_better(ngx_http_ai_gateway_pf_t *best,
    const ngx_http_ai_gateway_pf_t *s, ngx_http_ai_gateway_prefilter_t *all)
{
    size_t    a, b;
    unsigned  i, k;

    a = ngx_http_ai_gateway_pf_score(s);
    b = ngx_http_ai_gateway_pf_score(best);

    if (a > b || (a == b && a > 0 && s->n < best->n)) {
        memcpy(best, s, sizeof(ngx_http_ai_gateway_pf_t));
    }

    if (all == NULL || a < NGX_HTTP_AI_GATEWAY_PREFILTER_MIN) {
        return;
    }

    for (i = 0; i < all->n; i++) {
        if (a > ngx_http_ai_gateway_pf_score(&all->set[i])) {
            break;
        }
    }

    if (i == NGX_HTTP_AI_GATEWAY_PREFILTER_AND) {
        return;
    }

    k = (all->n < NGX_HTTP_AI_GATEWAY_PREFILTER_AND) ? all->n++ : all->n - 1;

    for ( /* void */ ; k > i; k--) {
        memcpy(&all->set[k], &all->set[k - 1],
               sizeof(ngx_http_ai_gateway_pf_t));
    }

    memcpy(&all->set[i], s, sizeof(ngx_http_ai_gateway_pf_t));
}


void
ngx_http_ai_gateway_prefilter_lower(unsigned char *dst,
    const unsigned char *src, size_t len)
{
    size_t   i;

    i = 0;

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD)
    {
        __m128i  x, upper, shift, bound, bit;

        /* 'A'..'Z' moved to -128..-103: one signed compare finds them */
        shift = _mm_set1_epi8((char) (0x80 - 'A'));
        bound = _mm_set1_epi8((char) (-128 + 26));
        bit = _mm_set1_epi8(0x20);

        for ( /* void */ ; i + 16 <= len; i += 16) {
            x = _mm_loadu_si128((const __m128i *) (src + i));
            upper = _mm_cmplt_epi8(_mm_add_epi8(x, shift), bound);
            x = _mm_or_si128(x, _mm_and_si128(upper, bit));
            _mm_storeu_si128((__m128i *) (dst + i), x);
        }
    }
#endif

    for ( /* void */ ; i < len; i++) {
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? src[i] | 0x20 : src[i];
    }
}


int
ngx_http_ai_gateway_prefilter_test(const ngx_http_ai_gateway_prefilter_t *pf,
    const unsigned char *lower, size_t len)
{
    unsigned                         i, k;
    const ngx_http_ai_gateway_pf_t  *s;

    for (k = 0; k < pf->n; k++) {
        s = &pf->set[k];

        for (i = 0; i < s->n; i++) {
            if (ngx_http_ai_gateway_pf_find(lower, len, s->lit[i], s->len[i]))
            {
                break;
            }
        }

        if (i == s->n) {
            /* none of this set's literals: no match can be */
            return 0;
        }
    }

    return 1;
}


/*
 * Is lit (n >= 2 bytes) in text: 16 places at a time, those whose first
 * and last bytes are lit's are compared in full.
 */

static int
ngx_http_ai_gateway_pf_find(const unsigned char *text, size_t len,
    const unsigned char *lit, size_t n)
{
    return ngx_http_ai_gateway_prefilter_find(text, len, lit, n) != NULL;
}


/*
 * The first occurrence of lit in text, or NULL: where the first and the
 * last byte of lit both are, 16 places a step, then a compare of the rest
 * (glibc's memmem() takes about a byte an instruction on such texts).
 */

const unsigned char *
ngx_http_ai_gateway_prefilter_find(const unsigned char *text, size_t len,
    const unsigned char *lit, size_t n)
{
    size_t  i;

    if (n > len) {
        return NULL;
    }

    if (n < 2) {
        return n == 0 ? text : memchr(text, lit[0], len);
    }

    i = 0;

#if defined(__SSE2__) && !defined(NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD)
    {
        unsigned  mask, bit;
        __m128i   first, last, a, b;

        first = _mm_set1_epi8((char) lit[0]);
        last = _mm_set1_epi8((char) lit[n - 1]);

        for ( /* void */ ; i + n - 1 + 16 <= len; i += 16) {
            a = _mm_loadu_si128((const __m128i *) (text + i));
            b = _mm_loadu_si128((const __m128i *) (text + i + n - 1));

            mask = (unsigned) _mm_movemask_epi8(
                              _mm_and_si128(_mm_cmpeq_epi8(a, first),
                                            _mm_cmpeq_epi8(b, last)));

            while (mask) {
                bit = (unsigned) __builtin_ctz(mask);

                if (memcmp(text + i + bit + 1, lit + 1, n - 2) == 0) {
                    return text + i + bit;
                }

                mask &= mask - 1;
            }
        }
    }
#endif

    for ( /* void */ ; i + n <= len; i++) {
        if (text[i] == lit[0] && text[i + n - 1] == lit[n - 1]
            && memcmp(text + i + 1, lit + 1, n - 2) == 0)
        {
            return text + i;
        }
    }

    return NULL;
}


int
ngx_http_ai_gateway_prefilter_multi_add(
    ngx_http_ai_gateway_prefilter_multi_t *m, const unsigned char *lit,
    size_t len)
{
    unsigned  i;

    if (len < NGX_HTTP_AI_GATEWAY_PREFILTER_MIN
        || len > NGX_HTTP_AI_GATEWAY_PREFILTER_LEN)
    {
        return -1;
    }

    for (i = 0; i < m->n; i++) {
        if (m->len[i] == len && memcmp(m->lit[i], lit, len) == 0) {
            return (int) i;
        }
    }

    if (m->n == NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI) {
        return -1;
    }

    memcpy(m->lit[m->n], lit, len);
    memset(m->lit[m->n] + len, 0, NGX_HTTP_AI_GATEWAY_PREFILTER_LEN - len);
    m->len[m->n] = (unsigned char) len;

    return (int) m->n++;
}


/* literal i's first bytes in the nibble tables of bucket b; a literal of
 * three bytes takes any fourth */

static void
ngx_http_ai_gateway_pf_nibbles_of(
    const ngx_http_ai_gateway_prefilter_multi_t *m, unsigned char lo[4][16],
    unsigned char hi[4][16], unsigned i, unsigned b)
{
    unsigned  k, c;
    uint64_t  x, all;

    for (k = 0; k < m->width; k++) {
        if (k == 3 && m->len[i] == 3) {
            /* the bit in all 16 entries of both tables, a word a step */
            all = 0x0101010101010101ULL << b;

            for (c = 0; c < 16; c += 8) {
                memcpy(&x, &lo[3][c], 8);
                x |= all;
                memcpy(&lo[3][c], &x, 8);

                memcpy(&x, &hi[3][c], 8);
                x |= all;
                memcpy(&hi[3][c], &x, 8);
            }

            return;
        }

        c = m->lit[i][k];
        lo[k][c & 0x0f] |= (unsigned char) (1 << b);
        hi[k][c >> 4] |= (unsigned char) (1 << b);
    }
}


/* the order of literals into buckets: three-byte ones first (they share
 * the buckets that take any fourth byte), then by their first bytes */

static int
ngx_http_ai_gateway_pf_after(const ngx_http_ai_gateway_prefilter_multi_t *m,
    unsigned a, unsigned b)
{
    if ((m->len[a] > 3) != (m->len[b] > 3)) {
        return m->len[a] > 3;
    }

    return memcmp(m->lit[a], m->lit[b], 3) > 0;
}


void
ngx_http_ai_gateway_prefilter_multi_compile(
    ngx_http_ai_gateway_prefilter_multi_t *m)
{
    unsigned       i, j, b, c;
    unsigned char  order[NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI];

    memset(m->bucket, 0, sizeof(m->bucket));
    memset(m->lo, 0, sizeof(m->lo));
    memset(m->hi, 0, sizeof(m->hi));

    /* lowercase letters share their high nibbles (6 and 7): each byte more
     * looked up divides the places that pass by about five; a bucket of
     * three-byte literals takes any fourth byte */
    m->width = 3;

    for (i = 0; i < m->n; i++) {
        if (m->len[i] >= 4) {
            m->width = 4;
        }
    }

    /*
     * Literals alike share a bucket: in their order by their first bytes,
     * cut into eight runs.  A bucket's tables then pass fewer bytes that
     * none of its literals starts with.
     */
    for (i = 0; i < m->n; i++) {
        order[i] = (unsigned char) i;
    }

    for (i = 1; i < m->n; i++) {
        for (j = i;
             j > 0 && ngx_http_ai_gateway_pf_after(m, order[j - 1], order[j]);
             j--)
        {
            c = order[j];
            order[j] = order[j - 1];
            order[j - 1] = (unsigned char) c;
        }
    }

    for (j = 0; j < m->n; j++) {
        i = order[j];
        b = (m->n <= 8) ? j : j * 8 / m->n;
        m->bucket[b] |= (uint64_t) 1 << i;

        ngx_http_ai_gateway_pf_nibbles_of(m, m->lo, m->hi, i, b);

        /* lit[] is zeroed past the literal (_add()) */
        memcpy(&m->head[i], m->lit[i], 4);
        m->head_mask[i] = 0;
        memset(&m->head_mask[i], 0xff, m->len[i] >= 4 ? 4 : 3);
    }

    m->simd = 0;

#if (NGX_HTTP_AI_GATEWAY_PF_TEDDY)
    __builtin_cpu_init();
    m->simd = __builtin_cpu_supports("avx2") ? 2
              : __builtin_cpu_supports("ssse3") ? 1 : 0;
#endif
}


uint64_t
ngx_http_ai_gateway_prefilter_multi_scan(
    const ngx_http_ai_gateway_prefilter_multi_t *m,
    const unsigned char *lower, size_t len)
{
    unsigned       i;
    uint64_t       found;
#if (NGX_HTTP_AI_GATEWAY_PF_TEDDY)
    unsigned char  lo[4][16], hi[4][16];
#endif

    if (m->n == 0 || len < NGX_HTTP_AI_GATEWAY_PREFILTER_MIN) {
        return 0;
    }

#if (NGX_HTTP_AI_GATEWAY_PF_TEDDY)
    if (m->simd) {
        found = (m->n == 64) ? ~(uint64_t) 0 : ((uint64_t) 1 << m->n) - 1;

        if (m->simd == 2) {
            return ngx_http_ai_gateway_pf_teddy32(m, lower, len, found);
        }

        memcpy(lo, m->lo, sizeof(lo));
        memcpy(hi, m->hi, sizeof(hi));

        return ngx_http_ai_gateway_pf_teddy(m, lower, len, 0, 0, found, lo,
                                            hi);
    }
#endif

    found = 0;

    for (i = 0; i < m->n; i++) {
        if (ngx_http_ai_gateway_pf_find(lower, len, m->lit[i], m->len[i])) {
            found |= (uint64_t) 1 << i;
        }
    }

    return found;
}


#if (NGX_HTTP_AI_GATEWAY_PF_TEDDY)

/* the buckets whose literals may start at each of 16 places of p (p[0] ..
 * p[18] are read) */


#define ngx_http_ai_gateway_pf_nibbles(lo, hi, v)                              \
    _mm_and_si128(_mm_shuffle_epi8(lo, _mm_and_si128(v, nib)),                \
                  _mm_shuffle_epi8(hi,                                        \
                                   _mm_and_si128(_mm_srli_epi16(v, 4), nib)))

__attribute__((target("ssse3")))
static inline __m128i
ngx_http_ai_gateway_pf_block(const __m128i *t, const unsigned char *p,
    unsigned width)
{
    __m128i  nib, r;

    nib = _mm_set1_epi8(0x0f);

    r = ngx_http_ai_gateway_pf_nibbles(t[0], t[4],
                              _mm_loadu_si128((const __m128i *) p));
    r = _mm_and_si128(r, ngx_http_ai_gateway_pf_nibbles(t[1], t[5],
                              _mm_loadu_si128((const __m128i *) (p + 1))));
    r = _mm_and_si128(r, ngx_http_ai_gateway_pf_nibbles(t[2], t[6],
                              _mm_loadu_si128((const __m128i *) (p + 2))));

    if (width == 4) {
        r = _mm_and_si128(r, ngx_http_ai_gateway_pf_nibbles(t[3], t[7],
                              _mm_loadu_si128((const __m128i *) (p + 3))));
    }

    return r;
}


/* the literals of the buckets that passed at each place, compared in full
 * in the text itself */

static inline __attribute__((always_inline)) uint64_t
ngx_http_ai_gateway_pf_verify(const ngx_http_ai_gateway_prefilter_multi_t *m,
    const unsigned char *text, size_t len, size_t at,
    const unsigned char *buckets, unsigned mask, uint64_t found)
{
    size_t    p;
    unsigned  pos, b, bits, k;
    uint32_t  head;
    uint64_t  lits;

    while (mask) {
        pos = (unsigned) __builtin_ctz(mask);
        mask &= mask - 1;
        p = at + pos;

        /* the text's next four bytes, zeros past its end */
        if (len - p >= 4) {
            memcpy(&head, text + p, 4);

        } else {
            head = 0;
            memcpy(&head, text + p, len - p);
        }

        for (bits = buckets[pos]; bits; bits &= bits - 1) {
            b = (unsigned) __builtin_ctz(bits);

            for (lits = m->bucket[b] & ~found; lits; lits &= lits - 1) {
                k = (unsigned) __builtin_ctzll(lits);

                if ((head & m->head_mask[k]) == m->head[k]
                    && p + m->len[k] <= len
                    && (m->len[k] <= 4
                        || memcmp(text + p + 4, m->lit[k] + 4,
                                  m->len[k] - 4) == 0))
                {
                    found |= (uint64_t) 1 << k;
                }
            }
        }
    }

    return found;
}


/*
 * The tables without the literals found: a common literal (" in") stops
 * passing places once it is found, where a live-bucket mask would keep
 * its bucket passing for the others'.  A bucket is built again from the
 * literals it has left.
 */

static void
ngx_http_ai_gateway_pf_drop(const ngx_http_ai_gateway_prefilter_multi_t *m,
    unsigned char lo[4][16], unsigned char hi[4][16], uint64_t gone,
    uint64_t found)
{
    unsigned   b, j, bits;
    uint64_t   left, keep, x;

    bits = 0;

    for (b = 0; b < 8; b++) {
        if (m->bucket[b] & gone) {
            bits |= 1u << b;
        }
    }

    /* the buckets' bits cleared in every entry, a word a step (this runs
     * on every literal found, in the middle of a scan) */

    keep = 0x0101010101010101ULL * (unsigned char) ~bits;

    for (j = 0; j < sizeof(lo[0]) * 4; j += 8) {
        memcpy(&x, (unsigned char *) lo + j, 8);
        x &= keep;
        memcpy((unsigned char *) lo + j, &x, 8);

        memcpy(&x, (unsigned char *) hi + j, 8);
        x &= keep;
        memcpy((unsigned char *) hi + j, &x, 8);
    }

    for (b = 0; b < 8; b++) {
        if (!(bits & (1u << b))) {
            continue;
        }

        for (left = m->bucket[b] & ~found; left; left &= left - 1) {
            ngx_http_ai_gateway_pf_nibbles_of(m, lo, hi,
                                       (unsigned) __builtin_ctzll(left), b);
        }
    }
}


/*
 * From i on, with the literals of found found already, and the tables lo,
 * hi (a copy of m's) without them.
 */

__attribute__((target("ssse3")))
static uint64_t
ngx_http_ai_gateway_pf_teddy(const ngx_http_ai_gateway_prefilter_multi_t *m,
    const unsigned char *text, size_t len, size_t i, uint64_t found,
    uint64_t all, unsigned char lo[4][16], unsigned char hi[4][16])
{
    __m128i        t[8], r;
    unsigned       mask, w;
    uint64_t       more;
    unsigned char  buckets[16];
    unsigned char  tail[16 + 3];

    for (w = 0; w < 4; w++) {
        t[w] = _mm_loadu_si128((const __m128i *) lo[w]);
        t[4 + w] = _mm_loadu_si128((const __m128i *) hi[w]);
    }

    w = m->width;

    for ( /* void */ ; i + 19 <= len; i += 16) {
        r = ngx_http_ai_gateway_pf_block(t, text + i, w);
        mask = 0xffff ^ (unsigned) _mm_movemask_epi8(
                                 _mm_cmpeq_epi8(r, _mm_setzero_si128()));

        if (mask) {
            _mm_storeu_si128((__m128i *) buckets, r);
            more = ngx_http_ai_gateway_pf_verify(m, text, len, i, buckets,
                                                 mask, found);
            if (more != found) {
                if (more == all) {
                    return more;
                }

                ngx_http_ai_gateway_pf_drop(m, lo, hi, more & ~found, more);
                found = more;

                for (w = 0; w < 4; w++) {
                    t[w] = _mm_loadu_si128((const __m128i *) lo[w]);
                    t[4 + w] = _mm_loadu_si128((const __m128i *) hi[w]);
                }

                w = m->width;
            }
        }
    }

    /* the last places, from a copy padded with zeros: a literal that
     * seems to run into them fails the comparison with the text (16 + 3
     * bytes are read from a step's start) */

    if (i + NGX_HTTP_AI_GATEWAY_PREFILTER_MIN <= len) {
        memset(tail, 0, sizeof(tail));
        memcpy(tail, text + i, len - i);

        r = ngx_http_ai_gateway_pf_block(t, tail, w);
        mask = 0xffff ^ (unsigned) _mm_movemask_epi8(
                                 _mm_cmpeq_epi8(r, _mm_setzero_si128()));

        /* places where a literal would not fit are not looked at */
        mask &= (1u << (len - i - NGX_HTTP_AI_GATEWAY_PREFILTER_MIN + 1)) - 1;

        if (mask) {
            _mm_storeu_si128((__m128i *) buckets, r);
            found = ngx_http_ai_gateway_pf_verify(m, text, len, i, buckets,
                                                  mask, found);
        }
    }

    return found;
}

/*
 * The same with AVX2, 32 places a step (the tables in both lanes); the
 * last places are left to the 16-byte steps, with what was found.
 */

/* the buckets by the byte k of each of the 32 places from p */
#define ngx_http_ai_gateway_pf_step32(t, k, p)                                \
    ngx_http_ai_gateway_simd_nibbles(t[k], t[4 + k],                          \
        _mm256_loadu_si256((const __m256i *) ((p) + (k))), nib)

__attribute__((target("avx2")))
static uint64_t
ngx_http_ai_gateway_pf_teddy32(const ngx_http_ai_gateway_prefilter_multi_t *m,
    const unsigned char *text, size_t len, uint64_t all)
{
    size_t         i;
    __m256i        t[8], r, nib;
    unsigned       mask, w;
    uint64_t       found, more;
    unsigned char  buckets[32];
    unsigned char  lo[4][16], hi[4][16];

    memcpy(lo, m->lo, sizeof(lo));
    memcpy(hi, m->hi, sizeof(hi));

    for (w = 0; w < 4; w++) {
        t[w] = ngx_http_ai_gateway_simd_table(lo[w]);
        t[4 + w] = ngx_http_ai_gateway_simd_table(hi[w]);
    }

    nib = _mm256_set1_epi8(0x0f);
    w = m->width;
    found = 0;

    /* 32 places, each with its next three bytes */

    for (i = 0; i + 32 + 3 <= len; i += 32) {
        r = ngx_http_ai_gateway_pf_step32(t, 0, text + i);
        r = _mm256_and_si256(r, ngx_http_ai_gateway_pf_step32(t, 1, text + i));
        r = _mm256_and_si256(r, ngx_http_ai_gateway_pf_step32(t, 2, text + i));

        if (w == 4) {
            r = _mm256_and_si256(r,
                                 ngx_http_ai_gateway_pf_step32(t, 3, text + i));
        }

        mask = ~(unsigned) _mm256_movemask_epi8(
                               _mm256_cmpeq_epi8(r, _mm256_setzero_si256()));

        if (mask == 0) {
            continue;
        }

        _mm256_storeu_si256((__m256i *) buckets, r);
        more = ngx_http_ai_gateway_pf_verify(m, text, len, i, buckets, mask,
                                             found);
        if (more == found) {
            continue;
        }

        if (more == all) {
            return more;
        }

        ngx_http_ai_gateway_pf_drop(m, lo, hi, more & ~found, more);
        found = more;

        for (w = 0; w < 4; w++) {
            t[w] = ngx_http_ai_gateway_simd_table(lo[w]);
            t[4 + w] = ngx_http_ai_gateway_simd_table(hi[w]);
        }

        w = m->width;
    }

    return ngx_http_ai_gateway_pf_teddy(m, text, len, i, found, all, lo, hi);
}


#endif

