
/*
 * Copyright (C) ngx_ai_gateway_module authors
 */


#ifndef _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_log.h"
#include "ngx_http_ai_gateway_redis.h"
#include "ngx_http_ai_gateway_shm.h"
#include "ngx_http_ai_gateway_sse.h"
#include "ngx_http_ai_gateway_translate.h"
#include "ngx_http_ai_gateway_usage.h"


/* a request body parsed once for the facts and for its translation; the
 * first bytes of its tree come with it from the pool */
#define NGX_HTTP_AI_GATEWAY_TREE_FIRST  3072
/* larger bodies are not kept as a tree: its nodes can take many times the
 * body's size (a pathological "[1,1,...]" about 24 times) */
#define NGX_HTTP_AI_GATEWAY_TREE_MAX    16384

/* the forwarded request before its translation to Anthropic */
typedef struct {
    ngx_chain_t                 *bufs;
    off_t                        content_length_n;
    ngx_str_t                    content_length;
    ngx_str_t                    uri;             /* the one it had */
    ngx_str_t                    messages_uri;    /* the one it was given */
    ngx_str_t                    upstream_model;
    unsigned                     valid_unparsed_uri:1;
    unsigned                     hide_usage:1;
} ngx_http_ai_gateway_untranslate_t;


typedef struct {
    ngx_http_ai_gateway_jtree_t        *root;
    ngx_http_ai_gateway_jtree_arena_t   arena;
    /* what was parsed: a body replaced since is parsed again */
    u_char                             *body;
    size_t                              len;
} ngx_http_ai_gateway_tree_t;


#define NGX_HTTP_AI_GATEWAY_DEFAULT_MAX_BODY     (4 * 1024 * 1024)
#define NGX_HTTP_AI_GATEWAY_DEFAULT_MAX_PAYLOAD  (1024 * 1024)

/* characters per token for estimates, when the provider gives no usage */
#define NGX_HTTP_AI_GATEWAY_CHARS_PER_TOKEN      4

#define NGX_HTTP_AI_GATEWAY_DEFAULT_ZONE_SIZE    (10 * 1024 * 1024)
#define NGX_HTTP_AI_GATEWAY_DEFAULT_RESERVATION  1000
#define NGX_HTTP_AI_GATEWAY_MAX_LIMITS           32


typedef enum {
    NGX_HTTP_AI_GATEWAY_LIMIT_NONE = 0,
    NGX_HTTP_AI_GATEWAY_LIMIT_PASSED,
    NGX_HTTP_AI_GATEWAY_LIMIT_REJECTED,
    NGX_HTTP_AI_GATEWAY_LIMIT_DRY_RUN_REJECTED
} ngx_http_ai_gateway_limit_status_e;


typedef struct ngx_http_ai_gateway_keys_s  ngx_http_ai_gateway_keys_t;
typedef struct ngx_http_ai_gateway_guard_s  ngx_http_ai_gateway_guard_t;
typedef struct ngx_http_ai_gateway_key_s   ngx_http_ai_gateway_key_t;


#define NGX_HTTP_AI_GATEWAY_SAFETY_NONE     0
#define NGX_HTTP_AI_GATEWAY_SAFETY_RUNNING  1
#define NGX_HTTP_AI_GATEWAY_SAFETY_CLEAN    2
#define NGX_HTTP_AI_GATEWAY_SAFETY_FLAGGED  3
#define NGX_HTTP_AI_GATEWAY_SAFETY_FAILED   4

/* a question to the safety model, and its answer */
typedef struct {
    ngx_uint_t                   state;
    const char                  *category;     /* what it flagged, or why
                                                  it failed */
    ngx_buf_t                   *answer;       /* its body, read by our
                                                  body filter */
    unsigned                     too_large:1;
} ngx_http_ai_gateway_safety_t;

/* the most of a moderation answer read (about 2 KB a text) */
#define NGX_HTTP_AI_GATEWAY_SAFETY_ANSWER_MAX  (1024 * 1024)


