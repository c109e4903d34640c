# Providers: injected secrets, client keys, model lists and maps, routing
# by model, failover on upstream groups, and OpenAI-format clients served by
# an Anthropic fallback (requests and answers translated, JSON and SSE).
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;
use Digest::SHA qw(sha256_hex);

$ENV{AIGW_TEST_OPENAI_KEY} = 'sk-test-openai-secret-4242424242';
$ENV{AIGW_TEST_ANTHROPIC_KEY} = 'sk-ant-test-secret-5151515151';

our $body = '{"model":"gpt-4o","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Hello there"}]}';
our $stream = '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hello there"}]}';
our $stream_usage = '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello there"}]}';

# keys issued to clients: the file holds their SHA-256 only
our $keys = join '', map { "sha256:" . sha256_hex($_->[0]) . " $_->[1]\n" }
    (['aigw-alice-key-0001', 'user=alice group=research models=gpt-4o,gpt-4o-mini'],
     ['aigw-bob-key-0002', 'user=bob']);
$keys = "# issued by scripts/issue-key.sh\n\n$keys";

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: an injected secret reaches the upstream; the client's own credentials do not
--- http_config
    ai_gateway_secret openai env=AIGW_TEST_OPENAI_KEY;
--- config
    location /v1/ {
        ai_gateway on;
        proxy_set_header Authorization "Bearer $ai_secret_openai";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
Authorization: Bearer client-own-key-777
x-api-key: client-own-x-key-888
api-key: client-azure-key-999
--- error_code: 200
--- response_body_like eval
qr/"authorization":"Bearer sk-test-openai-secret-4242424242"/
--- response_body_unlike: client-own
--- no_error_log
sk-test-openai-secret



=== TEST 2: a secret read from a file, its line end dropped
--- http_config
    ai_gateway_secret fromfile file=$TEST_NGINX_HTML_DIR/openai.key;
--- user_files
>>> openai.key
sk-from-file-31337
--- config
    location /v1/ {
        ai_gateway on;
        proxy_set_header Authorization "Bearer $ai_secret_fromfile";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_body_like eval
qr/"authorization":"Bearer sk-from-file-31337"/



=== TEST 3: nginx -t fails for a secret whose environment variable is not set
--- http_config
    ai_gateway_secret missing env=AIGW_TEST_NOT_SET_ANYWHERE;
--- config
--- must_die
--- error_log
ai_gateway_secret "missing": the environment variable "AIGW_TEST_NOT_SET_ANYWHERE" is not set



=== TEST 4: nginx -t fails for a secret file that cannot be read
--- http_config
    ai_gateway_secret nofile file=/nonexistent/secret.key;
--- config
--- must_die
--- error_log
cannot open "/nonexistent/secret.key"



=== TEST 5: nginx -t fails for a secret given neither env= nor file=
--- http_config
    ai_gateway_secret bad sk-inline-value;
--- config
--- must_die
--- error_log
invalid parameter "sk-inline-value" in "ai_gateway_secret" directive, it must be env=VAR or file=PATH



=== TEST 6: a known client key is let in and says who the user is
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        add_header X-User $ai_user always;
        add_header X-Group $ai_group always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
Authorization: Bearer aigw-alice-key-0001
--- error_code: 200
--- response_headers
X-User: alice
X-Group: research
--- no_error_log
aigw-alice-key



=== TEST 7: an unknown key gets 401 in the OpenAI shape, and is not logged
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
Authorization: Bearer aigw-mallory-key-6666
--- error_code: 401
--- response_body
{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}
--- no_error_log
aigw-mallory
--- error_log
ai_gateway: 401 invalid_api_key: Incorrect API key provided.



=== TEST 8: no key at all gets 401
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"
--- error_log
ai_gateway: 401 invalid_api_key: You didn't provide an API key.



=== TEST 9: a key in x-api-key (Anthropic clients) works too
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        add_header X-User $ai_user always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
x-api-key: aigw-bob-key-0002
--- error_code: 200
--- response_headers
X-User: bob



=== TEST 10: a model outside the key's list gets 403
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n{\"model\":\"o3\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"
--- more_headers
Authorization: Bearer aigw-alice-key-0001
--- error_code: 403
--- response_body
{"error":{"message":"Your API key is not allowed to use the model `o3`.","type":"invalid_request_error","code":"model_not_allowed"}}
--- error_log
ai_gateway: 403 model_not_allowed: "o3" for user "alice"



=== TEST 11: nginx -t fails for a malformed keys file, naming the line
--- user_files
>>> keys.txt
# comment
sha256:1234 user=x
--- http_config
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
    }
--- must_die
--- error_log eval
qr/ai_gateway_keys ".*keys\.txt", line 2: expected "sha256:<64 hex digits> user=NAME/



=== TEST 12: ai_gateway_models refuses other models with 404 in the OpenAI shape
--- config
    location /v1/ {
        ai_gateway_models gpt-4o gpt-4o-mini;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n{\"model\":\"gpt-5-secret\",\"messages\":[]}", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[404, 200]
--- response_body_like eval
[qr/^\{"error":\{"message":"The model `gpt-5-secret` does not exist or you do not have access to it\.","type":"invalid_request_error","code":"model_not_found"\}\}$/, qr/chat\.completion/]



=== TEST 13: a model alias: the upstream is asked for the mapped model, the record keeps the client's
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_model_map fast gpt-4o-mini;
        add_header X-Model $ai_model always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /usage {
        alias logs/usage.jsonl;
    }
--- request eval
["POST /v1/chat/completions\n{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", "GET /usage"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"model": "gpt-4o-mini"/, qr/"model":"fast","response_model":"gpt-4o-mini"/]



=== TEST 14: $ai_model in a map picks the upstream
--- http_config
    map $ai_model $ai_route {
        ~^claude-  /anthropic;
        default    /openai;
    }
--- config
    location /v1/ {
        ai_gateway on;
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT$ai_route$uri;
    }
--- request eval
["POST /v1/chat/completions\n{\"model\":\"claude-sonnet-4\",\"messages\":[]}", "POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"messages\":[]}"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr{"url":"/anthropic/v1/chat/completions"}, qr{"url":"/openai/v1/chat/completions"}]



=== TEST 15: failover: the primary answers 503, the backup server answers; the record lists both attempts
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
    upstream ai_group {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT backup;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            default_type application/json;
            return 503 '{"error":{"message":"overloaded","type":"server_error","code":null}}';
        }
    }
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_next_upstream error timeout http_429 http_500 http_502 http_503 http_504 non_idempotent;
        proxy_next_upstream_tries 3;
        proxy_pass http://ai_group;
    }
    location = /usage {
        alias logs/usage.jsonl;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "GET /usage"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/"upstream_addr":"127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+","upstream_attempts":2,"status_code":200,.*"total_token_count":16,/]



=== TEST 16: failover: a primary that is down is skipped
--- http_config
    upstream ai_group {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT backup;
    }
--- config
    location /v1/ {
        ai_gateway on;
        proxy_next_upstream error timeout http_429 http_500 http_502 http_503 http_504 non_idempotent;
        proxy_pass http://ai_group;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_body_like: chat\.completion
--- error_log
connect() failed (111: Connection refused)



=== TEST 17: failover: when all fail (429 then 503), the client gets the last error in the OpenAI shape
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
    upstream ai_group {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT backup;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            default_type application/json;
            add_header Retry-After 7;
            return 429 '{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}';
        }
    }
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_next_upstream error timeout http_429 http_500 http_502 http_503 http_504 non_idempotent;
        proxy_set_header x-mock-status 503;
        proxy_pass http://ai_group;
    }
    location = /usage {
        alias logs/usage.jsonl;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "GET /usage"]
--- error_code eval
[503, 200]
--- response_body_like eval
[qr/^\{\s*"error":\s*\{\s*"message":/, qr/"upstream_attempts":2,"status_code":503,.*"total_token_count":0,/]



=== TEST 18: the Anthropic fallback answers an OpenAI client in the chat.completion shape
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
--- config
    location /v1/ {
        ai_gateway on;
        proxy_set_header x-mock-status 503;
        proxy_intercept_errors on;
        error_page 429 500 502 503 504 = @anthropic;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location @anthropic {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        ai_gateway_model_map gpt-4o claude-sonnet-4;
        proxy_set_header x-mock-status "";
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_headers
Content-Type: application/json
!Transfer-Encoding
--- raw_response_headers_like: Content-Length: \d+\r\n
--- response_body_like eval
qr/^\{"id":"chatcmpl-[A-Za-z0-9]+","object":"chat\.completion","created":\d+,"model":"claude-sonnet-4","choices":\[\{"index":0,"message":\{"role":"assistant","content":"This is a mock response from the AI gateway test provider\."\},"logprobs":null,"finish_reason":"stop"\}\],"usage":\{"prompt_tokens":5,"completion_tokens":11,"total_tokens":16,"prompt_tokens_details":\{"cached_tokens":0\}\}\}$/



=== TEST 19: what the Anthropic fallback is sent: Messages shape, its key, its version, /v1/messages
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        ai_gateway_model_map gpt-4o claude-sonnet-4;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["DELETE /__mock/requests", "POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"max_tokens\":50,\"temperature\":0.5,\"stop\":\"END\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Hi\"}]}", "GET /__mock/requests"]
--- more_headers
Authorization: Bearer client-own-key-777
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr//, qr/chat\.completion/,
 qr{^(?=.*"anthropic-version":"2023-06-01")(?=.*"x-api-key":"sk-ant-test-secret-5151515151").*"url":"/v1/messages".*"body":"\{\\"model\\":\\"claude-sonnet-4\\",\\"max_tokens\\":50,\\"messages\\":\[\{\\"role\\":\\"user\\",\\"content\\":\\"Hi\\"\}\],\\"system\\":\\"S\\",\\"stop_sequences\\":\[\\"END\\"\],\\"temperature\\":0\.5\}"}s]
--- response_body_unlike eval
[qr/client-own/, qr/client-own/, qr/client-own/]



=== TEST 20: the Anthropic fallback streams OpenAI chunks; without include_usage, no usage chunk; Anthropic's ping is a comment where it came
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        proxy_buffering off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::stream"
--- error_code: 200
--- response_headers_like
Content-Type: text/event-stream.*
--- response_body_like eval
qr/^data: \{"id":"chatcmpl-\w+","object":"chat\.completion\.chunk","created":\d+,"model":"gpt-4o","choices":\[\{"index":0,"delta":\{"role":"assistant","content":""\},"logprobs":null,"finish_reason":null\}\]\}\n\n: ping\n\n(data: \{[^\n]*"delta":\{"content":"[^"]*"\}[^\n]*\n\n){11}data: \{[^\n]*"delta":\{\},"logprobs":null,"finish_reason":"stop"\}\]\}\n\ndata: \[DONE\]\n\n\z/



=== TEST 21: with include_usage, the stream ends with the usage chunk, and the record has the exact tokens
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        proxy_buffering off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /usage {
        alias logs/usage.jsonl;
    }
--- request eval
["POST /v1/chat/completions\n$::stream_usage", "GET /usage"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"finish_reason":"stop"\}\]\}\n\ndata: \{"id":"chatcmpl-\w+","object":"chat\.completion\.chunk","created":\d+,"model":"gpt-4o","choices":\[\],"usage":\{"prompt_tokens":3,"completion_tokens":11,"total_tokens":14,"prompt_tokens_details":\{"cached_tokens":0\}\}\}\n\ndata: \[DONE\]\n\n\z/,
 qr/"request_streaming":true,"input_token_count":3,"output_token_count":11,"total_token_count":14,/]



=== TEST 22: an overloaded Anthropic (529) becomes 503 with the OpenAI error shape
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_set_header x-mock-status 529;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 503
--- response_body_like eval
qr/^\{"error":\{"message":"[^"]+","type":"server_error","code":"overloaded_error"\}\}$/



=== TEST 23: a request the fallback cannot express (n=2) gets 400 in the OpenAI shape
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"
--- error_code: 400
--- response_body_like eval
qr/^\{"error":\{"message":"[^"]*\bn\b[^"]*","type":"invalid_request_error","code":"invalid_request"\}\}$/
--- error_log
ai_gateway: 400 untranslatable request:



=== TEST 24: nginx -t fails for an unknown upstream API, and for an unknown secret
--- config
    location /v1/ {
        ai_gateway_upstream_api gemini;
    }
--- must_die
--- error_log
invalid value "gemini" in "ai_gateway_upstream_api" directive, it must be "anthropic_messages" or "openai"



=== TEST 25: nginx -t fails for an upstream API naming an unknown secret
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=nope;
    }
--- must_die
--- error_log
unknown secret "nope" in "ai_gateway_upstream_api": define it with ai_gateway_secret first



=== TEST 26: a tool call of the Anthropic fallback reaches the OpenAI client as tool_calls (JSON)
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_set_header x-mock-tool-call get_weather;
        proxy_set_header x-mock-tool-args '{"city":"Paris","unit":"celsius"}';
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}],\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}]}"
--- error_code: 200
--- response_body_like eval
qr/"message":\{"role":"assistant","content":null,"tool_calls":\[\{"id":"toolu_01\w+","type":"function","function":\{"name":"get_weather","arguments":"\{\\"city\\":\\"Paris\\",\\"unit\\":\\"celsius\\"\}"\}\}\]\},"logprobs":null,"finish_reason":"tool_calls"\}/



