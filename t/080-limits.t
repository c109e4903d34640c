# Rate limits and token budgets in shared memory: semantics, headers,
# reservation and settlement, configuration errors.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;

our $body = '{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"Hello there"}]}';

# an answer of 70,000 bytes and two words (the mock's text)
our $big = '{"model":"m","max_tokens":20,"mock":{"text":"' . ('x' x 70000)
           . ' two"},"messages":[{"role":"user","content":"Hello there"}]}';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: calls per user: the third call in the window is refused, with OpenAI's headers (the first use resets with the window, 60-66 s later)
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute calls=2;
        add_header X-Limit-Status $ai_limit_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: alice
--- error_code eval
[200, 200, 429]
--- response_body_like eval
[qr/chat\.completion/, qr/chat\.completion/,
 qr/^\{"error":\{"message":"Rate limit reached for requests_per_user_per_minute: limit 2, used 2, requested 1\. Please retry after \d+ seconds\.","type":"requests_per_user_per_minute","code":"rate_limit_exceeded"\}\}\n\z/]
--- raw_response_headers_like eval
[qr/x-ratelimit-limit-requests: 2\r\nx-ratelimit-remaining-requests: 1\r\nx-ratelimit-reset-requests: 6[0-6]s\r\n/,
 qr/x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 6[0-6]s\r\n.*X-Limit-Status: passed/s,
 qr/Retry-After: \d+\r\n(?s:.*)x-ratelimit-remaining-requests: 0\r\n(?s:.*)X-Limit-Status: rejected/]



=== TEST 2: per-user limits keep users apart
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute calls=1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-User "";
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-User: u1", "X-User: u2", "X-User: u1"]
--- error_code eval
[200, 200, 429]



=== TEST 3: per-endpoint limits count all users together
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_endpoint shared;
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=2;
        add_header X-Limit-Status $ai_limit_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-User: a", "X-User: b", "X-User: c"]
--- error_code eval
[200, 200, 429]



=== TEST 4: a rejected request charges no window
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_endpoint chat;
        ai_gateway_rate_limit key=user renewal_period=hour calls=10;
        ai_gateway_rate_limit key=user renewal_period=minute calls=1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /v2/ {
        ai_gateway_user $http_x_user;
        ai_gateway_endpoint chat;
        ai_gateway_rate_limit key=user renewal_period=hour calls=10;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body",
 "POST /v1/chat/completions\n$::body", "POST /v2/chat/completions\n$::body"]
--- more_headers
X-User: dave
--- error_code eval
[200, 429, 429, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-limit-requests: 1\r\nx-ratelimit-remaining-requests: 0\r\n/,
 qr/x-ratelimit-remaining-requests: 0\r\n/,
 qr/x-ratelimit-remaining-requests: 0\r\n/,
 qr/x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 8\r\n/]



=== TEST 5: the gateway's x-ratelimit headers replace the upstream's
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=7;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- raw_response_headers_like: \A(?!.*x-ratelimit-limit-requests: 10000)(?=.*x-ratelimit-limit-requests: 7\r\n)
--- raw_response_headers_unlike: x-ratelimit-remaining-tokens



=== TEST 6: dry_run counts and reports, never rejects
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute calls=1 dry_run;
        add_header X-Limit-Status $ai_limit_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: erin
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/X-Limit-Status: passed/, qr/X-Limit-Status: dry_run_rejected/]



=== TEST 7: an empty user is counted as one anonymous user
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute calls=1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 429]



=== TEST 8: ai_gateway_require_user answers 401 to a request without a user
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_require_user on;
        ai_gateway_rate_limit key=user renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 401
--- response_body
{"error":{"message":"A user identity is required here (ai_gateway_require_user).","type":"invalid_request_error","code":"missing_user"}}
--- error_log
ai_gateway: 401 missing_user