/*
 * A translated JSON answer is read whole before it is translated, up to
 * this; an SSE event's data, up to the other.
 */
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_JSON_MAX   (8 * 1024 * 1024)
#define NGX_HTTP_AI_GATEWAY_TRANSLATE_EVENT_MAX  (1024 * 1024)

/* a JSON answer whose usage alone is wanted is kept up to this size and
 * read from its end (filter.c); a larger one is walked as it comes */
#define NGX_HTTP_AI_GATEWAY_TAIL_MAX             (64 * 1024)


/* ai_gateway_upstream_api */
#define NGX_HTTP_AI_GATEWAY_UPSTREAM_OPENAI     0
#define NGX_HTTP_AI_GATEWAY_UPSTREAM_ANTHROPIC  1


/* where a request's limits were counted */
typedef enum {
    NGX_HTTP_AI_GATEWAY_BACKEND_NONE = 0,
    NGX_HTTP_AI_GATEWAY_BACKEND_SHM,
    NGX_HTTP_AI_GATEWAY_BACKEND_REDIS
} ngx_http_ai_gateway_backend_e;


typedef enum {
    NGX_HTTP_AI_GATEWAY_LIMIT_BY_USER = 0,
    NGX_HTTP_AI_GATEWAY_LIMIT_BY_ENDPOINT,
    NGX_HTTP_AI_GATEWAY_LIMIT_BY_VARIABLE
} ngx_http_ai_gateway_key_type_e;


/* one ai_gateway_rate_limit */
typedef struct {
    ngx_http_ai_gateway_key_type_e   key_type;
    ngx_http_complex_value_t        *key;        /* key=$variable */
    ngx_msec_t                       period;
    ngx_uint_t                       tokens;     /* 0: calls */
    int64_t                          limit;
    ngx_str_t                        limit_text; /* its header value */
    ngx_uint_t                       dry_run;
    ngx_str_t                        type;       /* requests_per_user_... */
    ngx_str_t                        scope;      /* user, endpoint, key */
    ngx_str_t                        key_prefix; /* of its counters' keys */
    ngx_str_t                        period_name;
} ngx_http_ai_gateway_limit_t;


/* ai_gateway_price: 1e-12 USD per token */
typedef struct {
    ngx_str_t                        model;
    ngx_uint_t                       prefix;     /* "name*" */
    int64_t                          input;
    int64_t                          output;
    int64_t                          cached_input;
} ngx_http_ai_gateway_price_t;


typedef enum {
    NGX_HTTP_AI_GATEWAY_API_UNKNOWN = 0,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_CHAT,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_COMPLETIONS,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_RESPONSES,
    NGX_HTTP_AI_GATEWAY_API_OPENAI_EMBEDDINGS,
    NGX_HTTP_AI_GATEWAY_API_ANTHROPIC_MESSAGES
} ngx_http_ai_gateway_api_e;


/* ai_gateway_secret: sent upstream, cut out of every record */
typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   value;
    ngx_str_t                   escaped;         /* as in a JSON string */
} ngx_http_ai_gateway_secret_t;


typedef struct {
    ngx_http_ai_gateway_sink_t *usage_log;
    ngx_http_ai_gateway_sink_t *inference_log;
    size_t                      max_payload;
    ngx_int_t                   request_id_index;
    ngx_shm_zone_t             *zone;
    ngx_uint_t                  limits;          /* some location limits */
    ngx_uint_t                  metrics;         /* ai_gateway_metrics */
    ngx_uint_t                  max_series;
    ngx_array_t                *prices;
    ngx_uint_t                  tracking;        /* some location tracks */
    ngx_uint_t                  inference;       /* some location records */
    ngx_http_ai_gateway_redis_conf_t    *redis;
    ngx_http_ai_gateway_redis_script_t  *redis_script;
    ngx_str_t                   usage_stream;    /* Redis stream name */
    ngx_array_t                *secrets;         /* ai_gateway_secret */
    ngx_uint_t                  usage_stream_maxlen;
} ngx_http_ai_gateway_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    size_t                      max_body;
    ngx_http_complex_value_t   *user;
    /* user is "$http_NAME" alone: NAME, looked up directly (user.c) */
    ngx_str_t                   user_header;
    ngx_str_t                   endpoint;
    ngx_flag_t                  usage_tracking;
    ngx_flag_t                  inference_table;
    ngx_flag_t                  stream_usage;
    ngx_array_t                *limits;
    ngx_flag_t                  require_user;
    ngx_int_t                   token_reservation;
    ngx_http_ai_gateway_keys_t *keys;
    ngx_array_t                *models;          /* of ngx_str_t */
    ngx_array_t                *model_map;       /* of ngx_keyval_t */
    ngx_uint_t                  upstream_api;
    ngx_str_t                  *upstream_secret;
    ngx_str_t                   anthropic_version;
    ngx_int_t                   translate_max_tokens;
    ngx_http_ai_gateway_guard_t *guard_in;
    ngx_http_ai_gateway_guard_t *guard_out;
} ngx_http_ai_gateway_loc_conf_t;


