
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Providers: the credentials the gateway sends (ai_gateway_secret), the
 * keys it issues to clients (ai_gateway_keys), the models a location
 * serves and their new names (ai_gateway_models, ai_gateway_model_map),
 * and a location whose upstream speaks Anthropic's Messages API to
 * OpenAI-format clients (ai_gateway_upstream_api): the request and the
 * answer are translated by ngx_http_ai_gateway_translate.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_json.h"
#include "ngx_http_ai_gateway_translate.h"


/* one issued key: the SHA-256 of the key, never the key */
struct ngx_http_ai_gateway_key_s {
    u_char                       digest[32];
    ngx_str_t                    user;
    ngx_str_t                    group;
    ngx_array_t                 *models;       /* of ngx_str_t; NULL: all */
};


struct ngx_http_ai_gateway_keys_s {
    ngx_str_t                    path;
    ngx_http_ai_gateway_key_t   *keys;
    ngx_uint_t                   nkeys;
    ngx_uint_t                  *buckets;      /* first key + 1, 0: none */
    ngx_uint_t                  *next;         /* chain, + 1 */
    ngx_uint_t                   mask;
};


static ngx_int_t ngx_http_ai_gateway_secret_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_ai_gateway_strip_credentials(ngx_http_request_t *r);
static char *ngx_http_ai_gateway_keys_line(ngx_conf_t *cf,
    ngx_http_ai_gateway_keys_t *keys, ngx_array_t *all, u_char *p,
    u_char *last, ngx_uint_t line);
static ngx_int_t ngx_http_ai_gateway_keys_index(ngx_conf_t *cf,
    ngx_http_ai_gateway_keys_t *keys);
static ngx_http_ai_gateway_key_t *ngx_http_ai_gateway_keys_find(
    ngx_http_ai_gateway_keys_t *keys, ngx_str_t *key);
static ngx_int_t ngx_http_ai_gateway_client_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_uint_t ngx_http_ai_gateway_in_list(ngx_array_t *list,
    ngx_str_t *name);
static ngx_str_t *ngx_http_ai_gateway_mapped_model(
    ngx_http_ai_gateway_loc_conf_t *lcf, ngx_str_t *model);
