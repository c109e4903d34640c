#!/usr/bin/env bash
# run-tests.sh MODULE_SO [prove args]: the t/ suite against a built module.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
so=$(realpath "$1"); shift
export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_LOAD_MODULES="$so"
cd "$repo"
if [ $# -eq 0 ]; then set -- -r t; fi
exec prove "$@"
