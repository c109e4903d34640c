
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Prometheus metrics, aggregated over all workers in the shared zone and
 * kept across reloads.  A request updates all of its series in the log
 * phase under one lock; a scrape formats them under the same lock.  The
 * number of series is capped: label sets past the cap go to one overflow
 * series per metric, and are counted.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_json.h"


typedef enum {
    NGX_HTTP_AI_GATEWAY_M_REQUESTS = 0,
    NGX_HTTP_AI_GATEWAY_M_TOKENS,
    NGX_HTTP_AI_GATEWAY_M_DURATION,
    NGX_HTTP_AI_GATEWAY_M_TTFT,
    NGX_HTTP_AI_GATEWAY_M_ATTEMPTS,
    NGX_HTTP_AI_GATEWAY_M_REJECTIONS,
    NGX_HTTP_AI_GATEWAY_M_GUARDRAILS,
    NGX_HTTP_AI_GATEWAY_M_COST,
    NGX_HTTP_AI_GATEWAY_M_LAST
} ngx_http_ai_gateway_metric_e;


/* seconds, for LLM latencies: 10 ms to 2 minutes */
#define NGX_HTTP_AI_GATEWAY_HIST_BUCKETS  14

static ngx_msec_t  ngx_http_ai_gateway_hist_le[NGX_HTTP_AI_GATEWAY_HIST_BUCKETS]
    = { 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000,
        60000, 120000 };

static const char  *ngx_http_ai_gateway_hist_le_text[] = {
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    "20", "30", "60", "120"
};


typedef struct {
    const char  *name;
    const char  *type;
    const char  *help;
} ngx_http_ai_gateway_family_t;


static ngx_http_ai_gateway_family_t  ngx_http_ai_gateway_families[] = {
    { "ai_gateway_requests_total", "counter",
      "Requests by endpoint, model and status." },
    { "ai_gateway_tokens_total", "counter",
      "Tokens by endpoint, model and type." },
    { "ai_gateway_request_duration_seconds", "histogram",
      "Time from the request's arrival to its end." },
    { "ai_gateway_time_to_first_token_seconds", "histogram",
      "Time from the request's arrival to the first output." },
    { "ai_gateway_upstream_attempts_total", "counter",
      "Upstream attempts by endpoint and outcome." },
    { "ai_gateway_rate_limit_rejections_total", "counter",
      "Requests rejected by a rate limit or token budget." },
    { "ai_gateway_guardrail_actions_total", "counter",
      "Guardrail actions by endpoint, direction, guardrail and action." },
    { "ai_gateway_cost_usd_total", "counter",
      "Spend in US dollars, from ai_gateway_price." }
};


typedef struct {
    ngx_rbtree_t       rbtree;
    ngx_rbtree_node_t  sentinel;
    ngx_queue_t        family[NGX_HTTP_AI_GATEWAY_M_LAST];
    ngx_uint_t         series;
    int64_t            dropped;
    ngx_atomic_t       redis_errors;
    ngx_atomic_t       redis_dropped;     /* usage records */
} ngx_http_ai_gateway_metrics_sh_t;


typedef struct {
    u_char             color;
    u_char             family;
    u_short            len;
    ngx_queue_t        queue;
    int64_t            value;     /* counter; histogram count */
    int64_t            sum;       /* histogram sum, ms */
    int64_t            bucket[NGX_HTTP_AI_GATEWAY_HIST_BUCKETS]; /* own */
    u_char             labels[1];
} ngx_http_ai_gateway_series_t;


/* one change a request makes */
typedef struct {
    ngx_uint_t         family;
    ngx_str_t          labels;
    uint32_t           hash;
    int64_t            add;
    ngx_msec_int_t     observe;   /* histograms: ms */
    void             **slot;      /* where the worker's cache keeps it */
} ngx_http_ai_gateway_update_t;


/*
 * A worker's cache of the series a request updates, by (endpoint, model,
 * status): found once through the labels and the tree, then used with
 * no label rendering and no lookup.  Series are never freed and live in
 * the zone, so the pointers stay good and every worker updates the same
 * counters (under the zone's lock, as before).
 */

#define NGX_HTTP_AI_GATEWAY_MCACHE_SIZE   1024
#define NGX_HTTP_AI_GATEWAY_MCACHE_PROBE  8
#define NGX_HTTP_AI_GATEWAY_MCACHE_KEY    512

typedef struct {
    uint32_t           hash;
    size_t             len;
    u_char            *key;
    void              *requests;
    void              *tokens[4];
    void              *duration;
    void              *ttft;
    void              *attempts[6];
    void              *cost;
} ngx_http_ai_gateway_mcache_t;


static ngx_http_ai_gateway_mcache_t  *ngx_http_ai_gateway_mcache;


#define NGX_HTTP_AI_GATEWAY_MAX_UPDATES  32


