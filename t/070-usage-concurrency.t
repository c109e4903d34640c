# Two workers under concurrent load write only whole, valid JSON lines, and
# "nginx -s reopen" moves writing to a new file without losing a record.
# (A plain Test::More script: Test::Nginx blocks send one request at a time.)
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockProvider;
use GatewayNginx;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);

my $gw = GatewayNginx->new
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so';
my $prefix = $gw->{prefix};
my $port = $gw->{port};
my $mock = $ENV{TEST_NGINX_MOCK_PORT};

ok($gw->start(<<"_EOC_"), 'nginx starts');
    access_log off;
    # a small buffer, so that flushes happen under load
    ai_gateway_usage_log logs/usage.jsonl buffer=4k flush=100ms;
    server {
        listen 127.0.0.1:$port reuseport;
        location /v1/ {
            ai_gateway_usage_tracking on;
            ai_gateway_user \$http_x_user;
            proxy_pass http://127.0.0.1:$mock;
            proxy_buffering off;
        }
    }
_EOC_

sub request {
    my ($n, $user) = @_;
    my $stream = $n % 2 ? 'true' : 'false';
    my $body = qq({"model":"m","stream":$stream,"messages":[{"role":"user","content":"Hello there $n"}]});
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or return 0;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
           . "Connection: close\r\nContent-Type: application/json\r\n"
           . "X-User: $user\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s>;
    return defined $resp && $resp =~ m{^HTTP/1\.1 200 } ? 1 : 0;
}

# n clients at once, each sending its share; returns how many got 200
sub load {
    my ($clients, $each, $tag) = @_;
    my @pids;
    for my $c (1 .. $clients) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $ok = 0;
            $ok += request($_, "$tag-$c") for 1 .. $each;
            POSIX::_exit($ok == $each ? 0 : 1);
        }
        push @pids, $pid;
    }
    my $good = 0;
    for (@pids) { waitpid $_, 0; $good++ if $? == 0 }
    return $good * $each;
}

require POSIX;

is(load(8, 40, 'first'), 320, '320 concurrent requests answered');

# log rotation: move the file away, reopen, then more load.  The last
# requests' log phases may follow the clients' reading of the answers
# (lingering close): they are awaited, so that their records are in the
# old file.
ok($gw->wait_idle, 'nginx is done with the first load\'s connections');
rename "$prefix/logs/usage.jsonl", "$prefix/logs/usage.jsonl.1" or die $!;
$gw->signal('USR1');

my $deadline = time + 10;
sleep 0.05 until -e "$prefix/logs/usage.jsonl" || time > $deadline;
ok(-e "$prefix/logs/usage.jsonl", 'reopen created a new file');

is(load(4, 20, 'second'), 80, '80 more requests answered');

# a graceful stop writes what the buffers hold
$gw->stop;

my (%count, $lines, $bad);
for my $file ("usage.jsonl.1", "usage.jsonl") {
    open my $f, '<', "$prefix/logs/$file" or die "$file: $!";
    while (my $line = <$f>) {
        $lines++;
        my $rec = eval { decode_json($line) };
        if (!$rec || $line !~ /\n\z/) {
            $bad++;
            diag("bad line in $file: $line");
            next;
        }
        $count{$file}++;
        $count{"$file:" . ($rec->{requester} =~ /^first/ ? 'first' : 'second')}++;
        $count{ok}++ if $rec->{token_count_source} eq 'provider'
                        && $rec->{input_token_count} == 4
                        && $rec->{output_token_count} == 11
                        && $rec->{status_code} == 200;
    }
}

is($bad // 0, 0, 'every line is one whole JSON object');
is($lines, 400, 'one record per request, none lost');
is($count{ok}, 400, 'every record has the exact provider counts');
is($count{'usage.jsonl.1:first'}, 320, 'the records from before the reopen are in the old file');
ok($count{'usage.jsonl:second'} > 0, 'records after the reopen go to the new file');

my @alerts = $gw->alerts;
is(scalar @alerts, 0, 'no alerts in the error log') or diag(@alerts);

done_testing();
