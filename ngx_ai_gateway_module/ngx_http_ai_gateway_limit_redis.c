
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
 * A counter is a hash: field "l" is the last bucket, fields "0".."10" the
 * ring of buckets, as in the zone.  Buckets follow Redis's clock (TIME),
 * so that every node of a fleet agrees on them.  Every key carries the
 * hash tag "{l}": a request's keys, whatever their users and endpoints,
 * share one cluster slot, which the script needs.
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


static void ngx_http_ai_gateway_limit_redis_reply(void *data,
    redisReply *reply);
static void ngx_http_ai_gateway_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_resume(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_cleanup(void *data);
static size_t ngx_http_ai_gateway_limit_redis_key(u_char *dst,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *key);


/*
 * ARGV[1] "a" (admit) or "s" (settle).  Admit: per key, period, limit,
 * cost, force; returns { rejected index or -1, then per key used, reset,
 * retry, bucket }.  Settle: per key, period and bucket, then the delta.
 */

static const char  ngx_http_ai_gateway_limit_lua[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local F = {'l','0','1','2','3','4','5','6','7','8','9','10'}\n"
"local function load(key, period)\n"
"  local w = math.max(math.floor(period / 10), 1)\n"
"  local j = math.floor(now / w)\n"
"  local v = redis.call('HMGET', key, unpack(F))\n"
"  local last = tonumber(v[1]) or j\n"
"  local b = {}\n"
"  for k = 0, 10 do b[k] = tonumber(v[k + 2]) or 0 end\n"
"  if j > last then\n"
"    local steps = math.min(j - last, 11)\n"
"    for k = 1, steps do b[(j - steps + k) % 11] = 0 end\n"
"    last = j\n"
"  end\n"
"  return b, last, w\n"
"end\n"
"local function save(key, b, last, w, period)\n"
"  local a = {'l', last}\n"
"  for k = 0, 10 do a[#a + 1] = tostring(k); a[#a + 1] = b[k] end\n"
"  redis.call('HSET', key, unpack(a))\n"
"  redis.call('PEXPIRE', key, period + w + 1000)\n"
"end\n"
"if ARGV[1] == 's' then\n"
"  local delta = tonumber(ARGV[#ARGV])\n"
"  for i = 1, #KEYS do\n"
"    local period = tonumber(ARGV[2 * i])\n"
"    local bucket = tonumber(ARGV[2 * i + 1])\n"
"    local b, last, w = load(KEYS[i], period)\n"
"    if bucket <= last and bucket + 10 >= last then\n"
"      b[bucket % 11] = math.max(b[bucket % 11] + delta, 0)\n"
"    elseif delta > 0 then\n"
"      b[last % 11] = b[last % 11] + delta\n"
"    end\n"
"    save(KEYS[i], b, last, w, period)\n"
"  end\n"
"  return 1\n"
"end\n"
"local out = {-1}\n"
"local st = {}\n"
"for i = 1, #KEYS do\n"
"  local a = 4 * (i - 1) + 1\n"
"  local period = tonumber(ARGV[a + 1])\n"
"  local limit = tonumber(ARGV[a + 2])\n"
"  local cost = tonumber(ARGV[a + 3])\n"
"  local b, last, w = load(KEYS[i], period)\n"
"  local used = 0\n"
"  for k = 0, 10 do used = used + b[k] end\n"
"  local reset, retry = 0, 0\n"
"  for k = last - 10, last do\n"
"    if b[k % 11] > 0 then reset = (k + 11) * w - now; break end\n"
"  end\n"
"  if used + cost > limit then\n"
"    retry = (last + 11) * w - now\n"
"    local freed = 0\n"
"    for k = last - 10, last do\n"
"      freed = freed + b[k % 11]\n"
"      if used - freed + cost <= limit then\n"
"        retry = (k + 11) * w - now; break\n"
"      end\n"
"    end\n"
"    if out[1] < 0 and ARGV[a + 4] ~= '1' then out[1] = i - 1 end\n"
"  end\n"
"  st[i] = {b, last, w, period, cost}\n"
"  out[#out + 1] = used; out[#out + 1] = reset\n"
"  out[#out + 1] = retry; out[#out + 1] = last\n"
"end\n"
"if out[1] < 0 then\n"
"  for i = 1, #KEYS do\n"
"    local s = st[i]\n"
"    s[1][s[2] % 11] = s[1][s[2] % 11] + s[5]\n"
"    save(KEYS[i], s[1], s[2], s[3], s[4])\n"
"  end\n"
"end\n"
"return out\n";


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

    /* numkeys, the keys, "a", then four numbers a key */
    argv = ngx_palloc(r->pool, (2 + 5 * n) * (sizeof(char *) + sizeof(size_t)));
    if (argv == NULL) {
        return NGX_ERROR;
    }

    len = (size_t *) (argv + 2 + 5 * n);

    size = NGX_INT_T_LEN;

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

    for (i = 0; i < n; i++) {
        argv[k] = (char *) p;
        p = ngx_sprintf(p, "%M", c[i].period);
        len[k] = p - (u_char *) argv[k];
        k++;

        argv[k] = (char *) p;
        p = ngx_sprintf(p, "%L", c[i].limit);
        len[k] = p - (u_char *) argv[k];
        k++;

        argv[k] = (char *) p;
        p = ngx_sprintf(p, "%L", c[i].cost);
        len[k] = p - (u_char *) argv[k];
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


/* may run inside hiredis: the request goes on from a posted event */

static void
ngx_http_ai_gateway_limit_redis_reply(void *data, redisReply *reply)
{
    ngx_http_ai_gateway_limit_wait_t *w = data;

    ngx_uint_t                      i, n;
    redisReply                    **e;
    ngx_http_ai_gateway_ctx_t      *ctx;
    ngx_http_ai_gateway_counter_t  *c;

    w->op = NULL;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    ctx = w->ctx;
    n = ctx->nlimits;
    c = ctx->counters;

    ctx->limit_rc = NGX_ERROR;

    if (reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 1 + 4 * n)
    {
        e = reply->element;

        for (i = 0; i < 1 + 4 * n; i++) {
            if (e[i]->type != REDIS_REPLY_INTEGER) {
                break;
            }
        }

        if (i == 1 + 4 * n && e[0]->integer < (long long) n) {

            for (i = 0; i < n; i++) {
                c[i].used = e[1 + 4 * i]->integer;
                c[i].reset = (ngx_msec_t) ngx_max(e[2 + 4 * i]->integer, 0);
                c[i].retry = (ngx_msec_t) ngx_max(e[3 + 4 * i]->integer, 0);
                c[i].bucket = (uint64_t) e[4 + 4 * i]->integer;
                c[i].found = 1;
            }

            if (e[0]->integer < 0) {
                ctx->limit_rc = NGX_OK;

            } else {
                ctx->limit_rc = NGX_DECLINED;
                ctx->limit_rejected = (ngx_uint_t) e[0]->integer;
            }
        }
    }

    if (ctx->limit_rc == NGX_ERROR && reply && reply->type != REDIS_REPLY_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, w->request->connection->log, 0,
                      "ai_gateway: redis: unexpected answer to the limit "
                      "script (type %d)", reply->type);
    }

    ngx_post_event(&w->resume, &ngx_posted_events);
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

    ngx_log_error(NGX_LOG_WARN, w->request->connection->log, 0,
                  "ai_gateway: redis %V did not answer within %M ms",
                  &mcf->redis->name, mcf->redis->timeout);

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


/* one command for all of a request's token budgets; nobody waits */

void
ngx_http_ai_gateway_limit_redis_settle(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, int64_t delta)
{
    u_char                           *p;
    size_t                           *len, size;
    ngx_uint_t                        i, n, k, keys;
    const char                      **argv;
    ngx_http_ai_gateway_counter_t    *c;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (delta == 0) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);

    n = ctx->nlimits;
    c = ctx->counters;

    argv = ngx_palloc(r->pool, (3 + 3 * n) * (sizeof(char *) + sizeof(size_t)));
    if (argv == NULL) {
        return;
    }

    len = (size_t *) (argv + 3 + 3 * n);

    size = 2 * NGX_INT64_LEN;

    for (i = 0; i < n; i++) {
        size += mcf->redis->prefix.len + 4 + c[i].key.len
                + 2 * (NGX_INT64_LEN + 1);
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return;
    }

    keys = 0;

    for (i = 0; i < n; i++) {
        if (ctx->limits[i].tokens) {
            keys++;
        }
    }

    if (keys == 0) {
        return;
    }

    k = 0;
    argv[k] = (char *) p;
    p = ngx_sprintf(p, "%ui", keys);
    len[k] = p - (u_char *) argv[k];
    k++;

    for (i = 0; i < n; i++) {
        if (ctx->limits[i].tokens) {
            argv[k] = (char *) p;
            len[k] = ngx_http_ai_gateway_limit_redis_key(p, mcf->redis,
                                                         &c[i].key);
            p += len[k++];
        }
    }

    argv[k] = "s";
    len[k++] = 1;

    for (i = 0; i < n; i++) {
        if (!ctx->limits[i].tokens) {
            continue;
        }

        argv[k] = (char *) p;
        p = ngx_sprintf(p, "%M", c[i].period);
        len[k] = p - (u_char *) argv[k];
        k++;

        argv[k] = (char *) p;
        p = ngx_sprintf(p, "%uL", c[i].bucket);
        len[k] = p - (u_char *) argv[k];
        k++;
    }

    argv[k] = (char *) p;
    p = ngx_sprintf(p, "%L", delta);
    len[k] = p - (u_char *) argv[k];
    k++;

    if (ngx_http_ai_gateway_redis_send(mcf->redis_script, (int) k, argv, len,
                                       NULL, NULL)
        == NULL)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ai_gateway: redis %V unavailable: a token settlement "
                      "of %L was not applied", &mcf->redis->name, delta);

        if (mcf->redis->errors) {
            (void) ngx_atomic_fetch_add(mcf->redis->errors, 1);
        }
    }
}
