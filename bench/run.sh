#!/usr/bin/env bash
# bench/run.sh [SECONDS]  -- throughput/latency of plain proxy_pass vs. the
# AI gateway module, in one run, for these cases (CASES, default all):
#   inspect  ai_gateway on (1 KiB and 32 KiB chat-completions bodies)
#   usage    + usage tracking + inference tables (1 KiB, JSON answer)
#   stream   + usage tracking + inference tables, "stream": true (1 KiB),
#            the mock answers with an OpenAI SSE stream (STREAM_CHUNKS
#            content chunks and a usage chunk), proxy_buffering off
#   translate ai_gateway_upstream_api anthropic_messages (1 KiB): the chat
#            body is translated to a Messages request, the mock's Anthropic
#            answer back to a chat.completion (plain passes it through)
# See bench/README.md.
#
# Environment (all optional):
#   NGINX=/usr/sbin/nginx   MODULE=<repo>/build/ngx_http_ai_gateway_module.so
#   CASES="inspect usage stream translate"   the cases measured, in this order
#   SIZES="1024 32768"   body sizes of "inspect"
#   USAGE_SIZES=1024 STREAM_SIZES=1024 TRANSLATE_SIZES=1024   body sizes of
#                   "usage", "stream", "translate"
#   STREAM_CHUNKS=200   content chunks of the mock's SSE answer
#   ROUNDS=3        measured rounds per case, size and target (median reported)
#   WARMUP=3        seconds of warm-up per case, size and target
#   CONNS=64 THREADS=1   wrk connections / threads
#   PIN=1 TEST_CPU=0 LOAD_CPU=1   CPU pinning (PIN=0: none)
#   GATEWAY_LOCATION_CONF, GATEWAY_DIRECTIVES, GATEWAY_USAGE_CONF,
#   GATEWAY_HTTP_CONF, GATEWAY_HTTP_DIRECTIVES   gateway directives (lib.sh)
#   KEEP=1          keep the run directory (configs, logs, wrk outputs; the
#                   records only when they are not on /dev/shm)
#   RECORDS_TMPFS=1 the gateway's records on /dev/shm, not on disk (0: disk)
#   INFERENCE=0     "usage" and "stream" without inference tables (usage
#                   records only): what the payload records cost
set -euo pipefail

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
TOGETHER=${TOGETHER:-1}
export TOGETHER
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
KEEP=${KEEP:-0}
INFERENCE=${INFERENCE:-1}

[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -gt 0 ] || die "usage: $0 [seconds]"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -gt 0 ] || die "ROUNDS must be a positive number"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a number"

check_common
if ! command -v wrk >/dev/null; then
    note "wrk not found: apt-get install -y wrk"
    [ "$(id -u)" = 0 ] || die "wrk is missing and we are not root: install the wrk package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } \
        || die "could not install wrk"
fi
perl -MJSON::PP -e 1 2>/dev/null || die "perl's JSON::PP is required (perl-modules)"
setup_pinning

start_run run

if [ "$INFERENCE" = 0 ]; then
    # the usage conf without inference tables, from a copy
    GATEWAY_USAGE_CONF_NOINF="$RUN_DIR/gateway-usage-noinference.conf"
    sed 's/^\( *ai_gateway_inference_table \+\)on;/\1off;/' "$GATEWAY_USAGE_CONF" > "$GATEWAY_USAGE_CONF_NOINF"
    grep -q 'ai_gateway_inference_table *off;' "$GATEWAY_USAGE_CONF_NOINF" \
        || die "INFERENCE=0: no \"ai_gateway_inference_table on;\" line in $GATEWAY_USAGE_CONF"
    GATEWAY_USAGE_CONF=$GATEWAY_USAGE_CONF_NOINF
fi

row_label() { printf '%-7s %s' "$1" "$(size_label "$2")"; }

# ------------------------------------------------------------------ start

gen_case_bodies "$RUN_DIR"
gen_stream "$RUN_DIR"
mock_response_file "$RUN_DIR"

UP_PORT=$(free_port)
PLAIN_PORT=$(free_port)
GW_PORT=$(free_port)
while [ "$PLAIN_PORT" = "$UP_PORT" ]; do PLAIN_PORT=$(free_port); done
while [ "$GW_PORT" = "$UP_PORT" ] || [ "$GW_PORT" = "$PLAIN_PORT" ]; do GW_PORT=$(free_port); done

