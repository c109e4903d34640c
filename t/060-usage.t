# Usage records: exact provider counts for every API kind, JSON and SSE,
# estimates when the provider gives none, and the stream the client sees.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;

# A regex that a usage record line must match: every field as given
# (numbers and literals as they are, strings quoted).
sub main::rec {
    my %f = @_;
    my $re = join '', map {
        my $v = $f{$_};
        my $p = ref $v eq 'Regexp' ? "(?:$v)"
              : $v =~ /^(?:-?\d+|true|false|null)$/ ? quotemeta($v)
              : quotemeta(qq{"$v"});
        '(?=[^\n]*"' . $_ . '":' . $p . '[,}])'
    } sort keys %f;
    return qr/^$re/m;
}

our $http_config = <<'_EOC_';
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
_EOC_

our $config = <<'_EOC_';
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_user $http_x_user;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
_EOC_

# each block writes its own record files
add_block_preprocessor(sub {
    my $block = shift;
    my $n = $block->seq_num;
    for my $s (qw(http_config config)) {
        my $v = $block->$s;
        next unless defined $v;
        $v =~ s/(usage|inference|access)\.(jsonl|log)/$1-$n.$2/g;
        $block->set_value($s, $v);
    }
});

# An upstream stream of many events of uneven lengths, and what the client
# gets: the same without the usage chunk the gateway asked for.
sub main::long_stream {
    my ($upstream) = @_;
    my $s = '';
    for my $i (1 .. 400) {
        my $w = ('w' x ($i % 37)) . " $i";
        $s .= qq{data: {"id":"c1","choices":[{"index":0,"delta":{"content":"$w"}}],"usage":null}}
              . ($i % 5 ? "\n\n" : "\r\n\r\n");
    }
    $s .= qq{data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":400,"total_tokens":403}}\n\n}
        if $upstream;
    return $s . "data: [DONE]\n\n";
}

# The same with usage chunks among the events too (every 50th event is
# followed by one, written with \r\n or \n line ends)
sub main::cut_stream {
    my ($upstream) = @_;
    my $s = '';
    for my $i (1 .. 400) {
        my $w = ('w' x ($i % 37)) . " $i";
        $s .= qq{data: {"id":"c1","choices":[{"index":0,"delta":{"content":"$w"}}],"usage":null}\n\n};
        next unless $upstream && $i % 50 == 0;
        my $eol = $i % 100 ? "\n" : "\r\n";
        my $t = $i + 3;
        $s .= qq|data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":$i,"total_tokens":$t}}$eol$eol|;
    }
    return $s . "data: [DONE]\n\n";
}

# Events with \r\n line ends, each followed by a usage chunk: wherever a
# read ends on the '\r' of a blank line, its '\n' starts the next buffer
sub main::crlf_stream {
    my ($upstream) = @_;
    my $s = '';
    for my $i (1 .. 600) {
        my $w = 'w' x ($i % 23);
        $s .= qq|data: {"choices":[{"index":0,"delta":{"content":"$w"}}]}\r\n\r\n|;
        $s .= qq|data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":$i,"total_tokens":9}}\r\n\r\n|
            if $upstream;
    }
    return $s . "data: [DONE]\r\n\r\n";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: chat JSON: the provider's counts, and who asked what
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-User: alice
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"object": "chat\.completion"/,
 main::rec(input_token_count => 3, output_token_count => 11, total_token_count => 14,
           cached_input_token_count => 0, reasoning_token_count => 0,
           token_count_source => 'provider', api => 'openai_chat',
           model => 'gpt-4o-mini', response_model => 'gpt-4o-mini',
           requester => 'alice', endpoint => '/v1/', status_code => 200,
           request_streaming => 'false', upstream_attempts => 1,
           input_character_count => 11, output_character_count => 58,
           client_aborted => 'false', rate_limit => 'null', guardrail => 'null',
           ttft_ms => qr/\d+/, client_request_id => 'null')]



=== TEST 2: chat JSON with cached and reasoning tokens
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"o3-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-Mock-Cached-Tokens: 2
X-Mock-Reasoning-Tokens: 7
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"reasoning_tokens": 7/,
 main::rec(input_token_count => 3, output_token_count => 18, total_token_count => 21,
           cached_input_token_count => 2, reasoning_token_count => 7,
           token_count_source => 'provider', requester => 'null')]