=== TEST 9: token budget: reserve the prompt estimate plus max_tokens, settle to the real total
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body",
 "POST /v1/chat/completions\n{\"model\":\"m\",\"max_tokens\":20,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n$::body",
 "POST /v1/chat/completions\n{\"model\":\"m\",\"max_tokens\":60,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}"]
--- more_headers
X-User: frank
--- error_code eval
[200, 200, 200, 429]
--- raw_response_headers_like eval
[qr/x-ratelimit-limit-tokens: 100\r\nx-ratelimit-remaining-tokens: 77\r\n/,
 qr/x-ratelimit-remaining-tokens: 63\r\n/,
 qr/x-ratelimit-remaining-tokens: 49\r\n/,
 qr/x-ratelimit-remaining-tokens: 58\r\n/]



=== TEST 10: a failed upstream refunds the whole reservation
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Status $http_x_fail;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-User: gina\nX-Fail: 500", "X-User: gina"]
--- error_code eval
[500, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 77\r\n/]



=== TEST 11: a budget smaller than one request's reservation refuses it
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_token_reservation 500;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","content":"Hello there"}]}
--- more_headers
X-User: hank
--- error_code: 429
--- response_body_like: requested 503\. .*"type":"tokens_per_user_per_minute"
--- error_log
ai_gateway: 429 tokens_per_user_per_minute: limit 100, used 0, requested 503



=== TEST 12: limits at server level are inherited by a location that sets none
--- config
    ai_gateway_rate_limit key=endpoint renewal_period=minute calls=1;
    location /v1/ {
        ai_gateway_user $http_x_user;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 429]



=== TEST 13: the usage record tells what the limits did
--- http_config
    ai_gateway_usage_log logs/usage-13.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_rate_limit key=endpoint renewal_period=10s calls=1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        alias logs/usage-13.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "GET /records"]
--- error_code eval
[200, 429, 200]
--- response_body_like eval
[qr/chat/, qr/rate_limit_exceeded/,
 qr/"rate_limit":"passed".*\n.*"rate_limit":"rejected:requests_per_endpoint_per_10s"/]



=== TEST 14: nginx -t rejects a bad key
--- config
    location /v1/ {
        ai_gateway_rate_limit key=team renewal_period=minute calls=1;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid parameter "key=team" in "ai_gateway_rate_limit" directive



=== TEST 15: nginx -t rejects a bad period
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=fortnight calls=1;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid parameter "renewal_period=fortnight" in "ai_gateway_rate_limit" directive



=== TEST 16: nginx -t rejects a zero or negative count
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=10s calls=0;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid parameter "calls=0" in "ai_gateway_rate_limit" directive



=== TEST 17: nginx -t rejects calls and tokens together
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=minute calls=1 tokens=5;
    }
--- request
GET /v1/
--- must_die
--- error_log
"ai_gateway_rate_limit" takes either calls= or tokens=, not both: "tokens=5"



=== TEST 18: nginx -t rejects a limit without a count
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=minute;
    }
--- request
GET /v1/
--- must_die
--- error_log
"ai_gateway_rate_limit" needs key=, renewal_period= and calls= or tokens=



=== TEST 19: nginx -t rejects an unknown parameter
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=minute calls=3 burst=5;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid parameter "burst=5" in "ai_gateway_rate_limit" directive



=== TEST 20: nginx -t rejects a zone too small
--- http_config
    ai_gateway_zone 1k;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=user renewal_period=minute calls=3;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid zone size "1k" in "ai_gateway_zone" directive



=== TEST 21: a client that leaves mid-stream is settled from the estimate
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
        proxy_set_header X-Mock-Stall-After $http_x_stall;
    }
--- request eval
["POST /v1/chat/completions HTTP/1.0\n{\"model\":\"m\",\"max_tokens\":20,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-User: ivan\nX-Stall: 4", "X-User: ivan"]
--- timeout: 0.5
--- abort
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 71\r\n/]



