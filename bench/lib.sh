# shellcheck shell=bash
# Shared by bench/run.sh and bench/callgrind.sh: paths, nginx configurations,
# starting/stopping the nginx instances, request bodies.  Sourced, not run.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR="$BENCH_DIR/results"

NGINX=${NGINX:-/usr/sbin/nginx}
MODULE=${MODULE:-$REPO_ROOT/build/ngx_http_ai_gateway_module.so}

GATEWAY_LOCATION_CONF=${GATEWAY_LOCATION_CONF:-$BENCH_DIR/gateway-location.conf}
GATEWAY_HTTP_CONF=${GATEWAY_HTTP_CONF:-$BENCH_DIR/gateway-http.conf}
GATEWAY_USAGE_CONF=${GATEWAY_USAGE_CONF:-$BENCH_DIR/gateway-usage.conf}
GATEWAY_DIRECTIVES=${GATEWAY_DIRECTIVES:-}
GATEWAY_HTTP_DIRECTIVES=${GATEWAY_HTTP_DIRECTIVES:-}

MODEL=${MODEL:-gpt-4o-mini}
BENCH_USER=${BENCH_USER:-bench-user}

# the three limits of the shared-memory issue, for bench/limits.sh and
# bench/redis.sh: high enough never to reject
BENCH_LIMITS="
    ai_gateway_rate_limit key=user renewal_period=minute calls=1000000000;
    ai_gateway_rate_limit key=endpoint renewal_period=hour calls=1000000000;
    ai_gateway_rate_limit key=user renewal_period=day tokens=1000000000000;"
URI=/v1/chat/completions

# the measured cases; each has its own location (same URI suffix, so the
# module sees an OpenAI chat request) in plain and gateway alike:
#   inspect  /v1/...         gateway-location.conf (ai_gateway on)
#   usage    /usage/v1/...   + gateway-usage.conf (usage tracking, inference
#                            tables), non-streaming body, JSON answer
#   stream   /stream/v1/...  + gateway-usage.conf, "stream": true body, the
#                            mock answers with an SSE stream; proxy_buffering
#                            off in plain and gateway
#   translate /translate/v1/... gateway-location.conf + ai_gateway_upstream_api
#                            anthropic_messages: the OpenAI chat body (the
#                            one of "inspect") is translated, sent to
#                            /translate/v1/messages, and the mock's Anthropic
#                            Messages answer translated back; plain passes the
#                            Anthropic answer through
ALL_CASES="inspect usage stream translate"
CASES=${CASES:-$ALL_CASES}
SIZES=${SIZES:-1024 32768}
USAGE_SIZES=${USAGE_SIZES:-1024}
STREAM_SIZES=${STREAM_SIZES:-1024}
TRANSLATE_SIZES=${TRANSLATE_SIZES:-1024}
STREAM_CHUNKS=${STREAM_CHUNKS:-200}

case_uri() {
    case $1 in
        inspect) echo "/v1/chat/completions" ;;
        usage)   echo "/usage/v1/chat/completions" ;;
        stream)  echo "/stream/v1/chat/completions" ;;
        translate) echo "/translate/v1/chat/completions" ;;
        *)       die "unknown case: $1 (known: $ALL_CASES)" ;;
    esac
}

# check_cases: CASES must be known names
check_cases() {
    local c
    [ -n "${CASES// /}" ] || die "CASES is empty (known: $ALL_CASES)"
    for c in $CASES; do case_uri "$c" > /dev/null; done
}

# case_sizes CASE: the body sizes measured for CASE
case_sizes() {
    case $1 in
        inspect) echo "$SIZES" ;;
        usage)   echo "$USAGE_SIZES" ;;
        stream)  echo "$STREAM_SIZES" ;;
        translate) echo "$TRANSLATE_SIZES" ;;
    esac
}

# upstream_uri CASE TARGET: the URI the mock gets (the gateway sends the
# translated request of "translate" to .../messages)
upstream_uri() {
    local uri
    uri=$(case_uri "$1")
    if [ "$1" = translate ] && [ "$2" = gateway ]; then
        echo "${uri%chat/completions}messages"
    else
        echo "$uri"
    fi
}

# body_file DIR CASE SIZE: the request body of CASE and SIZE (streaming
# bodies are separate files; "translate" sends the bodies of "inspect")
body_file() {
    if [ "$2" = stream ]; then echo "$1/body-$3-stream.json"; else echo "$1/body-$3.json"; fi
}

