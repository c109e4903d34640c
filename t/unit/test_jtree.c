
/*
 * Unit tests for the JSON tree parser: fixed documents (valid, invalid,
 * escapes, surrogates, numbers, depth), the arena, and a differential test
 * against jansson (json_loadb with JSON_ALLOW_NUL, as the translation used
 * it) on random and mutated documents: the same verdict, and the same
 * values when both accept.
 */


#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_jtree.h"


#include "check.h"


typedef ngx_http_ai_gateway_jtree_t  jt_t;


static void *
test_alloc(void *ctx, size_t size)
{
    (void) ctx;

    return malloc(size);
}


static void
test_free(void *ctx, void *p, size_t size)
{
    (void) ctx;
    (void) size;

    free(p);
}


/* an allocator that gives out *ctx blocks, then fails */

static void *
test_alloc_few(void *ctx, size_t size)
{
    int  *left = ctx;

    if (*left == 0) {
        return NULL;
    }

    (*left)--;

    return malloc(size);
}


/*
 * Parses len bytes at p (copied to the heap, so that valgrind sees any
 * read past the end) with a small first block, so that more blocks come
 * from malloc().
 */

typedef struct {
    unsigned char                      first[256];
    unsigned char                     *copy;
    ngx_http_ai_gateway_jtree_arena_t  arena;
    ngx_http_ai_gateway_jtree_error_t  err;
} doc_t;


static jt_t *
doc_parse(doc_t *d, const char *p, size_t len)
{
    d->copy = malloc(len ? len : 1);
    if (d->copy == NULL) {
        abort();
    }

    memcpy(d->copy, p, len);

    ngx_http_ai_gateway_jtree_arena_init(&d->arena, d->first,
                                         sizeof(d->first), test_alloc,
                                         test_free, NULL);

    return ngx_http_ai_gateway_jtree_parse(d->copy, len, &d->arena, &d->err);
}


static void
doc_free(doc_t *d)
{
    ngx_http_ai_gateway_jtree_arena_free(&d->arena);
    free(d->copy);
}


/* the writer's escaping, as translate.c does it */

static void
esc(buf_t *b, const unsigned char *p, size_t n)
{
    size_t       i;
    char         u[8];
    const char  *s;

    for (i = 0; i < n; i++) {
        switch (p[i]) {
        case '"': s = "\\\""; break;
        case '\\': s = "\\\\"; break;
        case '\n': s = "\\n"; break;
        case '\r': s = "\\r"; break;
        case '\t': s = "\\t"; break;
        case '\b': s = "\\b"; break;
        case '\f': s = "\\f"; break;
        default:
            if (p[i] < 0x20) {
                snprintf(u, sizeof(u), "\\u%04x", p[i]);
                s = u;

            } else {
                buf_add(b, p + i, 1);
                continue;
            }
        }

        buf_add(b, s, strlen(s));
    }
}


/*
 * The tree against jansson's: types, values, decoded strings, and objects
 * as jansson sees them (the last duplicate wins, keys in the order they
 * first came).  Returns 0 when equal; path says where not.
 */