write_upstream_conf "$RUN_DIR/upstream" "$UP_PORT"
write_proxy_conf plain "$RUN_DIR/plain" "$PLAIN_PORT" "$UP_PORT" 0
write_proxy_conf gateway "$RUN_DIR/gateway" "$GW_PORT" "$UP_PORT" 0
records_on_tmpfs "$RUN_DIR/gateway"
for i in upstream plain gateway; do nginx_test "$RUN_DIR/$i"; done

start_nginx "$RUN_DIR/upstream" "${PIN_LOAD[@]}"; UP_PID=$LAST_PID
start_nginx "$RUN_DIR/plain" "${PIN_TEST[@]}";   PLAIN_PID=$LAST_PID
start_nginx "$RUN_DIR/gateway" "${PIN_TEST[@]}"; GW_PID=$LAST_PID
wait_listen "$UP_PORT" "$UP_PID" "$RUN_DIR/upstream"
wait_listen "$PLAIN_PORT" "$PLAIN_PID" "$RUN_DIR/plain"
wait_listen "$GW_PORT" "$GW_PID" "$RUN_DIR/gateway"
PLAIN_WORKER=$(worker_pid "$PLAIN_PID")
GW_WORKER=$(worker_pid "$GW_PID")

port_of()   { case $1 in plain) echo "$PLAIN_PORT";;   gateway) echo "$GW_PORT";;   esac; }
worker_of() { case $1 in plain) echo "$PLAIN_WORKER";; gateway) echo "$GW_WORKER";; esac; }

# the gateway's record files (the sinks' defaults, relative to its prefix)
USAGE_LOG="$RUN_DIR/gateway/logs/ai_usage.jsonl"
INFERENCE_LOG="$RUN_DIR/gateway/logs/ai_inference.jsonl"