=== TEST 3: chat stream, the client did not ask for usage: counted, and the usage chunk is hidden
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/\A(?:data: \{"id":"chatcmpl-[^\n]*"choices":\[\{[^\n]*\}\n\n){13}data: \[DONE\]\n\n\z/,
 main::rec(input_token_count => 3, output_token_count => 11, total_token_count => 14,
           token_count_source => 'provider', request_streaming => 'true',
           output_character_count => 58, ttft_ms => qr/\d+/)]



=== TEST 4: chat stream, the client asked for usage: it gets the usage chunk
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/\n\ndata: \{[^\n]*"choices":\[\],[^\n]*"usage":\{"prompt_tokens":3,"completion_tokens":11,"total_tokens":14[^\n]*\n\ndata: \[DONE\]\n\n\z/,
 main::rec(input_token_count => 3, output_token_count => 11,
           token_count_source => 'provider')]



=== TEST 5: chat stream with stream_options but include_usage false: usage asked for, and hidden
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":false},\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/\A(?:data: \{[^\n]*"choices":\[\{[^\n]*\n\n){13}data: \[DONE\]\n\n\z/,
 main::rec(input_token_count => 3, output_token_count => 11,
           token_count_source => 'provider')]



=== TEST 6: ai_gateway_stream_usage off: the stream is left alone and tokens are estimated
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_stream_usage off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_buffering off;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/data: \[DONE\]\n\n\z/,
 main::rec(input_token_count => 3, output_token_count => 15, total_token_count => 18,
           token_count_source => 'estimate', output_character_count => 58)]



=== TEST 7: legacy completions, JSON and stream
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/completions\n{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say hello\"}",
 "POST /v1/completions\n{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say hello\",\"stream\":true}",
 "GET /records"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"text_completion"/, qr/data: \[DONE\]\n\n\z/,
 qr/${\ main::rec(api => 'openai_completions', input_token_count => 3, output_token_count => 11, request_streaming => 'false', token_count_source => 'provider') }.*\n${\ main::rec(api => 'openai_completions', input_token_count => 3, output_token_count => 11, request_streaming => 'true', token_count_source => 'provider', output_character_count => 58) }/s]



=== TEST 8: OpenAI responses, JSON and stream, with cached and reasoning tokens
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/responses\n{\"model\":\"o4-mini\",\"input\":\"Hello there\"}",
 "POST /v1/responses\n{\"model\":\"o4-mini\",\"input\":\"Hello there\",\"stream\":true}",
 "GET /records"]
--- more_headers
X-Mock-Cached-Tokens: 1
X-Mock-Reasoning-Tokens: 4
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"object": "response"/, qr/event: response\.completed\n/,
 qr/${\ main::rec(api => 'openai_responses', input_token_count => 3, output_token_count => 15, total_token_count => 18, cached_input_token_count => 1, reasoning_token_count => 4, request_streaming => 'false', token_count_source => 'provider') }.*\n${\ main::rec(api => 'openai_responses', input_token_count => 3, output_token_count => 15, cached_input_token_count => 1, reasoning_token_count => 4, request_streaming => 'true', token_count_source => 'provider', output_character_count => 58) }/s]



=== TEST 9: Anthropic messages, JSON and stream: cache reads and writes count as input
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/messages\n{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/messages\n{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
anthropic-version: 2023-06-01
X-Mock-Cached-Tokens: 4
X-Mock-Cache-Creation-Tokens: 2
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"type":"message"/, qr/event: message_stop\n/,
 qr/${\ main::rec(api => 'anthropic_messages', input_token_count => 9, output_token_count => 11, total_token_count => 20, cached_input_token_count => 4, request_streaming => 'false', token_count_source => 'provider') }.*\n${\ main::rec(api => 'anthropic_messages', input_token_count => 9, output_token_count => 11, total_token_count => 20, cached_input_token_count => 4, request_streaming => 'true', token_count_source => 'provider', output_character_count => 58) }/s]



=== TEST 10: embeddings: input tokens, no output
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/embeddings\n{\"model\":\"text-embedding-3-small\",\"input\":[\"Hello there\",\"again\"]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"embedding"/,
 main::rec(api => 'openai_embeddings', input_token_count => 4, output_token_count => 0,
           total_token_count => 4, token_count_source => 'provider')]



=== TEST 11: an upstream that resets mid-stream: estimated from the text seen, not aborted
--- http_config eval: $::http_config
--- config eval: $::config
--- request eval
["POST /v1/chat/completions HTTP/1.0\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-Mock-Reset-After: 5
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"content":" a"/,
 main::rec(input_token_count => 3, output_token_count => 4, total_token_count => 7,
           token_count_source => 'estimate', client_aborted => 'false',
           output_character_count => 14)]



=== TEST 12: a malformed upstream JSON answer still gets a record
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$server_port/bad;
    }
    location = /bad {
        default_type application/json;
        return 200 '{"id":"x","usage":{"prompt_tokens":5,,]]] not json';
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/not json/,
 main::rec(input_token_count => 3, output_token_count => 0,
           token_count_source => 'estimate', status_code => 200)]