static ngx_int_t ngx_http_ai_gateway_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ai_gateway_cost_add(int64_t *sum, int64_t tokens,
    int64_t price);
static ngx_http_ai_gateway_mcache_t *ngx_http_ai_gateway_mcache_entry(
    ngx_http_ai_gateway_ctx_t *ctx, ngx_uint_t status);
static ngx_int_t ngx_http_ai_gateway_mcache_count(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_mcache_t *mc,
    ngx_http_ai_gateway_shm_t *shm, int64_t *tok, int64_t cost);
static void ngx_http_ai_gateway_observe(void *series, ngx_msec_int_t ms);
static ngx_http_ai_gateway_series_t *ngx_http_ai_gateway_series(
    ngx_http_ai_gateway_metrics_sh_t *m, ngx_slab_pool_t *pool,
    ngx_http_ai_gateway_update_t *u, ngx_uint_t max);
static ngx_http_ai_gateway_series_t *ngx_http_ai_gateway_series_find(
    ngx_http_ai_gateway_metrics_sh_t *m, ngx_slab_pool_t *pool,
    ngx_uint_t family, ngx_str_t *labels, uint32_t hash, ngx_uint_t create);
static void ngx_http_ai_gateway_series_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_ai_gateway_label(ngx_http_request_t *r,
    ngx_http_ai_gateway_update_t *u, ngx_uint_t family, const char *fmt,
    ngx_str_t **arg);
static ngx_int_t ngx_http_ai_gateway_label_join(ngx_http_request_t *r,
    ngx_http_ai_gateway_update_t *u, ngx_uint_t family, ngx_str_t *prefix,
    u_char *suffix, size_t len);
static u_char *ngx_http_ai_gateway_label_escape(u_char *dst, ngx_str_t *s);
static size_t ngx_http_ai_gateway_metrics_size(
    ngx_http_ai_gateway_metrics_sh_t *m);
static u_char *ngx_http_ai_gateway_metrics_format(u_char *p,
    ngx_http_ai_gateway_metrics_sh_t *m);
static u_char *ngx_http_ai_gateway_series_format(u_char *p,
    ngx_http_ai_gateway_family_t *f, ngx_uint_t hist,
    ngx_http_ai_gateway_series_t *s);


static ngx_str_t  ngx_http_ai_gateway_overflow = ngx_string("overflow=\"true\"");


char *
ngx_http_ai_gateway_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_ai_gateway_metrics_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ai_gateway_module);
    mcf->metrics = 1;

    return NGX_CONF_OK;
}


/* the metrics' root in the zone, made once when the zone is new */

void *
ngx_http_ai_gateway_metrics_init_zone(ngx_slab_pool_t *pool)
{
    ngx_uint_t                         i;
    ngx_http_ai_gateway_metrics_sh_t  *m;

    m = ngx_slab_alloc(pool, sizeof(ngx_http_ai_gateway_metrics_sh_t));
    if (m == NULL) {
        return NULL;
    }

    ngx_rbtree_init(&m->rbtree, &m->sentinel,
                    ngx_http_ai_gateway_series_insert);

    for (i = 0; i < NGX_HTTP_AI_GATEWAY_M_LAST; i++) {
        ngx_queue_init(&m->family[i]);
    }

    m->series = 0;
    m->dropped = 0;
    m->redis_errors = 0;
    m->redis_dropped = 0;

    return m;
}


/* Redis's counters are bumped without the lock, by the Redis code */

ngx_atomic_t *
ngx_http_ai_gateway_metrics_redis_counter(ngx_shm_zone_t *zone,
    ngx_uint_t dropped)
{
    ngx_http_ai_gateway_shm_t         *shm;
    ngx_http_ai_gateway_metrics_sh_t  *m;

    if (zone == NULL || zone->data == NULL) {
        return NULL;
    }

    shm = zone->data;
    m = shm->sh->metrics;

    if (m == NULL) {
        return NULL;
    }

    return dropped ? &m->redis_dropped : &m->redis_errors;
}


/*
 * The log phase: everything this request changes, labels rendered and
 * hashed first, then one locked pass.
 */