static int
same(jt_t *t, json_t *j, char *path, size_t size)
{
    int                   rc;
    size_t                i, k, n, len, distinct;
    buf_t                 e;
    jt_t                 *m;
    json_t               *v;
    const char           *key;
    const unsigned char  *raw, *s;

    switch (json_typeof(j)) {

    case JSON_OBJECT:
        if (!ngx_http_ai_gateway_jtree_is(t, OBJECT)) {
            snprintf(path, size, "not an object");
            return -1;
        }

        /* the distinct keys, in first-seen order, as jansson's */

        distinct = 0;
        i = 0;

        json_object_foreach(j, key, v) {
            for ( /* void */ ; i < t->len; i++) {
                m = &t->u.child[i];

                for (k = 0; k < i; k++) {
                    if (t->u.child[k].key_len == m->key_len
                        && memcmp(t->u.child[k].key, m->key, m->key_len) == 0)
                    {
                        break;
                    }
                }

                if (k == i) {
                    break;
                }
            }

            if (i == t->len
                || t->u.child[i].key_len != strlen(key)
                || memcmp(t->u.child[i].key, key, strlen(key)) != 0)
            {
                snprintf(path, size, "key \"%s\": not in order", key);
                return -1;
            }

            i++;
            distinct++;

            m = ngx_http_ai_gateway_jtree_get(t, key);

            if (m == NULL) {
                snprintf(path, size, "key \"%s\" missing", key);
                return -1;
            }

            rc = same(m, v, path, size);
            if (rc != 0) {
                return rc;
            }
        }

        /* the members left are all duplicates */

        for ( /* void */ ; i < t->len; i++) {
            m = &t->u.child[i];

            for (k = 0; k < i; k++) {
                if (t->u.child[k].key_len == m->key_len
                    && memcmp(t->u.child[k].key, m->key, m->key_len) == 0)
                {
                    break;
                }
            }

            if (k == i) {
                snprintf(path, size, "a key too many");
                return -1;
            }
        }

        return distinct == json_object_size(j) ? 0 : -1;

    case JSON_ARRAY:
        if (!ngx_http_ai_gateway_jtree_is(t, ARRAY)
            || ngx_http_ai_gateway_jtree_size(t) != json_array_size(j))
        {
            snprintf(path, size, "not the same array");
            return -1;
        }

        json_array_foreach(j, i, v) {
            rc = same(ngx_http_ai_gateway_jtree_at(t, i), v, path, size);
            if (rc != 0) {
                return rc;
            }
        }

        return 0;

    case JSON_STRING:
        if (!ngx_http_ai_gateway_jtree_is(t, STRING)) {
            snprintf(path, size, "not a string");
            return -1;
        }

        /* a verbatim string is what the writer makes of its value */

        raw = t->u.str;
        n = t->len;
        i = t->verbatim;

        s = ngx_http_ai_gateway_jtree_string(t, &len);

        if (s == NULL || len != json_string_length(j)
            || memcmp(s, json_string_value(j), len) != 0)
        {
            snprintf(path, size, "string \"%s\" differs",
                     json_string_value(j));
            return -1;
        }

        if (i) {
            memset(&e, 0, sizeof(buf_t));
            buf_add(&e, "", 0);
            esc(&e, s, len);
            rc = (e.len != n || memcmp(e.p, raw, n) != 0);
            buf_free(&e);

            if (rc) {
                snprintf(path, size, "string \"%s\" is not verbatim",
                         json_string_value(j));
                return -1;
            }
        }

        return 0;

    case JSON_INTEGER:
        if (!ngx_http_ai_gateway_jtree_is(t, INTEGER)
            || ngx_http_ai_gateway_jtree_integer(t) != json_integer_value(j)
            || ngx_http_ai_gateway_jtree_number(t) != json_number_value(j))
        {
            snprintf(path, size, "integer %lld differs",
                     (long long) json_integer_value(j));
            return -1;
        }

        return 0;

    case JSON_REAL:
        if (!ngx_http_ai_gateway_jtree_is(t, REAL)
            || memcmp(&(double) { ngx_http_ai_gateway_jtree_number(t) },
                      &(double) { json_real_value(j) }, sizeof(double)) != 0)
        {
            snprintf(path, size, "real %.17g differs (%.17g)",
                     json_real_value(j), ngx_http_ai_gateway_jtree_number(t));
            return -1;
        }

        return 0;

    case JSON_TRUE:
        return ngx_http_ai_gateway_jtree_is(t, TRUE) ? 0 : -1;

    case JSON_FALSE:
        return ngx_http_ai_gateway_jtree_is(t, FALSE) ? 0 : -1;

    default:
        return ngx_http_ai_gateway_jtree_is(t, NULL) ? 0 : -1;
    }
}


/*
 * jansson skips a NUL byte right after a number or a literal ("[1\0]",
 * "[true\0]"): its pushback buffer takes a NUL for "empty".  jtree rejects
 * such bytes, as JSON wants.
 */

static int
jansson_nul_quirk(const char *p, size_t len)
{
    size_t  i;

    for (i = 1; i < len; i++) {
        if (p[i] == '\0'
            && ((p[i - 1] >= '0' && p[i - 1] <= '9')
                || (p[i - 1] >= 'a' && p[i - 1] <= 'z')))
        {
            return 1;
        }
    }

    return 0;
}


/* the verdicts agree, and so do the values: returns 1 when accepted */

static int
differ(int line, const char *p, size_t len)
{
    int            ok;
    char           path[256];
    jt_t          *t;
    doc_t          d;
    json_t        *j;
    json_error_t   jerr;

    j = json_loadb(p, len, JSON_ALLOW_NUL, &jerr);
    t = doc_parse(&d, p, len);

    if (j != NULL && t == NULL && jansson_nul_quirk(p, len)) {
        json_decref(j);
        j = NULL;
    }

    CHECK((j != NULL) == (t != NULL),
          "line %d: jansson %s (%s), jtree %s (%s at %zu): %.*s", line,
          j ? "accepts" : "rejects", j ? "" : jerr.text,
          t ? "accepts" : "rejects", t ? "" : d.err.text, d.err.offset,
          (int) (len > 2000 ? 2000 : len), p);

    ok = 0;

    if (j != NULL && t != NULL) {
        path[0] = '\0';
        CHECK(same(t, j, path, sizeof(path)) == 0,
              "line %d: trees differ: %s: %.*s", line, path,
              (int) (len > 200 ? 200 : len), p);
        ok = 1;
    }

    if (t == NULL) {
        CHECK(d.err.text != NULL && d.err.offset <= len && !d.err.nomem,
              "line %d: error not set", line);
    }

    json_decref(j);
    doc_free(&d);

    return ok;
}