# case_rows: "case size" per line, in the order measured
case_rows() {
    local c s
    for c in $CASES; do
        for s in $(case_sizes "$c"); do echo "$c $s"; done
    done
}

# gen_case_bodies DIR: all request bodies the rows need
gen_case_bodies() {
    local c s f
    while read -r c s; do
        f=$(body_file "$1" "$c" "$s")
        [ -f "$f" ] && continue
        if [ "$c" = stream ]; then gen_body "$s" "$f" true; else gen_body "$s" "$f"; fi
    done < <(case_rows)
}

STARTED_PIDS=()

die()  { echo "bench: ERROR: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

# ------------------------------------------------------------------ checks

check_common() {
    [ -x "$NGINX" ] || die "nginx binary not found or not executable: $NGINX"
    [ -f "$MODULE" ] || die "module not found: $MODULE (build it: cd build && cmake .. && make)"
    MODULE=$(realpath -e "$MODULE")
    [ -f "$GATEWAY_LOCATION_CONF" ] || die "no such file: GATEWAY_LOCATION_CONF=$GATEWAY_LOCATION_CONF"
    [ -f "$GATEWAY_HTTP_CONF" ] || die "no such file: GATEWAY_HTTP_CONF=$GATEWAY_HTTP_CONF"
    [ -f "$GATEWAY_USAGE_CONF" ] || die "no such file: GATEWAY_USAGE_CONF=$GATEWAY_USAGE_CONF"
    GATEWAY_LOCATION_CONF=$(realpath -e "$GATEWAY_LOCATION_CONF")
    GATEWAY_HTTP_CONF=$(realpath -e "$GATEWAY_HTTP_CONF")
    GATEWAY_USAGE_CONF=$(realpath -e "$GATEWAY_USAGE_CONF")
    [[ "$STREAM_CHUNKS" =~ ^[0-9]+$ ]] && [ "$STREAM_CHUNKS" -gt 0 ] \
        || die "STREAM_CHUNKS must be a positive number"
    local s
    for s in $SIZES $USAGE_SIZES $STREAM_SIZES $TRANSLATE_SIZES; do
        [[ "$s" =~ ^[0-9]+$ ]] || die "body sizes must be numbers: $s"
    done
    check_cases
    local t
    for t in curl perl ss; do
        command -v "$t" >/dev/null || die "$t is required"
    done
    mkdir -p "$RESULTS_DIR"
}

# snapshot_module DIR: the run loads a copy of the module, taken once its
# file has not changed for 2 s, so that a rebuild during the run (make in
# another shell) cannot hand nginx a half-written .so.  Sets MODULE to the
# copy, MODULE_ORIG to the original.
snapshot_module() {
    local dir=$1 i now m0 m1
    MODULE_ORIG=$MODULE
    for ((i = 0; i < 60; i++)); do
        now=$(date +%s)
        m0=$(stat -c '%Y %s' "$MODULE_ORIG")
        if [ $((now - ${m0%% *})) -ge 2 ]; then
            cp -p "$MODULE_ORIG" "$dir/module.so"
            m1=$(stat -c '%Y %s' "$MODULE_ORIG")
            [ "$m0" = "$m1" ] && [ "$(stat -c %s "$dir/module.so")" = "${m0#* }" ] && break
        fi
        [ "$i" = 0 ] && note "the module is being rebuilt: waiting until it has not changed for 2 s"
        sleep 1
    done
    [ "$i" -lt 60 ] || die "the module $MODULE_ORIG keeps changing"
    MODULE="$dir/module.so"
    MODULE_SHA=$(sha256sum "$MODULE" | cut -c1-12)
}

# ------------------------------------------------------------------ CPU pinning
#
# 2 cores: the nginx under test (plain or gateway) gets CPU $TEST_CPU alone,
# the load generator and the mock upstream share CPU $LOAD_CPU.  PIN=0 turns
# pinning off; without taskset or with one CPU there is none.

PIN=${PIN:-1}
TEST_CPU=${TEST_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PIN_TEST=()
PIN_LOAD=()

setup_pinning() {
    local ncpu
    ncpu=$(nproc 2>/dev/null || echo 1)
    if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$ncpu" -ge 2 ]; then
        PIN_TEST=(taskset -c "$TEST_CPU")
        PIN_LOAD=(taskset -c "$LOAD_CPU")
        PIN_DESC="nginx under test on CPU $TEST_CPU; wrk/client + mock upstream on CPU $LOAD_CPU (taskset), $ncpu CPUs"
    else
        PIN_DESC="no CPU pinning (PIN=$PIN, $ncpu CPUs, taskset $(command -v taskset >/dev/null && echo present || echo absent))"
    fi
}

# ------------------------------------------------------------------ helpers

free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
                                      Proto => "tcp", Listen => 1)
            or die "free_port: $!\n";
        print $s->sockport, "\n";'
}

