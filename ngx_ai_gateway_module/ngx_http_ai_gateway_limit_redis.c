
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Limits on Redis, for a fleet: the same windows as in shared memory
 * (ngx_http_ai_gateway_shm.h), kept by one Lua script that checks every
 * counter of a request and charges all or none in one round trip.  The
 * request waits for the answer suspended, resumed by a posted event or by
 * the timer of the command it went in; settlement after the response is
 * one command nobody waits for.
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


/* an admission command carries at most so many requests, and keys */
#define NGX_HTTP_AI_GATEWAY_LIMIT_BATCH       64
#define NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS  256

/* settlements a command carries at most */
#define NGX_HTTP_AI_GATEWAY_LIMIT_SETTLE_MAX   1024


typedef struct ngx_http_ai_gateway_limit_batch_s
    ngx_http_ai_gateway_limit_batch_t;


typedef struct {
    ngx_http_request_t                 *request;
    ngx_http_ai_gateway_ctx_t          *ctx;
    /* sent: the command it went in; queued or sent: its slot there */
    ngx_http_ai_gateway_limit_batch_t  *batch;
    ngx_uint_t                          slot;
    uint64_t                            force;
    unsigned                            queued:1;
    ngx_event_t                         resume;
} ngx_http_ai_gateway_limit_wait_t;


/*
 * One admission command on its way: it outlives the requests it carries,
 * whose slots its timeout or a client that leaves empties.  One timer a
 * command, not a request: its requests were sent together, and under
 * load a command carries several of them.
 */
struct ngx_http_ai_gateway_limit_batch_s {
    ngx_event_t                         timer;
    ngx_uint_t                          n;
    ngx_uint_t                          nkeys[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH];
    ngx_http_ai_gateway_limit_wait_t   *waits[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH];