void
ngx_http_ai_gateway_metrics_count(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_tokens_t *t,
    int64_t cost)
{
    u_char                            buf[128], *p;
    int64_t                           tok[4];
    ngx_http_ai_gateway_series_t     *se;
    ngx_http_ai_gateway_mcache_t     *mc;
    ngx_str_t                         e, em, *a[2];
    ngx_uint_t                        i, n, k, st;
    ngx_msec_int_t                    ms;
    ngx_time_t                       *tp;
    ngx_http_ai_gateway_shm_t        *shm;
    ngx_http_upstream_state_t        *state;
    ngx_http_ai_gateway_limit_t      *limit;
    ngx_http_ai_gateway_update_t      u[NGX_HTTP_AI_GATEWAY_MAX_UPDATES];
    ngx_http_ai_gateway_main_conf_t  *mcf;

    static const char  *types[] = { "input", "output", "cached_input",
                                    "reasoning" };
    static const char  *classes[] = { "error", "1xx", "2xx", "3xx", "4xx",
                                      "5xx" };

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    shm = mcf->zone->data;

    tok[0] = t->input;
    tok[1] = t->output;
    tok[2] = t->cached_input;
    tok[3] = t->reasoning;

    st = r->err_status ? r->err_status : r->headers_out.status;

    mc = ngx_http_ai_gateway_mcache_entry(ctx, st);

    if (mc && ngx_http_ai_gateway_mcache_count(r, ctx, mc, shm, tok, cost)
              == NGX_OK)
    {
        return;
    }

    ngx_memzero(u, sizeof(u));
    n = 0;

    /* the escaped labels most series share, rendered once */

    a[0] = &ctx->endpoint;
    a[1] = &ctx->model;

    if (ngx_http_ai_gateway_label(r, &u[0], 0, "endpoint=\"%\"", a) != NGX_OK)
    {
        return;
    }

    e = u[0].labels;

    if (ngx_http_ai_gateway_label(r, &u[0], 0, "endpoint=\"%\",model=\"%\"", a)
        != NGX_OK)
    {
        return;
    }

    em = u[0].labels;

    /* the rest are plain words and digits: appended as they are */

    p = ngx_sprintf(buf, ",status=\"%ui\"", st);

    if (ngx_http_ai_gateway_label_join(r, &u[n], NGX_HTTP_AI_GATEWAY_M_REQUESTS,
                                       &em, buf, p - buf) != NGX_OK)
    {
        return;
    }

    u[n].slot = mc ? &mc->requests : NULL;
    u[n++].add = 1;

    for (k = 0; k < 4; k++) {
        if (tok[k] <= 0) {
            continue;
        }

        p = ngx_sprintf(buf, ",type=\"%s\"", types[k]);

        if (ngx_http_ai_gateway_label_join(r, &u[n],
                                           NGX_HTTP_AI_GATEWAY_M_TOKENS,
                                           &em, buf, p - buf) != NGX_OK)
        {
            return;
        }

        u[n].slot = mc ? &mc->tokens[k] : NULL;
        u[n++].add = tok[k];
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    if (ngx_http_ai_gateway_label_join(r, &u[n], NGX_HTTP_AI_GATEWAY_M_DURATION,
                                       &em, NULL, 0) != NGX_OK)
    {
        return;
    }

    u[n].slot = mc ? &mc->duration : NULL;
    u[n++].observe = ngx_max(ms, 0);

    if (ctx->ttft_set) {
        if (ngx_http_ai_gateway_label_join(r, &u[n],
                                           NGX_HTTP_AI_GATEWAY_M_TTFT,
                                           &em, NULL, 0) != NGX_OK)
        {
            return;
        }

        u[n].slot = mc ? &mc->ttft : NULL;
        u[n++].observe = (ngx_msec_int_t) ctx->ttft;
    }

    if (r->upstream_states) {
        state = r->upstream_states->elts;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].peer == NULL
                || n >= NGX_HTTP_AI_GATEWAY_MAX_UPDATES - 3)
            {
                continue;
            }

            /* no status: the attempt failed before an answer */
            k = state[i].status / 100;
            k = (k >= 1 && k <= 5) ? k : 0;
            p = ngx_sprintf(buf, ",outcome=\"%s\"", classes[k]);

            if (ngx_http_ai_gateway_label_join(r, &u[n],
                                               NGX_HTTP_AI_GATEWAY_M_ATTEMPTS,
                                               &e, buf, p - buf) != NGX_OK)
            {
                return;
            }

            u[n].slot = mc ? &mc->attempts[k] : NULL;
            u[n++].add = 1;
        }
    }

    if (ctx->limit_status == NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED) {
        limit = ctx->limits;

        for (i = 0; i < ctx->nlimits; i++) {
            if (ctx->limits[i].type.data == ctx->limit_type.data) {
                limit = &ctx->limits[i];
            }
        }

        /* scope and period are words of the configuration: no escapes */
        p = ngx_snprintf(buf, sizeof(buf),
                         ",scope=\"%V\",period=\"%V\",kind=\"%s\"",
                         &limit->scope, &limit->period_name,
                         limit->tokens ? "tokens" : "requests");

        if (ngx_http_ai_gateway_label_join(r, &u[n],
                                           NGX_HTTP_AI_GATEWAY_M_REJECTIONS,
                                           &e, buf, p - buf) != NGX_OK)
        {
            return;
        }

        u[n++].add = 1;
    }

    /* "input:pii_email:mask,output:invalid_keyword:block": our own words */
    for (p = ctx->guardrail.data, k = 0;
         k < ctx->guardrail.len && n < NGX_HTTP_AI_GATEWAY_MAX_UPDATES - 1;
         k = i + 1)
    {
        u_char  *f[3], *q, *end;
        size_t   fl[3];

        for (i = k; i < ctx->guardrail.len && p[i] != ','; i++) { /* void */ }

        end = p + i;
        q = p + k;

        for (st = 0; st < 3; st++) {
            f[st] = q;
            while (q < end && *q != ':') {
                q++;
            }

            fl[st] = q - f[st];
            q++;
        }

        q = ngx_snprintf(buf, sizeof(buf),
                         ",direction=\"%*s\",guardrail=\"%*s\","
                         "action=\"%*s\"", fl[0], f[0], fl[1], f[1],
                         fl[2], f[2]);

        if (ngx_http_ai_gateway_label_join(r, &u[n],
                                           NGX_HTTP_AI_GATEWAY_M_GUARDRAILS,
                                           &e, buf, q - buf) != NGX_OK)
        {
            return;
        }

        u[n++].add = 1;
    }

    if (cost >= 0) {
        if (ngx_http_ai_gateway_label_join(r, &u[n], NGX_HTTP_AI_GATEWAY_M_COST,
                                           &em, NULL, 0) != NGX_OK)
        {
            return;
        }

        u[n].slot = mc ? &mc->cost : NULL;
        u[n++].add = cost;
    }

    ngx_shmtx_lock(&shm->shpool->mutex);

    for (i = 0; i < n; i++) {
        se = ngx_http_ai_gateway_series(shm->sh->metrics, shm->shpool, &u[i],
                                        mcf->max_series);

        /* an overflow series stands for many: it is not cached */
        if (se && u[i].slot
            && !(se->len == ngx_http_ai_gateway_overflow.len
                 && ngx_memcmp(se->labels, ngx_http_ai_gateway_overflow.data,
                               se->len) == 0))
        {
            *u[i].slot = se;
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);
}


