#!/usr/bin/env bash
# bench/callgrind.sh [REQUESTS]  -- instructions per request of plain
# proxy_pass and of the gateway, counted by valgrind's callgrind; the
# difference is what the module costs per request.  One pair of runs per
# case and body size (CASES, as in run.sh: inspect, usage, stream,
# translate).  See
# bench/README.md.
#
# Each target runs as ONE process (master_process off; daemon off) under
#   valgrind --tool=callgrind --collect-atstart=no \
#            --toggle-collect=ngx_process_events_and_timers
# so start-up (configuration, module loading) and shutdown are not counted:
# only the event loop, i.e. the requests.  bench/fixed_client.pl sends exactly
# REQUESTS requests (default 2000) on one keep-alive connection and checks
# every answer's body; the mock upstream runs natively.
#
# Environment: NGINX, MODULE, CASES="inspect usage stream translate",
# SIZES="1024 32768" (inspect), USAGE_SIZES=1024, STREAM_SIZES=1024,
# TRANSLATE_SIZES=1024, STREAM_CHUNKS=200, TOP=15, KEEP=1 (keep the run
# directory), PIN/TEST_CPU/LOAD_CPU, GATEWAY_* (see lib.sh).
set -euo pipefail

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

REQUESTS=${1:-${REQUESTS:-2000}}
TOP=${TOP:-15}
KEEP=${KEEP:-0}
STOP_TIMEOUT=120

[[ "$REQUESTS" =~ ^[0-9]+$ ]] && [ "$REQUESTS" -gt 0 ] || die "usage: $0 [requests]"
check_common
for t in valgrind callgrind_annotate; do
    command -v "$t" >/dev/null || die "$t is required (apt-get install -y valgrind)"
done
setup_pinning

start_run callgrind

row_label() { echo "$1 $(size_label "$2")"; }

gen_case_bodies "$RUN_DIR"
gen_stream "$RUN_DIR"
mock_response_file "$RUN_DIR"
mapfile -t ROWS < <(case_rows)

UP_PORT=$(free_port)
write_upstream_conf "$RUN_DIR/upstream" "$UP_PORT"
nginx_test "$RUN_DIR/upstream"
start_nginx "$RUN_DIR/upstream" "${PIN_LOAD[@]}"
UP_PID=$LAST_PID
wait_listen "$UP_PORT" "$UP_PID" "$RUN_DIR/upstream"

{
    describe
    echo "callgrind: $REQUESTS requests per run, one keep-alive connection (bench/fixed_client.pl),"
    echo "           counted inside ngx_process_events_and_timers only (no start-up/shutdown)"
} | tee "$RUN_DIR/header.txt"
echo

SUMMARY="$RUN_DIR/summary.tsv"
: > "$SUMMARY"
RECORDS="$RUN_DIR/records.txt"
: > "$RECORDS"

for row in "${ROWS[@]}"; do
    read -r c s <<< "$row"
    for t in plain gateway; do
        prefix="$RUN_DIR/$t-$c-$s"
        port=$(free_port)
        while [ "$port" = "$UP_PORT" ]; do port=$(free_port); done
        write_proxy_conf "$t" "$prefix" "$port" "$UP_PORT" 1
        nginx_test "$prefix"
        out="$RUN_DIR/callgrind.$t.$c.$s.out"

        echo "callgrind: $t $(row_label "$c" "$s"), $REQUESTS requests ..."
        start_nginx "$prefix" "${PIN_TEST[@]}" \
            valgrind --tool=callgrind --callgrind-out-file="$out" \
                     --collect-atstart=no \
                     --toggle-collect=ngx_process_events_and_timers \
                     --dump-instr="${DUMP_INSTR:-no}"
        pid=$LAST_PID
        wait_listen "$port" "$pid" "$prefix" 120

        expect=()
        [ "$t" = gateway ] && expect=("$MODEL")
        BENCH_URI=$(case_uri "$c") EXPECT_BODY=$(expected_body "$c" "$t") \
        EXPECT_TRANSLATION=$(expected_translation "$c" "$t") \
        "${PIN_LOAD[@]}" perl "$BENCH_DIR/fixed_client.pl" "$port" \
            "$(body_file "$RUN_DIR" "$c" "$s")" "$REQUESTS" "${expect[@]}" \
            > "$prefix/logs/client.txt" 2>&1 < /dev/null || {
                cat "$prefix/logs/client.txt" >&2
                echo "---- error log of $t:" >&2; tail -n 20 "$prefix/logs/error.log" >&2
                die "$t $(row_label "$c" "$s"): requests failed"
            }
        echo "           $(cat "$prefix/logs/client.txt")"

        stop_pid "$pid" "$STOP_TIMEOUT"
        [ -s "$out" ] || { cat "$prefix/logs/stdout.log" >&2; die "no callgrind output $out"; }
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
        [ -n "$ir" ] || die "no total in $out"
        printf '%s\t%s\t%s\t%s\n' "$c" "$s" "$t" "$ir" >> "$SUMMARY"

        if [ "$t" = gateway ] && { [ "$c" = usage ] || [ "$c" = stream ]; }; then
            # one usage and one inference record per request, provider counts
            # (the buffers are written at the latest when nginx exits)
            counts=$(perl "$BENCH_DIR/check_records.pl" count \
                          "$prefix/logs/ai_usage.jsonl" "$prefix/logs/ai_inference.jsonl")
            u=$(grep '^usage ' <<< "$counts" || true)
            i=$(grep '^inference ' <<< "$counts" || true)
            line="$(row_label "$c" "$s"): ${u:-no usage records}; ${i:-no inference records}"
            if [[ "$u" =~ \ records=$REQUESTS\ provider=$REQUESTS\  ]] \
               && [[ "$i" =~ \ records=$REQUESTS\ errors=0$ ]]; then
                echo "           records: $line: OK"
                echo "$line: OK" >> "$RECORDS"
            else
                echo "$line" >&2
                echo "---- error log of gateway:" >&2; tail -n 20 "$prefix/logs/error.log" >&2
                die "gateway $(row_label "$c" "$s"): expected $REQUESTS usage and inference records with provider token counts"
            fi
        fi
    done