typedef enum {
    NGX_HTTP_AI_GATEWAY_STATE_NEW = 0,
    NGX_HTTP_AI_GATEWAY_STATE_READING,
    NGX_HTTP_AI_GATEWAY_STATE_DONE
} ngx_http_ai_gateway_state_e;


/*
 * The request's facts, from the first inspection to the log phase.  It is
 * found again after an internal redirect, see ngx_http_ai_gateway_ctx.c.
 */

typedef struct {
    /*
     * First what the answer's filters and the log phase read: they run
     * long after the request's phases, when 64 requests in flight have
     * pushed this memory out of the CPU's caches, and each cache line they
     * touch costs a miss.  So these fields share the first three lines.
     */
    ngx_http_ai_gateway_state_e  state;
    unsigned                     inspected:1;
    unsigned                     input_chars_lazy:1;  /* not counted yet */
    unsigned                     parse:1;         /* read the answer */
    unsigned                     read_usage:1;    /* and its usage */
    unsigned                     limit_done:1;
    unsigned                     limit_waiting:1; /* for Redis */
    unsigned                     limit_pending:1; /* Redis answered */
    unsigned                     limit_headers:1;
    unsigned                     settled:1;
    unsigned                     track:1;         /* usage tracking on */
    unsigned                     infer:1;         /* inference table on */
    unsigned                     hide_usage:1;    /* drop the usage chunk */
    unsigned                     client_usage:1;  /* client asked for it */
    unsigned                     resp_active:1;
    unsigned                     resp_sse:1;
    unsigned                     sse_fast:1;      /* walk_stream() reads it */
    unsigned                     resp_tail:1;     /* kept, not walked yet */
    unsigned                     resp_done:1;     /* last buffer seen */
    unsigned                     resp_end_event:1;/* stream ended properly */
    unsigned                     resp_encoded:1;  /* gzip: not parsed */
    unsigned                     hold:1;          /* links (busy) or kept
                                                     buffers (pledges) wait
                                                     for the client: read
                                                     here, on a hot line */
    unsigned                     ttft_set:1;
    unsigned                     capture_overflow:1;
    unsigned                     logged:1;
    unsigned                     body_filtered:1;
    unsigned                     too_large:1;
    unsigned                     user_evaluated:1;
    unsigned                     early:1;         /* made in the rewrite
                                                     phase, not yet seen by
                                                     the handler */
    unsigned                     hashed:1;
    unsigned                     translate:1;
    unsigned                     translate_usage:1; /* client asked */
    unsigned                     translate_failed:1;
    unsigned                     translate_last:1;
    unsigned                     translate_done:1;  /* JSON: in tout */
    unsigned                     translate_held:1;  /* JSON: header waits */
    ngx_http_ai_gateway_api_e    api;
    ngx_http_ai_gateway_limit_status_e  limit_status;
    ngx_http_ai_gateway_backend_e   limit_backend;
    ngx_uint_t                   resp_status;
    ngx_msec_t                   ttft;            /* since arrival */

    /* limits: what admission charged, for the headers and settlement */
    ngx_http_ai_gateway_counter_t  *counters;
    ngx_http_ai_gateway_limit_t    *limits;
    ngx_uint_t                      nlimits;
    int64_t                         reserved;     /* tokens per budget */
    uint64_t                        limit_force;  /* dry runs, bitmask */

    ngx_http_ai_gateway_walk_t  *walk;
    ngx_buf_t                   *tail;            /* resp_tail's answer */
    ngx_http_ai_gateway_sse_t   *sse;
    void                        *gout;            /* output state */
    ngx_buf_t                   *capture;         /* inference payload */
    ngx_int_t                    stream;          /* -1: not given */
    ngx_http_ai_gateway_usage_t  usage;

    /* the rest of the limits' outcome */
    ngx_str_t                       limit_type;   /* the one that acted */
    ngx_uint_t                      limit_rejected;
    ngx_int_t                       limit_rc;     /* Redis's verdict */

    /* an error found while the body was read: answered when phases resume */
    ngx_uint_t                   status;
    const char                  *error_type;
    const char                  *error_code;
    ngx_str_t                    error_message;

    /* the body, contiguous, as the client sent it (chunked: decoded) */
    u_char                      *body;
    size_t                       body_len;
    /* the body's tree, when the location translates it (request.c) */
    ngx_http_ai_gateway_tree_t  *tree;
    size_t                       body_size;

    ngx_str_t                    model;
    ngx_str_t                    client_user;
    ngx_str_t                    endpoint;
    ngx_str_t                    user;
    int64_t                      max_tokens;      /* -1: not given */
    uint64_t                     input_chars;     /* see input_chars() */

    u_char                       request_hash[64];

    /* the response */
    ngx_http_ai_gateway_sse_t   *gsse;            /* the translated stream,
                                                     for the output guard */
    ngx_buf_t                   *capture_args;    /* tool call arguments */
    ngx_buf_t                   *held;            /* a partial SSE event */
    uint64_t                     held_start;      /* its stream offset */
    u_char                       sse_head[6];     /* "[DONE]"? */
    size_t                       sse_head_len;
    ngx_chain_t                 *free;            /* copies of held bytes */
    ngx_chain_t                 *sfree;           /* links into the
                                                     upstream's buffers */
    ngx_chain_t                 *busy;
    ngx_array_t                 *drops;           /* SSE events to drop */
    ngx_array_t                 *pledges;         /* upstream buffers kept
                                                     busy: back-pressure */

    /* guardrails: what acted, "input:pii_email:mask,..." */
    ngx_str_t                    guardrail;
    const char                  *gout_category;   /* what blocked */
    ngx_str_t                    safety_body;     /* for the safety model */
    ngx_http_ai_gateway_safety_t safety;          /* on the input */

    /* providers: the client's key, the model the upstream is asked */
    ngx_http_ai_gateway_key_t   *key;
    ngx_str_t                    group;
    ngx_str_t                    upstream_model;

    /* what the request was before its translation, for a redirect to a
     * location that does not translate (error_page after an Anthropic
     * primary): see ngx_http_ai_gateway_untranslate() */
    ngx_http_ai_gateway_untranslate_t       *untranslate;

    /* an Anthropic answer translated for an OpenAI client */
    ngx_http_ai_gateway_translate_stream_t  *tstream;
    ngx_buf_t                   *tevent;          /* an event's data */
    ngx_buf_t                   *tjson;           /* a JSON answer */
    ngx_http_ai_gateway_translate_buf_t      tout;
    ngx_chain_t                 *tfree;
    ngx_chain_t                 *tbusy;

} ngx_http_ai_gateway_ctx_t;


