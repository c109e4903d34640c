
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * The shared-memory counter store: windowed counters by key, in a slab
 * zone that survives "nginx -s reload", found through an rbtree, expired
 * through an LRU queue.  It knows nothing of HTTP.
 *
 * A window of P ms is kept as S + 1 buckets of P / S ms.  The count of a
 * window at time t is the sum of the bucket t falls in and of the S before
 * it: they cover between P and P + P / S of the past.  Admitting only while
 * that sum stays within the limit means that no interval of P ms, wherever
 * it starts, ever holds more than the limit; the price is that a use is
 * remembered for up to P / S longer than P.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_SHM_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_AI_GATEWAY_BUCKETS  10

/* a window's slots: its buckets and the current one */
#define NGX_HTTP_AI_GATEWAY_SLOTS    (NGX_HTTP_AI_GATEWAY_BUCKETS + 1)

/* the length of a bucket of a window of period ms */
#define ngx_http_ai_gateway_bucket_ms(period)                                 \
    ngx_max((period) / NGX_HTTP_AI_GATEWAY_BUCKETS, 1)


/* wall-clock milliseconds: buckets are aligned to them, in shared memory
 * and in Redis alike, so that they line up across reloads and machines */

static ngx_inline uint64_t
ngx_http_ai_gateway_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


typedef struct {
    ngx_rbtree_t       rbtree;
    ngx_rbtree_node_t  sentinel;
    ngx_queue_t        queue;
    ngx_msec_t         nomem_logged;
    void              *metrics;        /* ngx_http_ai_gateway_metrics.c */
} ngx_http_ai_gateway_shm_sh_t;


typedef struct {
    ngx_http_ai_gateway_shm_sh_t  *sh;
    ngx_slab_pool_t               *shpool;
    size_t                         size;
} ngx_http_ai_gateway_shm_t;


/* one counter as the caller asks for it: the key is hashed before locking */
typedef struct {
    ngx_str_t   key;
    uint32_t    hash;
    ngx_msec_t  period;          /* P, ms */
    int64_t     limit;
    int64_t     cost;            /* what admission charges */

    /* results */
    int64_t     used;            /* before this request */
    ngx_msec_t  reset;           /* ms until the oldest use expires */
    ngx_msec_t  retry;           /* ms until cost fits (when it does not) */
    uint64_t    bucket;          /* where the cost was charged */
    unsigned    found:1;         /* 0: the zone had no room for the key */
} ngx_http_ai_gateway_counter_t;


ngx_int_t ngx_http_ai_gateway_shm_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

/*
 * Under one lock: looks every counter up (creating it), computes used,
 * reset and retry; if all fit (used + cost <= limit, or "force" says a
 * counter may not refuse), charges every cost and returns NGX_OK; else
 * charges nothing, sets *rejected to the index of the first counter that
 * did not fit and returns NGX_DECLINED.  force is a bitmask of counters
 * that count but never refuse (dry runs).
 */
ngx_int_t ngx_http_ai_gateway_shm_admit(ngx_http_ai_gateway_shm_t *shm,
    ngx_http_ai_gateway_counter_t *c, ngx_uint_t n, uint64_t force,
    ngx_uint_t *rejected, ngx_log_t *log);

/*
 * Adds delta (a refund when negative) to the bucket a cost was charged
 * to, when it is still in the window; a charge that comes after its
 * bucket left the window goes to the current one.
 */
void ngx_http_ai_gateway_shm_settle(ngx_http_ai_gateway_shm_t *shm,
    ngx_http_ai_gateway_counter_t *c, int64_t delta, ngx_log_t *log);


#endif /* _NGX_HTTP_AI_GATEWAY_SHM_H_INCLUDED_ */
