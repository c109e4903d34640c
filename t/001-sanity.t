# The module loads, inspects the locations that ask for it, and leaves the
# others alone.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: module loads and an inspected location proxies a chat request
--- config
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body_like: "object":\s*"chat\.completion"
--- no_error_log
[error]



=== TEST 2: GET requests pass through an inspected location untouched
--- config
    location /v1/ {
        ai_gateway on;
        add_header X-AI-API "[$ai_api]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 200
--- response_headers
X-AI-API: []
--- response_body_like: "object":\s*"list"



=== TEST 3: a location without ai_gateway directives is not inspected
--- config
    location /v1/ {
        ai_gateway on;
    }
    location /other {
        add_header X-AI-Model "[$ai_model]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/chat/completions;
        proxy_set_header X-Mock-Echo 1;
    }
--- request
POST /other
this is not JSON
--- error_code: 200
--- response_headers
X-AI-Model: []
--- response_body_like: "body":\s*"this is not JSON"



=== TEST 4: ai_gateway off turns inspection off where a directive would imply it
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway off;
        add_header X-AI-Model "[$ai_model]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Echo 1;
    }
--- request
POST /v1/chat/completions
not JSON either
--- error_code: 200
--- response_headers
X-AI-Model: []



=== TEST 5: ai_gateway on at server level inspects every location below it
--- config
    ai_gateway on;
    location /v1/ {
        add_header X-AI-Model "[$ai_model]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m1","messages":[]}
--- error_code: 200
--- response_headers
X-AI-Model: [m1]



=== TEST 6: ai_gateway_user at server level alone does not inspect a location
--- config
    ai_gateway_user $http_x_user;
    location /static/ {
        return 200 "static ok\n";
    }
--- request
POST /static/file
not JSON
--- error_code: 200
--- response_body
static ok
