
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Limits on Redis, for a fleet: the same windows as in shared memory
 * (ngx_http_ai_gateway_shm.h), kept by one Lua script that checks every
 * counter of a request and charges all or none in one round trip.  The
 * request waits for the answer suspended, resumed by a posted event or by
 * its timer; settlement after the response is one command nobody waits
 * for.
 *
 * A counter is one string of thirteen little-endian doubles (exact
 * integers): the last bucket, the sum of the ring, and the ring of eleven
 * buckets, as in the zone.  The script packs it with Redis's "struct"
 * library (three times cheaper for Redis than a hash of twelve fields),
 * reads all of a command's keys with one MGET, and writes each key once,
 * even when it comes several times.  Buckets follow the wall clock, as
 * in the zone.  Every key carries the hash tag "{l}": a request's keys,
 * whatever their users and endpoints, share one cluster slot, which the
 * script needs.
 *
 * Settlements are gathered for one turn of the event loop and sent as one
 * command: under load, one command settles many requests.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"
#include "ngx_http_ai_gateway_redis.h"


typedef struct {
    ngx_http_request_t              *request;
    ngx_http_ai_gateway_ctx_t       *ctx;
    ngx_http_ai_gateway_redis_op_t  *op;
    ngx_event_t                      timer;
    ngx_event_t                      resume;
} ngx_http_ai_gateway_limit_wait_t;


/* settlements waiting for the end of the turn of the event loop */
typedef struct {
    ngx_event_t                          flush;
    u_char                              *buf;
    size_t                               len;
    size_t                               cap;
    ngx_uint_t                           n;
    ngx_http_ai_gateway_redis_conf_t    *conf;
    ngx_http_ai_gateway_redis_script_t  *script;
} ngx_http_ai_gateway_limit_settle_q_t;


static void ngx_http_ai_gateway_limit_redis_reply(void *data,
    redisReply *reply);
static ngx_int_t ngx_http_ai_gateway_limit_settle_room(
    ngx_http_ai_gateway_limit_settle_q_t *q, size_t size);
static void ngx_http_ai_gateway_limit_redis_flush(ngx_event_t *ev);
static uint64_t ngx_http_ai_gateway_limit_redis_now(void);
static ngx_int_t ngx_http_ai_gateway_limit_redis_parse(
    ngx_http_ai_gateway_ctx_t *ctx, u_char *p, size_t len);
