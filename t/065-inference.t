# Inference tables: the request and the answer as JSON text, a stream as the
# message it assembled to, size caps, and no credentials in any record.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;

our $http_config = <<'_EOC_';
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
    ai_gateway_inference_log logs/inference.jsonl buffer=0;
_EOC_

our $config = <<'_EOC_';
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_inference_table on;
        ai_gateway_user $http_x_user;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
    location = /usage {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    my $n = $block->seq_num;
    for my $s (qw(http_config config)) {
        my $v = $block->$s;
        next unless defined $v;
        $v =~ s/(usage|inference)\.jsonl/$1-$n.jsonl/g;
        $block->set_value($s, $v);
    }
});

our $text = 'This is a mock response from the AI gateway test provider.';

# a long streamed answer (TEST 8): 1,500 words, some with an e-acute
our $long = join ' ', map { "word$_" . ($_ % 7 ? '' : "\x{e9}") } 1 .. 1500;
utf8::encode($long);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a JSON answer: request and response as JSON text
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello \\\"there\\\"\"}]}",
 "GET /records"]
--- more_headers
X-User: alice
X-Client-Request-Id: my-req-42
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/,
 qr/\A\{"request_date":"\d{4}-\d\d-\d\d","request_id":"[0-9a-f]{32}","client_request_id":"my-req-42","request_time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","status_code":200,"execution_duration_ms":\d+,"requester":"alice","endpoint":"\/v1\/","request":"\{\\"model\\":\\"gpt-4o-mini\\",\\"messages\\":\[\{\\"role\\":\\"user\\",\\"content\\":\\"Hello \\\\\\"there\\\\\\"\\"\}\]\}","response":"\{\\n  \\"id\\": \\"chatcmpl-[^\n]*This is a mock response[^\n]*","logging_error_codes":\[\]\}\n\z/]



=== TEST 2: a chat stream is stored as the message it assembled to
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/data: \[DONE\]/,
 qr/"response":"\{\\"model\\":\\"gpt-4o-mini\\",\\"content\\":\\"\Q$::text\E\\",\\"tool_arguments\\":null,\\"finish_reason\\":\\"stop\\",\\"usage\\":\{\\"input_tokens\\":3,\\"output_tokens\\":11,\\"total_tokens\\":14\}\}","logging_error_codes":\[\]\}\n\z/]



=== TEST 3: an Anthropic stream is assembled the same way
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/messages\n{\"model\":\"claude-haiku-4-5\",\"max_tokens\":50,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/message_stop/,
 qr/"response":"\{\\"model\\":\\"claude-haiku-4-5\\",\\"content\\":\\"\Q$::text\E\\",\\"tool_arguments\\":null,\\"finish_reason\\":\\"end_turn\\",\\"usage\\":\{\\"input_tokens\\":3,\\"output_tokens\\":11,\\"total_tokens\\":14\}\}"/]



=== TEST 4: a 3 MiB answer over max_payload=1m is left out with MAX_RESPONSE_SIZE_EXCEEDED
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
    ai_gateway_inference_log logs/inference.jsonl buffer=0 max_payload=1m;
--- config
    location /v1/ {
        ai_gateway_inference_table on;
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/big;
    }
    location = /big {
        default_type application/json;
        alias html/big.json;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
    location = /usage {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- user_files eval
">>> big.json\n" . '{"id":"chatcmpl-big","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"' . ("x" x (3 * 1024 * 1024)) . '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":786432,"total_tokens":786435}}'
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records", "GET /usage"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"completion_tokens":786432/,
 qr/"request":"\{[^\n]*"response":null,"logging_error_codes":\["MAX_RESPONSE_SIZE_EXCEEDED"\]\}\n\z/,
 qr/"input_token_count":3,"output_token_count":786432,"total_token_count":786435,[^\n]*"token_count_source":"provider","input_character_count":11,"output_character_count":3145728,/]



=== TEST 5: a request over max_payload is left out with MAX_REQUEST_SIZE_EXCEEDED
--- http_config
    ai_gateway_inference_log logs/inference.jsonl buffer=0 max_payload=1k;
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" . ("long " x 300) . "\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/,
 qr/"request":null,"response":"\{[^\n]*","logging_error_codes":\["MAX_REQUEST_SIZE_EXCEEDED"\]\}\n\z/]



=== TEST 6: credentials never reach a record, even when the upstream echoes them
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records", "GET /usage"]
--- more_headers
Authorization: Bearer sk-planted-0123456789abcdef
x-api-key: sk-ant-planted-fedcba9876543210
X-Mock-Echo: 1
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/sk-planted-0123456789abcdef/, qr/\[REDACTED\]/, qr/"token_count_source"/]
--- response_body_unlike eval
[qr/^$/, qr/planted/, qr/planted/]



