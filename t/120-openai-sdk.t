# The official openai npm package (t/node, installed by scripts/setup.sh
# --test from the npm registry) talks to the gateway while the upstream is
# the Anthropic mock behind a failing primary: its non-streaming and
# streaming calls and its tool-call parsing work unchanged.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockProvider;
use GatewayNginx;

$ENV{AIGW_TEST_ANTHROPIC_KEY} = 'sk-ant-test-secret-5151515151';

my $node = MockProvider::find_node()
    or plan skip_all => 'node not found';
-d 't/node/node_modules/openai'
    or BAIL_OUT('the openai package is missing: run scripts/setup.sh --test '
                . '(npm ci in t/node)');

my $gw = GatewayNginx->new
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so';
my $port = $gw->{port};
my $mock = $ENV{TEST_NGINX_MOCK_PORT};

ok($gw->start(<<"_EOC_"), 'nginx starts');
    access_log off;
    ai_gateway_secret anthropic env=AIGW_TEST_ANTHROPIC_KEY;
    server {
        listen 127.0.0.1:$port;
        location /v1/ {
            ai_gateway on;
            proxy_set_header x-mock-status 503;
            proxy_intercept_errors on;
            error_page 429 500 502 503 504 = \@anthropic;
            proxy_pass http://127.0.0.1:$mock;
        }
        location \@anthropic {
            ai_gateway_upstream_api anthropic_messages secret=anthropic;
            proxy_set_header x-mock-status "";
            proxy_buffering off;
            proxy_pass http://127.0.0.1:$mock;
        }
    }
_EOC_

my $out = `$node t/node/openai-client.mjs http://127.0.0.1:$port/v1 2>&1`;
my $status = $? >> 8;
for my $line (split /\n/, $out) {
    if ($line =~ /^(not )?ok - (.*)$/) {
        ok(!$1, "openai SDK: $2");
    } else {
        diag($line);
    }
}
is($status, 0, 'the SDK client reports no failure');
is(scalar(() = $out =~ /^(?:not )?ok - /mg), 13, 'all 13 checks of the client ran');
is(scalar $gw->alerts, 0, 'nothing alerted');

done_testing();
