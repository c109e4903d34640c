# The limit script's batches: the admissions of one turn of a worker's
# event loop go to Redis as one command, judged one after the other.  The
# script (its text is read from the module's source) is run here with
# EVAL against a real redis-server, so that what a batch decides can be
# compared with what the same requests decide one command each.  The
# gateway's own batches are exercised end to end by t/105 (200 concurrent
# requests, exactly calls=50 admitted).
# (A plain Test::More script: it talks to Redis only.)
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use RedisServer;

my $script = limit_script();
ok(length $script > 100, 'the limit script is read from the module source');

our $now = 1_764_000_000_000;
my $minute = 60_000;

# a request: [ [key, period, limit, cost, force], ... ]
sub admit { return command([], @_) }

# one admission command, as the gateway sends it: the settlements first
# ([key, period, bucket, delta] each), then the requests.  The answer is
# read as ngx_http_ai_gateway_limit_redis_apply() reads it: per distinct
# key its use, reset and bucket before the command, then per request the
# rejected index or -1 (and for a rejected request per key its retry);
# what an admitted request charged, the reader adds up itself.
sub command {
    my ($settle, @requests) = @_;
    my (@keys, @periods, %index, @n);
    for my $req (@requests) {
        for my $c (@$req) {
            $index{$c->[0]} //= do {
                push @keys, $c->[0];
                push @periods, $c->[1];
                scalar @keys;
            };
        }
    }
    for my $req (@requests) {
        # the number of its keys, then per key its index among the
        # distinct keys (from 1), limit, cost, force
        push @n, scalar @$req;
        push @n, $index{$_->[0]}, @$_[2 .. 4] for @$req;
    }
    my $reply = RedisServer::cli('EVAL', $script, @$settle + @keys,
                                 (map { $_->[0] } @$settle), @keys,
                                 'a', $now, scalar @$settle,
                                 pack('d<*', map { @$_[1 .. 3] } @$settle),
                                 pack('d<*', @periods), scalar @n,
                                 pack('d<*', @n));
    die "the reply is no string of doubles: $reply\n" if length($reply) % 8;
    my @d = unpack 'd<*', $reply;
    my (@used, @reset, @last);
    ($used[$_], $reset[$_], $last[$_]) = splice @d, 0, 3 for 0 .. $#keys;
    my @parts;
    for my $req (@requests) {
        die "the reply is short: $reply\n" unless @d;
        my $rejected = shift @d;
        my @retry = $rejected >= 0 ? splice(@d, 0, scalar @$req) : (0) x @$req;
        push @parts, { rejected => $rejected, retry => \@retry,
                       used => [ map { $used[$index{$_->[0]} - 1] } @$req ],
                       bucket => [ map { $last[$index{$_->[0]} - 1] } @$req ] };
        next if $rejected >= 0;
        $used[$index{$_->[0]} - 1] += $_->[3] for @$req;
    }
    die "the reply has more than the requests' parts: $reply\n" if @d;
    return @parts;
}

# the sum of a counter's ring, as stored
sub counted {
    my ($key) = @_;
    my $v = RedisServer::cli('GET', $key);
    return 0 unless length $v;
    my (undef, $total) = unpack 'd<13', $v;
    return $total;
}

RedisServer::cli('FLUSHALL');

# three calls, limit 2, one command
{
    my @r = admit(map { [[ '{l}:k1', $minute, 2, 1, 0 ]] } 1 .. 3);
    is_deeply([ map { $_->{rejected} } @r ], [ -1, -1, 0 ],
              'one command, limit 2: the first two admitted, the third rejected');
    is_deeply([ map { $_->{used}[0] } @r ], [ 0, 1, 2 ],
              'each request sees what those before it in the command charged');
    ok($r[2]{retry}[0] > 0, 'the rejected request is told when to retry');
    is(counted('{l}:k1'), 2, 'the counter holds the two admitted calls');
}

# a request rejected by its second counter charges neither
{
    my @r = admit([[ '{l}:a', $minute, 5, 1, 0 ], [ '{l}:b', $minute, 1, 1, 0 ]],
                  [[ '{l}:a', $minute, 5, 1, 0 ], [ '{l}:b', $minute, 1, 1, 0 ]],
                  [[ '{l}:a', $minute, 5, 1, 0 ]]);
    is_deeply([ map { $_->{rejected} } @r ], [ -1, 1, -1 ],
              'the second request is rejected by its second counter');
    is($r[2]{used}[0], 1, 'the third request sees only the admitted charge on a');
    is(counted('{l}:a'), 2, 'a: the first and the third request');
    is(counted('{l}:b'), 1, 'b: the first request only');
}

# dry run (force): admitted over the limit, and counted
{
    my @r = admit([[ '{l}:dry', $minute, 0, 3, 1 ]], [[ '{l}:dry', $minute, 0, 3, 1 ]]);
    is_deeply([ map { $_->{rejected} } @r ], [ -1, -1 ], 'dry-run counters never reject');
    is_deeply($r[1]{used}, [ 3 ], 'and still count');
    is(counted('{l}:dry'), 6, 'both charges are stored');
}