# gen_body SIZE FILE [STREAM(true|false)]: the deterministic request body
# of SIZE bytes
gen_body() {
    perl "$BENCH_DIR/gen_body.pl" "$1" "$MODEL" "${3:-false}" > "$2" || die "gen_body $1 failed"
    [ "$(wc -c < "$2")" -eq "$1" ] || die "gen_body: $2 is not $1 bytes"
}

# gen_stream DIR: the mock's SSE answer to streaming requests
# ($DIR/stream.sse, STREAM_CHUNKS content chunks and a usage chunk) and the
# stream a client that did not ask for usage must get from the gateway
# ($DIR/stream-stripped.sse: the same without the usage event).  Sets
# MOCK_STREAM, MOCK_STREAM_STRIPPED.
gen_stream() {
    MOCK_STREAM="$1/stream.sse"
    MOCK_STREAM_STRIPPED="$1/stream-stripped.sse"
    perl "$BENCH_DIR/gen_stream.pl" "$STREAM_CHUNKS" "$MODEL" > "$MOCK_STREAM" \
        || die "gen_stream failed"
    perl "$BENCH_DIR/gen_stream.pl" --strip "$STREAM_CHUNKS" "$MODEL" > "$MOCK_STREAM_STRIPPED" \
        || die "gen_stream --strip failed"
}

# mock_response_file DIR: the mock's JSON answers as files (for
# comparisons): MOCK_RESPONSE_FILE, MOCK_ANTHROPIC_RESPONSE_FILE
mock_response_file() {
    printf '%s' "$MOCK_RESPONSE" > "$1/response.json"
    MOCK_RESPONSE_FILE="$1/response.json"
    printf '%s' "$MOCK_ANTHROPIC_RESPONSE" > "$1/response-anthropic.json"
    MOCK_ANTHROPIC_RESPONSE_FILE="$1/response-anthropic.json"
}

# expected_body CASE TARGET: the file with the exact body the client must
# get; empty for the gateway's "translate" (its "created" is the time of
# the answer: see expected_translation)
expected_body() {
    if [ "$1" = translate ]; then
        [ "$2" = gateway ] || echo "$MOCK_ANTHROPIC_RESPONSE_FILE"
    elif [ "$1" != stream ]; then
        echo "$MOCK_RESPONSE_FILE"
    elif [ "$2" = gateway ]; then
        echo "$MOCK_STREAM_STRIPPED"
    else
        echo "$MOCK_STREAM"
    fi
}

# expected_translation CASE TARGET: for the gateway's "translate", the
# Anthropic answer whose chat.completion translation the client must get
# (bench/check_translate.pl checks it); empty otherwise
expected_translation() {
    if [ "$1" = translate ] && [ "$2" = gateway ]; then echo "$MOCK_ANTHROPIC_RESPONSE_FILE"; fi
}

# the realistic upstream answer: one chat.completion with usage.  It goes into
# a single-quoted nginx string, so: no single quotes, no backslashes, no "$".
MOCK_RESPONSE='{"id":"chatcmpl-B1ench0000000000000000000001","object":"chat.completion","created":1732600000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Here is a short summary of last quarter: revenue grew 12 percent, refunds fell to 1.8 percent of orders, and the average delivery time was 2.4 days. The largest region by orders was EU-West.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":231,"completion_tokens":48,"total_tokens":279,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_0ba0d124f1"}'

# the mock's answer in the "translate" case: an Anthropic Messages answer
# with the same text and token counts as MOCK_RESPONSE (no cache tokens).
# The same rules: no single quotes, no backslashes, no "$".
MOCK_ANTHROPIC_RESPONSE='{"id":"msg_01Bench000000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Here is a short summary of last quarter: revenue grew 12 percent, refunds fell to 1.8 percent of orders, and the average delivery time was 2.4 days. The largest region by orders was EU-West."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":231,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":48}}'

