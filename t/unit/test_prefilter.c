
/*
 * The literal prefilter of guardrail patterns: the literals it reads from
 * known patterns (and the patterns it gives up on), then a differential
 * test against PCRE2 (compiled as the module compiles deny patterns, with
 * JIT off so that the reference is the interpreter): on random patterns
 * and texts, whenever PCRE2 finds a match, the prefilter lets the text
 * through.  Texts are built from the patterns' own pieces, in any case and
 * with the Kelvin sign and the long s, so that many of them match.
 */


#define PCRE2_CODE_UNIT_WIDTH  8

#define _GNU_SOURCE  1    /* memmem(), the reference */
#include <pcre2.h>

#include "ngx_http_ai_gateway_prefilter.h"

#include "check.h"


/* the literals a pattern gives, "|"-separated ("" for none) */

static void
expect(const char *pattern, const char *want)
{
    char                              got[512];
    size_t                            n;
    unsigned                          i, k;
    ngx_http_ai_gateway_prefilter_t   pf;

    ngx_http_ai_gateway_prefilter_init(&pf, (const unsigned char *) pattern,
                                       strlen(pattern));

    n = 0;
    got[0] = '\0';

    for (k = 0; k < pf.n; k++) {
        for (i = 0; i < pf.set[k].n; i++) {
            n += snprintf(got + n, sizeof(got) - n, "%s%.*s",
                          i ? "|" : (k ? " & " : ""),
                          (int) pf.set[k].len[i], pf.set[k].lit[i]);
        }
    }

    CHECK(strcmp(got, want) == 0, "%s: literals \"%s\", expected \"%s\"",
          pattern, got, want);
}


static void
known_patterns(void)
{
    /* the bench's deny list */
    expect("(?i)ignore (all )?(previous|prior) instructions",
           "truction & ignore  & previou|prior &  in");
    expect("(?i)\\bDROP\\s+TABLE\\b", "table & drop");
    expect("(?i)\\b(system|developer) prompt\\b.*\\breveal\\b",
           " prompt & reveal & tem|developer");
    expect("(?i)\\bsudo\\s+rm\\s+-rf\\b", "udo & -rf");
    expect("(?i)<script\\b", "cript");
    expect("(?i)\\bunion\\s+select\\b", "union & elect");
    expect("\\b\\d{3}-\\d{2}-\\d{4}\\b.*\\bpassword\\b", "word");
    expect("(?i)\\bpretend (you are|to be) (dan|an? unfiltered)\\b",
           "pretend  & you are|to be & dan| unfiltered");
    expect("(?i)\\bbase64,[A-Za-z0-9+/]{200,}", "e64,");
    expect("(?i)\\b(api[_-]?key|secret)\\s*[:=]\\s*\\S{16,}", "api|ecret");

    /* quantifiers */
    expect("colou?r", "colo");
    expect("ab{0,2}cde", "cde");
    expect("abc{2}de", "abc");
    expect("abc+?de", "abc");
    expect("(?:foo)?barbaz", "barbaz");
    expect("(?:foo){1,3}xy", "foo");
    expect("(foo|bar)*xy", "");

    /* groups */
    expect("a(?=xyz)bcd", "bcd");
    expect("(?<!abcd)ef", "");
    expect("(?<name>alpha|beta)", "alpha|beta");
    expect("(?P<n>alpha|gamma)x", "alpha|gamma");
    expect("(?i:hello)", "hello");
    expect("abc|defg", "abc|defg");
    expect("abc|de", "");
    expect("(a|b)(cde|fgh)", "cde|fgh");

    /* escapes */
    expect("\\x41BCD", "bcd");
    expect("\\x{41}BCD", "bcd");
    expect("a\\.b\\-c", "a.b-c");
    expect("\\d+\\w\\b", "");
    expect("\\p{L}xyz\\pL", "xyz");
    expect("\\101bcd", "bcd");
    expect("[abc]+xyz[^]q]", "xyz");
    expect("[[:alpha:]]uvw", "uvw");
    expect("[[:^digit:]]uvw", "uvw");

    /* "[:" that is no POSIX class: the '[' is a character of the class,
     * and the class ends at the first ']' (found by review: the '|'
     * after it was swallowed, and "word" claimed) */
    expect("[[:;]-?\\)|[[:space:]]password", "");
    expect("[[:]|x:]]password", "");

    /* callouts: their strings may hold parentheses */
    expect("(?:(?C\")\")secretword(?C\"(\")|)", "");
    expect("abc(?C1)defg", "");

    /* given up: the whole pattern always runs */
    expect("x\\Qabcdef\\E", "");
    expect("foobar(*ACCEPT)bazqux", "");
    expect("(?x) hello world", "");
    expect("(?#note)hello", "");
    expect("(abc)\\1defg", "defg & abc");
    expect("(abc)\\g1defg", "");
    expect("abc{,3}", "");
    expect("abcd(", "");
    expect("abcd)", "");

    /* k and s end literals (U+212A and U+017F match them caselessly) */
    expect("(?i)keyboards", "eyboard");
    expect("Kelvin", "elvin");

    /* non-ASCII characters end literals too */
    expect("caf\xc3\xa9 au lait", " au lait & caf");
}


