
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Times the guardrail text engines: the PII scan with all types on
 *   (a) 1 MiB of 'a',
 *   (b) a 1 MiB prompt of near-miss numbers: digit groups that are almost
 *       cards, phone numbers, SSNs, IBANs, addresses (Luhn off by one, a
 *       digit too many, invalid areas, wrong check digits, dates, times,
 *       versions, order numbers),
 *   (c) 4 KiB of ordinary English with a few PII items;
 * then masking of (c), and the keyword engine (2,000 keywords) on (b) and
 * (c).  Not a test: it prints MB/s (10^6 bytes of text per second of the
 * process's CPU time, which other load on a shared machine disturbs less
 * than wall time) and the matches found.
 *
 *   cd build && cmake .. && make bench_pii && ./bench_pii [a|b|c|mask|kw]
 *
 * An argument runs only the figures whose name starts with it (for perf).
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_http_ai_gateway_pii.h"


#define BENCH_MIB  (1024 * 1024)


static uint64_t     bench_rng_state = 0x2545f4914f6cdd1dULL;
static const char  *bench_only;


static size_t bench_near_miss_draw(char *p);


static uint64_t
bench_rng(void)
{
    bench_rng_state ^= bench_rng_state << 13;
    bench_rng_state ^= bench_rng_state >> 7;
    bench_rng_state ^= bench_rng_state << 17;
    return bench_rng_state;
}


static double
bench_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
bench_count(void *data, ngx_http_ai_gateway_pii_match_t *m)
{
    size_t  *n = data;

    (void) m;
    (*n)++;

    return 0;
}


static int
bench_kw_count(void *data, size_t start, size_t end, int index)
{
    size_t  *n = data;

    (void) start;
    (void) end;
    (void) index;
    (*n)++;

    return 0;
}


/* n random digits */

static size_t
bench_digits(char *p, size_t n)
{
    size_t  k;

    for (k = 0; k < n; k++) {
        p[k] = '0' + bench_rng() % 10;
    }

    return n;
}


/* a 16-digit number starting with 4, Luhn-invalid, as 4-4-4-4 */

static size_t
bench_card_miss(char *p)
{
    int     k, sum, v;
    char    d[16], sep;
    size_t  n;

    d[0] = '4';
    bench_digits(d + 1, 15);

    sum = 0;

    for (k = 0; k < 16; k++) {
        v = d[15 - k] - '0';

        if (k & 1) {
            v = (v * 2 > 9) ? v * 2 - 9 : v * 2;
        }

        sum += v;
    }

    if (sum % 10 == 0) {
        d[15] = (d[15] == '9') ? '0' : d[15] + 1;
    }

    n = 0;
    sep = (bench_rng() & 1) ? ' ' : '-';

    for (k = 0; k < 4; k++) {
        if (k) {
            p[n++] = sep;
        }

        memcpy(p + n, d + k * 4, 4);
        n += 4;
    }

    return n;
}


/* one near-miss item; one that is valid by chance (a checksum) is drawn
 * again */

static size_t
bench_near_miss(char *p)
{
    size_t  n, found;

    do {
        n = bench_near_miss_draw(p);
        found = 0;
        (void) ngx_http_ai_gateway_pii_scan((unsigned char *) p, n,
                                            NGX_HTTP_AI_GATEWAY_PII_ALL,
                                            bench_count, &found);
    } while (found);

    return n;
}


static size_t
bench_near_miss_draw(char *p)
{
    size_t  n;

    switch (bench_rng() % 10) {

    case 0:
        return bench_card_miss(p);

    case 1:
        /* a phone number with a digit too many */
        n = bench_digits(p, 3);
        p[n++] = '-';
        n += bench_digits(p + n, 3);
        p[n++] = '-';
        n += bench_digits(p + n, 5);
        return n;

    case 2:
        /* an SSN with an area of 9xx */
        p[0] = '9';
        n = 1 + bench_digits(p + 1, 2);
        p[n++] = '-';
        n += bench_digits(p + n, 2);
        p[n++] = '-';
        n += bench_digits(p + n, 4);
        return n;

    case 3:
        /* an IBAN with check digits that are wrong */
        memcpy(p, "DE88 3704 0044 0532 0130 00", 27);
        bench_digits(p + 5, 4);
        return 27;

    case 4:
        memcpy(p, "2024-01-15", 10);
        bench_digits(p + 8, 2);
        return 10;

    case 5:
        memcpy(p, "12:30:45", 8);
        return 8;

    case 6:
        memcpy(p, "1.2.3.4.5", 9);
        return 9;

    case 7:
        /* an order number */
        return bench_digits(p, 11 + bench_rng() % 6);

    case 8:
        memcpy(p, "+1 234", 6);
        return 6;

    default:
        /* 20 digits in groups of four */
        n = 0;
        while (n < 24) {
            n += bench_digits(p + n, 4);
            p[n++] = ' ';
        }
        return n - 1;
    }
}


static const char  *bench_paragraph =
    "The quarterly report was finished late on Thursday evening, after the "
    "team had gone through every section twice. Our customers asked for a "
    "simpler way to export their data, and the new settings page should "
    "make that easier. Please review the attached summary before the "
    "meeting, and let me know whether the numbers in the second table look "
    "right to you. We also need to decide who will present the roadmap, "
    "since Maria is travelling next week and cannot join the call. ";

