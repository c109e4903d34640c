package GatewayNginx;

# An nginx with the gateway module, of a test's own: a temporary prefix, a
# free loopback port, two workers.  For the plain Test::More scripts that
# need what Test::Nginx blocks cannot do: concurrent clients, "nginx -s
# reopen", "nginx -s reload".
#
#   my $gw = GatewayNginx->new or plan skip_all => ...;
#   $gw->start($http_block);       # "listen 127.0.0.1:$gw->{port}" inside
#   $gw->start($http_block, workers => 1);
#   $gw->start($http_block, events => 'multi_accept on;');
#   $gw->signal('HUP'); $gw->workers; $gw->stop; $gw->alerts;
#   my $out = GatewayNginx::concurrently(50, sub { my ($c) = @_; ... });
#
# Each instance has its own prefix (a new temporary directory, never the
# servroot) and a port the kernel picked as free (from the ephemeral range,
# not the fixed TEST_NGINX_PORT ones), so that runs in parallel do not meet.
#
# With TEST_NGINX_USE_VALGRIND set, as in the Test::Nginx files (and with
# the same valgrind options and suppressions, from Test::Nginx::Util), nginx
# runs under valgrind: one process (daemon and master_process off, whatever
# "workers" asks; $gw->processes says how many serve), our child.  Stopping
# it (by $gw->stop, or for those still running at done_testing) waits for
# valgrind's leak check and adds one test per instance, "... - no valgrind
# errors", failing with valgrind's report.  The scripts must use
# done_testing (not a fixed plan), and can ask GatewayNginx::valgrind() to
# skip what one process cannot do, and GatewayNginx::patience($secs) how
# long to wait for what takes $secs without valgrind.

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Test::Nginx::Util qw($UseValgrind valgrind_cmd valgrind_errors spawn_to
                         stop_process install_signal_handlers);

my @started;

sub valgrind { $UseValgrind ? 1 : 0 }

# a bound for a wait that takes up to $secs without valgrind (which makes
# nginx some 20-50 times slower)
sub patience {
    my ($secs) = @_;
    return $UseValgrind ? $secs * 10 : $secs;
}

if ($UseValgrind) {
    require Test2::API;
    # the last reports are tests: before done_testing's plan (or at the end
    # of a script that has none), every instance still running is stopped
    Test2::API::test2_add_callback_testing_done(sub { $_->stop for @started });
    # our children run in their own process group: a ^C does not reach
    # them.  All are told at once, then each is waited for (the QUIT is
    # repeated: one that comes while nginx is busy may go unseen).
    install_signal_handlers(sub {
        my @pids = map { $_->{pid} } grep { $_->{pid} && $_->{owner} == $$ } @started;
        kill 'QUIT', @pids;
        stop_process($_, 1) for @pids;
    });
}

# undef when TEST_NGINX_LOAD_MODULES names no module to test
sub new {
    my ($class) = @_;
    my ($so) = grep { /ngx_http_ai_gateway_module\.so$/ }
               split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} || '');
    return undef unless $so;

    my $prefix = tempdir(CLEANUP => 1);
    mkdir "$prefix/logs";
    # workers (not root) reopen files by name after "nginx -s reopen"
    chmod 0755, $prefix, "$prefix/logs";

    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1) or die $!;
    my $port = $s->sockport;
    close $s;

    return bless { so => abs_path($so), prefix => $prefix, port => $port,
                   nginx => $ENV{TEST_NGINX_BINARY} || 'nginx' }, $class;
}

