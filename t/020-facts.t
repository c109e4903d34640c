# The request facts of every API kind, read through the $ai_* variables.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

our $config = <<'_EOC_';
    location = /ok {
        return 200 "ok\n";
    }
    location / {
        ai_gateway_user $http_x_user;
        add_header X-AI-Model "[$ai_model]" always;
        add_header X-AI-API "[$ai_api]" always;
        add_header X-AI-Stream "[$ai_stream]" always;
        add_header X-AI-User "[$ai_user]" always;
        add_header X-AI-Client-User "[$ai_client_user]" always;
        add_header X-AI-Endpoint "[$ai_endpoint]" always;
        add_header X-AI-Max-Tokens "[$ai_max_tokens]" always;
        add_header X-AI-Input-Chars "[$ai_input_characters]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
_EOC_

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: OpenAI chat completions
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"gpt-4o","stream":true,"max_tokens":256,"user":"end-user-7","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}]}
--- more_headers
Content-Type: application/json
X-User: alice
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-4o]
X-AI-API: [openai_chat]
X-AI-Stream: [true]
X-AI-User: [alice]
X-AI-Client-User: [end-user-7]
X-AI-Endpoint: [/]
X-AI-Max-Tokens: [256]
X-AI-Input-Chars: [20]



=== TEST 2: chat with text parts and an image part; max_completion_tokens wins
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"gpt-4o","max_tokens":10,"max_completion_tokens":99,"messages":[{"role":"user","content":[{"type":"text","text":"d\u00e9j\u00e0 vu"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}
--- error_code: 200
--- response_headers
X-AI-API: [openai_chat]
X-AI-Stream: [false]
X-AI-Max-Tokens: [99]
X-AI-Input-Chars: [7]



=== TEST 3: OpenAI completions with a prompt array
--- config eval: $::config
--- request
POST /v1/completions
{"model":"gpt-3.5-turbo-instruct","prompt":["Say ","this is a test"],"max_tokens":7,"stream":false}
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-3.5-turbo-instruct]
X-AI-API: [openai_completions]
X-AI-Stream: [false]
X-AI-Max-Tokens: [7]
X-AI-Input-Chars: [18]



=== TEST 4: OpenAI responses with instructions and input items
--- config eval: $::config
--- request
POST /v1/responses
{"model":"o4-mini","instructions":"Be kind","input":[{"role":"user","content":[{"type":"input_text","text":"Tell me"}]},{"type":"function_call_output","call_id":"c1","output":"42"}],"max_output_tokens":500,"stream":true}
--- error_code: 200
--- response_headers
X-AI-Model: [o4-mini]
X-AI-API: [openai_responses]
X-AI-Stream: [true]
X-AI-Max-Tokens: [500]
X-AI-Input-Chars: [16]



=== TEST 5: OpenAI embeddings with token arrays and strings
--- config eval: $::config
--- request
POST /v1/embeddings
{"model":"text-embedding-3-small","input":["first text","second"],"encoding_format":"float"}
--- error_code: 200
--- response_headers
X-AI-Model: [text-embedding-3-small]
X-AI-API: [openai_embeddings]
X-AI-Max-Tokens: []
X-AI-Input-Chars: [16]



=== TEST 6: Anthropic messages with a system block list
--- config eval: $::config
--- request
POST /v1/messages
{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"You are terse."}],"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"tool_result","tool_use_id":"t1","content":"sunny"}]}],"stream":true}
--- more_headers
anthropic-version: 2023-06-01
--- error_code: 200
--- response_headers
X-AI-Model: [claude-sonnet-4-5]
X-AI-API: [anthropic_messages]
X-AI-Stream: [true]
X-AI-Max-Tokens: [1024]
X-AI-Input-Chars: [21]



=== TEST 7: Databricks invocations: the model comes from the URI, the API from the body
--- config eval: $::config
--- request
POST /serving-endpoints/databricks-meta-llama-3-3-70b-instruct/invocations
{"messages":[{"role":"user","content":"Hello"}],"max_tokens":64}
--- error_code: 200
--- response_headers
X-AI-Model: [databricks-meta-llama-3-3-70b-instruct]
X-AI-API: [openai_chat]
X-AI-Max-Tokens: [64]
X-AI-Input-Chars: [5]



=== TEST 8: an unknown path is classified by the body: Anthropic by its top-level system
--- config eval: $::config
--- request
POST /custom/llm
{"model":"claude-haiku","system":"Be short","messages":[{"role":"user","content":"Yo"}]}
--- error_code: 200
--- response_headers
X-AI-API: [anthropic_messages]
X-AI-Input-Chars: [10]



=== TEST 9: an unknown path with only a prompt is a completion
--- config eval: $::config
--- request
POST /custom/a
{"model":"m","prompt":"abc"}
--- error_code: 200
--- response_headers
X-AI-API: [openai_completions]
X-AI-Input-Chars: [3]



=== TEST 10: an unknown path with nothing to tell the API by is unknown, but inspected
--- config eval: $::config
--- request
POST /custom/b
{"model":"m","temperature":0.2}
--- error_code: 200
--- response_headers
X-AI-API: [unknown]
X-AI-Model: [m]
X-AI-Input-Chars: [0]



=== TEST 11: escaped model and user strings are decoded
--- config eval: $::config
--- request
POST /v1/chat/completions
{"mod\u0065l":"gpt-\u00e9\"x","user":"a\/b","messages":[]}
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-é"x]
X-AI-Client-User: [a/b]



=== TEST 12: with duplicate keys the last one wins, as in jansson
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"first","stream":true,"model":"second","stream":false,"messages":[]}
--- error_code: 200
--- response_headers
X-AI-Model: [second]
X-AI-Stream: [false]



