
/*
 * Unit tests for the PII detectors and the keyword engine: for each type,
 * true cases in context with their exact extent and near-misses that must
 * not match; masking output written out; the types bitmask; keywords on
 * word boundaries, phrases, overlaps and 2,000 keywords; 1 MiB inputs made
 * to defeat a careless scan (they must finish, with the expected number of
 * matches); random texts of near-miss fragments with valid items planted
 * among them, where every planted item must be found exactly and every
 * match must pass a slow reference check of its type (Luhn, mod-97 and
 * inet_pton done another way).
 */


#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_pii.h"


#include "check.h"


#define PII(t)  NGX_HTTP_AI_GATEWAY_PII_##t
#define BIT(t)  NGX_HTTP_AI_GATEWAY_PII_BIT(NGX_HTTP_AI_GATEWAY_PII_##t)
#define ALL     NGX_HTTP_AI_GATEWAY_PII_ALL

#define U(s)    ((const unsigned char *) (s))


/* the matches of one scan */

typedef struct {
    ngx_http_ai_gateway_pii_match_t  *m;
    size_t                            n;
    size_t                            cap;
    size_t                            stop_at;   /* return 9 at the n-th */
} matches_t;


static int
collect(void *data, ngx_http_ai_gateway_pii_match_t *m)
{
    matches_t  *r = data;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->m = realloc(r->m, r->cap * sizeof(*r->m));
        if (r->m == NULL) {
            abort();
        }
    }

    r->m[r->n++] = *m;

    return (r->stop_at && r->n == r->stop_at) ? 9 : 0;
}


static int
scan(const char *text, size_t len, unsigned types, matches_t *r)
{
    r->n = 0;
    return ngx_http_ai_gateway_pii_scan(U(text), len, types, collect, r);
}


static int
count_cb(void *data, ngx_http_ai_gateway_pii_match_t *m)
{
    size_t  *n = data;

    (void) m;
    (*n)++;

    return 0;
}


static size_t
count(const char *text, size_t len, unsigned types)
{
    size_t  n;

    n = 0;
    (void) ngx_http_ai_gateway_pii_scan(U(text), len, types, count_cb, &n);

    return n;
}


/* [A-Za-z0-9_] */

static int
ref_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}


/* true cases: text, and the part of it that must be matched */

typedef struct {
    int          type;
    const char  *text;
    const char  *match;
    int          noplant;     /* not to be planted alone in random texts */
} pii_case_t;


#define JWT                                                                   \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"                                    \
    ".eyJzdWIiOiIxMjM0NTY3ODkwIn0"                                            \
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

#define PEM                                                                   \
    "-----BEGIN RSA PRIVATE KEY-----\n"                                       \
    "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\n"                                  \
    "kXn9p2dVJ+Q0l8C1h2d3Y4oY6Nf0=\n"                                         \
    "-----END RSA PRIVATE KEY-----"

#define GHP  "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#define AIZA "AIzaSyA1234567890abcdefghijklmnop_-qrst"


static const pii_case_t  true_cases[] = {

    { PII(EMAIL), "Contact john.doe@example.com for details.",
      "john.doe@example.com", 0 },
    { PII(EMAIL), "jane_smith+tag@mail.co.uk", "jane_smith+tag@mail.co.uk",
      0 },
    { PII(EMAIL), "Email:alice@sub.domain.org.", "alice@sub.domain.org", 0 },
    { PII(EMAIL), "(bob-99@my-host.io)", "bob-99@my-host.io", 0 },
    { PII(EMAIL), "\xc3\xa9 john@x.org \xc3\xbc", "john@x.org", 0 },
    { PII(EMAIL), "send to \"a.b.c@d-e.fr\", thanks", "a.b.c@d-e.fr", 0 },
    { PII(EMAIL), "percent%user@example.travel!",
      "percent%user@example.travel", 0 },
    { PII(EMAIL), "see...john@example.com", "john@example.com", 0 },
    { PII(EMAIL), "x@mail.example.123 is it", "x@mail.example", 0 },
    { PII(EMAIL), "\xe9\x82\xae\xe4\xbb\xb6john@example.cn\xe8\xb0\xa2",
      "john@example.cn", 0 },
    { PII(EMAIL), "user..name@example.com", "name@example.com", 0 },
    { PII(EMAIL), "mailto:Info@Example.COM?subject=hi", "Info@Example.COM",
      0 },

    { PII(PHONE), "Call +1 555 123 4567 now", "+1 555 123 4567", 0 },
    { PII(PHONE), "+44 20 7946 0958", "+44 20 7946 0958", 0 },
    { PII(PHONE), "Tel: +49 (0)30 12345678.", "+49 (0)30 12345678", 0 },
    { PII(PHONE), "(555) 123-4567", "(555) 123-4567", 0 },
    { PII(PHONE), "my number is 555-123-4567.", "555-123-4567", 0 },
    { PII(PHONE), "555.123.4567, thanks", "555.123.4567", 0 },
    { PII(PHONE), "call 1-800-555-0199 today", "1-800-555-0199", 0 },
    { PII(PHONE), "+15551234567", "+15551234567", 0 },
    { PII(PHONE), "+33 1 23 45 67 89", "+33 1 23 45 67 89", 0 },
    { PII(PHONE), "[+1-202-555-0173]", "+1-202-555-0173", 0 },
    { PII(PHONE), "\xe7\x94\xb5\xe8\xaf\x9d+86 138 0013 8000",
      "+86 138 0013 8000", 0 },
    { PII(PHONE), "(555)123-4567", "(555)123-4567", 0 },
    { PII(PHONE), "at 555 123 4567", "555 123 4567", 0 },
    { PII(PHONE), "+1 (555) 123-4567", "+1 (555) 123-4567", 0 },
    { PII(PHONE), "+44 20 7946 0958 1 item", "+44 20 7946 0958", 0 },
    { PII(PHONE), "+1 555-123-4567", "+1 555-123-4567", 0 },
    { PII(PHONE), "+1.202.555.0173", "+1.202.555.0173", 0 },

    { PII(SSN), "SSN 123-45-6789.", "123-45-6789", 0 },
    { PII(SSN), "078-05-1120", "078-05-1120", 0 },
    { PII(SSN), "(219-09-9999)", "219-09-9999", 0 },
    { PII(SSN), "ssn:665-12-3456,", "665-12-3456", 0 },
    { PII(SSN), "123 45 6789", "123 45 6789", 0 },
    { PII(SSN), "my ssn is 899-01-0001", "899-01-0001", 0 },
    { PII(SSN), "\t001-01-0001\n", "001-01-0001", 0 },
    { PII(SSN), "667-99-9999!", "667-99-9999", 0 },
    { PII(SSN), "\xc3\xa9" "234-56-7890\xc3\xbc", "234-56-7890", 0 },

    { PII(CARD), "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111", 0 },
    { PII(CARD), "4111-1111-1111-1111", "4111-1111-1111-1111", 0 },
    { PII(CARD), "5555555555554444", "5555555555554444", 0 },
    { PII(CARD), "Amex: 3782 822463 10005.", "3782 822463 10005", 0 },
    { PII(CARD), "(6011111111111117)", "6011111111111117", 0 },
    { PII(CARD), "jcb 3530111333300000, ok", "3530111333300000", 0 },
    { PII(CARD), "diners 3056 930902 5904", "3056 930902 5904", 0 },
    { PII(CARD), "mc2 2223003122003222", "2223003122003222", 0 },
    { PII(CARD), "visa13 4222222222222;", "4222222222222", 0 },
    { PII(CARD), "4111 1111 1111 1111 12/25", "4111 1111 1111 1111", 0 },
    { PII(CARD), "long 4111 1111 1111 1111 110", "4111 1111 1111 1111 110",
      0 },
    { PII(CARD), "\xe5\x8d\xa1" "4012888888881881", "4012888888881881", 0 },
    { PII(CARD), "up 6200000000000005", "6200000000000005", 0 },

    { PII(IBAN), "IBAN DE89 3704 0044 0532 0130 00, thanks",
      "DE89 3704 0044 0532 0130 00", 0 },
    { PII(IBAN), "DE89370400440532013000", "DE89370400440532013000", 0 },
    { PII(IBAN), "(GB82 WEST 1234 5698 7654 32)",
      "GB82 WEST 1234 5698 7654 32", 0 },
    { PII(IBAN), "to GB82WEST12345698765432.", "GB82WEST12345698765432", 0 },
    { PII(IBAN), "FR14 2004 1010 0505 0001 3M02 606",
      "FR14 2004 1010 0505 0001 3M02 606", 0 },
    { PII(IBAN), "nl: NL91ABNA0417164300", "NL91ABNA0417164300", 0 },
    { PII(IBAN), "CH9300762011623852957", "CH9300762011623852957", 0 },
    { PII(IBAN), "BE68539007547034!", "BE68539007547034", 0 },
    { PII(IBAN), "ES9121000418450200051332", "ES9121000418450200051332", 0 },
    { PII(IBAN), "IT60X0542811101000000123456", "IT60X0542811101000000123456",
      0 },
    { PII(IBAN), "AT611904300234573201", "AT611904300234573201", 0 },
    { PII(IBAN), "PL61109010140000071219812874",
      "PL61109010140000071219812874", 0 },
    { PII(IBAN), "NO9386011117947", "NO9386011117947", 0 },

    { PII(IPV4), "server 192.168.1.1 is up", "192.168.1.1", 0 },
    { PII(IPV4), "10.0.0.1", "10.0.0.1", 0 },
    { PII(IPV4), "ip=8.8.8.8;", "8.8.8.8", 0 },
    { PII(IPV4), "(255.255.255.255)", "255.255.255.255", 0 },
    { PII(IPV4), "at 0.0.0.0.", "0.0.0.0", 0 },
    { PII(IPV4), "172.16.254.1:8080", "172.16.254.1", 0 },
    { PII(IPV4), "\xe5\x9c\xb0\xe5\x9d\x80" "127.0.0.1\xe5\x90\x97",
      "127.0.0.1", 0 },
    { PII(IPV4), "hosts: 1.2.3.4, and", "1.2.3.4", 0 },
    { PII(IPV4), "IP:100.64.0.10", "100.64.0.10", 0 },

    { PII(IPV6), "host 2001:db8::1 up", "2001:db8::1", 0 },
    { PII(IPV6), "::1", "::1", 0 },
    { PII(IPV6), "fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a", 0 },
    { PII(IPV6), "mapped ::ffff:192.0.2.1.", "::ffff:192.0.2.1", 0 },
    { PII(IPV6), "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
      "2001:0db8:85a3:0000:0000:8a2e:0370:7334", 0 },
    { PII(IPV6), "[2001:db8::1]:443", "2001:db8::1", 0 },
    { PII(IPV6), "prefix fe80:: here", "fe80::", 0 },
    { PII(IPV6), "addr 2001:db8:0:0:1:0:0:1.", "2001:db8:0:0:1:0:0:1", 0 },
    { PII(IPV6), "fe80::1%eth0", "fe80::1", 0 },
    { PII(IPV6), "ADDR=2001:DB8::A:1", "2001:DB8::A:1", 0 },

    { PII(SECRET), "key: AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", 0 },
    { PII(SECRET), "ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", 0 },
    { PII(SECRET), "OPENAI_API_KEY=sk-proj-abcdefghijklmnop1234567890",
      "sk-proj-abcdefghijklmnop1234567890", 0 },
    { PII(SECRET), "\"sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123\"",
      "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", 0 },
    { PII(SECRET), "token " GHP ".", GHP, 0 },
    { PII(SECRET), "key=" AIZA, AIZA, 0 },
    { PII(SECRET), "Bearer " JWT, JWT, 0 },
    { PII(SECRET), "here:\n" PEM "\nthanks", PEM, 0 },
    { PII(SECRET), "cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg",
      "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", 1 },
    { PII(SECRET), "slack xoxb-123456789012-abcdefghijkl ok",
      "xoxb-123456789012-abcdefghijkl", 0 },
    { PII(SECRET), "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
      "github_pat_11ABCDEFG0123456789_abcdefghijklmnop", 0 },
};


