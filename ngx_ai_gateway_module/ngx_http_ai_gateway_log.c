
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Record sinks: JSON Lines files written with buffered, batched I/O.
 *
 * A sink is one file and one buffer, whatever the number of directives
 * naming its path.  The file is an entry of cycle->open_files, so nginx
 * opens it (O_APPEND) with the others, reopens it on USR1 and calls the
 * entry's flush handler before a reopen and when a worker exits (the exit
 * handler of ngx_conf_module).  The buffer is the entry's "data".
 *
 * The entry is our own: ngx_conf_open_file() must never hand it to another
 * module.  The access log, for one, takes any non-NULL file->data of a file
 * it writes to for its own buffer, even when it has none itself, so an
 * "access_log" on the same path as a sink would write through our struct.
 * The entry's name therefore counts the terminating null in its length:
 * the name opens the same file, but it is never equal to a configured one.
 * Sinks find each other by their flush handler and the name.  A sink and
 * another module's log on one path get one descriptor each; both append
 * whole lines.
 *
 * The buffer is written when a record does not fit in it, when the flush
 * timer set by the first record in the empty buffer fires, before a reopen
 * and at the worker's exit.  Each write() holds whole records only.
 *
 * The Redis stream sink ("ai_gateway_usage_log redis stream=NAME") appends
 * each record with XADD, one stream field a record field, and does not
 * wait for the answer; what Redis does not take is counted and logged.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_ai_gateway_module.h"


#define NGX_HTTP_AI_GATEWAY_SINK_BUFFER  (64 * 1024)
#define NGX_HTTP_AI_GATEWAY_SINK_FLUSH   1000


struct ngx_http_ai_gateway_sink_s {
    ngx_open_file_t            *file;

    /* start == NULL: unbuffered */
    u_char                     *start;
    u_char                     *pos;
    u_char                     *last;
    ngx_uint_t                  records;     /* in the buffer */

    ngx_msec_t                  flush;
    ngx_event_t                 event;

    /* write errors are logged once a second at most */
    time_t                      error_time;
    ngx_uint_t                  dropped;     /* since the last one logged */
};


static ngx_http_ai_gateway_sink_t *ngx_http_ai_gateway_sink_add(
    ngx_conf_t *cf, ngx_str_t *path, size_t size, ngx_msec_t flush);
static void ngx_http_ai_gateway_sink_flush_file(ngx_open_file_t *file,
    ngx_log_t *log);
static void ngx_http_ai_gateway_sink_flush_handler(ngx_event_t *ev);
static void ngx_http_ai_gateway_sink_write_fd(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, u_char *buf, size_t len, ngx_uint_t records);