# ------------------------------------------------------------------ configs

# conf_main PREFIX SINGLE(0|1): main and events context, common to all
conf_main() {
    local prefix=$1 single=$2
    cat <<EOF
# generated by bench/$(basename "$0"), $(date -u +%FT%TZ)
worker_processes  1;
daemon            off;
master_process    $([ "$single" = 1 ] && echo off || echo on);
pid               $prefix/nginx.pid;
error_log         $prefix/logs/error.log warn;

events {
    worker_connections  4096;
}
EOF
}

# conf_http_common PREFIX: http-level settings shared by every instance
conf_http_common() {
    local prefix=$1
    cat <<EOF
    access_log               off;
    keepalive_requests       1000000;
    keepalive_timeout        300s;

    # bodies up to 64k stay in memory in plain and gateway alike
    client_body_buffer_size  64k;
    client_max_body_size     1m;

    client_body_temp_path    $prefix/tmp/client_body;
    proxy_temp_path          $prefix/tmp/proxy;
    fastcgi_temp_path        $prefix/tmp/fastcgi;
    uwsgi_temp_path          $prefix/tmp/uwsgi;
    scgi_temp_path           $prefix/tmp/scgi;
EOF
}

mkprefix() {
    mkdir -p "$1/conf" "$1/logs" "$1/tmp"
}

# conf_stream_maps FILE: the SSE stream of FILE as nginx variables
# $bench_sse_0, $bench_sse_1, ... (a configuration token is limited to 4 KiB,
# so one "return 200 '<whole stream>'" is impossible), then a line
# "#VARS $bench_sse_0$bench_sse_1..." for the caller.  Each map has only a
# default: the value is a constant, evaluated once per request.
conf_stream_maps() {
    perl -e '
        local $/; open my $fh, "<:raw", $ARGV[0] or die "$ARGV[0]: $!\n";
        my $s = <$fh>;
        die "the stream contains a dollar sign, backslash or single quote\n" if $s =~ /[\$\\\x27]/;
        my @ev = $s =~ /(.*?\n\n)/gs;
        die "the stream does not end with a blank line\n" unless join("", @ev) eq $s;
        my (@parts, $cur);
        $cur = "";
        for my $e (@ev) {
            (my $x = $e) =~ s/\n/\\n/g;
            if (length($cur) + length($x) > 3000 && length $cur) { push @parts, $cur; $cur = ""; }
            $cur .= $x;
        }
        push @parts, $cur if length $cur;
        my $vars = "";
        for my $i (0 .. $#parts) {
            print "    map \$request_method \$bench_sse_$i {\n        default  \x27$parts[$i]\x27;\n    }\n";
            $vars .= "\$bench_sse_$i";
        }
        print "#VARS $vars\n";
    ' "$1" || die "conf_stream_maps failed"
}

# stream_chunked_conf: with STREAM_CHUNKED=1 (the default) the mock sends
# its SSE stream as providers do, chunked and without Content-Length: a
# sub_filter that never matches makes nginx drop the length.  (Plain nginx
# then passes the stream on chunked too, as it does with real providers;
# with STREAM_CHUNKED=0 plain passes the mock's length on, while the gateway,
# which cuts the usage chunk out, must switch to chunked.)
stream_chunked_conf() {
    if [ "${STREAM_CHUNKED:-1}" = 1 ]; then
        printf '            sub_filter        "bench-never-matches" "";\n'
        printf '            sub_filter_types  text/event-stream;\n'
    fi
}

