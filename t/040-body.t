# The body is read however it arrives, forwarded byte for byte, and the
# facts survive an internal redirect.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;
use Digest::SHA qw(sha256_hex);

our $body = '{"model":"gpt-4o","messages":[{"role":"user","content":"'
            . ("The quick brown fox jumps over the lazy dog. " x 40)
            . 'caf\u00e9 \ud83d\ude00 \"quoted\"'
            . '"}],"max_tokens":128,"temperature":0.7}';

our $config = <<'_EOC_';
    location /v1/ {
        ai_gateway on;
        add_header X-AI-Model "[$ai_model]" always;
        add_header X-AI-Input-Chars "[$ai_input_characters]" always;
        add_header X-AI-Hash "$ai_request_hash" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Echo 1;
    }
_EOC_

# the body cut into 7-byte TCP writes
sub packets {
    my ($head, $data) = @_;
    my @parts = ($head);
    push @parts, substr($data, $_ * 7, 7) for 0 .. int((length($data) - 1) / 7);
    return \@parts;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the forwarded body is byte-identical to the client's
--- config eval: $::config
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_headers eval
"X-AI-Hash: " . Digest::SHA::sha256_hex($::body)
--- response_body_like eval
qr/"body_sha256":\s*"${\ Digest::SHA::sha256_hex($::body) }"/



=== TEST 2: a body spread over many TCP packets is read whole
--- config eval: $::config
--- raw_request eval
main::packets("POST /v1/chat/completions HTTP/1.1\r
Host: localhost\r
Connection: close\r
Content-Type: application/json\r
Content-Length: " . length($::body) . "\r
\r
", $::body)
--- raw_request_middle_delay: 0.001
--- error_code: 200
--- response_headers eval
"X-AI-Model: [gpt-4o]\nX-AI-Hash: " . Digest::SHA::sha256_hex($::body)
--- response_body_like eval
qr/"body_sha256":\s*"${\ Digest::SHA::sha256_hex($::body) }"/



=== TEST 3: a chunked request body is decoded, inspected and forwarded whole
--- config eval: $::config
--- raw_request eval
my $b = $::body;
my $chunked = '';
while (length $b) {
    my $n = length($b) > 300 ? 300 : length($b);
    $chunked .= sprintf("%x\r\n", $n) . substr($b, 0, $n, '') . "\r\n";
}
$chunked .= "0\r\n\r\n";
main::packets("POST /v1/chat/completions HTTP/1.1\r
Host: localhost\r
Connection: close\r
Content-Type: application/json\r
Transfer-Encoding: chunked\r
\r
", $chunked)
--- raw_request_middle_delay: 0.001
--- error_code: 200
--- response_headers eval
"X-AI-Model: [gpt-4o]\nX-AI-Hash: " . Digest::SHA::sha256_hex($::body)
--- response_body_like eval
qr/"body_length":\s*${\ length($::body) }\b.*"body_sha256":\s*"${\ Digest::SHA::sha256_hex($::body) }"/s



=== TEST 4: keep-alive: pipelined requests on one connection each get their answer
--- config
    location = /ok {
        return 200 "ok:$arg_n\n";
    }
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$server_port/ok?n=$ai_model;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"one\",\"messages\":[]}",
 "POST /v1/chat/completions\n{\"model\":\"two\",\"messages\":[]}",
 "GET /v1/models",
 "POST /v1/chat/completions\n{\"model\":\"four\",\"messages\":[]}"]
--- error_code eval
[200, 200, 200, 200]
--- response_body eval
["ok:one\n", "ok:two\n", "ok:\n", "ok:four\n"]



=== TEST 5: a rejected request does not break the keep-alive connection
--- config
    location = /ok {
        return 200 "ok:$arg_n\n";
    }
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$server_port/ok?n=$ai_model;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":",
 "POST /v1/chat/completions\n{\"model\":\"after\",\"messages\":[]}"]
--- error_code eval
[400, 200]
--- response_body eval
["{\"error\":{\"message\":\"We could not parse the JSON body of your request: unexpected end of input at byte 9.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_json\"}}\n", "ok:after\n"]



=== TEST 6: an internal redirect to a named location keeps the facts and the body
--- config
    location /v1/ {
        ai_gateway_user $http_x_user;
        proxy_intercept_errors on;
        error_page 502 503 = @fallback;
        proxy_pass http://127.0.0.1:1/;
    }
    location @fallback {
        add_header X-AI-Model "[$ai_model]" always;
        add_header X-AI-API "[$ai_api]" always;
        add_header X-AI-User "[$ai_user]" always;
        add_header X-AI-Endpoint "[$ai_endpoint]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Echo 1;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- more_headers
X-User: bob
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-4o]
X-AI-API: [openai_chat]
X-AI-User: [bob]
X-AI-Endpoint: [/v1/]
--- response_body_like eval
qr/"body_sha256":\s*"${\ Digest::SHA::sha256_hex($::body) }"/
--- error_log
connect() failed (111: Connection refused)



=== TEST 7: an inspected named location does not read or judge the body twice
--- config
    location /v1/ {
        ai_gateway on;
        error_page 502 503 = @fallback;
        proxy_pass http://127.0.0.1:1/;
    }
    location @fallback {
        ai_gateway_endpoint fallback;
        add_header X-AI-Model "[$ai_model]" always;
        add_header X-AI-Endpoint "[$ai_endpoint]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Echo 1;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_headers
X-AI-Model: [gpt-4o]
X-AI-Endpoint: [/v1/]
--- response_body_like eval
qr/"body_sha256":\s*"${\ Digest::SHA::sha256_hex($::body) }"/