/* near-misses: no match of the type */

typedef struct {
    int          type;
    const char  *text;
} pii_miss_t;


static const pii_miss_t  near_misses[] = {

    { PII(EMAIL), "a@b" },
    { PII(EMAIL), "user@localhost" },
    { PII(EMAIL), "@foo.com" },
    { PII(EMAIL), "foo@.com" },
    { PII(EMAIL), "john@example.c" },
    { PII(EMAIL), "john.@example.com" },
    { PII(EMAIL), "john@-example.com" },
    { PII(EMAIL), "john@example-.com" },
    { PII(EMAIL), "john@example.com1" },
    { PII(EMAIL), "john@@example.com" },
    { PII(EMAIL), "john@example..com" },
    { PII(EMAIL), "john@example.com_x" },
    /* 65 bytes before the '@' */
    { PII(EMAIL), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaaaaaaa@example.com" },

    { PII(PHONE), "order 12345678901 shipped" },
    { PII(PHONE), "on 2024-01-15 at noon" },
    { PII(PHONE), "version 1.2.3.4" },
    { PII(PHONE), "ID 9876543210" },
    { PII(PHONE), "x555-123-4567" },
    { PII(PHONE), "12-555-123-4567" },
    { PII(PHONE), "555-123-45678" },
    { PII(PHONE), "555-123-4567-89" },
    { PII(PHONE), "+1 234" },
    { PII(PHONE), "+1234567890123456" },
    { PII(PHONE), "3+12345678" },
    { PII(PHONE), "555-123.4567" },
    { PII(PHONE), "1 2 3 4 5 6 7 8 9 0" },
    { PII(PHONE), "42 555 123 4567" },
    { PII(PHONE), "555 123 4567 8901" },
    { PII(PHONE), "+0 555 123 4567" },
    { PII(PHONE), "+1 234 1.2.3.4.5 12" },
    { PII(PHONE), "+1 2 3 4 5 6 7 8" },
    { PII(PHONE), "+1-555-123-4567.8" },
    { PII(PHONE), "+1 555-123-4567-8" },
    { PII(PHONE), "+1 5551234567 123456" },

    { PII(SSN), "000-12-3456" },
    { PII(SSN), "666-12-3456" },
    { PII(SSN), "900-12-3456" },
    { PII(SSN), "999-12-3456" },
    { PII(SSN), "123-00-4567" },
    { PII(SSN), "123-45-0000" },
    { PII(SSN), "1123-45-6789" },
    { PII(SSN), "123-45-67890" },
    { PII(SSN), "123456789" },
    { PII(SSN), "123-45 6789" },
    { PII(SSN), "a123-45-6789" },
    { PII(SSN), "9 123 45 6789" },

    { PII(CARD), "4111 1111 1111 1112" },
    { PII(CARD), "41111111111111111111" },
    { PII(CARD), "1234567812345670" },
    { PII(CARD), "x4111111111111111" },
    { PII(CARD), "4111 1111 1111 111" },
    { PII(CARD), "4111-1111-1111-1111-1111" },
    { PII(CARD), "4111 1111-1111 1111" },
    { PII(CARD), "3.4111111111111111" },
    { PII(CARD), "4111111111111111.5" },
    { PII(CARD), "4111  1111 1111 1111" },
    { PII(CARD), "411111111111" },
    { PII(CARD), "12-4111111111111111" },
    { PII(CARD), "4111 1111 1111 1111 1111" },
    { PII(CARD), "4111 1111 1111 1111 12345678" },
    { PII(CARD), "4111 1111 1111 1111 111 1111" },
    { PII(CARD), "4111 1111 1111 1111 12 34" },
    { PII(CARD), "3360 4111 1111 1111 1111" },
    { PII(CARD), "DE88 4111 1111 1111 1111 00" },

    { PII(IBAN), "DE88 3704 0044 0532 0130 00" },
    { PII(IBAN), "DE89 3704 0044 0532 0130 0" },
    { PII(IBAN), "DE893704004405320130001" },
    { PII(IBAN), "XX89370400440532013000" },
    { PII(IBAN), "de89370400440532013000" },
    { PII(IBAN), "DE89 3704 0044 0532 013000" },
    { PII(IBAN), "xDE89370400440532013000" },
    { PII(IBAN), "GB82 WEST 1234 5698 7654 33" },
    { PII(IBAN), "GB82 west 1234 5698 7654 32" },
    { PII(IBAN), "DE89  3704 0044 0532 0130 00" },

    { PII(IPV4), "1.2.3.4.5" },
    { PII(IPV4), "v1.2.3.4" },
    { PII(IPV4), "256.1.1.1" },
    { PII(IPV4), "1.2.3" },
    { PII(IPV4), "01.2.3.4" },
    { PII(IPV4), "1.2.3.04" },
    { PII(IPV4), "1.2.3.4a" },
    { PII(IPV4), "1..2.3.4" },
    { PII(IPV4), "version 10.0.19041.1" },
    { PII(IPV4), "3.1.2.3.4" },
    { PII(IPV4), "1.2.3.1000" },

    { PII(IPV6), "12:30:45" },
    { PII(IPV6), "aa:bb:cc" },
    { PII(IPV6), "Foo::Bar" },
    { PII(IPV6), "dead::beef" },
    { PII(IPV6), "1:2:3:4:5:6:7" },
    { PII(IPV6), "1:2:3:4:5:6:7:8:9" },
    { PII(IPV6), "1::2::3" },
    { PII(IPV6), "12345::1" },
    { PII(IPV6), ":: alone" },
    { PII(IPV6), "std::vector" },
    { PII(IPV6), "a::b" },
    { PII(IPV6), ":::1" },
    { PII(IPV6), "00:1A:2B:3C:4D:5E" },
    { PII(IPV6), "fe80::1g" },
    { PII(IPV6), "::ffff:1.2.3" },

    { PII(SECRET), "sk-short" },
    { PII(SECRET), "sk-abcdefghij012345678" },
    { PII(SECRET), "AKIAIOSFODNN7EXAMPL" },
    { PII(SECRET), "AKIAIOSFODNN7EXAMPLE1" },
    { PII(SECRET), "akiaIOSFODNN7EXAMPLE" },
    { PII(SECRET), "eyJhbGciOiJIUzI1NiJ9" },
    { PII(SECRET), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0" },
    { PII(SECRET), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc" },
    { PII(SECRET), "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqh\n"
                   "-----END PUBLIC KEY-----" },
    { PII(SECRET), "-----BEGIN CERTIFICATE-----" },
    { PII(SECRET), "task-sk-abcdefghijklmnopqrstuvwxyz" },
    { PII(SECRET), "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345678" },
    { PII(SECRET), "myAKIAIOSFODNN7EXAMPLE" },
    { PII(SECRET), "AIzaSyA1234567890abcdefghijklmnop_-qr" },
    { PII(SECRET), "xoxb-short" },
};


static void
test_names(void)
{
    int          t;
    const char  *name;

    for (t = 0; t < NGX_HTTP_AI_GATEWAY_PII_NTYPES; t++) {
        name = ngx_http_ai_gateway_pii_name(t);
        CHECK(name != NULL && ngx_http_ai_gateway_pii_type(U(name),
                                                           strlen(name)) == t,
              "name of type %d", t);
        CHECK(ngx_http_ai_gateway_pii_label(t) != NULL, "label of %d", t);
    }

    CHECK(strcmp(ngx_http_ai_gateway_pii_name(PII(SSN)), "ssn") == 0, "ssn");
    CHECK(strcmp(ngx_http_ai_gateway_pii_label(PII(IPV6)), "IPV6") == 0,
          "IPV6");
    CHECK(ngx_http_ai_gateway_pii_type(U("Email"), 5) == -1, "case");
    CHECK(ngx_http_ai_gateway_pii_type(U("emai"), 4) == -1, "prefix");
    CHECK(ngx_http_ai_gateway_pii_type(U("emails"), 6) == -1, "longer");
    CHECK(ngx_http_ai_gateway_pii_type(U(""), 0) == -1, "empty");
    CHECK(ngx_http_ai_gateway_pii_name(-1) == NULL
          && ngx_http_ai_gateway_pii_name(PII(NTYPES)) == NULL
          && ngx_http_ai_gateway_pii_label(PII(NTYPES)) == NULL,
          "out of range");
    CHECK(ALL == 0xff, "ALL");
}


static void
test_true_cases(void)
{
    size_t       k, start, len;
    const char  *at;
    matches_t    r;
    int          per_type[PII(NTYPES)];

    memset(&r, 0, sizeof(r));
    memset(per_type, 0, sizeof(per_type));

    for (k = 0; k < sizeof(true_cases) / sizeof(true_cases[0]); k++) {
        const pii_case_t  *c = &true_cases[k];

        at = strstr(c->text, c->match);
        if (at == NULL) {
            CHECK(0, "case %zu: bad table", k);
            continue;
        }

        start = at - c->text;
        len = strlen(c->text);

        per_type[c->type]++;

        /* the type alone, then all types: the same one match */

        scan(c->text, len, NGX_HTTP_AI_GATEWAY_PII_BIT(c->type), &r);

        CHECK(r.n == 1 && r.m[0].start == start
              && r.m[0].end == start + strlen(c->match)
              && r.m[0].type == c->type,
              "%s true case \"%s\": %zu matches, first [%zu,%zu)",
              ngx_http_ai_gateway_pii_name(c->type), c->text, r.n,
              r.n ? r.m[0].start : 0, r.n ? r.m[0].end : 0);

        scan(c->text, len, ALL, &r);

        CHECK(r.n == 1 && r.m[0].start == start
              && r.m[0].end == start + strlen(c->match)
              && r.m[0].type == c->type,
              "%s true case \"%s\" with all types: %zu matches, "
              "first %s [%zu,%zu)",
              ngx_http_ai_gateway_pii_name(c->type), c->text, r.n,
              r.n ? ngx_http_ai_gateway_pii_name(r.m[0].type) : "-",
              r.n ? r.m[0].start : 0, r.n ? r.m[0].end : 0);

        /* the match alone is the whole text */

        scan(c->match, strlen(c->match), ALL, &r);

        CHECK(r.n == 1 && r.m[0].start == 0
              && r.m[0].end == strlen(c->match) && r.m[0].type == c->type,
              "%s match \"%s\" alone", ngx_http_ai_gateway_pii_name(c->type),
              c->match);
    }

    for (k = 0; k < PII(NTYPES); k++) {
        CHECK(per_type[k] >= 8, "%s: only %d true cases",
              ngx_http_ai_gateway_pii_name(k), per_type[k]);
    }

    free(r.m);
}


static void
test_near_misses(void)
{
    size_t     k, j, len;
    matches_t  r;
    int        per_type[PII(NTYPES)];

    memset(&r, 0, sizeof(r));
    memset(per_type, 0, sizeof(per_type));

    for (k = 0; k < sizeof(near_misses) / sizeof(near_misses[0]); k++) {
        const pii_miss_t  *c = &near_misses[k];

        len = strlen(c->text);
        per_type[c->type]++;

        scan(c->text, len, NGX_HTTP_AI_GATEWAY_PII_BIT(c->type), &r);

        CHECK(r.n == 0, "%s near-miss \"%s\" matched [%zu,%zu)",
              ngx_http_ai_gateway_pii_name(c->type), c->text,
              r.n ? r.m[0].start : 0, r.n ? r.m[0].end : 0);

        scan(c->text, len, ALL, &r);

        for (j = 0; j < r.n; j++) {
            CHECK(r.m[j].type != c->type,
                  "%s near-miss \"%s\" matched with all types",
                  ngx_http_ai_gateway_pii_name(c->type), c->text);
        }
    }

    for (k = 0; k < PII(NTYPES); k++) {
        CHECK(per_type[k] >= 8, "%s: only %d near-misses",
              ngx_http_ai_gateway_pii_name(k), per_type[k]);
    }

    free(r.m);
}


/* the order of matches, overlaps, the callback, edge cases */

static void
test_specific(void)
{
    matches_t  r;
    const char *t;

    memset(&r, 0, sizeof(r));

    /* the longest match at a position wins: an e-mail address whose local
     * part is a card number */

    t = "4111111111111111@example.com";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 1 && r.m[0].type == PII(EMAIL) && r.m[0].end == strlen(t),
          "email over card");

    /* ... and a card with the e-mail type off */

    scan(t, strlen(t), ALL & ~BIT(EMAIL), &r);
    CHECK(r.n == 1 && r.m[0].type == PII(CARD) && r.m[0].end == 16,
          "card without email");

    /* leftmost first: a phone number that ends inside an address's local
     * part leaves the address out */

    t = "+1 555 123 4567.john@example.com";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 1 && r.m[0].type == PII(PHONE) && r.m[0].end == 15,
          "phone before email");

    /* several, in order */

    t = "a 10.0.0.1 b 2001:db8::2 c 123-45-6789 d x@y.io e";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 4 && r.m[0].type == PII(IPV4) && r.m[1].type == PII(IPV6)
          && r.m[2].type == PII(SSN) && r.m[3].type == PII(EMAIL),
          "four in order: %zu", r.n);

    /* the callback stops the scan */

    r.stop_at = 2;
    CHECK(scan(t, strlen(t), ALL, &r) == 9 && r.n == 2, "stop");
    r.stop_at = 0;

    /* empty text, and a one-byte one */

    CHECK(scan("", 0, ALL, &r) == 0 && r.n == 0, "empty");
    CHECK(scan("@", 1, ALL, &r) == 0 && r.n == 0, "@");
    CHECK(scan("-", 1, ALL, &r) == 0 && r.n == 0, "-");

    /* no types */

    t = "john@example.com 4111111111111111";
    CHECK(scan(t, strlen(t), 0, &r) == 0 && r.n == 0, "no types");

    /* a PEM block takes everything to its END line, PII included */

    t = "x -----BEGIN EC PRIVATE KEY-----\njohn@example.com\n"
        "-----END EC PRIVATE KEY----- then 10.1.2.3";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 2 && r.m[0].type == PII(SECRET) && r.m[0].start == 2
          && r.m[1].type == PII(IPV4), "pem then ip: %zu", r.n);

    /* "v1.2.3.4" is a version, "version 1.2.3.4" an address */

    t = "v1.2.3.4 version 1.2.3.4";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 1 && r.m[0].start == 17, "version");

    /* a lone "::" before an address */

    t = ":: ::1";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 1 && r.m[0].start == 3 && r.m[0].end == 6, ":: ::1");

    /* 64 bytes of local part, also after a dot that is punctuation; 65
     * are too many */

    {
        char  addr[128];

        memset(addr, 'a', 64);
        memcpy(addr + 64, "@example.com", 13);
        scan(addr, strlen(addr), ALL, &r);
        CHECK(r.n == 1 && r.m[0].start == 0 && r.m[0].end == 76, "64");

        addr[0] = '.';
        memset(addr + 1, 'a', 64);
        memcpy(addr + 65, "@example.com", 13);
        scan(addr, strlen(addr), ALL, &r);
        CHECK(r.n == 1 && r.m[0].start == 1 && r.m[0].end == 77, ".64");

        addr[0] = 'a';
        scan(addr, strlen(addr), ALL, &r);
        CHECK(r.n == 0, "65");

        memcpy(addr, "a..", 3);
        scan(addr, strlen(addr), ALL, &r);
        CHECK(r.n == 1 && r.m[0].start == 3, "a..62");
    }

    /* an IP range: both ends */

    t = "10.0.0.1-10.0.0.255";
    scan(t, strlen(t), ALL, &r);
    CHECK(r.n == 2 && r.m[0].end == 8 && r.m[1].start == 9, "ip range");

    free(r.m);
}


