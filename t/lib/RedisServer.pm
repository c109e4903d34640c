package RedisServer;

# A real redis-server of a test's own, on a free loopback port, with no
# persistence, stopped with the test.
#
#   use RedisServer;                      # starts one, or skip_all
#   $ENV{TEST_NGINX_REDIS_PORT}           # its port
#   RedisServer::cli('GET', 'k')          # one command, its reply as text
#   RedisServer::stop(); RedisServer::start();   # same port, same password
#   RedisServer::set_password('s3cret');  # CONFIG SET requirepass; '' clears
#
#   use RedisServer ();                   # load only: start(password => 'x')

use strict;
use warnings;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

my ($pid, $port, $dir, $password, $owner);

sub import {
    my ($class, @args) = @_;
    return if grep { $_ eq ':manual' } @args;
    if (!server_binary()) {
        require Test::More;
        Test::More::plan(skip_all => 'redis-server not found '
                         . '(apt-get install -y redis-server)');
    }
    start(@args);
}

sub server_binary {
    for my $d ((split /:/, $ENV{PATH} // ''), '/usr/bin', '/usr/sbin') {
        return "$d/redis-server" if -x "$d/redis-server";
    }
    return;
}

sub port { $port }

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1) or die $!;
    my $p = $s->sockport;
    close $s;
    return $p;
}

# a test killed with INT, TERM or HUP stops its redis-server too (END
# blocks do not run then); a handler installed before ours still runs
my $handlers;

sub install_signal_handlers {
    return if $handlers++;
    for my $sig (qw(INT TERM HUP)) {
        my $prev = $SIG{$sig};
        next if defined $prev && $prev eq 'IGNORE';
        $SIG{$sig} = sub {
            stop();
            return $prev->(@_) if ref $prev eq 'CODE';
            $SIG{$sig} = 'DEFAULT';
            kill $sig, $$;
        };
    }
}

sub start {
    my (%opt) = @_;
    $password = $opt{password} if exists $opt{password};
    $port //= free_port();
    $dir //= tempdir(CLEANUP => 1);
    $owner = $$;
    install_signal_handlers();

    my @args = (server_binary(), '--port', $port, '--bind', '127.0.0.1',
                '--save', '', '--appendonly', 'no', '--dir', $dir,
                '--daemonize', 'no', '--loglevel', 'warning',
                '--logfile', "$dir/redis.log");
    push @args, '--requirepass', $password if defined $password;

    $pid = fork // die "fork: $!";
    if ($pid == 0) {
        exec @args or POSIX::_exit(127);
    }

    my $deadline = time + 10;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        if ($s) {
            close $s;
            $ENV{TEST_NGINX_REDIS_PORT} = $port;
            return $port;
        }
        sleep 0.02;
    }
    die "redis-server did not start on port $port";
}

sub running { return defined $pid }

# CONFIG SET requirepass, and the password cli() uses from now on
sub set_password {
    my ($pw) = @_;
    cli('CONFIG', 'SET', 'requirepass', $pw // '');
    $password = (defined $pw && length $pw) ? $pw : undef;
}

sub stop {
    return unless $pid && $owner == $$;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    undef $pid;
}

# one command through the protocol itself (no redis-cli needed); the reply
# as text: integers and strings as they are, arrays joined with "\n",
# errors as "ERR ...", nil as ""
sub cli {
    my (@cmd) = @_;
    return cli_db(0, @cmd);
}

# the same in database $db
sub cli_db {
    my ($db, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or die "redis: $!";
    if (defined $password) {
        print $s proto('AUTH', $password);
        read_reply($s);
    }
    if ($db) {
        print $s proto('SELECT', $db);
        read_reply($s);
    }
    print $s proto(@cmd);
    my $r = read_reply($s);
    close $s;
    return $r;
}

sub proto {
    my (@a) = @_;
    return '*' . @a . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @a);
}

sub read_reply {
    my ($s) = @_;
    my $line = <$s> // return '';
    $line =~ s/\r\n$//;
    my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));
    return $rest if $t eq '+' || $t eq ':' || $t eq '-';
    if ($t eq '$') {
        return '' if $rest < 0;
        my ($buf, $got) = ('', 0);
        while ($got < $rest + 2) {
            my $n = read($s, $buf, $rest + 2 - $got, $got) or last;
            $got += $n;
        }
        return substr($buf, 0, $rest);
    }
    if ($t eq '*') {
        return '' if $rest < 0;
        return join "\n", map { read_reply($s) } 1 .. $rest;
    }
    return $line;
}

END {
    stop();
}

1;