mapfile -t ROWS < <(case_rows)
NROWS=${#ROWS[@]}
{
    describe
    if [ "$TOGETHER" = 1 ]; then
        order="plain and gateway together, one wrk each (TOGETHER=1)"
    else
        order="order alternates"
    fi
    echo "wrk:      -t$THREADS -c$CONNS -d${DURATION}s --latency -s bench/post.lua, warm-up ${WARMUP}s, $ROUNDS rounds ($order), median reported; $NROWS case/size rows"
    echo "ports:    upstream 127.0.0.1:$UP_PORT, plain :$PLAIN_PORT, gateway :$GW_PORT"
    echo "records:  $(if [ -n "${RECORDS_SHM:-}" ]; then echo "on tmpfs ($RECORDS_SHM; RECORDS_TMPFS=0: on disk)"; else echo "on disk ($RUN_DIR/gateway/logs)"; fi); $(if [ "${ROTATE_RECORDS:-1}" = 1 ]; then echo "rotated (USR1) and counted after each measurement (ROTATE_RECORDS=0: kept to the end)"; else echo "kept to the end"; fi)"
} | tee "$RUN_DIR/header.txt"
echo

# ------------------------------------------------------------------ verify

show_failure() {
    local target=$1 base=$2
    echo "---- response headers:" >&2; cat "$base.headers" >&2
    echo "---- response body (first 2000 bytes):" >&2; head -c 2000 "$base.body" >&2; echo >&2
    echo "---- error log of $target:" >&2; tail -n 20 "$RUN_DIR/$target/logs/error.log" >&2
}

# check_once CASE TARGET SIZE: one request with curl, must be 200, carry
# exactly the body expected (the mock's answer; through the gateway, the
# stream without the usage chunk it asked for; for "translate" through the
# gateway, the chat.completion made of the mock's Anthropic answer), and
# through the gateway the model the module found.  For "usage" and "stream",
# the gateway must also have written a correct usage record and inference
# record.
check_once() {
    local c=$1 target=$2 size=$3 port base code model id uri upuri expect line i what
    port=$(port_of "$target")
    uri=$(case_uri "$c")
    upuri=$(upstream_uri "$c" "$target")
    what="$target, $c $(size_label "$size")"
    base="$RUN_DIR/check-$c-$size-$target"
    id="bench-check-$c-$size-$target-$$"
    code=$(curl -sS -o "$base.body" -D "$base.headers" \
                -w '%{http_code}' --max-time 10 \
                -H 'Content-Type: application/json' -H 'Expect:' \
                -H "X-User: $BENCH_USER" -H 'X-Bench-Check: 1' \
                -H "X-Client-Request-Id: $id" \
                --data-binary "@$(body_file "$RUN_DIR" "$c" "$size")" \
                "http://127.0.0.1:$port$uri") || code=000
    model=$(tr -d '\r' < "$base.headers" | awk -F': ' 'tolower($1) == "x-ai-model" { print $2 }')
    if [ "$code" != 200 ]; then
        show_failure "$target" "$base"
        die "$what: HTTP $code (not 200) to POST $uri"
    fi
    if [ "$target" = gateway ] && [ "$model" != "$MODEL" ]; then
        cat "$base.headers" >&2
        die "$what: X-AI-Model is \"$model\", expected \"$MODEL\" (\$ai_model not seen)"
    fi
    if [ "$c" = stream ]; then
        # the checks the design asks for, each with its own message
        if [ "$target" = gateway ]; then
            if grep -q '"choices":\[\],"usage"' "$base.body"; then
                show_failure "$target" "$base"
                die "$what: the client's stream still has the usage chunk (the gateway should cut it out)"
            fi
        else
            grep -q '"choices":\[\],"usage":{"prompt_tokens":250' "$base.body" \
                || { show_failure "$target" "$base"; die "$what: plain's stream lacks the mock's usage chunk"; }
        fi
        [ "$(tail -c 14 "$base.body")" = "data: [DONE]" ] \
            && [ "$(tail -c 2 "$base.body" | od -An -c | tr -d ' ')" = '\n\n' ] \
            || { show_failure "$target" "$base"; die "$what: the stream does not end with \"data: [DONE]\\n\\n\""; }
    fi
    if [ "$c" = translate ]; then
        local ctype
        ctype=$(tr -d '\r' < "$base.headers" | awk -F': ' 'tolower($1) == "content-type" { print $2 }')
        [ "$ctype" = application/json ] \
            || { show_failure "$target" "$base"; die "$what: Content-Type is \"$ctype\", not application/json"; }
    fi
    expect=$(expected_translation "$c" "$target")
    if [ -n "$expect" ]; then
        # "created" is the time of the answer: no exact comparison
        line=$(perl "$BENCH_DIR/check_translate.pl" "$expect" "$base.body") || {
            show_failure "$target" "$base"
            die "$what: the body ($(wc -c < "$base.body") bytes) is not the chat.completion translation of $(basename "$expect")"
        }
        echo "check: $what: HTTP 200, X-AI-Model: $model, body translated as expected ($(wc -c < "$base.body") bytes): $line"
    else
        expect=$(expected_body "$c" "$target")
        if ! cmp -s "$base.body" "$expect"; then
            show_failure "$target" "$base"
            echo "---- first difference (cmp):" >&2; cmp "$base.body" "$expect" >&2 || true
            die "$what: the body ($(wc -c < "$base.body") bytes) is not the expected $(basename "$expect") ($(wc -c < "$expect") bytes)"
        fi
        echo "check: $what: HTTP 200, X-AI-Model: $model, body as expected ($(wc -c < "$base.body") bytes)"
    fi

    # what the mock received (its check.log): for the gateway's stream, the
    # body with "stream_options":{"include_usage":true} added; for the
    # gateway's "translate", a Messages request sent to .../messages
    line=
    for ((i = 0; i < 20; i++)); do
        line=$(grep -F "$upuri " "$RUN_DIR/upstream/logs/check.log" 2>/dev/null | tail -n 1 || true)
        [ -n "$line" ] && break
        sleep 0.1
    done
    if [ "$c" = translate ]; then
        local got
        got=$(sed -n 's/.* content_length=\([0-9]*\) .*/\1/p' <<< "$line")
        if [ -z "$got" ]; then
            echo "---- the mock's check.log:" >&2; cat "$RUN_DIR/upstream/logs/check.log" >&2
            die "$what: the mock did not get the request as POST $upuri"
        fi
        if [ "$target" = gateway ]; then
            [[ "$line" == *" anthropic_version=2023-06-01" ]] \
                || die "$what: the upstream request lacks \"anthropic-version: 2023-06-01\" (check.log: '$line')"
            echo "check: $what: upstream got POST $upuri, anthropic-version 2023-06-01, a $got-byte Messages body (client sent $size)"
        else
            [ "$got" -eq "$size" ] || die "$what: the upstream got a $got-byte body, not the client's $size"
        fi
    fi
    if [ "$c" = stream ]; then
        local got
        got=$(sed -n 's/.* content_length=\([0-9]*\) .*/\1/p' <<< "$line")
        [ -n "$got" ] || die "$what: the mock did not log the request (check.log: '$line')"
        if [ "$target" = gateway ]; then
            [ "$got" -gt "$size" ] \
                || die "$what: the upstream got a $got-byte body, not more than the client's $size: stream_options not added?"
            echo "check: $what: upstream got a $got-byte body (client sent $size: include_usage added)"
        fi
    fi
    : > "$RUN_DIR/upstream/logs/check.log"

    if [ "$target" = gateway ] && { [ "$c" = usage ] || [ "$c" = stream ]; }; then
        # the records: flush=1s by default, so wait for them
        for ((i = 0; i < 50; i++)); do
            if grep -qF "\"$id\"" "$USAGE_LOG" 2>/dev/null \
               && { [ "$INFERENCE" = 0 ] || grep -qF "\"$id\"" "$INFERENCE_LOG" 2>/dev/null; }; then
                break
            fi
            sleep 0.1
        done
        local resp
        if [ "$c" = stream ]; then resp=$MOCK_STREAM; else resp=$MOCK_RESPONSE_FILE; fi
        line=$(perl "$BENCH_DIR/check_records.pl" check "$USAGE_LOG" \
                    "$(if [ "$INFERENCE" = 0 ]; then echo -; else echo "$INFERENCE_LOG"; fi)" "$id" "$c" \
                    "$(body_file "$RUN_DIR" "$c" "$size")" "$resp" "$STREAM_CHUNKS") || {
            echo "---- error log of gateway:" >&2; tail -n 20 "$RUN_DIR/gateway/logs/error.log" >&2
            die "$what: wrong or missing usage/inference records (see above; $USAGE_LOG, $INFERENCE_LOG)"
        }
        echo "check: $what: $line"
    fi
}

for row in "${ROWS[@]}"; do
    read -r c s <<< "$row"
    check_once "$c" plain "$s"
    check_once "$c" gateway "$s"
done
echo

# ------------------------------------------------------------------ measure

# per round: worker CPU us/req and % busy; "CPU0 other": the rest of the test
# CPU's busy time (other processes, interrupts): should be ~0-5%; "CPU1": the
# load CPU (wrk + mock upstream)

RAW="$RUN_DIR/raw.tsv"
printf 'case\tsize\ttarget\tround\trps\tp50_us\tp99_us\tcpu_us_per_req\tworker_busy\ttest_cpu_busy\tload_cpu_busy\trequests\n' > "$RAW"

# requests the gateway completed per case (warm-ups included), to compare
# with the records it wrote
declare -A GW_DONE=()

# rotate_records: between measurements, the gateway's record files are
# rotated as logrotate would (renamed, USR1 to the master, which flushes and
# reopens them), counted, and removed, so that their memory is used again
# (see "Records on this VM" in bench/README.md); ROTATE_RECORDS=0 keeps
# them all to the end.  The counts add up in records.parts.
ROTATE_RECORDS=${ROTATE_RECORDS:-1}
ROTATIONS=0
rotate_records() {
    local i f ready files=()
    [ "$ROTATE_RECORDS" = 1 ] || return 0
    for f in "$USAGE_LOG" "$INFERENCE_LOG"; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    ROTATIONS=$((ROTATIONS + 1))
    for f in "${files[@]}"; do
        mv "$f" "$f.rotated"
    done
    kill -USR1 "$GW_PID"
    # the master creates the files again after writing out what was
    # buffered; the worker then reopens them, and writes what it buffered
    # to the rotated ones first: count those when no worker holds them
    for ((i = 0; i < 200; i++)); do
        ready=1
        for f in "${files[@]}"; do
            [ -f "$f" ] || ready=0
        done
        if [ "$ready" = 1 ] \
           && ! ls -l "/proc/$GW_WORKER/fd" 2>/dev/null | grep -q '\.rotated$'; then
            break
        fi
        sleep 0.05
    done
    ((i < 200)) || die "the gateway did not reopen its record files on USR1 (see its error log)"
    perl "$BENCH_DIR/check_records.pl" count "$USAGE_LOG.rotated" "$INFERENCE_LOG.rotated" >> "$RUN_DIR/records.parts"
    rm -f "$USAGE_LOG.rotated" "$INFERENCE_LOG.rotated"
}

# the workers reopen the record files by their path: when they run as
# another user (nobody, under root) that cannot reach it, no rotation
rotate_check() {
    [ "$ROTATE_RECORDS" = 1 ] && [ "$(id -u)" = 0 ] || return 0
    if ! command -v runuser >/dev/null \
       || ! runuser -u nobody -- test -x "$(dirname "$USAGE_LOG")/." 2>/dev/null; then
        note "the gateway's workers (nobody) cannot reach $(dirname "$USAGE_LOG"): records kept to the end (ROTATE_RECORDS=0)"
        ROTATE_RECORDS=0
    fi
}
rotate_check

# start_wrk CASE TARGET SIZE SECONDS OUT: wrk pinned to the load CPU, in the
# background (its pid in WRK_PID); check_wrk then reads its output
start_wrk() {
    local c=$1 target=$2 size=$3 secs=$4 out=$5
    "${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$(port_of "$target")$(case_uri "$c")" \
        -- "$(body_file "$RUN_DIR" "$c" "$size")" "$BENCH_USER" < /dev/null > "$out" 2>&1 &
    WRK_PID=$!
}

# check_wrk CASE TARGET SIZE OUT RC: fails loudly on a failed wrk, any
# non-2xx/3xx answer or socket error; sets BENCH_LINE
check_wrk() {
    local c=$1 target=$2 size=$3 out=$4 rc=$5 line
    [ "$rc" = 0 ] || { cat "$out" >&2; die "wrk failed ($target, $c $(size_label "$size"))"; }
    line=$(grep '^BENCH ' "$out" || true)
    [ -n "$line" ] || { cat "$out" >&2; die "no BENCH line in the wrk output"; }
    if grep -q 'Non-2xx or 3xx responses' "$out" \
       || ! [[ "$line" =~ status_errors=0\ connect=0\ read=0\ write=0\ timeout=0 ]]; then
        cat "$out" >&2
        echo "---- error log of $target:" >&2; tail -n 20 "$RUN_DIR/$target/logs/error.log" >&2
        die "$target, $c $(size_label "$size"): requests failed (see the wrk output above)"
    fi
    BENCH_LINE=$line
    if [ "$target" = gateway ]; then
        GW_DONE[$c]=$(( ${GW_DONE[$c]:-0} + $(kv requests) ))
    fi
}

# run_wrk CASE TARGET SIZE SECONDS OUT: one target alone
run_wrk() {
    local rc=0
    start_wrk "$@"
    wait "$WRK_PID" || rc=$?
    check_wrk "$1" "$2" "$3" "$5" "$rc"
}

# run_together CASE SIZE SECONDS OUT_PLAIN OUT_GATEWAY: both targets at once
# (TOGETHER=1), so that whatever the machine does meanwhile slows both alike
run_together() {
    local c=$1 size=$2 secs=$3 pp gp rp=0 rg=0
    start_wrk "$c" plain "$size" "$secs" "$4"; pp=$WRK_PID
    start_wrk "$c" gateway "$size" "$secs" "$5"; gp=$WRK_PID
    wait "$pp" || rp=$?
    wait "$gp" || rg=$?
    check_wrk "$c" plain "$size" "$4" "$rp"
    check_wrk "$c" gateway "$size" "$5" "$rg"
}

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< " $BENCH_LINE"; }