/* ---- PCRE2 differential ---- */

static const char  *atoms[] = {
    "abc", "key", "sudo", "Secret", "drop", "table", "x y", "K", "s",
    "\xc3\xa9t\xc3\xa9", "pass", "word", "42", "-", ".", "\\.", "\\-",
    "\\x41", "\\x{62}", "\\d", "\\s+", "\\b", "\\w", "[a-c]", "[^x]",
    "[K]", ".*", "(?i)", "(?-i)", "(?=ab)", "(?!cd)", "(?<=e)", "^", "$",
    "\\101", "\\p{L}", "[[:digit:]]", "[[:]", "[[:;]", "[x:]]", "(?C1)",
    "(?C\")\")", "(?:|ab)", "(?|ab|cd)"
};

static const char  *quants[] = {
    "", "", "", "?", "*", "+", "{0,2}", "{2}", "{1,}", "??", "+?", "*+"
};

static const char  *pieces[] = {
    "abc", "ABC", "aBc", "key", "KEY", "\xe2\x84\xaa" "ey", "sudo",
    "\xc5\xbf" "udo", "SUDO", "secret", "\xc5\xbf" "ecret", "drop", "DROP",
    "table", "x y", "pass", "word", "PASSWORD", "42", "-", ".", "A", "b",
    "e", " ", "\xc3\xa9t\xc3\xa9", "\xc3\x89T\xc3\x89", "ab", "cd", "K", "k",
    "s", "S", "\xe2\x84\xaa", "\xc5\xbf", "7", "_"
};

#define NELTS(a)  (sizeof(a) / sizeof((a)[0]))


static void
random_alt(buf_t *b, unsigned depth);


static void
random_seq(buf_t *b, unsigned depth)
{
    unsigned     i, n;
    const char  *q;

    n = 1 + rng() % 4;

    for (i = 0; i < n; i++) {
        if (depth < 3 && rng() % 5 == 0) {
            switch (rng() % 3) {
            case 0:
                buf_add(b, "(", 1);
                break;
            case 1:
                buf_add(b, "(?:", 3);
                break;
            default:
                buf_add(b, "(?<g", 4);
                buf_add(b, "abcdefgh" + rng() % 8, 1);
                buf_add(b, ">", 1);
                break;
            }

            random_alt(b, depth + 1);
            buf_add(b, ")", 1);

        } else {
            q = atoms[rng() % NELTS(atoms)];
            buf_add(b, q, strlen(q));
        }

        q = quants[rng() % NELTS(quants)];
        buf_add(b, q, strlen(q));
    }
}


static void
random_alt(buf_t *b, unsigned depth)
{
    unsigned  i, n;

    n = (rng() % 3 == 0) ? 2 + rng() % 2 : 1;

    for (i = 0; i < n; i++) {
        if (i) {
            buf_add(b, "|", 1);
        }

        random_seq(b, depth);
    }
}


static void
differential(void)
{
    int                               rc, err;
    buf_t                             pat, text;
    size_t                            off;
    unsigned                          i, j, k, n, compiled, matched, useful;
    unsigned char                     lower[512];
    pcre2_code                       *re;
    pcre2_match_data                 *md;
    ngx_http_ai_gateway_prefilter_t   pf;

    memset(&pat, 0, sizeof(buf_t));
    memset(&text, 0, sizeof(buf_t));

    compiled = 0;
    matched = 0;
    useful = 0;

    for (i = 0; i < 30000; i++) {
        pat.len = 0;
        random_alt(&pat, 0);

        re = pcre2_compile((PCRE2_SPTR) pat.p, pat.len,
                           PCRE2_UTF|PCRE2_MATCH_INVALID_UTF, &err, &off,
                           NULL);
        if (re == NULL) {
            continue;
        }

        compiled++;
        md = pcre2_match_data_create_from_pattern(re, NULL);

        ngx_http_ai_gateway_prefilter_init(&pf, (unsigned char *) pat.p,
                                           pat.len);
        useful += (pf.n > 0);

        for (j = 0; j < 40; j++) {
            text.len = 0;
            n = 1 + rng() % 8;

            for (k = 0; k < n; k++) {
                const char *q = pieces[rng() % NELTS(pieces)];
                buf_add(&text, q, strlen(q));
            }

            if (text.len > sizeof(lower)) {
                continue;
            }

            rc = pcre2_match(re, (PCRE2_SPTR) text.p, text.len, 0, 0, md,
                             NULL);

            if (rc < 0) {
                continue;
            }

            matched++;
            ngx_http_ai_gateway_prefilter_lower(lower,
                                                (unsigned char *) text.p,
                                                text.len);

            CHECK(ngx_http_ai_gateway_prefilter_test(&pf, lower, text.len),
                  "pattern \"%s\" matches \"%s\", the prefilter ruled it "
                  "out", pat.p, text.p);
        }

        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }

    /* the test means something only if many patterns compiled, matched,
     * and had literals */
    CHECK(compiled > 10000 && matched > 50000 && useful > 3000,
          "compiled %u, matched %u, with literals %u", compiled, matched,
          useful);

    printf("differential: %u patterns, %u with literals, %u matches\n",
           compiled, useful, matched);

    buf_free(&pat);
    buf_free(&text);
}