#define DIFF(s)  differ(__LINE__, s, sizeof(s) - 1)


static void
test_valid(void)
{
    jt_t                 *t, *v;
    doc_t                 d;
    size_t                len;
    const unsigned char  *s;

    static const char     doc[] =
        " {\"a\": [1, -2, 3.5, true, false, null, \"x\"],\n"
        "  \"b\": {\"c\": {}, \"d\": []}, \"a\": \"again\" } ";

    t = doc_parse(&d, doc, sizeof(doc) - 1);
    CHECK(ngx_http_ai_gateway_jtree_is(t, OBJECT) && t->len == 3,
          "object of 3 members");

    v = ngx_http_ai_gateway_jtree_get(t, "a");
    CHECK(ngx_http_ai_gateway_jtree_eq(v, "again", 0), "the last 'a' wins");
    CHECK(ngx_http_ai_gateway_jtree_get(t, "z") == NULL, "no 'z'");
    CHECK(ngx_http_ai_gateway_jtree_get(v, "a") == NULL, "a string: no key");

    v = &t->u.child[0];
    CHECK(ngx_http_ai_gateway_jtree_size(v) == 7, "array of 7");
    CHECK(ngx_http_ai_gateway_jtree_integer(
              ngx_http_ai_gateway_jtree_at(v, 1)) == -2, "-2");
    CHECK(ngx_http_ai_gateway_jtree_number(
              ngx_http_ai_gateway_jtree_at(v, 2)) == 3.5, "3.5");
    CHECK(ngx_http_ai_gateway_jtree_is(ngx_http_ai_gateway_jtree_at(v, 3),
                                       TRUE), "true");
    CHECK(ngx_http_ai_gateway_jtree_is(ngx_http_ai_gateway_jtree_at(v, 4),
                                       FALSE), "false");
    CHECK(ngx_http_ai_gateway_jtree_is_none(
              ngx_http_ai_gateway_jtree_at(v, 5)), "null");
    CHECK(ngx_http_ai_gateway_jtree_at(v, 7) == NULL, "past the end");
    CHECK(ngx_http_ai_gateway_jtree_integer(
              ngx_http_ai_gateway_jtree_at(v, 6)) == 0, "a string: 0");

    s = ngx_http_ai_gateway_jtree_string(ngx_http_ai_gateway_jtree_at(v, 6),
                                         &len);
    CHECK(s != NULL && len == 1 && s[0] == 'x', "the string x");

    v = ngx_http_ai_gateway_jtree_get(ngx_http_ai_gateway_jtree_get(t, "b"),
                                      "c");
    CHECK(ngx_http_ai_gateway_jtree_is(v, OBJECT) && v->len == 0, "{}");

    doc_free(&d);

    DIFF("{}");
    DIFF("[]");
    DIFF(" \t\r\n[ ] \t\r\n");
    DIFF("[\"\"]");
    DIFF("[{\"\":1}]");
    DIFF("{\"a\":1,\"a\":2,\"b\":3,\"a\":4}");
    DIFF("[[[[[]]]],{\"x\":[{}]}]");
}