=== TEST 27: two tool calls of the Anthropic fallback stream as OpenAI tool_calls deltas
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_buffering off;
        proxy_set_header x-mock-tool-call get_weather;
        proxy_set_header x-mock-tool-args '{"city":"Paris"}';
        proxy_set_header x-mock-tool-call-2 get_time;
        proxy_set_header x-mock-tool-args-2 '{"zone":"CET"}';
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Weather and time in Paris?\"}]}"
--- error_code: 200
--- response_body_filters eval
sub {
    my ($body, %args, %names) = @_;
    for my $chunk ($body =~ /^data: (\{.*\})$/mg) {
        while ($chunk =~ /"tool_calls":\[\{"index":(\d)(?:,"id":"[^"]+","type":"function")?,"function":\{(?:"name":"(\w+)",)?"arguments":"((?:[^"\\]|\\.)*)"\}/g) {
            $names{$1} = $2 if defined $2;
            $args{$1} .= $3;
        }
    }
    my ($finish) = $body =~ /"finish_reason":"(\w+)"\}\]\}\n\ndata: \[DONE\]\n\n\z/;
    CORE::join '|', (map { "$_:$names{$_}:$args{$_}" } sort keys %args), $finish // 'none';
}
--- response_body eval
'0:get_weather:{\"city\":\"Paris\"}|1:get_time:{\"zone\":\"CET\"}|tool_calls'



=== TEST 28: a conversation with tools, tool calls and tool results is sent in Anthropic's shape
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["DELETE /__mock/requests",
 "POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"tool_choice\":\"required\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}],\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C, sunny\"}]}",
 "GET /__mock/requests"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr//, qr/chat\.completion/,
 qr/\\"messages\\":\[\{\\"role\\":\\"user\\",\\"content\\":\\"Weather\?\\"\},\{\\"role\\":\\"assistant\\",\\"content\\":\[\{\\"type\\":\\"tool_use\\",\\"id\\":\\"call_1\\",\\"name\\":\\"get_weather\\",\\"input\\":\{\\"city\\":\\"Paris\\"\}\}\]\},\{\\"role\\":\\"user\\",\\"content\\":\[\{\\"type\\":\\"tool_result\\",\\"tool_use_id\\":\\"call_1\\",\\"content\\":\\"18C, sunny\\"\}\]\}\].*\\"tools\\":\[\{\\"name\\":\\"get_weather\\",\\"description\\":\\"Weather\\",\\"input_schema\\":\{/s]



=== TEST 29: a GET (models list) needs a known key too
--- user_files eval
[["keys.txt", $::keys]]
--- config
    location /v1/ {
        ai_gateway_keys $TEST_NGINX_HTML_DIR/keys.txt;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval
["", "Authorization: Bearer aigw-bob-key-0002"]
--- error_code eval
[401, 200]
--- response_body_like eval
[qr/"code":"invalid_api_key"/, qr/"object":\s*"list"/]



=== TEST 30: a translated request is read once for its facts and its translation: the same token reservation as where nothing is translated
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /openai/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
    }
--- request eval
my $b = '{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"system","content":"ab\"c"},{"role":"user","content":[{"type":"text","text":"h\u00e9llo \ud83d\ude00"},{"type":"text","text":"w"}]}],"max_tokens":10}';
["POST /v1/chat/completions\n$b", "POST /openai/chat/completions\n$b",
 "POST /v1/chat/completions\n" . '{"model":"gpt-4o","messages":[{"role":"user","content":"a\u0000b"}]}',
 "POST /v1/chat/completions\n" . '{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],}']
--- more_headers eval
["X-User: t1", "X-User: t2", "X-User: t3", "X-User: t4"]
--- error_code eval
[200, 200, 400, 400]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 87\r\n/, qr/x-ratelimit-remaining-tokens: 87\r\n/, qr//, qr//]
--- response_body_like eval
[qr/"object":\s*"chat\.completion"/, qr/"object":\s*"chat\.completion"/,
 qr/^\{"error":\{"message":"We could not parse the JSON body of your request: \\\\u0000 is not allowed at byte \d+\.","type":"invalid_request_error","code":"invalid_json"\}\}$/,
 qr/^\{"error":\{"message":"We could not parse the JSON body of your request: [^"]+ at byte \d+\.","type":"invalid_request_error","code":"invalid_json"\}\}$/]



=== TEST 31: a translating location counts the prompt's characters from the body's tree when asked ($ai_input_characters), as the scan does elsewhere
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        add_header X-AI-Input-Chars "[$ai_input_characters]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /openai/ {
        ai_gateway on;
        add_header X-AI-Input-Chars "[$ai_input_characters]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
    }
--- request eval
my $b = '{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"d\u00e9j\u00e0 vu"}]}]}';
["POST /v1/chat/completions\n$b", "POST /openai/chat/completions\n$b"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-AI-Input-Chars: [16]", "X-AI-Input-Chars: [16]"]



=== TEST 32: a request refused before it is counted (no model) records no prompt characters, on a translating location as elsewhere
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /openai/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
    }
    location = /usage {
        alias logs/usage.jsonl;
    }
--- request eval
my $b = '{"messages":[{"role":"user","content":"Hello there"}]}';
["POST /v1/chat/completions\n$b", "POST /openai/chat/completions\n$b", "GET /usage"]
--- error_code eval
[400, 400, 200]
--- response_body_like eval
[qr/"code":"missing_model"/, qr/"code":"missing_model"/,
 qr/\A\{[^\n]*"endpoint":"\/v1\/"[^\n]*"status_code":400,[^\n]*"input_character_count":0,[^\n]*\n\{[^\n]*"endpoint":"\/openai\/"[^\n]*"status_code":400,[^\n]*"input_character_count":0,[^\n]*\n\z/]



=== TEST 33: a translated JSON answer, and a translated error, go with their Content-Length, not chunked: two on one connection parse
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_set_header x-mock-status $http_x_status;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /ok/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /ok/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-Status: 529
--- error_code eval
[200, 503]
--- raw_response_headers_like eval
[qr/\r\nContent-Length: \d+\r\n/, qr/\r\nContent-Length: \d+\r\n/]
--- raw_response_headers_unlike eval
[qr/Transfer-Encoding/i, qr/Transfer-Encoding/i]
--- response_body_like eval
[qr/^\{"id":"chatcmpl-[A-Za-z0-9]+","object":"chat\.completion",.*"finish_reason":"stop"\}\],"usage":\{"prompt_tokens":5,"completion_tokens":11,"total_tokens":16,"prompt_tokens_details":\{"cached_tokens":0\}\}\}$/,
 qr/^\{"error":\{"message":"[^"]+","type":"server_error","code":"overloaded_error"\}\}$/]



=== TEST 34: an Anthropic answer that comes chunked, or in small buffers, is translated whole, with its Content-Length
--- config
    location /chunked/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$server_port;
    }
    location /small/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_buffer_size 256;
        proxy_buffers 8 64;
        proxy_busy_buffers_size 256;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /chunked/messages {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_http_version 1.1;
        # a filter that never matches drops the length: the answer is chunked
        sub_filter_types application/json;
        sub_filter 'never-in-the-answer' '';
    }
--- pipelined_requests eval
["POST /chunked/chat/completions\n$::body", "POST /small/chat/completions\n$::body"]
--- more_headers
x-mock-text: A longer answer, so that it spans several of the small buffers: one, two, three, four, five, six, seven, eight, nine, ten.
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/\r\nContent-Length: \d+\r\n/, qr/\r\nContent-Length: \d+\r\n/]
--- raw_response_headers_unlike eval
[qr/Transfer-Encoding/i, qr/Transfer-Encoding/i]
--- response_body_like eval
[qr/^\{"id":"chatcmpl-[A-Za-z0-9]+","object":"chat\.completion",.*"content":"A longer answer, so that it spans several of the small buffers: one, two, three, four, five, six, seven, eight, nine, ten\."\},"logprobs":null,"finish_reason":"stop"\}\],"usage":\{"prompt_tokens":5,"completion_tokens":\d+,"total_tokens":\d+,"prompt_tokens_details":\{"cached_tokens":0\}\}\}$/,
 qr/^\{"id":"chatcmpl-[A-Za-z0-9]+","object":"chat\.completion",.*"content":"A longer answer, so that it spans several of the small buffers: one, two, three, four, five, six, seven, eight, nine, ten\."\},"logprobs":null,"finish_reason":"stop"\}\],"usage":\{"prompt_tokens":5,"completion_tokens":\d+,"total_tokens":\d+,"prompt_tokens_details":\{"cached_tokens":0\}\}\}$/]



