
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * Record sinks: JSON Lines files written with buffered, batched I/O.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_LOG_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_LOG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct ngx_http_ai_gateway_sink_s  ngx_http_ai_gateway_sink_t;


/*
 * Parses "PATH [buffer=SIZE] [flush=TIME]" from cf->args starting at
 * argument 1 (argument 0 is the directive name).  Arguments of the form
 * "name=value" whose name is in "extra" (a NULL-terminated list, may be
 * NULL) are left for the caller: their indexes are not errors.  Any other
 * argument fails with "invalid parameter \"%V\"" naming the directive.
 * A relative PATH is relative to nginx's prefix, as for access_log.
 * buffer: default 64k, 0 or "off" = unbuffered (one write per record);
 * flush: default 1s, the most time a record waits in the buffer.
 */
char *ngx_http_ai_gateway_sink_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_ai_gateway_sink_t **sink, char **extra);

/* a sink at PATH with the defaults, for a log nobody configured */
ngx_http_ai_gateway_sink_t *ngx_http_ai_gateway_sink_default(ngx_conf_t *cf,
    ngx_str_t *path);

/*
 * Appends one record, a whole line ending in "\n".  Records from several
 * workers never interleave: each write() holds whole lines only, and the
 * file is opened O_APPEND.  A record larger than the buffer is written on
 * its own.  A failed write is logged (at most once a second per file) and
 * the record dropped; it never fails the request.
 */
void ngx_http_ai_gateway_sink_write(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, u_char *line, size_t len);

/*
 * The same, with the record written in place: sink_reserve() returns room
 * for at most size bytes in the buffer (writing the buffer out first when
 * it lacks the room), or NULL when the sink is unbuffered or size exceeds
 * the buffer (then sink_write() the record); sink_commit() takes the line
 * written there, up to last.  No other record may come in between.
 */
u_char *ngx_http_ai_gateway_sink_reserve(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log, size_t size);
void ngx_http_ai_gateway_sink_commit(ngx_http_ai_gateway_sink_t *sink,
    u_char *last);

/* for the worker's exit and for tests of the flush: writes the buffer */
void ngx_http_ai_gateway_sink_flush(ngx_http_ai_gateway_sink_t *sink,
    ngx_log_t *log);


#endif /* _NGX_HTTP_AI_GATEWAY_LOG_H_INCLUDED_ */