static void
test_invalid(void)
{
    size_t        i;

    static const char  *bad[] = {
        "", " ", "1", "\"s\"", "true", "null", "[", "]", "{", "}", "[1,]",
        "[,1]", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}",
        "{1:2}", "{'a':1}", "[1 2]", "[1]x", "[1] [2]", "{}{}", "[tru]",
        "[truex]", "[nul]", "[True]", "[01]", "[-]", "[+1]", "[1.]",
        "[.5]", "[1e]", "[1e+]", "[-01]", "[0x10]", "[Infinity]", "[NaN]",
        "[\"a]", "[\"\\x\"]", "[\"\\u12\"]", "[\"\\u12g4\"]",
        "[\"\\ud800\"]", "[\"\\udc00\"]", "[\"\\ud800\\u0041\"]",
        "[\"\\ud800x\"]", "{\"a\\u0000\":1}", "[\"\t\"]", "[\"\x01\"]",
        "[\"\x7f\x80\"]", "[\"\xc0\xaf\"]", "[\"\xe0\x80\xaf\"]",
        "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\xf8\"]",
        "[\"\xc3\"]", "[\xc3\xa9]", "[9223372036854775808]",
        "[-9223372036854775809]", "[1e400]", "[-1e400]",
        "[123456789012345678901234567890]", "\xef\xbb\xbf[]", "[/**/]",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(differ(__LINE__, bad[i], strlen(bad[i])) == 0,
              "accepted: %s", bad[i]);
    }

    /* NUL bytes in the input, in and out of strings */

    CHECK(differ(__LINE__, "[\"a\0b\"]", 7) == 0, "raw NUL in a string");
    CHECK(differ(__LINE__, "[1,\0]", 5) == 0, "raw NUL");
    CHECK(differ(__LINE__, "[1\0]", 4) == 0, "NUL after a number");
    CHECK(differ(__LINE__, "[true\0]", 7) == 0, "NUL after a literal");
    CHECK(differ(__LINE__, "{\"a\":1.5\0}", 10) == 0, "NUL after a real");
}


static void
test_strings(void)
{
    jt_t                 *t, *v;
    doc_t                 d;
    size_t                len;
    const unsigned char  *s;

    static const char     doc[] =
        "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u00E9\", "
        "\"\\ud83d\\ude00\", \"x\\u0000y\", \"caf\xc3\xa9 \xf0\x9f\x98\x80\","
        "\"\\u001f\\u001F\\u000a\"]";
    static const char     verbatim[] = "[\"\\u001f\\n\\\"\\\\x\"]";
    static const char     text[] =
        "[\"\\u0074ext\", \"te\\u0078t\\u0000more\"]";

    DIFF("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u00E9\"]");
    DIFF("[\"\\ud83d\\ude00\", \"\\uD83D\\uDE00\", \"\\udbff\\udfff\"]");
    DIFF("[\"x\\u0000y\", \"\\u0000\", \"\\u0001\\u001f\\u007f\"]");
    DIFF("{\"k\\u00e9y\":1, \"k\\n\":2, \"k\\\"\":3}");
    DIFF("[\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80"
         "\xf4\x8f\xbf\xbf\"]");

    t = doc_parse(&d, doc, sizeof(doc) - 1);
    CHECK(t != NULL, "strings parsed");

    v = ngx_http_ai_gateway_jtree_at(t, 0);
    CHECK(v->escaped && !v->verbatim, "\\/ is not verbatim");
    s = ngx_http_ai_gateway_jtree_string(v, &len);
    CHECK(len == 12 && memcmp(s, "a\"b\\c/d\b\f\n\r\t", 12) == 0,
          "short escapes");
    CHECK(s[len] == '\0', "decoded strings end with a NUL");

    v = ngx_http_ai_gateway_jtree_at(t, 1);
    s = ngx_http_ai_gateway_jtree_string(v, &len);
    CHECK(len == 4 && memcmp(s, "\xc3\xa9\xc3\xa9", 4) == 0, "\\u00e9");

    v = ngx_http_ai_gateway_jtree_at(t, 2);
    s = ngx_http_ai_gateway_jtree_string(v, &len);
    CHECK(len == 4 && memcmp(s, "\xf0\x9f\x98\x80", 4) == 0,
          "a surrogate pair is one character");

    v = ngx_http_ai_gateway_jtree_at(t, 3);
    CHECK(ngx_http_ai_gateway_jtree_eq(v, "x", 0), "C string: x");
    CHECK(!ngx_http_ai_gateway_jtree_eq(v, "xy", 0), "not xy");
    CHECK(ngx_http_ai_gateway_jtree_eq(v, "", 1), "prefix ''");
    s = ngx_http_ai_gateway_jtree_string(v, &len);
    CHECK(len == 3 && memcmp(s, "x\0y", 3) == 0, "NUL kept");

    v = ngx_http_ai_gateway_jtree_at(t, 4);
    CHECK(!v->escaped && v->verbatim, "UTF-8 is verbatim");
    CHECK(ngx_http_ai_gateway_jtree_eq(v, "caf\xc3\xa9", 1), "prefix");
    CHECK(!ngx_http_ai_gateway_jtree_eq(v, "caf\xc3\xa9", 0), "not all");

    v = ngx_http_ai_gateway_jtree_at(t, 5);
    CHECK(!v->verbatim, "\\u001F and \\u000a are not the writer's");

    CHECK(ngx_http_ai_gateway_jtree_eq(ngx_http_ai_gateway_jtree_at(t, 0),
                                       "a\"b", 1), "decoded prefix");
    CHECK(!ngx_http_ai_gateway_jtree_eq(t, "a", 1), "an array is no string");

    doc_free(&d);

    t = doc_parse(&d, verbatim, sizeof(verbatim) - 1);
    CHECK(t != NULL && t->u.child[0].verbatim, "the writer's escapes");
    doc_free(&d);

    t = doc_parse(&d, text, sizeof(text) - 1);
    CHECK(ngx_http_ai_gateway_jtree_eq(ngx_http_ai_gateway_jtree_at(t, 0),
                                       "text", 0), "escaped 'text'");
    CHECK(ngx_http_ai_gateway_jtree_eq(ngx_http_ai_gateway_jtree_at(t, 1),
                                       "text", 0), "'text' and a NUL");
    CHECK(!ngx_http_ai_gateway_jtree_eq(ngx_http_ai_gateway_jtree_at(t, 1),
                                        "textmore", 0), "not past the NUL");

    /* the same once decoded in place (its escapes gone, the NUL in it) */
    v = ngx_http_ai_gateway_jtree_at(t, 1);
    (void) ngx_http_ai_gateway_jtree_string(v, &len);
    CHECK(!v->escaped && ngx_http_ai_gateway_jtree_eq(v, "text", 0)
          && !ngx_http_ai_gateway_jtree_eq(v, "textmore", 0)
          && ngx_http_ai_gateway_jtree_eq(v, "tex", 1),
          "decoded: 'text' and a NUL");
    doc_free(&d);

    /* strings without escapes: the inline length and memcmp() */
    t = doc_parse(&d, "[\"user\",\"users\"]", 16);
    v = ngx_http_ai_gateway_jtree_at(t, 0);
    CHECK(ngx_http_ai_gateway_jtree_eq(v, "user", 0)
          && !ngx_http_ai_gateway_jtree_eq(v, "use", 0)
          && ngx_http_ai_gateway_jtree_eq(v, "use", 1)
          && !ngx_http_ai_gateway_jtree_eq(v, "users", 0)
          && !ngx_http_ai_gateway_jtree_eq(v, "users", 1)
          && !ngx_http_ai_gateway_jtree_eq(v, "usex", 0),
          "plain 'user'");
    v = ngx_http_ai_gateway_jtree_at(t, 1);
    CHECK(!ngx_http_ai_gateway_jtree_eq(v, "user", 0)
          && ngx_http_ai_gateway_jtree_eq(v, "user", 1)
          && ngx_http_ai_gateway_jtree_eq(v, "users", 0),
          "plain 'users'");
    doc_free(&d);
}


