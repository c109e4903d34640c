
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Guardrails (ai_gateway_guardrails input|output ...): keywords (the
 * keyword engine of ngx_http_ai_gateway_pii.c), deny and allow patterns
 * (PCRE2, JIT-compiled at start-up, with match limits), PII detectors
 * (ngx_http_ai_gateway_pii.c) that block or mask, and a safety model asked
 * through a subrequest.
 *
 * Texts are inspected decoded, so that "\u0040" is an "@"; masked texts
 * are encoded again and spliced into the document, the rest kept as it
 * was (see ngx_http_ai_gateway_guard_json()).  Input: the texts the model
 * will read, in the request body; the forwarded body and the inference
 * record get the masked version.  Output: see ngx_http_ai_gateway_guard_out.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_guard.h"
#include "ngx_http_ai_gateway_json.h"


static char *ngx_http_ai_gateway_guard_file(ngx_conf_t *cf,
    ngx_http_ai_gateway_guard_t *g, ngx_str_t *name, ngx_str_t *path);
static char *ngx_http_ai_gateway_guard_keywords(ngx_conf_t *cf,
    ngx_http_ai_gateway_guard_t *g, ngx_str_t *path, ngx_str_t *text);
static char *ngx_http_ai_gateway_guard_patterns(ngx_conf_t *cf,
    ngx_http_ai_gateway_guard_list_t **list, ngx_str_t *name,
    ngx_str_t *path, ngx_str_t *text);
static void ngx_http_ai_gateway_guard_literals(
    ngx_http_ai_gateway_guard_list_t *list,
    ngx_http_ai_gateway_guard_pattern_t *pat);
static void ngx_http_ai_gateway_guard_cleanup(void *data);
static int ngx_http_ai_gateway_guard_pii_first(void *data,
    ngx_http_ai_gateway_pii_match_t *m);
static ngx_int_t ngx_http_ai_gateway_guard_safety_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static const char *ngx_http_ai_gateway_guard_safety_read(
    ngx_http_request_t *r, u_char *p, size_t len);


#define NGX_HTTP_AI_GATEWAY_GUARD_PAD  64


/* a worker's copy of a subject for PCRE2 */
static u_char  *ngx_http_ai_gateway_guard_scratch;
static size_t   ngx_http_ai_gateway_guard_scratch_size;


/* what a key says of its value (ngx_http_ai_gateway_guard_key()) */
#define NGX_HTTP_AI_GATEWAY_GUARD_KEY_OTHER  0
#define NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT   1    /* the model reads it */
#define NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP   2    /* a subtree it does not */
#define NGX_HTTP_AI_GATEWAY_GUARD_KEY_JSON   3    /* JSON text: arguments */


static ngx_conf_enum_t  ngx_http_ai_gateway_guard_pii_modes[] = {
    { ngx_string("none"), NGX_HTTP_AI_GATEWAY_GUARD_NONE },
    { ngx_string("block"), NGX_HTTP_AI_GATEWAY_GUARD_BLOCK },
    { ngx_string("mask"), NGX_HTTP_AI_GATEWAY_GUARD_MASK },
    { ngx_null_string, 0 }
};


/*
 * ai_gateway_guardrails input|output [pii=none|block|mask] [pii_types=LIST]
 *     [invalid_keywords=FILE] [deny_patterns=FILE] [allow_patterns=FILE]
 *     [safety=LOCATION] [on_error=allow|deny];
 */