# nothing admitted: nothing written
{
    RedisServer::cli('SET', '{l}:full', pack('d<13', 0, 0, (0) x 11));
    my $before = RedisServer::cli('GET', '{l}:full');
    my @r = admit([[ '{l}:none', $minute, 0, 1, 0 ]]);
    is($r[0]{rejected}, 0, 'a request over its limit is rejected');
    is(RedisServer::cli('EXISTS', '{l}:none'), 0, 'a command that admits nobody writes nothing');
}

# settlements sent with admissions are applied first: a reservation given
# back makes room for the requests of the same command
{
    my $day = 86_400_000;
    my @r = admit([[ '{l}:tok', $day, 100, 80, 0 ]]);
    is($r[0]{rejected}, -1, 'a reservation of 80 tokens out of 100');
    my $bucket = int($now / ($day / 10));

    # the settlement (80 reserved, 30 used: -50) goes with a request of 60
    @r = command([[ '{l}:tok', $day, $bucket, -50 ]],
                 [[ '{l}:tok', $day, 100, 60, 0 ]]);
    is_deeply([ $r[0]{rejected}, $r[0]{used}[0] ], [ -1, 30 ],
              'the settlement (80 -> 30 used) is applied before the request of 60 is judged');
    is(counted('{l}:tok'), 90, 'the counter holds 30 settled and 60 reserved');

    @r = admit([[ '{l}:tok', $day, 100, 20, 0 ]]);
    is($r[0]{rejected}, 0, 'without a settlement the next 20 do not fit');

    # settlements on their own ("s"): their keys, the time, their number
    # and their numbers
    is(RedisServer::cli('EVAL', $script, 2, '{l}:tok', '{l}:tok', 's', $now, 2,
                        pack('d<*', $day, $bucket, -30, $day, $bucket, -10)),
       1, 'a settlement command answers 1');
    is(counted('{l}:tok'), 50, 'and gives back what each settlement says (90 - 30 - 10)');
}

# the time to live: set when a key's bucket begins, kept while it lasts
{
    my $w = $minute / 10;
    local $now = $now - $now % $w;
    admit([[ '{l}:ttl', $minute, 100, 1, 0 ]]);
    my $ttl = RedisServer::cli('PTTL', '{l}:ttl');
    ok($ttl > $minute + $w && $ttl <= $minute + $w + 1000,
       "a new key lives for the period, a bucket and a second ($ttl ms)");

    RedisServer::cli('PEXPIRE', '{l}:ttl', 5000);
    $now += $w - 1;
    admit([[ '{l}:ttl', $minute, 100, 1, 0 ]]);
    $ttl = RedisServer::cli('PTTL', '{l}:ttl');
    ok($ttl > 0 && $ttl <= 5000, "a charge in the same bucket keeps it ($ttl ms)");

    $now += 1;
    my @r = admit([[ '{l}:ttl', $minute, 100, 1, 0 ]]);
    $ttl = RedisServer::cli('PTTL', '{l}:ttl');
    ok($ttl > $minute + $w, "a charge in the next bucket renews it ($ttl ms)");
    is($r[0]{used}[0], 2, 'and the count goes on');
    is(counted('{l}:ttl'), 3, 'three calls counted');
}

# many requests in one command decide what they decide one command each
{
    my @keys = map { "{l}:mix$_" } 1 .. 3;
    my @periods = ($minute, 3_600_000, 86_400_000);
    my @limits = (7, 12, 40);
    srand(20261126);
    my @requests;
    for (1 .. 40) {
        my @req;
        for my $i (0 .. 2) {
            next if rand() < 0.3;
            push @req, [ $keys[$i], $periods[$i], $limits[$i], 1 + int(rand(4)), 0 ];
        }
        @req = ([ $keys[0], $periods[0], $limits[0], 1, 0 ]) unless @req;
        push @requests, \@req;
    }

    my @batched = admit(@requests);
    my %batched = map { $_ => counted($_) } @keys;

    RedisServer::cli('DEL', @keys);
    my @single = map { admit($_) } @requests;
    my %single = map { $_ => counted($_) } @keys;

    is_deeply([ map { [ $_->{rejected}, @{ $_->{used} }, @{ $_->{retry} } ] } @batched ],
              [ map { [ $_->{rejected}, @{ $_->{used} }, @{ $_->{retry} } ] } @single ],
              '40 requests in one command: the same verdicts and counts as one command each');
    is_deeply(\%batched, \%single, 'and the same counters in Redis');
    ok((grep { $_->{rejected} >= 0 } @batched) > 0
       && (grep { $_->{rejected} < 0 } @batched) > 0,
       'the mix has both admitted and rejected requests');
}

done_testing();


# the Lua text of ngx_http_ai_gateway_limit_lua[] in the module's source
sub limit_script {
    my $src = 'ngx_ai_gateway_module/ngx_http_ai_gateway_limit_redis.c';
    open my $fh, '<', $src or die "$src: $!";
    my $c = do { local $/; <$fh> };
    my ($lit) = $c =~ /ngx_http_ai_gateway_limit_lua\[\]\s*=\s*(.*?);\n/s
        or die "no limit script in $src";
    my $text = '';
    while ($lit =~ /"((?:[^"\\]|\\.)*)"/g) {
        my $s = $1;
        $s =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        $text .= $s;
    }
    return $text;
}
