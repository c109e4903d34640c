# Redis faults and options, one behaviour a block: Redis down under each
# on_error policy, a Redis that does not answer in time, a client that
# leaves while its request waits for Redis, passwords and databases, and
# nginx -t errors.  The "redis_setup" section says what is done to the
# test's redis-server before nginx starts: "stop", "pause MS",
# "password PW"; by default it runs, emptied, without a password.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;
use RedisServer;

our $body = '{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"Hello there"}]}';

add_block_preprocessor(sub {
    my $block = shift;
    RedisServer::start() unless RedisServer::running();
    RedisServer::set_password(undef);
    RedisServer::cli('FLUSHALL');
    for my $step (split /\n/, $block->redis_setup // '') {
        if ($step eq 'stop') {
            RedisServer::stop();
        } elsif ($step =~ /^pause (\d+)$/) {
            RedisServer::cli('CLIENT', 'PAUSE', $1);
        } elsif ($step =~ /^password (\S+)$/) {
            RedisServer::set_password($1);
        }
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: Redis down, on_error=local: the node's own counters enforce the limit
--- redis_setup
stop
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s on_error=local;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=2;
        add_header X-Backend $ai_limit_backend always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 200, 429]
--- response_headers eval
["X-Backend: local", "X-Backend: local", "X-Backend: local"]



=== TEST 2: Redis down, on_error=allow: requests pass, uncounted
--- redis_setup
stop
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT on_error=allow;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=1;
        add_header X-Backend $ai_limit_backend always;
        add_header X-Limit-Status $ai_limit_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Backend: none\nX-Limit-Status: \nx-ratelimit-limit-requests: 10000", "X-Backend: none"]



=== TEST 3: Redis down, on_error=deny: 503 in the OpenAI error shape
--- redis_setup
stop
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 503
--- response_body
{"error":{"message":"The rate limit service is unavailable. Please retry later.","type":"server_error","code":"limits_unavailable"}}
--- error_log
503 limits_unavailable (redis, on_error=deny)



=== TEST 4: a Redis that does not answer in time: the request goes on after timeout, by on_error
--- redis_setup eval
# under valgrind nginx takes longer to get to the wait (on a busy machine,
# longer than 1.5 s): a longer pause
"pause " . ($ENV{TEST_NGINX_USE_VALGRIND} ? 5000 : 1500)
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        add_header X-Backend $ai_limit_backend always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_headers
X-Backend: local
x-ratelimit-remaining-requests: 4
--- error_log eval
qr/\[warn\] .*ai_gateway: redis 127\.0\.0\.1:\d+ did not answer within 200 ms/



=== TEST 5: a client that leaves while its request waits for Redis ends it (499), and the late answer is dropped
--- redis_setup eval
# under valgrind nginx takes longer to get to the wait: a longer pause
"pause " . ($ENV{TEST_NGINX_USE_VALGRIND} ? 5000 : 1200)
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=10s;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- timeout eval
$ENV{TEST_NGINX_USE_VALGRIND} ? 2 : 0.3
--- abort
--- ignore_response
--- error_log
client prematurely closed connection
--- no_error_log
[alert]



=== TEST 6: a password and a database: the limits are counted in Redis
--- redis_setup
password s3cret-pw
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT password=s3cret-pw db=3 on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        add_header X-Backend $ai_limit_backend always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- pipelined_requests eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Backend: redis\nx-ratelimit-remaining-requests: 4", "X-Backend: redis\nx-ratelimit-remaining-requests: 3"]
--- no_error_log
s3cret-pw



=== TEST 7: a wrong password fails clearly, is never logged, and on_error applies
--- redis_setup
password right-pw
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT password=wrong-pw on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 503
--- error_log eval
qr/\[error\] .*ai_gateway: redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS/
--- no_error_log
wrong-pw



=== TEST 8: password_file: read at start-up, its line end dropped
--- redis_setup
password from-file-pw
--- user_files
>>> redis.pw
from-file-pw
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT password_file=$TEST_NGINX_HTML_DIR/redis.pw on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        add_header X-Backend $ai_limit_backend always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 200
--- response_headers
X-Backend: redis



=== TEST 9: a unix socket address that does not exist: on_error applies
--- http_config
    ai_gateway_redis unix:/nonexistent/redis.sock on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n$::body"
--- error_code: 503
--- error_log
redis unix:/nonexistent/redis.sock is unavailable



=== TEST 10: the metrics tell Redis is down, and count the failures
--- redis_setup
stop
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT on_error=allow;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/\nai_gateway_redis_up 0\n(?s:.*)\nai_gateway_redis_errors_total 1\n/]



=== TEST 11: the metrics tell Redis is up
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT on_error=deny;
--- config
    location /v1/ {
        ai_gateway_rate_limit key=endpoint renewal_period=minute calls=5;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /metrics {
        ai_gateway_metrics;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/chat\.completion/, qr/\nai_gateway_redis_up 1\n/]



=== TEST 12: usage records go to a Redis stream (the stream's content is checked in t/105)
--- http_config
    ai_gateway_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s;
    ai_gateway_usage_log redis stream=ai_usage maxlen=100;
--- config
    location /v1/ {
        ai_gateway_usage_tracking on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n$::body", "POST /v1/chat/completions\n$::body"]
--- error_code eval
[200, 200]
--- no_error_log
usage records are not reaching the Redis stream



=== TEST 13: nginx -t rejects an unknown on_error
--- http_config
    ai_gateway_redis 127.0.0.1:6379 on_error=retry;
--- config
--- must_die
--- error_log
invalid parameter "on_error=retry" in "ai_gateway_redis" directive



=== TEST 14: nginx -t rejects a bad timeout
--- http_config
    ai_gateway_redis 127.0.0.1:6379 timeout=soon;
--- config
--- must_die
--- error_log
invalid parameter "timeout=soon" in "ai_gateway_redis" directive



=== TEST 15: nginx -t rejects a bad address
--- http_config
    ai_gateway_redis 127.0.0.1:notaport;
--- config
--- must_die
--- error_log
invalid address "127.0.0.1:notaport" in "ai_gateway_redis" directive



=== TEST 16: nginx -t rejects a missing password_file
--- http_config
    ai_gateway_redis 127.0.0.1:6379 password_file=/nonexistent/pw;
--- config
--- must_die
--- error_log
cannot open "/nonexistent/pw"



=== TEST 17: nginx -t rejects a Redis usage log without ai_gateway_redis
--- http_config
    ai_gateway_usage_log redis stream=ai_usage;
--- config
--- must_die
--- error_log
"ai_gateway_usage_log redis" needs "ai_gateway_redis"



=== TEST 18: nginx -t rejects a Redis usage log without a stream
--- http_config
    ai_gateway_redis 127.0.0.1:6379;
    ai_gateway_usage_log redis maxlen=10;
--- config
--- must_die
--- error_log
"ai_gateway_usage_log redis" needs "stream=NAME"



=== TEST 19: nginx -t does not echo a password given in a wrong parameter
--- http_config
    ai_gateway_redis 127.0.0.1:6379 password=;
--- config
--- must_die
--- error_log
empty "password=" in "ai_gateway_redis" directive