char *
ngx_http_ai_gateway_sink_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_ai_gateway_sink_t **sink, char **extra)
{
    u_char      *eq;
    size_t       size;
    ssize_t      n;
    ngx_str_t   *value, s;
    ngx_uint_t   i, k;
    ngx_msec_t   flush;

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty path in \"%V\" directive", &cmd->name);
        return NGX_CONF_ERROR;
    }

    size = NGX_HTTP_AI_GATEWAY_SINK_BUFFER;
    flush = NGX_HTTP_AI_GATEWAY_SINK_FLUSH;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "buffer=", 7) == 0) {
            s.len = value[i].len - 7;
            s.data = value[i].data + 7;

            if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                size = 0;
                continue;
            }

            n = ngx_parse_size(&s);

            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid buffer size \"%V\" in \"%V\" "
                                   "directive", &s, &cmd->name);
                return NGX_CONF_ERROR;
            }

            size = (size_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "flush=", 6) == 0) {
            s.len = value[i].len - 6;
            s.data = value[i].data + 6;

            flush = ngx_parse_time(&s, 0);

            if (flush == (ngx_msec_t) NGX_ERROR || flush == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid flush time \"%V\" in \"%V\" "
                                   "directive", &s, &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        /* the caller's own "name=value" parameters */

        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (eq && extra) {
            s.len = eq - value[i].data;
            s.data = value[i].data;

            for (k = 0; extra[k]; k++) {
                if (ngx_strlen(extra[k]) == s.len
                    && ngx_strncmp(s.data, extra[k], s.len) == 0)
                {
                    break;
                }
            }

            if (extra[k]) {
                continue;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\" directive",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    *sink = ngx_http_ai_gateway_sink_add(cf, &value[1], size, flush);
    if (*sink == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_http_ai_gateway_sink_t *
ngx_http_ai_gateway_sink_default(ngx_conf_t *cf, ngx_str_t *path)
{
    return ngx_http_ai_gateway_sink_add(cf, path,
                                        NGX_HTTP_AI_GATEWAY_SINK_BUFFER,
                                        NGX_HTTP_AI_GATEWAY_SINK_FLUSH);
}


/*
 * Finds the sink of the path or adds one.  A path named more than once
 * gets the largest of the buffers asked for and the shortest flush time.
 */

static ngx_http_ai_gateway_sink_t *
ngx_http_ai_gateway_sink_add(ngx_conf_t *cf, ngx_str_t *path, size_t size,
    ngx_msec_t flush)
{
    u_char                      *name;
    ngx_str_t                    full;
    ngx_uint_t                   i;
    ngx_list_part_t             *part;
    ngx_open_file_t             *file;
    ngx_http_ai_gateway_sink_t  *sink;

    full = *path;

    if (ngx_conf_full_name(cf->cycle, &full, 0) != NGX_OK) {
        return NULL;
    }

    sink = NULL;

    part = &cf->cycle->open_files.part;
    file = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            file = part->elts;
            i = 0;
        }

        if (file[i].flush == ngx_http_ai_gateway_sink_flush_file
            && file[i].name.len == full.len + 1
            && ngx_strncmp(file[i].name.data, full.data, full.len) == 0)
        {
            sink = file[i].data;
            break;
        }
    }

    if (sink == NULL) {
        sink = ngx_pcalloc(cf->pool, sizeof(ngx_http_ai_gateway_sink_t));
        if (sink == NULL) {
            return NULL;
        }

        name = ngx_pnalloc(cf->pool, full.len + 1);
        if (name == NULL) {
            return NULL;
        }

        ngx_memcpy(name, full.data, full.len);
        name[full.len] = '\0';

        file = ngx_list_push(&cf->cycle->open_files);
        if (file == NULL) {
            return NULL;
        }

        file->fd = NGX_INVALID_FILE;
        file->name.len = full.len + 1;   /* see the comment on top */
        file->name.data = name;
        file->flush = ngx_http_ai_gateway_sink_flush_file;
        file->data = sink;

        sink->file = file;
        sink->flush = flush;

        sink->event.data = sink;
        sink->event.handler = ngx_http_ai_gateway_sink_flush_handler;
        sink->event.log = &cf->cycle->new_log;
        sink->event.cancelable = 1;

    } else if (flush < sink->flush) {
        sink->flush = flush;
    }

    /* while the configuration is read, the buffer is empty */

    if (size > (size_t) (sink->last - sink->start)) {
        sink->start = ngx_pnalloc(cf->pool, size);
        if (sink->start == NULL) {
            return NULL;
        }

        sink->pos = sink->start;
        sink->last = sink->start + size;
    }

    return sink;
}


void
ngx_http_ai_gateway_sink_write(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, u_char *line, size_t len)
{
    u_char  *p;
    size_t   size;

    if (len == 0) {
        return;
    }

    /* a record is a line: the newline is added if the caller left it out */
    size = (line[len - 1] == '\n') ? len : len + 1;

    if (sink->start) {

        if (size > (size_t) (sink->last - sink->pos)) {
            ngx_http_ai_gateway_sink_flush_file(sink->file, log);
        }

        if (size <= (size_t) (sink->last - sink->pos)) {

            if (sink->pos == sink->start) {
                ngx_add_timer(&sink->event, sink->flush);
            }

            p = ngx_cpymem(sink->pos, line, len);

            if (size != len) {
                *p++ = '\n';
            }

            sink->pos = p;
            sink->records++;

            return;
        }

        /* larger than the buffer: the buffer was written, now the record */
    }

    if (size == len) {
        ngx_http_ai_gateway_sink_write_fd(sink, log, line, len, 1);
        return;
    }

    p = ngx_alloc(size, log);
    if (p == NULL) {
        return;
    }

    ngx_memcpy(p, line, len);
    p[len] = '\n';

    ngx_http_ai_gateway_sink_write_fd(sink, log, p, size, 1);

    ngx_free(p);
}


/*
 * Room in the buffer for a record of at most size bytes, written there
 * rather than built elsewhere and copied in: the buffer is written out
 * first when the room is not left.  NULL when the sink has no buffer or
 * the record could be larger than it; the caller then builds the record
 * elsewhere and gives it to sink_write().  Nothing else may be written to
 * the sink before the record is committed.
 */

u_char *
ngx_http_ai_gateway_sink_reserve(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, size_t size)
{
    if (sink->start == NULL || size > (size_t) (sink->last - sink->start)) {
        return NULL;
    }

    if (size > (size_t) (sink->last - sink->pos)) {
        ngx_http_ai_gateway_sink_flush_file(sink->file, log);
    }

    return sink->pos;
}


/* the record written at the reserved place, a whole line, ends at last */

void
ngx_http_ai_gateway_sink_commit(ngx_http_ai_gateway_sink_t *sink,
    u_char *last)
{
    if (last == sink->pos) {
        return;
    }

    if (sink->pos == sink->start) {
        ngx_add_timer(&sink->event, sink->flush);
    }

    sink->pos = last;
    sink->records++;
}


void
ngx_http_ai_gateway_sink_flush(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log)
{
    ngx_http_ai_gateway_sink_flush_file(sink->file, log);
}


/* file->flush: before a reopen, at the worker's exit, and for the above */

static void
ngx_http_ai_gateway_sink_flush_file(ngx_open_file_t *file, ngx_log_t *log)
{
    ngx_http_ai_gateway_sink_t  *sink;

    sink = file->data;

    if (sink->event.timer_set) {
        ngx_del_timer(&sink->event);
    }

    if (sink->pos == sink->start) {
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ai gateway sink flush \"%s\": %ui records, %uz bytes",
                   file->name.data, sink->records,
                   (size_t) (sink->pos - sink->start));

    ngx_http_ai_gateway_sink_write_fd(sink, log, sink->start,
                                      sink->pos - sink->start, sink->records);

    sink->pos = sink->start;
    sink->records = 0;
}


static void
ngx_http_ai_gateway_sink_flush_handler(ngx_event_t *ev)
{
    ngx_http_ai_gateway_sink_t  *sink;

    sink = ev->data;

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "ai gateway sink flush timer");

    ngx_http_ai_gateway_sink_flush_file(sink->file, ev->log);
}


/*
 * One write() of whole records.  On a failure the records are dropped: a
 * retry of the rest of a short write could land after another worker's
 * lines and tear a record apart.
 */

static void
ngx_http_ai_gateway_sink_write_fd(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, u_char *buf, size_t len, ngx_uint_t records)
{
    time_t     now;
    ssize_t    n;
    ngx_err_t  err;

    n = ngx_write_fd(sink->file->fd, buf, len);

    if (n == (ssize_t) len) {
        return;
    }

    err = (n == -1) ? ngx_errno : 0;

    sink->dropped += records;

    now = ngx_time();

    if (now == sink->error_time) {
        return;
    }

    if (n == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      ngx_write_fd_n " to \"%s\" failed, "
                      "%ui records dropped",
                      sink->file->name.data, sink->dropped);

    } else {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      ngx_write_fd_n " to \"%s\" was not fully written: "
                      "%z of %uz bytes, %ui records dropped",
                      sink->file->name.data, n, len, sink->dropped);
    }

    sink->error_time = now;
    sink->dropped = 0;
}