=== TEST 7: answers with control bytes, UTF-8 and invalid bytes are stored as valid JSON text
--- http_config
    ai_gateway_inference_log logs/inference.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_inference_table on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/odd;
    }
    location = /odd {
        default_type application/json;
        alias html/odd.json;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
--- user_files eval
">>> odd.json\n" . "{\"text\":\"caf\xc3\xa9 \xe2\x82\xac tab\there \x01 bad\xff end \\\"q\\\" back\\\\slash " . ("plain " x 40) . "\"}"
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[]}", "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/end/,
 qr/"response":"\{\\"text\\":\\"caf\xc3\xa9 \xe2\x82\xac tab\\there \\u0001 bad\\ufffd end \\\\\\"q\\\\\\" back\\\\\\\\slash (?:plain ){40}\\"\}","logging_error_codes":\[\]\}\n\z/]



=== TEST 8: a long stream (12 KB of text, a token an event) is assembled whole, across the capture's growth
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"mock\":{\"text\":\"$::long\"}}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/data: \[DONE\]/,
 qr/"response":"\{\\"model\\":\\"gpt-4o-mini\\",\\"content\\":\\"\Q$::long\E\\",\\"tool_arguments\\":null,\\"finish_reason\\":\\"stop\\",/]



=== TEST 9: a streamed tool call's arguments are assembled whole
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}],\"mock\":{\"tool_call\":\"get_weather\",\"tool_args\":{\"city\":\"Paris\",\"days\":3,\"units\":\"metric\"}}}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/data: \[DONE\]/,
 do { my $want = q'"response":"{\\"model\\":\\"gpt-4o-mini\\",\\"content\\":null,\\"tool_arguments\\":\\"{\\\\\\"city\\\\\\":\\\\\\"Paris\\\\\\",\\\\\\"days\\\\\\":3,\\\\\\"units\\\\\\":\\\\\\"metric\\\\\\"}\\",\\"finish_reason\\":\\"tool_calls\\",'; qr/\Q$want\E/ }]



=== TEST 10: the gateway's own secrets never reach a record, even when the upstream echoes them
The secret is sent upstream as the key and also as another header, and the
mock echoes the request's headers in its answer; the record of the answer
has [REDACTED] where the secret was.
--- http_config eval
$::http_config . "    ai_gateway_secret planted file=\$TEST_NGINX_HTML_DIR/planted.key;\n"
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_inference_table on;
        proxy_set_header Authorization "Bearer $ai_secret_planted";
        proxy_set_header X-Org-Token "org:$ai_secret_planted";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
    location = /usage {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- user_files
>>> planted.key
sk-gateway-planted-0123456789
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records", "GET /usage"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"authorization":"Bearer sk-gateway-planted-0123456789"/,
 qr/\\"authorization\\":\\"Bearer \[REDACTED\]\\"[^\n]*\\"x-org-token\\":\\"org:\[REDACTED\]\\"/,
 qr/"token_count_source"/]
--- response_body_unlike eval
[qr/^$/, qr/planted/, qr/planted/]



=== TEST 11: secrets within and across each other, and a secret with a quote (escaped in JSON): no part of any reaches a record
Found in review: cut one after another, a shorter secret inside a longer one
left the rest of the longer one in the record.  The mock echoes the
headers in its answer, as JSON strings.
--- http_config
    ai_gateway_inference_log logs/inference.jsonl buffer=0;
    ai_gateway_secret a file=$TEST_NGINX_HTML_DIR/a.key;
    ai_gateway_secret b file=$TEST_NGINX_HTML_DIR/b.key;
    ai_gateway_secret c file=$TEST_NGINX_HTML_DIR/c.key;
    ai_gateway_secret q file=$TEST_NGINX_HTML_DIR/q.key;
--- config
    location /v1/ {
        ai_gateway_inference_table on;
        proxy_set_header Authorization "Bearer $ai_secret_a";
        proxy_set_header X-B "$ai_secret_b";
        proxy_set_header X-AC "sk-gateway-AAAA-CCCC-7777-tail";
        proxy_set_header X-Q "$ai_secret_q";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
--- user_files
>>> a.key
sk-gateway-AAAA
>>> b.key
sk-gateway-AAAA-BBBB-9999
>>> c.key
AAAA-CCCC-7777
>>> q.key
pass"word-0123
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"x-b":"sk-gateway-AAAA-BBBB-9999"[^\n]*"x-q":"pass\\"word-0123"/,
 qr/\\"x-b\\":\\"\[REDACTED\]\\"[^\n]*\\"x-ac\\":\\"\[REDACTED\]-tail\\"[^\n]*\\"x-q\\":\\"\[REDACTED\]\\"/]
--- response_body_unlike eval
[qr/^$/, qr/AAAA|BBBB|CCCC|word-0123/]



=== TEST 12: a credential that matches everywhere in a large body (8 backslashes, 60,000 of them in the body): redacted at once, in linear time
Found in review: one cut a matching byte, sorted by insertion, took seconds
to minutes for one request (a 3 s client timeout here).
--- http_config
    ai_gateway_inference_log logs/inference.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_inference_table on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
--- more_headers
x-api-key: \\\\\\\\
--- timeout: 3
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" . ("\\\\" x 30000) . "\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/"request":"\{\\"model\\":\\"m\\",\\"messages\\":\[\{\\"role\\":\\"user\\",\\"content\\":\\"\[REDACTED\]\\"\}\]\}"/]
