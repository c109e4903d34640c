# Client keys issued with scripts/issue-key.sh and reloaded with nginx, and
# load balancing: weighted round robin over upstream servers, percentage
# splits with split_clients, each measured over 1,000 requests.
# (A plain Test::More script: it reloads nginx and counts many answers.)
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockProvider;
use GatewayNginx;
use Time::HiRes qw(sleep time);

my $mock = $ENV{TEST_NGINX_MOCK_PORT};
my $gw = GatewayNginx->new
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so';
my $port = $gw->{port};
my $keys = "$gw->{prefix}/keys.txt";
my $body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}';

sub issue {
    my ($user, @opt) = @_;
    my $key = `scripts/issue-key.sh $keys $user @opt`;
    is($?, 0, "issue-key.sh issues a key for $user");
    chomp $key;
    return $key;
}

my $alice = issue('alice', 'group=research');

my ($pa, $pb) = map { GatewayNginx->new->{port} } 1 .. 2;

ok($gw->start(<<"_EOC_", workers => 1), 'nginx starts');
    access_log off;
    upstream weighted {
        server 127.0.0.1:$pa weight=3;
        server 127.0.0.1:$pb weight=1;
    }
    split_clients "\${request_id}" \$variant {
        20%  127.0.0.1:$pb;
        *    127.0.0.1:$pa;
    }
    server {
        listen 127.0.0.1:$pa;
        location / {
            add_header X-Served-By a;
            proxy_pass http://127.0.0.1:$mock;
        }
    }
    server {
        listen 127.0.0.1:$pb;
        location / {
            add_header X-Served-By b;
            proxy_pass http://127.0.0.1:$mock;
        }
    }
    server {
        listen 127.0.0.1:$port;
        location /v1/ {
            ai_gateway_keys $keys;
            add_header X-User \$ai_user always;
            add_header X-Group \$ai_group always;
            proxy_pass http://127.0.0.1:$mock;
        }
        location /weighted/ {
            ai_gateway on;
            proxy_pass http://weighted/v1/;
        }
        location /split/ {
            ai_gateway on;
            proxy_pass http://\$variant/v1/chat/completions;
        }
    }
_EOC_

# ---- keys

my ($st, $h) = $gw->request('POST', '/v1/chat/completions', $body, "Authorization: Bearer $alice");
is($st, 200, 'an issued key is let in');
like($h, qr/\r\nX-User: alice\r\n(?s:.*)X-Group: research/, 'it says who the user is');

my $bob = issue('bob');
($st) = $gw->request('POST', '/v1/chat/completions', $body, "Authorization: Bearer $bob");
is($st, 401, 'a key issued after start-up is unknown until the reload');

SKIP: {
    # Under valgrind nginx is one process (master_process off), and stock
    # nginx cannot reload so: after a HUP it answers garbage on the old
    # listening sockets.  A reload needs a master and new workers.
    skip 'nginx -s reload needs master_process on (off under valgrind)', 2
        if GatewayNginx::valgrind();
    $gw->reload or diag('the old workers are still there after the reload');
    ($st, $h) = $gw->request('POST', '/v1/chat/completions', $body, "Authorization: Bearer $bob");
    is($st, 200, 'after nginx -s reload the new key is known');
    like($h, qr/X-User: bob/, 'and names its user');
}

open my $kf, '<', $keys or die $!;
my $file = do { local $/; <$kf> };
unlike($file, qr/\Q$alice\E|\Q$bob\E/, 'the keys file holds no key, only digests');

# ---- balancing

sub spread {
    my ($uri, $n) = @_;
    my %by;
    for (1 .. $n) {
        my ($s, $hd) = $gw->request('POST', $uri, $body);
        my ($who) = $hd =~ /\r\nX-Served-By: (\w+)/;
        $by{$s == 200 ? $who // '?' : "status $s"}++;
    }
    return \%by;
}

my $w = spread('/weighted/chat/completions', 1000);
is(($w->{a} // 0) + ($w->{b} // 0), 1000, 'weighted: all 1,000 answered');
cmp_ok(abs(($w->{a} // 0) / 1000 - 0.75), '<=', 0.02,
       "weighted 3:1: server a took $w->{a} of 1,000 (75% +/- 2 points)");

my $s = spread('/split/', 1000);
is(($s->{a} // 0) + ($s->{b} // 0), 1000, 'split: all 1,000 answered');
# 1,000 draws of 20%: sd 1.26 points; 5 points is about 4 sd
cmp_ok(abs(($s->{b} // 0) / 1000 - 0.20), '<=', 0.05,
       "split_clients 20%: b took $s->{b} of 1,000 (20% +/- 5 points)");

is(scalar $gw->alerts, 0, 'nothing alerted');

done_testing();
