# Exactness again and again: 8 rounds of 200 concurrent requests against a
# limit of 50, two workers, a fresh nginx each round, so that the counter in
# use is the only key of its zone (the least recently used one): the bug of
# worker clocks a few ms apart (an unsigned "now - touched" that took a key
# in use for idle and freed it) let up to 100 in, in 1 round of 20.
# (A plain Test::More script: Test::Nginx blocks send one request at a time.)
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockProvider;
use GatewayNginx;

my $mock = $ENV{TEST_NGINX_MOCK_PORT};
my $body = '{"model":"m","messages":[{"role":"user","content":"Hi"}]}';

GatewayNginx->new
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so';

for my $round (1 .. 8) {
    my $gw = GatewayNginx->new;
    my $port = $gw->{port};

    $gw->start(<<"_EOC_") or BAIL_OUT('nginx does not start');
    access_log off;
    ai_gateway_zone 1m;
    server {
        listen 127.0.0.1:$port reuseport backlog=512;
        location /v1/ {
            ai_gateway_endpoint stress;
            ai_gateway_rate_limit key=endpoint renewal_period=hour calls=50;
            proxy_pass http://127.0.0.1:$mock;
        }
    }
_EOC_

    my $all = GatewayNginx::concurrently(50, sub {
        my $out = '';
        for (1 .. 4) {
            my ($st) = $gw->request('POST', '/v1/chat/completions', $body);
            $out .= $st == 200 ? 'A' : $st == 429 ? 'R' : '?';
        }
        return $out;
    });
    is(($all =~ tr/A//) . '/' . ($all =~ tr/R//), '50/150',
       "round $round: 50 of 200 concurrent requests admitted, 150 refused");
    is(scalar $gw->alerts, 0, "round $round: nothing alerted");
    $gw->stop;
}

done_testing();