static void
test_numbers(void)
{
    jt_t   *t;
    doc_t   d;

    DIFF("[0, -0, 1, -1, 9223372036854775807, -9223372036854775808]");
    DIFF("[0.0, -0.0, 0.5, 1.25, 0.1, 0.7, 3.14159, 123456789.123456789]");
    DIFF("[1e0, 1E+2, 1e-2, -1.5e300, 2.5e-300, 1e-400, 4.9e-324]");
    DIFF("[1.7976931348623157e308, 0.000001, 100000000000000000000000.5]");
    DIFF("[0.30000000000000004, 9007199254740993.0, 1.00000000000000011]");
    DIFF("[123456789012345678901234567890.0, 1e22, 1e23]");

    t = doc_parse(&d, "[-0, 12, 1.5e3]", 15);
    CHECK(ngx_http_ai_gateway_jtree_is(&t->u.child[0], INTEGER)
          && t->u.child[0].v.integer == 0, "-0 is the integer 0");
    CHECK(t->u.child[1].len == 2 && memcmp(t->u.child[1].u.str, "12", 2) == 0,
          "the text is kept");
    CHECK(ngx_http_ai_gateway_jtree_is(&t->u.child[2], REAL)
          && ngx_http_ai_gateway_jtree_number(&t->u.child[2]) == 1500,
          "1.5e3");
    CHECK(ngx_http_ai_gateway_jtree_integer(&t->u.child[2]) == 0,
          "a real has no integer value");
    doc_free(&d);
}


/* jansson counts every value against its depth limit of 2048 */

static void
test_depth(void)
{
    int     n, k, inner;
    char   *p;
    size_t  len;

    for (inner = 0; inner < 3; inner++) {
        for (n = 2045; n <= 2050; n++) {
            p = malloc(2 * n + 8);
            len = 0;

            for (k = 0; k < n; k++) {
                p[len++] = '[';
            }

            if (inner == 1) {
                p[len++] = '1';
            }

            if (inner == 2) {
                memcpy(p + len, "{\"a\":1}", 7);
                len += 7;
            }

            for (k = 0; k < n; k++) {
                p[len++] = ']';
            }

            differ(__LINE__, p, len);
            free(p);
        }
    }
}