/* the cache entry of a request's (endpoint, model, status), made when new */

static ngx_http_ai_gateway_mcache_t *
ngx_http_ai_gateway_mcache_entry(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_uint_t status)
{
    u_char                        key[NGX_HTTP_AI_GATEWAY_MCACHE_KEY], *p;
    size_t                        len;
    uint32_t                      hash;
    ngx_uint_t                    i, j;
    ngx_http_ai_gateway_mcache_t *mc;

    len = ctx->endpoint.len + ctx->model.len + 2 + NGX_INT_T_LEN;

    if (len > sizeof(key)) {
        return NULL;
    }

    if (ngx_http_ai_gateway_mcache == NULL) {
        ngx_http_ai_gateway_mcache = ngx_calloc(NGX_HTTP_AI_GATEWAY_MCACHE_SIZE
                                         * sizeof(ngx_http_ai_gateway_mcache_t),
                                         ngx_cycle->log);
        if (ngx_http_ai_gateway_mcache == NULL) {
            return NULL;
        }
    }

    p = ngx_cpymem(key, ctx->endpoint.data, ctx->endpoint.len);
    *p++ = '\x1f';
    p = ngx_cpymem(p, ctx->model.data, ctx->model.len);
    *p++ = '\x1f';

    /* a status has three digits (ngx_sprintf() costs more than all this) */
    *p++ = (u_char) ('0' + status / 100 % 10);
    *p++ = (u_char) ('0' + status / 10 % 10);
    *p++ = (u_char) ('0' + status % 10);
    len = p - key;

    hash = ngx_murmur_hash2(key, len) | 1;

    for (i = 0; i < NGX_HTTP_AI_GATEWAY_MCACHE_PROBE; i++) {
        j = (hash + i) & (NGX_HTTP_AI_GATEWAY_MCACHE_SIZE - 1);
        mc = &ngx_http_ai_gateway_mcache[j];

        if (mc->hash == hash && mc->len == len
            && ngx_memcmp(mc->key, key, len) == 0)
        {
            return mc;
        }

        if (mc->hash == 0) {
            mc->key = ngx_alloc(len, ngx_cycle->log);
            if (mc->key == NULL) {
                return NULL;
            }

            ngx_memcpy(mc->key, key, len);
            mc->len = len;
            mc->hash = hash;

            return mc;
        }
    }

    /* a full neighbourhood: this kind goes the long way */
    return NULL;
}


/* NGX_OK: counted through the cache; NGX_DECLINED: a series is missing */

