
/*
 * Unit tests for the JSON scanner: every verdict and every fact is checked
 * against jansson on the same input (fixed cases, then mutated bodies).
 */


#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_json.h"


#include "check.h"


/* the reference for input_chars: the rule of the scanner, on a jansson tree */

static uint64_t
utf8_chars(const char *s, size_t len)
{
    uint64_t  n = 0;
    size_t    i;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


static uint64_t ref_text(json_t *v);


static uint64_t
ref_container(json_t *v)
{
    static const char  *keys[] = { "content", "text", "output" };
    uint64_t            n = 0;
    size_t              i;
    json_t             *e;

    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            n += ref_container(e);
        }

    } else if (json_is_object(v)) {
        for (i = 0; i < 3; i++) {
            e = json_object_get(v, keys[i]);
            if (e) {
                n += ref_text(e);
            }
        }
    }

    return n;
}


static uint64_t
ref_text(json_t *v)
{
    uint64_t  n = 0;
    size_t    i;
    json_t   *e;

    if (json_is_string(v)) {
        return utf8_chars(json_string_value(v), json_string_length(v));
    }

    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            n += ref_text(e);
        }

        return n;
    }

    return ref_container(v);
}


static uint64_t
ref_input_chars(json_t *root)
{
    static const char  *keys[] = { "system", "prompt", "input",
                                   "instructions" };
    uint64_t            n = 0;
    size_t              i;
    json_t             *e;

    for (i = 0; i < 4; i++) {
        e = json_object_get(root, keys[i]);
        if (e) {
            n += ref_text(e);
        }
    }

    e = json_object_get(root, "messages");
    if (e) {
        n += ref_container(e);
    }

    return n;
}


static int
same_type(ngx_http_ai_gateway_json_value_t *f, json_t *j)
{
    switch (f->type) {
    case NGX_HTTP_AI_GATEWAY_JSON_ABSENT:  return j == NULL;
    case NGX_HTTP_AI_GATEWAY_JSON_NULL:    return json_is_null(j);
    case NGX_HTTP_AI_GATEWAY_JSON_STRING:  return json_is_string(j);
    case NGX_HTTP_AI_GATEWAY_JSON_INTEGER: return json_is_integer(j);
    case NGX_HTTP_AI_GATEWAY_JSON_REAL:    return json_is_real(j);
    case NGX_HTTP_AI_GATEWAY_JSON_TRUE:    return json_is_true(j);
    case NGX_HTTP_AI_GATEWAY_JSON_FALSE:   return json_is_false(j);
    case NGX_HTTP_AI_GATEWAY_JSON_OBJECT:  return json_is_object(j);
    case NGX_HTTP_AI_GATEWAY_JSON_ARRAY:   return json_is_array(j);
    }

    return 0;
}


/* compares the scanner with jansson on one input; returns the verdict */

static int
compare(const char *data, size_t len, const char *what)
{
    int                                rc, k;
    json_t                            *root, *j;
    size_t                             n;
    unsigned char                     *buf;
    json_error_t                       err;
    ngx_http_ai_gateway_json_value_t  *f;
    ngx_http_ai_gateway_json_facts_t   facts;

    rc = ngx_http_ai_gateway_json_scan((const unsigned char *) data, len,
                                       &facts);
    root = json_loadb(data, len, 0, &err);

    CHECK((rc != NGX_HTTP_AI_GATEWAY_JSON_INVALID) == (root != NULL),
          "%s: scanner says %d (%s), jansson says %s", what, rc,
          facts.error ? facts.error : "-", root ? "valid" : err.text);

    if (root == NULL || rc == NGX_HTTP_AI_GATEWAY_JSON_INVALID) {
        json_decref(root);
        return rc;
    }

    CHECK((rc == NGX_HTTP_AI_GATEWAY_JSON_NOT_OBJECT) == json_is_array(root),
          "%s: object/array verdict differs", what);

    if (!json_is_object(root)) {
        json_decref(root);
        return rc;
    }

    for (k = 0; k < NGX_HTTP_AI_GATEWAY_KEY_LAST; k++) {
        f = &facts.field[k];
        j = json_object_get(root, ngx_http_ai_gateway_json_key_name(k));

        CHECK(same_type(f, j), "%s: type of \"%s\" differs (%d)", what,
              ngx_http_ai_gateway_json_key_name(k), f->type);

        if (j == NULL) {
            continue;
        }

        if (json_is_integer(j) && f->type == NGX_HTTP_AI_GATEWAY_JSON_INTEGER)
        {
            CHECK(f->integer == json_integer_value(j),
                  "%s: integer \"%s\" differs", what,
                  ngx_http_ai_gateway_json_key_name(k));
        }

        if (json_is_string(j) && f->type == NGX_HTTP_AI_GATEWAY_JSON_STRING) {
            buf = malloc(f->len + 1);
            n = ngx_http_ai_gateway_json_unescape(buf, f->str, f->len);
            CHECK(n == json_string_length(j)
                  && memcmp(buf, json_string_value(j), n) == 0,
                  "%s: string \"%s\" differs", what,
                  ngx_http_ai_gateway_json_key_name(k));
            free(buf);
        }
    }

    CHECK(facts.input_chars == ref_input_chars(root),
          "%s: input_chars %llu, reference %llu", what,
          (unsigned long long) facts.input_chars,
          (unsigned long long) ref_input_chars(root));

    json_decref(root);

    return rc;
}