static void
test_arena(void)
{
    int                                 left;
    jt_t                               *t;
    unsigned char                       small[64];
    ngx_http_ai_gateway_jtree_arena_t   a;
    ngx_http_ai_gateway_jtree_error_t   err;

    static const char                   doc[] =
        "{\"a\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,"
        "24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40],"
        "\"b\\u0062\":\"\\u00e9\"}";

    /* no allocator, no room: out of memory, no fault of the input */

    ngx_http_ai_gateway_jtree_arena_init(&a, small, sizeof(small), NULL,
                                         NULL, NULL);
    t = ngx_http_ai_gateway_jtree_parse((const unsigned char *) doc,
                                        sizeof(doc) - 1, &a, &err);
    CHECK(t == NULL && err.nomem, "no memory");
    ngx_http_ai_gateway_jtree_arena_free(&a);

    /* no first block: all from the allocator, every failure point */

    for (left = 0; left < 6; left++) {
        int  n = left;

        ngx_http_ai_gateway_jtree_arena_init(&a, NULL, 0, test_alloc_few,
                                             test_free, &n);
        t = ngx_http_ai_gateway_jtree_parse((const unsigned char *) doc,
                                            sizeof(doc) - 1, &a, &err);
        CHECK(t != NULL || err.nomem, "fails only for memory (%d)", left);

        if (t != NULL) {
            CHECK(ngx_http_ai_gateway_jtree_size(
                      ngx_http_ai_gateway_jtree_get(t, "a")) == 40
                  && ngx_http_ai_gateway_jtree_get(t, "bb") != NULL,
                  "tree with %d blocks", left);
        }

        ngx_http_ai_gateway_jtree_arena_free(&a);
    }

    /* big allocations get blocks of their own */

    ngx_http_ai_gateway_jtree_arena_init(&a, NULL, 0, test_alloc, test_free,
                                         NULL);
    CHECK(ngx_http_ai_gateway_jtree_alloc(&a, 100000) != NULL, "100000");
    CHECK(ngx_http_ai_gateway_jtree_alloc(&a, 8) != NULL, "8");
    CHECK(((uintptr_t) ngx_http_ai_gateway_jtree_alloc(&a, 3) & 7) == 0,
          "aligned");
    CHECK(((uintptr_t) ngx_http_ai_gateway_jtree_alloc(&a, 8) & 7) == 0,
          "aligned after an odd size");
    ngx_http_ai_gateway_jtree_arena_free(&a);
}


/* random documents */

static void gen_value(buf_t *b, int depth);

/* objects get the keys of requests */
static int  gen_requests;


static void
gen_string(buf_t *b)
{
    int          n, k;
    char         u[8];
    const char  *s;

    static const char  *pieces[] = {
        "a", "text", " ", "\\n", "\\\"", "\\\\", "\\/", "\\t", "\\b", "\\f",
        "\\r", "\\u00e9", "\\u00E9", "\\u0000", "\\u001f", "\\u001F",
        "\\u000a", "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\xc3\xa9",
        "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f", "0123456789abcdef",
        "type", "role",
    };

    buf_add(b, "\"", 1);
    n = rng() % 6;

    for (k = 0; k < n; k++) {
        if (rng() % 8 == 0) {
            snprintf(u, sizeof(u), "\\u%04x",
                     (unsigned) (rng() % 0xd800) | 1);
            buf_add(b, u, 6);
            continue;
        }

        s = pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))];
        buf_add(b, s, strlen(s));
    }

    buf_add(b, "\"", 1);
}


static void
gen_number(buf_t *b)
{
    char  s[64];

    static const char  *special[] = {
        "0", "-0", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "-9223372036854775809", "0.0", "-0.0",
        "1e308", "1e309", "-1e309", "1e-400", "0.7", "1.5", "2.5e-3",
        "1E+2", "123456789012345678901234567890", "0.1234567890123456789",
    };

    switch (rng() % 4) {
    case 0:
        snprintf(s, sizeof(s), "%lld", (long long) (rng() % 100000) - 500);
        break;
    case 1:
        snprintf(s, sizeof(s), "%lld", (long long) rng());
        break;
    case 2:
        snprintf(s, sizeof(s), "%u.%u", (unsigned) (rng() % 1000),
                 (unsigned) (rng() % 1000));
        break;
    default:
        snprintf(s, sizeof(s), "%s",
                 special[rng() % (sizeof(special) / sizeof(special[0]))]);
        break;
    }

    buf_add(b, s, strlen(s));
}


