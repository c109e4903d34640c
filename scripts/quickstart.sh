#!/usr/bin/env bash
# quickstart.sh: set up, build, and run the gateway in the foreground on
# 127.0.0.1:8080 with conf-examples/quickstart.conf.  Without OPENAI_API_KEY the
# gateway proxies to the mock provider (started here on 127.0.0.1:8081); with
# it, to api.openai.com with the key injected by the gateway.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
exec "$repo/scripts/run-gateway.sh" "$repo/build/ngx_http_ai_gateway_module.so"
