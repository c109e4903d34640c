#!/usr/bin/env bash
# bench/redis.sh [SECONDS]  -- the gateway with the three limits of the
# shared-memory bench (user/minute calls, endpoint/hour calls, user/day
# tokens) counted in Redis (ai_gateway_redis, a redis-server of its own on a
# loopback port, pinned with the load), against plain proxy_pass in the same
# run (bench/run.sh, case "inspect", 1 KiB), then the Redis commands per
# request from INFO commandstats.  Environment: as bench/run.sh, and
# REDIS_SERVER=redis-server.
set -euo pipefail

# the caller's SIZES, before lib.sh gives it its default (1 KiB and 32 KiB)
sizes=${SIZES:-1024}

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

REDIS_SERVER=${REDIS_SERVER:-redis-server}
command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found: apt-get install -y redis-server"
command -v redis-cli >/dev/null || die "redis-cli not found: apt-get install -y redis-tools"
setup_pinning

REDIS_PORT=$(free_port)
REDIS_DIR=$(mktemp -d)
"${PIN_LOAD[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$REDIS_DIR" --daemonize no --loglevel warning \
    >"$REDIS_DIR/redis.log" 2>&1 &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null; wait $REDIS_PID 2>/dev/null; rm -rf "$REDIS_DIR"' EXIT
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
rcli ping >/dev/null || die "redis-server did not start"

export GATEWAY_HTTP_DIRECTIVES="${GATEWAY_HTTP_DIRECTIVES:-} ai_gateway_redis 127.0.0.1:$REDIS_PORT timeout=1s on_error=deny;"
export GATEWAY_DIRECTIVES="${GATEWAY_DIRECTIVES:-}$BENCH_LIMITS"
export CASES=inspect SIZES=$sizes KEEP=1

rcli config resetstat >/dev/null
before=$(ls -d "$RESULTS_DIR"/run.* 2>/dev/null || true)
"$BENCH_DIR/run.sh" "$@"
run_dir=$(comm -13 <(echo "$before" | tr ' ' '\n' | sort) \
                   <(ls -d "$RESULTS_DIR"/run.* | sort) | tail -n 1)

# every request the gateway answered, warm-up included
requests=0
for f in "$run_dir"/wrk-*-gateway*.txt; do
    n=$(sed -n 's/^BENCH requests=\([0-9]*\).*/\1/p' "$f")
    requests=$((requests + ${n:-0}))
done

echo
echo "Redis commands (INFO commandstats) for $requests gateway requests:"
stats=$(rcli info commandstats | tr -d '\r' \
        | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),usec=\([0-9]*\).*/\1 \2 \3/p')
echo "$stats" | while read -r cmd calls usec; do
    printf '  %-12s %10d calls  %6.3f per request  %5.1f us per call\n' "$cmd" "$calls" \
        "$(echo "$calls / $requests" | bc -l)" "$(echo "$usec / $calls" | bc -l)"
done
# what Redis spent on the gateway's commands, a request (its own count of
# command time: the network and the event loop come on top)
usec=$(echo "$stats" | awk '$1 == "evalsha" || $1 == "xadd" { u += $3 } END { print u + 0 }')
printf '  Redis command time: %.1f us a request\n' "$(echo "$usec / $requests" | bc -l)"
[ "${KEEP_RUN:-0}" = 1 ] || rm -rf "$run_dir"