/* one of each type, to check the bitmask */

static void
test_types(void)
{
    int          t, u;
    size_t       k, len;
    matches_t    r;
    const char  *text;

    static const char  *one_of_each =
        "mail a.b@example.org, call +1 555 123 4567, ssn 123-45-6789, "
        "card 4111 1111 1111 1111, iban DE89370400440532013000, "
        "ip 192.0.2.33 and 2001:db8::7, key AKIAIOSFODNN7EXAMPLE.";

    memset(&r, 0, sizeof(r));
    text = one_of_each;
    len = strlen(text);

    scan(text, len, ALL, &r);

    CHECK(r.n == PII(NTYPES), "one of each: %zu", r.n);

    for (k = 0; k < r.n && k < PII(NTYPES); k++) {
        CHECK(r.m[k].type == (int) k, "one of each: #%zu is %s", k,
              ngx_http_ai_gateway_pii_name(r.m[k].type));
    }

    for (t = 0; t < PII(NTYPES); t++) {
        scan(text, len, NGX_HTTP_AI_GATEWAY_PII_BIT(t), &r);
        CHECK(r.n == 1 && r.m[0].type == t, "only %s: %zu",
              ngx_http_ai_gateway_pii_name(t), r.n);

        scan(text, len, ALL & ~NGX_HTTP_AI_GATEWAY_PII_BIT(t), &r);
        CHECK(r.n == PII(NTYPES) - 1, "all but %s: %zu",
              ngx_http_ai_gateway_pii_name(t), r.n);

        for (k = 0; k < r.n; k++) {
            u = r.m[k].type;
            CHECK(u != t, "all but %s: found it",
                  ngx_http_ai_gateway_pii_name(t));
        }
    }

    free(r.m);
}


