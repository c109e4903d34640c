#!/usr/bin/env bash
# bench/run.sh [SECONDS]  -- throughput/latency of plain proxy_pass vs. the
# AI gateway module, 1 KiB and 32 KiB chat-completions bodies.  See
# bench/README.md.
#
# Environment (all optional):
#   NGINX=/usr/sbin/nginx   MODULE=<repo>/build/ngx_http_ai_gateway_module.so
#   ROUNDS=3        measured rounds per target and size (median reported)
#   WARMUP=3        seconds of warm-up per target and size
#   CONNS=64 THREADS=1   wrk connections / threads
#   SIZES="1024 32768"   body sizes in bytes
#   PIN=1 TEST_CPU=0 LOAD_CPU=1   CPU pinning (PIN=0: none)
#   GATEWAY_LOCATION_CONF, GATEWAY_DIRECTIVES, GATEWAY_HTTP_CONF,
#   GATEWAY_HTTP_DIRECTIVES   extra gateway directives (see lib.sh)
#   KEEP=1          keep the run directory (configs, logs, wrk outputs)
set -euo pipefail

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
SIZES=${SIZES:-1024 32768}
KEEP=${KEEP:-0}

[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -gt 0 ] || die "usage: $0 [seconds]"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -gt 0 ] || die "ROUNDS must be a positive number"

check_common
if ! command -v wrk >/dev/null; then
    note "wrk not found: apt-get install -y wrk"
    [ "$(id -u)" = 0 ] || die "wrk is missing and we are not root: install the wrk package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } \
        || die "could not install wrk"
fi
setup_pinning

RUN_DIR=$(mktemp -d "$RESULTS_DIR/run.XXXXXX")
FAILED=1
on_exit() {
    if [ "$FAILED" = 1 ] || [ "$KEEP" = 1 ]; then
        note "run directory kept: $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
    fi
}
install_traps

size_label() { if [ $(($1 % 1024)) -eq 0 ]; then echo "$(($1 / 1024))KiB"; else echo "${1}B"; fi; }

# ------------------------------------------------------------------ start

for s in $SIZES; do
    gen_body "$s" "$RUN_DIR/body-$s.json"
done

UP_PORT=$(free_port)
PLAIN_PORT=$(free_port)
GW_PORT=$(free_port)
while [ "$PLAIN_PORT" = "$UP_PORT" ]; do PLAIN_PORT=$(free_port); done
while [ "$GW_PORT" = "$UP_PORT" ] || [ "$GW_PORT" = "$PLAIN_PORT" ]; do GW_PORT=$(free_port); done

write_upstream_conf "$RUN_DIR/upstream" "$UP_PORT"
write_proxy_conf plain "$RUN_DIR/plain" "$PLAIN_PORT" "$UP_PORT" 0
write_proxy_conf gateway "$RUN_DIR/gateway" "$GW_PORT" "$UP_PORT" 0
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

{
    describe
    echo "wrk:      -t$THREADS -c$CONNS -d${DURATION}s --latency -s bench/post.lua, warm-up ${WARMUP}s, $ROUNDS rounds (order alternates), median reported"
    echo "ports:    upstream 127.0.0.1:$UP_PORT, plain :$PLAIN_PORT, gateway :$GW_PORT"
} | tee "$RUN_DIR/header.txt"
echo

# ------------------------------------------------------------------ verify

# check_once TARGET SIZE: one request with curl, must be 200 (and, through
# the gateway, carry the model the module found)
check_once() {
    local target=$1 size=$2 port hdr code model
    port=$(port_of "$target")
    hdr="$RUN_DIR/check-$target-$size.headers"
    code=$(curl -sS -o "$RUN_DIR/check-$target-$size.body" -D "$hdr" \
                -w '%{http_code}' --max-time 10 \
                -H 'Content-Type: application/json' -H 'Expect:' \
                -H "X-User: $BENCH_USER" \
                --data-binary "@$RUN_DIR/body-$size.json" \
                "http://127.0.0.1:$port$URI") || code=000
    model=$(tr -d '\r' < "$hdr" | awk -F': ' 'tolower($1) == "x-ai-model" { print $2 }')
    if [ "$code" != 200 ]; then
        echo "---- response headers:" >&2; cat "$hdr" >&2
        echo "---- response body:" >&2; head -c 2000 "$RUN_DIR/check-$target-$size.body" >&2; echo >&2
        echo "---- error log of $target:" >&2; tail -n 20 "$RUN_DIR/$target/logs/error.log" >&2
        die "$target answered HTTP $code (not 200) to a $(size_label "$size") POST $URI"
    fi
    grep -q '"chat.completion"' "$RUN_DIR/check-$target-$size.body" \
        || die "$target: the answer is not the mock chat.completion"
    if [ "$target" = gateway ] && [ "$model" != "$MODEL" ]; then
        cat "$hdr" >&2
        die "gateway: X-AI-Model is \"$model\", expected \"$MODEL\" (\$ai_model not seen)"
    fi
    echo "check: $target $(size_label "$size"): HTTP $code, X-AI-Model: $model"
}