static const char  *cases[] = {
    /* valid */
    "{}", "[]", " {} ", "\t\r\n{}\n", "[1,2,3]", "{\"a\":[{}]}",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"Hello\"}]}",
    "{\"model\":\"m\",\"stream\":true,\"max_tokens\":100,\"user\":\"u1\"}",
    "{\"model\":\"m\",\"stream\":false,\"max_completion_tokens\":0}",
    "{\"model\":\"m\",\"max_output_tokens\":9223372036854775807}",
    "{\"model\":\"m\",\"max_tokens\":-9223372036854775808}",
    "{\"model\":\"m\",\"max_tokens\":1.5}",
    "{\"model\":\"m\",\"max_tokens\":1e2}",
    "{\"model\":\"m\",\"max_tokens\":-0}",
    "{\"model\":null,\"stream\":null}",
    "{\"model\":\"a\",\"model\":\"b\"}",
    "{\"model\":\"a\",\"model\":7}",
    "{\"mod\\u0065l\":\"escaped key\"}",
    "{\"model\":\"caf\\u00e9 \\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}",
    "{\"model\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"h\xc3\xa9llo\"},{\"type\":\"image_url\",\"image_url\":"
        "{\"url\":\"http://x\"}}]}]}",
    "{\"system\":\"be nice\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}]}",
    "{\"system\":[{\"type\":\"text\",\"text\":\"sys\"}]}",
    "{\"prompt\":[\"a\",\"bc\"]}", "{\"prompt\":\"abc\\n\"}",
    "{\"input\":[1,2,3]}", "{\"input\":\"one\",\"instructions\":\"two\"}",
    "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
        "\"text\":\"deep\"}]},{\"type\":\"function_call_output\","
        "\"output\":\"42\"}]}",
    "{\"messages\":[{\"content\":\"a\",\"content\":\"bbb\"}]}",
    "{\"messages\":\"x\",\"messages\":[{\"content\":\"yy\"}]}",
    "{\"messages\":[\"not counted\"]}",
    "{\"a\":1.5e300,\"b\":-1e-400,\"c\":0.0,\"d\":-0.5E+3}",
    "{\"a\":true,\"b\":false,\"c\":null}",
    /* invalid */
    "", " ", "{", "}", "[", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]",
    "{,}", "{\"a\":1 \"b\":2}", "{a:1}", "{'a':1}", "{\"a\":01}",
    "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":+1}",
    "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":NaN}",
    "{\"a\":Infinity}", "{\"a\":1e400}", "{\"a\":-1e400}",
    "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775809}",
    "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\u0000\"}",
    "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\\u0041\"}",
    "{\"a\":\"\x01\"}", "{\"a\":\"\t\"}", "{\"a\":\"\xc0\xaf\"}",
    "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}",
    "{\"a\":\"\xff\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xe2\x82\"}",
    "{\"a\":\"unterminated}", "{} {}", "{}x", "\"string\"", "1", "true",
    "null", "{\"a\":1}}", "[[]", "{\"a\":[}]}",
};


/* deterministic xorshift, so failures reproduce */
static unsigned long long  rnd_state = 88172645463325252ULL;

static unsigned
rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (unsigned) rnd_state;
}


static void
test_cases(void)
{
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        compare(cases[i], strlen(cases[i]), cases[i]);
    }
}


/*
 * Reals without an exponent skip strtod() up to 308 digits before the
 * point; longer ones overflow (all nines) or not (a one and zeros), as
 * jansson says.
 */

static void
test_long_reals(void)
{
    char    buf[400];
    size_t  n, len, i;
    int     neg, one;

    for (n = 306; n <= 311; n++) {
        for (neg = 0; neg < 2; neg++) {
            for (one = 0; one < 2; one++) {
                len = 0;
                memcpy(buf, "{\"a\":", 5);
                len = 5;
                if (neg) {
                    buf[len++] = '-';
                }
                for (i = 0; i < n; i++) {
                    buf[len++] = one ? (i ? '0' : '1') : '9';
                }
                memcpy(buf + len, ".5}", 3);
                len += 3;
                compare(buf, len, "long real");
            }
        }
    }
}