/* patterns and texts PCRE2 matches: the prefilter must let them through */

static void
known_matches(void)
{
    int                               rc, err;
    size_t                            off, i;
    unsigned char                     lower[64];
    pcre2_code                       *re;
    pcre2_match_data                 *md;
    ngx_http_ai_gateway_prefilter_t   pf;

    static const char  *cases[][2] = {
        { "[[:;]-?\\)|[[:space:]]password", "hi ;)" },
        { "[[:]|x:]]password", "[" },
        { "(?:(?C\")\")secretword(?C\"(\")|)", "hello" },
        { "(?i)sudo\\s+rm", "\xc5\xbfudo rm" },
        { "(?i)(api[_-]?key|secret)=", "API-\xe2\x84\xaa" "EY=" },
        { "colou?r", "color" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        re = pcre2_compile((PCRE2_SPTR) cases[i][0], PCRE2_ZERO_TERMINATED,
                           PCRE2_UTF|PCRE2_MATCH_INVALID_UTF, &err, &off,
                           NULL);

        CHECK(re != NULL, "%s compiles", cases[i][0]);

        if (re == NULL) {
            continue;
        }

        md = pcre2_match_data_create_from_pattern(re, NULL);
        rc = pcre2_match(re, (PCRE2_SPTR) cases[i][1], strlen(cases[i][1]),
                         0, 0, md, NULL);

        ngx_http_ai_gateway_prefilter_init(&pf,
                                           (const unsigned char *) cases[i][0],
                                           strlen(cases[i][0]));
        ngx_http_ai_gateway_prefilter_lower(lower,
                                            (const unsigned char *) cases[i][1],
                                            strlen(cases[i][1]));

        CHECK(rc >= 0 && ngx_http_ai_gateway_prefilter_test(&pf, lower,
                                                       strlen(cases[i][1])),
              "%s matches \"%s\" (PCRE2 %d) and passes the prefilter",
              cases[i][0], cases[i][1], rc);

        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }
}


static void
lowercase(void)
{
    unsigned       i, len;
    unsigned char  src[300], dst[300], want;

    for (len = 0; len < sizeof(src); len += 7) {
        for (i = 0; i < len; i++) {
            src[i] = (unsigned char) rng();
        }

        ngx_http_ai_gateway_prefilter_lower(dst, src, len);

        for (i = 0; i < len; i++) {
            want = (src[i] >= 'A' && src[i] <= 'Z') ? src[i] + 32 : src[i];

            if (dst[i] != want) {
                break;
            }
        }

        CHECK(i == len, "lowercase of %u bytes differs at %u", len, i);
    }
}



/*
 * prefilter_find() against memmem(): texts and needles over a small
 * alphabet (so that both often match, and first and last bytes often
 * agree where the rest does not), needles of 0 to 40 bytes, at every
 * length of text up to 200 bytes and past the 16-byte steps
 */

static void
find_vs_memmem(void)
{
    int                   i, same;
    size_t                len, n, k;
    unsigned char         text[256], lit[48];
    const unsigned char  *a, *b;

    same = 1;

    for (i = 0; i < 200000 && same; i++) {
        len = rng() % 200;
        n = (i % 7 == 0) ? rng() % 41 : rng() % 12;

        for (k = 0; k < len; k++) {
            text[k] = "ab-k"[rng() % 4];
        }

        for (k = 0; k < n; k++) {
            lit[k] = "ab-k"[rng() % 4];
        }

        if (n && len > n && rng() % 2) {
            /* plant it somewhere */
            memcpy(text + rng() % (len - n + 1), lit, n);
        }

        a = ngx_http_ai_gateway_prefilter_find(text, len, lit, n);
        b = memmem(text, len, lit, n);

        same = (a == b);

        CHECK(same, "find: %zu-byte needle in %zu bytes: %p, memmem %p", n,
              len, (const void *) a, (const void *) b);
    }
}

/*
 * The one-pass scan of many literals against a search for each: random
 * literal sets (small alphabets, so that literals share prefixes and
 * texts hold many near misses; bytes >= 0x80 and NUL too), random texts
 * of every length around the 16-byte steps, literals planted at the ends.
 * With SSSE3 this checks the nibble tables and the padded last step; the
 * portable build checks the fallback.
 */

static void
multi_vs_memmem(void)
{
    int                                    i, same, idx;
    size_t                                 len, n, k, j, at, na;
    uint64_t                               got, want;
    unsigned                               nl, l, level;
    unsigned char                          text[300], lit[40];
    const unsigned char                   *alpha;
    ngx_http_ai_gateway_prefilter_multi_t  m;

    /* the last one with bytes >= 0x80 and NUL */
    static const unsigned char  alphabets[3][6] = {
        { 'a', 'b' }, { 'a', 'b', 'c', '-' }, { 'a', 'b', 0x80, 0xff, 0, 'k' }
    };
    static const size_t  sizes[3] = { 2, 4, 6 };

    same = 1;

    for (i = 0; i < 20000 && same; i++) {
        memset(&m, 0, sizeof(m));

        alpha = alphabets[i % 3];
        na = sizes[i % 3];
        nl = 1 + rng() % ((i % 5 == 0) ? 70 : 12);

        for (l = 0; l < nl; l++) {
            n = 3 + ((i % 4 == 0) ? rng() % 30 : rng() % 4);

            for (k = 0; k < n; k++) {
                lit[k] = alpha[rng() % na];
            }

            idx = ngx_http_ai_gateway_prefilter_multi_add(&m, lit, n);

            CHECK(idx < 0 ? m.n == NGX_HTTP_AI_GATEWAY_PREFILTER_MULTI
                          : (unsigned) idx < m.n,
                  "multi: add gave %d with %u literals", idx, m.n);
        }

        CHECK(ngx_http_ai_gateway_prefilter_multi_add(&m,
                                        (const unsigned char *) "ab", 2) < 0,
              "multi: a literal shorter than the minimum was taken");

        ngx_http_ai_gateway_prefilter_multi_compile(&m);

        len = (i % 3 == 0) ? rng() % 40 : rng() % 300;

        for (k = 0; k < len; k++) {
            text[k] = alpha[rng() % na];
        }

        /* plant literals: anywhere, at the start, at the very end */
        for (j = 0; m.n && j < 3; j++) {
            l = rng() % m.n;
            n = m.len[l];

            if (len >= n && rng() % 2) {
                at = (j == 0) ? rng() % (len - n + 1)
                              : (j == 1) ? 0 : len - n;
                memcpy(text + at, m.lit[l], n);
            }
        }

        want = 0;

        for (l = 0; l < m.n; l++) {
            if (memmem(text, len, m.lit[l], m.len[l]) != NULL) {
                want |= (uint64_t) 1 << l;
            }
        }

        /* each SIMD level the CPU has (2 AVX2, 1 SSSE3), and none */
        for (level = m.simd; same; level--) {
            m.simd = level;
            got = ngx_http_ai_gateway_prefilter_multi_scan(&m, text, len);
            same = (got == want);

            CHECK(same, "multi: %u literals in %zu bytes (simd %u): found "
                  "%016llx, memmem %016llx", m.n, len, level,
                  (unsigned long long) got, (unsigned long long) want);

            if (level == 0) {
                break;
            }
        }
    }

    /* the bench's literals in a text that holds two of them */
    memset(&m, 0, sizeof(m));
    (void) ngx_http_ai_gateway_prefilter_multi_add(&m,
                                     (const unsigned char *) "truction", 8);
    (void) ngx_http_ai_gateway_prefilter_multi_add(&m,
                                     (const unsigned char *) "drop", 4);
    (void) ngx_http_ai_gateway_prefilter_multi_add(&m,
                                     (const unsigned char *) "<script", 7);
    ngx_http_ai_gateway_prefilter_multi_compile(&m);

    got = ngx_http_ai_gateway_prefilter_multi_scan(&m,
               (const unsigned char *) "please drop the instructions now",
               32);

    CHECK(got == 3, "multi: found %llx, expected 3", (unsigned long long) got);
}


int
main(void)
{
    multi_vs_memmem();
    find_vs_memmem();
    known_patterns();
    known_matches();
    lowercase();
    differential();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