for s in $SIZES; do
    check_once plain "$s"
    check_once gateway "$s"
done
echo

# ------------------------------------------------------------------ measure

# per round: worker CPU us/req and % busy; "CPU0 other": the rest of the test
# CPU's busy time (other processes, interrupts): should be ~0-5%; "CPU1": the
# load CPU (wrk + mock upstream)

RAW="$RUN_DIR/raw.tsv"
printf 'size\ttarget\tround\trps\tp50_us\tp99_us\tcpu_us_per_req\tworker_busy\ttest_cpu_busy\tload_cpu_busy\trequests\n' > "$RAW"

# run_wrk TARGET SIZE SECONDS OUT: wrk pinned to the load CPU; fails loudly
# on any non-2xx/3xx answer or socket error
run_wrk() {
    local target=$1 size=$2 secs=$3 out=$4 line
    "${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$(port_of "$target")$URI" \
        -- "$RUN_DIR/body-$size.json" "$BENCH_USER" > "$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed ($target, $(size_label "$size"))"; }
    line=$(grep '^BENCH ' "$out" || true)
    [ -n "$line" ] || { cat "$out" >&2; die "no BENCH line in the wrk output"; }
    if grep -q 'Non-2xx or 3xx responses' "$out" \
       || ! [[ "$line" =~ status_errors=0\ connect=0\ read=0\ write=0\ timeout=0 ]]; then
        cat "$out" >&2
        echo "---- error log of $target:" >&2; tail -n 20 "$RUN_DIR/$target/logs/error.log" >&2
        die "$target, $(size_label "$size"): requests failed (see the wrk output above)"
    fi
    BENCH_LINE=$line
}

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< " $BENCH_LINE"; }

for s in $SIZES; do
    for t in plain gateway; do
        echo "warm-up: $t $(size_label "$s") ${WARMUP}s"
        run_wrk "$t" "$s" "$WARMUP" "$RUN_DIR/wrk-$s-$t-warmup.txt"
    done
done