static void ngx_http_ai_gateway_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_resume(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_cleanup(void *data);
static size_t ngx_http_ai_gateway_limit_redis_key(u_char *dst,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *key);
static u_char *ngx_http_ai_gateway_limit_redis_int(u_char *p,
    const char **arg, size_t *len, int64_t v);


static ngx_http_ai_gateway_limit_settle_q_t  ngx_http_ai_gateway_limit_settle_q;


/* a Redis too slow for "timeout" is told once, and its recovery once */
static ngx_uint_t  ngx_http_ai_gateway_limit_redis_slow;


/*
 * ARGV[1] "a" (admit) or "s" (settle), ARGV[2] the time in ms.  Admit: per
 * key, period, limit, cost, force; returns a string of integers: the
 * rejected index or -1, then per key used, reset, retry and bucket (one
 * string: hiredis makes one object of it, not one per number).  Settle:
 * per key (a key may come several times), period, bucket and delta.
 *
 * The time is the gateway's: Redis's TIME costs a quarter of a call, and
 * nodes whose clocks agree to a few milliseconds (NTP) agree on buckets
 * of a tenth of the period.
 */

static const char  ngx_http_ai_gateway_limit_lua[] =
"local now = tonumber(ARGV[2])\n"
"local FMT = '<ddddddddddddd'\n"
"local V = redis.call('MGET', unpack(KEYS))\n"
"local B, P = {}, {}\n"
"local function load(i, period)\n"
"  local key = KEYS[i]\n"
"  local w = math.floor(period / 10)\n"
"  if w < 1 then w = 1 end\n"
"  local j = math.floor(now / w)\n"
"  local b = B[key]\n"
"  if not b then\n"
"    local v = V[i]\n"
"    if v and #v == 104 then\n"
"      b = {struct.unpack(FMT, v)}\n"
"    else\n"
"      b = {j, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}\n"
"    end\n"
"    B[key] = b\n"
"    P[key] = period\n"
"  end\n"
"  if j > b[1] then\n"
"    local steps = math.min(j - b[1], 11)\n"
"    for k = j - steps + 1, j do\n"
"      local s = k % 11 + 3\n"
"      b[2] = b[2] - b[s]\n"
"      b[s] = 0\n"
"    end\n"
"    b[1] = j\n"
"  end\n"
"  return b, w\n"
"end\n"
"local function add(b, slot, n)\n"
"  local s = slot % 11 + 3\n"
"  local v = math.max(b[s] + n, 0)\n"
"  b[2] = b[2] + v - b[s]\n"
"  b[s] = v\n"
"end\n"
"local function save()\n"
"  for key, b in pairs(B) do\n"
"    local w = math.max(math.floor(P[key] / 10), 1)\n"
"    redis.call('SET', key, struct.pack(FMT, b[1], b[2], b[3], b[4], b[5],\n"
"               b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13]),\n"
"               'PX', P[key] + w + 1000)\n"
"  end\n"
"end\n"
"if ARGV[1] == 's' then\n"
"  for i = 1, #KEYS do\n"
"    local a = 3 * i\n"
"    local bucket = tonumber(ARGV[a + 1])\n"
"    local delta = tonumber(ARGV[a + 2])\n"
"    local b = load(i, tonumber(ARGV[a]))\n"
"    if bucket <= b[1] and bucket + 10 >= b[1] then\n"
"      add(b, bucket, delta)\n"
"    elseif delta > 0 then\n"
"      add(b, b[1], delta)\n"
"    end\n"
"  end\n"
"  save()\n"
"  return 1\n"
"end\n"
"local out = {-1}\n"
"for i = 1, #KEYS do\n"
"  local a = 4 * i - 1\n"
"  local limit = tonumber(ARGV[a + 1])\n"
"  local cost = tonumber(ARGV[a + 2])\n"
"  local b, w = load(i, tonumber(ARGV[a]))\n"
"  local last, used = b[1], b[2]\n"
"  local reset, retry = 0, 0\n"
"  if used > 0 then\n"
"    for k = last - 10, last do\n"
"      if b[k % 11 + 3] > 0 then reset = (k + 11) * w - now; break end\n"
"    end\n"
"  end\n"
"  if used + cost > limit then\n"
"    retry = (last + 11) * w - now\n"
"    local freed = 0\n"
"    for k = last - 10, last do\n"
"      freed = freed + b[k % 11 + 3]\n"
"      if used - freed + cost <= limit then\n"
"        retry = (k + 11) * w - now; break\n"
"      end\n"
"    end\n"
"    if out[1] < 0 and ARGV[a + 3] ~= '1' then out[1] = i - 1 end\n"
"  end\n"
"  out[4 * i - 2] = used; out[4 * i - 1] = reset\n"
"  out[4 * i] = retry; out[4 * i + 1] = last\n"
"end\n"
"if out[1] < 0 then\n"
"  for i = 1, #KEYS do\n"
"    local b = B[KEYS[i]]\n"
"    add(b, b[1], tonumber(ARGV[4 * i + 1]))\n"
"  end\n"
"  save()\n"
"end\n"
"return string.format(string.rep('%d ', #out - 1) .. '%d', unpack(out))\n";


ngx_int_t
ngx_http_ai_gateway_limit_redis_init(ngx_conf_t *cf,
    ngx_http_ai_gateway_main_conf_t *mcf)
{
    mcf->redis_script = ngx_http_ai_gateway_redis_add_script(cf, mcf->redis,
                                               ngx_http_ai_gateway_limit_lua);

    return mcf->redis_script ? NGX_OK : NGX_ERROR;
}


/*
 * NGX_AGAIN: sent, the request waits; NGX_DECLINED: Redis cannot be asked
 * now (the caller applies on_error); NGX_ERROR.
 */

ngx_int_t
ngx_http_ai_gateway_limit_redis_admit(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uint64_t force)
{
    u_char                            *p;
    size_t                            *len, size;
    ngx_uint_t                         i, n, k;
    const char                       **argv;
    ngx_pool_cleanup_t                *cln;
    ngx_http_ai_gateway_counter_t     *c;
    ngx_http_ai_gateway_limit_wait_t  *w;
    ngx_http_ai_gateway_main_conf_t   *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    n = ctx->nlimits;
    c = ctx->counters;

    /* numkeys, the keys, "a", the time, then four numbers a key */
    argv = ngx_palloc(r->pool, (3 + 5 * n) * (sizeof(char *) + sizeof(size_t)));
    if (argv == NULL) {
        return NGX_ERROR;
    }

    len = (size_t *) (argv + 3 + 5 * n);

    size = NGX_INT_T_LEN + NGX_INT64_LEN;

    for (i = 0; i < n; i++) {
        size += mcf->redis->prefix.len + 4 + c[i].key.len
                + 4 * (NGX_INT64_LEN + 1);
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    k = 0;
    argv[k] = (char *) p;
    len[k++] = ngx_sprintf(p, "%ui", n) - p;
    p += len[0];

    for (i = 0; i < n; i++) {
        argv[k] = (char *) p;
        len[k] = ngx_http_ai_gateway_limit_redis_key(p, mcf->redis,
                                                     &c[i].key);
        p += len[k++];
    }

    argv[k] = "a";
    len[k++] = 1;

    p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                               (int64_t) ngx_http_ai_gateway_limit_redis_now());
    k++;

    for (i = 0; i < n; i++) {
        p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                                (int64_t) c[i].period);
        k++;
        p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                                c[i].limit);
        k++;
        p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                                c[i].cost);
        k++;

        argv[k] = (force & ((uint64_t) 1 << i)) ? "1" : "0";
        len[k++] = 1;
    }

    w = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_limit_wait_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w->op = ngx_http_ai_gateway_redis_send(mcf->redis_script, (int) k, argv,
                                           len,
                                           ngx_http_ai_gateway_limit_redis_reply,
                                           w);
    if (w->op == NULL) {
        return NGX_DECLINED;
    }

    w->request = r;
    w->ctx = ctx;

    w->timer.handler = ngx_http_ai_gateway_limit_redis_timeout;
    w->timer.data = w;
    w->timer.log = r->connection->log;

    w->resume.handler = ngx_http_ai_gateway_limit_redis_resume;
    w->resume.data = w;
    w->resume.log = r->connection->log;

    cln->handler = ngx_http_ai_gateway_limit_redis_cleanup;
    cln->data = w;

    ngx_add_timer(&w->timer, mcf->redis->timeout);

    /* a client that leaves while we wait ends the request (499) */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static size_t
