#!/usr/bin/env bash
# bench/guardrails.sh [SECONDS]  -- the gateway with guardrails on input and
# output (pii=mask, 20 keywords, 10 patterns: bench/guard-keywords.txt,
# bench/guard-patterns.txt) on a 4 KiB prompt, against plain proxy_pass in
# the same run (bench/run.sh, case "inspect").  Environment: as bench/run.sh.
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
kw="$bench/guard-keywords.txt"
pat="$bench/guard-patterns.txt"

export GATEWAY_DIRECTIVES="${GATEWAY_DIRECTIVES:-}
    ai_gateway_guardrails input pii=mask invalid_keywords=$kw deny_patterns=$pat;
    ai_gateway_guardrails output pii=mask invalid_keywords=$kw deny_patterns=$pat;"
export CASES=inspect SIZES=${SIZES:-4096}

exec "$bench/run.sh" "$@"