    /*
     * What the answer is read with, even for requests that left: the time
     * sent, the bucket width of each distinct key, and per counter of
     * each request (in order) its distinct key and its cost.
     */
    uint64_t                            now;
    ngx_uint_t                          nd;
    ngx_msec_t    width[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    u_short       key[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    int64_t       cost[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
};


/* admissions waiting for the end of the turn of the event loop */
typedef struct {
    ngx_event_t                          flush;
    ngx_http_ai_gateway_limit_wait_t   **waits;
    ngx_uint_t                           n;
    ngx_uint_t                           cap;
    ngx_http_ai_gateway_redis_script_t  *script;
} ngx_http_ai_gateway_limit_admit_q_t;


/* a queued settlement */
typedef struct {
    uint32_t                             hash;
    uint32_t                             off;     /* of its key in buf */
    uint32_t                             len;
    uint64_t                             bucket;
    int64_t                              delta;
    ngx_msec_t                           period;
} ngx_http_ai_gateway_limit_settled_t;


/* settlements waiting for the end of the turn of the event loop */
typedef struct {
    ngx_event_t                          flush;
    /* the keys */
    u_char                              *buf;
    size_t                               len;
    size_t                               cap;
    ngx_uint_t                           n;
    ngx_http_ai_gateway_limit_settled_t *settled;
    /* the settlements' numbers as sent: period, bucket and delta, as
     * doubles, written from settled[] when they go */
    u_char                              *nums;
    ngx_http_ai_gateway_redis_conf_t    *conf;
    ngx_http_ai_gateway_redis_script_t  *script;
} ngx_http_ai_gateway_limit_settle_q_t;


static void ngx_http_ai_gateway_limit_redis_send(ngx_event_t *ev);
static ngx_uint_t ngx_http_ai_gateway_limit_redis_batch(
    ngx_http_ai_gateway_limit_admit_q_t *q, ngx_uint_t from);
static ngx_uint_t ngx_http_ai_gateway_limit_redis_distinct(
    ngx_http_ai_gateway_limit_batch_t *b, ngx_http_ai_gateway_counter_t **list,
    ngx_uint_t *idx);
static u_char *ngx_http_ai_gateway_limit_redis_args(u_char *p,
    ngx_http_ai_gateway_limit_batch_t *b, ngx_uint_t *idx);
static void ngx_http_ai_gateway_limit_redis_settled(
    ngx_http_ai_gateway_limit_settle_q_t *q, ngx_uint_t n, const char **keys,
    size_t *keys_len);
static void ngx_http_ai_gateway_limit_redis_reply(void *data,
    redisReply *reply);
static void ngx_http_ai_gateway_limit_redis_answer(
    ngx_http_ai_gateway_limit_wait_t *w, ngx_int_t rc);
static ngx_int_t ngx_http_ai_gateway_limit_redis_merge(
    ngx_http_ai_gateway_limit_settle_q_t *q, ngx_http_ai_gateway_counter_t *c,
    int64_t delta, size_t len);
static ngx_int_t ngx_http_ai_gateway_limit_settle_room(
    ngx_http_ai_gateway_limit_settle_q_t *q, size_t size);
static void ngx_http_ai_gateway_limit_redis_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_ai_gateway_limit_redis_apply(
    ngx_http_ai_gateway_limit_batch_t *b, u_char *p, u_char *end,
    ngx_uint_t store);
static ngx_int_t ngx_http_ai_gateway_limit_redis_number(u_char **pos,
    u_char *end, int64_t *v);
static void ngx_http_ai_gateway_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_resume(ngx_event_t *ev);
static void ngx_http_ai_gateway_limit_redis_cleanup(void *data);
static void ngx_http_ai_gateway_limit_redis_detach(
    ngx_http_ai_gateway_limit_wait_t *w);
static size_t ngx_http_ai_gateway_limit_redis_key(u_char *dst,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *key);
static u_char *ngx_http_ai_gateway_limit_redis_int(u_char *p,
    const char **arg, size_t *len, int64_t v);
static u_char *ngx_http_ai_gateway_limit_redis_double(u_char *p, double d);


static ngx_http_ai_gateway_limit_admit_q_t   ngx_http_ai_gateway_limit_admit_q;
static ngx_http_ai_gateway_limit_settle_q_t  ngx_http_ai_gateway_limit_settle_q;


/* a Redis too slow for "timeout" is told once, and its recovery once */
static ngx_uint_t  ngx_http_ai_gateway_limit_redis_slow;


/*
 * KEYS: the settlements' keys (a key may come several times), then, when
 * admitting, the command's distinct keys.  ARGV[1] "a" (admit) or "s"
 * (settle only), ARGV[2] the time in ms, ARGV[3] the number of
 * settlements, ARGV[4] per settlement period, bucket and delta.  All the
 * numbers go as strings of little-endian doubles (exact integers): a
 * fifth of the strings Lua would make of them as text, and no tonumber().
 *
 * Admit: ARGV[5] per distinct key its period, ARGV[6] how many doubles
 * ARGV[7] holds: per request the number of its keys, then per key its
 * index among the distinct keys (from 1), limit, cost and force.  The
 * requests are judged one after the other, each seeing what those before
 * it charged, so a command of many requests admits exactly what as many
 * commands would.
 *
 * Returns one string of doubles: per distinct key as the settlements left
 * it, before the requests, its use, reset and bucket; then per request
 * the rejected index or -1, and for a rejected request, per key, when its
 * cost would fit.  What each admitted request charged, the gateway adds
 * up itself (ngx_http_ai_gateway_limit_redis_apply()): Redis does the
 * least per request, the checks and the charges, which under load is most
 * of its work (a request cost it four times as much when the script
 * answered use, reset, retry and bucket for every key of every request).
 *
 * In the script a counter is a table of its thirteen numbers, then its
 * period, its bucket width and the bucket it was read with (false: new).
 * A key is written once a command, with its time to live when its bucket
 * moved on (or it is new), else keeping it (SET cost Redis a third more
 * with PX): the time to live set when a bucket began outlasts what that
 * bucket holds.
 *
 * The time is the gateway's: Redis's TIME costs a quarter of a call, and
 * nodes whose clocks agree to a few milliseconds (NTP) agree on buckets
 * of a tenth of the period.
 */

static const char  ngx_http_ai_gateway_limit_lua[] =
"local now = tonumber(ARGV[2])\n"
"local floor, rep, unpack = math.floor, string.rep, unpack\n"
"local FMT = '<ddddddddddddd'\n"
"local V = redis.call('MGET', unpack(KEYS))\n"
"local B = {}\n"
"local function load(i, period)\n"
"  local key = KEYS[i]\n"
"  local b = B[key]\n"
"  if b then return b, b[15] end\n"
"  local w = floor(period / 10)\n"
"  if w < 1 then w = 1 end\n"
"  local j = floor(now / w)\n"
"  local v = V[i]\n"
"  if v and #v == 104 then\n"
"    b = {struct.unpack(FMT, v)}\n"
"    b[16] = b[1]\n"
"  else\n"
"    b = {j, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false}\n"
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
"  B[key] = b\n"
"  b[14] = period\n"
"  b[15] = w\n"
"  return b, w\n"
"end\n"
"local function add(b, slot, n)\n"
"  local s = slot % 11 + 3\n"
"  local v = b[s] + n\n"
"  if v < 0 then v = 0 end\n"
"  b[2] = b[2] + v - b[s]\n"
"  b[s] = v\n"
"end\n"
"local function save()\n"
"  for key, b in pairs(B) do\n"
"    local s = struct.pack(FMT, b[1], b[2], b[3], b[4], b[5], b[6], b[7],\n"
"                          b[8], b[9], b[10], b[11], b[12], b[13])\n"
"    if b[16] == b[1] then\n"
"      redis.call('SET', key, s, 'KEEPTTL')\n"
"    else\n"
"      redis.call('SET', key, s, 'PX', b[14] + b[15] + 1000)\n"
"    end\n"
"  end\n"
"end\n"
"local ns = tonumber(ARGV[3])\n"
"if ns > 0 then\n"
"  local s = {struct.unpack('<' .. rep('d', 3 * ns), ARGV[4])}\n"
"  for i = 1, ns do\n"
"    local a = 3 * i - 2\n"
"    local bucket, delta = s[a + 1], s[a + 2]\n"
"    local b = load(i, s[a])\n"
"    if bucket <= b[1] and bucket + 10 >= b[1] then\n"
"      add(b, bucket, delta)\n"
"    elseif delta > 0 then\n"
"      add(b, b[1], delta)\n"
"    end\n"
"  end\n"
"end\n"
"if ARGV[1] == 's' then\n"
"  save()\n"
"  return 1\n"
"end\n"
"local nd = #KEYS - ns\n"
"local per = {struct.unpack('<' .. rep('d', nd), ARGV[5])}\n"
"local out, U, X = {}, {}, {}\n"
"for i = 1, nd do\n"
"  local b, w = load(ns + i, per[i])\n"
"  local last, used, reset = b[1], b[2], 0\n"
"  if used > 0 then\n"
"    local s = (last + 1) % 11 + 3\n"
"    for j = last - 10, last do\n"
"      if b[s] > 0 then reset = (j + 11) * w - now; break end\n"
"      s = s + 1\n"
"      if s == 14 then s = 3 end\n"
"    end\n"
"  end\n"
"  out[3 * i - 2] = used; out[3 * i - 1] = reset; out[3 * i] = last\n"
"  U[i] = b; X[i] = w\n"
"end\n"
"local no, dirty = 3 * nd, ns > 0\n"
"local n = tonumber(ARGV[6])\n"
"local v = {struct.unpack('<' .. rep('d', n), ARGV[7])}\n"
"local p = 1\n"
"while p <= n do\n"
"  local m = v[p]\n"
"  local rej = -1\n"
"  for a = p + 1, p + 4 * m, 4 do\n"
"    local b = U[v[a]]\n"
"    if b[2] + v[a + 2] > v[a + 1] and v[a + 3] == 0 then\n"
"      rej = (a - p - 1) / 4; break\n"
"    end\n"
"  end\n"
"  no = no + 1\n"
"  out[no] = rej\n"
"  if rej < 0 then\n"
"    for a = p + 1, p + 4 * m, 4 do\n"
"      local b = U[v[a]]\n"
"      local s = b[1] % 11 + 3\n"
"      local x = b[s] + v[a + 2]\n"
"      if x < 0 then x = 0 end\n"
"      b[2] = b[2] + x - b[s]\n"
"      b[s] = x\n"
"    end\n"
"    dirty = true\n"
"  else\n"
"    for a = p + 1, p + 4 * m, 4 do\n"
"      local b, w, limit, cost = U[v[a]], X[v[a]], v[a + 1], v[a + 2]\n"
"      local last, used, retry = b[1], b[2], 0\n"
"      if used + cost > limit then\n"
"        retry = (last + 11) * w - now\n"
"        local freed = 0\n"
"        for j = last - 10, last do\n"
"          freed = freed + b[j % 11 + 3]\n"
"          if used - freed + cost <= limit then\n"
"            retry = (j + 11) * w - now; break\n"
"          end\n"
"        end\n"
"      end\n"
"      no = no + 1\n"
"      out[no] = retry\n"
"    end\n"
"  end\n"
"  p = p + 1 + 4 * m\n"
"end\n"
"if dirty then save() end\n"
"return struct.pack('<' .. rep('d', no), unpack(out, 1, no))\n";


ngx_int_t
ngx_http_ai_gateway_limit_redis_init(ngx_conf_t *cf,
    ngx_http_ai_gateway_main_conf_t *mcf)
{
    mcf->redis_script = ngx_http_ai_gateway_redis_add_script(cf, mcf->redis,
                                               ngx_http_ai_gateway_limit_lua);

    return mcf->redis_script ? NGX_OK : NGX_ERROR;
}


/*
 * NGX_AGAIN: queued, the request waits; NGX_DECLINED: Redis cannot be
 * asked now (the caller applies on_error); NGX_ERROR.
 *
 * The admissions of one turn of the event loop go to Redis as one command:
 * under load, one script call judges many requests, in the order they
 * came, and nobody waits longer than the end of the turn.
 */

ngx_int_t
ngx_http_ai_gateway_limit_redis_admit(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uint64_t force)
{
    ngx_uint_t                            cap;
    ngx_pool_cleanup_t                   *cln;
    ngx_http_ai_gateway_limit_wait_t     *w, **waits;
    ngx_http_ai_gateway_main_conf_t      *mcf;
    ngx_http_ai_gateway_limit_admit_q_t  *q;

    if (!ngx_http_ai_gateway_redis_linked()) {
        return NGX_DECLINED;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    q = &ngx_http_ai_gateway_limit_admit_q;

    if (q->n == q->cap) {
        /* the queue keeps its memory from one turn to the next */
        cap = q->cap ? 2 * q->cap : NGX_HTTP_AI_GATEWAY_LIMIT_BATCH;

        waits = ngx_alloc(cap * sizeof(ngx_http_ai_gateway_limit_wait_t *),
                          ngx_cycle->log);
        if (waits == NULL) {
            return NGX_ERROR;
        }

        if (q->waits) {
            ngx_memcpy(waits, q->waits,
                       q->n * sizeof(ngx_http_ai_gateway_limit_wait_t *));
            ngx_free(q->waits);
        }

        q->waits = waits;
        q->cap = cap;
    }

    w = ngx_pcalloc(r->pool, sizeof(ngx_http_ai_gateway_limit_wait_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w->request = r;
    w->ctx = ctx;
    w->force = force;
    w->queued = 1;
    w->slot = q->n;
    q->waits[q->n++] = w;

    w->resume.handler = ngx_http_ai_gateway_limit_redis_resume;
    w->resume.data = w;
    w->resume.log = r->connection->log;

    cln->handler = ngx_http_ai_gateway_limit_redis_cleanup;
    cln->data = w;

    /* a client that leaves while we wait ends the request (499) */
    r->read_event_handler = ngx_http_test_reading;

    if (!q->flush.posted) {
        q->flush.handler = ngx_http_ai_gateway_limit_redis_send;
        q->flush.log = ngx_cycle->log;
        q->script = mcf->redis_script;
        ngx_post_event(&q->flush, &ngx_posted_events);
    }

    return NGX_AGAIN;
}


/* the end of the turn: the queued admissions go out */

static void
ngx_http_ai_gateway_limit_redis_send(ngx_event_t *ev)
{
    ngx_uint_t                            i;
    ngx_http_ai_gateway_limit_admit_q_t  *q;

    q = &ngx_http_ai_gateway_limit_admit_q;

    for (i = 0; i < q->n; /* void */) {
        i = ngx_http_ai_gateway_limit_redis_batch(q, i);
    }

    q->n = 0;

    /* no admission took the settlements (all left): on their own */
    ngx_http_ai_gateway_limit_redis_flush(ev);
}


/* one command for the queued requests from "from" on; returns where the
 * next one starts */

static ngx_uint_t
ngx_http_ai_gateway_limit_redis_batch(ngx_http_ai_gateway_limit_admit_q_t *q,
    ngx_uint_t from)
{
    u_char                                *buf, *p;
    size_t                                 size, *len;
    ngx_uint_t                             i, k, d, n, nkeys, nd, ns, argc;
    const char                           **argv;
    ngx_http_ai_gateway_ctx_t             *ctx;
    ngx_http_ai_gateway_redis_conf_t      *rcf;
    ngx_http_ai_gateway_limit_wait_t      *w;
    ngx_http_ai_gateway_limit_batch_t     *b;
    ngx_http_ai_gateway_main_conf_t       *mcf;
    ngx_http_ai_gateway_limit_settle_q_t  *sq;

    /* the distinct keys, and the place of each counter among them */
    ngx_http_ai_gateway_counter_t  *list[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    ngx_uint_t                      idx[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];

    b = ngx_alloc(sizeof(ngx_http_ai_gateway_limit_batch_t), ngx_cycle->log);
    argv = NULL;
    buf = NULL;
    sq = &ngx_http_ai_gateway_limit_settle_q;
    ns = 0;

    nkeys = 0;
    /* numkeys, the number of settlements, the time and the number of the
     * requests' doubles */
    size = 3 * NGX_INT_T_LEN + NGX_INT64_LEN;
    rcf = NULL;

    for (i = from, n = 0; i < q->n && n < NGX_HTTP_AI_GATEWAY_LIMIT_BATCH;
         i++)
    {
        w = q->waits[i];

        if (w == NULL) {
            continue;
        }

        ctx = w->ctx;

        if (n > 0
            && nkeys + ctx->nlimits > NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS)
        {
            break;
        }

        if (rcf == NULL) {
            mcf = ngx_http_get_module_main_conf(w->request,
                                                ngx_http_ai_gateway_module);
            rcf = mcf->redis;
        }

        /* per key: its name (counted for every key, named once or not)
         * and five doubles (its period, as a distinct key, and four in
         * the request's string); per request one more */
        for (k = 0; k < ctx->nlimits; k++) {
            size += rcf->prefix.len + 4 + ctx->counters[k].key.len + 5 * 8;
        }

        size += 8;

        nkeys += ctx->nlimits;

        w->queued = 0;

        if (b) {
            b->waits[n] = w;
            b->nkeys[n] = ctx->nlimits;
            w->batch = b;
            w->slot = n;
        }

        n++;
    }

    if (n == 0) {
        ngx_free(b);
        return i;
    }

    if (b == NULL) {
        goto failed;
    }

    b->n = n;
    b->now = ngx_http_ai_gateway_now_ms();

    /* the turn's settlements go with its first admissions, unless they
     * are many (Lua's unpack() of the keys has a limit) */
    ns = (from == 0 && sq->n <= NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS)
         ? sq->n : 0;

    nd = ngx_http_ai_gateway_limit_redis_distinct(b, list, idx);

    /* numkeys, the settlements' keys, the requests' distinct keys, "a",
     * the time, the number of settlements and their numbers, the
     * distinct keys' periods, the number of doubles of the requests and
     * their string */
    argc = 1 + ns + nd + 7;

    argv = ngx_alloc(argc * (sizeof(char *) + sizeof(size_t)), ngx_cycle->log);
    buf = ngx_alloc(size, ngx_cycle->log);

    if (argv == NULL || buf == NULL) {
        goto failed;
    }

    len = (size_t *) (argv + argc);

    p = buf;
    argv[0] = (char *) p;
    p = ngx_http_ai_gateway_write_uint(p, ns + nd);
    len[0] = p - (u_char *) argv[0];

    ngx_http_ai_gateway_limit_redis_settled(sq, ns, argv + 1, len + 1);

    for (k = 0; k < nd; k++) {
        argv[1 + ns + k] = (char *) p;
        len[1 + ns + k] = ngx_http_ai_gateway_limit_redis_key(p, rcf,
                                                              &list[k]->key);
        p += len[1 + ns + k];
    }

    k = 1 + ns + nd;

    argv[k] = "a";
    len[k++] = 1;

    p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                            (int64_t) b->now);
    k++;
    p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                            (int64_t) ns);
    k++;

    /* no settlement queued yet: no buffer either */
    argv[k] = ns ? (char *) sq->nums : "";
    len[k++] = ns * 3 * 8;

    /* the distinct keys' periods, and their bucket widths for the answer */
    argv[k] = (char *) p;
    len[k++] = nd * 8;
    b->nd = nd;

    for (d = 0; d < nd; d++) {
        p = ngx_http_ai_gateway_limit_redis_double(p,
                                                  (double) list[d]->period);
        b->width[d] = ngx_http_ai_gateway_bucket_ms(list[d]->period);
    }

    p = ngx_http_ai_gateway_limit_redis_int(p, &argv[k], &len[k],
                                            (int64_t) (n + 4 * nkeys));
    k++;

    argv[k] = (char *) p;
    len[k] = ngx_http_ai_gateway_limit_redis_args(p, b, idx) - p;

    if (ngx_http_ai_gateway_redis_send(q->script, (int) argc, argv, len,
                                       ngx_http_ai_gateway_limit_redis_reply,
                                       b)
        == NULL)
    {
        goto failed;
    }

    /* hiredis calls the reply handler later, never from within the send */
    ngx_memzero(&b->timer, sizeof(ngx_event_t));
    b->timer.handler = ngx_http_ai_gateway_limit_redis_timeout;
    b->timer.data = b;
    b->timer.log = ngx_cycle->log;

    ngx_add_timer(&b->timer, rcf->timeout);

    ngx_free(argv);
    ngx_free(buf);

    if (ns) {
        sq->len = 0;
        sq->n = 0;
    }

    return i;

failed:

    if (ns) {
        /* the link's loss was logged; the settlements are counted */
        if (sq->conf->errors) {
            (void) ngx_atomic_fetch_add(sq->conf->errors, 1);
        }

        sq->len = 0;
        sq->n = 0;
    }

    /* the link went, or memory: on_error for each of these requests */

    for (k = from; k < i; k++) {
        w = q->waits[k];

        if (w) {
            w->batch = NULL;
            ngx_http_ai_gateway_limit_redis_answer(w, NGX_ERROR);
        }
    }

    ngx_free(argv);
    ngx_free(buf);
    ngx_free(b);

    return i;
}


/*
 * The distinct keys of a command's requests: list gets each key's counter
 * once, in the order first seen, and idx the place in list of every
 * counter of the command, request after request.  Returns their number.
 */

static ngx_uint_t
ngx_http_ai_gateway_limit_redis_distinct(ngx_http_ai_gateway_limit_batch_t *b,
    ngx_http_ai_gateway_counter_t **list, ngx_uint_t *idx)
{
    ngx_uint_t                      i, k, h, n, m;
    ngx_http_ai_gateway_ctx_t      *ctx;
    ngx_http_ai_gateway_counter_t  *c, *seen;

    /* open addressing over twice the most keys a command carries: the
     * place in list, plus one (0: free) */
    u_short  table[2 * NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];

    ngx_memzero(table, sizeof(table));

    n = 0;
    m = 0;

    for (i = 0; i < b->n; i++) {
        ctx = b->waits[i]->ctx;
        c = ctx->counters;

        for (k = 0; k < ctx->nlimits; k++) {

            for (h = c[k].hash % (2 * NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS);
                 table[h];
                 h = (h + 1) % (2 * NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS))
            {
                seen = list[table[h] - 1];

                if (seen->hash == c[k].hash && seen->key.len == c[k].key.len
                    && ngx_memcmp(seen->key.data, c[k].key.data,
                                  c[k].key.len)
                       == 0)
                {
                    break;
                }
            }

            if (table[h] == 0) {
                list[n++] = &c[k];
                table[h] = (u_short) n;
            }

            idx[m++] = table[h] - 1;
        }
    }

    return n;
}


/*
 * The numbers of a command's requests, as one string of doubles: per
 * request the number of its keys, then per key its index among the
 * distinct keys (from 1; idx as above), limit, cost and force.  The batch
 * keeps each counter's distinct key and cost, for the answer.  Returns
 * the string's end.
 */

static u_char *
ngx_http_ai_gateway_limit_redis_args(u_char *p,
    ngx_http_ai_gateway_limit_batch_t *b, ngx_uint_t *idx)
{
    ngx_uint_t                      i, k, m;
    ngx_http_ai_gateway_ctx_t      *ctx;
    ngx_http_ai_gateway_counter_t  *c;

    m = 0;

    for (i = 0; i < b->n; i++) {
        ctx = b->waits[i]->ctx;
        c = ctx->counters;

        p = ngx_http_ai_gateway_limit_redis_double(p, (double) ctx->nlimits);

        for (k = 0; k < ctx->nlimits; k++) {
            b->key[m] = (u_short) idx[m];
            b->cost[m] = c[k].cost;

            p = ngx_http_ai_gateway_limit_redis_double(p,
                                                  (double) (idx[m++] + 1));
            p = ngx_http_ai_gateway_limit_redis_double(p, (double) c[k].limit);
            p = ngx_http_ai_gateway_limit_redis_double(p, (double) c[k].cost);
            p = ngx_http_ai_gateway_limit_redis_double(p,
                      (b->waits[i]->force & ((uint64_t) 1 << k)) ? 1.0 : 0.0);
        }
    }

    return p;
}


/* a double, little-endian whatever the host's order, as struct.unpack
 * reads "<d" */

static u_char *
ngx_http_ai_gateway_limit_redis_double(u_char *p, double d)
{
    uint64_t    u;
    ngx_uint_t  i;

    ngx_memcpy(&u, &d, sizeof(double));

    for (i = 0; i < 8; i++) {
        *p++ = (u_char) (u >> (8 * i));
    }

    return p;
}


/* the keys of the first n queued settlements, and their numbers written
 * to q->nums */

static void
ngx_http_ai_gateway_limit_redis_settled(ngx_http_ai_gateway_limit_settle_q_t *q,
    ngx_uint_t n, const char **keys, size_t *keys_len)
{
    u_char                               *p;
    ngx_uint_t                            i;
    ngx_http_ai_gateway_limit_settled_t  *e;

    p = q->nums;

    for (i = 0; i < n; i++) {
        e = &q->settled[i];

        keys[i] = (char *) q->buf + e->off;
        keys_len[i] = e->len;

        p = ngx_http_ai_gateway_limit_redis_double(p, (double) e->period);
        p = ngx_http_ai_gateway_limit_redis_double(p, (double) e->bucket);
        p = ngx_http_ai_gateway_limit_redis_double(p, (double) e->delta);
    }
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
    p = ngx_http_ai_gateway_write_int(p, v);
    *len = p - (u_char *) *arg;

    return p;
}


/*
 * May run inside hiredis: the requests go on from posted events.  The
 * whole answer is checked before any request gets its part.
 */

static void
ngx_http_ai_gateway_limit_redis_reply(void *data, redisReply *reply)
{
    ngx_http_ai_gateway_limit_batch_t *b = data;

    u_char                            *p, *end;
    ngx_int_t                          rc;
    ngx_uint_t                         i;
    ngx_http_ai_gateway_limit_wait_t  *w;

    if (b->timer.timer_set) {
        ngx_del_timer(&b->timer);
    }

    if (reply && ngx_http_ai_gateway_limit_redis_slow) {
        ngx_http_ai_gateway_limit_redis_slow = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ai_gateway: redis answers within the timeout again");
    }

    rc = NGX_ERROR;

    if (reply && reply->type == REDIS_REPLY_STRING) {
        p = (u_char *) reply->str;
        end = p + reply->len;

        /* the whole answer is checked before any request gets its part */
        if (ngx_http_ai_gateway_limit_redis_apply(b, p, end, 0) == NGX_OK) {
            (void) ngx_http_ai_gateway_limit_redis_apply(b, p, end, 1);
            rc = NGX_OK;
        }
    }

    if (rc == NGX_ERROR && reply && reply->type != REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ai_gateway: redis: unexpected answer to the limit "
                      "script (type %d)", reply->type);
    }

    for (i = 0; i < b->n; i++) {
        w = b->waits[i];

        if (w == NULL) {
            /* gone, or timed out */
            continue;
        }

        w->batch = NULL;

        if (rc == NGX_OK) {
            ngx_http_ai_gateway_limit_redis_answer(w,
                            (w->ctx->limit_rejected == (ngx_uint_t) -1)
                            ? NGX_OK : NGX_DECLINED);

        } else {
            ngx_http_ai_gateway_limit_redis_answer(w, NGX_ERROR);
        }
    }

    ngx_free(b);
}


/* rc for ngx_http_ai_gateway_limit_decide(), from a posted event */

static void
ngx_http_ai_gateway_limit_redis_answer(ngx_http_ai_gateway_limit_wait_t *w,
    ngx_int_t rc)
{
    w->ctx->limit_rc = rc;

    ngx_post_event(&w->resume, &ngx_posted_events);
}


/*
 * The answer, checked (store 0) or given to the requests still waiting
 * (store 1): per distinct key its use, reset and bucket before the
 * command, then per request the rejected index or -1, and for a rejected
 * request per key when its cost would fit.  What an admitted request
 * charged is added up here as the script added it, so that each request
 * sees the use left by those before it, whether they are still here or
 * not.
 */

static ngx_int_t
ngx_http_ai_gateway_limit_redis_apply(ngx_http_ai_gateway_limit_batch_t *b,
    u_char *p, u_char *end, ngx_uint_t store)
{
    int64_t                         v;
    ngx_uint_t                      i, k, m, d, nk;
    ngx_http_ai_gateway_ctx_t      *ctx;
    ngx_http_ai_gateway_counter_t  *c;

    /* per distinct key, as the command's requests go */
    int64_t  used[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    int64_t  reset[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    int64_t  last[NGX_HTTP_AI_GATEWAY_LIMIT_BATCH_KEYS];
    int64_t  retry[NGX_HTTP_AI_GATEWAY_MAX_LIMITS];

    for (d = 0; d < b->nd; d++) {
        if (ngx_http_ai_gateway_limit_redis_number(&p, end, &used[d])
            != NGX_OK
            || ngx_http_ai_gateway_limit_redis_number(&p, end, &reset[d])
               != NGX_OK
            || ngx_http_ai_gateway_limit_redis_number(&p, end, &last[d])
               != NGX_OK
            /* a bucket is the time over its width: the reset below
             * cannot overflow */
            || last[d] < 0
            || last[d] > (int64_t) (INT64_MAX / b->width[d])
                         - NGX_HTTP_AI_GATEWAY_SLOTS)
        {
            return NGX_ERROR;
        }
    }

    m = 0;

    for (i = 0; i < b->n; i++) {
        nk = b->nkeys[i];

        if (nk > NGX_HTTP_AI_GATEWAY_MAX_LIMITS
            || ngx_http_ai_gateway_limit_redis_number(&p, end, &v) != NGX_OK
            || v < -1 || v >= (int64_t) nk)
        {
            return NGX_ERROR;
        }

        for (k = 0; v >= 0 && k < nk; k++) {
            if (ngx_http_ai_gateway_limit_redis_number(&p, end, &retry[k])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        ctx = (store && b->waits[i]) ? b->waits[i]->ctx : NULL;

        if (ctx) {
            c = ctx->counters;

            for (k = 0; k < nk; k++) {
                d = b->key[m + k];

                c[k].used = used[d];
                c[k].reset = (ngx_msec_t) ngx_max(reset[d], 0);
                c[k].retry = (v >= 0) ? (ngx_msec_t) ngx_max(retry[k], 0) : 0;
                c[k].bucket = (uint64_t) last[d];
                c[k].found = 1;
            }

            ctx->limit_rejected = (v < 0) ? (ngx_uint_t) -1 : (ngx_uint_t) v;
        }

        for (k = 0; v < 0 && k < nk; k++) {
            /* admitted: charged, and a window that held nothing now
             * resets when this charge leaves it */
            d = b->key[m + k];

            /* a dry run admits any cost, max_tokens up to 2^63 */
            used[d] = (b->cost[m + k] > INT64_MAX - used[d])
                      ? INT64_MAX : used[d] + b->cost[m + k];

            if (reset[d] == 0 && used[d] > 0) {
                reset[d] = (last[d] + NGX_HTTP_AI_GATEWAY_SLOTS)
                           * (int64_t) b->width[d] - (int64_t) b->now;
            }
        }

        m += nk;
    }

    return (p == end) ? NGX_OK : NGX_ERROR;
}


/* the next double of an answer, an exact integer within 2^62 */

static ngx_int_t
ngx_http_ai_gateway_limit_redis_number(u_char **pos, u_char *end, int64_t *v)
{
    u_char      *p;
    double       d;
    uint64_t     u;
#if !(NGX_HAVE_LITTLE_ENDIAN)
    ngx_uint_t   j;
#endif

    p = *pos;

    if (end - p < 8) {
        return NGX_ERROR;
    }

    /* little-endian, whatever the host's order */
#if (NGX_HAVE_LITTLE_ENDIAN)
    ngx_memcpy(&u, p, sizeof(uint64_t));
#else
    for (u = 0, j = 8; j > 0; j--) {
        u = (u << 8) | p[j - 1];
    }
#endif

    ngx_memcpy(&d, &u, sizeof(double));

    /* 2^62: the counters are doubles holding integers */
    if (!(d >= -4611686018427387904.0 && d <= 4611686018427387904.0)) {
        return NGX_ERROR;
    }

    *v = (int64_t) d;
    *pos = p + 8;

    return NGX_OK;
}


static void
ngx_http_ai_gateway_limit_redis_timeout(ngx_event_t *ev)
{
    ngx_http_ai_gateway_limit_batch_t *b = ev->data;

    ngx_uint_t                         i;
    ngx_http_ai_gateway_limit_wait_t  *w;
    ngx_http_ai_gateway_main_conf_t   *mcf;

    /* the command stays on its way: its answer, if it comes, finds the
     * slots empty and frees it */

    for (i = 0; i < b->n; i++) {
        w = b->waits[i];

        if (w == NULL) {
            continue;
        }

        ngx_http_ai_gateway_limit_redis_detach(w);

        if (!ngx_http_ai_gateway_limit_redis_slow) {
            ngx_http_ai_gateway_limit_redis_slow = 1;

            mcf = ngx_http_get_module_main_conf(w->request,
                                                ngx_http_ai_gateway_module);

            ngx_log_error(NGX_LOG_WARN, w->request->connection->log, 0,
                          "ai_gateway: redis %V did not answer within %M ms: "
                          "on_error applies to the requests that wait longer "
                          "(logged once until it answers in time)",
                          &mcf->redis->name, mcf->redis->timeout);
        }

        /* resumed from a posted event, as by an answer */
        ngx_http_ai_gateway_limit_redis_answer(w, NGX_ERROR);
    }

    /* last: it may free b, through this command's reply handler */
    ngx_http_ai_gateway_redis_timed_out();
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

    ngx_http_ai_gateway_limit_redis_detach(w);

    if (w->resume.posted) {
        ngx_delete_posted_event(&w->resume);
    }
}


/* out of the queue or of the command on its way: its answer is dropped */

static void
ngx_http_ai_gateway_limit_redis_detach(ngx_http_ai_gateway_limit_wait_t *w)
{
    if (w->queued) {
        ngx_http_ai_gateway_limit_admit_q.waits[w->slot] = NULL;
        w->queued = 0;
    }

    if (w->batch) {
        w->batch->waits[w->slot] = NULL;
        w->batch = NULL;
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
    size_t                                  size, len;
    ngx_uint_t                              i;
    ngx_http_ai_gateway_limit_settled_t    *e;
    ngx_http_ai_gateway_counter_t          *c;
    ngx_http_ai_gateway_main_conf_t        *mcf;
    ngx_http_ai_gateway_limit_settle_q_t   *q;

    if (delta == 0) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ai_gateway_module);
    q = &ngx_http_ai_gateway_limit_settle_q;
    c = ctx->counters;

    q->conf = mcf->redis;
    q->script = mcf->redis_script;

    for (i = 0; i < ctx->nlimits; i++) {
        if (!ctx->limits[i].tokens) {
            continue;
        }

        size = mcf->redis->prefix.len + 4 + c[i].key.len;

        if (ngx_http_ai_gateway_limit_settle_room(q, size) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "ai_gateway: no memory to settle %L tokens in "
                          "redis", delta);
            return;
        }

        /* the key after those queued: kept unless it merges */
        len = ngx_http_ai_gateway_limit_redis_key(q->buf + q->len, mcf->redis,
                                                  &c[i].key);

        if (ngx_http_ai_gateway_limit_redis_merge(q, &c[i], delta, len)
            == NGX_OK)
        {
            continue;
        }

        e = &q->settled[q->n];
        e->hash = c[i].hash;
        e->off = (uint32_t) q->len;
        e->len = (uint32_t) len;
        e->period = c[i].period;
        e->bucket = c[i].bucket;
        e->delta = delta;

        q->len += len;

        if (++q->n == NGX_HTTP_AI_GATEWAY_LIMIT_SETTLE_MAX) {
            /* a command of bounded size: these go now */
            ngx_http_ai_gateway_limit_redis_flush(NULL);
        }
    }

    if (!q->flush.posted) {
        q->flush.handler = ngx_http_ai_gateway_limit_redis_flush;
        q->flush.log = ngx_cycle->log;
        ngx_post_event(&q->flush, &ngx_posted_events);
    }
}


/*
 * A settlement of a counter and bucket already queued takes this one's
 * delta too, when both have the same sign and no delta of the other sign
 * to the counter was queued after it: the script then applies one where
 * it would apply several (under load, a turn's settlements are often one
 * user's), with the same result: a bucket is kept at zero or more after
 * each delta, which for deltas of one sign is the same as after their
 * sum, and a delta for a bucket gone is dropped (negative) or charged now
 * (positive) alike.  Only the last 16 queued are looked at.  The
 * counter's Redis key, len bytes, is at q->buf + q->len.
 */

static ngx_int_t
ngx_http_ai_gateway_limit_redis_merge(ngx_http_ai_gateway_limit_settle_q_t *q,
    ngx_http_ai_gateway_counter_t *c, int64_t delta, size_t len)
{
    ngx_uint_t                            j;
    ngx_http_ai_gateway_limit_settled_t  *e;

    for (j = q->n; j > 0 && q->n - j < 16; j--) {
        e = &q->settled[j - 1];

        if (e->hash != c->hash || e->period != c->period || e->len != len
            || ngx_memcmp(q->buf + e->off, q->buf + q->len, len) != 0)
        {
            continue;
        }

        if ((e->delta < 0) != (delta < 0)) {
            /*
             * not past a delta of the other sign to the counter: a bucket
             * is kept at zero or more after each, and moving a refund
             * before a charge (of this bucket, or of one gone, which
             * charges the current one) would change the result
             */
            return NGX_DECLINED;
        }

        if (e->bucket != c->bucket) {
            continue;
        }

        /* far from 2^53: deltas are token counts */
        e->delta += delta;

        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ai_gateway_limit_settle_room(
    ngx_http_ai_gateway_limit_settle_q_t *q, size_t size)
{
    u_char  *buf;
    size_t   cap;

    if (q->settled == NULL) {
        /* the queue never holds more: at that many it goes */
        q->settled = ngx_alloc(NGX_HTTP_AI_GATEWAY_LIMIT_SETTLE_MAX
                               * sizeof(ngx_http_ai_gateway_limit_settled_t),
                               ngx_cycle->log);
        q->nums = ngx_alloc(NGX_HTTP_AI_GATEWAY_LIMIT_SETTLE_MAX * 3 * 8,
                            ngx_cycle->log);

        if (q->settled == NULL || q->nums == NULL) {
            ngx_free(q->settled);
            ngx_free(q->nums);
            q->settled = NULL;
            q->nums = NULL;
            return NGX_ERROR;
        }
    }

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
    u_char                                 now[NGX_INT64_LEN];
    u_char                                 nkeys[NGX_INT_T_LEN];
    u_char                                 count[NGX_INT_T_LEN];
    size_t                                *len;
    ngx_uint_t                             n;
    const char                           **argv;
    ngx_http_ai_gateway_limit_settle_q_t  *q;

    q = &ngx_http_ai_gateway_limit_settle_q;
    n = q->n;

    if (n == 0) {
        return;
    }

    if (ev == &q->flush && ngx_http_ai_gateway_limit_admit_q.flush.posted) {
        /* admissions go later in this turn: the settlements go with them */
        return;
    }

    argv = ngx_alloc((5 + n) * (sizeof(char *) + sizeof(size_t)),
                     ngx_cycle->log);
    if (argv == NULL) {
        goto done;
    }

    len = (size_t *) (argv + 5 + n);

    argv[0] = (char *) nkeys;
    len[0] = ngx_http_ai_gateway_write_uint(nkeys, n) - nkeys;

    /* the keys, then "s", the time, their number and their numbers */

    ngx_http_ai_gateway_limit_redis_settled(q, n, argv + 1, len + 1);

    argv[1 + n] = "s";
    len[1 + n] = 1;
    argv[2 + n] = (char *) now;
    len[2 + n] = ngx_http_ai_gateway_write_uint(now,
                                     ngx_http_ai_gateway_now_ms())
                 - now;
    argv[3 + n] = (char *) count;
    len[3 + n] = ngx_http_ai_gateway_write_uint(count, n) - count;
    argv[4 + n] = (char *) q->nums;
    len[4 + n] = n * 3 * 8;

    if (ngx_http_ai_gateway_redis_send(q->script, (int) (5 + n), argv,
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
    ngx_http_ai_gateway_limit_admit_q_t   *a;
    ngx_http_ai_gateway_limit_settle_q_t  *q;

    a = &ngx_http_ai_gateway_limit_admit_q;

    if (a->flush.posted) {
        ngx_delete_posted_event(&a->flush);
    }

    /* no request is left to wait for an admission */
    ngx_free(a->waits);
    ngx_memzero(a, sizeof(ngx_http_ai_gateway_limit_admit_q_t));

    q = &ngx_http_ai_gateway_limit_settle_q;

    if (q->flush.posted) {
        ngx_delete_posted_event(&q->flush);
    }

    ngx_http_ai_gateway_limit_redis_flush(&q->flush);

    ngx_free(q->buf);
    ngx_free(q->settled);
    ngx_free(q->nums);
    ngx_memzero(q, sizeof(ngx_http_ai_gateway_limit_settle_q_t));
}