ngx_http_ai_gateway_limit_redis_key(u_char *dst,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *key)
{
    u_char  *p;

    p = ngx_cpymem(dst, rcf->prefix.data, rcf->prefix.len);
    p = ngx_cpymem(p, "{l}:", 4);
    p = ngx_cpymem(p, key->data, key->len);

    return p - dst;
}


/* one number argument, written at p; returns where the next one goes */

static u_char *
ngx_http_ai_gateway_limit_redis_int(u_char *p, const char **arg, size_t *len,
    int64_t v)
{
    *arg = (char *) p;
    p = ngx_sprintf(p, "%L", v);
    *len = p - (u_char *) *arg;

    return p;
}


/* may run inside hiredis: the request goes on from a posted event */

static void
ngx_http_ai_gateway_limit_redis_reply(void *data, redisReply *reply)
{
    ngx_http_ai_gateway_limit_wait_t *w = data;

    ngx_http_ai_gateway_ctx_t      *ctx;

    w->op = NULL;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    ctx = w->ctx;
    ctx->limit_rc = NGX_ERROR;

    if (reply && ngx_http_ai_gateway_limit_redis_slow) {
        ngx_http_ai_gateway_limit_redis_slow = 0;
        ngx_log_error(NGX_LOG_NOTICE, w->request->connection->log, 0,
                      "ai_gateway: redis answers within the timeout again");
    }

    if (reply && reply->type == REDIS_REPLY_STRING
        && ngx_http_ai_gateway_limit_redis_parse(ctx, (u_char *) reply->str,
                                                 reply->len)
           == NGX_OK)
    {
        ctx->limit_rc = (ctx->limit_rejected == (ngx_uint_t) -1) ? NGX_OK
                                                                 : NGX_DECLINED;
    }

    if (ctx->limit_rc == NGX_ERROR && reply && reply->type != REDIS_REPLY_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, w->request->connection->log, 0,
                      "ai_gateway: redis: unexpected answer to the limit "
                      "script (type %d)", reply->type);
    }

    ngx_post_event(&w->resume, &ngx_posted_events);
}


/* "R U1 RESET1 RETRY1 B1 U2 ...": R is -1 or the rejected counter */