# writes nginx.conf around the http block and starts nginx; true on success
sub start {
    my ($self, $http, %opt) = @_;
    my $workers = $opt{workers} // 2;
    my $mode = 'on';
    ($workers, $mode) = (1, 'off') if $UseValgrind;    # one process
    $self->{processes} = $workers;
    open my $conf, '>', "$self->{prefix}/nginx.conf" or die $!;
    print $conf <<"_EOC_";
load_module $self->{so};
worker_processes $workers;
daemon $mode;
master_process $mode;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 1024; @{[ $opt{events} // '' ]} }
http {
$http
}
_EOC_
    close $conf;

    push @started, $self;
    my @cmd = ($self->{nginx}, '-p', "$self->{prefix}/", '-c', "$self->{prefix}/nginx.conf");
    return system(@cmd) == 0 unless $UseValgrind;

    my $logs = "$self->{prefix}/logs";
    $self->{owner} = $$;
    $self->{pid} = spawn_to("$logs/stderr.log", valgrind_cmd($logs), @cmd);
    # nginx writes its pid file once its sockets listen
    my $deadline = time + 60;
    until (-s "$logs/nginx.pid") {
        my $exited = waitpid($self->{pid}, WNOHANG) != 0;
        if ($exited || time > $deadline) {
            open my $err, '<', "$logs/stderr.log";
            Test::More::diag("nginx did not start under valgrind:\n",
                             $self->log_lines(qr/\[emerg\]/), $err ? <$err> : ());
            if ($exited) {
                # the caller's test of start() fails; valgrind's report
                # is only shown (nginx leaks its pool when it gives up)
                delete $self->{pid};
                my $errors = valgrind_errors($logs);
                Test::More::diag("valgrind:\n$errors") if $errors;
            } else {
                $self->stop;
            }
            return 0;
        }
        sleep 0.1;
    }
    return 1;
}

# how many processes serve requests (one under valgrind)
sub processes {
    my ($self) = @_;
    return $self->{processes};
}

sub master_pid {
    my ($self) = @_;
    return $self->{pid} if $UseValgrind;
    open my $f, '<', "$self->{prefix}/logs/nginx.pid" or return;
    my $pid = <$f> // return;
    chomp $pid;
    return $pid;
}

sub signal {
    my ($self, $sig) = @_;
    my $pid = $self->master_pid or return;
    kill $sig, $pid;
}

# the worker processes: children of the master that are not zombies
sub workers {
    my ($self) = @_;
    my $master = $self->master_pid or return;
    my @w;
    for my $dir (glob('/proc/[0-9]*')) {
        my ($pid) = $dir =~ m{/proc/(\d+)$} or next;
        open(my $f, '<', "$dir/stat") or next;
        my $stat = <$f> // next;
        my ($state, $ppid) = $stat =~ /\) (\S) (\d+)/ or next;
        push @w, $pid if $ppid == $master && $state ne 'Z';
    }
    return @w;
}

# nginx -s reload, waited for: true once none of the old workers is left
sub reload {
    my ($self, $secs) = @_;
    my @old = $self->workers;
    $self->signal('HUP');
    my $deadline = time + patience($secs // 15);
    while (time < $deadline) {
        my %now = map { $_ => 1 } $self->workers;
        return 1 if !grep { $now{$_} } @old;
        sleep 0.05;
    }
    return 0;
}

# a graceful stop (buffers are written), waited for; under valgrind also
# a test: valgrind's report
sub stop {
    my ($self) = @_;
    return $self->stop_valgrind if $UseValgrind;
    my $master = $self->master_pid or return;
    kill 'QUIT', $master;
    my $deadline = time + 10;
    sleep 0.05 while kill(0, $master) && time < $deadline;
    unlink "$self->{prefix}/logs/nginx.pid";
}

sub stop_valgrind {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    # A master's QUIT lets the workers finish their requests; without one
    # nginx exits at once and drops those still open (their records too).
    $self->wait_idle(1);
    my $exited = stop_process(delete $self->{pid}, 1);
    unlink "$self->{prefix}/logs/nginx.pid";
    $self->valgrind_report($exited);
}

# the test of an nginx that ran under valgrind (and exited by itself or not)
sub valgrind_report {
    my ($self, $exited) = @_;
    my $errors = valgrind_errors("$self->{prefix}/logs");
    $errors = "nginx did not exit within 60 s of QUIT: killed, no leak check\n$errors"
        unless $exited;
    Test::More::ok(!$errors, "nginx on port $self->{port} - no valgrind errors")
        or Test::More::diag($errors);
}

# how many connections nginx holds on $gw->{port} (from /proc/net/tcp*:
# sockets on that local port, not listening, still owned by a process)
sub connections {
    my ($self) = @_;
    my $n = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (my $line = <$fh>) {
            my @c = split ' ', $line;
            next unless @c > 9 && $c[1] =~ /:([0-9A-F]+)$/ && hex($1) == $self->{port};
            $n++ if $c[3] ne '0A' && $c[9];
        }
    }
    return $n;
}

# waits until nginx holds no connection on $gw->{port} (false if it still
# does after patience($secs), 5 s by default): the requests whose answers
# the clients have read are then also logged.  The log phase may come a
# little after a client has read the end of its answer: nginx shuts the
# socket down and lingers, reading what the client may still send, before
# it closes the request.
sub wait_idle {
    my ($self, $secs) = @_;
    my $deadline = time + patience($secs // 5);
    while ($self->connections) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

# the error log's lines that match a pattern
sub log_lines {
    my ($self, $re) = @_;
    open my $log, '<', "$self->{prefix}/logs/error.log" or return;
    return grep { /$re/ } <$log>;
}

# one request: (status, head, body)
sub request {
    my ($self, $method, $uri, $body, @headers) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                  Timeout => 20)
        or return (0, '', '');
    $body //= '';
    print $s "$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . join('', map { "$_\r\n" } @headers)
           . ($body ne '' ? "Content-Type: application/json\r\n" : '')
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    my ($status) = $resp =~ m{^HTTP/1\.1 (\d+) };
    my ($head, $rbody) = split /\r\n\r\n/, $resp, 2;
    return ($status // 0, $head // '', $rbody // '');
}

# [alert], [crit] and [emerg] lines of the error log
sub alerts {
    my ($self) = @_;
    open my $log, '<', "$self->{prefix}/logs/error.log" or return;
    return grep { /\[(alert|crit|emerg)\]/ } <$log>;
}

END {
    $_->stop for @started;
}


# Runs $code->($c) for $c = 1 .. $n in as many children at once (each
# waits until all are forked), and returns what they returned, joined.
sub concurrently {
    my ($n, $code) = @_;
    my @pids;
    pipe my $go_r, my $go_w or die $!;
    pipe my $res_r, my $res_w or die $!;
    for my $c (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $go_w;
            close $res_r;
            sysread $go_r, my $x, 1;
            # a child that dies must not run the parent's END blocks
            # (they would stop its nginx)
            my $out = eval { $code->($c) };
            syswrite $res_w, $out // '';
            POSIX::_exit($@ ? 1 : 0);
        }
        push @pids, $pid;
    }
    close $go_r;
    close $res_w;
    close $go_w;
    waitpid $_, 0 for @pids;
    return do { local $/; <$res_r> };
}

1;
