
/*
 * Copyright (C) ngx_ai_gateway_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_ai_gateway_shm.h"


void *ngx_http_ai_gateway_metrics_init_zone(ngx_slab_pool_t *pool);



/* the most counters one request may hold: the force mask is 64 bits */
#define NGX_HTTP_AI_GATEWAY_MAX_COUNTERS  64


typedef struct {
    u_char         color;
    u_char         dummy;
    u_short        len;
    ngx_queue_t    queue;
    ngx_msec_t     period;
    uint64_t       last;          /* index of the newest bucket */
    uint64_t       touched;       /* wall clock ms of the last use */
    int64_t        bucket[NGX_HTTP_AI_GATEWAY_SLOTS];
    u_char         data[1];
} ngx_http_ai_gateway_shm_node_t;


static void ngx_http_ai_gateway_shm_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_ai_gateway_shm_node_t *ngx_http_ai_gateway_shm_lookup(
    ngx_http_ai_gateway_shm_t *shm, ngx_http_ai_gateway_counter_t *c,
    uint64_t now, ngx_log_t *log);
static void ngx_http_ai_gateway_shm_expire(ngx_http_ai_gateway_shm_t *shm,
    uint64_t now, ngx_uint_t force);
static void ngx_http_ai_gateway_shm_roll(ngx_http_ai_gateway_shm_node_t *lr,
    uint64_t j);