#define NGX_HTTP_AI_GATEWAY_CTX_ALIGN  64     /* a cache line */

ngx_http_ai_gateway_ctx_t *ngx_http_ai_gateway_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_ai_gateway_mark(ngx_http_request_t *r);
ngx_http_ai_gateway_ctx_t *ngx_http_ai_gateway_create_ctx(
    ngx_http_request_t *r);

typedef struct {
    ngx_list_part_t             *part;
    ngx_uint_t                   i;
} ngx_http_ai_gateway_header_iter_t;

ngx_table_elt_t *ngx_http_ai_gateway_header_next(ngx_list_t *list,
    ngx_http_ai_gateway_header_iter_t *it);
/*
 * A request header's name, given in lower case: the length first, inline
 * (most headers differ in it), then the lower-case key that nginx's parser
 * (and set_header()) give each one, with one memcmp(), where
 * ngx_strncasecmp() costs some 15 instructions a byte.
 */
static ngx_inline ngx_uint_t
ngx_http_ai_gateway_header_is(ngx_table_elt_t *h, const char *name,
    size_t len)
{
    return h->key.len == len && ngx_memcmp(h->lowcase_key, name, len) == 0;
}

#define ngx_http_ai_gateway_header_in_is(h, name)                             \
    ngx_http_ai_gateway_header_is(h, name, sizeof(name) - 1)