done
echo

REPORT="$RUN_DIR/report.txt"
{
    cat "$RUN_DIR/header.txt"
    echo
    perl - "$SUMMARY" "$REQUESTS" <<'EOF'
use strict; use warnings;
my ($file, $n) = @ARGV;
my (%ir, @rows);
open my $fh, '<', $file or die;
while (<$fh>) {
    chomp;
    my ($c, $s, $t, $ir) = split /\t/;
    push @rows, "$c $s" unless grep { $_ eq "$c $s" } @rows;
    $ir{"$c $s"}{$t} = $ir;
}
sub slabel { my $s = shift; $s % 1024 ? "${s}B" : ($s / 1024) . "KiB" }
# the case column is 7 wide, wider for a longer name ("translate")
my $cw = 7;
for (@rows) { my ($c) = split ' '; $cw = length $c if length $c > $cw; }
my $lw = $cw + 6;
sub label { my ($c, $s) = split ' ', shift; sprintf "%-${cw}s %-5s", $c, slabel($s) }
sub c { my $x = sprintf "%.0f", shift; 1 while $x =~ s/^(-?\d+)(\d{3})/$1,$2/; $x }
printf "%-${lw}s %16s %16s %16s %9s\n", 'case  body', 'plain Ir/req', 'gateway Ir/req',
       'module Ir/req', 'overhead';
for my $row (@rows) {
    my ($p, $g) = ($ir{$row}{plain} / $n, $ir{$row}{gateway} / $n);
    printf "%-${lw}s %16s %16s %16s %8.1f%%\n", label($row), c($p), c($g),
           c($g - $p), 100 * ($g - $p) / $p;
}
EOF
    if [ -s "$RECORDS" ]; then
        echo
        echo "records (gateway, one usage + one inference record per request, provider token counts):"
        sed 's/^/  /' "$RECORDS"
    fi
    for row in "${ROWS[@]}"; do
        read -r c s <<< "$row"
        out="$RUN_DIR/callgrind.gateway.$c.$s.out"
        self="$RUN_DIR/annotate.gateway.$c.$s.self.txt"
        incl="$RUN_DIR/annotate.gateway.$c.$s.incl.txt"
        callgrind_annotate --auto=no --threshold=100 "$out" > "$self" 2>&1
        callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out" > "$incl" 2>&1
        echo
        echo "---- gateway $(row_label "$c" "$s"): top $TOP functions by own (exclusive) Ir, $REQUESTS requests"
        perl "$BENCH_DIR/cg_top.pl" self "$TOP" "$REQUESTS" < "$self"
        echo
        echo "---- gateway $(row_label "$c" "$s"): the module's functions (ngx_http_ai_gateway_*)"
        printf 'own Ir of all of them: %s per request\n' "$(
            perl "$BENCH_DIR/cg_top.pl" self 100000 "$REQUESTS" '^ngx_http_ai_gateway_' < "$self" \
                | awk 'NR > 1 { x = $1; gsub(",", "", x); m += x } END { printf "%.0f", m / n }' n="$REQUESTS")"
        echo "by own Ir:"
        perl "$BENCH_DIR/cg_top.pl" self "$TOP" "$REQUESTS" '^ngx_http_ai_gateway_' < "$self"
        echo "by inclusive Ir (callees included):"
        perl "$BENCH_DIR/cg_top.pl" incl "$TOP" "$REQUESTS" '^ngx_http_ai_gateway_' < "$incl"
    done
    echo
    echo "Ir = instructions executed (user space only: the kernel's TCP work is not counted)."
    echo "/usr/sbin/nginx is stripped: its static functions show as hex addresses;"
    echo "the module's .so has full symbols.  Function entries are merged by name"
    echo "(bench/cg_top.pl); full callgrind_annotate listings are kept with KEEP=1."
} > "$REPORT"

cp "$REPORT" "$RESULTS_DIR/callgrind-latest.txt"
rm -f "$RESULTS_DIR"/callgrind.*.latest.out
for f in "$RUN_DIR"/callgrind.*.out; do cp "$f" "$RESULTS_DIR/$(basename "$f" .out).latest.out"; done
cat "$REPORT"
echo
echo "written: $RESULTS_DIR/callgrind-latest.txt (profiles: $RESULTS_DIR/callgrind.*.latest.out)"
FAILED=0