static ngx_int_t
ngx_http_ai_gateway_mcache_count(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_mcache_t *mc,
    ngx_http_ai_gateway_shm_t *shm, int64_t *tok, int64_t cost)
{
    ngx_uint_t                      i, k, cls[8], ncls;
    ngx_msec_int_t                  ms;
    ngx_time_t                     *tp;
    ngx_http_upstream_state_t      *state;
    ngx_http_ai_gateway_series_t   *s;

    /* what the cache does not keep: rejections, guardrail actions */
    if (ctx->limit_status == NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED
        || ctx->guardrail.len
        || mc->requests == NULL || mc->duration == NULL
        || (ctx->ttft_set && mc->ttft == NULL)
        || (cost >= 0 && mc->cost == NULL))
    {
        return NGX_DECLINED;
    }

    for (k = 0; k < 4; k++) {
        if (tok[k] > 0 && mc->tokens[k] == NULL) {
            return NGX_DECLINED;
        }
    }

    ncls = 0;

    if (r->upstream_states) {
        state = r->upstream_states->elts;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].peer == NULL) {
                continue;
            }

            if (ncls == 8) {
                return NGX_DECLINED;
            }

            k = state[i].status / 100;
            k = (k >= 1 && k <= 5) ? k : 0;

            if (mc->attempts[k] == NULL) {
                return NGX_DECLINED;
            }

            cls[ncls++] = k;
        }
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ngx_shmtx_lock(&shm->shpool->mutex);

    s = mc->requests;
    s->value++;

    for (k = 0; k < 4; k++) {
        if (tok[k] > 0) {
            s = mc->tokens[k];
            s->value += tok[k];
        }
    }

    ngx_http_ai_gateway_observe(mc->duration, ngx_max(ms, 0));

    if (ctx->ttft_set) {
        ngx_http_ai_gateway_observe(mc->ttft, (ngx_msec_int_t) ctx->ttft);
    }

    for (i = 0; i < ncls; i++) {
        s = mc->attempts[cls[i]];
        s->value++;
    }

    if (cost >= 0) {
        s = mc->cost;
        s->value += cost;
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);

    return NGX_OK;
}


/* one observation of a histogram: its own bucket, the sum and the count */

static void
ngx_http_ai_gateway_observe(void *series, ngx_msec_int_t ms)
{
    ngx_uint_t                     i;
    ngx_http_ai_gateway_series_t  *s = series;

    s->value++;
    s->sum += ms;

    for (i = 0; i < NGX_HTTP_AI_GATEWAY_HIST_BUCKETS; i++) {
        if ((ngx_msec_t) ms <= ngx_http_ai_gateway_hist_le[i]) {
            s->bucket[i]++;
            return;
        }
    }
}


/* a label set: a rendered prefix and plain text after it; then hashed */