for s in $SIZES; do
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="plain gateway"; else order="gateway plain"; fi
        for t in $order; do
            w=$(worker_of "$t")
            c0=$(cpu_ns "$w") s0=$(cpu_snap)
            run_wrk "$t" "$s" "$DURATION" "$RUN_DIR/wrk-$s-$t-$r.txt"
            c1=$(cpu_ns "$w") s1=$(cpu_snap)
            read -r tbusy lbusy <<< "$(cpu_busy "$s0" "$s1")"
            reqs=$(kv requests) dur=$(kv duration_us)
            cpu=$(awk -v c="$((c1 - c0))" -v n="$reqs" 'BEGIN { printf "%.2f", c / 1000 / n }')
            util=$(awk -v c="$((c1 - c0))" -v d="$dur" 'BEGIN { printf "%.0f", 100 * c / 1000 / d }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$t" "$r" "$(kv rps)" \
                   "$(kv p50_us)" "$(kv p99_us)" "$cpu" "$util" "$tbusy" "$lbusy" "$reqs" >> "$RAW"
            other=$((tbusy - util)); ((other < 0)) && other=0
            printf 'round %d %-5s %-7s %6.0f req/s  p50 %5.2fms  p99 %5.2fms  worker %5.1f us/req %3s%% busy | CPU%s other %2s%% | CPU%s %3s%%\n' \
                   "$r" "$(size_label "$s")" "$t" "$(kv rps)" \
                   "$(awk -v u="$(kv p50_us)" 'BEGIN { print u / 1000 }')" \
                   "$(awk -v u="$(kv p99_us)" 'BEGIN { print u / 1000 }')" "$cpu" "$util" \
                   "$TEST_CPU" "$other" "$LOAD_CPU" "$lbusy"
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

TABLE="$RUN_DIR/table.txt"
perl - "$RAW" > "$TABLE" <<'EOF'
use strict; use warnings;
my (%v, @sizes);
open my $fh, '<', $ARGV[0] or die;
<$fh>;
while (<$fh>) {
    chomp;
    my ($size, $t, $r, $rps, $p50, $p99, $cpu, $util, $tb, $lb) = split /\t/;
    push @sizes, $size unless grep { $_ == $size } @sizes;
    push @{ $v{$size}{$t}{rps} }, $rps;
    push @{ $v{$size}{$t}{p50} }, $p50;
    push @{ $v{$size}{$t}{p99} }, $p99;
    push @{ $v{$size}{$t}{cpu} }, $cpu;
    push @{ $v{$size}{$t}{util} }, $util;
    push @{ $v{$size}{$t}{lb} }, $lb;
}
sub median { my @s = sort { $a <=> $b } @_; my $n = @s;
             return $n % 2 ? $s[$n / 2] : ($s[$n / 2 - 1] + $s[$n / 2]) / 2; }
sub max { my $m = shift; for (@_) { $m = $_ if $_ > $m } $m }
sub min { my $m = shift; for (@_) { $m = $_ if $_ < $m } $m }
sub label { my $s = shift; $s % 1024 ? "${s}B" : ($s / 1024) . "KiB" }
sub ms { sprintf "%.2fms", $_[0] / 1000 }

printf "%-6s %-8s %10s %17s %9s %9s %12s %7s %8s\n",
       'body', 'target', 'req/s', 'req/s min..max', 'p50', 'p99', 'CPU us/req',
       'busy', 'load CPU';
for my $s (@sizes) {
    for my $t (qw(plain gateway)) {
        my $x = $v{$s}{$t};
        printf "%-6s %-8s %10.0f %17s %9s %9s %12.1f %6.0f%% %7.0f%%\n",
            label($s), $t, median(@{ $x->{rps} }),
            sprintf("%.0f..%.0f", min(@{ $x->{rps} }), max(@{ $x->{rps} })),
            ms(median(@{ $x->{p50} })), ms(median(@{ $x->{p99} })),
            median(@{ $x->{cpu} }), median(@{ $x->{util} }), median(@{ $x->{lb} });
    }
}
print "\n";
for my $s (@sizes) {
    my ($p, $g) = ($v{$s}{plain}, $v{$s}{gateway});
    my $ratio = median(@{ $g->{rps} }) / median(@{ $p->{rps} });
    my $best  = max(@{ $g->{rps} }) / max(@{ $p->{rps} });
    my ($pc, $gc) = (median(@{ $p->{cpu} }), median(@{ $g->{cpu} }));
    printf "%-6s gateway/plain req/s: %.3f (medians), %.3f (bests)\n",
        label($s), $ratio, $best;
    printf "%-6s by worker CPU/request: %.3f (plain %.1f us, gateway %.1f us: %+.1f us, %+.1f%%)\n",
        '', $pc / $gc, $pc, $gc, $gc - $pc, 100 * ($gc - $pc) / $pc;
    my $n = grep { $_ < 90 } @{ $p->{util} }, @{ $g->{util} };
    my $m = @{ $p->{util} } + @{ $g->{util} };
    printf "%-6s note: in %d of %d runs the nginx under test was < 90%% busy, so not the\n"
         . "%-6s only bottleneck (load CPU or other processes): trust the CPU ratio more\n",
        '', $n, $m, '' if $n;
    if ($s == 1024) {
        printf "%-6s budget (>= 0.90, stretch >= 0.95): req/s ratio %.3f %s; CPU ratio %.3f %s\n",
            '', $ratio, verdict($ratio), $pc / $gc, verdict($pc / $gc);
    }
}
sub verdict { $_[0] >= 0.95 ? 'MET (stretch too)' : $_[0] >= 0.90 ? 'MET' : 'NOT MET' }
EOF

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
    echo
    echo "raw rounds:"
    column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
} > "$RESULTS_DIR/latest.txt"

cat "$TABLE"
echo
echo "written: $RESULTS_DIR/latest.txt"
FAILED=0
