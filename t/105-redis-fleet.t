# Limits of a fleet: several gateways share one Redis.  Exactness under
# concurrency across nodes, token budgets reserved and settled fleet-wide,
# Redis stopped and restarted mid-run under each on_error policy, a slow
# Redis that leaves the workers free, SCRIPT FLUSH, database selection,
# and usage records in a Redis stream.
# (A plain Test::More script: it runs several nginx and stops Redis.)
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockProvider;
use RedisServer;
use GatewayNginx;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

my $mock = $ENV{TEST_NGINX_MOCK_PORT};
my $redis = RedisServer::port();
my $body = '{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"Hello there"}]}';

sub gateway {
    my ($options, $locations, %opt) = @_;
    my $gw = GatewayNginx->new
        or plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so';
    my $port = $gw->{port};
    ok($gw->start(<<"_EOC_", %opt), "nginx starts ($options)");
    access_log off;
    ai_gateway_redis 127.0.0.1:$redis $options;
    @{[ $opt{http} // '' ]}
    server {
        listen 127.0.0.1:$port reuseport backlog=512;
        add_header X-Backend \$ai_limit_backend always;
        $locations
    }
_EOC_
    return $gw;
}

# polls until the code returns true; the deadline only bounds a failure
sub eventually {
    my ($code, $secs) = @_;
    my $deadline = time + GatewayNginx::patience($secs // 10);
    while (time < $deadline) {
        return 1 if $code->();
        sleep 0.05;
    }
    return 0;
}

# the sum of a counter's buckets, in Redis
sub counted {
    my ($pattern) = @_;
    my $sum = 0;
    for my $key (split /\n/, RedisServer::cli('KEYS', $pattern)) {
        # the last bucket, the sum, then the ring: thirteen doubles
        my (undef, $total, @buckets) = unpack 'd<13', RedisServer::cli('GET', $key);
        my $ring = 0;
        $ring += $_ for @buckets;
        return -1 if $ring != $total;     # the sum must be the ring's
        $sum += $ring;
    }
    return $sum;
}

my $calls = <<'_EOL_';
        location /v1/ {
            ai_gateway_endpoint fleet;
            ai_gateway_rate_limit key=endpoint renewal_period=hour calls=50;
            proxy_pass http://127.0.0.1:MOCK;
        }
        location /t/ {
            ai_gateway_endpoint budget;
            ai_gateway_user $http_x_user;
            ai_gateway_rate_limit key=user renewal_period=hour tokens=1000;
            proxy_pass http://127.0.0.1:MOCK/v1/;
        }
        location /d/ {
            ai_gateway_endpoint double;
            ai_gateway_user $http_x_user;
            ai_gateway_rate_limit key=user renewal_period=hour tokens=1000;
            ai_gateway_rate_limit key=user renewal_period=hour tokens=2000;
            proxy_pass http://127.0.0.1:MOCK/v1/;
        }
        location /m/ {
            ai_gateway_endpoint multi;
            ai_gateway_user $http_x_user;
            ai_gateway_rate_limit key=endpoint renewal_period=hour calls=1000;
            ai_gateway_rate_limit key=user renewal_period=hour calls=30;
            proxy_pass http://127.0.0.1:MOCK/v1/;
        }
_EOL_
$calls =~ s/MOCK/$mock/g;

my $gw1 = gateway('timeout=2s on_error=deny', $calls);
my $gw2 = gateway('timeout=2s on_error=deny', $calls);

# ---- 200 concurrent requests over two nodes against calls=50

my $all = GatewayNginx::concurrently(50, sub {
    my ($c) = @_;
    my $out = '';
    for my $i (1 .. 4) {
        my $gw = ($c + $i) % 2 ? $gw1 : $gw2;
        my ($st, $h) = $gw->request('POST', '/v1/chat/completions', $body);
        my $ok = $st == 429
                 && $h =~ /\r\nRetry-After: \d+\r\n/
                 && $h =~ /\r\nx-ratelimit-remaining-requests: 0\r\n/
                 && $h =~ /\r\nX-Backend: redis$/m;
        my ($left) = $h =~ /\r\nx-ratelimit-remaining-requests: (\d+)\r\n/;
        $out .= $st == 200 && $h =~ /X-Backend: redis/ ? "A" . ($left // '?') . ","
                : $ok ? "R" : "?$st";
    }
    return "$out\n";
});

is(($all =~ tr/A//), 50, 'two nodes, 200 concurrent requests: exactly 50 admitted');
is(($all =~ tr/R//), 150, 'the other 150 got 429 with Retry-After and the headers')
    or diag($all);
# each admitted request saw the charges of those before it, in its own
# command or an earlier one: the remaining calls told are 49 down to 0
is(join(' ', sort { $a <=> $b } $all =~ /A(\d+),/g), join(' ', 0 .. 49),
   'the 50 admitted were told 49 .. 0 calls remaining, each once');
is(counted('aigw:{l}:c:3600000:1:*'), 50, 'Redis holds 50 calls in the window');

# ---- two counters a request: 100 concurrent requests of two users over
# two nodes, 30 calls a user; the endpoint's counter (first) never
# rejects, the user's (second) rejects 20 of each user's 50

my $two = GatewayNginx::concurrently(50, sub {
    my ($c) = @_;
    my $out = '';
    for my $i (1 .. 2) {
        my $user = 'u' . ($i % 2);
        my $gw = ($c + $i) % 2 ? $gw1 : $gw2;
        my ($st, $h) = $gw->request('POST', '/m/chat/completions', $body,
                                    "X-User: $user");
        my ($left) = $h =~ /\r\nx-ratelimit-remaining-requests: (\d+)\r\n/;
        my ($limit) = $h =~ /\r\nx-ratelimit-limit-requests: (\d+)\r\n/;
        $out .= "$user:$st:" . ($left // '-') . ':' . ($limit // '-') . "\n";
    }
    return $out;
});
my (%admitted, %rejected, %left, @odd);
for (split /\n/, $two) {
    my ($user, $st, $left, $limit) = split /:/;
    if ($st == 200 && $limit eq '30') {
        $admitted{$user}++;
        push @{ $left{$user} }, $left;
    } elsif ($st == 429 && $left eq '0' && $limit eq '30') {
        $rejected{$user}++;
    } else {
        push @odd, $_;
    }
}
is(join(',', map { ($admitted{"u$_"} // 0) . '/' . ($rejected{"u$_"} // 0) } 0 .. 1),
   join(',', ('30/20') x 2),
   'two counters: each user 30 admitted and 20 rejected, told the user\'s limit')
    or diag(join(' ', @odd));
is(join(' ', map { join(',', sort { $a <=> $b } @{ $left{"u$_"} // [] }) } 0 .. 1),
   join(' ', (join(',', 0 .. 29)) x 2),
   'each user\'s admitted requests were told 29 .. 0 calls remaining, each once');
is(counted("aigw:{l}:c:3600000:1:*multi"), 60,
   'the endpoint counted the 60 admitted only: a request rejected by its second counter charges neither');
is(counted("aigw:{l}:c:3600000:0:multi*"), 60, 'the users\' counters hold 30 each');

# ---- a token budget reserved on one node, settled, seen from the other

my ($st, $h) = $gw1->request('POST', '/t/chat/completions', $body, 'X-User: tok');
is($st, 200, 'budget: node 1 answers');
like($h, qr/\r\nx-ratelimit-remaining-tokens: 977\r\n/,
     'budget: node 1 reserved the prompt estimate (3) and max_tokens (20)');
ok(eventually(sub { counted("aigw:{l}:t:3600000:0:budget\x1ftok") == 14 }),
   'budget: settled in Redis to the real total (14 tokens)');
($st, $h) = $gw2->request('POST', '/t/chat/completions', $body, 'X-User: tok');
like($h, qr/\r\nx-ratelimit-remaining-tokens: 963\r\n/,
     'budget: node 2 sees node 1\'s 14 tokens, and reserves 23');
ok(eventually(sub { counted("aigw:{l}:t:3600000:0:budget\x1ftok") == 28 }),
   'budget: both requests settled, 28 tokens in Redis');

# ---- two budgets on one counter: one request's two settlements of it
# are queued together, and merged into one

($st, $h) = $gw1->request('POST', '/d/chat/completions', $body, 'X-User: two');
like($h, qr/\r\nx-ratelimit-remaining-tokens: 977\r\n/,
     'two budgets, one counter: the tightest tells 1000 - 23');
ok(eventually(sub { counted("aigw:{l}:t:3600000:0:double\x1ftwo") == 28 }),
   'two budgets, one counter: reserved twice (46), both settled to 14 each (28)')
    or diag(counted("aigw:{l}:t:3600000:0:double\x1ftwo"));

# ---- settlements of many concurrent requests of one user: batched
# commands name the same key several times, and every request counts

GatewayNginx::concurrently(20, sub {
    my ($c) = @_;
    for my $i (1 .. 2) {
        (($c + $i) % 2 ? $gw1 : $gw2)->request('POST', '/t/chat/completions',
                                              $body, 'X-User: many');
    }
    return '';
});
ok(eventually(sub { counted("aigw:{l}:t:3600000:0:budget\x1fmany") == 40 * 14 }),
   '40 concurrent requests over two nodes settle to exactly 40 x 14 tokens')
    or diag(counted("aigw:{l}:t:3600000:0:budget\x1fmany"));

# ---- SCRIPT FLUSH: the next call reloads the script

is(RedisServer::cli('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH');
($st, $h) = $gw1->request('POST', '/t/chat/completions', $body, 'X-User: tok');
is($st, 200, 'after SCRIPT FLUSH the request is admitted');
like($h, qr/\r\nx-ratelimit-remaining-tokens: 949\r\nx-ratelimit-reset-tokens: \S+\r\n(?s:.*)X-Backend: redis/,
     'after SCRIPT FLUSH it is counted in Redis');
ok(scalar $gw1->log_lines(qr/lost a script \(NOSCRIPT\): sending it again/),
   'the NOSCRIPT reload is logged');

# ---- Redis stopped mid-run, under each on_error policy

my $one = <<"_EOL_";
        location /v1/ {
            ai_gateway_endpoint one;
            ai_gateway_rate_limit key=endpoint renewal_period=hour calls=2;
            proxy_pass http://127.0.0.1:$mock;
        }
        location /free/ {
            proxy_pass http://127.0.0.1:$mock/v1/;
        }
_EOL_

my $local = gateway('timeout=300ms on_error=local', $one);
my $allow = gateway('timeout=300ms on_error=allow', $one);
my $deny = gateway('timeout=300ms on_error=deny', $one);

for my $gw ($local, $allow, $deny) {
    ok(eventually(sub {
        (($gw->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
    }), 'before the stop: counted in Redis');
}
RedisServer::cli('FLUSHALL');

RedisServer::stop();

my @r = map { [$local->request('POST', '/v1/chat/completions', $body)] } 1 .. 3;
is(join(',', map { $_->[0] } @r), '200,200,429',
   'Redis down, on_error=local: the node counts alone and enforces calls=2');
like($r[0][1], qr/X-Backend: local/, 'on_error=local: counted locally');
@r = map { [$allow->request('POST', '/v1/chat/completions', $body)] } 1 .. 3;
is(join(',', map { $_->[0] } @r), '200,200,200', 'Redis down, on_error=allow: all pass');
like($r[0][1], qr/X-Backend: none/, 'on_error=allow: not counted');
@r = $deny->request('POST', '/v1/chat/completions', $body);
is($r[0], 503, 'Redis down, on_error=deny: 503');
is($r[2], '{"error":{"message":"The rate limit service is unavailable. Please retry later.","type":"server_error","code":"limits_unavailable"}}' . "\n",
   'on_error=deny: the OpenAI error shape');
is(scalar(() = $local->log_lines(qr/is unavailable/)), $local->processes,
   'the loss is logged once per worker (two, one under valgrind), not per request');

RedisServer::start();

for my $gw ($local, $allow, $deny) {
    ok(eventually(sub {
        my @x = $gw->request('POST', '/v1/chat/completions', $body);
        $x[1] =~ /X-Backend: redis/
    }), 'Redis back: enforcement in Redis resumes');
}
ok(scalar $local->log_lines(qr/answers again: limits are counted there again/),
   'the return is logged');
is(scalar($local->alerts) + scalar($allow->alerts) + scalar($deny->alerts), 0,
   'no worker crashed, nothing alerted');

# ---- a slow Redis: limited requests wait up to timeout, the worker does not

my $slow = gateway('timeout=1s on_error=local', $one, workers => 1);
ok(eventually(sub {
    (($slow->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'slow: Redis answers at first');

RedisServer::cli('CLIENT', 'PAUSE', 2500);

sub open_request {
    my ($gw, $uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$gw->{port}") or die $!;
    print $s "POST $uri HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           . "Content-Type: application/json\r\nContent-Length: "
           . length($body) . "\r\n\r\n$body";
    return $s;
}

my $waiting = open_request($slow, '/v1/chat/completions');
my $gone = open_request($slow, '/v1/chat/completions');
close $gone;                       # leaves while its request waits
my ($fst, $fh) = $slow->request('POST', '/free/chat/completions', $body);
is($fst, 200, 'slow Redis: a location without limits answers at once');
ok(!IO::Select->new($waiting)->can_read(0),
   'slow Redis: ... while the limited request still waits (one worker)');
my $resp = do { local $/; <$waiting> } // '';
like($resp, qr{^HTTP/1\.1 200 (?s:.*)X-Backend: local}, 'slow Redis: after timeout, on_error=local');
ok(scalar $slow->log_lines(qr/did not answer within 1000 ms/), 'the timeout is logged');

# the paused Redis answers the two late requests: nothing must break
ok(eventually(sub {
    (($slow->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'slow Redis: once it answers again, counting is back in Redis');
is(scalar $slow->alerts, 0, 'late answers (one for a client that left) broke nothing');

# several requests in one command wait at once: the command's timer is
# theirs, and each gets on_error's answer after the timeout.  The worker
# is stopped while five clients connect and send, and accepts them all at
# once (multi_accept), so that one turn of its loop reads the five.
my $many = gateway('timeout=1s on_error=local', $one, workers => 1,
                   events => 'multi_accept on;');
ok(eventually(sub {
    (($many->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'one command: Redis answers at first');
RedisServer::cli('CLIENT', 'PAUSE', 2500);
my ($serving) = ($many->workers, $many->master_pid);
kill 'STOP', $serving;
my @waiting = map { open_request($many, '/v1/chat/completions') } 1 .. 5;
kill 'CONT', $serving;
my @late = map { my $s = $_; do { local $/; <$s> } // '' } @waiting;
# the local zone judges them (its own count of this hour: 200 or 429)
is(scalar(grep { m{^HTTP/1\.1 (?:200|429) (?s:.*)X-Backend: local} } @late), 5,
   'one command: its five waiting requests each get on_error=local after the timeout');
ok(eventually(sub {
    (($many->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'one command: counting is back in Redis once it answers');
is(scalar $many->alerts, 0, 'one command: its late answer broke nothing');

# a Redis that answers nothing at all (a partition, dropped packets) is
# given up once it has owed an answer for three timeouts (at least 1 s):
# the link is dropped as if Redis had closed it, the requests go on by
# on_error at once, and the link comes back when Redis answers again
my $mute = gateway('timeout=200ms on_error=local', $one, workers => 1);
ok(eventually(sub {
    (($mute->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'mute Redis: it answers at first');
RedisServer::cli('CLIENT', 'PAUSE', GatewayNginx::valgrind() ? 8000 : 4000);
my @mute;
ok(eventually(sub {
    push @mute, ($mute->request('POST', '/v1/chat/completions', $body))[1] // '';
    scalar $mute->log_lines(qr/redis 127\.0\.0\.1:\d+ is unavailable \(no answer to its commands for three timeouts\)/)
}, 3), 'mute Redis: the link is given up after three timeouts without an answer');
is(scalar(grep { /X-Backend: local/ } @mute), scalar(@mute),
   'mute Redis: meanwhile every request went on by on_error=local');
ok(eventually(sub {
    (($mute->request('POST', '/v1/chat/completions', $body))[1] // '') =~ /X-Backend: redis/
}), 'mute Redis: once it answers, the link is opened again and counts in Redis');
ok(scalar $mute->log_lines(qr/answers again/), 'mute Redis: the return is logged');
is(scalar $mute->alerts, 0, 'mute Redis: nothing alerted');

# ---- database selection, and usage records in a stream

my $db = gateway('db=4 on_error=deny', <<"_EOL_",
        location /v1/ {
            ai_gateway_endpoint dbsel;
            ai_gateway_usage_tracking on;
            ai_gateway_rate_limit key=endpoint renewal_period=hour calls=5;
            proxy_pass http://127.0.0.1:$mock;
        }
_EOL_
    http => 'ai_gateway_usage_log redis stream=ai_usage maxlen=1000;'
          . ' ai_gateway_usage_log logs/usage.jsonl buffer=0;');
($st, $h) = $db->request('POST', '/v1/chat/completions', $body);
is($st, 200, 'db=4: answered');
like(RedisServer::cli_db(4, 'KEYS', 'aigw:*'), qr/dbsel/, 'db=4: the counter is in database 4');
unlike(RedisServer::cli('KEYS', 'aigw:*'), qr/dbsel/, 'db=4: and not in database 0');

my $entry = '';
ok(eventually(sub { $entry = RedisServer::cli_db(4, 'XRANGE', 'ai_usage', '-', '+'); $entry ne '' }),
   'stream: the usage record arrived');
my (undef, %fields) = split /\n/, $entry;      # the id, then the fields
open my $jl, '<', "$db->{prefix}/logs/usage.jsonl" or die $!;
my $line = <$jl>;
my @keys = $line =~ /"([a-z_]+)":/g;
my @missing = grep { !exists $fields{$_} } grep { $_ ne 'prompt_tokens_details' } @keys;
is("@missing", '', 'stream: the entry has every field of the JSONL record');
is($fields{model}, 'm', 'stream: model');
is($fields{total_token_count}, 14, 'stream: total_token_count') or diag($entry);
is($fields{endpoint}, 'dbsel', 'stream: endpoint');

done_testing();
