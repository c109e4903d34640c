
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * hiredis 0.14's asynchronous API on nginx's event loop.  The rules kept
 * here, each for a bug seen in other adapters:
 *
 *   - hiredis owns the socket: it closes it in redisFree(), after our
 *     cleanup hook has removed the events and returned the nginx
 *     connection (with fd -1, so that a stale event finds nothing);
 *   - events are level-triggered: hiredis reads 16 KiB a call, and an
 *     edge-triggered read would leave the rest of a large reply unread;
 *   - writes are not registered with epoll for each command: the first
 *     command of a turn of the event loop posts the write event, so that
 *     the commands of all the requests of that turn go out in one write()
 *     after it; only a socket that is full (or still connecting) waits
 *     for epoll;
 *   - the context can be freed inside redisAsyncHandleRead(): nothing is
 *     touched after it, and every pointer to a context is dropped in the
 *     connect and disconnect callbacks;
 *   - hiredis 0.14 has no timeouts: the connect timeout is a timer of
 *     ours, command timeouts are the callers' (who stop waiting, and
 *     whose handlers drop a late answer);
 *   - a caller's handler may be called from inside hiredis, even inside
 *     a call of ours that frees the context: callers defer their work.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/async.h>
#include <openssl/evp.h>

#include "ngx_http_ai_gateway_redis.h"
#include "ngx_http_ai_gateway_json.h"


/* ngx_http_ai_gateway_provider.c: a file read whole at start-up */
char *ngx_http_ai_gateway_conf_read_file(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *out, size_t max);


#define NGX_HTTP_AI_GATEWAY_REDIS_BACKOFF_MIN   100
#define NGX_HTTP_AI_GATEWAY_REDIS_BACKOFF_MAX   2000
#define NGX_HTTP_AI_GATEWAY_REDIS_CONNECT_MIN   1000


/*
 * A command, formatted (RESP) by us: hiredis's own formatting of an argv
 * costs more than the rest of an admission.  For EVALSHA, "rest" is where
 * the arguments after the script's SHA-1 start, to send EVAL instead.
 */

struct ngx_http_ai_gateway_redis_op_s {
    ngx_http_ai_gateway_redis_handler_pt   handler;   /* NULL: nobody waits */
    void                                  *data;
    ngx_http_ai_gateway_redis_script_t    *script;
    int                                    argc;
    unsigned                               retried:1;
    size_t                                 len;
    size_t                                 rest;
    u_char                                 cmd[1];
};


typedef struct {
    ngx_http_ai_gateway_redis_conf_t      *conf;
    redisAsyncContext                     *ac;
    /* the context exit_process() is writing out, until hiredis frees it */
    redisAsyncContext                     *exit_ac;
    ngx_log_t                             *log;
    ngx_event_t                            reconnect;
    ngx_event_t                            connect_timer;
    ngx_msec_t                             backoff;
    /* when Redis last sent bytes, or the link last owed nothing (see
     * timed_out()) */
    ngx_msec_t                             alive;
    ngx_uint_t                             setup_pending;
    unsigned                               ready:1;
    unsigned                               down_logged:1;
    unsigned                               auth_logged:1;
    unsigned                               exiting:1;
    unsigned                               in_write:1;
} ngx_http_ai_gateway_redis_link_t;


static void ngx_http_ai_gateway_redis_connect(
    ngx_http_ai_gateway_redis_link_t *link);
static void ngx_http_ai_gateway_redis_setup(
    ngx_http_ai_gateway_redis_link_t *link);
static void ngx_http_ai_gateway_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_ai_gateway_redis_lost(
    ngx_http_ai_gateway_redis_link_t *link, const char *reason);
static void ngx_http_ai_gateway_redis_drop(
    ngx_http_ai_gateway_redis_link_t *link, const char *reason);
static void ngx_http_ai_gateway_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_ai_gateway_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_ai_gateway_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static u_char *ngx_http_ai_gateway_redis_number(u_char *p, size_t n);
static ngx_int_t ngx_http_ai_gateway_redis_resend(redisAsyncContext *ac,
    ngx_http_ai_gateway_redis_op_t *op);
