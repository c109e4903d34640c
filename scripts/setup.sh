#!/usr/bin/env bash
# setup.sh [--test]: installs what is missing on a Debian 12 machine and builds
# the module into build/.  Safe to run again: it installs only what is absent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

pkgs="gcc make cmake pkg-config nginx nginx-dev libjansson-dev libhiredis-dev
      libpcre2-dev libssl-dev zlib1g-dev"
if [ "${1:-}" = "--test" ]; then
  pkgs="$pkgs perl libtest-base-perl libipc-run-perl libtext-diff-perl
        liblist-moreutils-perl libtest-longstring-perl redis-server valgrind
        prometheus"
fi

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
    || missing="$missing $p"
done
# Node runs the mock provider; a bundled Node (with its own npm) is fine too,
# and Debian's npm would conflict with it, so only nodejs and only if absent.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
# the suite runs the official openai package, installed with npm
if [ "${1:-}" = "--test" ]; then
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
  command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
fi

if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # nginx's postinst starts the system service; policy-rc.d keeps it stopped
  # where a service manager exists, and without one nothing is started.
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# the SDKs the tests use as clients, exactly as package-lock.json pins them
if [ "${1:-}" = "--test" ] && [ ! -d "$repo/t/node/node_modules/openai" ]; then
  echo "setup: npm ci in t/node"
  (cd "$repo/t/node" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$repo/build"
cd "$repo/build"
[ -f CMakeCache.txt ] || cmake .. -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
make --no-print-directory -s