static ngx_int_t
ngx_http_ai_gateway_label_join(ngx_http_request_t *r,
    ngx_http_ai_gateway_update_t *u, ngx_uint_t family, ngx_str_t *prefix,
    u_char *suffix, size_t len)
{
    u_char  *p;

    if (len == 0) {
        u->labels = *prefix;

    } else {
        p = ngx_pnalloc(r->pool, prefix->len + len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        u->labels.data = p;
        p = ngx_cpymem(p, prefix->data, prefix->len);
        p = ngx_cpymem(p, suffix, len);
        u->labels.len = p - u->labels.data;
    }

    u->family = family;
    u->hash = ngx_http_ai_gateway_hash(u->labels.data, u->labels.len)
              ^ family;
    u->observe = -1;

    return NGX_OK;
}


/* renders labels: each "%" in fmt is the next value, escaped; then hashed */

static ngx_int_t
ngx_http_ai_gateway_label(ngx_http_request_t *r,
    ngx_http_ai_gateway_update_t *u, ngx_uint_t family, const char *fmt,
    ngx_str_t **arg)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   i;
    const char  *f;

    len = ngx_strlen(fmt);

    for (i = 0, f = fmt; *f; f++) {
        if (*f == '%') {
            len += 2 * arg[i++]->len;
        }
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    u->labels.data = p;

    for (i = 0, f = fmt; *f; f++) {
        if (*f == '%') {
            p = ngx_http_ai_gateway_label_escape(p, arg[i++]);

        } else {
            *p++ = *f;
        }
    }

    u->family = family;
    u->labels.len = p - u->labels.data;
    u->hash = ngx_http_ai_gateway_hash(u->labels.data, u->labels.len)
              ^ family;
    u->observe = -1;

    return NGX_OK;
}



/* the exposition format's escapes: backslash, quote, newline */

static u_char *
ngx_http_ai_gateway_label_escape(u_char *dst, ngx_str_t *s)
{
    u_char  *p, *q, *last;

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {

        /* runs without a quote, a backslash or a control byte: whole */
        q = (u_char *) ngx_http_ai_gateway_json_skip_plain(p, last);

        while (q < last && *q >= 0x80) {
            q = (u_char *) ngx_http_ai_gateway_json_skip_plain(q + 1, last);
        }

        dst = ngx_cpymem(dst, p, q - p);
        p = q;

        if (p == last) {
            break;
        }

        switch (*p) {
        case '\\': *dst++ = '\\'; *dst++ = '\\'; break;
        case '"':  *dst++ = '\\'; *dst++ = '"'; break;
        case '\n': *dst++ = '\\'; *dst++ = 'n'; break;
        default:   *dst++ = *p;
        }
    }

    return dst;
}


static ngx_http_ai_gateway_series_t *
ngx_http_ai_gateway_series(ngx_http_ai_gateway_metrics_sh_t *m,
    ngx_slab_pool_t *pool, ngx_http_ai_gateway_update_t *u, ngx_uint_t max)
{
    ngx_http_ai_gateway_series_t  *s;

    s = ngx_http_ai_gateway_series_find(m, pool, u->family, &u->labels,
                                        u->hash, m->series < max);

    if (s == NULL) {
        /* past the cap, or no memory: the family's overflow series */
        m->dropped++;

        s = ngx_http_ai_gateway_series_find(m, pool, u->family,
                                    &ngx_http_ai_gateway_overflow,
                                    ngx_http_ai_gateway_hash(
                                        ngx_http_ai_gateway_overflow.data,
                                        ngx_http_ai_gateway_overflow.len)
                                    ^ u->family,
                                    1);
        if (s == NULL) {
            return NULL;
        }
    }

    if (u->observe < 0) {
        s->value += u->add;
        return s;
    }

    ngx_http_ai_gateway_observe(s, u->observe);

    return s;
}


static ngx_http_ai_gateway_series_t *
ngx_http_ai_gateway_series_find(ngx_http_ai_gateway_metrics_sh_t *m,
    ngx_slab_pool_t *pool, ngx_uint_t family, ngx_str_t *labels,
    uint32_t hash, ngx_uint_t create)
{
    size_t                         size;
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_ai_gateway_series_t  *s;

    node = m->rbtree.root;
    sentinel = m->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        s = (ngx_http_ai_gateway_series_t *) &node->color;

        rc = (s->family != family) ? (ngx_int_t) family - s->family
             : ngx_memn2cmp(labels->data, s->labels, labels->len, s->len);

        if (rc == 0) {
            return s;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    if (!create) {
        return NULL;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_ai_gateway_series_t, labels) + labels->len;

    node = ngx_slab_calloc_locked(pool, size);
    if (node == NULL) {
        return NULL;
    }

    s = (ngx_http_ai_gateway_series_t *) &node->color;

    node->key = hash;
    s->family = (u_char) family;
    s->len = (u_short) labels->len;
    ngx_memcpy(s->labels, labels->data, labels->len);

    ngx_rbtree_insert(&m->rbtree, node);
    ngx_queue_insert_tail(&m->family[family], &s->queue);
    m->series++;

    return s;
}


static void
ngx_http_ai_gateway_series_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t            **p;
    ngx_http_ai_gateway_series_t  *s, *t;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            s = (ngx_http_ai_gateway_series_t *) &node->color;
            t = (ngx_http_ai_gateway_series_t *) &temp->color;

            rc = (s->family != t->family) ? (ngx_int_t) s->family - t->family
                 : ngx_memn2cmp(s->labels, t->labels, s->len, t->len);

            p = (rc < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* text exposition format 0.0.4 */

static ngx_int_t
ngx_http_ai_gateway_metrics_handler(ngx_http_request_t *r)
{
    size_t                            size;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_chain_t                       out;
    ngx_http_ai_gateway_shm_t        *shm;
    ngx_http_ai_gateway_metrics_sh_t *m;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    shm = mcf->zone->data;

    ngx_shmtx_lock(&shm->shpool->mutex);

    size = ngx_http_ai_gateway_metrics_size(shm->sh->metrics);

    b = ngx_create_temp_buf(r->pool, size + 512);
    if (b == NULL) {
        ngx_shmtx_unlock(&shm->shpool->mutex);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_ai_gateway_metrics_format(b->last, shm->sh->metrics);

    ngx_shmtx_unlock(&shm->shpool->mutex);

    if (mcf->redis) {
        m = shm->sh->metrics;

        /* "up" is this worker's link: each worker has its own */
        b->last = ngx_sprintf(b->last,
                    "# HELP ai_gateway_redis_up Whether the link to Redis "
                    "of the worker that answered is up.\n"
                    "# TYPE ai_gateway_redis_up gauge\n"
                    "ai_gateway_redis_up %ui\n"
                    "# HELP ai_gateway_redis_errors_total Redis commands "
                    "that failed or timed out.\n"
                    "# TYPE ai_gateway_redis_errors_total counter\n"
                    "ai_gateway_redis_errors_total %uA\n"
                    "# HELP ai_gateway_redis_dropped_records_total Usage "
                    "records not delivered to the Redis stream.\n"
                    "# TYPE ai_gateway_redis_dropped_records_total counter\n"
                    "ai_gateway_redis_dropped_records_total %uA\n",
                    ngx_http_ai_gateway_redis_ready(), m->redis_errors,
                    m->redis_dropped);
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static size_t
ngx_http_ai_gateway_metrics_size(ngx_http_ai_gateway_metrics_sh_t *m)
{
    size_t                         size, per;
    ngx_uint_t                     f;
    ngx_queue_t                   *q;
    ngx_http_ai_gateway_series_t  *s;

    size = 512;

    for (f = 0; f < NGX_HTTP_AI_GATEWAY_M_LAST; f++) {
        size += 256;

        per = 128 + 2 * ngx_strlen(ngx_http_ai_gateway_families[f].name);

        if (f == NGX_HTTP_AI_GATEWAY_M_DURATION
            || f == NGX_HTTP_AI_GATEWAY_M_TTFT)
        {
            per *= NGX_HTTP_AI_GATEWAY_HIST_BUCKETS + 3;
        }

        for (q = ngx_queue_head(&m->family[f]);
             q != ngx_queue_sentinel(&m->family[f]);
             q = ngx_queue_next(q))
        {
            s = ngx_queue_data(q, ngx_http_ai_gateway_series_t, queue);
            size += per + s->len * (NGX_HTTP_AI_GATEWAY_HIST_BUCKETS + 3);
        }
    }

    return size;
}


static u_char *
ngx_http_ai_gateway_metrics_format(u_char *p,
    ngx_http_ai_gateway_metrics_sh_t *m)
{
    ngx_uint_t                     f, hist;
    ngx_queue_t                   *q;
    ngx_http_ai_gateway_family_t  *fam;

    for (f = 0; f < NGX_HTTP_AI_GATEWAY_M_LAST; f++) {
        fam = &ngx_http_ai_gateway_families[f];
        hist = (f == NGX_HTTP_AI_GATEWAY_M_DURATION
                || f == NGX_HTTP_AI_GATEWAY_M_TTFT);

        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", fam->name,
                        fam->help, fam->name, fam->type);

        for (q = ngx_queue_head(&m->family[f]);
             q != ngx_queue_sentinel(&m->family[f]);
             q = ngx_queue_next(q))
        {
            p = ngx_http_ai_gateway_series_format(p, fam, hist,
                         ngx_queue_data(q, ngx_http_ai_gateway_series_t,
                                        queue));
        }
    }

    p = ngx_sprintf(p, "# HELP ai_gateway_metrics_series Series kept.\n"
                    "# TYPE ai_gateway_metrics_series gauge\n"
                    "ai_gateway_metrics_series %ui\n"
                    "# HELP ai_gateway_metrics_dropped_series_total "
                    "Label sets counted in an overflow series.\n"
                    "# TYPE ai_gateway_metrics_dropped_series_total counter\n"
                    "ai_gateway_metrics_dropped_series_total %L\n",
                    m->series, m->dropped);

    return p;
}


static u_char *
ngx_http_ai_gateway_series_format(u_char *p, ngx_http_ai_gateway_family_t *f,
    ngx_uint_t hist, ngx_http_ai_gateway_series_t *s)
{
    ngx_uint_t  i;
    int64_t     n;
    ngx_str_t   labels;

    labels.data = s->labels;
    labels.len = s->len;

    if (!hist) {
        if (f == &ngx_http_ai_gateway_families[NGX_HTTP_AI_GATEWAY_M_COST]) {
            /* kept in 1e-12 USD */
            return ngx_sprintf(p, "%s{%V} %L.%012L\n", f->name, &labels,
                               s->value / 1000000000000LL,
                               s->value % 1000000000000LL);
        }

        return ngx_sprintf(p, "%s{%V} %L\n", f->name, &labels, s->value);
    }

    /* kept per bucket, exposed cumulative */
    for (i = 0, n = 0; i < NGX_HTTP_AI_GATEWAY_HIST_BUCKETS; i++) {
        n += s->bucket[i];
        p = ngx_sprintf(p, "%s_bucket{%V,le=\"%s\"} %L\n", f->name, &labels,
                        ngx_http_ai_gateway_hist_le_text[i], n);
    }

    return ngx_sprintf(p, "%s_bucket{%V,le=\"+Inf\"} %L\n"
                       "%s_sum{%V} %L.%03L\n"
                       "%s_count{%V} %L\n",
                       f->name, &labels, s->value,
                       f->name, &labels, s->sum / 1000, s->sum % 1000,
                       f->name, &labels, s->value);
}


/*
 * ai_gateway_price MODEL input=USD output=USD [cached_input=USD];
 * USD per million tokens, kept exactly as 1e-12 USD per token (six
 * decimals of USD per million tokens).
 */

static int64_t
ngx_http_ai_gateway_parse_price(ngx_str_t *v)
{
    u_char      *p, *last;
    int64_t      n;
    ngx_uint_t   frac, digits;

    n = 0;
    frac = 0;
    digits = 0;
    last = v->data + v->len;

    for (p = v->data; p < last; p++) {
        if (*p == '.' && !frac) {
            frac = 1;
            continue;
        }

        if (*p < '0' || *p > '9' || (frac && ++digits > 6)
            || n > 1000000000000LL)
        {
            return -1;
        }

        n = n * 10 + (*p - '0');
    }

    if (v->len == 0 || (frac && digits == 0)) {
        return -1;
    }

    for ( /* void */ ; digits < 6; digits++) {
        n *= 10;
    }

    /* n is USD per million tokens in 1e-6 units: 1e-12 USD per token */
    return n;
}


char *
ngx_http_ai_gateway_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    int64_t                      *field;
    ngx_str_t                    *value, v;
    ngx_uint_t                    i;
    ngx_http_ai_gateway_price_t  *price;

    if (mcf->prices == NULL) {
        mcf->prices = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_ai_gateway_price_t));
        if (mcf->prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    price = ngx_array_push(mcf->prices);
    if (price == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    price->model = value[1];
    price->prefix = 0;
    price->input = -1;
    price->output = -1;
    price->cached_input = -1;

    if (price->model.len && price->model.data[price->model.len - 1] == '*') {
        price->prefix = 1;
        price->model.len--;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "input=", 6) == 0) {
            field = &price->input;
            v.data = value[i].data + 6;
            v.len = value[i].len - 6;

        } else if (ngx_strncmp(value[i].data, "output=", 7) == 0) {
            field = &price->output;
            v.data = value[i].data + 7;
            v.len = value[i].len - 7;

        } else if (ngx_strncmp(value[i].data, "cached_input=", 13) == 0) {
            field = &price->cached_input;
            v.data = value[i].data + 13;
            v.len = value[i].len - 13;

        } else {
            goto invalid;
        }

        *field = ngx_http_ai_gateway_parse_price(&v);

        if (*field < 0) {
            goto invalid;
        }
    }

    if (price->input < 0 || price->output < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs input= and output= for \"%V\"",
                           &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    if (price->cached_input < 0) {
        price->cached_input = price->input;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);

    return NGX_CONF_ERROR;
}


/*
 * The request's cost in 1e-12 USD, or -1 for a model without a price:
 * no cost rather than a wrong one.  An exact name wins over the longest
 * matching "prefix*".
 */

int64_t
ngx_http_ai_gateway_cost(ngx_http_request_t *r, ngx_http_ai_gateway_ctx_t *ctx,
    ngx_http_ai_gateway_tokens_t *t)
{
    int64_t                           cached, cost;
    ngx_uint_t                        i;
    ngx_str_t                        *model;
    ngx_http_ai_gateway_price_t      *p, *best;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    if (mcf->prices == NULL || ctx->model.len == 0) {
        return -1;
    }

    model = &ctx->model;
    p = mcf->prices->elts;
    best = NULL;

    for (i = 0; i < mcf->prices->nelts; i++) {
        if (!p[i].prefix) {
            if (p[i].model.len == model->len
                && ngx_strncmp(p[i].model.data, model->data, model->len) == 0)
            {
                best = &p[i];
                break;
            }

            continue;
        }

        if (p[i].model.len <= model->len
            && ngx_strncmp(p[i].model.data, model->data, p[i].model.len) == 0
            && (best == NULL || p[i].model.len > best->model.len))
        {
            best = &p[i];
        }
    }

    if (best == NULL) {
        return -1;
    }

    cached = ngx_max(t->cached_input, 0);
    cached = ngx_min(cached, t->input);

    cost = 0;

    if (ngx_http_ai_gateway_cost_add(&cost, t->input - cached, best->input)
        != NGX_OK
        || ngx_http_ai_gateway_cost_add(&cost, cached, best->cached_input)
           != NGX_OK
        || ngx_http_ai_gateway_cost_add(&cost, t->output, best->output)
           != NGX_OK)
    {
        /* counts no provider reports (2^40 tokens at $10 a million):
         * no cost rather than a wrapped one */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: the cost of %L input and %L output "
                      "tokens exceeds what is counted, none recorded",
                      t->input, t->output);
        return -1;
    }

    return cost;
}


/* *sum += tokens * price (picodollars), unless that overflows */

static ngx_int_t
ngx_http_ai_gateway_cost_add(int64_t *sum, int64_t tokens, int64_t price)
{
    if (tokens <= 0 || price <= 0) {
        return NGX_OK;
    }

    if (tokens > (INT64_MAX - *sum) / price) {
        return NGX_ERROR;
    }

    *sum += tokens * price;

    return NGX_OK;
}


/* the worker's cache goes with the worker */

void
ngx_http_ai_gateway_metrics_exit(void)
{
    ngx_uint_t  i;

    if (ngx_http_ai_gateway_mcache == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_AI_GATEWAY_MCACHE_SIZE; i++) {
        ngx_free(ngx_http_ai_gateway_mcache[i].key);
    }

    ngx_free(ngx_http_ai_gateway_mcache);
    ngx_http_ai_gateway_mcache = NULL;
}