static void ngx_http_ai_gateway_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_ai_gateway_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_ai_gateway_redis_read_handler(ngx_event_t *ev);
static void ngx_http_ai_gateway_redis_write_handler(ngx_event_t *ev);
static void ngx_http_ai_gateway_redis_add_read(void *privdata);
static void ngx_http_ai_gateway_redis_del_read(void *privdata);
static void ngx_http_ai_gateway_redis_add_write(void *privdata);
static void ngx_http_ai_gateway_redis_del_write(void *privdata);
static void ngx_http_ai_gateway_redis_cleanup(void *privdata);
static char *ngx_http_ai_gateway_redis_address(ngx_conf_t *cf,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *value);
static char *ngx_http_ai_gateway_redis_password_file(ngx_conf_t *cf,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *path);


static ngx_http_ai_gateway_redis_link_t  ngx_http_ai_gateway_redis_link;


static ngx_conf_enum_t  ngx_http_ai_gateway_redis_on_error[] = {
    { ngx_string("local"), NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_LOCAL },
    { ngx_string("allow"), NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_ALLOW },
    { ngx_string("deny"), NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_DENY },
    { ngx_null_string, 0 }
};


char *
ngx_http_ai_gateway_redis_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_ai_gateway_redis_conf_t **rcfp)
{
    char                              *rv;
    ngx_int_t                          n;
    ngx_str_t                         *value, v;
    ngx_uint_t                         i, j;
    ngx_http_ai_gateway_redis_conf_t  *rcf;

    if (*rcfp != NULL) {
        return "is duplicate";
    }

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_redis_conf_t));
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&rcf->scripts, cf->pool, 2,
                       sizeof(ngx_http_ai_gateway_redis_script_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rcf->timeout = 100;
    rcf->on_error = NGX_HTTP_AI_GATEWAY_REDIS_ON_ERROR_LOCAL;
    ngx_str_set(&rcf->prefix, "aigw:");

    value = cf->args->elts;

    rv = ngx_http_ai_gateway_redis_address(cf, rcf, &value[1]);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rcf->password.data = value[i].data + 9;
            rcf->password.len = value[i].len - 9;

            if (rcf->password.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            v.data = value[i].data + 14;
            v.len = value[i].len - 14;

            rv = ngx_http_ai_gateway_redis_password_file(cf, rcf, &v);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rcf->db = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rcf->prefix.data = value[i].data + 7;
            rcf->prefix.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            v.data = value[i].data + 8;
            v.len = value[i].len - 8;

            n = ngx_parse_time(&v, 0);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            rcf->timeout = (ngx_msec_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "on_error=", 9) == 0) {
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

            for (j = 0; ngx_http_ai_gateway_redis_on_error[j].name.len; j++) {
                if (ngx_http_ai_gateway_redis_on_error[j].name.len == v.len
                    && ngx_strncmp(ngx_http_ai_gateway_redis_on_error[j].name
                                   .data, v.data, v.len) == 0)
                {
                    rcf->on_error = ngx_http_ai_gateway_redis_on_error[j].value;
                    break;
                }
            }

            if (ngx_http_ai_gateway_redis_on_error[j].name.len == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    *rcfp = rcf;

    return NGX_CONF_OK;

invalid:

    /* a password is never echoed, not even a wrong one */
    if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty \"password=\" in \"%V\" directive",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


/* "host:port" resolved now, at start-up; "unix:/path" */

static char *
ngx_http_ai_gateway_redis_address(ngx_conf_t *cf,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *value)
{
    u_char     *p;
    ngx_url_t   u;

    rcf->name = *value;

    if (value->len > 5 && ngx_strncmp(value->data, "unix:", 5) == 0) {
        rcf->path.len = value->len - 5;
        rcf->path.data = ngx_pnalloc(cf->pool, rcf->path.len + 1);
        if (rcf->path.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(rcf->path.data, value->data + 5, rcf->path.len);
        rcf->path.data[rcf->path.len] = '\0';

        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
        || u.addrs[0].sockaddr->sa_family == AF_UNIX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address \"%V\" in \"ai_gateway_redis\" "
                           "directive%s%s", value, u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rcf->host.data = p;
    rcf->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                  p, NGX_SOCKADDR_STRLEN, 0);
    p[rcf->host.len] = '\0';

    /* ngx_sock_ntop() writes IPv6 without brackets when port is 0 */
    rcf->port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_CONF_OK;
}


static char *
ngx_http_ai_gateway_redis_password_file(ngx_conf_t *cf,
    ngx_http_ai_gateway_redis_conf_t *rcf, ngx_str_t *path)
{
    char  *rv;

    rv = ngx_http_ai_gateway_conf_read_file(cf, path, &rcf->password, 4096);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* the line end an editor leaves is not part of the password */
    while (rcf->password.len
           && (rcf->password.data[rcf->password.len - 1] == '\n'
               || rcf->password.data[rcf->password.len - 1] == '\r'))
    {
        rcf->password.len--;
    }

    if (rcf->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ai_gateway_redis: password_file \"%V\" is empty",
                           path);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_http_ai_gateway_redis_script_t *
ngx_http_ai_gateway_redis_add_script(ngx_conf_t *cf,
    ngx_http_ai_gateway_redis_conf_t *rcf, const char *text)
{
    u_char                              md[EVP_MAX_MD_SIZE];
    unsigned int                        len;
    ngx_http_ai_gateway_redis_script_t *s;

    s = ngx_array_push(&rcf->scripts);
    if (s == NULL) {
        return NULL;
    }

    s->text.data = (u_char *) text;
    s->text.len = ngx_strlen(text);

    /* EVALSHA names a script by the SHA-1 of its text, as Redis computes */
    if (EVP_Digest(s->text.data, s->text.len, md, &len, EVP_sha1(), NULL)
        != 1)
    {
        return NULL;
    }

    ngx_hex_dump(s->sha1, md, len);

    return s;
}


ngx_int_t
ngx_http_ai_gateway_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_ai_gateway_redis_conf_t *rcf)
{
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    ngx_memzero(link, sizeof(ngx_http_ai_gateway_redis_link_t));

    link->conf = rcf;
    link->log = cycle->log;
    link->backoff = NGX_HTTP_AI_GATEWAY_REDIS_BACKOFF_MIN;

    link->reconnect.handler = ngx_http_ai_gateway_redis_reconnect_handler;
    link->reconnect.data = link;
    link->reconnect.log = cycle->log;
    link->reconnect.cancelable = 1;

    link->connect_timer.handler = ngx_http_ai_gateway_redis_connect_timeout;
    link->connect_timer.data = link;
    link->connect_timer.log = cycle->log;
    link->connect_timer.cancelable = 1;

    ngx_http_ai_gateway_redis_connect(link);

    return NGX_OK;
}


void
ngx_http_ai_gateway_redis_exit_process(void)
{
    redisAsyncContext                 *ac;
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (link->conf == NULL) {
        return;
    }

    link->exiting = 1;

    if (link->reconnect.timer_set) {
        ngx_del_timer(&link->reconnect);
    }

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    ac = link->ac;
    link->ac = NULL;

    if (ac) {
        link->exit_ac = ac;

        if (ac->c.flags & REDIS_CONNECTED) {
            /* what the socket takes now: the last settlements; a write
             * that fails makes hiredis free the context itself (and call
             * on_disconnect(), which forgets exit_ac) */
            link->in_write = 1;
            redisAsyncHandleWrite(ac);
            link->in_write = 0;
        }

        if (link->exit_ac) {
            link->exit_ac = NULL;
            redisAsyncFree(ac);
        }
    }
}


ngx_uint_t
ngx_http_ai_gateway_redis_ready(void)
{
    return ngx_http_ai_gateway_redis_link.ac != NULL
           && ngx_http_ai_gateway_redis_link.ready;
}


ngx_uint_t
ngx_http_ai_gateway_redis_linked(void)
{
    return ngx_http_ai_gateway_redis_link.ac != NULL;
}


/*
 * A command went unanswered for its timeout.  A Redis that is slow still
 * answers now and then; one behind a partition, or one that drops packets,
 * answers nothing, and hiredis would keep every command sent to it (and
 * the requests would each wait out the timeout) until TCP gives up, many
 * minutes later.  So the link is given up, as if Redis had closed it, once
 * it has owed an answer without giving any for three timeouts (at least
 * a second): on_error applies at once, and it is opened again with the
 * usual backoff.  May free the commands on their way: the caller touches
 * none after it.
 */

void
ngx_http_ai_gateway_redis_timed_out(void)
{
    ngx_msec_t                         silent;
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (link->ac == NULL || link->exiting) {
        return;
    }

    silent = ngx_current_msec - link->alive;

    if (silent >= ngx_max(3 * link->conf->timeout, 1000)) {
        ngx_http_ai_gateway_redis_drop(link, "no answer to its commands for "
                                             "three timeouts");
    }
}


static void
ngx_http_ai_gateway_redis_connect(ngx_http_ai_gateway_redis_link_t *link)
{
    redisAsyncContext                 *ac;
    ngx_connection_t                  *c;
    ngx_http_ai_gateway_redis_conf_t  *rcf;

    rcf = link->conf;

    if (rcf->path.len) {
        ac = redisAsyncConnectUnix((char *) rcf->path.data);

    } else {
        /* a numeric address: getaddrinfo() does no lookup */
        ac = redisAsyncConnect((char *) rcf->host.data, rcf->port);
    }

    if (ac == NULL) {
        ngx_http_ai_gateway_redis_lost(link, "out of memory");
        return;
    }

    if (ac->err) {
        ngx_http_ai_gateway_redis_lost(link, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, link->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_ai_gateway_redis_lost(link, "no free connection");
        return;
    }

    c->data = ac;
    c->read->handler = ngx_http_ai_gateway_redis_read_handler;
    c->write->handler = ngx_http_ai_gateway_redis_write_handler;
    c->read->log = link->log;
    c->write->log = link->log;

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_ai_gateway_redis_add_read;
    ac->ev.delRead = ngx_http_ai_gateway_redis_del_read;
    ac->ev.addWrite = ngx_http_ai_gateway_redis_add_write;
    ac->ev.delWrite = ngx_http_ai_gateway_redis_del_write;
    ac->ev.cleanup = ngx_http_ai_gateway_redis_cleanup;

    link->ac = ac;
    link->ready = 0;

    /* this one also waits for the socket to become writable */
    redisAsyncSetConnectCallback(ac, ngx_http_ai_gateway_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_ai_gateway_redis_on_disconnect);

    ngx_add_timer(&link->connect_timer,
                  ngx_max(rcf->timeout, NGX_HTTP_AI_GATEWAY_REDIS_CONNECT_MIN));

    /* hiredis keeps these until the socket connects: requests queue after */
    ngx_http_ai_gateway_redis_setup(link);
}


static void
ngx_http_ai_gateway_redis_setup(ngx_http_ai_gateway_redis_link_t *link)
{
    u_char                               db[NGX_INT_T_LEN];
    size_t                               len[3];
    ngx_uint_t                           i;
    const char                          *argv[3];
    ngx_http_ai_gateway_redis_conf_t    *rcf;
    ngx_http_ai_gateway_redis_script_t  *s;

    rcf = link->conf;
    link->setup_pending = 0;
    link->alive = ngx_current_msec;

    if (rcf->password.len) {
        argv[0] = "AUTH";
        len[0] = 4;
        argv[1] = (char *) rcf->password.data;
        len[1] = rcf->password.len;

        if (redisAsyncCommandArgv(link->ac,
                                  ngx_http_ai_gateway_redis_setup_reply,
                                  (void *) "AUTH", 2, argv, len)
            == REDIS_OK)
        {
            link->setup_pending++;
        }
    }

    if (rcf->db) {
        argv[0] = "SELECT";
        len[0] = 6;
        argv[1] = (char *) db;
        len[1] = ngx_sprintf(db, "%i", rcf->db) - db;

        if (redisAsyncCommandArgv(link->ac,
                                  ngx_http_ai_gateway_redis_setup_reply,
                                  (void *) "SELECT", 2, argv, len)
            == REDIS_OK)
        {
            link->setup_pending++;
        }
    }

    s = rcf->scripts.elts;

    for (i = 0; i < rcf->scripts.nelts; i++) {
        argv[0] = "SCRIPT";
        len[0] = 6;
        argv[1] = "LOAD";
        len[1] = 4;
        argv[2] = (char *) s[i].text.data;
        len[2] = s[i].text.len;

        if (redisAsyncCommandArgv(link->ac,
                                  ngx_http_ai_gateway_redis_setup_reply,
                                  (void *) "SCRIPT LOAD", 3, argv, len)
            == REDIS_OK)
        {
            link->setup_pending++;
        }
    }

    if (link->setup_pending == 0) {
        /* nothing to wait for: ready when connected */
        link->setup_pending = 1;
        argv[0] = "PING";
        len[0] = 4;

        if (redisAsyncCommandArgv(link->ac,
                                  ngx_http_ai_gateway_redis_setup_reply,
                                  (void *) "PING", 1, argv, len)
            != REDIS_OK)
        {
            link->setup_pending = 0;
        }
    }
}


static void
ngx_http_ai_gateway_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    const char                        *what = privdata;
    redisReply                        *reply = r;
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (reply == NULL || ac != link->ac) {
        /* the link went: its loss was (or will be) told */
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        if (!link->auth_logged || ngx_strcmp(what, "AUTH") != 0) {
            ngx_log_error(NGX_LOG_ERR, link->log, 0,
                          "ai_gateway: redis %V: %s failed: %*s",
                          &link->conf->name, what, (size_t) reply->len,
                          reply->str);
        }

        if (ngx_strcmp(what, "AUTH") == 0) {
            link->auth_logged = 1;
        }

        ngx_http_ai_gateway_redis_drop(link, "set-up failed");
        return;
    }

    if (ngx_strcmp(what, "AUTH") == 0) {
        link->auth_logged = 0;
    }

    if (--link->setup_pending > 0) {
        return;
    }

    link->ready = 1;
    link->backoff = NGX_HTTP_AI_GATEWAY_REDIS_BACKOFF_MIN;

    if (link->down_logged) {
        link->down_logged = 0;
        ngx_log_error(NGX_LOG_WARN, link->log, 0,
                      "ai_gateway: redis %V answers again: limits are "
                      "counted there again", &link->conf->name);

    } else {
        ngx_log_error(NGX_LOG_INFO, link->log, 0,
                      "ai_gateway: redis %V is ready", &link->conf->name);
    }
}


/* we give the link up: hiredis answers its pending commands with NULL */

static void
ngx_http_ai_gateway_redis_drop(ngx_http_ai_gateway_redis_link_t *link,
    const char *reason)
{
    redisAsyncContext  *ac;

    ac = link->ac;
    if (ac == NULL) {
        return;
    }

    /* first, so that the callbacks below see the link as gone */
    link->ac = NULL;

    ngx_http_ai_gateway_redis_lost(link, reason);

    /* inside a callback, hiredis frees it when the callback returns */
    redisAsyncFree(ac);
}


static void
ngx_http_ai_gateway_redis_lost(ngx_http_ai_gateway_redis_link_t *link,
    const char *reason)
{
    static const char  *policy[] = {
        "limits are counted in this node's shared memory",
        "requests are let through unlimited",
        "limited requests are refused with 503"
    };

    link->ac = NULL;
    link->ready = 0;

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    if (link->exiting) {
        return;
    }

    if (!link->down_logged) {
        link->down_logged = 1;
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "ai_gateway: redis %V is unavailable (%s): %s until "
                      "it answers again (on_error)", &link->conf->name,
                      reason ? reason : "connection lost",
                      policy[link->conf->on_error]);
    }

    if (!link->reconnect.timer_set) {
        ngx_add_timer(&link->reconnect, link->backoff);
        link->backoff = ngx_min(link->backoff * 2,
                                NGX_HTTP_AI_GATEWAY_REDIS_BACKOFF_MAX);
    }
}


static void
ngx_http_ai_gateway_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (ac != link->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_ai_gateway_redis_lost(link, ac->errstr);
        return;
    }

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }
}


static void
ngx_http_ai_gateway_redis_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (ac == link->exit_ac) {
        /* freed by hiredis while the worker exits: not to be freed again */
        link->exit_ac = NULL;
        return;
    }

    if (ac != link->ac) {
        /* one we dropped ourselves */
        return;
    }

    ngx_http_ai_gateway_redis_lost(link, ac->err ? ac->errstr
                                                 : "connection closed");
}