static void
check_mask(const char *text, unsigned types, const char *expect,
    size_t expect_count)
{
    size_t          len, n, measured, cnt;
    unsigned char  *out;

    len = strlen(text);
    out = malloc(NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len) + 1);
    if (out == NULL) {
        abort();
    }

    measured = ngx_http_ai_gateway_pii_mask(U(text), len, types, NULL, NULL);
    n = ngx_http_ai_gateway_pii_mask(U(text), len, types, out, &cnt);
    out[n] = '\0';

    CHECK(n == strlen(expect) && memcmp(out, expect, n) == 0,
          "mask \"%s\": \"%s\", expected \"%s\"", text, out, expect);
    CHECK(measured == n, "mask \"%s\": measured %zu, wrote %zu", text,
          measured, n);
    CHECK(cnt == expect_count, "mask \"%s\": %zu matches", text, cnt);
    CHECK(n <= NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len) || len == 0,
          "mask \"%s\": over the bound", text);

    free(out);
}


static void
test_mask(void)
{
    check_mask("Email john@x.org or call +1 555 123 4567.", ALL,
               "Email [REDACTED_EMAIL] or call [REDACTED_PHONE].", 2);
    check_mask("john@x.org,jane@y.org", ALL,
               "[REDACTED_EMAIL],[REDACTED_EMAIL]", 2);
    check_mask("\xc3\xa9 john@x.org \xc3\xbc", ALL,
               "\xc3\xa9 [REDACTED_EMAIL] \xc3\xbc", 1);
    check_mask("\xe7\x94\xb5\xe8\xaf\x9d" "555-123-4567\xe3\x80\x82", ALL,
               "\xe7\x94\xb5\xe8\xaf\x9d[REDACTED_PHONE]\xe3\x80\x82", 1);
    check_mask("", ALL, "", 0);
    check_mask("nothing to see here", ALL, "nothing to see here", 0);
    check_mask("::1", ALL, "[REDACTED_IPV6]", 1);
    check_mask("::1 ::2 ::3", ALL,
               "[REDACTED_IPV6] [REDACTED_IPV6] [REDACTED_IPV6]", 3);
    check_mask("ssn 123-45-6789 card 4111111111111111 iban "
               "GB82WEST12345698765432 ip 10.1.1.1 key sk-abcdefghij"
               "0123456789xyz end", ALL,
               "ssn [REDACTED_SSN] card [REDACTED_CARD] iban [REDACTED_IBAN]"
               " ip [REDACTED_IPV4] key [REDACTED_SECRET] end", 5);
    check_mask("ip 10.1.1.1 mail a@b.io", BIT(IPV4),
               "ip [REDACTED_IPV4] mail a@b.io", 1);
    check_mask("a@b.io", 0, "a@b.io", 0);
    check_mask(PEM, ALL, "[REDACTED_SECRET]", 1);
    check_mask("start 1.2.3.4", ALL, "start [REDACTED_IPV4]", 1);
    check_mask("1.2.3.4 end", ALL, "[REDACTED_IPV4] end", 1);
}


/* keywords */

typedef struct {
    size_t  start[64];
    size_t  end[64];
    int     index[64];
    size_t  n;
} kw_hits_t;


static int
kw_collect(void *data, size_t start, size_t end, int index)
{
    kw_hits_t  *h = data;

    if (h->n < 64) {
        h->start[h->n] = start;
        h->end[h->n] = end;
        h->index[h->n] = index;
    }

    h->n++;

    return 0;
}


static ngx_http_ai_gateway_kw_t *
kw_make(const char **words, size_t n)
{
    size_t                     k;
    ngx_http_ai_gateway_kw_t  *kw;

    kw = ngx_http_ai_gateway_kw_create(NULL);
    if (kw == NULL) {
        abort();
    }

    for (k = 0; k < n; k++) {
        CHECK(ngx_http_ai_gateway_kw_add(kw, U(words[k]), strlen(words[k]))
              >= 0, "add \"%s\"", words[k]);
    }

    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile");

    return kw;
}


static void
kw_expect(ngx_http_ai_gateway_kw_t *kw, const char *text, int index,
    const char *match)
{
    int          found, i;
    size_t       start, end;
    const char  *at;

    found = ngx_http_ai_gateway_kw_find(kw, U(text), strlen(text), &start,
                                        &end, &i);

    if (match == NULL) {
        CHECK(!found, "keyword in \"%s\": found %d at [%zu,%zu)", text,
              found ? i : -1, found ? start : 0, found ? end : 0);
        return;
    }

    at = strstr(text, match);

    CHECK(found && at && i == index && start == (size_t) (at - text)
          && end == start + strlen(match),
          "keyword in \"%s\": found %d [%zu,%zu), expected %d \"%s\"", text,
          found ? i : -1, found ? start : 0, found ? end : 0, index, match);
}


static void *
pool_alloc(void *data, size_t size)
{
    size_t  *total = data;

    *total += size;

    return malloc(size);
}


static void
pool_free(void *data, void *p)
{
    (void) data;

    free(p);
}


/* an arena that never frees, as a pool would be */

static unsigned char  arena[4 * 1024 * 1024];
static size_t         arena_used;


static void *
arena_alloc(void *data, size_t size)
{
    void  *p;

    (void) data;

    size = (size + 15) & ~(size_t) 15;

    if (arena_used + size > sizeof(arena)) {
        return NULL;
    }

    p = arena + arena_used;
    arena_used += size;

    return p;
}


