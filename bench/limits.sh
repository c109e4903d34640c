#!/usr/bin/env bash
# bench/limits.sh [SECONDS]  -- the gateway with the three limits of the
# shared-memory issue (user/minute calls, endpoint/hour calls, user/day
# tokens: BENCH_LIMITS in lib.sh) in the default zone, against plain
# proxy_pass in the same run (bench/run.sh, case "inspect", 1 KiB).  The
# limits are high enough never to reject: every request is counted,
# reserves its tokens and settles them from the answer's usage.
# Environment: as bench/run.sh (ROUNDS=6 is steadier than the default 3).
set -euo pipefail

# the caller's SIZES, before lib.sh gives it its default (1 KiB and 32 KiB)
sizes=${SIZES:-1024}

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

export GATEWAY_DIRECTIVES="${GATEWAY_DIRECTIVES:-}$BENCH_LIMITS"
export CASES=inspect SIZES=$sizes

exec "$BENCH_DIR/run.sh" "$@"