static void
ngx_http_ai_gateway_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_ai_gateway_redis_link_t  *link = ev->data;

    if (link->ac == NULL && !link->exiting) {
        ngx_http_ai_gateway_redis_connect(link);
    }
}


static void
ngx_http_ai_gateway_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_ai_gateway_redis_link_t  *link = ev->data;

    ngx_http_ai_gateway_redis_drop(link, "connect timed out");
}


ngx_http_ai_gateway_redis_op_t *
ngx_http_ai_gateway_redis_send(ngx_http_ai_gateway_redis_script_t *script,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_ai_gateway_redis_handler_pt handler, void *data)
{
    int                                i;
    u_char                            *p;
    size_t                             size;
    ngx_http_ai_gateway_redis_op_t    *op;
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (link->ac == NULL) {
        return NULL;
    }

    size = sizeof("*\r\n") + NGX_INT_T_LEN
           + sizeof("$7\r\nEVALSHA\r\n$40\r\n\r\n") + 40;

    for (i = 0; i < argc; i++) {
        size += sizeof("$\r\n\r\n") + NGX_SIZE_T_LEN + argvlen[i];
    }

    /* one block, freed when the reply comes: it outlives any request */
    op = ngx_alloc(offsetof(ngx_http_ai_gateway_redis_op_t, cmd) + size,
                   link->log);
    if (op == NULL) {
        return NULL;
    }

    op->handler = handler;
    op->data = data;
    op->script = script;
    op->argc = argc + (script ? 2 : 0);
    op->retried = 0;

    p = op->cmd;
    *p++ = '*';
    p = ngx_http_ai_gateway_redis_number(p, op->argc);
    *p++ = CR; *p++ = LF;

    if (script) {
        p = ngx_cpymem(p, "$7\r\nEVALSHA\r\n$40\r\n",
                       sizeof("$7\r\nEVALSHA\r\n$40\r\n") - 1);
        p = ngx_cpymem(p, script->sha1, 40);
        *p++ = CR; *p++ = LF;
    }

    op->rest = p - op->cmd;

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_http_ai_gateway_redis_number(p, argvlen[i]);
        *p++ = CR; *p++ = LF;
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR; *p++ = LF;
    }

    op->len = p - op->cmd;

    if (link->ac->replies.head == NULL) {
        /* nothing was owed: the wait for an answer starts now */
        link->alive = ngx_current_msec;
    }

    if (redisAsyncFormattedCommand(link->ac, ngx_http_ai_gateway_redis_reply,
                                   op, (char *) op->cmd, op->len)
        != REDIS_OK)
    {
        ngx_free(op);
        return NULL;
    }

    return op;
}