static void
test_keywords(void)
{
    int                                  i, rc;
    char                                 word[32], text[256], big[300];
    size_t                               k, start, end, total;
    kw_hits_t                            h;
    ngx_http_ai_gateway_kw_t            *kw;
    ngx_http_ai_gateway_kw_allocator_t   a;

    static const char  *words[] = {
        "ass",              /* 0 */
        "Hate Speech",      /* 1 */
        "new york",         /* 2 */
        "york city",        /* 3 */
        "kill  you",        /* 4: a phrase with two spaces */
        "#tag",             /* 5: starts with a non-word byte */
        "c++",              /* 6: ends with one */
        "caf\xc3\xa9",      /* 7: ends with UTF-8 */
        "\xe7\x82\xb8\xe5\xbc\xb9",  /* 8: CJK, no boundaries */
        "bomb",             /* 9 */
        "bomb maker",       /* 10 */
        "a_b",              /* 11 */
    };

    kw = kw_make(words, sizeof(words) / sizeof(words[0]));

    kw_expect(kw, "ass", 0, "ass");
    kw_expect(kw, "you ASS!", 0, "ASS");
    kw_expect(kw, "class", 0, NULL);
    kw_expect(kw, "assume", 0, NULL);
    kw_expect(kw, "bass guitar", 0, NULL);
    kw_expect(kw, "ass\xc3\xa9", 0, NULL);
    kw_expect(kw, "\xc3\xa9" "ass", 0, NULL);
    kw_expect(kw, "an_ass", 0, NULL);
    kw_expect(kw, "(ass)", 0, "ass");
    kw_expect(kw, "end with ass", 0, "ass");
    kw_expect(kw, "no HATE SPEECH here", 1, "HATE SPEECH");
    kw_expect(kw, "hate\n\t speech", 1, "hate\n\t speech");
    kw_expect(kw, "hatespeech", 1, NULL);
    kw_expect(kw, "hate speeches", 1, NULL);
    kw_expect(kw, "I love new york city", 2, "new york");
    kw_expect(kw, "the york city limits", 3, "york city");
    kw_expect(kw, "I will kill you", 4, "kill you");
    kw_expect(kw, "kill\r\nyou", 4, "kill\r\nyou");
    kw_expect(kw, "skill you", 4, NULL);
    kw_expect(kw, "a#tag", 5, "#tag");
    kw_expect(kw, "#tags", 5, NULL);
    kw_expect(kw, "I like c++.", 6, "c++");
    kw_expect(kw, "I like c++x", 6, "c++");
    kw_expect(kw, "abc++", 6, NULL);
    kw_expect(kw, "Caf\xc3\xa9s", 7, "Caf\xc3\xa9");
    kw_expect(kw, "\xe6\x88\x91\xe6\x83\xb3\xe5\x81\x9a\xe7\x82\xb8\xe5\xbc"
              "\xb9\xe5\x90\x97", 8, "\xe7\x82\xb8\xe5\xbc\xb9");
    kw_expect(kw, "a bomb maker", 10, "bomb maker");
    kw_expect(kw, "a bomb makers", 9, "bomb");
    kw_expect(kw, "a_b", 11, "a_b");
    kw_expect(kw, "a_bc", 11, NULL);
    kw_expect(kw, "", 0, NULL);
    kw_expect(kw, "   ", 0, NULL);

    /* every occurrence, overlapping ones too */

    memset(&h, 0, sizeof(h));
    rc = ngx_http_ai_gateway_kw_scan(kw, U("new york city bomb maker"), 24,
                                     kw_collect, &h);
    CHECK(rc == 0 && h.n == 4
          && h.index[0] == 2 && h.start[0] == 0 && h.end[0] == 8
          && h.index[1] == 3 && h.start[1] == 4 && h.end[1] == 13
          && h.index[2] == 9 && h.start[2] == 14 && h.end[2] == 18
          && h.index[3] == 10 && h.start[3] == 14 && h.end[3] == 24,
          "scan: %zu", h.n);

    /* adding: duplicates, errors, after compile */

    CHECK(ngx_http_ai_gateway_kw_add(kw, U("more"), 4)
          == NGX_HTTP_AI_GATEWAY_KW_COMPILED, "add after compile");

    ngx_http_ai_gateway_kw_free(kw);

    kw = ngx_http_ai_gateway_kw_create(NULL);

    CHECK(ngx_http_ai_gateway_kw_add(kw, U("  Foo   Bar "), 12) == 0, "add");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U("foo bar"), 7) == 0, "dup");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U("foo"), 3) == 1, "second");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U(""), 0)
          == NGX_HTTP_AI_GATEWAY_KW_EMPTY, "empty");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U(" \t\n"), 3)
          == NGX_HTTP_AI_GATEWAY_KW_EMPTY, "blank");

    memset(big, 'x', sizeof(big));
    CHECK(ngx_http_ai_gateway_kw_add(kw, U(big), 257)
          == NGX_HTTP_AI_GATEWAY_KW_TOO_LONG, "too long");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U(big), 256) == 2, "longest");
    CHECK(ngx_http_ai_gateway_kw_add(kw, U(big), 300)
          == NGX_HTTP_AI_GATEWAY_KW_TOO_LONG, "longer");

    CHECK(!ngx_http_ai_gateway_kw_find(kw, U("foo"), 3, &start, &end, &i),
          "not compiled");
    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile");
    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile twice");

    kw_expect(kw, "FOO BAR", 0, "FOO BAR");
    kw_expect(kw, "a foo barn", 1, "foo");

    /* the longest keyword: 255, 256 and 257 bytes of text */

    memcpy(big, "say ", 4);
    memset(big + 4, 'X', 256);
    memcpy(big + 260, " now", 5);

    CHECK(ngx_http_ai_gateway_kw_find(kw, U(big), 264, &start, &end, &i)
          && i == 2 && start == 4 && end == 260, "256-byte keyword");

    big[4] = '-';
    CHECK(!ngx_http_ai_gateway_kw_find(kw, U(big), 264, &start, &end, &i),
          "255 x");

    memset(big + 4, 'X', 257);
    memcpy(big + 261, " now", 5);
    CHECK(!ngx_http_ai_gateway_kw_find(kw, U(big), 265, &start, &end, &i),
          "257 x");

    ngx_http_ai_gateway_kw_free(kw);

    /* an empty set */

    kw = ngx_http_ai_gateway_kw_create(NULL);
    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile empty");
    CHECK(!ngx_http_ai_gateway_kw_find(kw, U("anything"), 8, &start, &end,
                                       &i), "empty set");
    ngx_http_ai_gateway_kw_free(kw);

    /* an allocator without free(), and one that runs out */

    a.alloc = arena_alloc;
    a.free = NULL;
    a.data = NULL;

    kw = ngx_http_ai_gateway_kw_create(&a);
    CHECK(kw != NULL, "arena");

    for (k = 0; k < 500; k++) {
        snprintf(word, sizeof(word), "arena%zu", k);
        CHECK(ngx_http_ai_gateway_kw_add(kw, U(word), strlen(word))
              == (int) k, "arena add");
    }

    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "arena compile");
    kw_expect(kw, "in arena123.", 123, "arena123");
    ngx_http_ai_gateway_kw_free(kw);

    arena_used = sizeof(arena) - 4096;
    kw = ngx_http_ai_gateway_kw_create(&a);
    CHECK(kw != NULL, "arena almost full");

    for (k = 0, rc = 0; k < 500 && rc >= 0; k++) {
        snprintf(word, sizeof(word), "arena%zu", k);
        rc = ngx_http_ai_gateway_kw_add(kw, U(word), strlen(word));
    }

    CHECK(rc == NGX_HTTP_AI_GATEWAY_KW_NOMEM, "arena full: %d", rc);
    arena_used = 0;

    /* 2,000 keywords through an allocator of ours */

    total = 0;
    a.alloc = pool_alloc;
    a.free = pool_free;
    a.data = &total;

    kw = ngx_http_ai_gateway_kw_create(&a);

    for (k = 0; k < 2000; k++) {
        snprintf(word, sizeof(word), "w%zuz%s", k * 7919 % 100003,
                 (k % 3) ? "" : " phrase");
        CHECK(ngx_http_ai_gateway_kw_add(kw, U(word), strlen(word))
              == (int) k, "add %s", word);
    }

    CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile 2000");
    CHECK(total > 0, "allocator used");

    for (k = 0; k < 2000; k += 37) {
        snprintf(word, sizeof(word), "w%zuz%s", k * 7919 % 100003,
                 (k % 3) ? "" : " phrase");
        snprintf(text, sizeof(text), "some text, then %s, then more", word);
        kw_expect(kw, text, (int) k, word);

        snprintf(text, sizeof(text), "some text, then %sa", word);
        kw_expect(kw, text, 0, NULL);
    }

    kw_expect(kw, "w1z w2z w3z", 0, NULL);

    ngx_http_ai_gateway_kw_free(kw);
}

/*
 * The keyword engine against a brute-force matcher on random keyword sets
 * and texts over a small alphabet (many overlaps, white space runs, UTF-8,
 * word and non-word bytes at the edges)
 */

#define REF_MAX_HITS  4096

typedef struct {
    size_t  start;
    size_t  end;
    int     index;
} ref_hit_t;


typedef struct {
    ref_hit_t  h[REF_MAX_HITS];
    size_t     n;
} ref_hits_t;


static int
ref_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
           || c == '\v';
}


static int
ref_wordbyte(int c)
{
    return ref_word(c) || c >= 0x80;
}


/* a keyword as the engine keeps it: folded, trimmed, one space a run */

static size_t
ref_normalize(const char *w, size_t len, char *out)
{
    size_t  k, n;
    int     space;

    n = 0;
    space = 0;

    for (k = 0; k < len; k++) {
        int  c = (unsigned char) w[k];

        if (ref_space(c)) {
            space = 1;
            continue;
        }

        if (space && n) {
            out[n++] = ' ';
        }

        space = 0;
        out[n++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }

    return n;
}


/* the end of an occurrence of the normalized keyword at text[s], or 0 */

static size_t
ref_match_at(const unsigned char *t, size_t len, size_t s, const char *kw,
    size_t kn)
{
    size_t  j, k;
    int     c;

    j = s;

    for (k = 0; k < kn; k++) {
        if (kw[k] == ' ') {
            if (j == len || !ref_space(t[j])) {
                return 0;
            }

            while (j < len && ref_space(t[j])) {
                j++;
            }

            continue;
        }

        if (j == len) {
            return 0;
        }

        c = t[j];
        if (c >= 'A' && c <= 'Z') {
            c += 32;
        }

        if (c != (unsigned char) kw[k]) {
            return 0;
        }

        j++;
    }

    if (ref_word((unsigned char) kw[0]) && s > 0 && ref_wordbyte(t[s - 1])) {
        return 0;
    }

    if (ref_word((unsigned char) kw[kn - 1]) && j < len
        && ref_wordbyte(t[j]))
    {
        return 0;
    }

    return j;
}


static int
ref_hit_cmp(const void *a, const void *b)
{
    const ref_hit_t  *x = a, *y = b;

    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }

    return x->index - y->index;
}