ngx_int_t
ngx_http_ai_gateway_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ai_gateway_shm_t *oshm = data;

    size_t                      len;
    ngx_http_ai_gateway_shm_t  *shm;

    shm = shm_zone->data;

    if (oshm) {
        /* a reload: the counters go on */
        shm->sh = oshm->sh;
        shm->shpool = oshm->shpool;
        return NGX_OK;
    }

    shm->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm->sh = shm->shpool->data;
        return NGX_OK;
    }

    shm->sh = ngx_slab_alloc(shm->shpool,
                             sizeof(ngx_http_ai_gateway_shm_sh_t));
    if (shm->sh == NULL) {
        return NGX_ERROR;
    }

    shm->shpool->data = shm->sh;

    ngx_rbtree_init(&shm->sh->rbtree, &shm->sh->sentinel,
                    ngx_http_ai_gateway_shm_rbtree_insert);
    ngx_queue_init(&shm->sh->queue);
    shm->sh->nomem_logged = 0;

    shm->sh->metrics = ngx_http_ai_gateway_metrics_init_zone(shm->shpool);
    if (shm->sh->metrics == NULL) {
        return NGX_ERROR;
    }

    len = sizeof(" in ai_gateway zone \"\"") + shm_zone->shm.name.len;

    shm->shpool->log_ctx = ngx_slab_alloc(shm->shpool, len);
    if (shm->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shm->shpool->log_ctx, " in ai_gateway zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* we log a full zone ourselves, once a minute */
    shm->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_http_ai_gateway_shm_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t               **p;
    ngx_http_ai_gateway_shm_node_t   *lrn, *lrnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            lrn = (ngx_http_ai_gateway_shm_node_t *) &node->color;
            lrnt = (ngx_http_ai_gateway_shm_node_t *) &temp->color;

            p = (ngx_memn2cmp(lrn->data, lrnt->data, lrn->len, lrnt->len) < 0)
                ? &temp->left : &temp->right;
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


ngx_int_t
ngx_http_ai_gateway_shm_admit(ngx_http_ai_gateway_shm_t *shm,
    ngx_http_ai_gateway_counter_t *c, ngx_uint_t n, uint64_t force,
    ngx_uint_t *rejected, ngx_log_t *log)
{
    int64_t                          freed, v;
    uint64_t                         now, j, k, w;
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    ngx_http_ai_gateway_shm_node_t  *lr[NGX_HTTP_AI_GATEWAY_MAX_COUNTERS];

    n = ngx_min(n, NGX_HTTP_AI_GATEWAY_MAX_COUNTERS);
    now = ngx_http_ai_gateway_now_ms();
    rc = NGX_OK;

    ngx_shmtx_lock(&shm->shpool->mutex);

    ngx_http_ai_gateway_shm_expire(shm, now, 0);

    for (i = 0; i < n; i++) {
        lr[i] = ngx_http_ai_gateway_shm_lookup(shm, &c[i], now, log);

        c[i].used = 0;
        c[i].reset = 0;
        c[i].retry = 0;
        c[i].found = (lr[i] != NULL);

        if (lr[i] == NULL) {
            /* no room even after eviction: this counter lets it pass */
            continue;
        }

        w = ngx_http_ai_gateway_bucket_ms(c[i].period);
        j = now / w;

        ngx_http_ai_gateway_shm_roll(lr[i], j);
        j = lr[i]->last;

        for (k = 0; k < NGX_HTTP_AI_GATEWAY_SLOTS; k++) {
            c[i].used += lr[i]->bucket[k];
        }

        /* the oldest bucket with uses leaves the window first */
        for (k = j - ngx_min(j, NGX_HTTP_AI_GATEWAY_BUCKETS); k <= j; k++) {
            if (lr[i]->bucket[k % NGX_HTTP_AI_GATEWAY_SLOTS]) {
                c[i].reset = (k + NGX_HTTP_AI_GATEWAY_SLOTS) * w - now;
                break;
            }
        }

        if (c[i].used + c[i].cost <= c[i].limit) {
            continue;
        }

        /* when, bucket by bucket, enough leaves the window */

        c[i].retry = (j + NGX_HTTP_AI_GATEWAY_SLOTS) * w - now;
        freed = 0;

        for (k = j - ngx_min(j, NGX_HTTP_AI_GATEWAY_BUCKETS); k <= j; k++) {
            freed += lr[i]->bucket[k % NGX_HTTP_AI_GATEWAY_SLOTS];

            if (c[i].used - freed + c[i].cost <= c[i].limit) {
                c[i].retry = (k + NGX_HTTP_AI_GATEWAY_SLOTS) * w - now;
                break;
            }
        }

        if (rc == NGX_OK && !(force & ((uint64_t) 1 << i))) {
            rc = NGX_DECLINED;
            *rejected = i;
        }
    }

    if (rc == NGX_OK) {
        for (i = 0; i < n; i++) {
            if (lr[i] == NULL) {
                continue;
            }

            v = lr[i]->bucket[lr[i]->last % NGX_HTTP_AI_GATEWAY_SLOTS];
            lr[i]->bucket[lr[i]->last % NGX_HTTP_AI_GATEWAY_SLOTS] =
                                                              v + c[i].cost;
            c[i].bucket = lr[i]->last;
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);

    return rc;
}


void
ngx_http_ai_gateway_shm_settle(ngx_http_ai_gateway_shm_t *shm,
    ngx_http_ai_gateway_counter_t *c, int64_t delta, ngx_log_t *log)
{
    int64_t                         *b;
    uint64_t                         now, w;
    ngx_http_ai_gateway_shm_node_t  *lr;

    if (delta == 0) {
        return;
    }

    now = ngx_http_ai_gateway_now_ms();
    w = ngx_http_ai_gateway_bucket_ms(c->period);

    ngx_shmtx_lock(&shm->shpool->mutex);

    lr = ngx_http_ai_gateway_shm_lookup(shm, c, now, log);

    if (lr != NULL) {
        ngx_http_ai_gateway_shm_roll(lr, now / w);

        if (c->bucket <= lr->last
            && c->bucket + NGX_HTTP_AI_GATEWAY_BUCKETS >= lr->last)
        {
            b = &lr->bucket[c->bucket % NGX_HTTP_AI_GATEWAY_SLOTS];
            *b = ngx_max(*b + delta, 0);

        } else if (delta > 0) {
            /* the reservation has left the window; the excess has not */
            lr->bucket[lr->last % NGX_HTTP_AI_GATEWAY_SLOTS] += delta;
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);
}


static ngx_http_ai_gateway_shm_node_t *
ngx_http_ai_gateway_shm_lookup(ngx_http_ai_gateway_shm_t *shm,
    ngx_http_ai_gateway_counter_t *c, uint64_t now, ngx_log_t *log)
{
    size_t                           size;
    ngx_int_t                        rc;
    ngx_uint_t                       tries;
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_http_ai_gateway_shm_node_t  *lr;

    node = shm->sh->rbtree.root;
    sentinel = shm->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (c->hash < node->key) {
            node = node->left;
            continue;
        }

        if (c->hash > node->key) {
            node = node->right;
            continue;
        }

        lr = (ngx_http_ai_gateway_shm_node_t *) &node->color;

        rc = ngx_memn2cmp(c->key.data, lr->data, c->key.len, (size_t) lr->len);

        if (rc == 0) {
            ngx_queue_remove(&lr->queue);
            ngx_queue_insert_head(&shm->sh->queue, &lr->queue);
            /* workers' clocks differ by a few ms: touched never goes back */
            lr->touched = ngx_max(lr->touched, now);
            return lr;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_ai_gateway_shm_node_t, data)
           + c->key.len;

    node = ngx_slab_alloc_locked(shm->shpool, size);

    for (tries = 0; node == NULL && tries < 8; tries++) {

        if (now >= shm->sh->nomem_logged + 60000) {
            shm->sh->nomem_logged = now;
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ai_gateway: the zone is full, the least recently "
                          "used keys are evicted (logged once a minute)");
        }

        if (ngx_queue_empty(&shm->sh->queue)) {
            break;
        }

        ngx_http_ai_gateway_shm_expire(shm, now, 1);

        node = ngx_slab_alloc_locked(shm->shpool, size);
    }

    if (node == NULL) {
        return NULL;
    }

    lr = (ngx_http_ai_gateway_shm_node_t *) &node->color;

    node->key = c->hash;
    lr->len = (u_short) c->key.len;
    lr->period = c->period;
    lr->last = 0;
    lr->touched = now;
    ngx_memzero(lr->bucket, sizeof(lr->bucket));
    ngx_memcpy(lr->data, c->key.data, c->key.len);

    ngx_rbtree_insert(&shm->sh->rbtree, node);
    ngx_queue_insert_head(&shm->sh->queue, &lr->queue);

    return lr;
}


/*
 * Frees up to two least recently used keys whose window has passed; with
 * force, the least recently used one whatever its state (a full zone).
 */

static void
ngx_http_ai_gateway_shm_expire(ngx_http_ai_gateway_shm_t *shm, uint64_t now,
    ngx_uint_t force)
{
    ngx_uint_t                       n;
    ngx_queue_t                     *q;
    ngx_rbtree_node_t               *node;
    ngx_http_ai_gateway_shm_node_t  *lr;

    for (n = 0; n < 2; n++) {

        if (ngx_queue_empty(&shm->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&shm->sh->queue);
        lr = ngx_queue_data(q, ngx_http_ai_gateway_shm_node_t, queue);

        /*
         * Each worker has its own cached clock, a few ms apart: a key that
         * another worker touched "after" our now is not idle (an unsigned
         * now - touched would wrap, and free a key in use with its counts).
         */
        if (!force
            && (now < lr->touched
                || now - lr->touched < lr->period
                                       + lr->period / NGX_HTTP_AI_GATEWAY_BUCKETS
                                       + 1000))
        {
            return;
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) lr - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&shm->sh->rbtree, node);
        ngx_slab_free_locked(shm->shpool, node);

        if (force) {
            return;
        }
    }
}


/* moves the window to bucket j: buckets that left it start again at 0 */

static void
ngx_http_ai_gateway_shm_roll(ngx_http_ai_gateway_shm_node_t *lr, uint64_t j)
{
    uint64_t  k, steps;

    if (j <= lr->last) {
        /* the same bucket, or a clock that stepped back */
        return;
    }

    steps = ngx_min(j - lr->last, NGX_HTTP_AI_GATEWAY_SLOTS);

    for (k = 1; k <= steps; k++) {
        lr->bucket[(j - steps + k) % NGX_HTTP_AI_GATEWAY_SLOTS] = 0;
    }

    lr->last = j;
}