--- no_error_log
[alert]



=== TEST 13: an upstream error answer costs no tokens
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-Mock-Status: 429
--- error_code eval
[429, 200]
--- response_body_like eval
[qr/rate_limit/,
 main::rec(input_token_count => 0, output_token_count => 0, total_token_count => 0,
           token_count_source => 'none', status_code => 429)]



=== TEST 14: a request the gateway rejects gets a record too
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":",
 "GET /records"]
--- error_code eval
[400, 200]
--- response_body_like eval
[qr/invalid_json/,
 main::rec(api => 'null', model => 'null', status_code => 400,
           token_count_source => 'none', upstream_attempts => 0,
           upstream_addr => 'null')]



=== TEST 15: token variables and $ai_ttft in log_format
--- http_config eval
$::http_config . q{
    log_format ai '$ai_prompt_tokens $ai_completion_tokens $ai_total_tokens ttft=$ai_ttft';
}
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        access_log logs/access.log ai;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /access {
        default_type text/plain;
        alias logs/access.log;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /access"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/\A3 11 14 ttft=\d+\n\z/]



=== TEST 16: the upstream is asked for identity encoding
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        proxy_set_header X-Mock-Echo 1;
    }
--- request
POST /v1/chat/completions
{"model":"m","messages":[]}
--- more_headers
Accept-Encoding: gzip, br
--- error_code: 200
--- response_body_like: "accept-encoding":"identity"



=== TEST 17: nginx's gzip filter still compresses for a client that accepts it
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        gzip on;
        gzip_types application/json;
        gzip_min_length 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m","messages":[]}
--- more_headers
Accept-Encoding: gzip
--- error_code: 200
--- response_headers
Content-Encoding: gzip



=== TEST 18: a client that leaves mid-stream: estimated from the text it was sent, aborted
--- http_config eval: $::http_config
--- config eval: $::config
--- request eval
["POST /v1/chat/completions HTTP/1.0\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-Mock-Stall-After: 4
--- timeout: 0.5
--- abort
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"content":" a"[^\n]*\n\n\z/,
 main::rec(input_token_count => 3, output_token_count => 3, total_token_count => 6,
           token_count_source => 'estimate', client_aborted => 'true',
           output_character_count => 9, status_code => 200)]



=== TEST 19: a record that cannot be written is logged and the request still succeeds
--- http_config
    ai_gateway_usage_log /dev/full buffer=0;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","content":"Hello there"}]}
--- error_code: 200
--- response_body_like: "chat\.completion"
--- error_log eval
qr/\[alert\] .*write\(\) to "\/dev\/full" failed, 1 records dropped \(28: No space left on device\)/



=== TEST 20: the stream the client gets is the upstream's, byte for byte, less the usage chunk
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$server_port/sse;
        proxy_buffering off;
    }
    location = /sse {
        default_type text/event-stream;
        return 200 ": keep-alive\r\n\r\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\r\n\r\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\u00e9\"}}],\"usage\":null}\n\ndata: {\"id\":\"c1\",\"choices\":[],\n\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: {\"id\":\"c1\",\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\r\n\r\ndata: [DONE]\n\n";
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
[": keep-alive\r\n\r\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\r\n\r\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\u00e9\"}}],\"usage\":null}\n\ndata: {\"id\":\"c1\",\"choices\":[],\n\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n",
 qr/"input_token_count":3,"output_token_count":2,"total_token_count":5,[^\n]*"token_count_source":"provider","input_character_count":11,"output_character_count":4,/]



=== TEST 21: an SSE event larger than the hold-back limit passes whole, and cutting stops
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/big;
        proxy_buffering off;
    }
    location = /big {
        default_type text/event-stream;
        alias html/big.sse;
    }
