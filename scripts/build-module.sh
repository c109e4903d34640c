#!/usr/bin/env bash
# build-module.sh NGINX_SRC WORKDIR REPO OUT_SO CFLAGS [CONF_FLAGS]
# Configures a copy of the nginx source tree with the flags of the nginx the
# module will load into, plus --add-dynamic-module, and builds only the module.
set -euo pipefail
src=$1 work=$2 repo=$3 out=$4 cflags=$5 conf_flags=${6:-}

if [ -z "$conf_flags" ]; then
  if [ -f "$src/conf_flags" ]; then
    # Debian's nginx-dev: NGX_CONF_FLAGS=( ... )
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    conf_flags="${NGX_CONF_FLAGS[*]}"
  else
    conf_flags="--with-compat"
  fi
fi

stamp="$work/.configured"
want="$conf_flags|$cflags|$repo"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || [ "$repo/config" -nt "$stamp" ]; then
  rm -rf "$work"
  mkdir -p "$work"
  cp -a "$src/." "$work/"
  # word splitting of conf_flags is intended: it is a list of flags
  # shellcheck disable=SC2086
  (cd "$work" && ./configure $conf_flags --with-cc-opt="$cflags" \
        --add-dynamic-module="$repo" >configure.log 2>&1) || {
    tail -n 30 "$work/configure.log"; exit 1; }
  echo "$want" > "$stamp"
fi

# nginx's Makefile does not know the linker script: a newer one relinks
map="$repo/ngx_ai_gateway_module/ngx_http_ai_gateway_module.map"
if [ "$map" -nt "$work/objs/ngx_http_ai_gateway_module.so" ]; then
  rm -f "$work/objs/ngx_http_ai_gateway_module.so"
fi

make -s -C "$work" -f objs/Makefile modules
# a new file, renamed over the old: an nginx that has the old one mapped
# (a test run) keeps it intact
cp "$work/objs/ngx_http_ai_gateway_module.so" "$out.tmp"
mv -f "$out.tmp" "$out"
