#!/usr/bin/env bash
# run-gateway.sh MODULE_SO: runs nginx in the foreground with
# conf-examples/quickstart.conf, prefix build/quickstart.  Provider: the mock
# (started here on 127.0.0.1:8081) unless OPENAI_API_KEY is set, then OpenAI.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
so=$(realpath "$1")
prefix="$repo/build/quickstart"
nginx=${NGINX:-/usr/sbin/nginx}

mkdir -p "$prefix/logs" "$prefix/modules"
ln -sf "$so" "$prefix/modules/ngx_http_ai_gateway_module.so"
cp "$repo/conf-examples/quickstart.conf" "$prefix/nginx.conf"

mock_pid=
cleanup() { [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null; true; }
trap cleanup EXIT

if [ -n "${OPENAI_API_KEY:-}" ]; then
  # The key stays in the environment: nginx's master reads it at start-up
  # (ai_gateway_secret), it is never written to a file or a log, and the
  # client's own Authorization is not forwarded.
  cat > "$prefix/provider.conf" <<'CONF'
ai_gateway_secret openai env=OPENAI_API_KEY;
upstream ai_provider { server api.openai.com:443; keepalive 16; }
map "" $ai_provider_scheme        { default https; }
map "" $ai_provider_host          { default api.openai.com; }
map "" $ai_provider_authorization { default "Bearer $ai_secret_openai"; }
CONF
  echo "quickstart: provider = api.openai.com (OPENAI_API_KEY is set)"
else
  cp "$repo/conf-examples/provider.conf" "$prefix/provider.conf"
  node "$repo/t/mock/provider.js" --port 8081 >"$prefix/logs/mock.log" 2>&1 &
  mock_pid=$!
  for _ in $(seq 50); do
    grep -q '^listening' "$prefix/logs/mock.log" 2>/dev/null && break
    sleep 0.1
  done
  echo "quickstart: provider = mock on 127.0.0.1:8081 (set OPENAI_API_KEY for OpenAI)"
fi

"$nginx" -t -q -p "$prefix/" -c "$prefix/nginx.conf"
echo "quickstart: gateway on http://127.0.0.1:8080 (Ctrl-C stops it); logs in $prefix/logs"
"$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT $nginx_pid 2>/dev/null; cleanup' EXIT INT TERM
wait "$nginx_pid"