char *
ngx_http_ai_gateway_guardrails(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    char                          *rv;
    u_char                        *c, *w, *end;
    ngx_int_t                      t;
    ngx_str_t                     *value, name, v;
    ngx_uint_t                     i, j;
    ngx_pool_cleanup_t            *cln;
    ngx_http_ai_gateway_guard_t   *g, **slot;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "input") == 0) {
        slot = &lcf->guard_in;

    } else if (ngx_strcmp(value[1].data, "output") == 0) {
        slot = &lcf->guard_out;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, it "
                           "must be \"input\" or \"output\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (*slot != NGX_CONF_UNSET_PTR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V %V\" is duplicate", &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    g = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_guard_t));
    if (g == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_ai_gateway_guard_cleanup;
    cln->data = g;

    g->output = (slot == &lcf->guard_out);
    g->pii_types = NGX_HTTP_AI_GATEWAY_PII_ALL;
    g->on_error = NGX_HTTP_AI_GATEWAY_GUARD_ALLOW;

    for (i = 2; i < cf->args->nelts; i++) {

        c = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        if (c == NULL || c == value[i].data + value[i].len - 1) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = c - value[i].data;
        v.data = c + 1;
        v.len = value[i].data + value[i].len - v.data;

        if (name.len == 3 && ngx_strncmp(name.data, "pii", 3) == 0) {
            for (j = 0; ngx_http_ai_gateway_guard_pii_modes[j].name.len; j++) {
                if (ngx_http_ai_gateway_guard_pii_modes[j].name.len == v.len
                    && ngx_strncmp(ngx_http_ai_gateway_guard_pii_modes[j]
                                   .name.data, v.data, v.len) == 0)
                {
                    g->pii = ngx_http_ai_gateway_guard_pii_modes[j].value;
                    break;
                }
            }

            if (ngx_http_ai_gateway_guard_pii_modes[j].name.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (name.len == 9 && ngx_strncmp(name.data, "pii_types", 9) == 0) {
            g->pii_types = 0;
            end = v.data + v.len;

            for (w = v.data; w < end; w = c + 1) {
                c = ngx_strlchr(w, end, ',');
                if (c == NULL) {
                    c = end;
                }

                t = ngx_http_ai_gateway_pii_type(w, c - w);
                if (t < 0) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "unknown PII type \"%*s\" in \"%V\", "
                                       "known: email, phone, ssn, card, "
                                       "iban, ipv4, ipv6, secret",
                                       c - w, w, &cmd->name);
                    return NGX_CONF_ERROR;
                }

                g->pii_types |= NGX_HTTP_AI_GATEWAY_PII_BIT(t);
            }

            continue;
        }

        if (name.len == 6 && ngx_strncmp(name.data, "safety", 6) == 0) {
            if (v.data[0] != '/') {
                goto invalid;
            }

            g->safety = v;
            continue;
        }

        if (name.len == 8 && ngx_strncmp(name.data, "on_error", 8) == 0) {
            if (v.len == 5 && ngx_strncmp(v.data, "allow", 5) == 0) {
                g->on_error = NGX_HTTP_AI_GATEWAY_GUARD_ALLOW;

            } else if (v.len == 4 && ngx_strncmp(v.data, "deny", 4) == 0) {
                g->on_error = NGX_HTTP_AI_GATEWAY_GUARD_DENY;

            } else {
                goto invalid;
            }

            continue;
        }

        if ((name.len == 16
             && ngx_strncmp(name.data, "invalid_keywords", 16) == 0)
            || (name.len == 13
                && ngx_strncmp(name.data, "deny_patterns", 13) == 0)
            || (name.len == 14
                && ngx_strncmp(name.data, "allow_patterns", 14) == 0))
        {
            rv = ngx_http_ai_gateway_guard_file(cf, g, &name, &v);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        goto invalid;
    }

    /* the scan's tables for these types, made here so that the workers
     * inherit them */
    if (g->pii != NGX_HTTP_AI_GATEWAY_GUARD_NONE) {
        ngx_http_ai_gateway_pii_prepare(g->pii_types);
    }

    *slot = g;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_ai_gateway_guard_file(ngx_conf_t *cf, ngx_http_ai_gateway_guard_t *g,
    ngx_str_t *name, ngx_str_t *path)
{
    char       *rv;
    ngx_str_t   text, full;

    full = *path;

    rv = ngx_http_ai_gateway_conf_read_file(cf, &full, &text,
                                            16 * 1024 * 1024);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (name->data[0] == 'i') {
        return ngx_http_ai_gateway_guard_keywords(cf, g, &full, &text);
    }

    return ngx_http_ai_gateway_guard_patterns(cf,
                           name->data[0] == 'd' ? &g->deny : &g->allow,
                           name, &full, &text);
}


/* one keyword or phrase a line; "#" starts a comment line */

static char *
ngx_http_ai_gateway_guard_keywords(ngx_conf_t *cf,
    ngx_http_ai_gateway_guard_t *g, ngx_str_t *path, ngx_str_t *text)
{
    int                                 rc;
    u_char                             *p, *eol, *last, *s, *e;
    ngx_uint_t                          line;
    ngx_http_ai_gateway_kw_allocator_t  a;

    if (g->keywords == NULL) {
        a.alloc = ngx_http_ai_gateway_pool_alloc;
        a.free = NULL;
        a.data = cf->pool;

        g->keywords = ngx_http_ai_gateway_kw_create(&a);
        if (g->keywords == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = text->data;
    last = p + text->len;

    for (line = 1; p < last; line++, p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        for (s = p; s < eol && (*s == ' ' || *s == '\t'); s++) { /* void */ }
        for (e = eol; e > s && (e[-1] == '\r' || e[-1] == ' '
                                || e[-1] == '\t'); e--)
        {
            /* void */
        }

        if (s == e || *s == '#') {
            continue;
        }

        rc = ngx_http_ai_gateway_kw_add(g->keywords, s, e - s);

        if (rc < 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid_keywords \"%V\", line %ui: %s",
                               path, line,
                               rc == NGX_HTTP_AI_GATEWAY_KW_TOO_LONG
                               ? "the keyword is longer than 256 bytes"
                               : "the keyword could not be added");
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_ai_gateway_kw_compile(g->keywords) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid_keywords \"%V\": too many keywords",
                           path);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * One PCRE2 pattern a line ("#" starts a comment line), compiled for UTF-8
 * text (invalid UTF-8 is matched, not refused) and JIT-compiled; the match
 * limits bound what a pathological pattern can cost.
 */

static char *
ngx_http_ai_gateway_guard_patterns(ngx_conf_t *cf,
    ngx_http_ai_gateway_guard_list_t **list, ngx_str_t *name,
    ngx_str_t *path, ngx_str_t *text)
{
    int                                   err;
    u_char                               *p, *eol, *last, *s, *e;
    u_char                                msg[256];
    PCRE2_SIZE                            off;
    ngx_uint_t                            line;
    ngx_http_ai_gateway_guard_pattern_t  *pat;

    if (*list == NULL) {
        *list = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_guard_list_t));
        if (*list == NULL
            || ngx_array_init(&(*list)->patterns, cf->pool, 8,
                              sizeof(ngx_http_ai_gateway_guard_pattern_t))
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    p = text->data;
    last = p + text->len;

    for (line = 1; p < last; line++, p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        s = p;
        for (e = eol; e > s && e[-1] == '\r'; e--) { /* void */ }

        if (s == e || *s == '#') {
            continue;
        }

        pat = ngx_array_push(&(*list)->patterns);
        if (pat == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(pat, sizeof(ngx_http_ai_gateway_guard_pattern_t));

        pat->code = pcre2_compile(s, e - s,
                                  PCRE2_UTF|PCRE2_MATCH_INVALID_UTF, &err,
                                  &off, NULL);

        if (pat->code == NULL) {
            (void) pcre2_get_error_message(err, msg, sizeof(msg));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V \"%V\", line %ui: %s at offset %uz",
                               name, path, line, msg, (size_t) off);
            (*list)->patterns.nelts--;
            return NGX_CONF_ERROR;
        }

        /* without JIT (not built in), the interpreter with its limits */
        (void) pcre2_jit_compile(pat->code, PCRE2_JIT_COMPLETE);

        ngx_http_ai_gateway_prefilter_init(&pat->pf, s, e - s);
        ngx_http_ai_gateway_guard_literals(*list, pat);

        pat->match = pcre2_match_data_create_from_pattern(pat->code, NULL);
        pat->mctx = pcre2_match_context_create(NULL);

        if (pat->match == NULL || pat->mctx == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) pcre2_set_match_limit(pat->mctx,
                                     NGX_HTTP_AI_GATEWAY_GUARD_MATCH_LIMIT);
        (void) pcre2_set_depth_limit(pat->mctx,
                                     NGX_HTTP_AI_GATEWAY_GUARD_DEPTH_LIMIT);

        pat->line = line;
    }

    return NGX_CONF_OK;
}


/*
 * A pattern's literals join those of its list, looked for in one pass
 * (_prefilter.h); a pattern whose literals do not all find room is
 * prefiltered on its own, as before.
 */

static void
ngx_http_ai_gateway_guard_literals(ngx_http_ai_gateway_guard_list_t *list,
    ngx_http_ai_gateway_guard_pattern_t *pat)
{
    int                                    k;
    unsigned                               i, j, n;
    uint64_t                               sets[NGX_HTTP_AI_GATEWAY_PREFILTER_AND];
    ngx_http_ai_gateway_prefilter_multi_t  lits;

    if (pat->pf.n == 0) {
        return;
    }

    /* on a copy: a pattern that does not fit leaves no literal behind */
    lits = list->lits;

    for (i = 0; i < pat->pf.n; i++) {
        sets[i] = 0;
        n = pat->pf.set[i].n;

        for (j = 0; j < n; j++) {
            k = ngx_http_ai_gateway_prefilter_multi_add(&lits,
                                                  pat->pf.set[i].lit[j],
                                                  pat->pf.set[i].len[j]);
            if (k < 0) {
                return;
            }

            sets[i] |= (uint64_t) 1 << k;
        }
    }

    ngx_http_ai_gateway_prefilter_multi_compile(&lits);

    list->lits = lits;
    ngx_memcpy(pat->sets, sets, sizeof(sets));
    pat->multi = 1;
}


static void
ngx_http_ai_gateway_guard_cleanup(void *data)
{
    ngx_http_ai_gateway_guard_t *g = data;

    ngx_uint_t                            i, k;
    ngx_http_ai_gateway_guard_list_t     *lists[2];
    ngx_http_ai_gateway_guard_pattern_t  *pat;

    lists[0] = g->deny;
    lists[1] = g->allow;

    for (k = 0; k < 2; k++) {
        if (lists[k] == NULL) {
            continue;
        }

        pat = lists[k]->patterns.elts;

        for (i = 0; i < lists[k]->patterns.nelts; i++) {
            pcre2_match_data_free(pat[i].match);
            pcre2_match_context_free(pat[i].mctx);
            pcre2_code_free(pat[i].code);
        }
    }
}


/*
 * Runs the patterns of a list over a text: 1 matched, 0 not, -1 the match
 * limit was hit (a pattern too costly for this text).
 */

ngx_int_t
ngx_http_ai_gateway_guard_match(ngx_http_ai_gateway_guard_list_t *list,
    const u_char *p, size_t len, ngx_uint_t *line)
{
    int                                   rc;
    size_t                                size;
    u_char                               *subject, *lower;
    uint64_t                              found;
    ngx_uint_t                            i, k, lowered, scanned;
    ngx_http_ai_gateway_guard_pattern_t  *pat;

    if (list == NULL) {
        return 0;
    }

    /*
     * JIT code reads the subject 16 bytes at a time, past its end within
     * the page: harmless, but memcheck reports it.  A padded copy keeps
     * every read inside memory of ours.  The scratch also holds the text
     * lowercased, for the prefilters.
     */
    size = 2 * len + NGX_HTTP_AI_GATEWAY_GUARD_PAD;

    if (size > ngx_http_ai_gateway_guard_scratch_size) {
        ngx_free(ngx_http_ai_gateway_guard_scratch);
        ngx_http_ai_gateway_guard_scratch_size = 0;

        ngx_http_ai_gateway_guard_scratch = ngx_alloc(size + 4096,
                                                      ngx_cycle->log);
        if (ngx_http_ai_gateway_guard_scratch == NULL) {
            return -1;
        }

        ngx_http_ai_gateway_guard_scratch_size = size + 4096;
    }

    /* each made when a pattern first needs it */
    subject = NULL;
    lower = ngx_http_ai_gateway_guard_scratch + len
            + NGX_HTTP_AI_GATEWAY_GUARD_PAD;
    lowered = 0;
    scanned = 0;
    found = 0;

    pat = list->patterns.elts;

    for (i = 0; i < list->patterns.nelts; i++) {

        if (pat[i].pf.n) {
            if (!lowered) {
                ngx_http_ai_gateway_prefilter_lower(lower, p, len);
                lowered = 1;
            }

            if (pat[i].multi) {
                if (!scanned) {
                    /* all the list's literals, in one pass */
                    found = ngx_http_ai_gateway_prefilter_multi_scan(
                                                  &list->lits, lower, len);
                    scanned = 1;
                }

                for (k = 0; k < pat[i].pf.n; k++) {
                    if ((found & pat[i].sets[k]) == 0) {
                        break;
                    }
                }

                if (k < pat[i].pf.n) {
                    /* none of the literals of a set a match needs */
                    continue;
                }

            } else if (!ngx_http_ai_gateway_prefilter_test(&pat[i].pf, lower,
                                                           len))
            {
                /* none of the literals a match needs: no match */
                continue;
            }
        }

        if (subject == NULL) {
            subject = ngx_http_ai_gateway_guard_scratch;
            ngx_memcpy(subject, p, len);
            ngx_memzero(subject + len, NGX_HTTP_AI_GATEWAY_GUARD_PAD);
        }

        rc = pcre2_match(pat[i].code, subject, len, 0, 0, pat[i].match,
                         pat[i].mctx);

        if (rc >= 0) {
            *line = pat[i].line;
            return 1;
        }

        if (rc != PCRE2_ERROR_NOMATCH) {
            *line = pat[i].line;
            return -1;
        }
    }

    return 0;
}


/*
 * One text: keywords and deny patterns block; PII blocks, or is masked
 * into s->masked (NULL: nothing to mask).  Returns NGX_OK, NGX_DECLINED
 * (blocked: s->category says why) or NGX_ERROR (a pattern hit its limit).
 */

ngx_int_t
ngx_http_ai_gateway_guard_text(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len)
{
    int                               idx;
    size_t                            start, end, n, count;
    ngx_int_t                         rc;
    ngx_uint_t                        line;
    ngx_http_ai_gateway_guard_t      *g;
    ngx_http_ai_gateway_pii_match_t   m;

    g = s->guard;
    s->masked.data = NULL;
    s->masked.len = 0;

    if (len == 0) {
        return NGX_OK;
    }

    s->inspected += len;

    if (g->keywords
        && ngx_http_ai_gateway_kw_find(g->keywords, p, len, &start, &end,
                                       &idx))
    {
        s->category = "invalid_keyword";
        return NGX_DECLINED;
    }

    rc = ngx_http_ai_gateway_guard_match(g->deny, p, len, &line);

    if (rc == 1) {
        s->category = "deny_pattern";
        s->line = line;
        return NGX_DECLINED;
    }

    if (rc == -1) {
        s->category = "deny_pattern";
        s->line = line;
        return NGX_ERROR;
    }

    if (g->allow && !s->allowed) {
        rc = ngx_http_ai_gateway_guard_match(g->allow, p, len, &line);

        if (rc == 1) {
            s->allowed = 1;

        } else if (rc == -1) {
            s->category = "allow_pattern";
            s->line = line;
            return NGX_ERROR;
        }
    }

    if (g->pii == NGX_HTTP_AI_GATEWAY_GUARD_BLOCK) {
        m.type = -1;
        (void) ngx_http_ai_gateway_pii_scan(p, len, g->pii_types,
                                            ngx_http_ai_gateway_guard_pii_first,
                                            &m);
        if (m.type >= 0) {
            s->category = ngx_http_ai_gateway_guard_pii_category(m.type);
            return NGX_DECLINED;
        }

    } else if (g->pii == NGX_HTTP_AI_GATEWAY_GUARD_MASK) {
        n = ngx_http_ai_gateway_pii_mask(p, len, g->pii_types, NULL, &count);

        if (count) {
            s->masked.data = ngx_pnalloc(s->pool, n + 1);
            if (s->masked.data == NULL) {
                return NGX_ERROR;
            }

            s->masked.len = ngx_http_ai_gateway_pii_mask(p, len, g->pii_types,
                                                         s->masked.data, NULL);
            s->masked.data[s->masked.len] = '\0';
            s->masks += count;
            s->mask_types |= ngx_http_ai_gateway_guard_mask_types(p, len,
                                                               g->pii_types);
        }
    }

    return NGX_OK;
}


static int
ngx_http_ai_gateway_guard_pii_first(void *data,
    ngx_http_ai_gateway_pii_match_t *m)
{
    *(ngx_http_ai_gateway_pii_match_t *) data = *m;
    return 1;
}


static int
ngx_http_ai_gateway_guard_pii_types(void *data,
    ngx_http_ai_gateway_pii_match_t *m)
{
    *(unsigned *) data |= NGX_HTTP_AI_GATEWAY_PII_BIT(m->type);
    return 0;
}


unsigned
ngx_http_ai_gateway_guard_mask_types(const u_char *p, size_t len,
    unsigned types)
{
    unsigned  found;

    found = 0;

    (void) ngx_http_ai_gateway_pii_scan(p, len, types,
                                        ngx_http_ai_gateway_guard_pii_types,
                                        &found);
    return found;
}


const char *
ngx_http_ai_gateway_guard_pii_category(int type)
{
    static const char  *names[] = {
        "pii_email", "pii_phone", "pii_ssn", "pii_card", "pii_iban",
        "pii_ipv4", "pii_ipv6", "pii_secret"
    };

    return (type >= 0 && type < NGX_HTTP_AI_GATEWAY_PII_NTYPES)
           ? names[type] : "pii";
}


/*
 * A JSON document is walked without building it: the strings the model
 * reads are inspected where they are (their raw bytes when they hold no
 * escape, else decoded), and a masked one is spliced into a copy of the
 * document, encoded again; everything else is kept byte for byte.  The
 * walk checks what it steps over, so an answer that is not JSON is an
 * error, not a wrong read.
 */

/* as deep as the request's inspection (jansson's limit) lets a document
 * be: a deeper limit here would let a nested array switch the guard off
 * (on_error=allow) for a body the upstream reads as usual */
#define NGX_HTTP_AI_GATEWAY_GUARD_MAX_DEPTH  NGX_HTTP_AI_GATEWAY_JSON_MAX_DEPTH


typedef struct {
    const u_char                      *start;
    const u_char                      *end;
    ngx_str_t                          text;    /* masked, decoded */
} ngx_http_ai_gateway_guard_edit_t;


typedef struct {
    ngx_http_ai_gateway_guard_scan_t  *s;
    const u_char                      *p;
    const u_char                      *end;
    ngx_array_t                       *edits;
    ngx_uint_t                         depth;
} ngx_http_ai_gateway_guard_walk_t;


static ngx_int_t ngx_http_ai_gateway_guard_value(
    ngx_http_ai_gateway_guard_walk_t *w, ngx_uint_t text);
static ngx_int_t ngx_http_ai_gateway_guard_string(
    ngx_http_ai_gateway_guard_walk_t *w, const u_char **start,
    const u_char **end, ngx_uint_t *escaped);
static void ngx_http_ai_gateway_guard_record_masked(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_guard_t *guard);
static ngx_uint_t ngx_http_ai_gateway_guard_key(const u_char *p, size_t len);
static ngx_int_t ngx_http_ai_gateway_guard_walk(
    ngx_http_ai_gateway_guard_scan_t *s, const u_char *p, size_t len,
    ngx_uint_t text);
static ngx_int_t ngx_http_ai_gateway_guard_json_text(
    ngx_http_ai_gateway_guard_walk_t *w, ngx_str_t *str);
static ngx_int_t ngx_http_ai_gateway_guard_edited(ngx_pool_t *pool,
    const u_char *p, size_t len, ngx_array_t *edits, ngx_str_t *out);


static void
ngx_http_ai_gateway_guard_ws(ngx_http_ai_gateway_guard_walk_t *w)
{
    while (w->p < w->end
           && (*w->p == ' ' || *w->p == '\n' || *w->p == '\r'
               || *w->p == '\t'))
    {
        w->p++;
    }
}


static ngx_int_t
ngx_http_ai_gateway_guard_value(ngx_http_ai_gateway_guard_walk_t *w,
    ngx_uint_t text)
{
    u_char                            *t;
    ngx_int_t                          rc;
    ngx_str_t                          str;
    ngx_uint_t                         escaped, child, key;
    const u_char                      *a, *b;
    ngx_http_ai_gateway_guard_edit_t  *e;

    ngx_http_ai_gateway_guard_ws(w);

    if (w->p == w->end) {
        return NGX_ERROR;
    }

    switch (*w->p) {

    case '{':
        if (++w->depth > NGX_HTTP_AI_GATEWAY_GUARD_MAX_DEPTH) {
            return NGX_ERROR;
        }

        w->p++;
        ngx_http_ai_gateway_guard_ws(w);

        if (w->p < w->end && *w->p == '}') {
            w->p++;
            w->depth--;
            return NGX_OK;
        }

        for ( ;; ) {
            ngx_http_ai_gateway_guard_ws(w);

            if (ngx_http_ai_gateway_guard_string(w, &a, &b, &escaped)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (escaped) {
                /* "cont\u0065nt" is "content" to every JSON reader */
                if (ngx_http_ai_gateway_guard_decode(w->s->pool, a, b, &str)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                a = str.data;
                b = str.data + str.len;
            }

            key = ngx_http_ai_gateway_guard_key(a, b - a);

            /* 3: in a skipped subtree, whatever the keys below say; 4: a
             * string of JSON text (a tool's arguments) */
            if (text == 3 || key == NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP) {
                child = 3;

            } else if (key == NGX_HTTP_AI_GATEWAY_GUARD_KEY_JSON) {
                child = 4;

            } else {
                child = (text != 0 || key == NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT);
            }

            ngx_http_ai_gateway_guard_ws(w);

            if (w->p == w->end || *w->p++ != ':') {
                return NGX_ERROR;
            }

            /* a skipped subtree is still walked, only not inspected */
            rc = ngx_http_ai_gateway_guard_value(w, child);
            if (rc != NGX_OK) {
                return rc;
            }

            ngx_http_ai_gateway_guard_ws(w);

            if (w->p == w->end) {
                return NGX_ERROR;
            }

            if (*w->p == ',') {
                w->p++;
                continue;
            }

            if (*w->p++ != '}') {
                return NGX_ERROR;
            }

            w->depth--;
            return NGX_OK;
        }

    case '[':
        if (++w->depth > NGX_HTTP_AI_GATEWAY_GUARD_MAX_DEPTH) {
            return NGX_ERROR;
        }

        w->p++;
        ngx_http_ai_gateway_guard_ws(w);

        if (w->p < w->end && *w->p == ']') {
            w->p++;
            w->depth--;
            return NGX_OK;
        }

        for ( ;; ) {
            rc = ngx_http_ai_gateway_guard_value(w, text == 4 ? 1 : text);
            if (rc != NGX_OK) {
                return rc;
            }

            ngx_http_ai_gateway_guard_ws(w);

            if (w->p == w->end) {
                return NGX_ERROR;
            }

            if (*w->p == ',') {
                w->p++;
                continue;
            }

            if (*w->p++ != ']') {
                return NGX_ERROR;
            }

            w->depth--;
            return NGX_OK;
        }

    case '"':
        if (ngx_http_ai_gateway_guard_string(w, &a, &b, &escaped) != NGX_OK) {
            return NGX_ERROR;
        }

        /* 3: inside a skipped subtree */
        if ((text != 1 && text != 4) || a == b) {
            return NGX_OK;
        }

        if (escaped) {
            if (ngx_http_ai_gateway_guard_decode(w->s->pool, a, b, &str)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else {
            str.data = (u_char *) a;
            str.len = b - a;
        }

        rc = (text == 4)
             ? ngx_http_ai_gateway_guard_json_text(w, &str)
             : ngx_http_ai_gateway_guard_text(w->s, str.data, str.len);

        if (rc != NGX_OK) {
            return rc;
        }

        if (w->s->masked.data) {
            if (w->edits == NULL) {
                w->edits = ngx_array_create(w->s->pool, 4,
                                     sizeof(ngx_http_ai_gateway_guard_edit_t));
                if (w->edits == NULL) {
                    return NGX_ERROR;
                }
            }

            e = ngx_array_push(w->edits);
            if (e == NULL) {
                return NGX_ERROR;
            }

            e->start = a;
            e->end = b;
            e->text = w->s->masked;
            str = w->s->masked;
        }

        /* the safety model reads the texts too: masked */
        if (w->s->texts
            && json_array_append_new(w->s->texts,
                                     json_stringn_nocheck((char *) str.data,
                                                          str.len))
               != 0)
        {
            return NGX_ERROR;
        }

        return NGX_OK;

    default:
        /* a number, true, false, null: up to what ends a value */
        for (t = (u_char *) w->p; w->p < w->end; w->p++) {
            if (*w->p == ',' || *w->p == '}' || *w->p == ']'
                || *w->p == ' ' || *w->p == '\n' || *w->p == '\r'
                || *w->p == '\t')
            {
                break;
            }

            if (*w->p == '"' || *w->p == '{' || *w->p == '[') {
                return NGX_ERROR;
            }
        }

        return (w->p > t) ? NGX_OK : NGX_ERROR;
    }
}


/* a string's raw bytes, between its quotes; w->p goes past it */

static ngx_int_t
ngx_http_ai_gateway_guard_string(ngx_http_ai_gateway_guard_walk_t *w,
    const u_char **start, const u_char **end, ngx_uint_t *escaped)
{
    const u_char  *p;

    if (w->p == w->end || *w->p != '"') {
        return NGX_ERROR;
    }

    p = w->p + 1;
    *start = p;
    *escaped = 0;

    for ( ;; ) {
        /* the walk checks no encoding (the inspection did): UTF-8 text
         * goes by whole, not a step a byte */
        p = ngx_http_ai_gateway_json_skip_text(p, w->end);

        if (p >= w->end) {
            return NGX_ERROR;
        }

        if (*p == '"') {
            break;
        }

        if (*p == '\\') {
            *escaped = 1;
            p += 2;
            continue;
        }

        if (*p < 0x20) {
            return NGX_ERROR;
        }

        p++;
    }

    *end = p;
    w->p = p + 1;

    return NGX_OK;
}


/* JSON escapes to UTF-8, surrogate pairs joined */

ngx_int_t
ngx_http_ai_gateway_guard_decode(ngx_pool_t *pool, const u_char *p,
    const u_char *end, ngx_str_t *out)
{
    u_char        *d;
    uint32_t       c, lo;
    ngx_int_t      n;
    const u_char  *q;

    d = ngx_pnalloc(pool, end - p);
    if (d == NULL) {
        return NGX_ERROR;
    }

    out->data = d;

    while (p < end) {
        if (*p != '\\') {
            /* the run up to the next escape, copied whole */
            q = memchr(p, '\\', end - p);
            n = (q ? q : end) - p;
            d = ngx_cpymem(d, p, n);
            p += n;
            continue;
        }

        if (end - p < 2) {
            return NGX_ERROR;
        }

        switch (p[1]) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;

        case 'u':
            if (end - p < 6 || (n = ngx_hextoi((u_char *) p + 2, 4))
                               == NGX_ERROR)
            {
                return NGX_ERROR;
            }

            c = (uint32_t) n;
            p += 6;

            if (c >= 0xd800 && c <= 0xdbff && end - p >= 6 && p[0] == '\\'
                && p[1] == 'u'
                && (n = ngx_hextoi((u_char *) p + 2, 4)) != NGX_ERROR
                && n >= 0xdc00 && n <= 0xdfff)
            {
                lo = (uint32_t) n;
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }

            /* "\u00e9" takes 6 bytes, its UTF-8 at most 4: it fits */
            if (c < 0x80) {
                *d++ = (u_char) c;

            } else if (c < 0x800) {
                *d++ = (u_char) (0xc0 | (c >> 6));
                *d++ = (u_char) (0x80 | (c & 0x3f));

            } else if (c < 0x10000) {
                *d++ = (u_char) (0xe0 | (c >> 12));
                *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
                *d++ = (u_char) (0x80 | (c & 0x3f));

            } else {
                *d++ = (u_char) (0xf0 | (c >> 18));
                *d++ = (u_char) (0x80 | ((c >> 12) & 0x3f));
                *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
                *d++ = (u_char) (0x80 | (c & 0x3f));
            }

            continue;

        default:
            return NGX_ERROR;
        }

        p += 2;
    }

    out->len = d - out->data;

    return NGX_OK;
}


/*
 * A string that holds JSON text, a tool's arguments ("{\"to\":\"...\"}"):
 * keywords and patterns look at the text as it is (as before), PII at the
 * strings in it, decoded, so that "\n" before an address is a line end
 * and not an "n" of its local part, and a mask leaves the arguments JSON
 * (the masked strings are encoded again).  Text that is not JSON (a piece
 * of a stream) is a text as any other.
 */

static ngx_int_t
ngx_http_ai_gateway_guard_json_text(ngx_http_ai_gateway_guard_walk_t *w,
    ngx_str_t *str)
{
    ngx_int_t                          rc;
    ngx_http_ai_gateway_guard_t        g, *guard;
    ngx_http_ai_gateway_guard_scan_t   s;
    ngx_http_ai_gateway_guard_walk_t   iw;

    guard = w->s->guard;

    if (guard->pii == NGX_HTTP_AI_GATEWAY_GUARD_NONE) {
        return ngx_http_ai_gateway_guard_text(w->s, str->data, str->len);
    }

    g = *guard;
    g.pii = NGX_HTTP_AI_GATEWAY_GUARD_NONE;

    w->s->guard = &g;
    rc = ngx_http_ai_gateway_guard_text(w->s, str->data, str->len);
    w->s->guard = guard;

    if (rc != NGX_OK) {
        return rc;
    }

    /* PII only, on a copy of the scan: nothing of a failed walk is kept */

    g = *guard;
    g.keywords = NULL;
    g.deny = NULL;
    g.allow = NULL;

    s = *w->s;
    s.guard = &g;
    s.texts = NULL;
    s.category = NULL;

    iw.s = &s;
    iw.p = str->data;
    iw.end = str->data + str->len;
    iw.edits = NULL;
    iw.depth = w->depth;

    /* an object or an array (the walk does not check a bare word) */
    ngx_http_ai_gateway_guard_ws(&iw);

    rc = (iw.p < iw.end && (*iw.p == '{' || *iw.p == '['))
         ? ngx_http_ai_gateway_guard_value(&iw, 1) : NGX_ERROR;

    if (rc == NGX_OK) {
        ngx_http_ai_gateway_guard_ws(&iw);

        if (iw.p != iw.end) {
            rc = NGX_ERROR;
        }
    }

    if (rc == NGX_ERROR && s.category == NULL) {
        /* not JSON: a text */
        w->s->guard = &g;
        rc = ngx_http_ai_gateway_guard_text(w->s, str->data, str->len);
        w->s->guard = guard;

        return rc;
    }

    w->s->category = s.category;
    w->s->masks = s.masks;
    w->s->mask_types = s.mask_types;
    w->s->inspected = s.inspected;
    w->s->masked.data = NULL;
    w->s->masked.len = 0;

    if (rc != NGX_OK || iw.edits == NULL) {
        return rc;
    }

    return ngx_http_ai_gateway_guard_edited(w->s->pool, str->data, str->len,
                                            iw.edits, &w->s->masked);
}


/*
 * The keys whose string values the model reads, and those of subtrees it
 * does not; every key of a document is looked up, by its length first
 */

static ngx_uint_t
ngx_http_ai_gateway_guard_key(const u_char *p, size_t len)
{
#define ngx_http_ai_gateway_guard_is(key)  (ngx_memcmp(p, key, len) == 0)

    switch (len) {

    case 4:
        if (ngx_http_ai_gateway_guard_is("text")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT;
        }
        break;

    case 5:
        if (ngx_http_ai_gateway_guard_is("input")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT;
        }

        if (ngx_http_ai_gateway_guard_is("tools")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;

    case 6:
        if (ngx_http_ai_gateway_guard_is("prompt")
            || ngx_http_ai_gateway_guard_is("system"))
        {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT;
        }
        break;

    case 7:
        if (ngx_http_ai_gateway_guard_is("content")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT;
        }
        break;

    case 8:
        if (ngx_http_ai_gateway_guard_is("metadata")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;

    case 9:
        if (ngx_http_ai_gateway_guard_is("arguments")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_JSON;
        }

        if (ngx_http_ai_gateway_guard_is("functions")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;

    case 11:
        if (ngx_http_ai_gateway_guard_is("tool_choice")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;

    case 12:
        if (ngx_http_ai_gateway_guard_is("instructions")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_TEXT;
        }

        if (ngx_http_ai_gateway_guard_is("partial_json")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_JSON;
        }
        break;

    case 14:
        if (ngx_http_ai_gateway_guard_is("stream_options")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;

    case 15:
        if (ngx_http_ai_gateway_guard_is("response_format")) {
            return NGX_HTTP_AI_GATEWAY_GUARD_KEY_SKIP;
        }
        break;
    }

#undef ngx_http_ai_gateway_guard_is

    return NGX_HTTP_AI_GATEWAY_GUARD_KEY_OTHER;
}


/*
 * Inspects a JSON document; the masked one, when something was masked, in
 * s->document (pool memory).  NGX_OK, NGX_DECLINED (blocked), NGX_ERROR
 * (could not inspect).
 */

ngx_int_t
ngx_http_ai_gateway_guard_json(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len)
{
    return ngx_http_ai_gateway_guard_walk(s, p, len, 0);
}


/*
 * Every string of a JSON text is a text (a tool's arguments, whole): the
 * masked text in s->document.  NGX_ERROR when it is no object or array.
 */

ngx_int_t
ngx_http_ai_gateway_guard_json_all(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len)
{
    const u_char  *q;

    for (q = p; q < p + len && (*q == ' ' || *q == '\n' || *q == '\r'
                                || *q == '\t'); q++)
    {
        /* void */
    }

    if (q == p + len || (*q != '{' && *q != '[')) {
        return NGX_ERROR;
    }

    return ngx_http_ai_gateway_guard_walk(s, p, len, 1);
}


static ngx_int_t
ngx_http_ai_gateway_guard_walk(ngx_http_ai_gateway_guard_scan_t *s,
    const u_char *p, size_t len, ngx_uint_t text)
{
    ngx_int_t                          rc;
    ngx_http_ai_gateway_guard_walk_t   w;

    ngx_str_null(&s->document);

    w.s = s;
    w.p = p;
    w.end = p + len;
    w.edits = NULL;
    w.depth = 0;

    rc = ngx_http_ai_gateway_guard_value(&w, text);

    if (rc == NGX_OK) {
        ngx_http_ai_gateway_guard_ws(&w);

        if (w.p != w.end) {
            rc = NGX_ERROR;
        }
    }

    if (rc == NGX_ERROR && s->category == NULL) {
        s->category = "unreadable_json";
    }

    if (rc == NGX_OK && s->guard->allow && !s->allowed && !s->guard->output) {
        s->category = "allow_pattern";
        rc = NGX_DECLINED;
    }

    if (rc != NGX_OK || w.edits == NULL) {
        return rc;
    }

    return ngx_http_ai_gateway_guard_edited(s->pool, p, len, w.edits,
                                            &s->document);
}


/* the document with its edited strings encoded again */

static ngx_int_t
ngx_http_ai_gateway_guard_edited(ngx_pool_t *pool, const u_char *p,
    size_t len, ngx_array_t *edits, ngx_str_t *out)
{
    u_char                            *d;
    size_t                             size;
    ngx_uint_t                         i;
    const u_char                      *from;
    ngx_http_ai_gateway_guard_edit_t  *e;

    e = edits->elts;
    size = len;

    for (i = 0; i < edits->nelts; i++) {
        size += ngx_escape_json(NULL, e[i].text.data, e[i].text.len)
                + e[i].text.len;
    }

    d = ngx_pnalloc(pool, size + 1);
    if (d == NULL) {
        return NGX_ERROR;
    }

    out->data = d;
    from = p;

    for (i = 0; i < edits->nelts; i++) {
        d = ngx_cpymem(d, from, e[i].start - from);
        d = (u_char *) ngx_escape_json(d, e[i].text.data, e[i].text.len);
        from = e[i].end;
    }

    d = ngx_cpymem(d, from, p + len - from);
    out->len = d - out->data;

    return NGX_OK;
}


/*
 * The input guardrail, on the client's body, when it was read (before the
 * body is forwarded or the limits count it): a block answers 400 when the
 * phases resume; a mask changes what is forwarded and what is recorded.
 */

ngx_int_t
ngx_http_ai_gateway_guard_input(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    u_char                            line_buf[NGX_INT_T_LEN + 16];
    ngx_int_t                         rc;
    ngx_str_t                         msg, line;
    ngx_http_ai_gateway_loc_conf_t   *lcf;
    ngx_http_ai_gateway_guard_scan_t  s;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->guard_in == NULL) {
        return NGX_OK;
    }

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = lcf->guard_in;
    s.pool = r->pool;

    if (s.guard->safety.len) {
        s.texts = json_array();
        if (s.texts == NULL) {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_ai_gateway_guard_json(&s, ctx->body, ctx->body_len);

    if (s.texts) {
        if (rc == NGX_OK
            && ngx_http_ai_gateway_guard_safety_body(r->pool, s.texts,
                                                     &ctx->safety_body)
               != NGX_OK)
        {
            rc = NGX_ERROR;
        }

        json_decref(s.texts);
    }

    if (rc == NGX_ERROR && s.guard->on_error == NGX_HTTP_AI_GATEWAY_GUARD_ALLOW)
    {
        ngx_str_null(&line);

        if (s.line) {
            line.data = line_buf;
            line.len = ngx_sprintf(line_buf, ", pattern line %ui", s.line)
                       - line_buf;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the input guardrail could not inspect the "
                      "request (%s%V): let through (on_error=allow)",
                      s.category, &line);
        ngx_http_ai_gateway_guard_note(r, ctx, "input", s.category, "error");
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        ngx_http_ai_gateway_guard_note(r, ctx, "input", s.category,
                                       rc == NGX_ERROR ? "error" : "block");

        msg.data = ngx_pnalloc(r->pool, 128);
        if (msg.data == NULL) {
            return NGX_ERROR;
        }

        msg.len = ngx_sprintf(msg.data, "The request was blocked by the "
                              "input guardrail (%s).", s.category)
                  - msg.data;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: 400 guardrail_blocked: input %s",
                      s.category);

        if (ctx->infer && s.guard->pii != NGX_HTTP_AI_GATEWAY_GUARD_NONE) {
            ngx_http_ai_gateway_guard_record_masked(r, ctx, s.guard);
        }

        ctx->status = NGX_HTTP_BAD_REQUEST;
        ctx->error_type = "invalid_request_error";
        ctx->error_code = "guardrail_blocked";
        ctx->error_message = msg;

        return NGX_DECLINED;
    }

    if (s.masks == 0) {
        return NGX_OK;
    }

    ngx_http_ai_gateway_guard_mask_note(r, ctx, "input", s.mask_types);

    /* the masked body is forwarded and recorded; the original is gone */
    ctx->body = s.document.data;
    ctx->body_len = s.document.len;
    ctx->body_size = s.document.len;

    return ngx_http_ai_gateway_replace_body(r, s.document.data,
                                            s.document.len);
}


/*
 * A blocked request is still recorded (inference tables), but with the
 * PII the guard looks for masked, as a masking guard would have forwarded
 * it: the record never keeps what the guard was there to keep out.  A body
 * that cannot be masked is left out of the record.
 */

static void
ngx_http_ai_gateway_guard_record_masked(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_guard_t *guard)
{
    ngx_int_t                         rc;
    ngx_http_ai_gateway_guard_t       g;
    ngx_http_ai_gateway_guard_scan_t  s;

    ngx_memzero(&g, sizeof(ngx_http_ai_gateway_guard_t));
    g.pii = NGX_HTTP_AI_GATEWAY_GUARD_MASK;
    g.pii_types = guard->pii_types;
    g.on_error = NGX_HTTP_AI_GATEWAY_GUARD_DENY;

    ngx_memzero(&s, sizeof(ngx_http_ai_gateway_guard_scan_t));
    s.guard = &g;
    s.pool = r->pool;

    rc = ngx_http_ai_gateway_guard_json(&s, ctx->body, ctx->body_len);

    if (rc != NGX_OK) {
        ctx->body = NULL;
        ctx->body_len = 0;
        return;
    }

    if (s.masks) {
        ctx->body = s.document.data;
        ctx->body_len = s.document.len;
    }
}


/* "input:pii_email:mask" and the like, for $ai_guardrail and records */

void
ngx_http_ai_gateway_guard_note(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const char *direction,
    const char *category, const char *action)
{
    u_char  *p, *q, *last, *start, *note, buf[128];
    size_t   n, len;

    /* "direction:category:action"; a safety model names its categories */

    n = ngx_strlen(direction) + ngx_strlen(category) + ngx_strlen(action) + 2;
    note = (n <= sizeof(buf)) ? buf : ngx_pnalloc(r->pool, n);

    if (note == NULL) {
        return;
    }

    ngx_sprintf(note, "%s:%s:%s", direction, category, action);

    /*
     * Each action once: an output guard that masks in every delta of a
     * long stream would otherwise make the note, and the copies of it
     * made here, grow with the stream.
     */

    last = ctx->guardrail.data + ctx->guardrail.len;

    for (p = ctx->guardrail.data; p && p < last; p = q + 1) {
        q = ngx_strlchr(p, last, ',');
        if (q == NULL) {
            q = last;
        }

        if ((size_t) (q - p) == n && ngx_memcmp(p, note, n) == 0) {
            return;
        }
    }

    len = ctx->guardrail.len + 1 + n;

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        return;
    }

    p = start;

    if (ctx->guardrail.len) {
        p = ngx_cpymem(p, ctx->guardrail.data, ctx->guardrail.len);
        *p++ = ',';
    }

    p = ngx_cpymem(p, note, n);

    ctx->guardrail.data = start;
    ctx->guardrail.len = p - start;
}


void
ngx_http_ai_gateway_guard_mask_note(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const char *direction, unsigned types)
{
    int  t;

    for (t = 0; t < NGX_HTTP_AI_GATEWAY_PII_NTYPES; t++) {
        if (types & NGX_HTTP_AI_GATEWAY_PII_BIT(t)) {
            ngx_http_ai_gateway_guard_note(r, ctx, direction,
                                     ngx_http_ai_gateway_guard_pii_category(t),
                                     "mask");
        }
    }
}


/* {"input": [the texts]}, as a moderation endpoint takes it */

ngx_int_t
ngx_http_ai_gateway_guard_safety_body(ngx_pool_t *pool, void *texts,
    ngx_str_t *body)
{
    char    *dump;
    json_t  *o;

    o = json_pack("{s:O}", "input", (json_t *) texts);
    if (o == NULL) {
        return NGX_ERROR;
    }

    dump = json_dumps(o, JSON_COMPACT);
    json_decref(o);

    if (dump == NULL) {
        return NGX_ERROR;
    }

    body->len = ngx_strlen(dump);
    body->data = ngx_pnalloc(pool, body->len);

    if (body->data == NULL) {
        free(dump);
        return NGX_ERROR;
    }

    ngx_memcpy(body->data, dump, body->len);
    free(dump);

    return NGX_OK;
}


/*
 * The safety model: a subrequest to the configured location (which
 * proxies to a moderation endpoint), the texts as its body.  NGX_OK: go
 * on; NGX_AGAIN: waiting for it; NGX_DONE: answered (blocked).
 */

ngx_int_t
ngx_http_ai_gateway_guard_safety(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_str_t                        msg;
    ngx_http_ai_gateway_guard_t     *g;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);
    g = lcf->guard_in;

    if (g == NULL || g->safety.len == 0 || ctx->safety_body.len == 0) {
        return NGX_OK;
    }

    switch (ctx->safety.state) {

    case NGX_HTTP_AI_GATEWAY_SAFETY_RUNNING:
        return NGX_AGAIN;

    case NGX_HTTP_AI_GATEWAY_SAFETY_CLEAN:
        return NGX_OK;

    case NGX_HTTP_AI_GATEWAY_SAFETY_FLAGGED:
        ngx_http_ai_gateway_guard_note(r, ctx, "input", ctx->safety.category,
                                       "block");

        msg.data = ngx_pnalloc(r->pool, 128);
        if (msg.data == NULL) {
            return NGX_ERROR;
        }

        msg.len = ngx_snprintf(msg.data, 128, "The request was blocked by "
                               "the input guardrail (%s).",
                               ctx->safety.category)
                  - msg.data;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: 400 guardrail_blocked: input %s",
                      ctx->safety.category);

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "guardrail_blocked", &msg));
        return NGX_DONE;

    case NGX_HTTP_AI_GATEWAY_SAFETY_FAILED:
        ngx_http_ai_gateway_guard_note(r, ctx, "input", "safety", "error");

        if (g->on_error == NGX_HTTP_AI_GATEWAY_GUARD_ALLOW) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "ai_gateway: the safety model did not answer "
                          "(%s): let through (on_error=allow)",
                          ctx->safety.category);
            return NGX_OK;
        }

        ngx_str_set(&msg, "The safety check is unavailable. Please retry "
                          "later.");
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: 503 guardrail_unavailable: the safety "
                      "model did not answer (%s)", ctx->safety.category);

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "guardrail_unavailable", &msg));
        return NGX_DONE;

    default:
        break;
    }

    if (ngx_http_ai_gateway_guard_safety_ask(r, &g->safety, &ctx->safety_body,
                                             &ctx->safety)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/*
 * Asks the safety model: a POST subrequest to the location with the body,
 * its answer kept in memory; st tells the result when it has finished.
 */

ngx_int_t
ngx_http_ai_gateway_guard_safety_ask(ngx_http_request_t *r,
    ngx_str_t *location, ngx_str_t *body, ngx_http_ai_gateway_safety_t *st)
{
    ngx_buf_t                   *b;
    ngx_chain_t                 *cl;
    ngx_http_request_t          *sr;
    ngx_http_request_body_t     *rb;
    ngx_http_post_subrequest_t  *ps;

    static ngx_str_t  post = ngx_string("POST");

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (ps == NULL || rb == NULL || b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_ai_gateway_guard_safety_done;
    ps->data = st;

    if (ngx_http_subrequest(r, location, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED
                            |NGX_HTTP_SUBREQUEST_IN_MEMORY)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    b->temporary = 1;
    b->start = body->data;
    b->pos = b->start;
    b->last = b->start + body->len;
    b->end = b->last;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;
    rb->bufs = cl;

    sr->request_body = rb;
    sr->method = NGX_HTTP_POST;
    sr->method_name = post;
    sr->headers_in.content_length_n = body->len;
    sr->headers_in.content_length = NULL;

    st->state = NGX_HTTP_AI_GATEWAY_SAFETY_RUNNING;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ai_gateway_guard_safety_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_ai_gateway_safety_t *st = data;

    const char        *flagged;
    ngx_event_t       *wev;

    /*
     * Meanwhile nginx may have armed send_timeout on the client's write
     * event for the parent, held with nothing written: the subrequest,
     * active then, ignores the timeout, and ngx_http_writer() would take
     * the flag for a client that timed out (408) before the verdict.  The
     * safety location's own timeouts bound the wait.
     */
    wev = r->connection->write;

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    wev->timedout = 0;

    st->state = NGX_HTTP_AI_GATEWAY_SAFETY_FAILED;
    st->category = "no answer";

    if (rc != NGX_OK || r->headers_out.status != NGX_HTTP_OK) {
        st->category = (r->headers_out.status == NGX_HTTP_GATEWAY_TIME_OUT)
                       ? "timed out" : "error status";
        return rc;
    }

    if (st->too_large) {
        st->category = "answer too large";
        return rc;
    }

    if (st->answer == NULL) {
        return rc;
    }

    flagged = ngx_http_ai_gateway_guard_safety_read(r, st->answer->pos,
                                                    st->answer->last
                                                    - st->answer->pos);
    if (flagged == NULL) {
        return rc;
    }

    if (*flagged == '\0') {
        st->state = NGX_HTTP_AI_GATEWAY_SAFETY_CLEAN;

    } else {
        st->state = NGX_HTTP_AI_GATEWAY_SAFETY_FLAGGED;
        st->category = flagged;
    }

    return rc;
}


/*
 * The safety model's answer, read here rather than by nginx's in-memory
 * subrequest code: that one ends the client's connection when an answer
 * outgrows subrequest_output_buffer_size (4k by default, two texts);
 * here a cap (NGX_HTTP_AI_GATEWAY_SAFETY_ANSWER_MAX) makes a failed
 * verdict, which on_error decides.  NGX_DECLINED: not our subrequest.
 */

ngx_int_t
ngx_http_ai_gateway_guard_safety_read_body(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_chain_t                   *cl;
    ngx_http_ai_gateway_safety_t  *st;

    if (r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_http_ai_gateway_guard_safety_done)
    {
        return NGX_DECLINED;
    }

    st = r->post_subrequest->data;

    for (cl = in; cl; cl = cl->next) {

        if (!st->too_large && ngx_buf_in_memory(cl->buf)
            && ngx_http_ai_gateway_append(r, &st->answer, cl->buf->pos,
                                   cl->buf->last - cl->buf->pos,
                                   NGX_HTTP_AI_GATEWAY_SAFETY_ANSWER_MAX)
               != NGX_OK)
        {
            st->too_large = 1;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return NGX_OK;
}


/*
 * A moderation answer: "" when nothing is flagged, "safety_<category>"
 * when something is, NULL when it is not one.
 */

static const char *
ngx_http_ai_gateway_guard_safety_read(ngx_http_request_t *r, u_char *p,
    size_t len)
{
    u_char      *c;
    size_t       i;
    json_t      *root, *results, *res, *v;
    const char  *key, *found;

    root = json_loadb((const char *) p, len, 0, NULL);
    results = json_object_get(root, "results");

    if (!json_is_array(results)) {
        json_decref(root);
        return NULL;
    }

    found = "";

    json_array_foreach(results, i, res) {
        if (!json_is_true(json_object_get(res, "flagged"))) {
            continue;
        }

        found = "safety";

        json_object_foreach(json_object_get(res, "categories"), key, v) {
            if (!json_is_true(v)) {
                continue;
            }

            /* "self-harm/intent" -> "safety_self-harm_intent" */
            c = ngx_pnalloc(r->pool, sizeof("safety_") + ngx_strlen(key));
            if (c == NULL) {
                break;
            }

            found = (char *) c;
            c = ngx_cpymem(c, "safety_", 7);

            for ( ; *key; key++) {
                *c++ = (*key == '/') ? '_' : *key;
            }

            *c = '\0';
            break;
        }

        break;
    }

    json_decref(root);

    return found;
}


void
ngx_http_ai_gateway_guard_exit(void)
{
    ngx_free(ngx_http_ai_gateway_guard_scratch);
    ngx_http_ai_gateway_guard_scratch = NULL;
    ngx_http_ai_gateway_guard_scratch_size = 0;
}
