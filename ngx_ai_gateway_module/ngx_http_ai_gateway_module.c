
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Directives, configuration and phase registration.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ai_gateway_module.h"


static void *ngx_http_ai_gateway_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ai_gateway_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_ai_gateway_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ai_gateway_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ai_gateway_max_body(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ai_gateway_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ai_gateway_usage_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ai_gateway_token_reservation(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ai_gateway_inference_log(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ai_gateway_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ai_gateway_usage_stream(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_http_ai_gateway_main_conf_t *mcf);
static ngx_int_t ngx_http_ai_gateway_init_process(ngx_cycle_t *cycle);
static void ngx_http_ai_gateway_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_ai_gateway_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ai_gateway_postconfiguration(ngx_conf_t *cf);


#define NGX_HTTP_AI_GATEWAY_MAX_ENDPOINT_LEN  128


ngx_http_request_body_filter_pt  ngx_http_ai_gateway_next_request_body_filter;


static ngx_conf_num_bounds_t  ngx_http_ai_gateway_max_series_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};


static ngx_command_t  ngx_http_ai_gateway_commands[] = {

    { ngx_string("ai_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, enable),
      NULL },

    { ngx_string("ai_gateway_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ai_gateway_max_body,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, max_body),
      NULL },

    { ngx_string("ai_gateway_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, user),
      NULL },

    { ngx_string("ai_gateway_endpoint"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ai_gateway_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, endpoint),
      NULL },

    { ngx_string("ai_gateway_usage_tracking"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, usage_tracking),
      NULL },

    { ngx_string("ai_gateway_inference_table"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, inference_table),
      NULL },

    { ngx_string("ai_gateway_stream_usage"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, stream_usage),
      NULL },

    { ngx_string("ai_gateway_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ai_gateway_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ai_gateway_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_keys"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ai_gateway_keys,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_models"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_models,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_model_map"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_ai_gateway_model_map,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_upstream_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_upstream_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_guardrails"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_guardrails,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_rate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_ai_gateway_rate_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_require_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, require_user),
      NULL },

    { ngx_string("ai_gateway_token_reservation"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ai_gateway_token_reservation,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_loc_conf_t, token_reservation),
      NULL },

    { ngx_string("ai_gateway_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ai_gateway_metrics,
      0,
      0,
      NULL },

    { ngx_string("ai_gateway_metrics_max_series"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ai_gateway_main_conf_t, max_series),
      &ngx_http_ai_gateway_max_series_bounds },

    { ngx_string("ai_gateway_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ai_gateway_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_usage_log"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_usage_log,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ai_gateway_inference_log"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_ai_gateway_inference_log,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ai_gateway_module_ctx = {
    ngx_http_ai_gateway_preconfiguration,  /* preconfiguration */
    ngx_http_ai_gateway_postconfiguration, /* postconfiguration */

    ngx_http_ai_gateway_create_main_conf,  /* create main configuration */
    ngx_http_ai_gateway_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ai_gateway_create_loc_conf,   /* create location configuration */
    ngx_http_ai_gateway_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_ai_gateway_module = {
    NGX_MODULE_V1,
    &ngx_http_ai_gateway_module_ctx,       /* module context */
    ngx_http_ai_gateway_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ai_gateway_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ai_gateway_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_ai_gateway_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ai_gateway_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->usage_log = NULL;
     *     mcf->inference_log = NULL;
     *     mcf->tracking = 0;
     *     mcf->inference = 0;
     */

    mcf->max_payload = NGX_CONF_UNSET_SIZE;
    mcf->max_series = NGX_CONF_UNSET_UINT;
    mcf->request_id_index = NGX_ERROR;

    return mcf;
}


static char *
ngx_http_ai_gateway_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    ngx_conf_init_size_value(mcf->max_payload,
                             NGX_HTTP_AI_GATEWAY_DEFAULT_MAX_PAYLOAD);
    ngx_conf_init_uint_value(mcf->max_series, 1000);

    return NGX_CONF_OK;
}


static void *
ngx_http_ai_gateway_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ai_gateway_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->user = NULL;
     *     conf->endpoint = { 0, NULL };
     *     conf->limits = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->max_body = NGX_CONF_UNSET_SIZE;
    conf->usage_tracking = NGX_CONF_UNSET;
    conf->inference_table = NGX_CONF_UNSET;
    conf->stream_usage = NGX_CONF_UNSET;
    conf->require_user = NGX_CONF_UNSET;
    conf->token_reservation = NGX_CONF_UNSET;
    conf->keys = NGX_CONF_UNSET_PTR;
    conf->models = NGX_CONF_UNSET_PTR;
    conf->model_map = NGX_CONF_UNSET_PTR;
    conf->upstream_api = NGX_CONF_UNSET_UINT;
    conf->translate_max_tokens = NGX_CONF_UNSET;
    conf->guard_in = NGX_CONF_UNSET_PTR;
    conf->guard_out = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_ai_gateway_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ai_gateway_loc_conf_t *prev = parent;
    ngx_http_ai_gateway_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    /*
     * The core module has merged its own settings of every location before
     * any other module merges, so clcf here is this location's, final.
     */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * A location that uses any ai_gateway_* directive is inspected without
     * "ai_gateway on"; at server and http level they only set defaults, so
     * that static locations beside the AI ones stay untouched.
     */
    if (conf->enable == NGX_CONF_UNSET
        && clcf->name.len != 0
        && (conf->user != NULL
            || conf->endpoint.data != NULL
            || conf->max_body != NGX_CONF_UNSET_SIZE
            || conf->usage_tracking != NGX_CONF_UNSET
            || conf->inference_table != NGX_CONF_UNSET
            || conf->stream_usage != NGX_CONF_UNSET
            || conf->limits != NULL
            || conf->require_user != NGX_CONF_UNSET
            || conf->token_reservation != NGX_CONF_UNSET
            || conf->keys != NGX_CONF_UNSET_PTR
            || conf->models != NGX_CONF_UNSET_PTR
            || conf->model_map != NGX_CONF_UNSET_PTR
            || conf->upstream_api != NGX_CONF_UNSET_UINT
            || conf->guard_in != NGX_CONF_UNSET_PTR
            || conf->guard_out != NGX_CONF_UNSET_PTR))
    {
        conf->enable = 1;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_size_value(conf->max_body, prev->max_body,
                              NGX_HTTP_AI_GATEWAY_DEFAULT_MAX_BODY);
    ngx_conf_merge_str_value(conf->endpoint, prev->endpoint, "");

    ngx_conf_merge_value(conf->usage_tracking, prev->usage_tracking, 0);
    ngx_conf_merge_value(conf->require_user, prev->require_user, 0);
    ngx_conf_merge_value(conf->token_reservation, prev->token_reservation,
                         NGX_HTTP_AI_GATEWAY_DEFAULT_RESERVATION);

    /* a level that sets no limits has all of the level above */
    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    ngx_conf_merge_value(conf->inference_table, prev->inference_table, 0);

    /* unset means "as usage tracking", decided per location at run time */
    if (conf->stream_usage == NGX_CONF_UNSET) {
        conf->stream_usage = prev->stream_usage;
    }

    if (conf->user == NULL) {
        conf->user = prev->user;
    }

    if (conf->user != NULL
        && ngx_http_ai_gateway_user_header(cf, &conf->user->value,
                                           &conf->user_header)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_ptr_value(conf->keys, prev->keys, NULL);
    ngx_conf_merge_ptr_value(conf->models, prev->models, NULL);
    ngx_conf_merge_ptr_value(conf->model_map, prev->model_map, NULL);
    ngx_conf_merge_ptr_value(conf->guard_in, prev->guard_in, NULL);
    ngx_conf_merge_ptr_value(conf->guard_out, prev->guard_out, NULL);

    /* the upstream's API comes with its secret, version and max_tokens */
    if (conf->upstream_api == NGX_CONF_UNSET_UINT) {
        conf->upstream_api = (prev->upstream_api == NGX_CONF_UNSET_UINT)
                             ? NGX_HTTP_AI_GATEWAY_UPSTREAM_OPENAI
                             : prev->upstream_api;
        conf->upstream_secret = prev->upstream_secret;
        conf->anthropic_version = prev->anthropic_version;
        conf->translate_max_tokens = prev->translate_max_tokens;
    }

    if (conf->enable) {
        mcf = ngx_http_conf_get_module_main_conf(cf,
                                                 ngx_http_ai_gateway_module);
        mcf->tracking |= conf->usage_tracking;
        mcf->inference |= conf->inference_table;
    }

    if (conf->enable) {
        /*
         * ai_gateway_max_body is the limit of inspected locations: we
         * enforce it ourselves so that an oversized body gets the OpenAI
         * error shape, not nginx's HTML page for client_max_body_size.
         */
        clcf->client_max_body_size = 0;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ai_gateway_max_body(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (lcf->max_body != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be a size greater than zero",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    lcf->max_body = (size_t) size;

    return NGX_CONF_OK;
}


static char *
ngx_http_ai_gateway_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (lcf->endpoint.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the name goes into records and metrics labels: keep it plain */

    if (value[1].len == 0 || value[1].len > NGX_HTTP_AI_GATEWAY_MAX_ENDPOINT_LEN)
    {
        goto invalid;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9')
              || *p == '_' || *p == '-' || *p == '.' || *p == ':'
              || *p == '/' || *p == '@'))
        {
            goto invalid;
        }
    }

    lcf->endpoint = value[1];

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" directive, it must be "
                       "1 to %d of the characters A-Z a-z 0-9 _ - . : / @",
                       &value[1], &cmd->name,
                       NGX_HTTP_AI_GATEWAY_MAX_ENDPOINT_LEN);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_ai_gateway_token_reservation(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ai_gateway_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->token_reservation != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->token_reservation = ngx_atoi(value[1].data, value[1].len);

    if (lcf->token_reservation == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be a number of tokens", &value[1],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ai_gateway_usage_log(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (value[1].len == 5 && ngx_strncmp(value[1].data, "redis", 5) == 0) {
        return ngx_http_ai_gateway_usage_stream(cf, cmd, mcf);
    }

    if (mcf->usage_log != NULL) {
        return "is duplicate";
    }

    return ngx_http_ai_gateway_sink_conf(cf, cmd, &mcf->usage_log, NULL);
}


/* "ai_gateway_usage_log redis stream=NAME [maxlen=N]": besides a file */

static char *
ngx_http_ai_gateway_usage_stream(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_ai_gateway_main_conf_t *mcf)
{
    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->usage_stream.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mcf->usage_stream_maxlen = 1000000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "stream=", 7) == 0
            && value[i].len > 7)
        {
            mcf->usage_stream.data = value[i].data + 7;
            mcf->usage_stream.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "maxlen=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            mcf->usage_stream_maxlen = n;
            continue;
        }

        goto invalid;
    }

    if (mcf->usage_stream.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V redis\" needs \"stream=NAME\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_ai_gateway_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    return ngx_http_ai_gateway_redis_conf(cf, cmd, &mcf->redis);
}


static ngx_int_t
ngx_http_ai_gateway_init_process(ngx_cycle_t *cycle)
{
    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_http_ai_gateway_request_id_init(cycle);

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_ai_gateway_module);

    if (mcf == NULL || mcf->redis == NULL) {
        return NGX_OK;
    }

    mcf->redis->errors = ngx_http_ai_gateway_metrics_redis_counter(mcf->zone,
                                                                   0);
    mcf->redis->dropped = ngx_http_ai_gateway_metrics_redis_counter(mcf->zone,
                                                                    1);

    return ngx_http_ai_gateway_redis_init_process(cycle, mcf->redis);
}


static void
ngx_http_ai_gateway_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_ai_gateway_limit_redis_exit();
    ngx_http_ai_gateway_redis_exit_process();
    ngx_http_ai_gateway_guard_exit();
    ngx_http_ai_gateway_metrics_exit();
    ngx_http_ai_gateway_tree_exit();
}


static char *
ngx_http_ai_gateway_inference_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ai_gateway_main_conf_t *mcf = conf;

    char        *rv;
    ssize_t      size;
    ngx_str_t   *value;
    ngx_uint_t   i;

    static char  *extra[] = { "max_payload", NULL };

    if (mcf->inference_log != NULL) {
        return "is duplicate";
    }

    rv = ngx_http_ai_gateway_sink_conf(cf, cmd, &mcf->inference_log, extra);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "max_payload=", 12) != 0) {
            continue;
        }

        value[i].data += 12;
        value[i].len -= 12;

        size = ngx_parse_size(&value[i]);

        if (size == NGX_ERROR || size == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid max_payload \"%V\" in \"%V\" "
                               "directive", &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        mcf->max_payload = (size_t) size;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ai_gateway_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_ai_gateway_add_variables(cf);
}


static ngx_int_t
ngx_http_ai_gateway_postconfiguration(ngx_conf_t *cf)
{
    ngx_str_t                         name;
    ngx_http_handler_pt              *h;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_ai_gateway_main_conf_t  *mcf;

    static ngx_str_t  usage_path = ngx_string("logs/ai_usage.jsonl");
    static ngx_str_t  inference_path = ngx_string("logs/ai_inference.jsonl");

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ai_gateway_module);

    /* records go somewhere even when nobody said where */

    if (mcf->tracking && mcf->usage_log == NULL && mcf->usage_stream.len == 0)
    {
        mcf->usage_log = ngx_http_ai_gateway_sink_default(cf, &usage_path);
        if (mcf->usage_log == NULL) {
            return NGX_ERROR;
        }
    }

    if (mcf->inference && mcf->inference_log == NULL) {
        mcf->inference_log = ngx_http_ai_gateway_sink_default(cf,
                                                             &inference_path);
        if (mcf->inference_log == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_ai_gateway_default_zone(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->usage_stream.len && mcf->redis == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ai_gateway_usage_log redis\" needs "
                      "\"ai_gateway_redis\"");
        return NGX_ERROR;
    }

    if (mcf->redis
        && ngx_http_ai_gateway_limit_redis_init(cf, mcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&name, "request_id");

    mcf->request_id_index = ngx_http_get_variable_index(cf, &name);
    if (mcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ai_gateway_log_handler;

    /* model requests that nginx's own checks refuse get records too */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ai_gateway_mark;

    /*
     * The precontent phase runs after nginx's access checks (auth_basic,
     * allow/deny, auth_request), so a body is read and judged only for
     * requests that were let in; it is where the mirror module reads too.
     */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ai_gateway_handler;

    ngx_http_ai_gateway_next_request_body_filter =
                                              ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_ai_gateway_request_body_filter;

    return ngx_http_ai_gateway_filter_init(cf);
}