=== TEST 22: an internal redirect settles once, for the answer the client got
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_intercept_errors on;
        error_page 502 = @fallback;
        proxy_pass http://127.0.0.1:1;
    }
    location @fallback {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: judy
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 63\r\n/]



=== TEST 23: a budget settles from a JSON answer read from its end: the usage, then members with brackets in strings
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$server_port/answer;
    }
    location = /answer {
        default_type application/json;
        return 200 '{"id":"x","usage": {"prompt_tokens":10, "completion_tokens":7,"total_tokens":17}, "choices":[{"message":{"content":"a } ] { [ \\" usage"}}],"meta":{"k":[1,2.5e3,{"z":null}]}}
';
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: kate
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 60\r\n/]



=== TEST 24: the last "usage" key one level down: the answer is walked, and its top-level usage settles the budget
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$server_port/answer;
    }
    location = /answer {
        default_type application/json;
        return 200 '{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15},"choices":[{"message":{"content":"hi"},"usage":{"total_tokens":99}}]}';
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: liam
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 62\r\n/]



=== TEST 25: an answer without usage settles from the text it showed
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-No-Usage 1;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: mona
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 59\r\n/]



=== TEST 26: an answer larger than the gateway keeps (64 KiB) is walked as it comes, and settles exactly
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::big", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: nora
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"x{60000}x* two"/, qr/mock response/]
--- raw_response_headers_like eval
[qr/x-ratelimit-remaining-tokens: 77\r\n/, qr/x-ratelimit-remaining-tokens: 72\r\n/]



=== TEST 27: an answer without Content-Length (chunked) is kept and read from its end
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=user renewal_period=minute tokens=100;
        proxy_pass http://127.0.0.1:$server_port/answer;
    }
    location = /answer {
        proxy_pass http://127.0.0.1:$server_port/fixed;
        proxy_http_version 1.1;
        # a filter that never matches drops the length: the answer is chunked
        sub_filter_types application/json;
        sub_filter 'never-in-the-answer' '';
    }
    location = /fixed {
        default_type application/json;
        return 200 '{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":9,"total_tokens":19},"choices":[]}';
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers
X-User: olga
--- error_code eval
[200, 200]
--- raw_response_headers_like eval
[qr/Transfer-Encoding: chunked\r\n(?s:.*)x-ratelimit-remaining-tokens: 77\r\n/i,
 qr/x-ratelimit-remaining-tokens: 58\r\n/]



=== TEST 28: key=$variable counts by its value: two users of one team share the team's calls, another team has its own (a day's window)
The first use leaves the window after its ten buckets of 8,640 s and the
rest of its own: 86,401-95,040 s (the bound was 94,999, which failed in
the first 40 s of every bucket).
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        ai_gateway_rate_limit key=$http_x_team renewal_period=day calls=2;
        add_header X-Limit-Status $ai_limit_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- more_headers eval
["X-User: u1\nX-Team: red", "X-User: u2\nX-Team: red", "X-User: u3\nX-Team: red", "X-User: u1\nX-Team: blue"]
--- error_code eval
[200, 200, 429, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/chat\.completion/, qr/^\{"error":\{"message":"Rate limit reached for [^"]*day[^"]*: limit 2, used 2, requested 1\./, qr/chat\.completion/]
--- raw_response_headers_like eval
[qr/x-ratelimit-limit-requests: 2\r\nx-ratelimit-remaining-requests: 1\r\nx-ratelimit-reset-requests: (?:8640[1-9]|864[1-9]\d|86[5-9]\d\d|8[7-9]\d{3}|9[0-4]\d{3}|950[0-3]\d|95040)s\r\n/,
 qr/x-ratelimit-remaining-requests: 0\r\n/,
 qr/Retry-After: \d+\r\n(?s:.*)X-Limit-Status: rejected/,
 qr/x-ratelimit-remaining-requests: 1\r\n/]