static void
test_depth(void)
{
    int     rc;
    char   *buf;
    size_t  i, n;

    for (n = 2046; n <= 2050; n++) {
        buf = malloc(2 * n + 1);
        for (i = 0; i < n; i++) {
            buf[i] = '[';
            buf[2 * n - 1 - i] = ']';
        }
        rc = compare(buf, 2 * n, "deep array");
        CHECK((n <= NGX_HTTP_AI_GATEWAY_JSON_MAX_DEPTH)
              == (rc != NGX_HTTP_AI_GATEWAY_JSON_INVALID),
              "depth %zu verdict %d", n, rc);
        free(buf);
    }
}


static void
test_embedded_nul(void)
{
    static const char  nul_in_string[] = "{\"a\":\"x\0y\"}";
    static const char  nul_after[] = "{}\0";

    compare(nul_in_string, sizeof(nul_in_string) - 1, "NUL in string");
    compare(nul_after, sizeof(nul_after) - 1, "NUL after object");
}


static void
test_mutations(void)
{
    static const char  alphabet[] = "{}[]\":,\\ 0123456789eE.-+tfnu"
                                    "\xc3\xa9\xf0\x9f\x01";
    char               buf[512];
    size_t             i, j, len, m;

    for (i = 0; i < 60000; i++) {
        const char  *base = cases[rnd() % 30];   /* the valid ones */

        len = strlen(base);
        memcpy(buf, base, len);

        for (m = 1 + rnd() % 3; m; m--) {
            j = rnd() % (len + 1);

            switch (rnd() % 3) {
            case 0:   /* replace */
                if (j < len) {
                    buf[j] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                }
                break;

            case 1:   /* insert */
                if (len + 1 < sizeof(buf)) {
                    memmove(buf + j + 1, buf + j, len - j);
                    buf[j] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                    len++;
                }
                break;

            default:  /* delete */
                if (j < len) {
                    memmove(buf + j, buf + j + 1, len - j - 1);
                    len--;
                }
                break;
            }
        }

        compare(buf, len, "mutation");

        if (failures > 20) {
            return;
        }
    }
}


/*
 * Long strings with one special byte at every position, so that the
 * 16- and 8-byte steps of the string scan meet it at every offset.
 */

static void
test_long_strings(void)
{
    static const char  *specials[] = {
        "\\\"", "\\n", "\\u00e9", "\\ud83d\\ude00", "\xc3\xa9",
        "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x01", "\x7f", "\x80",
        "\xc3", "\xed\xa0\x80", "\"", "\\x", "\x1f", "\xff"
    };
    char                 buf[256];
    size_t               i, len, pos, n;

    for (i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
        for (len = 0; len < 70; len++) {
            for (pos = 0; pos <= len; pos++) {
                n = (size_t) sprintf(buf, "{\"messages\":[{\"content\":\"");
                memset(buf + n, 'a', pos);
                n += pos;
                n += (size_t) sprintf(buf + n, "%s", specials[i]);
                memset(buf + n, 'b', len - pos);
                n += len - pos;
                n += (size_t) sprintf(buf + n, "\"}]}");

                compare(buf, n, "long string");
            }
        }
    }
}


static void
test_unescape(void)
{
    unsigned char  out[64];
    size_t         n;
    const char    *in = "a\\u00e9\\ud83d\\ude00\\n\\\"";

    n = ngx_http_ai_gateway_json_unescape(out, (const unsigned char *) in,
                                          strlen(in));
    CHECK(n == 1 + 2 + 4 + 1 + 1
          && memcmp(out, "a\xc3\xa9\xf0\x9f\x98\x80\n\"", n) == 0,
          "unescape");
}


/* the escape's reference: the same rules, a byte at a time */