static int
kw_ref_collect(void *data, size_t start, size_t end, int index)
{
    ref_hits_t  *h = data;

    if (h->n < REF_MAX_HITS) {
        h->h[h->n].start = start;
        h->h[h->n].end = end;
        h->h[h->n].index = index;
    }

    h->n++;

    return 0;
}


/*
 * Texts of up to tokens pieces of alpha: short ones, and longer ones with
 * more bytes that keywords may start with (the prefilter's ways: word
 * starts, a few ASCII bytes, bytes >= 0x80, more ASCII bytes)
 */

static const char  *kw_alpha[] = {
    "a", "b", "A", "ab", " ", "  ", "\t", "\n", "-", "_", "1",
    "\xc3\xa9", ".", "B"
};

static const char  *kw_alpha_wide[] = {
    "a", "b", "A", "ab", " ", "  ", "\t", "\n", "-", "_", "1",
    "\xc3\xa9", ".", "B", "$", "#", "!", ",", "'", "?", "ba", "aab",
    "\xe7\x94\xb5", "bab", "   ", "1a"
};


static void
test_keywords_random(const char **alpha, size_t nalpha, size_t tokens)
{
    int                        found, index, idx[16];
    char                       words[16][16], norm[16][16], text[512];
    size_t                     round, k, j, n, nw, wl[16], nl[16], tl, e;
    size_t                     start, end, rs, re, total;
    int                        ri;
    ngx_http_ai_gateway_kw_t  *kw;
    static ref_hits_t          got, want;

    total = 0;

    for (round = 0; round < 3000; round++) {
        kw = ngx_http_ai_gateway_kw_create(NULL);

        nw = 1 + rng() % 8;

        for (k = 0; k < nw; k++) {
            wl[k] = 0;
            n = 1 + rng() % 5;

            for (j = 0; j < n; j++) {
                const char  *a = alpha[rng() % nalpha];

                if (wl[k] + strlen(a) < sizeof(words[k])) {
                    memcpy(words[k] + wl[k], a, strlen(a));
                    wl[k] += strlen(a);
                }
            }

            nl[k] = ref_normalize(words[k], wl[k], norm[k]);
            idx[k] = ngx_http_ai_gateway_kw_add(kw, U(words[k]), wl[k]);

            if (nl[k] == 0) {
                CHECK(idx[k] == NGX_HTTP_AI_GATEWAY_KW_EMPTY, "blank word");
                continue;
            }

            /* the index of its first addition */

            for (j = 0; j < k; j++) {
                if (nl[j] == nl[k] && memcmp(norm[j], norm[k], nl[k]) == 0) {
                    break;
                }
            }

            if (j < k) {
                CHECK(idx[k] == idx[j], "duplicate index");

            } else {
                CHECK(idx[k] >= 0, "index %d", idx[k]);
            }
        }

        CHECK(ngx_http_ai_gateway_kw_compile(kw) == 0, "compile");

        for (j = 0; j < 10; j++) {
            /* the AVX2 steps (where the CPU has them) and the 16-byte
             * ones, on alternate texts */
            ngx_http_ai_gateway_kw_simd(kw, j % 2 == 0);

            tl = 0;
            n = rng() % tokens;

            for (k = 0; k < n; k++) {
                const char  *a = alpha[rng() % nalpha];

                if (tl + strlen(a) < sizeof(text)) {
                    memcpy(text + tl, a, strlen(a));
                    tl += strlen(a);
                }
            }

            /* every occurrence, by brute force */

            want.n = 0;

            for (rs = 0; rs < tl; rs++) {
                for (k = 0; k < nw; k++) {
                    if (nl[k] == 0) {
                        continue;
                    }

                    /* a duplicate is reported under its first index */

                    for (e = 0; e < k; e++) {
                        if (nl[e] == nl[k]
                            && memcmp(norm[e], norm[k], nl[k]) == 0)
                        {
                            break;
                        }
                    }

                    if (e < k) {
                        continue;
                    }

                    re = ref_match_at(U(text), tl, rs, norm[k], nl[k]);

                    if (re && want.n < REF_MAX_HITS) {
                        want.h[want.n].start = rs;
                        want.h[want.n].end = re;
                        want.h[want.n].index = idx[k];
                        want.n++;
                    }
                }
            }

            qsort(want.h, want.n, sizeof(ref_hit_t), ref_hit_cmp);
            total += want.n;

            got.n = 0;
            (void) ngx_http_ai_gateway_kw_scan(kw, U(text), tl,
                                               kw_ref_collect, &got);

            CHECK(got.n == want.n, "kw random %zu/%zu: %zu occurrences, "
                  "expected %zu", round, j, got.n, want.n);

            for (k = 0; k < got.n && k < want.n; k++) {
                CHECK(got.h[k].start == want.h[k].start
                      && got.h[k].end == want.h[k].end
                      && got.h[k].index == want.h[k].index,
                      "kw random %zu/%zu: occurrence %zu [%zu,%zu) %d, "
                      "expected [%zu,%zu) %d", round, j, k, got.h[k].start,
                      got.h[k].end, got.h[k].index, want.h[k].start,
                      want.h[k].end, want.h[k].index);
            }

            /* the first: leftmost, then longest */

            found = ngx_http_ai_gateway_kw_find(kw, U(text), tl, &start,
                                                &end, &index);

            if (want.n == 0) {
                CHECK(!found, "kw random %zu/%zu: found", round, j);
                continue;
            }

            rs = want.h[0].start;
            re = want.h[0].end;
            ri = want.h[0].index;

            for (k = 1; k < want.n; k++) {
                if (want.h[k].start < rs
                    || (want.h[k].start == rs && want.h[k].end > re))
                {
                    rs = want.h[k].start;
                    re = want.h[k].end;
                    ri = want.h[k].index;
                }
            }

            CHECK(found && start == rs && end == re && index == ri,
                  "kw random %zu/%zu: first [%zu,%zu) %d, expected "
                  "[%zu,%zu) %d", round, j, found ? start : 0,
                  found ? end : 0, found ? index : -1, rs, re, ri);
        }

        ngx_http_ai_gateway_kw_free(kw);
    }

    CHECK(total > 10000, "keywords random: %zu occurrences", total);

    printf("keywords random: %zu occurrences\n", total);
}


/* the 1 MiB inputs: each must finish with the matches expected */

#define MIB  (1024 * 1024)

static char *
repeat(const char *unit, size_t len)
{
    char    *p;
    size_t   k, n;

    n = strlen(unit);
    p = malloc(len + 1);
    if (p == NULL) {
        abort();
    }

    for (k = 0; k < len; k++) {
        p[k] = unit[k % n];
    }

    p[len] = '\0';

    return p;
}


static void
test_pathological(void)
{
    char    *p;
    size_t   k, n, len;

    static const struct {
        const char  *unit;
        size_t       matches;     /* (size_t) -1: one per unit */
    } cases[] = {
        { "a", 0 },
        { "1 ", 0 },
        { "1-", 0 },
        { "1.", 0 },
        { "1", 0 },
        { "a@", 0 },
        { "@", 0 },
        { "a.", 0 },
        { ":", 0 },
        { "1:", 0 },
        { "a:", 0 },
        { "::1:", 0 },
        { "-", 0 },
        { "+", 0 },
        { "+1 ", 0 },
        { "(", 0 },
        { "(555) ", 0 },
        { "A", 0 },
        { "DE89 ", 0 },
        { "4111 ", 0 },
        { "555-", 0 },
        { "123-45-", 0 },
        { "eyJ", 0 },
        { "eyJaaaaaa.", 0 },
        { "eyJaaaaaaaaaa.", 1 },          /* one long JWT-like token */
        { "sk-", 1 },                     /* one long token */
        { "sk-aaaaaaaaaaaa ", 0 },
        { "AKIA", 0 },
        { "-----BEGIN ", 0 },
        { "-----BEGIN X-----", 0 },
        { "a.a.a.a.a.a.a.a@", 0 },
        { "x@ab.cd ", (size_t) -1 },
        { "::1 ", (size_t) -1 },
        { "1.1.1.1 ", (size_t) -1 },
        { "555-123-4567 ", (size_t) -1 },
        { "4111111111111111 ", (size_t) -1 },
    };

    len = MIB;

    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        p = repeat(cases[k].unit, len);

        n = count(p, len, ALL);

        if (cases[k].matches == (size_t) -1) {
            /* the last unit may be cut short */
            CHECK(n == len / strlen(cases[k].unit)
                  || n == (len + strlen(cases[k].unit) - 1)
                          / strlen(cases[k].unit),
                  "1 MiB of \"%s\": %zu matches", cases[k].unit, n);

        } else {
            CHECK(n == cases[k].matches, "1 MiB of \"%s\": %zu matches",
                  cases[k].unit, n);
        }

        free(p);
    }

    /* one long local part before a single '@' */

    p = repeat("a", len);
    memcpy(p + len - 12, "@example.com", 12);
    CHECK(count(p, len, ALL) == 0, "long local part");
    memcpy(p + len - 20, " bob", 4);
    memcpy(p + len - 16, "@example.com", 12);
    memset(p + len - 4, ' ', 4);
    CHECK(count(p, len, ALL) == 1, "short local part at the end");
    free(p);

    /* a PEM header with no END: one match to the end */

    p = repeat("-----BEGIN PRIVATE KEY-----\n", len);
    CHECK(count(p, len, ALL) == 1, "pem without end");
    free(p);

    /* one long token */

    p = repeat("a", len);
    memcpy(p, "sk-", 3);
    CHECK(count(p, len, ALL) == 1, "long sk- token");
    memcpy(p, "eyJ", 3);
    CHECK(count(p, len, ALL) == 0, "long eyJ segment");
    free(p);

    /* the keyword engine on the same kind of input */

    {
        int                        i;
        size_t                     start, end;
        ngx_http_ai_gateway_kw_t  *kw;
        static const char         *words[] = {
            "a", "a a", "a a a a a a a a", "aaaaaaab", "b"
        };

        kw = kw_make(words, 5);

        p = repeat("a ", len);
        CHECK(ngx_http_ai_gateway_kw_find(kw, U(p), len, &start, &end, &i)
              && start == 0 && i == 2, "keywords in a a a");
        free(p);

        p = repeat("a", len);
        CHECK(!ngx_http_ai_gateway_kw_find(kw, U(p), len, &start, &end, &i),
              "keywords in aaaa");
        p[len - 1] = 'b';
        CHECK(!ngx_http_ai_gateway_kw_find(kw, U(p), len, &start, &end, &i),
              "keywords in aaaab");
        free(p);

        ngx_http_ai_gateway_kw_free(kw);
    }
}