# write_upstream_conf PREFIX PORT: the mock LLM provider.  With MOCK_STREAM
# set (gen_stream), /stream/ answers with that SSE stream.  Requests with an
# "X-Bench-Check" header (the checks before measuring, not wrk) are logged to
# logs/check.log with the length of the body the mock received.
write_upstream_conf() {
    local prefix=$1 port=$2 maps vars
    mkprefix "$prefix"
    maps=
    vars=
    if [ -n "${MOCK_STREAM:-}" ]; then
        maps=$(conf_stream_maps "$MOCK_STREAM")
        vars=$(sed -n 's/^#VARS //p' <<< "$maps")
        maps=$(grep -v '^#VARS ' <<< "$maps")
    fi
    {
        conf_main "$prefix" 0
        echo
        echo "http {"
        conf_http_common "$prefix"
        cat <<EOF

    default_type  application/json;

    log_format  bench_check  '\$request_uri content_length=\$content_length request_length=\$request_length status=\$status';
    log_format  bench_check_translate  '\$request_uri content_length=\$content_length request_length=\$request_length status=\$status anthropic_version=\$http_anthropic_version';

EOF
        [ -n "$maps" ] && printf '    # the SSE stream (bench/gen_stream.pl), in pieces\n%s\n\n' "$maps"
        cat <<EOF
    server {
        listen  127.0.0.1:$port backlog=4096;

        access_log  $prefix/logs/check.log bench_check if=\$http_x_bench_check;

        location / {
            return 200 '$MOCK_RESPONSE';
        }

        # case "translate": an Anthropic Messages answer, whatever the URI
        # (plain sends .../chat/completions, the gateway .../messages)
        location /translate/ {
            access_log  $prefix/logs/check.log bench_check_translate if=\$http_x_bench_check;
            return 200 '$MOCK_ANTHROPIC_RESPONSE';
        }
EOF
        if [ -n "$vars" ]; then
            cat <<EOF

        location /stream/ {
            default_type  text/event-stream;
            return 200 "$vars";
$(stream_chunked_conf)
        }
EOF
        fi
        cat <<EOF
    }
}
EOF
    } > "$prefix/conf/nginx.conf"
}

# write_proxy_conf KIND(plain|gateway) PREFIX PORT UPSTREAM_PORT SINGLE(0|1)
write_proxy_conf() {
    local kind=$1 prefix=$2 port=$3 upport=$4 single=$5
    mkprefix "$prefix"
    {
        [ "$kind" = gateway ] && echo "load_module  $MODULE;" && echo
        conf_main "$prefix" "$single"
        echo
        echo "http {"
        conf_http_common "$prefix"
        if [ "$kind" = gateway ]; then
            echo
            echo "    # ---- $GATEWAY_HTTP_CONF"
            sed 's/^/    /' "$GATEWAY_HTTP_CONF"
            [ -n "$GATEWAY_HTTP_DIRECTIVES" ] && printf '    %s\n' "$GATEWAY_HTTP_DIRECTIVES"
        fi
        cat <<EOF

    upstream mock_provider {
        server              127.0.0.1:$upport;
        keepalive           64;
        keepalive_requests  1000000;
        keepalive_timeout   300s;
    }

    server {
        listen  127.0.0.1:$port backlog=4096;
EOF
        local c uri
        for c in $CASES; do
            uri=$(case_uri "$c")
            echo
            echo "        # case \"$c\""
            echo "        location ${uri%chat/completions} {"
            if [ "$kind" = gateway ]; then
                echo "            # ---- $GATEWAY_LOCATION_CONF"
                conf_directives "$GATEWAY_LOCATION_CONF" | sed 's/^/            /'
                [ -n "$GATEWAY_DIRECTIVES" ] && printf '            %s\n' "$GATEWAY_DIRECTIVES"
                if [ "$c" = usage ] || [ "$c" = stream ]; then
                    echo "            # ---- $GATEWAY_USAGE_CONF"
                    conf_directives "$GATEWAY_USAGE_CONF" | sed 's/^/            /'
                fi
                if [ "$c" = translate ]; then
                    echo "            # ---- the upstream speaks Anthropic's Messages API"
                    echo "            ai_gateway_upstream_api  anthropic_messages;"
                fi
                echo "            # ----"
                echo
                echo '            add_header  X-AI-Model  $ai_model always;'
            else
                # the same header work as the gateway, without the module
                echo '            add_header  X-AI-Model  none always;'
            fi
            # SSE proxies pass events on at once
            [ "$c" = stream ] && echo '            proxy_buffering     off;'
            cat <<EOF

            proxy_pass          http://mock_provider;
            proxy_http_version  1.1;
            proxy_set_header    Connection "";
        }
EOF
        done
        cat <<EOF
    }
}
EOF
    } > "$prefix/conf/nginx.conf"
}

# ------------------------------------------------------------------ processes

# nginx_test PREFIX: nginx -t on the instance's configuration
nginx_test() {
    local prefix=$1
    "$NGINX" -t -q -p "$prefix/" -c "$prefix/conf/nginx.conf" \
             -e "$prefix/logs/error.log" > "$prefix/logs/test.log" 2>&1 || {
        cat "$prefix/logs/test.log" >&2
        die "nginx -t failed for $prefix/conf/nginx.conf"
    }
}

