# Prometheus metrics from the shared zone: exact counters, histograms,
# label escaping, the series cap, and cost.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;

workers(2);
master_on();

our $chat = '{"model":"m1","messages":[{"role":"user","content":"Hello there"}]}';
our $stream = '{"model":"m1","stream":true,"messages":[{"role":"user","content":"Hello there"}]}';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: known traffic, JSON and SSE, gives exact counters and histograms
--- http_config
    ai_gateway_price m1 input=2.5 output=10;
--- config
    location /v1/ {
        ai_gateway_endpoint chat;
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=3;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::chat", "POST /v1/chat/completions\n$::chat",
 "POST /v1/chat/completions\n$::stream", "POST /v1/chat/completions\n$::chat",
 "GET /metrics"]
--- error_code eval
[200, 200, 200, 429, 200]
--- response_body_like eval
[qr/chat/, qr/chat/, qr/DONE/, qr/rate_limit_exceeded/,
 qr/^ai_gateway_requests_total\{endpoint="chat",model="m1",status="200"\} 3\n(?s:.*)^ai_gateway_requests_total\{endpoint="chat",model="m1",status="429"\} 1\n(?s:.*)^ai_gateway_tokens_total\{endpoint="chat",model="m1",type="input"\} 9\n(?s:.*)^ai_gateway_tokens_total\{endpoint="chat",model="m1",type="output"\} 33\n(?s:.*)^ai_gateway_request_duration_seconds_bucket\{endpoint="chat",model="m1",le="120"\} 4\n^ai_gateway_request_duration_seconds_bucket\{endpoint="chat",model="m1",le="\+Inf"\} 4\n^ai_gateway_request_duration_seconds_sum\{endpoint="chat",model="m1"\} \d+\.\d{3}\n^ai_gateway_request_duration_seconds_count\{endpoint="chat",model="m1"\} 4\n(?s:.*)^ai_gateway_time_to_first_token_seconds_count\{endpoint="chat",model="m1"\} 3\n(?s:.*)^ai_gateway_upstream_attempts_total\{endpoint="chat",outcome="2xx"\} 3\n(?s:.*)^ai_gateway_rate_limit_rejections_total\{endpoint="chat",scope="endpoint",period="minute",kind="requests"\} 1\n(?s:.*)^ai_gateway_cost_usd_total\{endpoint="chat",model="m1"\} 0\.000352500000\n/m]



=== TEST 2: histogram buckets are cumulative, and a slow answer lands in the right ones
--- config
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Delay-Ms 300;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::chat", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat/,
 qr/le="0\.25"\} 0\n[^\n]*le="0\.5"\} 1\n[^\n]*le="1"\} 1\n(?s:.*)^ai_gateway_request_duration_seconds_sum\{endpoint="\/v1\/",model="m1"\} 0\.(?:3\d\d|4\d\d)\n/m]



=== TEST 3: label values are escaped
--- config
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"we\\\"ird\\\\mo\\ndel\",\"messages\":[]}", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat/, qr/^ai_gateway_requests_total\{endpoint="\/v1\/",model="we\\"ird\\\\mo\\ndel",status="200"\} 1$/m]



=== TEST 4: past ai_gateway_metrics_max_series, label sets go to the overflow series and are counted
--- http_config
    ai_gateway_metrics_max_series 3;
--- config
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-No-Usage 1;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- pipelined_requests eval
["POST /v1/embeddings\n{\"model\":\"a\",\"input\":\"\"}", "POST /v1/embeddings\n{\"model\":\"b\",\"input\":\"\"}",
 "POST /v1/embeddings\n{\"model\":\"c\",\"input\":\"\"}", "GET /metrics"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/embedding/, qr/embedding/, qr/embedding/,
 qr/^ai_gateway_requests_total\{endpoint="\/v1\/",model="a",status="200"\} 1\n(?s:.*)^ai_gateway_requests_total\{overflow="true"\} 2\n(?s:.*)^ai_gateway_metrics_series 7\n(?s:.*)^ai_gateway_metrics_dropped_series_total 9\n/m]



=== TEST 5: cost in the usage record and $ai_cost_usd: exact names, prefix*, cached input
--- http_config
    ai_gateway_price gpt-4o input=2.5 output=10 cached_input=1.25;
    ai_gateway_price gpt-4o* input=5 output=15;
    ai_gateway_price claude-* input=3 output=15;
    ai_gateway_usage_log logs/usage-5.jsonl buffer=0;
    log_format cost '$ai_model $ai_cost_usd';
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        access_log logs/cost-5.log cost;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Cached-Tokens $http_x_cached;
    }
    location = /records {
        alias logs/usage-5.jsonl;
    }
    location = /costs {
        alias logs/cost-5.log;
    }
--- request eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/messages\n{\"model\":\"claude-haiku\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n{\"model\":\"llama\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records", "GET /costs"]
--- more_headers eval
["X-Cached: 2", "", "", "", "", ""]
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_body_like eval
[qr/chat/, qr/chat/, qr/message/, qr/chat/,
 qr/"model":"gpt-4o",[^\n]*"cost_usd":0\.000115[,}](?s:.*)\n[^\n]*"model":"gpt-4o-mini",[^\n]*"cost_usd":0\.00018[,}](?s:.*)\n[^\n]*"model":"claude-haiku",[^\n]*"cost_usd":0\.000144[,}](?s:.*)\n[^\n]*"model":"llama",[^\n]*"cost_usd":null[,}]/,
 qr/\Agpt-4o 0\.000115\ngpt-4o-mini 0\.00018\nclaude-haiku 0\.000144\nllama \n\z/]



=== TEST 5b: counts whose cost would not fit in 64 bits (2e12 tokens at $10 a million) give no cost, not a wrapped one; the counts are still recorded
--- http_config
    ai_gateway_price m output=10 input=1;
    ai_gateway_usage_log logs/usage-5b.jsonl buffer=0;
    log_format cost '$ai_model [$ai_cost_usd]';
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        access_log logs/cost-5b.log cost;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Reasoning-Tokens $http_x_reasoning;
    }
    location = /records {
        alias logs/usage-5b.jsonl;
    }
    location = /costs {
        alias logs/cost-5b.log;
    }
--- request eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records", "GET /costs"]
--- more_headers eval
["X-Reasoning: 2000000000000", "X-Reasoning: 1000", "", ""]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/chat/, qr/chat/,
 qr/\A\{[^\n]*"output_token_count":2000000000011,[^\n]*"cost_usd":null[,}][^\n]*\n\{[^\n]*"output_token_count":1011,[^\n]*"cost_usd":0\.010113[,}][^\n]*\n\z/,
 qr/\Am \[\]\nm \[0\.010113\]\n\z/]
--- no_error_log
[alert]



=== TEST 6: nginx -t rejects a price without output
--- http_config
    ai_gateway_price m input=1;
--- config
    location = /metrics {
        ai_gateway_metrics;
    }
--- request
GET /metrics
--- must_die
--- error_log
"ai_gateway_price" needs input= and output= for "m"



=== TEST 7: nginx -t rejects a malformed price
--- http_config
    ai_gateway_price m input=1.2.3 output=2;
--- config
    location = /metrics {
        ai_gateway_metrics;
    }
--- request
GET /metrics
--- must_die
--- error_log
invalid parameter "input=1.2.3" in "ai_gateway_price" directive