/* slow reference checks of a match, written apart from the detectors */

static int
ref_email(const char *s, size_t n)
{
    char        buf[512], *at, *label, *dot;
    size_t      k, local, labels, ll;
    const char  *ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789._%+-";

    if (n >= sizeof(buf)) {
        return 0;
    }

    memcpy(buf, s, n);
    buf[n] = '\0';

    at = strchr(buf, '@');
    if (at == NULL || strchr(at + 1, '@')) {
        return 0;
    }

    local = at - buf;

    if (local == 0 || local > 64 || buf[0] == '.' || at[-1] == '.'
        || strstr(buf, "..") != NULL)
    {
        return 0;
    }

    for (k = 0; k < local; k++) {
        if (strchr(ok, buf[k]) == NULL) {
            return 0;
        }
    }

    if (strlen(at + 1) > 253) {
        return 0;
    }

    labels = 0;
    label = at + 1;

    for ( ;; ) {
        dot = strchr(label, '.');
        ll = dot ? (size_t) (dot - label) : strlen(label);

        if (ll == 0 || ll > 63 || label[0] == '-' || label[ll - 1] == '-') {
            return 0;
        }

        for (k = 0; k < ll; k++) {
            if (!ref_word(label[k]) && label[k] != '-') {
                return 0;
            }

            if (label[k] == '_') {
                return 0;
            }

            if (dot == NULL && !((label[k] | 0x20) >= 'a'
                                 && (label[k] | 0x20) <= 'z'))
            {
                return 0;
            }
        }

        labels++;

        if (dot == NULL) {
            return labels >= 2 && ll >= 2;
        }

        label = dot + 1;
    }
}


/* the shape of a text: each digit as 'd' */

static void
ref_shape(const char *s, size_t n, char *out)
{
    size_t  k;

    for (k = 0; k < n; k++) {
        out[k] = (s[k] >= '0' && s[k] <= '9') ? 'd' : s[k];
    }

    out[n] = '\0';
}