static const char  *bench_items[] = {
    "Contact me at maria.lopez@example.com if anything is unclear. ",
    "My phone is +1 415 555 0132, call after five. ",
    "The staging server is at 10.20.30.40 behind the VPN. ",
    "Use the card 4111 1111 1111 1111 for the test order. ",
};


static int
bench_skip(const char *kind, const char *name)
{
    if (bench_only == NULL) {
        return 0;
    }

    return strncmp(bench_only, kind, strlen(bench_only)) != 0
           && strncmp(bench_only, name + 1, strlen(bench_only)) != 0;
}


static void
bench_run(const char *name, const unsigned char *p, size_t len)
{
    size_t  n, iters;
    double  t0, t;

    if (bench_skip("scan", name)) {
        return;
    }

    iters = 0;
    t0 = bench_now();

    do {
        n = 0;
        (void) ngx_http_ai_gateway_pii_scan(p, len,
                                            NGX_HTTP_AI_GATEWAY_PII_ALL,
                                            bench_count, &n);
        iters++;
        t = bench_now() - t0;
    } while (t < 0.5 || iters < 3);

    printf("pii scan   %-34s %8.1f MB/s  (%zu matches)\n", name,
           (double) len * iters / t / 1e6, n);
}


static void
bench_mask(const char *name, const unsigned char *p, size_t len)
{
    size_t          n, iters, out_len;
    double          t0, t;
    unsigned char  *out;

    if (bench_skip("mask", name)) {
        return;
    }

    out = malloc(NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len));
    if (out == NULL) {
        exit(1);
    }

    iters = 0;
    t0 = bench_now();

    do {
        out_len = ngx_http_ai_gateway_pii_mask(p, len,
                                               NGX_HTTP_AI_GATEWAY_PII_ALL,
                                               out, &n);
        iters++;
        t = bench_now() - t0;
    } while (t < 0.5 || iters < 3);

    printf("pii mask   %-34s %8.1f MB/s  (%zu matches, %zu -> %zu bytes)\n",
           name, (double) len * iters / t / 1e6, n, len, out_len);

    free(out);
}


static void
bench_kw(const char *name, ngx_http_ai_gateway_kw_t *kw,
    const unsigned char *p, size_t len)
{
    size_t  n, iters;
    double  t0, t;

    if (bench_skip("kw", name)) {
        return;
    }

    iters = 0;
    t0 = bench_now();

    do {
        n = 0;
        (void) ngx_http_ai_gateway_kw_scan(kw, p, len, bench_kw_count, &n);
        iters++;
        t = bench_now() - t0;
    } while (t < 0.5 || iters < 3);

    printf("keywords   %-34s %8.1f MB/s  (%zu occurrences)\n", name,
           (double) len * iters / t / 1e6, n);
}


int
main(int argc, char **argv)
{
    char                      *a, *miss, *text, word[32];
    size_t                     n, k, len;
    ngx_http_ai_gateway_kw_t  *kw;

    bench_only = (argc > 1) ? argv[1] : NULL;

    a = malloc(BENCH_MIB);
    miss = malloc(BENCH_MIB + 64);
    text = malloc(4096 + 1024);

    if (a == NULL || miss == NULL || text == NULL) {
        return 1;
    }

    memset(a, 'a', BENCH_MIB);

    n = 0;

    while (n < BENCH_MIB) {
        n += bench_near_miss(miss + n);
        miss[n++] = (bench_rng() % 4) ? ',' : ';';
        miss[n++] = ' ';
    }

    n = 0;
    k = 0;

    while (n < 4096) {
        len = strlen(bench_paragraph);
        memcpy(text + n, bench_paragraph, len);
        n += len;

        if (k < sizeof(bench_items) / sizeof(bench_items[0])) {
            len = strlen(bench_items[k]);
            memcpy(text + n, bench_items[k++], len);
            n += len;
        }
    }

    n = 4096;

    bench_run("(a) 1 MiB of 'a'", (unsigned char *) a, BENCH_MIB);
    bench_run("(b) 1 MiB of near-miss numbers", (unsigned char *) miss,
              BENCH_MIB);
    bench_run("(c) 4 KiB of English, 4 PII items", (unsigned char *) text,
              n);
    bench_mask("(c) 4 KiB of English, 4 PII items", (unsigned char *) text,
               n);

    kw = ngx_http_ai_gateway_kw_create(NULL);
    if (kw == NULL) {
        return 1;
    }

    for (k = 0; k < 2000; k++) {
        snprintf(word, sizeof(word), "w%zuq%s", k * 7919 % 100003,
                 (k % 4) ? "" : " phrase");
        (void) ngx_http_ai_gateway_kw_add(kw, (unsigned char *) word,
                                          strlen(word));
    }

    (void) ngx_http_ai_gateway_kw_add(kw, (unsigned char *) "Maria", 5);
    (void) ngx_http_ai_gateway_kw_add(kw, (unsigned char *) "roadmap", 7);

    if (ngx_http_ai_gateway_kw_compile(kw) != 0) {
        return 1;
    }

    bench_kw("(a) 1 MiB of 'a', 2,002 keywords", kw, (unsigned char *) a,
             BENCH_MIB);
    bench_kw("(b) near-miss numbers, 2,002 kw", kw, (unsigned char *) miss,
             BENCH_MIB);
    bench_kw("(c) 4 KiB of English, 2,002 kw", kw, (unsigned char *) text,
             n);

    ngx_http_ai_gateway_kw_free(kw);
    free(a);
    free(miss);
    free(text);

    return 0;
}