# record TARGET ROUND CPU0 CPU1 SNAP0 SNAP1 OUT: one measurement's row in
# RAW, and its line on the console
record() {
    local t=$1 r=$2 c0=$3 c1=$4 s0=$5 s1=$6 out=$7 tbusy lbusy reqs dur cpu util other
    BENCH_LINE=$(grep '^BENCH ' "$out")
    read -r tbusy lbusy <<< "$(cpu_busy "$s0" "$s1")"
    reqs=$(kv requests) dur=$(kv duration_us)
    cpu=$(awk -v c="$((c1 - c0))" -v n="$reqs" 'BEGIN { printf "%.2f", c / 1000 / n }')
    util=$(awk -v c="$((c1 - c0))" -v d="$dur" 'BEGIN { printf "%.0f", 100 * c / 1000 / d }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$t" "$r" "$(kv rps)" \
           "$(kv p50_us)" "$(kv p99_us)" "$cpu" "$util" "$tbusy" "$lbusy" "$reqs" >> "$RAW"
    other=$((tbusy - util)); ((other < 0)) && other=0
    printf 'round %d %s %-7s %6.0f req/s  p50 %5.2fms  p99 %5.2fms  worker %5.1f us/req %3s%% busy | CPU%s other %2s%% | CPU%s %3s%%\n' \
           "$r" "$(row_label "$c" "$s")" "$t" "$(kv rps)" \
           "$(awk -v u="$(kv p50_us)" 'BEGIN { print u / 1000 }')" \
           "$(awk -v u="$(kv p99_us)" 'BEGIN { print u / 1000 }')" "$cpu" "$util" \
           "$TEST_CPU" "$other" "$LOAD_CPU" "$lbusy"
}

for row in "${ROWS[@]}"; do
    read -r c s <<< "$row"
    if [ "$WARMUP" -gt 0 ]; then
        if [ "$TOGETHER" = 1 ]; then
            echo "warm-up: $(row_label "$c" "$s") plain and gateway together ${WARMUP}s"
            run_together "$c" "$s" "$WARMUP" "$RUN_DIR/wrk-$c-$s-plain-warmup.txt" \
                         "$RUN_DIR/wrk-$c-$s-gateway-warmup.txt"
            rotate_records
        else
            for t in plain gateway; do
                echo "warm-up: $(row_label "$c" "$s") $t ${WARMUP}s"
                run_wrk "$c" "$t" "$s" "$WARMUP" "$RUN_DIR/wrk-$c-$s-$t-warmup.txt"
                if [ "$t" = gateway ]; then rotate_records; fi
            done
        fi
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        if [ "$TOGETHER" = 1 ]; then
            pw=$(worker_of plain) gw=$(worker_of gateway)
            p0=$(cpu_ns "$pw") g0=$(cpu_ns "$gw") s0=$(cpu_snap)
            run_together "$c" "$s" "$DURATION" "$RUN_DIR/wrk-$c-$s-plain-$r.txt" \
                         "$RUN_DIR/wrk-$c-$s-gateway-$r.txt"
            p1=$(cpu_ns "$pw") g1=$(cpu_ns "$gw") s1=$(cpu_snap)
            record plain "$r" "$p0" "$p1" "$s0" "$s1" "$RUN_DIR/wrk-$c-$s-plain-$r.txt"
            record gateway "$r" "$g0" "$g1" "$s0" "$s1" "$RUN_DIR/wrk-$c-$s-gateway-$r.txt"
            rotate_records
            continue
        fi
        if ((r % 2)); then order="plain gateway"; else order="gateway plain"; fi
        for t in $order; do
            w=$(worker_of "$t")
            c0=$(cpu_ns "$w") s0=$(cpu_snap)
            run_wrk "$c" "$t" "$s" "$DURATION" "$RUN_DIR/wrk-$c-$s-$t-$r.txt"
            c1=$(cpu_ns "$w") s1=$(cpu_snap)
            record "$t" "$r" "$c0" "$c1" "$s0" "$s1" "$RUN_DIR/wrk-$c-$s-$t-$r.txt"
            if [ "$t" = gateway ]; then rotate_records; fi
        done
    done
done
echo

# ------------------------------------------------------------------ report

# spilled bodies would make the comparison unfair: look for nginx's warning
for t in plain gateway; do
    if grep -q 'buffered to a temporary file' "$RUN_DIR/$t/logs/error.log"; then
        die "$t buffered request bodies to temporary files (client_body_buffer_size too small)"
    fi
done

# the records the gateway wrote during the run: one usage and one inference
# record per request it answered (wrk's count; requests in flight when wrk
# stopped may add a few, up to CONNS per wrk run), token counts from the
# provider
RECORDS="$RUN_DIR/records.txt"
: > "$RECORDS"
RECORDS_OK=1
if [ -n "${GW_DONE[usage]:-}${GW_DONE[stream]:-}" ]; then
    sleep 2     # flush=1s
    perl "$BENCH_DIR/check_records.pl" count "$USAGE_LOG" "$INFERENCE_LOG" >> "$RUN_DIR/records.parts"
    # the rotated parts and the rest, added up per log and endpoint
    perl -ne 'my ($k, $ep, @kv) = split; push @o, "$k $ep" unless $s{"$k $ep"}++;
               for (@kv) { my ($n, $v) = split /=/; push @{$f{"$k $ep"}}, $n unless exists $v{"$k $ep"}{$n}; $v{"$k $ep"}{$n} += $v }
               END { print "$_ ", join(" ", map { "$_=$v{$o}{$_}" } @{$f{$o = $_}}), "\n" for @o }' \
        "$RUN_DIR/records.parts" > "$RUN_DIR/records.count"
    runs=$(( ROUNDS + (WARMUP > 0 ? 1 : 0) ))
    {
        echo "records written by the gateway during the run (wrk's completed requests + 1 check request;"
        echo "up to $CONNS more per wrk run may have been in flight when wrk stopped):"
        for c in usage stream; do
            [ -n "${GW_DONE[$c]:-}" ] || continue
            ep=$(case_uri "$c"); ep=${ep%chat/completions}
            n_sizes=$(wc -w <<< "$(case_sizes "$c")")
            done_n=$(( GW_DONE[$c] + n_sizes ))
            slack=$(( CONNS * runs * n_sizes ))
            u=$(awk -v e="$ep" '$1 == "usage" && $2 == e' "$RUN_DIR/records.count")
            i=$(awk -v e="$ep" '$1 == "inference" && $2 == e' "$RUN_DIR/records.count")
            get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< " $2"; }
            ur=$(get records "$u"); ur=${ur:-0}
            ir=$(get records "$i"); ir=${ir:-0}
            prov=$(get provider "$u"); prov=${prov:-0}
            verdict=OK
            if [ "$INFERENCE" = 0 ]; then
                ir=$done_n      # none written, none wanted
            fi
            if [ "$ur" -lt "$done_n" ] || [ "$ir" -lt "$done_n" ]; then
                verdict="RECORDS MISSING"
            elif [ "$ur" -gt $((done_n + slack)) ] || [ "$ir" -gt $((done_n + slack)) ]; then
                verdict="TOO MANY RECORDS"
            elif [ "$prov" -lt "$done_n" ]; then
                verdict="TOKEN COUNTS NOT FROM THE PROVIDER"
            fi
            [ "$verdict" = OK ] || RECORDS_OK=0
            printf '  %-7s %s requests: usage %s (%s); inference %s (%s): %s\n' "$c" "$done_n" "$ur" \
                "$(sed 's/^usage [^ ]* records=[0-9]* //' <<< "$u")" "$ir" \
                "$(sed 's/^inference [^ ]* records=[0-9]* //' <<< "$i")" "$verdict"
        done
        printf '  files: %s %s, %s %s\n' "$(basename "$USAGE_LOG")" "$(du -h "$USAGE_LOG" | cut -f1)" \
            "$(basename "$INFERENCE_LOG")" "$(du -h "$INFERENCE_LOG" | cut -f1)"
    } > "$RECORDS"