--- user_files eval
">>> big.sse\n" . "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" . ("x" x 300000) . "\"}}],\"usage\":null}\n\n"
. "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":75000,\"total_tokens\":75003}}\n\ndata: [DONE]\n\n"
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello there"}]}
--- error_code: 200
--- response_body eval
"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" . ("x" x 300000) . "\"}}],\"usage\":null}\n\n"
. "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":75000,\"total_tokens\":75003}}\n\ndata: [DONE]\n\n"
--- error_log
ai_gateway: an SSE event over 262144 bytes, the usage chunk is no longer cut from this stream



=== TEST 22: the record's request_id is the access log's $request_id, one of its own for every request
--- http_config
    ai_gateway_usage_log logs/usage.jsonl buffer=0;
    log_format ids 'access $request_id';
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        access_log logs/usage.jsonl ids;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        access_log off;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"one"}]}',
 "POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"two"}]}',
 "POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"three"}]}',
 "GET /records"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/chat\.completion/, qr/chat\.completion/,
 qr/\Aaccess ([0-9a-f]{32})\n\{"request_id":"\1"[^\n]*\naccess (?!\1)([0-9a-f]{32})\n\{"request_id":"\2"[^\n]*\naccess (?!\1|\2)([0-9a-f]{32})\n\{"request_id":"\3"[^\n]*\n\z/]



=== TEST 23: with nothing else asking for $request_id, the module's ids: 32 hex digits, one of its own for every request
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"one"}]}',
 "POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"two"}]}',
 "POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"three"}]}',
 "GET /records"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/chat\.completion/, qr/chat\.completion/,
 qr/\A\{"request_id":"([0-9a-f]{32})"[^\n]*\n\{"request_id":"(?!\1)([0-9a-f]{32})"[^\n]*\n\{"request_id":"(?!\1|\2)[0-9a-f]{32}"[^\n]*\n\z/]



=== TEST 24: a stream read in small pieces, written slowly: byte for byte, less the usage chunk
Proxy reads the upstream 512 bytes at a time, so events and the usage
chunk are split anywhere; sendfile_max_chunk lets a write take 100 bytes,
so the rest waits in nginx's output while proxy goes on reading: what the
gateway passed on must still point into a buffer proxy has not reused.
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/long;
        proxy_buffering off;
        proxy_buffer_size 512;
        sendfile_max_chunk 100;
    }
    location = /long {
        default_type text/event-stream;
        alias html/long.sse;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- user_files eval
">>> long.sse\n" . main::long_stream(1)
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
[main::long_stream(0),
 qr/"input_token_count":3,"output_token_count":400,"total_token_count":403,[^\n]*"token_count_source":"provider"/]



=== TEST 25: the same with proxy_buffering on and small proxy buffers
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/long;
        proxy_buffering on;
        proxy_buffer_size 512;
        proxy_buffers 4 512;
        proxy_busy_buffers_size 1024;
        proxy_max_temp_file_size 0;
        sendfile_max_chunk 100;
    }
    location = /long {
        default_type text/event-stream;
        alias html/long.sse;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- user_files eval
">>> long.sse\n" . main::long_stream(1)
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
[main::long_stream(0),
 qr/"input_token_count":3,"output_token_count":400,"total_token_count":403,[^\n]*"token_count_source":"provider"/]



=== TEST 26: usage chunks among the events, cut wherever proxy's reads split them (333-byte reads, 77-byte writes)
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/cut;
        proxy_buffering off;
        proxy_buffer_size 333;
        sendfile_max_chunk 77;
    }
    location = /cut {
        default_type text/event-stream;
        alias html/cut.sse;
    }
--- user_files eval
">>> cut.sse\n" . main::cut_stream(1)
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello there"}]}
--- error_code: 200
--- response_body eval
main::cut_stream(0)



=== TEST 27: a model request that nginx's access phase refuses (deny) gets a record too; a GET does not
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_user $http_x_user;
        deny all;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- more_headers
X-User: mallory
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /v1/models",
 "GET /records"]
--- error_code eval
[403, 403, 200]
--- response_body_like eval
[qr/403 Forbidden/, qr/403 Forbidden/,
 qr/\A\{[^\n]*"requester":"mallory"[^\n]*"endpoint":"\/v1\/"[^\n]*"status_code":403[^\n]*\}\n\z/]