static ngx_int_t ngx_http_ai_gateway_rename_model(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *to);
static ngx_int_t ngx_http_ai_gateway_to_anthropic(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_loc_conf_t *lcf);
static void ngx_http_ai_gateway_hide_header(ngx_table_elt_t *h);
static ngx_int_t ngx_http_ai_gateway_untranslate_save(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_ai_gateway_set_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_ai_gateway_messages_uri(ngx_http_request_t *r);
static ngx_int_t ngx_http_ai_gateway_translated_out(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t last, ngx_chain_t **out);


static ngx_str_t  ngx_http_ai_gateway_secret_prefix = ngx_string("ai_secret_");


/* ai_gateway_secret NAME env=VAR | file=PATH; */

char *
ngx_http_ai_gateway_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    char                          *rv, *env;
    u_char                        *p, c;
    ngx_str_t                     *value, name, path;
    ngx_uint_t                     i;
    ngx_http_variable_t           *var;
    ngx_http_ai_gateway_secret_t  *s;

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid secret name \"%V\" in \"%V\": "
                               "letters, digits and \"_\" only",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->secrets == NULL) {
        mcf->secrets = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_ai_gateway_secret_t));
        if (mcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    s = mcf->secrets->elts;

    for (i = 0; i < mcf->secrets->nelts; i++) {
        if (s[i].name.len == value[1].len
            && ngx_strncmp(s[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate secret \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    s = ngx_array_push(mcf->secrets);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s->name = value[1];

    if (ngx_strncmp(value[2].data, "env=", 4) == 0 && value[2].len > 4) {

        /* the master reads it here; workers inherit the configuration */
        p = ngx_pnalloc(cf->pool, value[2].len - 3);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(p, value[2].data + 4, value[2].len - 3);

        env = getenv((char *) p);

        if (env == NULL || *env == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "ai_gateway_secret \"%V\": the environment "
                               "variable \"%s\" is not set", &value[1], p);
            return NGX_CONF_ERROR;
        }

        s->value.len = ngx_strlen(env);
        s->value.data = ngx_pnalloc(cf->pool, s->value.len);
        if (s->value.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(s->value.data, env, s->value.len);

    } else if (ngx_strncmp(value[2].data, "file=", 5) == 0
               && value[2].len > 5)
    {
        path.data = value[2].data + 5;
        path.len = value[2].len - 5;

        rv = ngx_http_ai_gateway_conf_read_file(cf, &path, &s->value, 16384);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        /* the line end an editor leaves is not part of the secret */
        while (s->value.len && (s->value.data[s->value.len - 1] == '\n'
                                || s->value.data[s->value.len - 1] == '\r'))
        {
            s->value.len--;
        }

        if (s->value.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "ai_gateway_secret \"%V\": the file \"%V\" "
                               "is empty", &value[1], &path);
            return NGX_CONF_ERROR;
        }

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\" directive, "
                           "it must be env=VAR or file=PATH",
                           &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    /* as a JSON string writes it, for the records' redaction: once here,
     * rather than for every payload of every record */
    p = ngx_pnalloc(cf->pool, 6 * s->value.len + 16);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    s->escaped.data = p;
    s->escaped.len = ngx_http_ai_gateway_json_escape(p, s->value.data,
                                                     s->value.len)
                     - p;

    name.len = ngx_http_ai_gateway_secret_prefix.len + value[1].len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(name.data, ngx_http_ai_gateway_secret_prefix.data,
                   ngx_http_ai_gateway_secret_prefix.len);
    ngx_memcpy(p, value[1].data, value[1].len);

    var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_CONF_ERROR;
    }

    var->get_handler = ngx_http_ai_gateway_secret_variable;
    var->data = (uintptr_t) (mcf->secrets->nelts - 1);

    return NGX_CONF_OK;
}


/*
 * The secret, for proxy_set_header.  Being asked for it means that it is
 * sent upstream: the client's own credentials must then not be.
 */

static ngx_int_t
ngx_http_ai_gateway_secret_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ai_gateway_secret_t     *s;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    s = mcf->secrets->elts;

    ngx_http_ai_gateway_strip_credentials(r);

    v->len = s[data].value.len;
    v->data = s[data].value.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The client's Authorization, x-api-key and api-key headers are renamed
 * to "Keep-Alive": a hop-by-hop header that proxy_pass never forwards (it
 * is in the proxy module's own header list).  Removing list elements
 * would leave r->headers_in's pointers to them dangling.
 */

static void
ngx_http_ai_gateway_strip_credentials(ngx_http_request_t *r)
{
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_header_iter_t   it;

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {

        if (ngx_http_ai_gateway_header_in_is(h, "authorization")
            || ngx_http_ai_gateway_header_in_is(h, "x-api-key")
            || ngx_http_ai_gateway_header_in_is(h, "api-key"))
        {
            ngx_http_ai_gateway_hide_header(h);
        }
    }
}


/* a request header proxy_pass will not forward (see above) */

static void
ngx_http_ai_gateway_hide_header(ngx_table_elt_t *h)
{
    static ngx_uint_t  hash;

    if (hash == 0) {
        hash = ngx_hash_key((u_char *) "keep-alive", 10);
    }

    ngx_str_set(&h->key, "Keep-Alive");
    h->lowcase_key = (u_char *) "keep-alive";
    h->hash = hash;
}


char *
ngx_http_ai_gateway_conf_read_file(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *out, size_t max)
{
    ssize_t          n;
    ngx_file_t       file;
    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *path;
    file.log = cf->log;

    file.fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open \"%V\"", path);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR
        || (size_t) ngx_file_size(&fi) > max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is larger than %uz bytes", path, max);
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    out->len = (size_t) ngx_file_size(&fi);
    out->data = ngx_pnalloc(cf->pool, out->len + 1);
    if (out->data == NULL) {
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = out->len ? ngx_read_file(&file, out->data, out->len, 0) : 0;

    ngx_close_file(file.fd);

    if (n != (ssize_t) out->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "cannot read \"%V\"", path);
        return NGX_CONF_ERROR;
    }

    out->data[out->len] = '\0';

    return NGX_CONF_OK;
}


/*
 * ai_gateway_keys FILE;  one key a line:
 *     sha256:<64 hex digits> user=NAME [group=NAME] [models=M1,M2,...]
 * "#" starts a comment.  Read at start-up and on reload.
 */

char *
ngx_http_ai_gateway_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    char                        *rv;
    u_char                      *p, *last, *eol;
    ngx_str_t                   *value, text;
    ngx_uint_t                   line;
    ngx_array_t                  all;
    ngx_http_ai_gateway_keys_t  *keys;

    if (lcf->keys != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->keys = NULL;
        return NGX_CONF_OK;
    }

    keys = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_keys_t));
    if (keys == NULL) {
        return NGX_CONF_ERROR;
    }

    keys->path = value[1];

    rv = ngx_http_ai_gateway_conf_read_file(cf, &keys->path, &text,
                                       64 * 1024 * 1024);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (ngx_array_init(&all, cf->pool, 16, sizeof(ngx_http_ai_gateway_key_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    p = text.data;
    last = text.data + text.len;

    for (line = 1; p < last; line++) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        rv = ngx_http_ai_gateway_keys_line(cf, keys, &all, p, eol, line);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        p = eol + 1;
    }

    keys->keys = all.elts;
    keys->nkeys = all.nelts;

    if (ngx_http_ai_gateway_keys_index(cf, keys) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lcf->keys = keys;

    return NGX_CONF_OK;
}


static char *
ngx_http_ai_gateway_keys_line(ngx_conf_t *cf, ngx_http_ai_gateway_keys_t *keys,
    ngx_array_t *all, u_char *p, u_char *last, ngx_uint_t line)
{
    u_char                     *w, *c;
    ngx_int_t                   n;
    ngx_str_t                   word, *m;
    ngx_uint_t                  i;
    ngx_http_ai_gateway_key_t  *k;

    k = NULL;

    for ( ;; ) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (p == last || *p == '#') {
            break;
        }

        for (w = p; p < last && *p != ' ' && *p != '\t' && *p != '\r'; p++) {
            /* void */
        }

        word.data = w;
        word.len = p - w;

        if (k == NULL) {
            if (word.len != 7 + 64
                || ngx_strncmp(word.data, "sha256:", 7) != 0)
            {
                goto invalid;
            }

            k = ngx_array_push(all);
            if (k == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(k, sizeof(ngx_http_ai_gateway_key_t));

            for (i = 0; i < 32; i++) {
                n = ngx_hextoi(word.data + 7 + 2 * i, 2);
                if (n == NGX_ERROR) {
                    goto invalid;
                }

                k->digest[i] = (u_char) n;
            }

            continue;
        }

        if (word.len > 5 && ngx_strncmp(word.data, "user=", 5) == 0) {
            k->user.data = word.data + 5;
            k->user.len = word.len - 5;
            continue;
        }

        if (word.len > 6 && ngx_strncmp(word.data, "group=", 6) == 0) {
            k->group.data = word.data + 6;
            k->group.len = word.len - 6;
            continue;
        }

        if (word.len > 7 && ngx_strncmp(word.data, "models=", 7) == 0) {
            k->models = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
            if (k->models == NULL) {
                return NGX_CONF_ERROR;
            }

            for (w = word.data + 7; w < word.data + word.len; w = c + 1) {
                c = ngx_strlchr(w, word.data + word.len, ',');
                if (c == NULL) {
                    c = word.data + word.len;
                }

                if (c > w) {
                    m = ngx_array_push(k->models);
                    if (m == NULL) {
                        return NGX_CONF_ERROR;
                    }

                    m->data = w;
                    m->len = c - w;
                }
            }

            continue;
        }

        goto invalid;
    }

    if (k != NULL && k->user.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ai_gateway_keys \"%V\", line %ui: a key needs "
                           "\"user=\"", &keys->path, line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    /* the line may hold a digest: only its number is told */
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "ai_gateway_keys \"%V\", line %ui: expected "
                       "\"sha256:<64 hex digits> user=NAME [group=NAME] "
                       "[models=A,B]\"", &keys->path, line);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_ai_gateway_keys_index(ngx_conf_t *cf, ngx_http_ai_gateway_keys_t *keys)
{
    uint32_t    h;
    ngx_uint_t  i, size;

    for (size = 16; size < keys->nkeys * 2; size <<= 1) { /* void */ }

    keys->mask = size - 1;
    keys->buckets = ngx_pcalloc(cf->pool, size * sizeof(ngx_uint_t));
    keys->next = ngx_pcalloc(cf->pool,
                             (keys->nkeys + 1) * sizeof(ngx_uint_t));
    if (keys->buckets == NULL || keys->next == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < keys->nkeys; i++) {
        ngx_memcpy(&h, keys->keys[i].digest, sizeof(uint32_t));
        keys->next[i] = keys->buckets[h & keys->mask];
        keys->buckets[h & keys->mask] = i + 1;
    }

    return NGX_OK;
}


/* digests are compared in constant time: the key itself never is */

static ngx_http_ai_gateway_key_t *
ngx_http_ai_gateway_keys_find(ngx_http_ai_gateway_keys_t *keys, ngx_str_t *key)
{
    u_char        digest[EVP_MAX_MD_SIZE];
    uint32_t      h;
    ngx_uint_t    i;
    unsigned int  len;

    if (EVP_Digest(key->data, key->len, digest, &len, EVP_sha256(), NULL)
        != 1)
    {
        return NULL;
    }

    ngx_memcpy(&h, digest, sizeof(uint32_t));

    for (i = keys->buckets[h & keys->mask]; i; i = keys->next[i - 1]) {
        if (CRYPTO_memcmp(keys->keys[i - 1].digest, digest, 32) == 0) {
            return &keys->keys[i - 1];
        }
    }

    return NULL;
}


/* "Authorization: Bearer KEY", or Anthropic's and Azure's key headers */

static ngx_int_t
ngx_http_ai_gateway_client_key(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_header_iter_t   it;

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        key->data = h->value.data + 7;
        key->len = h->value.len - 7;

        while (key->len && key->data[0] == ' ') {
            key->data++;
            key->len--;
        }

        return key->len ? NGX_OK : NGX_DECLINED;
    }

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {
        if ((ngx_http_ai_gateway_header_in_is(h, "x-api-key")
             || ngx_http_ai_gateway_header_in_is(h, "api-key"))
            && h->value.len)
        {
            *key = h->value;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * Before the body is read: a location with ai_gateway_keys answers 401 to
 * a request without a known key; a known key says who the user is (ctx
 * NULL: a request without a body, GET /v1/models say, only checked).
 */

ngx_int_t
ngx_http_ai_gateway_provider_access(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_str_t                        key, msg;
    ngx_http_ai_gateway_key_t       *k;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->keys == NULL || lcf->keys == NGX_CONF_UNSET_PTR) {
        return NGX_OK;
    }

    if (ngx_http_ai_gateway_client_key(r, &key) != NGX_OK) {
        ngx_str_set(&msg, "You didn't provide an API key. You need to "
                          "provide your API key in an Authorization header "
                          "using Bearer auth (i.e. Authorization: Bearer "
                          "YOUR_KEY).");
        goto unauthorized;
    }

    k = ngx_http_ai_gateway_keys_find(lcf->keys, &key);

    if (k == NULL) {
        /* never the key itself, not even a part of it */
        ngx_str_set(&msg, "Incorrect API key provided.");
        goto unauthorized;
    }

    if (ctx) {
        ctx->key = k;
        ctx->user = k->user;
        ctx->user_evaluated = 1;
        ctx->group = k->group;
    }

    return NGX_OK;

unauthorized:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ai_gateway: 401 invalid_api_key: %V", &msg);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_finalize_request(r,
        ngx_http_ai_gateway_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid_request_error", "invalid_api_key",
                                   &msg));
    return NGX_DONE;
}


/*
 * After the body was read: the location's models (404) and the key's
 * (403), in the client's names.
 */

ngx_int_t
ngx_http_ai_gateway_provider_check(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_str_t                        msg;
    ngx_http_ai_gateway_key_t       *k;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->models
        && !ngx_http_ai_gateway_in_list(lcf->models, &ctx->model))
    {
        msg.data = ngx_pnalloc(r->pool, 96 + ctx->model.len);
        if (msg.data == NULL) {
            return NGX_ERROR;
        }

        msg.len = ngx_sprintf(msg.data, "The model `%V` does not exist or "
                              "you do not have access to it.", &ctx->model)
                  - msg.data;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: 404 model_not_found: \"%V\"",
                      &ctx->model);

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error",
                                       "model_not_found", &msg));
        return NGX_DONE;
    }

    k = ctx->key;

    if (k && k->models && !ngx_http_ai_gateway_in_list(k->models, &ctx->model))
    {
        msg.data = ngx_pnalloc(r->pool, 96 + ctx->model.len);
        if (msg.data == NULL) {
            return NGX_ERROR;
        }

        msg.len = ngx_sprintf(msg.data, "Your API key is not allowed to use "
                              "the model `%V`.", &ctx->model)
                  - msg.data;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: 403 model_not_allowed: \"%V\" for user "
                      "\"%V\"", &ctx->model, &k->user);

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_FORBIDDEN,
                                       "invalid_request_error",
                                       "model_not_allowed", &msg));
        return NGX_DONE;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ai_gateway_in_list(ngx_array_t *list, ngx_str_t *name)
{
    ngx_str_t   *s;
    ngx_uint_t   i;

    s = list->elts;

    for (i = 0; i < list->nelts; i++) {
        if (s[i].len == name->len
            && ngx_strncmp(s[i].data, name->data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* ai_gateway_models NAME ...; */

char *
ngx_http_ai_gateway_models(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ngx_str_t   *value, *s;
    ngx_uint_t   i;

    if (lcf->models != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lcf->models = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                   sizeof(ngx_str_t));
    if (lcf->models == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        s = ngx_array_push(lcf->models);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


/* ai_gateway_model_map FROM TO;  any number, per level */

char *
ngx_http_ai_gateway_model_map(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ngx_str_t     *value;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    value = cf->args->elts;

    if (lcf->model_map == NGX_CONF_UNSET_PTR) {
        lcf->model_map = ngx_array_create(cf->pool, 4, sizeof(ngx_keyval_t));
        if (lcf->model_map == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    kv = lcf->model_map->elts;

    for (i = 0; i < lcf->model_map->nelts; i++) {
        if (kv[i].key.len == value[1].len
            && ngx_strncmp(kv[i].key.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate model \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    kv = ngx_array_push(lcf->model_map);
    if (kv == NULL) {
        return NGX_CONF_ERROR;
    }

    kv->key = value[1];
    kv->value = value[2];

    return NGX_CONF_OK;
}


/*
 * ai_gateway_upstream_api anthropic_messages [secret=NAME]
 *     [version=2023-06-01] [max_tokens=N];
 */

char *
ngx_http_ai_gateway_upstream_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ngx_int_t                         n;
    ngx_str_t                        *value, name;
    ngx_uint_t                        i, j;
    ngx_http_ai_gateway_secret_t     *s;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (lcf->upstream_api != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "openai") == 0) {
        lcf->upstream_api = NGX_HTTP_AI_GATEWAY_UPSTREAM_OPENAI;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "anthropic_messages") != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, it "
                           "must be \"anthropic_messages\" or \"openai\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    lcf->upstream_api = NGX_HTTP_AI_GATEWAY_UPSTREAM_ANTHROPIC;
    ngx_str_set(&lcf->anthropic_version, "2023-06-01");

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ai_gateway_module);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "secret=", 7) == 0) {
            name.data = value[i].data + 7;
            name.len = value[i].len - 7;

            /* ai_gateway_secret is an http directive: it came first */
            s = mcf->secrets ? mcf->secrets->elts : NULL;

            for (j = 0; s && j < mcf->secrets->nelts; j++) {
                if (s[j].name.len == name.len
                    && ngx_strncmp(s[j].name.data, name.data, name.len) == 0)
                {
                    lcf->upstream_secret = &s[j].value;
                    break;
                }
            }

            if (lcf->upstream_secret == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown secret \"%V\" in \"%V\": define "
                                   "it with ai_gateway_secret first",
                                   &name, &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "version=", 8) == 0
            && value[i].len > 8)
        {
            lcf->anthropic_version.data = value[i].data + 8;
            lcf->anthropic_version.len = value[i].len - 8;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_tokens=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            lcf->translate_max_tokens = n;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


static ngx_str_t *
ngx_http_ai_gateway_mapped_model(ngx_http_ai_gateway_loc_conf_t *lcf,
    ngx_str_t *model)
{
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    if (lcf->model_map == NULL) {
        return NULL;
    }

    kv = lcf->model_map->elts;

    for (i = 0; i < lcf->model_map->nelts; i++) {
        if (kv[i].key.len == model->len
            && ngx_strncmp(kv[i].key.data, model->data, model->len) == 0)
        {
            return &kv[i].value;
        }
    }

    return NULL;
}


/*
 * Each location that the request enters, once admitted: its model map and
 * its upstream's API shape what is forwarded.
 */

ngx_int_t
ngx_http_ai_gateway_provider_prepare(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_str_t                       *to;
    ngx_http_ai_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ai_gateway_module);

    if (lcf->upstream_api == NGX_HTTP_AI_GATEWAY_UPSTREAM_ANTHROPIC) {

        if (ctx->api == NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT) {
            return ngx_http_ai_gateway_to_anthropic(r, ctx, lcf);
        }

        /* a client that speaks Anthropic already: the credentials only */
        if (lcf->upstream_secret) {
            ngx_http_ai_gateway_strip_credentials(r);

            if (ngx_http_ai_gateway_set_header(r, "x-api-key",
                                               lcf->upstream_secret)
                    != NGX_OK
                || ngx_http_ai_gateway_set_header(r, "anthropic-version",
                                                  &lcf->anthropic_version)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    to = ngx_http_ai_gateway_mapped_model(lcf, &ctx->model);

    if (to != NULL) {
        return ngx_http_ai_gateway_rename_model(r, ctx, to);
    }

    return NGX_OK;
}


/*
 * The forwarded body with another "model": its value is found again (the
 * body forwarded may differ from the client's, see stream_options) and
 * replaced, the rest is kept byte for byte.
 */

static ngx_int_t
ngx_http_ai_gateway_rename_model(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_str_t *to)
{
    u_char                            *body, *p, *start;
    size_t                             len, esc;
    ngx_buf_t                         *b;
    ngx_http_ai_gateway_json_facts_t   facts;
    ngx_http_ai_gateway_json_value_t  *v;

    if (r->request_body == NULL || r->request_body->bufs == NULL
        || r->request_body->bufs->next != NULL
        || !ngx_buf_in_memory(r->request_body->bufs->buf))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the model of a body not in one memory "
                      "buffer is not renamed");
        return NGX_OK;
    }

    b = r->request_body->bufs->buf;

    if (ngx_http_ai_gateway_json_scan(b->pos, b->last - b->pos, &facts)
        != NGX_HTTP_AI_GATEWAY_JSON_OK)
    {
        return NGX_OK;
    }

    v = &facts.field[NGX_HTTP_AI_GATEWAY_KEY_MODEL];

    if (v->type != NGX_HTTP_AI_GATEWAY_JSON_STRING) {
        return NGX_OK;
    }

    start = (u_char *) v->start;
    esc = ngx_escape_json(NULL, to->data, to->len);
    len = (b->last - b->pos) - v->raw_len + to->len + esc + 2;

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(body, b->pos, start - b->pos);
    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, to->data, to->len);
    *p++ = '"';
    p = ngx_cpymem(p, start + v->raw_len, b->last - (start + v->raw_len));

    ctx->upstream_model = *to;

    return ngx_http_ai_gateway_replace_body(r, body, p - body);
}


static ngx_int_t
ngx_http_ai_gateway_to_anthropic(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_loc_conf_t *lcf)
{
    int                                       rc;
    ngx_str_t                                *to, msg;
    ngx_http_ai_gateway_translate_buf_t       out;
    ngx_http_ai_gateway_translate_conf_t      conf;
    ngx_http_ai_gateway_translate_request_t  *req, req_mem;

    /* on the stack: what it learns (about 540 bytes, mostly room for an
     * error message) is read here and not kept */
    req = &req_mem;

    ngx_memzero(&conf, sizeof(ngx_http_ai_gateway_translate_conf_t));

    conf.default_max_tokens = lcf->translate_max_tokens == NGX_CONF_UNSET
                              ? 0 : (uint64_t) lcf->translate_max_tokens;

    to = ngx_http_ai_gateway_mapped_model(lcf, &ctx->model);

    if (to) {
        conf.model = (const char *) to->data;
        conf.model_len = to->len;
        ctx->upstream_model = *to;
    }

    ngx_http_ai_gateway_translate_buf_init(&out,
                                           ngx_http_ai_gateway_pool_resize,
                                           r->pool);

    /* a Messages body is about as long as the chat body: one allocation */
    ngx_http_ai_gateway_translate_buf_reserve(&out, ctx->body_len + 256);

    /* from the client's own body, whatever the primary was sent; its
     * tree when the inspection parsed it */
    if (ctx->tree && ctx->tree->body == ctx->body
        && ctx->tree->len == ctx->body_len)
    {
        rc = ngx_http_ai_gateway_translate_request_tree(ctx->tree->root,
                                                        &ctx->tree->arena,
                                                        &conf, req, &out);

    } else {
        rc = ngx_http_ai_gateway_translate_request(ctx->body, ctx->body_len,
                                                   &conf, req, &out);
    }

    if (rc == NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID) {
        msg.data = (u_char *) req->error;
        msg.len = ngx_strlen(req->error);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: 400 untranslatable request: %V", &msg);

        ngx_http_finalize_request(r,
            ngx_http_ai_gateway_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error",
                                       "invalid_request", &msg));
        return NGX_DONE;
    }

    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_ai_gateway_untranslate_save(r, ctx) != NGX_OK
        || ngx_http_ai_gateway_replace_body(r, out.p, out.len) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_ai_gateway_strip_credentials(r);

    if ((lcf->upstream_secret
         && ngx_http_ai_gateway_set_header(r, "x-api-key",
                                           lcf->upstream_secret)
            != NGX_OK)
        || ngx_http_ai_gateway_set_header(r, "anthropic-version",
                                          &lcf->anthropic_version)
           != NGX_OK
        || ngx_http_ai_gateway_messages_uri(r) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->untranslate->messages_uri = r->uri;

    ctx->translate = 1;
    ctx->translate_usage = req->include_usage;
    ctx->hide_usage = 0;

    /* the answer must be read to be translated: not compressed, whatever
     * the client accepts (the inspection asked for that only when it
     * read the answer itself) */
    ctx->parse = 1;
    ngx_http_ai_gateway_identity_encoding(r);

    return NGX_OK;
}


/* what the translation is about to change, kept for a redirect */

static ngx_int_t
ngx_http_ai_gateway_untranslate_save(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_http_ai_gateway_untranslate_t  *u;

    u = ctx->untranslate;

    if (u == NULL) {
        u = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_untranslate_t));
        if (u == NULL) {
            return NGX_ERROR;
        }

        ctx->untranslate = u;
    }

    u->bufs = r->request_body ? r->request_body->bufs : NULL;
    u->content_length_n = r->headers_in.content_length_n;

    if (r->headers_in.content_length) {
        u->content_length = r->headers_in.content_length->value;

    } else {
        ngx_str_null(&u->content_length);
    }

    u->uri = r->uri;
    u->valid_unparsed_uri = r->valid_unparsed_uri;
    u->upstream_model = ctx->upstream_model;
    u->hide_usage = ctx->hide_usage;

    return NGX_OK;
}


/*
 * A request that was translated for an Anthropic upstream and then went
 * to another location (error_page, say, to an OpenAI provider) goes on as
 * it was before: its body, its length, its URI (unless the redirect gave
 * it another), and without the Anthropic key and version (renamed to
 * Keep-Alive, which proxy_pass never forwards: hide_header());
 * its answer is no longer translated.  A location that translates again
 * does so from the client's body.  The client's own credentials stay
 * stripped.
 */

void
ngx_http_ai_gateway_untranslate(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_untranslate_t  *u;
    ngx_http_ai_gateway_header_iter_t   it;

    u = ctx->untranslate;

    if (!ctx->translate || u == NULL) {
        return;
    }

    ctx->translate = 0;
    ctx->translate_usage = 0;
    ctx->hide_usage = u->hide_usage;
    ctx->upstream_model = u->upstream_model;

    if (r->request_body && u->bufs) {
        r->request_body->bufs = u->bufs;
    }

    r->headers_in.content_length_n = u->content_length_n;

    if (r->headers_in.content_length && u->content_length.data) {
        r->headers_in.content_length->value = u->content_length;
    }

    if (r->uri.data == u->messages_uri.data
        && r->uri.len == u->messages_uri.len)
    {
        r->uri = u->uri;
        r->valid_unparsed_uri = u->valid_unparsed_uri;
    }

    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {

        if (ngx_http_ai_gateway_header_in_is(h, "x-api-key")
            || ngx_http_ai_gateway_header_in_is(h, "anthropic-version"))
        {
            ngx_http_ai_gateway_hide_header(h);
        }
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ai_gateway: a translated request goes on untranslated");
}


/* a header for the upstream: replaced when the client sent one */

static ngx_int_t
ngx_http_ai_gateway_set_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    size_t                              len;
    ngx_table_elt_t                    *h;
    ngx_http_ai_gateway_header_iter_t   it;

    len = ngx_strlen(name);
    it.part = NULL;

    while ((h = ngx_http_ai_gateway_header_next(&r->headers_in.headers, &it))) {
        if (ngx_http_ai_gateway_header_is(h, name, len)) {
            h->value = *value;
            return NGX_OK;
        }
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key.data = (u_char *) name;
    h->key.len = len;
    h->lowcase_key = (u_char *) name;
    h->hash = ngx_hash_key((u_char *) name, len);
    h->value = *value;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/*
 * ".../chat/completions" becomes ".../messages"; proxy_pass without a URI
 * part then sends it (r->uri, not the client's unparsed URI).
 */

static ngx_int_t
ngx_http_ai_gateway_messages_uri(ngx_http_request_t *r)
{
    u_char     *p;
    size_t      keep;
    ngx_str_t   suffix = ngx_string("/chat/completions");

    if (r->uri.len > suffix.len
        && ngx_strncmp(r->uri.data + r->uri.len - suffix.len, suffix.data,
                       suffix.len) == 0)
    {
        keep = r->uri.len - suffix.len;

    } else {
        keep = 0;
    }

    p = ngx_pnalloc(r->pool, keep + sizeof("/v1/messages") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (keep) {
        r->uri.len = ngx_cpymem(ngx_cpymem(p, r->uri.data, keep), "/messages",
                                sizeof("/messages") - 1)
                     - p;

    } else {
        r->uri.len = ngx_cpymem(p, "/v1/messages", sizeof("/v1/messages") - 1)
                     - p;
    }

    r->uri.data = p;
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}


/* a pool allocation, for the parsers' allocators (jtree arenas, keyword
 * engines): freed with the pool */

void *
ngx_http_ai_gateway_pool_alloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


/* the translation buffers' memory: the request's pool */

void *
ngx_http_ai_gateway_pool_resize(void *ctx, void *old, size_t old_size,
    size_t new_size)
{
    u_char  *p;

    if (new_size == 0) {
        return NULL;
    }

    p = ngx_pnalloc(ctx, new_size);
    if (p == NULL) {
        return NULL;
    }

    if (old && old_size) {
        ngx_memcpy(p, old, old_size);
    }

    return p;
}


/* the answer's head: our length, and Anthropic's overloaded 529 is 503 */

ngx_int_t
ngx_http_ai_gateway_translate_header(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx)
{
    ngx_str_t  *model;

    r->headers_out.status =
        ngx_http_ai_gateway_translate_status(r->headers_out.status);
    r->headers_out.status_line.len = 0;

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_etag(r);

    ngx_http_ai_gateway_translate_buf_init(&ctx->tout,
                                           ngx_http_ai_gateway_pool_resize,
                                           r->pool);

    if (!ctx->resp_sse) {
        /* the client gets our JSON (a chat.completion or an error in
         * OpenAI's shape) whatever the upstream's was: nginx's own HTML
         * 502 page, a text/plain 429 of a proxy in front of the provider */
        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.charset.len = 0;
        return NGX_OK;
    }

    ctx->tstream = ngx_palloc(r->pool,
                              sizeof(ngx_http_ai_gateway_translate_stream_t));
    if (ctx->tstream == NULL) {
        return NGX_ERROR;
    }

    model = ctx->upstream_model.len ? &ctx->upstream_model : &ctx->model;

    ngx_http_ai_gateway_translate_stream_init(ctx->tstream, ngx_time(),
                                              ctx->translate_usage,
                                              model->data, model->len);

    return NGX_OK;
}


/* one whole SSE event of Anthropic's, whose data is in ctx->tevent */

ngx_int_t
ngx_http_ai_gateway_translate_event(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *name, size_t len)
{
    int         rc;
    ngx_buf_t  *b;

    b = ctx->tevent;

    if (ctx->tstream == NULL || ctx->tstream->done) {
        goto done;
    }

    if (ctx->translate_failed) {
        rc = NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID;

    } else {
        rc = ngx_http_ai_gateway_translate_stream_feed(ctx->tstream, name, len,
                                   b ? b->pos : (u_char *) "",
                                   b ? (size_t) (b->last - b->pos) : 0,
                                   &ctx->tout);
    }

    if (rc != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ai_gateway: an event of the Anthropic stream could "
                      "not be translated (\"%*s\"): the stream is ended",
                      len, name);

        ctx->translate_failed = 1;

        (void) ngx_http_ai_gateway_translate_stream_fail(ctx->tstream,
                                   "The fallback provider sent an event "
                                   "the gateway could not translate.",
                                   sizeof("The fallback provider sent an "
                                          "event the gateway could not "
                                          "translate.") - 1,
                                   &ctx->tout);
    }

done:

    if (b) {
        b->pos = b->start;
        b->last = b->start;
    }

    return NGX_OK;
}


/*
 * The body filter's part: what came from the upstream was read (and, for
 * SSE, translated event by event); it is marked sent, and what the
 * translation wrote goes on in a buffer of ours.
 */

ngx_int_t
ngx_http_ai_gateway_translate_body(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out)
{
    ngx_buf_t     *json;
    ngx_uint_t     last, flush;
    ngx_chain_t   *cl;

    last = 0;
    flush = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf) {
            last = 1;
        }

        if (cl->buf->flush) {
            flush = 1;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    /*
     * An upstream that failed after its answer began (a reset) is ended
     * by nginx with a flush, not the last buffer, once the upstream
     * connection is closed: the client's answer ends there too, as an
     * error (a stream's error event and [DONE], a JSON answer's 502),
     * not an unterminated body
     */
    if (!last && flush && r->upstream != NULL
        && r->upstream->peer.connection == NULL)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ai_gateway: the Anthropic answer ended with an "
                      "upstream error: the translation ends it as an error");
        last = 1;
    }

    if (last && !ctx->translate_last) {
        ctx->translate_last = 1;

        if (ctx->tstream) {
            if (!ctx->tstream->done) {
                (void) ngx_http_ai_gateway_translate_stream_fail(ctx->tstream,
                               "The fallback provider's stream ended early.",
                               sizeof("The fallback provider's stream ended "
                                      "early.") - 1,
                               &ctx->tout);
            }

        } else if (!ctx->translate_done) {
            json = ctx->tjson;

            ngx_http_ai_gateway_translate_json(r, ctx,
                                     json ? json->pos : NULL,
                                     json ? (size_t) (json->last - json->pos)
                                          : 0);
        }
    }

    if (ctx->tstream) {
        return ngx_http_ai_gateway_out_chain(r, &ctx->tfree, &ctx->tout, last,
                                             1, (ngx_buf_tag_t)
                                                 &ngx_http_ai_gateway_module,
                                             out);
    }

    return ngx_http_ai_gateway_translated_out(r, ctx, last, out);
}


/*
 * A JSON answer, translated whole (p is NULL when there is none to
 * translate: an answer too large, or none at all): a chat.completion, or
 * an error in the OpenAI shape.
 */

void
ngx_http_ai_gateway_translate_json(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *p, size_t len)
{
    ngx_str_t   *model;
    ngx_uint_t   status;

    ctx->translate_done = 1;

    model = ctx->upstream_model.len ? &ctx->upstream_model : &ctx->model;

    /* a chat.completion is a little longer than the Messages answer: one
     * allocation, where growing from 256 bytes took three */
    ngx_http_ai_gateway_translate_buf_reserve(&ctx->tout, len + 512);

    if (p != NULL && !ctx->translate_failed
        && ctx->resp_status < NGX_HTTP_BAD_REQUEST
        && ngx_http_ai_gateway_translate_response(p, len, ngx_time(),
                                                  model->data, model->len,
                                                  NULL, &ctx->tout)
           == NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
    {
        return;
    }

    ctx->tout.len = 0;

    /*
     * An error answer keeps its status, and the error its type by it
     * (a 429 without Anthropic's error object is still a rate limit); a
     * success that cannot be read is the provider's failure, 502, which
     * the held header can still say
     */
    status = ctx->resp_status;

    if (status < NGX_HTTP_BAD_REQUEST) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ai_gateway: the Anthropic answer with status %ui is "
                      "no Messages answer: 502 to the client",
                      ctx->resp_status);

        status = NGX_HTTP_BAD_GATEWAY;

        if (!r->header_sent) {
            r->headers_out.status = status;

            /* a redirect's target means nothing on a 502 */
            ngx_http_clear_location(r);
        }
    }

    (void) ngx_http_ai_gateway_translate_error(p ? p : (u_char *) "",
                                               p ? len : 0, status,
                                               &ctx->tout);
}


/*
 * A translated JSON answer goes on once, in the buffer it was written to,
 * with its header, which waited for its length (translate_held): the
 * client gets a Content-Length, as from the provider, not a chunked body.
 */

static ngx_int_t
ngx_http_ai_gateway_translated_out(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t last, ngx_chain_t **out)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *out = NULL;

    if (ctx->translate_held && ctx->translate_done) {
        ctx->translate_held = 0;
        r->headers_out.content_length_n = ctx->tout.len;

        rc = ngx_http_ai_gateway_next_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            ctx->tout.len = 0;
            return (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK;
        }
    }

    if (ctx->tout.len == 0 && !last) {
        return NGX_OK;
    }

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (ctx->tout.len) {
        b->start = ctx->tout.p;
        b->pos = b->start;
        b->last = b->start + ctx->tout.len;
        b->end = b->last;
        b->temporary = 1;

        /* the buffer is the client's now: nothing writes to it again */
        ctx->tout.p = NULL;
        ctx->tout.len = 0;
        ctx->tout.cap = 0;
    }

    b->tag = (ngx_buf_tag_t) &ngx_http_ai_gateway_module;
    b->last_buf = last && r == r->main;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;
    *out = cl;

    return NGX_OK;
}


/*
 * What a translation or a guardrail wrote (out), as a buffer of ours for
 * the next filter; the buffers come back through ngx_chain_update_chains()
 * to *free.
 */

ngx_int_t
ngx_http_ai_gateway_out_chain(ngx_http_request_t *r, ngx_chain_t **free,
    ngx_http_ai_gateway_translate_buf_t *o, ngx_uint_t last, ngx_uint_t flush,
    ngx_buf_tag_t tag, ngx_chain_t **out)
{
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = o->len;
    *out = NULL;

    if (len == 0 && !last) {
        return NGX_OK;
    }

    cl = ngx_chain_get_free_buf(r->pool, free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;

    if (b->start == NULL || (size_t) (b->end - b->start) < len) {
        b->start = ngx_palloc(r->pool, ngx_max(len, 1024));
        if (b->start == NULL) {
            return NGX_ERROR;
        }

        b->end = b->start + ngx_max(len, 1024);
    }

    b->pos = b->start;
    b->last = ngx_cpymem(b->start, o->p, len);
    /* an empty last buffer is a special one, not an empty data buffer */
    b->temporary = (len != 0);
    b->memory = 0;
    b->in_file = 0;
    b->tag = tag;
    b->flush = flush;
    b->last_buf = last && r == r->main;
    b->last_in_chain = 1;

    o->len = 0;

    *out = cl;

    return NGX_OK;
}