fi

TABLE="$RUN_DIR/table.txt"
# the budget: gateway/plain >= 0.90 (stretch 0.95); "translate" (the issue:
# "ratio >= 0.85 of plain nginx proxying the same Anthropic mock") >= 0.85
perl - "$RAW" > "$TABLE" <<'EOF'
use strict; use warnings;
my (%v, @rows);
open my $fh, '<', $ARGV[0] or die;
<$fh>;
while (<$fh>) {
    chomp;
    my ($case, $size, $t, $r, $rps, $p50, $p99, $cpu, $util, $tb, $lb) = split /\t/;
    my $row = "$case $size";
    push @rows, $row unless grep { $_ eq $row } @rows;
    my $x = $v{$row}{$t} //= {};
    push @{ $x->{rps} }, $rps;
    push @{ $x->{p50} }, $p50;
    push @{ $x->{p99} }, $p99;
    push @{ $x->{cpu} }, $cpu;
    push @{ $x->{util} }, $util;
    push @{ $x->{lb} }, $lb;
    push @{ $x->{tb} }, $tb;
    $x->{round}{$r} = $rps;
}
sub median { my @s = sort { $a <=> $b } @_; my $n = @s;
             return $n % 2 ? $s[$n / 2] : ($s[$n / 2 - 1] + $s[$n / 2]) / 2; }