static u_char *
ngx_http_ai_gateway_redis_number(u_char *p, size_t n)
{
    u_char   buf[NGX_INT64_LEN];
    u_char  *q;

    q = ngx_http_ai_gateway_json_digits(buf + sizeof(buf), n);

    return ngx_cpymem(p, q, buf + sizeof(buf) - q);
}


/* after NOSCRIPT: the same arguments after EVAL and the script's text */

static ngx_int_t
ngx_http_ai_gateway_redis_resend(redisAsyncContext *ac,
    ngx_http_ai_gateway_redis_op_t *op)
{
    int        rc;
    u_char    *cmd, *p;
    size_t     size;
    ngx_str_t *text;

    text = &op->script->text;

    size = sizeof("*\r\n$4\r\nEVAL\r\n$\r\n\r\n") + 2 * NGX_SIZE_T_LEN
           + text->len + op->len - op->rest;

    cmd = ngx_alloc(size, ngx_http_ai_gateway_redis_link.log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    p = cmd;
    *p++ = '*';
    p = ngx_http_ai_gateway_redis_number(p, op->argc);
    p = ngx_cpymem(p, "\r\n$4\r\nEVAL\r\n$", sizeof("\r\n$4\r\nEVAL\r\n$") - 1);
    p = ngx_http_ai_gateway_redis_number(p, text->len);
    *p++ = CR; *p++ = LF;
    p = ngx_cpymem(p, text->data, text->len);
    *p++ = CR; *p++ = LF;
    p = ngx_cpymem(p, op->cmd + op->rest, op->len - op->rest);

    /* hiredis copies the command into its output buffer */
    rc = redisAsyncFormattedCommand(ac, ngx_http_ai_gateway_redis_reply, op,
                                    (char *) cmd, p - cmd);
    ngx_free(cmd);

    return (rc == REDIS_OK) ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_ai_gateway_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                        *reply = r;
    ngx_http_ai_gateway_redis_op_t    *op = privdata;
    ngx_http_ai_gateway_redis_link_t  *link;

    link = &ngx_http_ai_gateway_redis_link;

    if (reply && reply->type == REDIS_REPLY_ERROR && op->script
        && !op->retried && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && ac == link->ac)
    {
        /* SCRIPT FLUSH, or a restart: send the text, Redis caches it */
        op->retried = 1;

        ngx_log_error(NGX_LOG_NOTICE, link->log, 0,
                      "ai_gateway: redis %V lost a script (NOSCRIPT): "
                      "sending it again", &link->conf->name);

        if (ngx_http_ai_gateway_redis_resend(ac, op) == NGX_OK) {
            return;
        }

        reply = NULL;
    }

    /* the callers count their own failures; nobody counts these */
    if ((reply == NULL || reply->type == REDIS_REPLY_ERROR)
        && op->handler == NULL
        && link->conf && link->conf->errors)
    {
        (void) ngx_atomic_fetch_add(link->conf->errors, 1);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "ai_gateway: redis %V: %*s", &link->conf->name,
                      (size_t) reply->len, reply->str);
    }

    if (op->handler) {
        op->handler(op->data, reply);
    }

    ngx_free(op);
}


static void
ngx_http_ai_gateway_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    /* Redis answers (or closes): the link is alive, for timed_out() */
    ngx_http_ai_gateway_redis_link.alive = ngx_current_msec;

    /* may free the context and the connection: nothing after it */
    redisAsyncHandleRead(c->data);
}


static void
ngx_http_ai_gateway_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_http_ai_gateway_redis_link.in_write = 1;

    /* may free the context and the connection too */
    redisAsyncHandleWrite(c->data);

    ngx_http_ai_gateway_redis_link.in_write = 0;
}


static void
ngx_http_ai_gateway_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_ai_gateway_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_ai_gateway_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    redisAsyncContext  *ac;

    ac = c->data;

    if (c->write->active) {
        return;
    }

    if (!(ac->c.flags & REDIS_CONNECTED)
        || ngx_http_ai_gateway_redis_link.in_write)
    {
        /* connecting, or the socket took only part of the output */
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
        return;
    }

    if (!c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }
}


static void
ngx_http_ai_gateway_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis closes the socket after this: we only give our side back */

static void
ngx_http_ai_gateway_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;

    ngx_free_connection(c);
}