=== TEST 13: null stream and max_tokens count as not given
--- config eval: $::config
--- request
POST /v1/chat/completions
{"model":"m","stream":null,"max_tokens":null,"user":null,"messages":[]}
--- error_code: 200
--- response_headers
X-AI-Stream: [false]
X-AI-Max-Tokens: []
X-AI-Client-User: []



=== TEST 14: ai_gateway_endpoint names the endpoint; default is the location name
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location /named/ {
        ai_gateway_endpoint chat-prod;
        add_header X-AI-Endpoint "[$ai_endpoint]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
POST /named/v1/chat/completions
{"model":"m","messages":[]}
--- error_code: 200
--- response_headers
X-AI-Endpoint: [chat-prod]



=== TEST 15: $ai_request_hash is the SHA-256 of the body
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location / {
        ai_gateway on;
        add_header X-AI-Hash "$ai_request_hash" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[{"role":"user","content":"hash me"}]}
--- error_code: 200
--- response_headers eval
use Digest::SHA qw(sha256_hex);
"X-AI-Hash: " . sha256_hex('{"model":"gpt-4o","messages":[{"role":"user","content":"hash me"}]}')



=== TEST 16: a pretty-printed body with white space everywhere is read the same
--- config eval: $::config
--- request eval
"POST /v1/chat/completions\n{\n  \"model\" : \"gpt-4o\" ,\r\n\t\"messages\" : [ { \"role\" : \"user\" , \"content\" : [ { \"type\" : \"text\" , \"text\" : \"Hello\" } ] } ] ,\n  \"max_tokens\" :\t12 , \"stream\" : true\n}\n"
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-4o]
X-AI-Stream: [true]
X-AI-Max-Tokens: [12]
X-AI-Input-Chars: [5]



=== TEST 17: ai_gateway_user $http_NAME finds the header in any case, its dashes as underscores, and not a name of the same length
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location / {
        ai_gateway_user $HTTP_X_API_USER;
        add_header X-AI-User "[$ai_user]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}
--- more_headers
X-Api-Usex: mallory
x-API-user: carol
--- error_code: 200
--- response_headers
X-AI-User: [carol]



=== TEST 18: a user header sent twice is read as nginx reads $http_NAME (the first on 1.22, both joined on 1.23 and later); none is the empty user
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location / {
        ai_gateway_user $http_x_user;
        add_header X-Same "$ai_user|$http_x_user" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"messages\":[]}", "POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"messages\":[]}"]
--- more_headers eval
["X-User: alice\nX-User: bob", ""]
--- error_code eval
[200, 200]
--- response_headers_like eval
["X-Same: (alice(?:, bob)?)\\|\\1", "X-Same: \\|"]



=== TEST 19: a value with more than the variable is nginx's to evaluate
--- config
    location = /ok {
        return 200 "ok\n";
    }
    location / {
        ai_gateway_user team-$http_x_user;
        add_header X-AI-User "[$ai_user]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}
--- more_headers
X-User: dave
--- error_code: 200
--- response_headers
X-AI-User: [team-dave]



=== TEST 20: $ai_model and $ai_request_hash as a proxy_cache_key: the same request is a hit, another model a miss
--- http_config
    proxy_cache_path logs/cache keys_zone=ai:1m;
--- config
    location = /ok {
        add_header Cache-Control "max-age=60";
        return 200 "answer\n";
    }
    location / {
        ai_gateway on;
        proxy_cache ai;
        proxy_cache_methods POST;
        proxy_cache_key "$ai_model:$ai_request_hash";
        add_header X-Cache "$upstream_cache_status [$ai_model]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m1\",\"messages\":[]}",
 "POST /v1/chat/completions\n{\"model\":\"m1\",\"messages\":[]}",
 "POST /v1/chat/completions\n{\"model\":\"m2\",\"messages\":[]}"]
--- error_code eval
[200, 200, 200]
--- raw_response_headers_like eval
[qr/X-Cache: MISS \[m1\]/, qr/X-Cache: HIT \[m1\]/, qr/X-Cache: MISS \[m2\]/]