static void ngx_http_ai_gateway_stream_reply(void *data, redisReply *reply);
static void ngx_http_ai_gateway_stream_dropped(ngx_log_t *log);


/* records dropped since the last one Redis took, in this worker */
static ngx_uint_t  ngx_http_ai_gateway_stream_lost;


void
ngx_http_ai_gateway_stream_write(ngx_http_ai_gateway_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len)
{
    int           argc;
    u_char        maxlen[NGX_INT_T_LEN];
    char         *dump;
    json_t       *o, *v;
    size_t       *lens;
    const char   *key, **argv;
    json_error_t  err;

    o = json_loadb((char *) line, len, 0, &err);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        ngx_http_ai_gateway_stream_dropped(log);
        return;
    }

    argv = ngx_alloc((6 + 2 * json_object_size(o))
                     * (sizeof(char *) + sizeof(size_t)), log);
    if (argv == NULL) {
        json_decref(o);
        ngx_http_ai_gateway_stream_dropped(log);
        return;
    }

    lens = (size_t *) (argv + 6 + 2 * json_object_size(o));

    argv[0] = "XADD";
    lens[0] = 4;
    argv[1] = (char *) mcf->usage_stream.data;
    lens[1] = mcf->usage_stream.len;
    argv[2] = "MAXLEN";
    lens[2] = 6;
    argv[3] = "~";
    lens[3] = 1;
    argv[4] = (char *) maxlen;
    lens[4] = ngx_sprintf(maxlen, "%ui", mcf->usage_stream_maxlen) - maxlen;
    argv[5] = "*";
    lens[5] = 1;
    argc = 6;

    /* strings as they are, the rest as JSON text; dumps freed below */
    json_object_foreach(o, key, v) {
        argv[argc] = key;
        lens[argc++] = ngx_strlen(key);

        if (json_is_string(v)) {
            argv[argc] = json_string_value(v);
            lens[argc++] = json_string_length(v);
            continue;
        }

        dump = json_dumps(v, JSON_COMPACT|JSON_ENCODE_ANY);
        if (dump == NULL) {
            argc--;
            continue;
        }

        /* kept alive by the object until json_decref() */
        json_object_set_new(o, key, json_string_nocheck(dump));
        free(dump);

        v = json_object_get(o, key);
        argv[argc] = json_string_value(v);
        lens[argc++] = json_string_length(v);
    }

    if (ngx_http_ai_gateway_redis_send(NULL, argc, argv, lens,
                                       ngx_http_ai_gateway_stream_reply,
                                       ngx_cycle->log)
        == NULL)
    {
        ngx_http_ai_gateway_stream_dropped(log);

        if (mcf->redis->dropped) {
            (void) ngx_atomic_fetch_add(mcf->redis->dropped, 1);
        }
    }

    ngx_free(argv);
    json_decref(o);
}


/* data is the cycle's log: it outlives the request */

static void
ngx_http_ai_gateway_stream_reply(void *data, redisReply *reply)
{
    ngx_log_t  *log = data;

    ngx_http_ai_gateway_main_conf_t  *mcf;

    if (reply != NULL && reply->type != REDIS_REPLY_ERROR) {

        if (ngx_http_ai_gateway_stream_lost) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "ai_gateway: %ui usage records were not delivered "
                          "to the Redis stream", ngx_http_ai_gateway_stream_lost);
            ngx_http_ai_gateway_stream_lost = 0;
        }

        return;
    }

    ngx_http_ai_gateway_stream_dropped(log);

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_ai_gateway_module);

    if (mcf && mcf->redis && mcf->redis->dropped) {
        (void) ngx_atomic_fetch_add(mcf->redis->dropped, 1);
    }
}


static void
ngx_http_ai_gateway_stream_dropped(ngx_log_t *log)
{
    if (ngx_http_ai_gateway_stream_lost++ == 0) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ai_gateway: usage records are not reaching the Redis "
                      "stream: they are counted until it takes them again");
    }
}
