# Self-test of the bundled test runner (t/lib/Test/Nginx/Socket.pm) using
# only stock nginx features, no module.  It is written to pass unchanged under
# the real Test::Nginx from CPAN as well.
use lib 't/lib';
use Test::Nginx::Socket;

# The real runner does not set this one itself.
$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();
$ENV{TEST_NGINX_GREETING} = 'hi there';

repeat_each(2);
no_shuffle();

plan tests => repeat_each() * (blocks() * 3 + 14);

run_tests();

__DATA__

=== TEST 1: sanity
--- config
    location = /t {
        return 200 "hello";
    }
--- request
GET /t
--- response_body chomp
hello
--- no_error_log
[error]



=== TEST 2: exact and absent response headers, http_config, access_log
--- http_config
    server_tokens off;
--- config
    location = /t {
        add_header X-Foo "bar baz";
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Foo: bar baz
Server: nginx
Content-Type: text/plain
!X-Missing
--- response_body
ok
--- access_log
GET /t HTTP/1.1" 200



=== TEST 3: response_headers_like and main_config
--- main_config
worker_rlimit_nofile 1024;
--- config
    location = /t {
        add_header X-Num 12345;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers_like
X-Num: \d+
Content-Length: 3
--- response_body
ok



=== TEST 4: 404 from the default root location
--- config
--- request
GET /no-such-file
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
No such file or directory



=== TEST 5: must_die on a bad directive; startup errors reach error_log
--- config
    location = /t {
        no_such_directive on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown directive "no_such_directive"/



=== TEST 6: error_log with a string and a regex
--- config
    location = /t {
        deny all;
    }
--- request
GET /t
--- error_code: 403
--- error_log eval
["access forbidden by rule", qr/\[error\] \d+#\d+: \*\d+ access forbidden/]
--- no_error_log
[alert]
[crit]



=== TEST 7: $TEST_NGINX_* in config and response_body, $ServerPort in headers
--- config
    location = /t {
        add_header X-Port $server_port;
        return 200 "$TEST_NGINX_GREETING on $server_port\n";
    }
--- request
GET /t
--- response_headers
X-Port: $ServerPort
--- response_body
hi there on $TEST_NGINX_SERVER_PORT
--- no_error_log
[error]



=== TEST 8: several requests, one connection each
--- config
    location = /a { return 200 "a\n"; }
    location = /b { return 404; }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body_like eval
["^a\n\\z", "404 Not Found"]
--- no_error_log
[error]



=== TEST 9: pipelined requests on one connection
--- config
    location = /a { return 200 "a\n"; }
    location = /b { return 200 "bb\n"; }
--- pipelined_requests eval
["GET /a", "GET /b"]
--- response_body eval
["a\n", "bb\n"]
--- no_error_log
[error]



=== TEST 10: request body gets a Content-Length (echoed via proxy)
--- config
    location = /echo {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
        proxy_set_header X-Body $request_body;
    }
    location = /sink {
        return 200 "[$http_x_body]\n";
    }
--- request
POST /echo
hello world
--- more_headers
Content-Type: text/plain
X-Comment: whatever
--- response_body
[hello world]
--- no_error_log
[error]



=== TEST 11: chunked request body spread over several TCP packets
--- config
    location = /echo {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
        proxy_set_header X-Body $request_body;
    }
    location = /sink {
        return 200 "[$http_x_body]\n";
    }
--- raw_request eval
["POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
 "Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
 "lo\r\n",
 "6\r\n wor",
 "ld\r\n0\r\n\r\n"]
--- raw_request_middle_delay: 0.02
--- response_body
[hello world]
--- no_error_log
[error]



=== TEST 12: request given as packets keeps its split points
--- config
    location = /echo {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
        proxy_set_header X-Body $request_body;
    }
    location = /sink {
        return 200 "[$http_x_body]\n";
    }
--- request eval
[["POST /echo HTTP/1.1\n", "abc", "def"]]
--- raw_request_middle_delay: 0.02
--- response_body
[abcdef]
--- no_error_log
[error]



=== TEST 13: chunked response is decoded (sub_filter drops Content-Length)
--- user_files
>>> sub.txt
hello world
--- config
    location = /sub.txt {
        root $TEST_NGINX_HTML_DIR;
        sub_filter world nginx;
        sub_filter_types text/plain;
    }
--- request
GET /sub.txt
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
hello nginx



=== TEST 14: HEAD request, per-block log_level, wait
--- log_level: warn
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 6
--- response_body
--- wait: 0.1
--- no_error_log
[debug]



=== TEST 15: error_code_like, response_body_like spans lines
--- config
    location = /t {
        return 201 "line one\nline two\n";
    }
--- request
GET /t
--- error_code_like: ^20[01]$
--- response_body_like: one.line two



=== TEST 16: skip_nginx
--- skip_nginx: 3: < 999.0.0
--- config
    location = /t {
        return 200 "hello";
    }
--- request
GET /t
--- response_body chomp
hello
--- no_error_log
[error]