=== TEST 35: a client that accepts gzip still gets the translation: the Anthropic upstream is asked for identity (it gzips what it may), with no usage tracking to ask for it
Found in review: only the answer's readers asked, so the raw compressed Messages answer reached the client.
--- user_files
>>> msg.json
{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{"type":"text","text":"Hello from far away, hello again, and hello once more."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":7,"output_tokens":13}}
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_method GET;
        proxy_http_version 1.1;
        proxy_pass http://127.0.0.1:$server_port/msg;
    }
    location = /msg {
        gzip on;
        gzip_types application/json;
        gzip_min_length 1;
        default_type application/json;
        alias html/msg.json;
    }
--- more_headers
Accept-Encoding: gzip
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_headers
Content-Type: application/json
!Content-Encoding
--- response_body_like eval
qr/^\{"id":"chatcmpl-01","object":"chat\.completion",.*"content":"Hello from far away, hello again, and hello once more\.".*"finish_reason":"stop".*"prompt_tokens":7,"completion_tokens":13,/



=== TEST 36: error answers that are not Anthropic's JSON keep their status and get OpenAI's error shape as application/json: a text/plain 429 of a proxy in front, nginx's own HTML 502, an empty 401
Found in review: all were "status 500" server errors, and the 502 went out as text/html.
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$server_port/up$http_x_case;
    }
    location = /up429 {
        default_type text/plain;
        return 429 "Too many requests";
    }
    location = /up401 {
        return 401;
    }
    location = /up502 {
        proxy_pass http://127.0.0.1:1;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-Case: 429", "X-Case: 401", "X-Case: 502"]
--- error_code eval
[429, 401, 502]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/json", "Content-Type: application/json"]
--- response_body eval
['{"error":{"message":"the fallback provider failed with status 429","type":"rate_limit_error","code":"rate_limit_exceeded"}}',
 '{"error":{"message":"the fallback provider failed with status 401","type":"authentication_error","code":"invalid_api_key"}}',
 '{"error":{"message":"the fallback provider failed with status 502","type":"server_error","code":"upstream_error"}}']



=== TEST 37: a success that is no Messages answer is the provider's failure: 502, not 200 with an error body
Found in review.
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$server_port/up;
    }
    location = /up {
        default_type application/json;
        return 200 '{"type":"error","error":{"type":"api_error","message":"Internal server error"}}';
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 502
--- response_headers
Content-Type: application/json
--- response_body chomp
{"error":{"message":"Internal server error","type":"server_error","code":"api_error"}}
--- error_log
the Anthropic answer with status 200 is no Messages answer: 502 to the client



=== TEST 38: an Anthropic primary that fails over (error_page) to a location that does not translate: that upstream gets the client's OpenAI request, its URI, no Anthropic key or version, and its answer reaches the client untranslated; with the gateway on or off there
Found in review: the fallback was sent the Messages body and the Anthropic key, and its answer was "translated" into an error.
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
    ai_gateway_secret openai env=AIGW_TEST_OPENAI_KEY;
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        ai_gateway_model_map gpt-4o claude-sonnet-4;
        proxy_set_header x-mock-status 529;
        proxy_intercept_errors on;
        error_page 529 = @openai$http_x_gateway;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location @openaion {
        proxy_set_header x-mock-status "";
        proxy_set_header x-mock-echo 1;
        proxy_set_header Authorization "Bearer $ai_secret_openai";
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location @openaioff {
        ai_gateway off;
        proxy_set_header x-mock-status "";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-Gateway: on", "X-Gateway: off"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr{^(?=.*"url":"/v1/chat/completions")(?=.*"authorization":"Bearer sk-test-openai-secret-4242424242").*"body":"\{\\"model\\":\\"gpt-4o\\",\\"messages\\":\[\{\\"role\\":\\"system\\",\\"content\\":\\"Be terse\.\\"\},\{\\"role\\":\\"user\\",\\"content\\":\\"Hello there\\"\}\]\}"}s,
 qr{^(?=.*"url":"/v1/chat/completions").*"body":"\{\\"model\\":\\"gpt-4o\\",\\"messages\\":\[\{\\"role\\":\\"system\\",\\"content\\":\\"Be terse\.\\"\},\{\\"role\\":\\"user\\",\\"content\\":\\"Hello there\\"\}\]\}"}s]
--- response_body_unlike eval
[qr/sk-ant-test|anthropic-version|x-api-key|claude/, qr/sk-ant-test|anthropic-version|x-api-key|claude/]



=== TEST 39: an Anthropic stream whose upstream resets mid-way ends, translated, with the error event and [DONE] in a complete chunked body; a JSON answer reset mid-way is a 502 in OpenAI's shape
Found in review: nginx ends such an answer with a flush, not the last buffer, and the client got an unterminated body (or, for JSON, no status line).
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        ai_gateway_model_map gpt-4o claude-sonnet-4;
        proxy_set_header x-mock-reset-after $http_x_reset;
        proxy_buffering off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::stream", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-Reset: 4", "X-Reset: 1"]
--- error_code eval
[200, 502]
--- response_body_like eval
[qr/^data: \{"id":"chatcmpl-.*"role":"assistant".*\n\ndata: \{"error":\{"message":"The fallback provider's stream ended early\.","type":"server_error","code":"upstream_error"\}\}\n\ndata: \[DONE\]\n\n\z/s,
 qr/^\{"error":\{"message":"the fallback provider failed with status 502","type":"server_error","code":"upstream_error"\}\}\z/]
--- error_log
the translation ends it as an error



=== TEST 40: after an Anthropic primary fails, a fallback location that answers itself ("return") is not translated, and its rewrites see the client's URI
Found by the second review: untranslating in the precontent phase came after the fallback's rewrite phase.
--- http_config
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages secret=anthropic;
        proxy_set_header x-mock-status 529;
        proxy_intercept_errors on;
        error_page 529 = @$http_x_fallback;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location @static {
        default_type application/json;
        return 200 '{"id":"chatcmpl-static","object":"chat.completion","choices":[]}';
    }
    location @rewrite {
        rewrite ^/v1/(.*)$ /openai/v1/$1 break;
        proxy_set_header x-mock-status "";
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-Fallback: static", "X-Fallback: rewrite"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^\{"id":"chatcmpl-static","object":"chat\.completion","choices":\[\]\}\z/,
 qr{"url":"/openai/v1/chat/completions"}]



=== TEST 41: a redirect from the Anthropic upstream is the provider's failure: a 502 without its Location, and a line in the log
Found by the second review.
--- config
    location /r/ {
        ai_gateway_upstream_api anthropic_messages;
        proxy_pass http://127.0.0.1:$server_port/moved;
    }
    location = /moved {
        return 302 http://example.com/x;
    }
--- request eval
"POST /r/chat/completions\n$::body"
--- error_code: 502
--- response_body chomp
{"error":{"message":"the fallback provider failed with status 502","type":"server_error","code":"upstream_error"}}
--- response_headers
!Location
Content-Type: application/json
--- error_log
the Anthropic answer with status 302 is no Messages answer: 502 to the client