--- response_body_unlike eval
[qr/^$/, qr/^$/, qr/"token_count_source":"(?!none)/]



=== TEST 28: the record's times: request_time in UTC with milliseconds, latencies in whole milliseconds, TTFT within the latency
latency_ms and ttft_ms are wall-clock times from the request's start, as
$request_time; upstream_latency_ms is nginx's $upstream_response_time, on
the monotonic clock.  Each is cut to whole milliseconds at its own phase,
so the upstream's time can be one more than the whole (seen): they are not
compared.  The mock waits 20 ms between events.
--- http_config eval: $::http_config
--- config eval: $::config
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- more_headers
X-Mock-Chunk-Delay-Ms: 20
--- error_code eval
[200, 200]
--- response_body_filters eval
sub {
    my ($r) = @_;
    return $r =~ /data: \[DONE\]/ ? "stream\n" : "no end\n" if $r =~ /^data: /m;
    my ($t) = $r =~ /"request_time":"([^"]*)"/;
    my ($l, $tt, $u) = map { my ($v) = $r =~ /"$_":(\d+|null)/; $v } qw(latency_ms ttft_ms upstream_latency_ms);
    ($t =~ /\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/ ? 'utc' : "time $t")
    . ' ' . ($l >= 20 ? 'latency>=20' : "latency $l")
    . ' ' . ($tt ne 'null' && $tt <= $l ? 'ttft<=latency' : "ttft $tt")
    . ' ' . ($u ne 'null' && $u >= 20 ? 'upstream>=20' : "upstream $u") . "\n";
}
--- response_body eval
["stream\n", "utc latency>=20 ttft<=latency upstream>=20\n"]



=== TEST 29: usage tracking is off by default: no record
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
[qr/chat\.completion/, ""]



=== TEST 30: large proxy reads (512k) of a stream of small events: the usage chunk is still cut
No event is larger than the hold-back limit, but one proxy read is: the cut
must not be given up (only a partial event is held).  Found in review.
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/big;
        proxy_buffering off;
        proxy_buffer_size 512k;
        proxy_buffers 4 512k;
    }
    location = /big {
        default_type text/event-stream;
        alias html/big.sse;
    }
--- user_files eval
">>> big.sse\n" . main::long_stream(0) x 20 . main::long_stream(1)
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello there"}]}
--- error_code: 200
--- response_body eval
main::long_stream(0) x 21
--- no_error_log
no longer cut



=== TEST 31: a usage chunk cut after a "\r\n\r\n" that a read split between '\r' and '\n': the line end stays whole
Reads of 256, 257, 300 and 333 bytes put some blank line's '\r' at a
buffer's end; the cut chunk must not take the '\n' after it.
--- http_config eval: $::http_config
--- config
    location /v1/256/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/crlf;
        proxy_buffering off;
        proxy_buffer_size 256;
    }
    location /v1/257/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/crlf;
        proxy_buffering off;
        proxy_buffer_size 257;
    }
    location /v1/300/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/crlf;
        proxy_buffering off;
        proxy_buffer_size 300;
    }
    location /v1/333/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/crlf;
        proxy_buffering off;
        proxy_buffer_size 333;
    }
    location = /crlf {
        default_type text/event-stream;
        alias html/crlf.sse;
    }
--- user_files eval
">>> crlf.sse\n" . main::crlf_stream(1)
--- pipelined_requests eval
[map { "POST /v1/$_/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}" } 256, 257, 300, 333]
--- error_code eval
[200, 200, 200, 200]
--- response_body eval
[(main::crlf_stream(0)) x 4]



=== TEST 32: a chunk with usage and the last text (Gemini's and Mistral's OpenAI streams) is not cut: only a usage chunk with empty choices is
Found in review: the chunk with the usage was cut whatever else it had, and
the client lost the last word and the finish reason.
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s;
        proxy_buffering off;
    }
    location = /s {
        default_type text/event-stream;
        alias html/s.sse;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- user_files eval
">>> s.sse\n" . qq|data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n|
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
[qq|data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n|,
 qr/"input_token_count":1,"output_token_count":2,"total_token_count":3,[^\n]*"token_count_source":"provider"/]



=== TEST 33: the same through the output guard (pii=mask): the chunk with text and usage goes on, masked, the usage-only chunk is cut
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s;
        proxy_buffering off;
    }
    location = /s {
        default_type text/event-stream;
        alias html/s.sse;
    }
