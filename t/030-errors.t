# Bad input gets the OpenAI error shape, the right status and a log line.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

our $config = <<'_EOC_';
    location = /ok {
        return 200 "ok\n";
    }
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: invalid JSON is 400 invalid_json with the place of the error
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":{"message":"We could not parse the JSON body of your request: invalid token at byte 30.","type":"invalid_request_error","code":"invalid_json"}}
--- error_log
ai_gateway: 400 invalid_json: We could not parse the JSON body of your request
--- no_error_log
[error]



=== TEST 2: a trailing comma is invalid JSON
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"gpt-4o",}
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"We could not parse the JSON body of your request: string or '\}' expected at byte 18\.","type":"invalid_request_error","code":"invalid_json"\}\}$



=== TEST 3: invalid UTF-8 in a string is invalid JSON
--- config eval: $::config
--- request eval
"POST /v1/chat/completions\n{\"model\":\"gpt\xff\"}"
--- error_code: 400
--- response_body_like: "code":"invalid_json"



=== TEST 4: a body that is a JSON array is 400
--- config eval: $::config
--- request
POST /v1/chat/completions
[{"model":"gpt-4o"}]
--- error_code: 400
--- response_body
{"error":{"message":"The request body must be a JSON object.","type":"invalid_request_error","code":"invalid_json"}}



=== TEST 5: a JSON string at the top is invalid
--- config eval: $::config
--- request
POST /v1/chat/completions
"gpt-4o"
--- error_code: 400
--- response_body_like: "code":"invalid_json"



=== TEST 6: a missing model is 400
--- config eval: $::config
--- request
POST /v1/chat/completions
{"messages":[{"role":"user","content":"hi"}]}
--- error_code: 400
--- response_body
{"error":{"message":"you must provide a model parameter","type":"invalid_request_error","code":"missing_model"}}
--- error_log
ai_gateway: 400 missing_model



=== TEST 7: a model that is not a string is 400
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":4,"messages":[]}
--- error_code: 400
--- response_body
{"error":{"message":"Invalid type for 'model': expected a string.","type":"invalid_request_error","code":"invalid_type"}}



=== TEST 8: a null model is a missing model
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":null,"messages":[]}
--- error_code: 400
--- response_body_like: "code":"missing_model"



=== TEST 9: stream must be a boolean
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","stream":"yes","messages":[]}
--- error_code: 400
--- response_body
{"error":{"message":"Invalid type for 'stream': expected a boolean.","type":"invalid_request_error","code":"invalid_type"}}



=== TEST 10: max_tokens must be an integer
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","max_tokens":"100","messages":[]}
--- error_code: 400
--- response_body
{"error":{"message":"Invalid type for 'max_tokens': expected an integer.","type":"invalid_request_error","code":"invalid_type"}}



=== TEST 11: max_completion_tokens must not be a real
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","max_completion_tokens":1.5,"messages":[]}
--- error_code: 400
--- response_body_like: Invalid type for 'max_completion_tokens': expected an integer



=== TEST 12: max_output_tokens must not be negative
--- config eval: $::config
--- request
POST /v1/responses
{"model":"m","input":"x","max_output_tokens":-1}
--- error_code: 400
--- response_body
{"error":{"message":"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 0.","type":"invalid_request_error","code":"integer_below_min_value"}}



=== TEST 13: user must be a string
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","user":{"id":1},"messages":[]}
--- error_code: 400
--- response_body_like: Invalid type for 'user': expected a string



=== TEST 14: messages must be an array
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","messages":"hello"}
--- error_code: 400
--- response_body_like: Invalid type for 'messages': expected an array



=== TEST 15: an empty body on POST is 400
--- config eval: $::config
--- request
POST /v1/chat/completions
--- more_headers
Content-Length: 0
--- error_code: 400
--- response_body
{"error":{"message":"The request body is empty: a JSON object is required.","type":"invalid_request_error","code":"empty_body"}}
--- error_log
ai_gateway: 400 empty_body



=== TEST 16: a chunked body with no data is 400
--- config eval: $::config
--- raw_request eval
"POST /v1/chat/completions HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
0\r
\r
"
--- error_code: 400
--- response_body_like: "code":"empty_body"



=== TEST 17: a form body is 415
--- config eval: $::config
--- request
POST /v1/chat/completions
model=gpt-4o
--- more_headers
Content-Type: application/x-www-form-urlencoded
--- error_code: 415
--- response_body
{"error":{"message":"Unsupported Content-Type: the request body must be JSON (application/json).","type":"invalid_request_error","code":"unsupported_media_type"}}
--- error_log
ai_gateway: 415 unsupported_media_type



=== TEST 18: application/json with a charset and +json types are accepted
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[]}", "POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[]}"]
--- more_headers
Content-Type: Application/JSON; charset=utf-8
--- error_code eval
[200, 200]
--- response_body eval
["ok\n", "ok\n"]



=== TEST 19: a 5 MiB body is 413 with the error shape
--- config eval: $::config
--- request eval
"POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" . ("a" x (5 * 1024 * 1024)) . "\"}]}"
--- error_code: 413
--- response_body
{"error":{"message":"The request body is larger than the gateway accepts (ai_gateway_max_body).","type":"invalid_request_error","code":"request_too_large"}}
--- error_log
ai_gateway: 413 request_too_large



=== TEST 20: ai_gateway_max_body lowers the limit; a chunked body over it is 413 too
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location /v1/ {
        ai_gateway_max_body 1k;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- raw_request eval
my $body = '{"model":"m","messages":[{"role":"user","content":"' . ("b" x 2000) . '"}]}';
"POST /v1/chat/completions HTTP/1.1\r
Host: localhost\r
Connection: close\r
Content-Type: application/json\r
Transfer-Encoding: chunked\r
\r
" . sprintf("%x\r\n", 1000) . substr($body, 0, 1000) . "\r\n"
  . sprintf("%x\r\n", length($body) - 1000) . substr($body, 1000) . "\r\n0\r\n\r\n"
--- error_code: 413
--- response_body_like: "code":"request_too_large"
--- error_log
chunked request body is larger than ai_gateway_max_body 1024



=== TEST 21: a body just at ai_gateway_max_body passes
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location /v1/ {
        ai_gateway_max_body 100;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
my $body = '{"model":"m","messages":[],"pad":"' . ("p" x 64) . '"}';
"POST /v1/chat/completions\n" . $body . (" " x (100 - length($body) - 0))
--- error_code: 200
--- response_body
ok



=== TEST 22: a control character in a string is invalid JSON at its byte
--- config eval: $::config
--- request eval
"POST /v1/chat/completions\n{\"model\":\"m\",\"a\":\"\x01\"}"
--- error_code: 400
--- response_body
{"error":{"message":"We could not parse the JSON body of your request: control character in string at byte 18.","type":"invalid_request_error","code":"invalid_json"}}