# start_nginx PREFIX [WRAPPER...]: starts nginx (daemon off) in the
# background, optionally under a wrapper (taskset, valgrind); sets LAST_PID
start_nginx() {
    local prefix=$1
    shift
    "$@" "$NGINX" -p "$prefix/" -c "$prefix/conf/nginx.conf" \
                  -e "$prefix/logs/error.log" \
                  > "$prefix/logs/stdout.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

alive() {
    kill -0 "$1" 2>/dev/null || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# wait_listen PORT PID PREFIX [TIMEOUT_S]: until 127.0.0.1:PORT listens
wait_listen() {
    local port=$1 pid=$2 prefix=$3 timeout=${4:-10} i
    for ((i = 0; i < timeout * 10; i++)); do
        if ! alive "$pid"; then
            tail -n 30 "$prefix/logs/error.log" "$prefix/logs/stdout.log" >&2
            die "nginx ($prefix) exited during startup"
        fi
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$prefix/logs/error.log" "$prefix/logs/stdout.log" >&2
    die "nginx ($prefix) does not listen on 127.0.0.1:$port after ${timeout}s"
}

# worker_pid MASTER_PID: the (only) worker process of a master
worker_pid() {
    local i w
    for ((i = 0; i < 50; i++)); do
        w=$(pgrep -P "$1" | head -n 1 || true)
        [ -n "$w" ] && { echo "$w"; return 0; }
        sleep 0.1
    done
    die "no worker process under nginx master $1"
}

# cpu_ns PID: CPU time the process has used so far, in nanoseconds
cpu_ns() {
    if [ -r "/proc/$1/schedstat" ]; then
        awk '{ print $1 }' "/proc/$1/schedstat"
    else
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e9 / hz }' "/proc/$1/stat"
    fi
}

# cpu_snap: "busy total" jiffies of CPU $TEST_CPU and CPU $LOAD_CPU (one line)
cpu_snap() {
    awk -v a="cpu$TEST_CPU" -v b="cpu$LOAD_CPU" '
        $1 == a || $1 == b { t = 0; for (i = 2; i <= 9; i++) t += $i
                             busy[$1] = t - $5 - $6; tot[$1] = t }
        END { print busy[a], tot[a], busy[b], tot[b] }' /proc/stat
}

# cpu_busy SNAP0 SNAP1: "TEST% LOAD%" busy between two cpu_snap outputs
cpu_busy() {
    awk -v s0="$1" -v s1="$2" 'BEGIN {
        split(s0, a, " "); split(s1, b, " ")
        printf "%.0f %.0f\n", 100 * (b[1] - a[1]) / (b[2] - a[2] + 1e-9),
                              100 * (b[3] - a[3]) / (b[4] - a[4] + 1e-9) }'
}

# stop_pid PID [TIMEOUT_S]: TERM (nginx: fast shutdown), then KILL
stop_pid() {
    local pid=$1 timeout=${2:-10} kids i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(pgrep -P "$pid" | tr "\n" " " || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        note "pid $pid did not stop after ${timeout}s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # workers of a killed master would stay behind
    for i in $kids; do
        if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
    done
    return 0
}

stop_all() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid" "${STOP_TIMEOUT:-10}"
    done
    STARTED_PIDS=()
}

# install_traps: stop everything we started on exit, Ctrl-C or TERM
install_traps() {
    trap 'rc=$?; set +e; trap - EXIT INT TERM; stop_all; on_exit "$rc"; exit "$rc"' EXIT
    trap 'echo; note "interrupted"; exit 130' INT
    trap 'note "terminated"; exit 143' TERM
}

# records_on_tmpfs PREFIX: with RECORDS_TMPFS=1 (the default, when /dev/shm
# is there) the gateway's logs directory, where its usage and inference
# records go, is a symlink to a directory on /dev/shm.  The records are
# still written (the same buffered write() calls, the same copies), but not
# to this VM's disk: at ~100 MB/s of records (usage + inference, 30,000
# requests a second) the disk's writeback throttled the second of two
# identical runs to 0.57 of plain where the first had 0.77.
records_on_tmpfs() {
    [ "${RECORDS_TMPFS:-1}" = 1 ] && [ -d /dev/shm ] && [ -w /dev/shm ] || return 0
    RECORDS_SHM=$(mktemp -d /dev/shm/ai-gateway-bench.XXXXXX)
    chmod 711 "$RECORDS_SHM"
    rm -rf "$1/logs"
    ln -s "$RECORDS_SHM" "$1/logs"
}