--- user_files eval
">>> s.sse\n" . qq|data: {"choices":[{"index":0,"delta":{"content":"Mail"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":" jane\@corp.example"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n|
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- error_code: 200
--- response_body_filters eval
sub {
    my ($body) = @_;
    my $text = CORE::join '', map { my $s = $_; $s =~ s/\\(.)/$1/g; $s } $body =~ /"content":"((?:[^"\\]|\\.)*)"/g;
    my ($finish) = $body =~ /"finish_reason":"(\w+)"/;
    my $usage = () = $body =~ /"usage":\{/g;
    "$text|" . ($finish // 'no finish') . "|$usage usage|" . ($body =~ /"choices":\[\]/ ? 'usage chunk' : 'no usage chunk') . "\n";
}
--- response_body
Mail [REDACTED_EMAIL]|stop|1 usage|no usage chunk



=== TEST 34: refused by deny and sent to an error_page (a GET there): the record is still written, for the tracked location
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_user $http_x_user;
        deny all;
        error_page 403 /denied;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /denied {
        default_type application/json;
        return 403 '{"error":{"message":"denied","type":"forbidden","code":"denied"}}';
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- more_headers
X-User: mallory
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[403, 200]
--- response_body_like eval
[qr/"code":"denied"/,
 qr/\A\{[^\n]*"requester":"mallory"[^\n]*"endpoint":"\/v1\/"[^\n]*"status_code":403[^\n]*"token_count_source":"none"[^\n]*\}\n\z/]



=== TEST 35: refused by limit_req (503): the record is written
--- http_config eval
$::http_config . "    limit_req_zone \$binary_remote_addr zone=one:1m rate=1r/m;\n"
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        ai_gateway_user $http_x_user;
        limit_req zone=one nodelay;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- more_headers
X-User: bob
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]}",
 "GET /records"]
--- error_code eval
[200, 503, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/503/,
 qr/\A\{[^\n]*"status_code":200[^\n]*\}\n\{[^\n]*"requester":"bob"[^\n]*"status_code":503[^\n]*"token_count_source":"none"[^\n]*\}\n\z/]



=== TEST 36: a malformed request (it never reaches a location) is no model request: no usage record
The usage log is written into the error log, where the check looks.  Found
in review (a first version wrote one for it).
--- http_config
    ai_gateway_usage_log logs/error.log buffer=0;
--- config
    ai_gateway on;
    ai_gateway_usage_tracking on;
--- raw_request eval
"POST /v1/chat HTTP/9.9x\r\n\r\n"
--- error_code: 505
--- ignore_response_body
--- no_error_log
"status_code":505



=== TEST 37: ai_gateway_user over a map of a variable "set" in the location: the requester is the header's value (read after the rewrite phase)
Found in review: the rewrite-phase ctx read the user before "set" ran, and
the map was cached empty.
--- http_config eval
$::http_config . "    map \$u \$who { default \"team-\$u\"; }\n"
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        set $u $http_x_user;
        ai_gateway_user $who;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- more_headers
X-User: alice
--- pipelined_requests eval
["POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/"requester":"team-alice"/]



=== TEST 38: a POST that a rewrite sends to a location without the gateway, answered there: no usage record
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        rewrite ^/v1/files(.*)$ /plain$1 last;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /plain {
        return 200 "plain\n";
    }
    location = /records {
        default_type text/plain;
        alias logs/usage.jsonl;
    }
--- pipelined_requests eval
["POST /v1/files/upload\nxxxx",
 "GET /records"]
--- error_code eval
[200, 200]
--- response_body eval
["plain\n", ""]



=== TEST 39: a keepalive comment reaches the client at once, with the header, while the usage chunk we asked for is cut from the stream
Found in review: nothing went out until the first event (the header
included), so a provider's keepalives never reached the client.
--- http_config eval: $::http_config
--- config eval: $::config
--- request
POST /v1/chat/completions HTTP/1.0
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello there"}]}
--- more_headers
X-Mock-Keepalive: 2
X-Mock-Stall-After: 0
--- timeout: 0.5
--- abort
--- error_code: 200
--- response_body eval
": keepalive\n\n: keepalive\n\n"



=== TEST 40: blocks without data just before the usage chunk (a comment, id:, retry:) stay in the stream; only the usage chunk is cut
--- http_config eval: $::http_config
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s.sse;
        proxy_buffering off;
    }
    location = /s.sse {
        default_type text/event-stream;
        alias html/s.sse;
    }
--- user_files eval
">>> s.sse\n" . qq|data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n: ping\n\nid: 7\n\nretry: 100\n\n\n|
. qq|data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n: after\n\ndata: [DONE]\n\n|
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello there"}]}
--- error_code: 200
--- response_body eval
qq|data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n: ping\n\nid: 7\n\nretry: 100\n\n\n: after\n\ndata: [DONE]\n\n|