static size_t
ref_escape(unsigned char *dst, const unsigned char *src, size_t len)
{
    size_t          i, j, n, k;
    uint32_t        code;
    unsigned char   c;

    static const char  hex[] = "0123456789abcdef";

    j = 0;

    for (i = 0; i < len; /* void */) {
        c = src[i];

        if (c == '"' || c == '\\') {
            dst[j++] = '\\';
            dst[j++] = c;
            i++;
            continue;
        }

        if (c < 0x20) {
            dst[j++] = '\\';

            if (c == '\n' || c == '\r' || c == '\t') {
                dst[j++] = (c == '\n') ? 'n' : (c == '\r') ? 'r' : 't';

            } else {
                dst[j++] = 'u';
                dst[j++] = '0';
                dst[j++] = '0';
                dst[j++] = hex[c >> 4];
                dst[j++] = hex[c & 0xf];
            }

            i++;
            continue;
        }

        if (c < 0x80) {
            dst[j++] = c;
            i++;
            continue;
        }

        n = (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2
            : (c >= 0xf0 && c <= 0xf4) ? 3 : 0;
        code = c & (0x3f >> n);

        for (k = 1; n && k <= n; k++) {
            if (i + k >= len || (src[i + k] & 0xc0) != 0x80) {
                n = 0;
                break;
            }

            code = (code << 6) | (src[i + k] & 0x3f);
        }

        if (n == 0
            || (n == 2 && (code < 0x800 || (code >= 0xd800 && code <= 0xdfff)))
            || (n == 3 && (code < 0x10000 || code > 0x10ffff)))
        {
            memcpy(dst + j, "\\ufffd", 6);
            j += 6;
            i++;
            continue;
        }

        memcpy(dst + j, src + i, n + 1);
        j += n + 1;
        i += n + 1;
    }

    return j;
}


/*
 * The escape against its reference: random texts of every length around
 * its 16- and 32-byte steps, dense with what needs escaping; the input and
 * the output (6 bytes an input byte, as the header asks) are allocated
 * exactly, so that a read or a store past them shows under valgrind, and
 * the output's last bytes are checked untouched past what was written.
 */

static void
test_escape(void)
{
    size_t          len, n, r, i, round;
    unsigned char  *src, *dst, *ref;

    static const unsigned char  alphabet[] = {
        'a', 'b', ' ', '"', '"', '\\', '\n', '\t', 0x01, 0x1f, 0x7f, '/',
        0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0,
        0xff, 0xc0, 0xf4, 0x90
    };

    srand(7);

    for (round = 0; round < 4000; round++) {
        len = round % 100;

        if (round >= 2000) {
            len += 100 * (round % 7);
        }

        src = malloc(len ? len : 1);
        dst = malloc(6 * len + 1);
        ref = malloc(6 * len + 1);

        if (src == NULL || dst == NULL || ref == NULL) {
            CHECK(0, "escape: out of memory");
            return;
        }

        for (i = 0; i < len; i++) {
            /* mostly letters, or mostly what needs escaping */
            src[i] = (round % 3 == 0 && rand() % 8)
                     ? (unsigned char) ('a' + rand() % 26)
                     : alphabet[rand() % sizeof(alphabet)];
        }

        memset(dst, 0xee, 6 * len + 1);

        n = (size_t) (ngx_http_ai_gateway_json_escape(dst, src, len) - dst);
        r = ref_escape(ref, src, len);

        CHECK(n == r && memcmp(dst, ref, r) == 0,
              "escape: round %zu, length %zu: %zu bytes, reference %zu",
              round, len, n, r);

        /* the byte past the 6 * len allowed is never written */
        CHECK(dst[6 * len] == 0xee, "escape: wrote past 6 * len");

        free(src);
        free(dst);
        free(ref);
    }
}


/*
 * The guard walk's text runs: the first quote, backslash or control byte,
 * bytes >= 0x80 passed over, against a byte-at-a-time reference, at every
 * length and offset around the 16- and 32-byte steps
 */

static void
test_skip_text(void)
{
    size_t                i, len, at, k;
    unsigned char         buf[100];
    const unsigned char  *got, *want;

    static const unsigned char  bytes[] = {
        'a', ' ', 0x80, 0xe4, 0xff, 0x7f, 0x20, '"', '\\', 0x1f, 0x00, '\n'
    };

    for (i = 0; i < 20000; i++) {
        len = rnd() % sizeof(buf);

        for (k = 0; k < len; k++) {
            /* mostly text, with a stop now and then */
            buf[k] = bytes[(rnd() % 8) ? rnd() % 7 : rnd() % 12];
        }

        at = len ? rnd() % len : 0;

        want = buf + at;

        while (want < buf + len && *want != '"' && *want != '\\'
               && *want >= 0x20)
        {
            want++;
        }

        got = ngx_http_ai_gateway_json_skip_text(buf + at, buf + len);

        CHECK(got == want, "skip_text: %zu bytes from %zu: stopped at %zu, "
              "expected %zu", len, at, (size_t) (got - buf),
              (size_t) (want - buf));
    }
}


int
main(void)
{
    test_cases();
    test_long_reals();
    test_depth();
    test_embedded_nul();
    test_unescape();
    test_escape();
    test_long_strings();
    test_mutations();
    test_skip_text();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
