# Configuration mistakes fail nginx -t with a message that names the
# directive and the bad value.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: ai_gateway takes on or off
--- config
    location /v1/ {
        ai_gateway maybe;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid value "maybe" in "ai_gateway" directive, it must be "on" or "off"



=== TEST 2: ai_gateway_max_body rejects a non-size
--- config
    location /v1/ {
        ai_gateway_max_body lots;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid value "lots" in "ai_gateway_max_body" directive, it must be a size greater than zero



=== TEST 3: ai_gateway_max_body rejects zero
--- config
    location /v1/ {
        ai_gateway_max_body 0;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid value "0" in "ai_gateway_max_body" directive



=== TEST 4: ai_gateway_endpoint rejects names unfit for records and labels
--- config
    location /v1/ {
        ai_gateway_endpoint "my endpoint";
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid value "my endpoint" in "ai_gateway_endpoint" directive



=== TEST 5: ai_gateway_endpoint is not allowed at http level
--- http_config
    ai_gateway_endpoint chat;
--- config
    location /v1/ {
        ai_gateway on;
    }
--- request
GET /v1/
--- must_die
--- error_log
"ai_gateway_endpoint" directive is not allowed here



=== TEST 6: a duplicate ai_gateway_endpoint is refused
--- config
    location /v1/ {
        ai_gateway_endpoint a;
        ai_gateway_endpoint b;
    }
--- request
GET /v1/
--- must_die
--- error_log
"ai_gateway_endpoint" directive is duplicate



=== TEST 7: ai_gateway_user with an unknown variable is refused
--- config
    location /v1/ {
        ai_gateway_user $no_such_variable;
    }
--- request
GET /v1/
--- must_die
--- error_log
unknown "no_such_variable" variable



=== TEST 8: ai_gateway takes exactly one argument
--- config
    location /v1/ {
        ai_gateway on off;
    }
--- request
GET /v1/
--- must_die
--- error_log
invalid number of arguments in "ai_gateway" directive



=== TEST 9: a valid configuration at every level starts
--- http_config
    ai_gateway_max_body 1m;
    ai_gateway_user $http_x_user;
--- config
    ai_gateway_endpoint srv;
    location /v1/ {
        ai_gateway on;
        ai_gateway_max_body 64k;
        return 200 "ok\n";
    }
--- request
GET /v1/
--- error_code: 200
--- response_body
ok
