#!/usr/bin/env bash
# test.sh: set up, build, and run the C unit tests and the whole t/ suite.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh" --test
(cd "$repo/build" && ctest --output-on-failure)
exec "$repo/scripts/run-tests.sh" "$repo/build/ngx_http_ai_gateway_module.so"