static void
gen_container(buf_t *b, int depth, int object)
{
    int          n, k;
    const char  *s;

    static const char  *keys[] = {
        "\"a\"", "\"b\"", "\"type\"", "\"text\"", "\"\"", "\"k\\u00e9y\"",
        "\"\\u0061\"", "\"role\"",
    };

    /* the keys of requests, for the facts test */
    static const char  *request_keys[] = {
        "\"model\"", "\"stream\"", "\"max_tokens\"", "\"user\"",
        "\"messages\"", "\"system\"", "\"prompt\"", "\"input\"",
        "\"instructions\"", "\"content\"", "\"text\"", "\"output\"",
        "\"stream_options\"", "\"role\"", "\"max_completion_tokens\"",
        "\"mess\\u0061ges\"", "\"x\"",
        "\"\\u006d\\u0061\\u0078\\u005f\\u0074\\u006f\\u006b\\u0065\\u006e\\u0073\"",
    };

    buf_add(b, object ? "{" : "[", 1);
    n = (depth > 5) ? 0 : rng() % 5;

    for (k = 0; k < n; k++) {
        if (k) {
            if (rng() % 4) {
                buf_add(b, ",", 1);

            } else {
                buf_add(b, " , ", 3);
            }
        }

        if (object) {
            if (gen_requests) {
                s = request_keys[rng() % (sizeof(request_keys)
                                          / sizeof(request_keys[0]))];
                buf_add(b, s, strlen(s));

            } else if (rng() % 3) {
                gen_string(b);

            } else {
                s = keys[rng() % (sizeof(keys) / sizeof(keys[0]))];
                buf_add(b, s, strlen(s));
            }

            buf_add(b, ":", 1);
        }

        gen_value(b, depth + 1);
    }

    buf_add(b, object ? "}" : "]", 1);
}


static void
gen_value(buf_t *b, int depth)
{
    switch (rng() % 8) {
    case 0:
        gen_container(b, depth, 1);
        break;
    case 1:
        gen_container(b, depth, 0);
        break;
    case 2:
    case 3:
        gen_string(b);
        break;
    case 4:
        gen_number(b);
        break;
    case 5:
        buf_add(b, "true", 4);
        break;
    case 6:
        buf_add(b, "false", 5);
        break;
    default:
        buf_add(b, "null", 4);
        break;
    }
}


static void
mutate(buf_t *b)
{
    size_t         at;
    unsigned char  c;

    static const unsigned char  bytes[] = {
        '"', '\\', '{', '}', '[', ']', ',', ':', '0', '1', '-', '+', '.', 'e',
        'u', 'd', 'n', 't', ' ', '\n', 0x00, 0x1f, 0x7f, 0x80, 0xbf, 0xc0,
        0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff, '/', 'a', 'F',
    };

    if (b->len == 0) {
        return;
    }

    at = rng() % b->len;
    c = bytes[rng() % sizeof(bytes)];

    switch (rng() % 4) {
    case 0:
        b->p[at] = (char) c;
        break;
    case 1:
        memmove(b->p + at, b->p + at + 1, b->len - at - 1);
        b->len--;
        break;
    case 2:
        buf_add(b, "", 1);
        memmove(b->p + at + 1, b->p + at, b->len - at - 1);
        b->p[at] = (char) c;
        break;
    default:
        b->len = at;
        break;
    }
}


static void
test_random(void)
{
    int     i, m, accepted;
    buf_t   b;

    accepted = 0;

    for (i = 0; i < 20000; i++) {
        memset(&b, 0, sizeof(buf_t));
        gen_container(&b, 0, rng() % 2);

        accepted += differ(__LINE__, b.p, b.len);

        for (m = rng() % 4; m >= 0; m--) {
            mutate(&b);
        }

        accepted += differ(__LINE__, b.p, b.len);

        buf_free(&b);
    }

    /* the generator must make both verdicts, many times */

    CHECK(accepted > 10000 && accepted < 39000, "accepted %d of 40000",
          accepted);
}


/*
 * The request facts from a tree against the scanner's: whatever the tree
 * (parsed with no_nul) accepts, the scanner accepts, and both report the
 * same fields and the same prompt text count.
 */