sub max { my $m = shift; for (@_) { $m = $_ if $_ > $m } $m }
sub min { my $m = shift; for (@_) { $m = $_ if $_ < $m } $m }
sub slabel { my $s = shift; $s % 1024 ? "${s}B" : ($s / 1024) . "KiB" }
# the case column is 7 wide, wider for a longer name ("translate")
my $cw = 7;
for (@rows) { my ($c) = split ' '; $cw = length $c if length $c > $cw; }
my $lw = $cw + 6;
sub label { my ($c, $s) = split ' ', shift; sprintf "%-${cw}s %-5s", $c, slabel($s) }
sub ms { sprintf "%.2fms", $_[0] / 1000 }
my %target = (translate => 0.85);
sub target { $target{ $_[0] } // 0.90 }
sub verdict { my ($r, $t) = @_; $t //= 0.90;
              $r >= 0.95 ? 'MET (stretch too)' : $r >= $t ? 'MET' : 'NOT MET' }

printf "%-${lw}s %-8s %10s %17s %9s %9s %12s %7s %8s\n",
       'case  body', 'target', 'req/s', 'req/s min..max', 'p50', 'p99', 'CPU us/req',
       'busy', 'load CPU';
for my $row (@rows) {
    for my $t (qw(plain gateway)) {
        my $x = $v{$row}{$t};
        printf "%-${lw}s %-8s %10.0f %17s %9s %9s %12.1f %6.0f%% %7.0f%%\n",
            label($row), $t, median(@{ $x->{rps} }),
            sprintf("%.0f..%.0f", min(@{ $x->{rps} }), max(@{ $x->{rps} })),
            ms(median(@{ $x->{p50} })), ms(median(@{ $x->{p99} })),
            median(@{ $x->{cpu} }), median(@{ $x->{util} }), median(@{ $x->{lb} });
    }
}
print "\n";
my @budget;
my $pad = ' ' x $lw;
for my $row (@rows) {
    my ($p, $g) = ($v{$row}{plain}, $v{$row}{gateway});
    my $ratio = median(@{ $g->{rps} }) / median(@{ $p->{rps} });
    my $best  = max(@{ $g->{rps} }) / max(@{ $p->{rps} });
    my ($pc, $gc) = (median(@{ $p->{cpu} }), median(@{ $g->{cpu} }));
    printf "%s gateway/plain req/s: %.3f (medians), %.3f (bests)\n",
        label($row), $ratio, $best;
    # each round's two measurements are adjacent in time: their ratios show
    # how much the machine moved within the run
    my @pairs = sort { $a <=> $b }
                map { $g->{round}{$_} / $p->{round}{$_} }
                grep { exists $g->{round}{$_} } keys %{ $p->{round} };
    printf "%s per round (adjacent pairs): median %.3f, middle half %.3f..%.3f, all %.3f..%.3f (%d rounds)\n",
        $pad, median(@pairs), $pairs[int($#pairs / 4)], $pairs[int(3 * $#pairs / 4 + 0.5)],
        $pairs[0], $pairs[-1], scalar @pairs
        if @pairs > 1;
    printf "%s by worker CPU/request: %.3f (plain %.1f us, gateway %.1f us: %+.1f us, %+.1f%%)\n",
        $pad, $pc / $gc, $pc, $gc, $gc - $pc, 100 * ($gc - $pc) / $pc;
    # together, the two workers share the test CPU: it is that CPU's
    # business that tells whether nginx was the bottleneck
    my $busy = $ENV{TOGETHER} ? 'tb' : 'util';
    my $what = $ENV{TOGETHER} ? 'the test CPU was' : 'the nginx under test was';
    my $n = grep { $_ < 90 } @{ $p->{$busy} }, @{ $g->{$busy} };
    my $m = @{ $p->{$busy} } + @{ $g->{$busy} };
    printf "%s note: in %d of %d runs %s < 90%% busy, so not the\n"
         . "%s only bottleneck (load CPU or other processes): trust the CPU ratio more\n",
        $pad, $n, $m, $what, $pad if $n;
    my ($c, $s) = split ' ', $row;
    if ($s == 1024) {
        my $t = target($c);
        printf "%s budget (>= %.2f, stretch >= 0.95): req/s ratio %.3f %s; CPU ratio %.3f %s\n",
            $pad, $t, $ratio, verdict($ratio, $t), $pc / $gc, verdict($pc / $gc, $t);
        push @budget, sprintf "  %-${cw}s 1KiB  req/s ratio %.3f %-17s  CPU ratio %.3f %s",
            $c, $ratio, verdict($ratio, $t), $pc / $gc, verdict($pc / $gc, $t);
        $budget[-1] .= sprintf "  (target >= %.2f)", $t if $t != 0.90;
    }
}
if (@budget) {
    print "\nbudget at 1 KiB, gateway/plain >= 0.90 (stretch >= 0.95), streaming and non-streaming alike:\n";
    print "$_\n" for @budget;
}
EOF

[ -s "$RECORDS" ] && { echo; cat "$RECORDS"; } >> "$TABLE"

{
    cat "$RUN_DIR/header.txt"
    echo
    cat "$TABLE"
    echo
    echo "CPU us/req: CPU time of the nginx worker under test / requests (median);"
    echo "busy: that worker's CPU time / wall time (~100%: nginx under test is the bottleneck)."
    echo "load CPU: busy share of the CPU shared by wrk and the mock upstream (/proc/stat)."
    echo "All columns are medians over the rounds; req/s min..max is the spread."
    echo "CPU ratio: plain CPU/req / gateway CPU/req = the req/s ratio if the worker were the only bottleneck."
    echo "per round: gateway/plain req/s of each round's two adjacent measurements; their spread is the machine's noise."
    echo
    echo "raw rounds:"
    column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
} > "$RESULTS_DIR/latest.txt"

cat "$TABLE"
echo
echo "written: $RESULTS_DIR/latest.txt"
[ "$RECORDS_OK" = 1 ] || die "the gateway's records do not match the requests (see above); run directory kept"
FAILED=0
