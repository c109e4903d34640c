# Two workers under concurrent load write only whole, valid JSON lines, and
# "nginx -s reopen" moves writing to a new file without losing a record:
# usage records, and inference records, which are written in the buffer
# itself when it has room for their largest size and given to it whole
# otherwise (the long prompts below: six times their length, the most an
# escaped payload takes, is more than the 8k buffer).
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
    ai_gateway_inference_log logs/inference.jsonl buffer=8k flush=100ms;
    server {
        listen 127.0.0.1:$port reuseport;
        location /v1/ {
            ai_gateway_usage_tracking on;
            ai_gateway_inference_table on;
            ai_gateway_user \$http_x_user;
            proxy_pass http://127.0.0.1:$mock;
            proxy_buffering off;
        }
    }
_EOC_

# every fifth prompt is long: 1,800 bytes more, a quote every ninth
sub prompt {
    my ($n) = @_;
    my $text = "Hello there $n";
    $text .= ' \"quoted\"' x 200 if $n % 5 == 0;
    return $text;
}

# the mock's prompt tokens: characters / 4
my %input_tokens = map {
    (my $t = prompt($_)) =~ s/\\"/"/g;
    (int((length($t) + 3) / 4) => 1)
} 1 .. 40;

sub request {
    my ($n, $user) = @_;
    my $stream = $n % 2 ? 'true' : 'false';
    my $text = prompt($n);
    my $body = qq({"model":"m","stream":$stream,"messages":[{"role":"user","content":"$text"}]});
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
rename "$prefix/logs/inference.jsonl", "$prefix/logs/inference.jsonl.1" or die $!;
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
                        && $input_tokens{$rec->{input_token_count}}
                        && $rec->{output_token_count} == 11
                        && $rec->{status_code} == 200;
    }
}

my (%inf, $inf_lines, $inf_bad);
for my $file ("inference.jsonl.1", "inference.jsonl") {
    open my $f, '<', "$prefix/logs/$file" or die "$file: $!";
    while (my $line = <$f>) {
        $inf_lines++;
        my $rec = eval { decode_json($line) };
        my $req = $rec && eval { decode_json($rec->{request}) };
        my $text = $req && $req->{messages}[0]{content};
        my ($n) = ($text // '') =~ /^Hello there (\d+)/;
        my $user = $rec && $rec->{requester};
        if ($line !~ /\n\z/ || !defined $n || !defined $user) {
            $inf_bad++;
            diag("bad line in $file: $line");
            next;
        }
        $inf{"$file:" . ($user =~ /^first/ ? 'first' : 'second')}++;
        (my $want = prompt($n)) =~ s/\\"/"/g;
        $inf{same}++ if $text eq $want;
        $inf{long}++ if $n % 5 == 0 && length($text) > 1800;
    }
}

is($inf_bad // 0, 0, 'every inference line is one whole JSON object');
is($inf_lines, 400, 'one inference record per request, none lost');
is($inf{same}, 400, 'each holds the prompt its client sent');
is($inf{long}, 80, 'the long prompts among them');
is($inf{'inference.jsonl.1:first'}, 320, 'the inference records from before the reopen are in the old file');
ok($inf{'inference.jsonl:second'} > 0, 'inference records after the reopen go to the new file');

is($bad // 0, 0, 'every line is one whole JSON object');
is($lines, 400, 'one record per request, none lost');
is($count{ok}, 400, 'every record has the exact provider counts');
is($count{'usage.jsonl.1:first'}, 320, 'the records from before the reopen are in the old file');
ok($count{'usage.jsonl:second'} > 0, 'records after the reopen go to the new file');

my @alerts = $gw->alerts;
is(scalar @alerts, 0, 'no alerts in the error log') or diag(@alerts);

done_testing();