static int
same_value(const ngx_http_ai_gateway_json_value_t *a,
    const ngx_http_ai_gateway_json_value_t *b)
{
    if (a->type != b->type) {
        return 0;
    }

    switch (a->type) {

    case NGX_HTTP_AI_GATEWAY_JSON_STRING:
        return a->str == b->str && a->len == b->len
               && a->escaped == b->escaped && a->start == b->start
               && a->raw_len == b->raw_len;

    case NGX_HTTP_AI_GATEWAY_JSON_INTEGER:
        return a->integer == b->integer && a->start == b->start
               && a->raw_len == b->raw_len;

    case NGX_HTTP_AI_GATEWAY_JSON_REAL:
        return a->start == b->start && a->raw_len == b->raw_len;

    default:
        return 1;
    }
}


static void
test_facts(void)
{
    int                                k, i, agreed;
    buf_t                              b;
    doc_t                              d;
    ngx_http_ai_gateway_jtree_t       *t;
    ngx_http_ai_gateway_json_facts_t   scan, tree;

    gen_requests = 1;
    agreed = 0;

    for (i = 0; i < 40000; i++) {
        memset(&b, 0, sizeof(buf_t));
        gen_container(&b, 0, 1);

        if (rng() % 4 == 0) {
            mutate(&b);
        }

        d.copy = malloc(b.len ? b.len : 1);
        if (d.copy == NULL) {
            abort();
        }

        memcpy(d.copy, b.p, b.len);
        ngx_http_ai_gateway_jtree_arena_init(&d.arena, d.first,
                                             sizeof(d.first), test_alloc,
                                             test_free, NULL);
        d.arena.no_nul = 1;

        t = ngx_http_ai_gateway_jtree_parse(d.copy, b.len, &d.arena, &d.err);

        if (t != NULL && t->type == NGX_HTTP_AI_GATEWAY_JTREE_OBJECT) {
            CHECK(ngx_http_ai_gateway_json_scan(d.copy, b.len, &scan)
                  == NGX_HTTP_AI_GATEWAY_JSON_OK,
                  "the tree accepts what the scanner rejects: %.*s",
                  (int) b.len, b.p);

            ngx_http_ai_gateway_jtree_facts(t, &tree);

            /* the count is the caller's to ask for */
            CHECK(tree.input_chars == 0, "facts counted the prompt: %.*s",
                  (int) b.len, b.p);
            tree.input_chars = ngx_http_ai_gateway_jtree_input_chars(t);

            for (k = 0; k < NGX_HTTP_AI_GATEWAY_KEY_LAST; k++) {
                CHECK(same_value(&scan.field[k], &tree.field[k]),
                      "field %s differs: %.*s",
                      ngx_http_ai_gateway_json_key_name(k), (int) b.len, b.p);
            }

            CHECK(scan.input_chars == tree.input_chars,
                  "input_chars %llu (scanner) != %llu (tree): %.*s",
                  (unsigned long long) scan.input_chars,
                  (unsigned long long) tree.input_chars, (int) b.len, b.p);

            agreed += (scan.input_chars > 0);
        }

        doc_free(&d);
        buf_free(&b);
    }

    gen_requests = 0;

    /* long strings: the counting runs past 255 rounds of 16 bytes */
    for (i = 0; i < 3; i++) {
        memset(&b, 0, sizeof(buf_t));
        buf_add(&b, "{\"messages\":[{\"content\":\"",
                strlen("{\"messages\":[{\"content\":\""));

        for (k = 0; k < 3000 + i * 2111; k++) {
            buf_add(&b, (k % 3) ? "a" : "\xc3\xa9\xe2\x82\xac", (k % 3) ? 1 : 5);
        }

        buf_add(&b, "\"}],\"system\":\"x\\\"y\"}",
                strlen("\"}],\"system\":\"x\\\"y\"}"));

        memset(&d, 0, sizeof(doc_t));
        t = doc_parse(&d, b.p, b.len);

        CHECK(t != NULL && ngx_http_ai_gateway_json_scan(d.copy, b.len, &scan)
                           == NGX_HTTP_AI_GATEWAY_JSON_OK,
              "a long document parses");

        if (t != NULL) {
            ngx_http_ai_gateway_jtree_facts(t, &tree);
            tree.input_chars = ngx_http_ai_gateway_jtree_input_chars(t);
            CHECK(scan.input_chars == tree.input_chars
                  && scan.input_chars == 3000 + (uint64_t) i * 2111
                                         + (3000 + i * 2111 + 2) / 3 + 3,
                  "long document: input_chars %llu (scanner), %llu (tree)",
                  (unsigned long long) scan.input_chars,
                  (unsigned long long) tree.input_chars);
        }

        doc_free(&d);
        buf_free(&b);
    }

    CHECK(agreed > 2000, "only %d documents with prompt text", agreed);
}


int
main(void)
{
    test_valid();
    test_invalid();
    test_strings();
    test_numbers();
    test_depth();
    test_arena();
    test_random();
    test_facts();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
