#!/usr/bin/env bash
# issue-key.sh KEYS_FILE USER [group=NAME] [models=A,B]
#
# Issues a client key for ai_gateway_keys: prints the key once on stdout
# (hand it to the client; it is not stored anywhere) and appends its
# SHA-256 with the user, group and models to KEYS_FILE.  Reload nginx
# (nginx -s reload) for the gateway to know it.
set -euo pipefail

usage() { echo "usage: $0 KEYS_FILE USER [group=NAME] [models=A,B]" >&2; exit 2; }
[ $# -ge 2 ] || usage
file=$1 user=$2
shift 2

case $user in
    ''|*[!A-Za-z0-9._@-]*) echo "issue-key: a user is letters, digits and . _ @ -" >&2; exit 2;;
esac
for arg in "$@"; do
    case $arg in
        group=?*|models=?*) ;;
        *) usage;;
    esac
    case ${arg#*=} in
        *[!A-Za-z0-9._@,:/-]*) echo "issue-key: invalid value in \"$arg\"" >&2; exit 2;;
    esac
done

command -v openssl >/dev/null || { echo "issue-key: openssl is needed (apt-get install -y openssl)" >&2; exit 1; }

# 32 random bytes, URL-safe: "aigw-" + 43 characters
key="aigw-$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"
digest=$(printf '%s' "$key" | openssl dgst -sha256 -r | cut -d' ' -f1)

umask 077
printf 'sha256:%s user=%s%s\n' "$digest" "$user" "${*:+ $*}" >> "$file"
printf '%s\n' "$key"