static ngx_int_t
ngx_http_ai_gateway_limit_redis_parse(ngx_http_ai_gateway_ctx_t *ctx,
    u_char *p, size_t len)
{
    u_char                         *end;
    int64_t                         v[1 + 4 * NGX_HTTP_AI_GATEWAY_MAX_LIMITS];
    ngx_uint_t                      i, n, neg;
    ngx_http_ai_gateway_counter_t  *c;

    end = p + len;
    n = 1 + 4 * ctx->nlimits;

    for (i = 0; i < n; i++) {
        if (i > 0) {
            if (p == end || *p++ != ' ') {
                return NGX_ERROR;
            }
        }

        neg = (p < end && *p == '-');
        p += neg;

        if (p == end || *p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        for (v[i] = 0; p < end && *p >= '0' && *p <= '9'; p++) {
            v[i] = v[i] * 10 + (*p - '0');
        }

        if (neg) {
            v[i] = -v[i];
        }
    }

    if (p != end || v[0] < -1 || v[0] >= (int64_t) ctx->nlimits) {
        return NGX_ERROR;
    }

    c = ctx->counters;

    for (i = 0; i < ctx->nlimits; i++) {
        c[i].used = v[1 + 4 * i];
        c[i].reset = (ngx_msec_t) ngx_max(v[2 + 4 * i], 0);
        c[i].retry = (ngx_msec_t) ngx_max(v[3 + 4 * i], 0);
        c[i].bucket = (uint64_t) v[4 + 4 * i];
        c[i].found = 1;
    }

    ctx->limit_rejected = (v[0] < 0) ? (ngx_uint_t) -1 : (ngx_uint_t) v[0];

    return NGX_OK;
}


static void
ngx_http_ai_gateway_limit_redis_timeout(ngx_event_t *ev)
{
    ngx_http_ai_gateway_limit_wait_t *w = ev->data;

    ngx_http_ai_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(w->request,
                                        ngx_http_ai_gateway_module);

    if (w->op) {
        ngx_http_ai_gateway_redis_cancel(w->op);
        w->op = NULL;
    }

    if (!ngx_http_ai_gateway_limit_redis_slow) {
        ngx_http_ai_gateway_limit_redis_slow = 1;
        ngx_log_error(NGX_LOG_WARN, w->request->connection->log, 0,
                      "ai_gateway: redis %V did not answer within %M ms: "
                      "on_error applies to the requests that wait longer "
                      "(logged once until it answers in time)",
                      &mcf->redis->name, mcf->redis->timeout);
    }

    w->ctx->limit_rc = NGX_ERROR;

    ngx_http_ai_gateway_limit_redis_resume(&w->resume);
}


static void
ngx_http_ai_gateway_limit_redis_resume(ngx_event_t *ev)
{
    ngx_http_ai_gateway_limit_wait_t *w = ev->data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = w->request;
    c = r->connection;

    w->ctx->limit_waiting = 0;
    w->ctx->limit_pending = 1;

    r->read_event_handler = ngx_http_block_reading;

    ngx_http_set_log_request(c->log, r);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* the request ends (or is freed) first: nothing may call it back */

static void
ngx_http_ai_gateway_limit_redis_cleanup(void *data)
{
    ngx_http_ai_gateway_limit_wait_t *w = data;

    if (w->op) {
        ngx_http_ai_gateway_redis_cancel(w->op);
        w->op = NULL;
    }

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (w->resume.posted) {
        ngx_delete_posted_event(&w->resume);
    }
}


/*
 * A request's token budgets, settled: queued for the command that the
 * end of this turn of the event loop sends.
 */

void
ngx_http_ai_gateway_limit_redis_settle(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, int64_t delta)
{
    u_char                                 *p;
    size_t                                  size;
    ngx_uint_t                              i;
    ngx_http_ai_gateway_counter_t          *c;
    ngx_http_ai_gateway_main_conf_t        *mcf;
    ngx_http_ai_gateway_limit_settle_q_t   *q;

    if (delta == 0) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    q = &ngx_http_ai_gateway_limit_settle_q;
    c = ctx->counters;

    for (i = 0; i < ctx->nlimits; i++) {
        if (!ctx->limits[i].tokens) {
            continue;
        }

        size = mcf->redis->prefix.len + 4 + c[i].key.len
               + 3 * (NGX_INT64_LEN + 1);

        if (ngx_http_ai_gateway_limit_settle_room(q, size) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "ai_gateway: no memory to settle %L tokens in "
                          "redis", delta);
            return;
        }

        /* the key, then period, bucket and delta, each NUL-ended */
        p = q->buf + q->len;
        p += ngx_http_ai_gateway_limit_redis_key(p, mcf->redis, &c[i].key);
        *p++ = '\0';
        p = ngx_sprintf(p, "%M%Z%uL%Z%L%Z", c[i].period, c[i].bucket, delta);

        q->len = p - q->buf;
        q->n++;
    }

    if (!q->flush.posted) {
        q->flush.handler = ngx_http_ai_gateway_limit_redis_flush;
        q->flush.log = ngx_cycle->log;
        q->conf = mcf->redis;
        q->script = mcf->redis_script;
        ngx_post_event(&q->flush, &ngx_posted_events);
    }
}


static ngx_int_t
ngx_http_ai_gateway_limit_settle_room(
    ngx_http_ai_gateway_limit_settle_q_t *q, size_t size)
{
    u_char  *buf;
    size_t   cap;

    if (q->len + size <= q->cap) {
        return NGX_OK;
    }

    cap = ngx_max(q->cap * 2, q->len + size + 4096);

    buf = ngx_alloc(cap, ngx_cycle->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    if (q->buf) {
        ngx_memcpy(buf, q->buf, q->len);
        ngx_free(q->buf);
    }

    q->buf = buf;
    q->cap = cap;

    return NGX_OK;
}


/* the queued settlements, as one command; the queue keeps its memory */

static void
ngx_http_ai_gateway_limit_redis_flush(ngx_event_t *ev)
{
    u_char                                *p, *end, now[NGX_INT64_LEN];
    u_char                                 nkeys[NGX_INT_T_LEN];
    size_t                                *len;
    ngx_uint_t                             i, k, n;
    const char                           **argv;
    ngx_http_ai_gateway_limit_settle_q_t  *q;

    q = &ngx_http_ai_gateway_limit_settle_q;
    n = q->n;

    if (n == 0) {
        return;
    }

    argv = ngx_alloc((3 + 4 * n) * (sizeof(char *) + sizeof(size_t)),
                     ngx_cycle->log);
    if (argv == NULL) {
        goto done;
    }

    len = (size_t *) (argv + 3 + 4 * n);

    argv[0] = (char *) nkeys;
    len[0] = ngx_sprintf(nkeys, "%ui", n) - nkeys;

    /* the keys first, then "s", the time and the numbers of each */

    p = q->buf;
    end = q->buf + q->len;

    for (i = 0, k = 3 + n; i < n && p < end; i++) {
        argv[1 + i] = (char *) p;
        len[1 + i] = ngx_strlen(p);
        p += len[1 + i] + 1;

        for (; k < 3 + n + 3 * (i + 1); k++) {
            argv[k] = (char *) p;
            len[k] = ngx_strlen(p);
            p += len[k] + 1;
        }
    }

    argv[1 + n] = "s";
    len[1 + n] = 1;
    argv[2 + n] = (char *) now;
    len[2 + n] = ngx_sprintf(now, "%uL", ngx_http_ai_gateway_limit_redis_now())
                 - now;

    if (ngx_http_ai_gateway_redis_send(q->script, (int) (3 + 4 * n), argv,
                                       len, NULL, NULL)
        == NULL)
    {
        /* the link's loss was logged; this is counted */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "ai_gateway: redis unavailable: %ui settlements "
                       "were not applied", n);

        if (q->conf->errors) {
            (void) ngx_atomic_fetch_add(q->conf->errors, 1);
        }
    }

    ngx_free(argv);

done:

    q->len = 0;
    q->n = 0;
}


/* at the worker's exit: what is queued goes out before the link closes */

void
ngx_http_ai_gateway_limit_redis_exit(void)
{
    ngx_http_ai_gateway_limit_settle_q_t  *q;

    q = &ngx_http_ai_gateway_limit_settle_q;

    if (q->flush.posted) {
        ngx_delete_posted_event(&q->flush);
    }

    ngx_http_ai_gateway_limit_redis_flush(&q->flush);

    ngx_free(q->buf);
    ngx_memzero(q, sizeof(ngx_http_ai_gateway_limit_settle_q_t));
}


static uint64_t
ngx_http_ai_gateway_limit_redis_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