# on exit the run directory goes, unless the run failed or KEEP=1; the
# records on /dev/shm go in any case (they would hold the memory)
on_exit() {
    if [ -n "${RECORDS_SHM:-}" ]; then
        [ "$KEEP" = 1 ] && [ -n "${RUN_DIR:-}" ] \
            && rm -f "$RECORDS_SHM"/ai_*.jsonl
        [ "$KEEP" = 1 ] && [ -n "${RUN_DIR:-}" ] && [ -L "$RUN_DIR/gateway/logs" ] \
            && rm -f "$RUN_DIR/gateway/logs" \
            && cp -r "$RECORDS_SHM" "$RUN_DIR/gateway/logs"
        rm -rf "$RECORDS_SHM"
    fi
    [ -n "${RUN_DIR:-}" ] || return 0
    if [ "${FAILED:-1}" = 1 ] || [ "$KEEP" = 1 ]; then
        note "run directory kept: $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
    fi
}

# start_run NAME: RUN_DIR under bench/results, the traps, the module snapshot
start_run() {
    RUN_DIR=$(mktemp -d "$RESULTS_DIR/$1.XXXXXX")
    # the workers (user nobody) reach their record files here when they
    # reopen them (bench/run.sh rotates them with USR1)
    chmod 711 "$RUN_DIR"
    FAILED=1
    install_traps
    snapshot_module "$RUN_DIR"
}

# size_label BYTES: 1KiB, 32KiB, 700B
size_label() {
    if [ $(($1 % 1024)) -eq 0 ]; then echo "$(($1 / 1024))KiB"; else echo "${1}B"; fi
}

# conf_directives FILE: a conf file without its comment and blank lines
conf_directives() {
    grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1" || true
}

# conf_summary FILE: the directives of a conf file on one line
conf_summary() {
    local x
    x=$( (grep -v '^[[:space:]]*#' "$1" || true) | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
    echo "${x:-(none)}"
}

# describe: what was measured, for the reports
describe() {
    local rev dirty
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    dirty=
    if git -C "$REPO_ROOT" status --porcelain -- ngx_ai_gateway_module config 2>/dev/null | grep -q .; then
        dirty=' (module sources modified since the commit)'
    fi
    echo "date:     $(date -u '+%F %T UTC')"
    echo "host:     $(uname -n), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
    echo "nginx:    $NGINX ($("$NGINX" -v 2>&1 | sed 's/^nginx version: //'))"
    echo "module:   ${MODULE_ORIG:-$MODULE} (built $(date -u -r "$MODULE" '+%F %T UTC'), sha256 ${MODULE_SHA:-?}..., repo $rev$dirty)"
    echo "gateway:  $(conf_summary "$GATEWAY_LOCATION_CONF")${GATEWAY_DIRECTIVES:+ $GATEWAY_DIRECTIVES}"
    echo "cases:    $CASES (sizes: inspect $SIZES; usage $USAGE_SIZES; stream $STREAM_SIZES$(case " $CASES " in *" translate "*) echo "; translate $TRANSLATE_SIZES";; esac))"
    case " $CASES " in *" usage "*|*" stream "*)
        echo "usage:    + $(conf_summary "$GATEWAY_USAGE_CONF") (usage and stream); http: $(conf_summary "$GATEWAY_HTTP_CONF")${GATEWAY_HTTP_DIRECTIVES:+ $GATEWAY_HTTP_DIRECTIVES}"
    esac
    case " $CASES " in *" stream "*)
        echo "stream:   \"stream\": true body; mock answers text/event-stream: role, $STREAM_CHUNKS content, stop, usage, [DONE] events ($(wc -c < "$MOCK_STREAM") bytes at once); proxy_buffering off in plain and gateway"
    esac
    case " $CASES " in *" translate "*)
        echo "translate: + ai_gateway_upstream_api anthropic_messages; the inspect body, translated and sent to /translate/v1/messages; the mock answers Anthropic Messages JSON (${#MOCK_ANTHROPIC_RESPONSE} bytes), which the gateway translates to a chat.completion and plain passes through"
    esac
    echo "pinning:  $PIN_DESC"
    echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on the machine skews results)"
}