u_char *ngx_http_ai_gateway_write_uint(u_char *p, uint64_t n);
u_char *ngx_http_ai_gateway_write_int(u_char *p, int64_t n);
uint32_t ngx_http_ai_gateway_hash(const u_char *p, size_t len);

ngx_int_t ngx_http_ai_gateway_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_ai_gateway_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
ngx_int_t ngx_http_ai_gateway_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *code, ngx_str_t *message);
/* the proxied request asks for uncompressed answers (they are read) */
void ngx_http_ai_gateway_identity_encoding(ngx_http_request_t *r);
void ngx_http_ai_gateway_untranslate(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_user_header(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *name);
void ngx_http_ai_gateway_tree_exit(void);
ngx_str_t ngx_http_ai_gateway_endpoint_name(ngx_http_request_t *r,
    ngx_http_ai_gateway_loc_conf_t *lcf);
ngx_str_t *ngx_http_ai_gateway_user(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
uint64_t ngx_http_ai_gateway_input_chars(ngx_http_ai_gateway_ctx_t *ctx);
ngx_str_t *ngx_http_ai_gateway_api_name(ngx_http_ai_gateway_api_e api);

ngx_int_t ngx_http_ai_gateway_replace_body(ngx_http_request_t *r,
    u_char *body, size_t len);

ngx_int_t ngx_http_ai_gateway_add_variables(ngx_conf_t *cf);

char *ngx_http_ai_gateway_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_models(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_model_map(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_upstream_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_ai_gateway_provider_access(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_provider_check(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_provider_prepare(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_translate_header(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_translate_body(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out);
void ngx_http_ai_gateway_translate_json(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *p, size_t len);
ngx_int_t ngx_http_ai_gateway_translate_event(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *name, size_t len);
ngx_int_t ngx_http_ai_gateway_append(ngx_http_request_t *r, ngx_buf_t **bp,
    const u_char *p, size_t len, size_t max);
char *ngx_http_ai_gateway_conf_read_file(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *out, size_t max);

char *ngx_http_ai_gateway_guardrails(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_ai_gateway_guard_input(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_guard_safety(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
void ngx_http_ai_gateway_guard_exit(void);
void ngx_http_ai_gateway_metrics_exit(void);

ngx_int_t ngx_http_ai_gateway_guard_safety_ask(ngx_http_request_t *r,
    ngx_str_t *location, ngx_str_t *body, ngx_http_ai_gateway_safety_t *st);
ngx_int_t ngx_http_ai_gateway_guard_safety_body(ngx_pool_t *pool,
    void *texts, ngx_str_t *body);
ngx_uint_t ngx_http_ai_gateway_guard_waiting(ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_guard_safety_read_body(ngx_http_request_t *r,
    ngx_chain_t *in);
void ngx_http_ai_gateway_guard_note(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const char *direction,
    const char *category, const char *action);
void ngx_http_ai_gateway_guard_mask_note(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const char *direction, unsigned types);
ngx_int_t ngx_http_ai_gateway_guard_header(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_guard_body(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out);
ngx_int_t ngx_http_ai_gateway_guard_event(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *name, size_t name_len,
    ngx_uint_t hide);
ngx_int_t ngx_http_ai_gateway_guard_keepalive(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_guard_data(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, const u_char *p, size_t len);
void ngx_http_ai_gateway_guard_update(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_chain_t **out);
ngx_uint_t ngx_http_ai_gateway_guard_held(ngx_http_ai_gateway_ctx_t *ctx);
ngx_uint_t ngx_http_ai_gateway_guard_busy(ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_next_header(ngx_http_request_t *r);
void ngx_http_ai_gateway_resp_results(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_out_chain(ngx_http_request_t *r,
    ngx_chain_t **free, ngx_http_ai_gateway_translate_buf_t *o,
    ngx_uint_t last, ngx_uint_t flush, ngx_buf_tag_t tag, ngx_chain_t **out);
void *ngx_http_ai_gateway_pool_alloc(void *pool, size_t size);
void *ngx_http_ai_gateway_pool_resize(void *ctx, void *old, size_t old_size,
    size_t new_size);

ngx_int_t ngx_http_ai_gateway_filter_init(ngx_conf_t *cf);

char *ngx_http_ai_gateway_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_ai_gateway_default_zone(ngx_conf_t *cf,
    ngx_http_ai_gateway_main_conf_t *mcf);
ngx_int_t ngx_http_ai_gateway_limit(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_int_t ngx_http_ai_gateway_limit_headers(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
void ngx_http_ai_gateway_limit_settle(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx);
ngx_str_t *ngx_http_ai_gateway_limit_status(ngx_http_ai_gateway_ctx_t *ctx,
    ngx_uint_t with_type, ngx_pool_t *pool);

ngx_int_t ngx_http_ai_gateway_limit_redis_init(ngx_conf_t *cf,
    ngx_http_ai_gateway_main_conf_t *mcf);
ngx_int_t ngx_http_ai_gateway_limit_redis_admit(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, uint64_t force);
void ngx_http_ai_gateway_limit_redis_settle(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, int64_t delta);
void ngx_http_ai_gateway_limit_redis_exit(void);
void ngx_http_ai_gateway_stream_write(ngx_http_ai_gateway_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len);

char *ngx_http_ai_gateway_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ai_gateway_price(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void *ngx_http_ai_gateway_metrics_init_zone(ngx_slab_pool_t *pool);
ngx_atomic_t *ngx_http_ai_gateway_metrics_redis_counter(ngx_shm_zone_t *zone,
    ngx_uint_t dropped);
u_char *ngx_http_ai_gateway_format_usd(u_char *p, int64_t pico);

ngx_int_t ngx_http_ai_gateway_log_handler(ngx_http_request_t *r);
void ngx_http_ai_gateway_request_id_init(ngx_cycle_t *cycle);


/* the request's token counts as they stand: the provider's or estimates */
typedef struct {
    int64_t                      input;
    int64_t                      output;
    int64_t                      total;
    int64_t                      cached_input;    /* -1: not known */
    int64_t                      reasoning;       /* -1: not known */
    ngx_uint_t                   source;
} ngx_http_ai_gateway_tokens_t;

#define NGX_HTTP_AI_GATEWAY_SOURCE_PROVIDER  0
#define NGX_HTTP_AI_GATEWAY_SOURCE_ESTIMATE  1
#define NGX_HTTP_AI_GATEWAY_SOURCE_NONE      2

void ngx_http_ai_gateway_tokens(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_tokens_t *t);
int64_t ngx_http_ai_gateway_cost(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_tokens_t *t);
void ngx_http_ai_gateway_metrics_count(ngx_http_request_t *r,
    ngx_http_ai_gateway_ctx_t *ctx, ngx_http_ai_gateway_tokens_t *t,
    int64_t cost);


extern ngx_module_t  ngx_http_ai_gateway_module;
extern ngx_http_request_body_filter_pt  ngx_http_ai_gateway_next_request_body_filter;


#endif /* _NGX_HTTP_AI_GATEWAY_MODULE_H_INCLUDED_ */
