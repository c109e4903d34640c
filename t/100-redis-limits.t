# The limits suite of t/080-limits.t, every block run again with its
# counters in Redis (a real redis-server on a loopback port, emptied before
# each block).  on_error=deny: a request that Redis did not count would get
# 503, so each passing block shows Redis counted all of it.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;
use RedisServer;

our $body = '{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"Hello there"}]}';

# as in t/080-limits.t: an answer of 70,000 bytes and two words
our $big = '{"model":"m","max_tokens":20,"mock":{"text":"' . ('x' x 70000)
           . ' two"},"messages":[{"role":"user","content":"Hello there"}]}';

spec_file('t/080-limits.t');

add_block_preprocessor(sub {
    my $block = shift;
    return if defined $block->must_die;
    RedisServer::cli('FLUSHALL');
    my $redis = "ai_gateway_redis 127.0.0.1:" . ($ENV{REDIS_PORT_OVERRIDE} // $ENV{TEST_NGINX_REDIS_PORT}) . " "
              . "timeout=2s on_error=deny;\n";
    $block->set_value(http_config => $redis . ($block->http_config // ''));
});

no_shuffle();
run_tests();
