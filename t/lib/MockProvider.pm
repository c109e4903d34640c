package MockProvider;

# Starts/stops the mock LLM provider (t/mock/provider.js) for the test suite.
#
#   use lib 't/lib';          # or: use FindBin; use lib "$FindBin::Bin/lib";
#   use MockProvider;         # starts one mock for this .t file, sets
#                             # $ENV{TEST_NGINX_MOCK_PORT}, stops it at exit
#
#   use MockProvider ();      # load only; start it yourself:
#   my $port = MockProvider::start();
#   MockProvider::stop();
#
# With `use MockProvider;` a missing node binary makes the whole file
# skip_all; an explicit start() croaks instead. Set NODE=/path/to/node to
# choose the interpreter (default: node, then nodejs, from PATH).
#
# The mock is killed from an END block and from INT/TERM/HUP handlers (only
# in the process that started it, never in forked children), and it is run
# with --exit-with-parent so it exits by itself within ~0.5 s if this process
# dies in a way that skips both (SIGKILL, SIGPIPE...).

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;
use IO::Select;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

our $VERSION = '0.01';

my $SCRIPT = do {
    my $here = dirname(abs_path(__FILE__) // File::Spec->rel2abs(__FILE__));
    my $p = File::Spec->catfile($here, File::Spec->updir, 'mock', 'provider.js');
    abs_path($p) // $p;
};

my ($pid, $fh, $port, $owner);

sub import {
    my ($class, @args) = @_;
    return if grep { $_ eq ':manual' || $_ eq ':none' } @args;
    if (!find_node()) {
        require Test::More;
        Test::More::plan(skip_all => 'node not found (set NODE=/path/to/node) - needed by the mock provider');
    }
    start();
}

sub script { $SCRIPT }
sub port   { $port }
sub pid    { $pid }
sub url    { defined $port ? "http://127.0.0.1:$port" : undef }

sub find_node {
    my @cands = (defined $ENV{NODE} && length $ENV{NODE}) ? ($ENV{NODE}) : qw(node nodejs);
    for my $c (@cands) {
        if ($c =~ m{/}) {
            return $c if -f $c && -x _;
            next;
        }
        for my $dir (File::Spec->path) {
            my $p = File::Spec->catfile(length $dir ? $dir : '.', $c);
            return $p if -f $p && -x _;
        }
    }
    return;
}

sub running { return $pid && $owner && $owner == $$ && kill(0, $pid) }

# start(port => N, timeout => SECONDS, args => [...]): returns the port.
sub start {
    my %opt = @_;
    return $port if running();

    my $node = find_node()
        or croak 'MockProvider: node not found in PATH (set NODE=/path/to/node)';
    -f $SCRIPT or croak "MockProvider: $SCRIPT not found";

    my @cmd = ($node, $SCRIPT, '--port', $opt{port} // 0, '--host', '127.0.0.1',
               '--exit-with-parent', @{ $opt{args} || [] });

    my $child = open(my $out, '-|');
    croak "MockProvider: fork failed: $!" unless defined $child;
    if (!$child) {
        # child: no stdin, keep stderr, exec node (never run END blocks here)
        open(STDIN, '<', File::Spec->devnull);
        { exec { $cmd[0] } @cmd; }
        print STDERR "MockProvider: cannot exec $node: $!\n";
        POSIX::_exit(127);
    }
    ($pid, $fh, $owner) = ($child, $out, $$);

    my $timeout = $opt{timeout} // $ENV{MOCK_PROVIDER_TIMEOUT} // 15;
    my $deadline = time + $timeout;
    my $sel = IO::Select->new($out);
    my $buf = '';
    while ($buf !~ /\n/) {
        my $left = $deadline - time;
        last if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($out, $buf, 4096, length $buf);
        last unless $n;    # EOF or error
    }
    if ($buf =~ /^listening (\d+)\r?$/m) {
        $port = $1;
    } else {
        stop();
        $buf =~ s/\s+\z//;
        croak "MockProvider: $SCRIPT did not start within ${timeout}s"
            . (length $buf ? " (said: '$buf')" : '');
    }
    $ENV{TEST_NGINX_MOCK_PORT} = $port;
    return $port;
}

sub stop {
    return unless $pid && $owner && $owner == $$;
    local ($?, $!, $@);
    my $p = $pid;
    kill 'TERM', $p;
    my $deadline = time + 3;
    my $reaped = 0;
    while (time < $deadline) {
        my $r = waitpid($p, WNOHANG);
        if ($r == $p || $r == -1) { $reaped = 1; last }
        sleep 0.02;
    }
    if (!$reaped) {
        kill 'KILL', $p;
        waitpid($p, 0);
    }
    close($fh) if $fh;
    ($pid, $fh, $port, $owner) = ();
    delete $ENV{TEST_NGINX_MOCK_PORT};
    return 1;
}

# Install signal handlers for signals still at their default disposition:
# stop the mock, then die of the same signal.
for my $sig (qw(INT TERM HUP)) {
    my $cur = $SIG{$sig};
    next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
    $SIG{$sig} = sub {
        stop();
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
    };
}

END { stop() }

# --- small helpers for plain Test::More tests (core modules only) -------------

sub _http {
    my ($method, $path) = @_;
    croak 'MockProvider: not started' unless defined $port;
    require HTTP::Tiny;
    require JSON::PP;
    my $res = HTTP::Tiny->new(timeout => 10)->request($method, url() . $path);
    croak "MockProvider: $method $path: $res->{status} $res->{reason}" unless $res->{success};
    return JSON::PP::decode_json($res->{content});
}

# Requests the mock has seen (oldest first, at most 100), as hashes with
# method, url, http_version, headers (lowercased), body.
sub requests       { @{ _http(GET => '/__mock/requests') } }
sub last_request   { my @r = requests(); $r[-1] }
sub clear_requests { _http(DELETE => '/__mock/requests'); _http(DELETE => '/__mock/counters'); 1 }

1;
