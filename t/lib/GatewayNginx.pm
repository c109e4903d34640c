package GatewayNginx;

# An nginx with the gateway module, of a test's own: a temporary prefix, a
# free loopback port, two workers.  For the plain Test::More scripts that
# need what Test::Nginx blocks cannot do: concurrent clients, "nginx -s
# reopen", "nginx -s reload".
#
#   my $gw = GatewayNginx->new or plan skip_all => ...;
#   $gw->start($http_block);       # "listen 127.0.0.1:$gw->{port}" inside
#   $gw->start($http_block, workers => 1);
#   $gw->signal('HUP'); $gw->workers; $gw->stop; $gw->alerts;

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

my @started;

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
    open my $conf, '>', "$self->{prefix}/nginx.conf" or die $!;
    print $conf <<"_EOC_";
load_module $self->{so};
worker_processes $workers;
daemon on;
master_process on;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 1024; }
http {
$http
}
_EOC_
    close $conf;

    push @started, $self;
    return system($self->{nginx}, '-p', "$self->{prefix}/",
                  '-c', "$self->{prefix}/nginx.conf") == 0;
}

sub master_pid {
    my ($self) = @_;
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

# a graceful stop (buffers are written), waited for
sub stop {
    my ($self) = @_;
    my $master = $self->master_pid or return;
    kill 'QUIT', $master;
    my $deadline = time + 10;
    sleep 0.05 while kill(0, $master) && time < $deadline;
    unlink "$self->{prefix}/logs/nginx.pid";
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

1;
