#!/usr/bin/env bash
# bench/slow-client.sh [MB]  -- the nginx worker's memory while a slow
# client (curl --limit-rate 100k) reads a large stream (MB megabytes,
# default 20) through the gateway, proxy_buffering off, in the modes that
# change what the client gets:
#   plain       proxy_pass alone (the reference)
#   usage-cut   ai_gateway_usage_tracking on: the usage chunk the gateway
#               asked for is cut out (links into proxy's buffers)
#   guard       ai_gateway_guardrails output pii=mask (copies)
#   translate   ai_gateway_upstream_api anthropic_messages (copies)
# The worker's RSS is read before the request and after 3 seconds of it,
# and what the client read in its 5 seconds is shown.
# With back-pressure, the gateway holds about what plain proxy_pass holds
# (its buffers); without, the upstream's stream piles up in memory as fast
# as loopback delivers it.  Loopback only.  Environment: NGINX, MODULE.
set -euo pipefail

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

MB=${1:-20}
[[ "$MB" =~ ^[0-9]+$ ]] && [ "$MB" -gt 0 ] || die "usage: $0 [megabytes]"
command -v curl >/dev/null || die "curl is required"
[ -f "$MODULE" ] || die "no module at $MODULE (build it first)"

dir=$(mktemp -d /tmp/ai-gateway-slow-client.XXXXXX)
chmod 755 "$dir"     # the workers read the streams
trap 'for m in plain usage-cut guard translate; do
          [ -f "$dir/$m/logs/nginx.pid" ] && "$NGINX" -p "$dir/$m/" -c conf/nginx.conf -s stop 2>/dev/null || true
      done; rm -rf "$dir"' EXIT

# an OpenAI chat stream and an Anthropic messages stream of about MB MB
perl -e '
    my ($dir, $mb) = @ARGV;
    my $n = int($mb * 1024 * 1024 / 130);
    open my $o, ">", "$dir/openai.sse" or die;
    print $o qq{data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word$_ and more text"},"finish_reason":null}]}\n\n} for 1 .. $n;
    print $o "data: [DONE]\n\n";
    open my $a, ">", "$dir/anthropic.sse" or die;
    print $a qq{event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","model":"x","content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}\n\n};
    print $a qq{event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n};
    print $a qq{event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word$_ and more"}}\n\n} for 1 .. $n;
    print $a qq{event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n};
    print $a qq{event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":$n}}\n\n};
    print $a qq{event: message_stop\ndata: {"type":"message_stop"}\n\n};
' "$dir" "$MB"

printf '%-10s %10s %14s %10s %12s\n' mode "RSS before" "RSS after 3 s" growth "client read"
echo "(the client reads for 5 s at most, curl --limit-rate 100k; the stream is about $MB MB)" 

for m in plain usage-cut guard translate; do
    port=$(free_port)
    mkdir -p "$dir/$m/conf" "$dir/$m/logs"
    case $m in
        plain)     d=""; f=openai.sse ;;
        usage-cut) d="ai_gateway on; ai_gateway_usage_tracking on;"; f=openai.sse ;;
        guard)     d="ai_gateway on; ai_gateway_guardrails output pii=mask;"; f=openai.sse ;;
        translate) d="ai_gateway on; ai_gateway_upstream_api anthropic_messages;"; f=anthropic.sse ;;
    esac
    cat > "$dir/$m/conf/nginx.conf" <<EOF
load_module $MODULE;
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log warn;
events {}
http {
    access_log off;
    ai_gateway_usage_log logs/usage.jsonl;
    server {
        listen 127.0.0.1:$port;
        location /v1/ {
            $d
            proxy_method GET;
            proxy_pass http://127.0.0.1:\$server_port/stream;
            proxy_buffering off;
        }
        location = /stream {
            default_type text/event-stream;
            alias $dir/$f;
        }
    }
}
EOF
    "$NGINX" -p "$dir/$m/" -c conf/nginx.conf
    for ((i = 0; i < 50; i++)); do [ -s "$dir/$m/logs/nginx.pid" ] && break; sleep 0.1; done
    worker=$(pgrep -P "$(cat "$dir/$m/logs/nginx.pid")" | head -n 1)
    before=$(ps -o rss= -p "$worker" | tr -d ' ')
    timeout 5 curl -s -o "$dir/$m/out" --limit-rate 100k \
        -H 'Content-Type: application/json' \
        -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' \
        "http://127.0.0.1:$port/v1/chat/completions" &
    client=$!
    sleep 3
    after=$(ps -o rss= -p "$worker" | tr -d ' ')
    wait "$client" || true
    "$NGINX" -p "$dir/$m/" -c conf/nginx.conf -s stop 2>/dev/null
    printf '%-10s %7s KB %11s KB %7s KB %9s KB\n' "$m" "$before" "$after" \
        "$((after - before))" "$(( $(wc -c < "$dir/$m/out") / 1024 ))"
done