static int
ref_phone(const char *s, size_t n)
{
    char         shape[64];
    size_t       k, digits;
    const char  *body;

    static const char  *nanp[] = {
        "ddd-ddd-dddd", "ddd.ddd.dddd", "ddd ddd dddd",
        "(ddd) ddd-dddd", "(ddd) ddd.dddd", "(ddd) ddd dddd",
        "(ddd)ddd-dddd", "(ddd)ddd.dddd", "(ddd)ddd dddd", NULL
    };

    if (n >= sizeof(shape)) {
        return 0;
    }

    if (s[0] == '+') {
        digits = 0;

        for (k = 1; k < n; k++) {
            if (s[k] >= '0' && s[k] <= '9') {
                digits++;

            } else if (strchr(" -.()", s[k]) == NULL) {
                return 0;
            }
        }

        return s[1] >= '1' && s[1] <= '9' && digits >= 8 && digits <= 15;
    }

    body = s;

    if (n > 2 && s[0] == '1' && strchr("-. ", s[1])) {
        ref_shape(s + 2, n - 2, shape);

        for (k = 0; nanp[k]; k++) {
            if (strcmp(shape, nanp[k]) == 0) {
                return 1;
            }
        }
    }

    ref_shape(body, n, shape);

    for (k = 0; nanp[k]; k++) {
        if (strcmp(shape, nanp[k]) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
ref_ssn(const char *s, size_t n)
{
    int   area, group, serial;
    char  shape[64];

    if (n != 11) {
        return 0;
    }

    ref_shape(s, n, shape);

    if (strcmp(shape, "ddd-dd-dddd") != 0 && strcmp(shape, "ddd dd dddd") != 0)
    {
        return 0;
    }

    area = atoi(s);
    group = atoi(s + 4);
    serial = atoi(s + 7);

    return area != 0 && area != 666 && area < 900 && group != 0
           && serial != 0;
}


static int
ref_card(const char *s, size_t n)
{
    int     sum, k, len, v;
    char    digits[32], shape[64];
    size_t  j;

    static const int  doubled[10] = { 0, 2, 4, 6, 8, 1, 3, 5, 7, 9 };

    static const char  *shapes[] = {
        "dddd dddd dddd dddd", "dddd-dddd-dddd-dddd",
        "dddd dddd dddd dddd ddd", "dddd-dddd-dddd-dddd-ddd",
        "dddd dddddd ddddd", "dddd-dddddd-ddddd",
        "dddd dddddd dddd", "dddd-dddddd-dddd",
        "dddd dddd ddddd", "dddd-dddd-ddddd", NULL
    };

    static const struct {
        const char  *lo;
        const char  *hi;
    } iin[] = {
        { "4", "4" }, { "51", "55" }, { "2221", "2720" }, { "34", "34" },
        { "37", "37" }, { "6011", "6011" }, { "65", "65" },
        { "644", "649" }, { "3528", "3589" }, { "36", "36" },
        { "38", "38" }, { "300", "305" }, { "62", "62" },
    };

    if (n >= sizeof(shape)) {
        return 0;
    }

    ref_shape(s, n, shape);
    len = 0;

    for (j = 0; j < n; j++) {
        if (s[j] >= '0' && s[j] <= '9') {
            digits[len++] = s[j];
        }
    }

    digits[len] = '\0';

    if ((size_t) len != n) {
        for (k = 0; shapes[k]; k++) {
            if (strcmp(shape, shapes[k]) == 0) {
                break;
            }
        }

        if (shapes[k] == NULL) {
            return 0;
        }
    }

    if (len < 13 || len > 19) {
        return 0;
    }

    /* Luhn from the left: the doubled digits are those of the parity of
     * len - 2 */

    sum = 0;

    for (k = 0; k < len; k++) {
        v = digits[k] - '0';
        sum += ((len - k) % 2 == 0) ? doubled[v] : v;
    }

    if (sum % 10 != 0) {
        return 0;
    }

    for (j = 0; j < sizeof(iin) / sizeof(iin[0]); j++) {
        size_t  w = strlen(iin[j].lo);

        if (strncmp(digits, iin[j].lo, w) >= 0
            && strncmp(digits, iin[j].hi, w) <= 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
ref_iban(const char *s, size_t n)
{
    char          buf[64], num[160];
    size_t        j, k, len, want;
    unsigned long r;

    static const struct {
        const char  *cc;
        size_t       len;
    } known[] = {
        { "DE", 22 }, { "GB", 22 }, { "FR", 27 }, { "NL", 18 },
        { "CH", 21 }, { "BE", 16 }, { "ES", 24 }, { "IT", 27 },
        { "AT", 20 }, { "PL", 28 }, { "NO", 15 },
    };

    len = 0;

    for (j = 0; j < n && len < sizeof(buf) - 1; j++) {
        if (s[j] != ' ') {
            buf[len++] = s[j];
        }
    }

    buf[len] = '\0';

    if (len < 15 || len > 34) {
        return 0;
    }

    for (j = 0; j < sizeof(known) / sizeof(known[0]); j++) {
        if (memcmp(buf, known[j].cc, 2) == 0) {
            want = known[j].len;
            if (len != want) {
                return 0;
            }
        }
    }

    /* the rearranged number in decimal, then mod 97 nine digits at a time */

    k = 0;

    for (j = 4; j < len + 4; j++) {
        char  c = buf[j % len];

        if (c >= '0' && c <= '9') {
            num[k++] = c;

        } else if (c >= 'A' && c <= 'Z') {
            k += sprintf(num + k, "%d", c - 'A' + 10);

        } else {
            return 0;
        }
    }

    num[k] = '\0';
    r = 0;

    for (j = 0; j < k; j += 7) {
        char  chunk[16];

        snprintf(chunk, sizeof(chunk), "%lu%.7s", r, num + j);
        r = strtoul(chunk, NULL, 10) % 97;
    }

    return r == 1;
}


static int
ref_ip(const char *s, size_t n, int family)
{
    char           buf[64];
    unsigned char  addr[16];
    size_t         k;

    if (n >= sizeof(buf)) {
        return 0;
    }

    memcpy(buf, s, n);
    buf[n] = '\0';

    if (family == AF_INET6) {
        for (k = 0; k < n; k++) {
            if (buf[k] >= '0' && buf[k] <= '9') {
                break;
            }
        }

        if (k == n) {
            return 0;
        }
    }

    return inet_pton(family, buf, addr) == 1;
}


static int
ref_secret(const char *s, size_t n)
{
    static const char  *prefix[] = {
        "-----BEGIN ", "AKIA", "ASIA", "sk-", "eyJ", "ghp_", "gho_", "ghu_",
        "ghs_", "ghr_", "github_pat_", "AIza", "xoxa-", "xoxb-", "xoxp-",
        "xoxr-", "xoxs-", NULL
    };

    size_t  k;

    for (k = 0; prefix[k]; k++) {
        if (n >= strlen(prefix[k]) + 10
            && memcmp(s, prefix[k], strlen(prefix[k])) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
ref_check(const char *text, size_t len, ngx_http_ai_gateway_pii_match_t *m)
{
    const char  *s = text + m->start;
    size_t       n = m->end - m->start;

    /* not glued to words, but a PEM block */

    if (!(m->type == PII(SECRET) && s[0] == '-')
        && ((m->start > 0 && ref_word((unsigned char) s[-1]))
            || (m->end < len && ref_word((unsigned char) text[m->end]))))
    {
        return 0;
    }

    switch (m->type) {
    case PII(EMAIL):
        return ref_email(s, n);
    case PII(PHONE):
        return ref_phone(s, n);
    case PII(SSN):
        return ref_ssn(s, n);
    case PII(CARD):
        return ref_card(s, n);
    case PII(IBAN):
        return ref_iban(s, n);
    case PII(IPV4):
        return ref_ip(s, n, AF_INET);
    case PII(IPV6):
        return ref_ip(s, n, AF_INET6);
    case PII(SECRET):
        return ref_secret(s, n);
    }

    return 0;
}


/* the fragments of random texts: near-misses of every kind */

static const char  *fragments[] = {
    " ", " ", " ", "  ", "\n", ".", ",", "-", "--", "+", "(", ")", ":", "::",
    "@", "_", "/", "%", "\xc3\xa9", "\xe7\x94\xb5",
    "a", "e", "x", "s", "A", "Z", "DE", "GB", "eyJ", "sk-", "AKIA", "AIza",
    "ghp_", "xoxb-", "ff", "fe80", "db8", "ffff", "com", "org", "io", "john",
    "mail", "example", "0", "1", "00", "12", "123", "555", "666", "2024",
    "4111", "6011", "3782", "1234", "12345", "255", "256", "01",
    "12345678901", "4111111111111111", "4111111111111112", "123-45-6789",
    "555-123-4567", "192.168.0.1", "1.2.3.4.5", "2001:db8::",
    "DE89370400440532013000", "-----END RSA PRIVATE KEY-----",
    "aaaaaaaaaaaaaaaaaaaa", "0123456789", "1 1 1 1", "1-1-1-1", "1.1.1",
};


static void
add_junk(buf_t *b, size_t pieces, int with_pem)
{
    size_t  k, f;

    for (k = 0; k < pieces; k++) {
        f = rng() % (sizeof(fragments) / sizeof(fragments[0]) + 1);

        if (f == sizeof(fragments) / sizeof(fragments[0])) {
            if (with_pem && rng() % 20 == 0) {
                buf_add(b, "-----BEGIN RSA PRIVATE KEY-----", 31);
            }

            continue;
        }

        buf_add(b, fragments[f], strlen(fragments[f]));
    }
}


static void
test_random(void)
{
    int                               ok;
    size_t                            round, k, j, nplant, c, len;
    size_t                            plant_start[8], plant_end[8];
    int                               plant_type[8];
    buf_t                             b;
    matches_t                         r, r2;
    unsigned                          types;
    unsigned char                    *out;
    size_t                            ntrue, masked, measured, found;
    size_t                            total_matches, total_planted;

    memset(&b, 0, sizeof(b));
    memset(&r, 0, sizeof(r));
    memset(&r2, 0, sizeof(r2));

    ntrue = sizeof(true_cases) / sizeof(true_cases[0]);
    total_matches = 0;
    total_planted = 0;

    for (round = 0; round < 20000; round++) {
        b.len = 0;
        buf_add(&b, "", 0);

        nplant = (round % 2) ? rng() % 8 : 0;

        for (k = 0; k < nplant; k++) {
            add_junk(&b, rng() % 12, 0);
            buf_add(&b, " | ", 3);

            do {
                c = rng() % ntrue;
            } while (true_cases[c].noplant);

            plant_start[k] = b.len;
            buf_add(&b, true_cases[c].match, strlen(true_cases[c].match));
            plant_end[k] = b.len;
            plant_type[k] = true_cases[c].type;
            buf_add(&b, " | ", 3);
        }

        add_junk(&b, rng() % 24, nplant == 0);

        len = b.len;
        types = (round % 5 == 0) ? (unsigned) (rng() & ALL) : ALL;

        /* without the AVX2 steps first: the same matches with them */
        ngx_http_ai_gateway_pii_simd(0);
        scan(b.p, len, types, &r);
        ngx_http_ai_gateway_pii_simd(1);
        scan(b.p, len, types, &r2);

        ok = (r.n == r2.n);

        for (k = 0; ok && k < r.n; k++) {
            ok = r.m[k].start == r2.m[k].start && r.m[k].end == r2.m[k].end
                 && r.m[k].type == r2.m[k].type;
        }

        CHECK(ok, "random %zu: %zu matches with AVX2, %zu without", round,
              r2.n, r.n);

        total_matches += r.n;

        for (k = 0; k < r.n; k++) {
            ngx_http_ai_gateway_pii_match_t  *m = &r.m[k];

            ok = m->start < m->end && m->end <= len
                 && (k == 0 || m->start >= r.m[k - 1].end)
                 && m->type >= 0 && m->type < PII(NTYPES)
                 && (types & NGX_HTTP_AI_GATEWAY_PII_BIT(m->type));

            CHECK(ok, "random %zu: match %zu [%zu,%zu) %d out of order or "
                  "range", round, k, m->start, m->end, m->type);

            if (ok) {
                CHECK(ref_check(b.p, len, m),
                      "random %zu: %s \"%.*s\" fails the reference check",
                      round, ngx_http_ai_gateway_pii_name(m->type),
                      (int) (m->end - m->start), b.p + m->start);
            }
        }

        if (types == ALL) {
            for (k = 0; k < nplant; k++) {
                found = 0;

                for (j = 0; j < r.n; j++) {
                    if (r.m[j].start == plant_start[k]
                        && r.m[j].end == plant_end[k]
                        && r.m[j].type == plant_type[k])
                    {
                        found = 1;
                        break;
                    }
                }

                total_planted++;

                CHECK(found, "random %zu: planted %s \"%.*s\" not found in "
                      "\"%s\"", round,
                      ngx_http_ai_gateway_pii_name(plant_type[k]),
                      (int) (plant_end[k] - plant_start[k]),
                      b.p + plant_start[k], b.p);
            }
        }

        /* masking: the bound holds, measuring agrees with writing */

        if (round % 10 == 0) {
            out = malloc(NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len) + 1);
            measured = ngx_http_ai_gateway_pii_mask(U(b.p), len, types, NULL,
                                                    NULL);
            masked = ngx_http_ai_gateway_pii_mask(U(b.p), len, types, out,
                                                  &c);
            CHECK(masked == measured && c == r.n
                  && masked <= NGX_HTTP_AI_GATEWAY_PII_MASK_BOUND(len),
                  "random %zu: mask %zu %zu %zu", round, masked, measured, c);
            free(out);
        }
    }

    CHECK(total_matches > 20000 && total_planted > 10000,
          "random: %zu matches, %zu planted", total_matches, total_planted);

    printf("random: %zu matches, %zu planted items found\n", total_matches,
           total_planted);

    buf_free(&b);
    free(r.m);
    free(r2.m);
}


int
main(void)
{
    test_names();
    test_true_cases();
    test_near_misses();
    test_specific();
    test_types();
    test_mask();
    test_keywords();
    test_keywords_random(kw_alpha, sizeof(kw_alpha) / sizeof(kw_alpha[0]),
                         40);
    test_keywords_random(kw_alpha_wide,
                         sizeof(kw_alpha_wide) / sizeof(kw_alpha_wide[0]),
                         200);
    test_pathological();
    test_random();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
