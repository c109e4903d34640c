package Test::Nginx::Util;

# Server side of our small Test::Nginx::Socket-compatible runner: settings,
# nginx.conf generation, starting/stopping nginx (optionally under valgrind)
# and reading its logs.  Only the subset of openresty/test-nginx that this
# project uses is implemented; Test/Nginx/Socket.pm has the overview.
#
# The package name mirrors the real module so that code which peeks at
# variables such as $Test::Nginx::Util::ServerPort keeps working.

use strict;
use warnings;

use Exporter 'import';
use Carp qw(croak);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec ();
use IO::Socket::INET ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Test::More ();

our @EXPORT = qw(
    repeat_each workers worker_connections log_level timeout
    master_on master_off master_process_enabled
    no_shuffle no_long_string no_root_location check_accum_error_log
    env_to_nginx add_block_preprocessor bail_out
    server_name server_addr server_port server_port_for_client
    server_root html_dir
    expand_env parse_time log_lines reset_log_pos
    nginx_info setup_servroot write_user_files write_config
    start_nginx stop_nginx nginx_alive run_nginx_once valgrind_errors
    install_signal_handlers
    $NginxVersion $ServerPort $ServerPortForClient $ServerAddr $ServerName
    $ErrLogFile $AccLogFile $LogDir $PidFile $RepeatEach $NoShuffle
    $NoLongString $UseValgrind @BlockPreprocessors %RandPorts
);

# For helpers that run nginx with a prefix of their own (t/lib/GatewayNginx.pm)
# under the same valgrind settings: valgrind_cmd($dir) and valgrind_errors($dir)
# take the log directory, spawn_to() the stderr file, stop_process() a pid.
our @EXPORT_OK = qw(valgrind_cmd spawn_to stop_process);

# ---------------------------------------------------------------- settings

our $NginxBinary  = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $ServerAddr   = '127.0.0.1';
our $ServerName   = 'localhost';
our $ServerPort   = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;

our $ServRoot   = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
our $LogDir     = "$ServRoot/logs";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $StderrFile = "$LogDir/stderr.log";

our $UseValgrind    = $ENV{TEST_NGINX_USE_VALGRIND};
# valgrind slows nginx down a lot; only the default client timeout grows.
our $Timeout        = $ENV{TEST_NGINX_TIMEOUT} || ($UseValgrind ? 10 : 3);
# log-phase lines come after the response; under valgrind much later
our $TestNginxSleep = $ENV{TEST_NGINX_SLEEP}
                      || ($ENV{TEST_NGINX_USE_VALGRIND} ? 0.2 : 0.015);
our $LogLevel       = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $NoShuffle      = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $Workers           = 1;
our $WorkerConnections = 64;
our $RepeatEach        = 1;
our ($NoRootLocation, $NoLongString, $CheckAccumErrLog);
our (@EnvToNginx, @BlockPreprocessors);
our %RandPorts;          # TEST_NGINX_RAND_PORT_<n> => port, reset per block
our $NginxVersion;       # canonical form, e.g. 1.022001
our $NginxV = '';        # output of `nginx -V`

# The real runner sets TEST_NGINX_SERVER_ROOT too; a default for
# TEST_NGINX_HTML_DIR is our own convenience (with the real runner a .t file
# has to set it, e.g. $ENV{TEST_NGINX_HTML_DIR} ||= html_dir()).
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
$ENV{TEST_NGINX_HTML_DIR} //= $HtmlDir;

my $MainPid = $$;
our $NginxPid;           # the nginx we started (master or single process)
our $NginxIsChild;       # it runs in the foreground as our child (valgrind)
our $Spawned;            # this process has started an nginx of the servroot

sub repeat_each (@)        { $RepeatEach = shift if @_; $RepeatEach }
sub workers (@)            { $Workers = shift if @_; $Workers }
sub worker_connections (@) { $WorkerConnections = shift if @_; $WorkerConnections }
sub log_level (@)          { $LogLevel = shift if @_; $LogLevel }
sub timeout (@)            { $Timeout = shift if @_; $Timeout }
sub server_name (@)        { $ServerName = shift if @_; $ServerName }
sub server_addr (@)        { $ServerAddr = shift if @_; $ServerAddr }
sub server_port (@)        { $ServerPort = shift if @_; $ServerPort }
sub server_port_for_client (@) {
    $ServerPortForClient = shift if @_;
    $ServerPortForClient;
}
sub server_root ()           { $ServRoot }
sub html_dir ()              { $HtmlDir }
sub master_on ()             { $MasterProcessEnabled = 'on' }
sub master_off ()            { $MasterProcessEnabled = 'off' }
sub no_shuffle ()            { $NoShuffle = 1 }
sub no_long_string ()        { $NoLongString = 1 }
sub no_root_location ()      { $NoRootLocation = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }

sub master_process_enabled (@) {
    $MasterProcessEnabled = $_[0] ? 'on' : 'off' if @_;
    $MasterProcessEnabled;
}

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v" if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# Like the real one, the most recently added preprocessor runs first.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }

sub bail_out (@) {
    stop_nginx();
    Test::More::BAIL_OUT(join '', @_);
}

# "1.5", "1.5s" and "50ms" are all accepted (seconds are the default).
sub parse_time {
    my $t = shift;
    return $t unless defined $t;
    return $1 / 1000 if $t =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $t =~ /^\s*([\d.]+)\s*s?\s*$/;
    return $t;
}

# ------------------------------------------------------- $TEST_NGINX_ vars

sub expand_env {
    my ($text, $name) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s/\$(TEST_NGINX_[_A-Z0-9]+)/env_value($1, $name)/ge;
    return $text;
}

sub env_value {
    my ($var, $name) = @_;
    if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
        $RandPorts{$var} = free_port($name) unless defined $RandPorts{$var};
        return $RandPorts{$var};
    }
    bail_out("$name - No environment $var defined.\n") unless defined $ENV{$var};
    return $ENV{$var};
}

sub free_port {
    my $name = shift;
    my %used = map { $_ => 1 } $ServerPort, values %RandPorts;
    for (1 .. 1000) {
        my $port = 1988 + int rand(65535 - 1988);
        next if $used{$port};
        my $s = IO::Socket::INET->new(LocalAddr => $ServerAddr, LocalPort => $port,
                                      Listen => 1, ReuseAddr => 1) or next;
        close $s;
        return $port;
    }
    bail_out("$name - Cannot find a free port number");
}

# ------------------------------------------------------------ nginx basics

sub nginx_info {
    return if defined $NginxVersion;
    $NginxV = qx{\Q$NginxBinary\E -V 2>&1};
    bail_out("Failed to run \"$NginxBinary -V\" (is nginx in PATH or "
             . "TEST_NGINX_BINARY set?): $NginxV") if $? != 0;
    $NginxVersion = $NginxV =~ m{/(\d+)\.(\d+)\.(\d+)}
        ? sprintf('%d.%03d%03d', $1, $2, $3) : 0;
    stop_stale_nginx();
}

# A previous run that was killed hard (or used TEST_NGINX_NO_CLEAN) may have
# left an nginx holding our port; the pid file tells us which one.
sub stop_stale_nginx {
    my $pid = read_pid() or return;
    return unless slurp("/proc/$pid/cmdline") =~ /nginx|valgrind|memcheck/;
    $NginxPid = $pid;
    stop_nginx();
}

sub read_pid {
    open my $fh, '<', $PidFile or return;
    my $pid = <$fh> // '';
    return $pid =~ /^(\d+)/ ? $1 : undef;
}

sub setup_servroot {
    # Only remove what we create, in case TEST_NGINX_SERVROOT is misused.
    remove_tree($ConfDir, $LogDir, $HtmlDir,
                glob("$ServRoot/*_temp"), glob("$ServRoot/*_cache"));
    make_path($ConfDir, $LogDir, $HtmlDir);
    open my $out, '>', "$HtmlDir/index.html"
        or bail_out("Cannot write $HtmlDir/index.html: $!");
    print $out '<html><head><title>It works!</title></head>'
             . '<body>It works!</body></html>';
    close $out;
}

# --- user_files: either ">>> name" headed text or an eval'ed [[name, body]].
sub write_user_files {
    my $block = shift;
    my $files = $block->user_files;
    return unless defined $files;
    my @files;
    if (ref $files eq 'ARRAY') {
        @files = map { [@$_] } @$files;
    } else {
        for my $part (split /^(?=>>> )/m, $files) {
            push @files, [$1, $part] if $part =~ s/\A>>> (\S+)[^\n]*\n?//;
        }
    }
    for my $f (@files) {
        my ($fname, $body) = @$f;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        make_path(dirname($path));
        open my $out, '>', $path or bail_out($block->name . " - Cannot write $path: $!");
        binmode $out;
        print $out expand_env($body // '', $block->name);
        close $out;
    }
}

sub write_config {
    my ($block, $config, %opt) = @_;
    my $name   = $block->name;
    my $main   = expand_env($block->main_config // '', $name);
    my $post   = expand_env($block->post_main_config // '', $name);
    my $http   = expand_env($block->http_config // '', $name);
    my $level  = $block->log_level || $LogLevel;
    my $daemon = $opt{daemon} // ($UseValgrind ? 'off' : 'on');
    my $master = $opt{master} // ($UseValgrind ? 'off' : $MasterProcessEnabled);

    my $modules = '';
    for my $so (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        # nginx resolves relative paths against its prefix (the servroot),
        # so anchor them at the directory prove runs in.
        $so = File::Spec->rel2abs($so) if !File::Spec->file_name_is_absolute($so) && -e $so;
        $modules .= "load_module $so;\n";
    }

    # Distribution builds point temp paths at /var/lib/nginx; keep everything
    # inside the servroot unless the test configures them itself.
    my $temp = '';
    for my $kind (qw(client_body proxy fastcgi uwsgi scgi)) {
        next if $http =~ /\b${kind}_temp_path\b/;
        next if $kind ne 'client_body' && $NginxV =~ /--without-http_${kind}_module/;
        $temp .= "    ${kind}_temp_path $ServRoot/${kind}_temp;\n";
    }

    my $env  = join '', map { "env $_;\n" } @EnvToNginx;
    my $user = $> == 0 ? "user root;\n" : '';   # workers must read the servroot
    my $root = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_

    open my $out, '>', $ConfFile or bail_out("Cannot write $ConfFile: $!");
    print $out <<"_EOC_";
# generated by t/lib/Test/Nginx for: $name
${modules}daemon $daemon;
master_process $master;
worker_processes $Workers;
pid $PidFile;
error_log $ErrLogFile $level;
$user$env
$main

events {
    worker_connections $WorkerConnections;
}

http {
    access_log $AccLogFile;
$temp    default_type text/plain;
    keepalive_timeout 68;

$http

    server {
        listen $ServerPort;
        server_name $ServerName;
        client_max_body_size 30M;

$config

$root    }
}

$post
_EOC_
    close $out;
}

# ----------------------------------------------------- start / stop nginx

sub nginx_cmd {
    # -e (nginx >= 1.19.5) sends startup errors to error.log as well, which
    # is where --- must_die blocks look for them (as with the real runner).
    return ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile,
            $NginxVersion >= 1.019005 ? ('-e', $ErrLogFile) : ());
}

# valgrind and its options, its log going to $log_dir/valgrind.log (the
# servroot's logs by default)
sub valgrind_cmd {
    my $log_dir = shift // $LogDir;
    my @opts = $UseValgrind =~ /^\d+$/
        ? qw(--tool=memcheck --leak-check=full --show-possibly-lost=no --num-callers=30)
        : split ' ', $UseValgrind;
    my $builtin = dirname(__FILE__) . '/valgrind-nginx-core.supp';
    for my $supp ($builtin, 't/valgrind.suppress', 'valgrind.suppress') {
        push @opts, '--suppressions=' . File::Spec->rel2abs($supp) if -f $supp;
    }
    return ('valgrind', @opts, "--log-file=$log_dir/valgrind.log");
}

# fork+exec with stdout discarded and stderr kept in logs/stderr.log.
sub spawn {
    $Spawned = 1;
    return spawn_to($StderrFile, @_);
}

# the same with stderr appended to $stderr_file; returns the child's pid
sub spawn_to {
    my ($stderr_file, @cmd) = @_;
    my $pid = fork // bail_out("fork() failed: $!");
    return $pid if $pid;
    setpgrp(0, 0);    # a ^C at the terminal is handled by us, not nginx
    open STDOUT, '>', '/dev/null';
    open STDERR, '>>', $stderr_file;
    exec { $cmd[0] } @cmd or print STDERR "cannot exec $cmd[0]: $!\n";
    POSIX::_exit(127);    # no END blocks in the child
}

# Runs nginx once in the foreground without valgrind; returns the wait status
# (used by must_die blocks, where nginx is expected to exit by itself).
sub run_nginx_once {
    my $pid = spawn(nginx_cmd());
    waitpid $pid, 0;
    my $status = $?;
    # Old nginx without -e: make startup errors visible to error_log checks.
    append_stderr_to_error_log() if $NginxVersion < 1.019005;
    return $status;
}

sub append_stderr_to_error_log {
    open my $in, '<', $StderrFile or return;
    open my $out, '>>', $ErrLogFile or return;
    print {$out} <$in>;
}

sub nginx_alive {
    my $pid = $NginxPid // return 0;
    return waitpid($pid, WNOHANG) == 0 if $NginxIsChild;
    return pid_alive($pid);
}

# A daemonized nginx is not our child; once it exits it may stay a zombie
# for a while when PID 1 (e.g. in containers) is slow to reap it.
sub pid_alive {
    my $pid = shift;
    return 0 unless kill 0, $pid;
    return slurp("/proc/$pid/stat") !~ /^\d+ \(.*\) [ZX]/s;
}

sub port_listening {
    my $port = shift;
    my $seen_proc;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        $seen_proc = 1;
        while (<$fh>) {
            # local_address is HEXIP:HEXPORT, state 0A is LISTEN
            return 1 if /^\s*\d+:\s+[0-9A-F]+:([0-9A-F]+)\s+\S+\s+0A\s/ && hex($1) == $port;
        }
    }
    return !$seen_proc;   # no /proc: rely on the client's connect retries
}

# Starts nginx with the config already written.  Returns '' on success or
# an error description.
sub start_nginx {
    my $err = '';
    for my $attempt (1 .. 5) {
        $err = start_once();
        return '' if $err eq '';
        # A port still held by a dying process is worth another try; a bad
        # config is not.
        last unless slurp($ErrLogFile) =~ /Address already in use/;
        sleep 0.5 * $attempt;
    }
    return $err;
}

sub start_once {
    if ($UseValgrind) {
        $NginxPid = spawn(valgrind_cmd(), nginx_cmd());
        $NginxIsChild = 1;
    } else {
        my $pid = spawn(nginx_cmd());
        waitpid $pid, 0;
        return "nginx exited with status " . ($? >> 8) if $?;
        $NginxIsChild = 0;
        # The daemon writes its pid file just after the parent has exited.
        my $until = time + 5;
        sleep 0.01 until defined($NginxPid = read_pid()) || time > $until;
        return "no pid file $PidFile appeared" unless defined $NginxPid;
    }
    # Wait until nginx listens so that the first request is not refused.
    my $until = time + ($UseValgrind ? 60 : 10);
    until (port_listening($ServerPort)) {
        if (!nginx_alive()) {
            undef $NginxPid;
            return "nginx exited during startup";
        }
        return "nginx did not listen on port $ServerPort in time" if time > $until;
        sleep $UseValgrind ? 0.1 : 0.005;
    }
    return '';
}

# Graceful stop (QUIT) so that valgrind gets to run its leak check; KILL the
# whole process group if it takes too long.
sub stop_nginx {
    my $pid = $NginxPid // return;
    undef $NginxPid;
    stop_process($pid, $NginxIsChild);
    # nginx removes it itself on a clean exit; a KILLed one leaves it behind.
    unlink $PidFile;
}

# QUIT to the nginx $pid (our child, reaped, when $is_child), waited for;
# false when it had to be KILLed.
sub stop_process {
    my ($pid, $is_child) = @_;
    kill 'QUIT', $pid;
    my $alive = $is_child ? sub { waitpid($pid, WNOHANG) == 0 } : sub { pid_alive($pid) };
    my $until = time + ($UseValgrind ? 60 : $Timeout);
    my $again = time + 1;
    while ($alive->()) {
        # Valgrind runs nginx's handler of a signal that arrives while nginx
        # is busy (say, just after a request) at its next system call, and
        # that may be the epoll_wait() it then blocks in, with no timer and
        # no more events to come; another QUIT, once idle, wakes it.
        if ($UseValgrind && time > $again) {
            kill 'QUIT', $pid;
            $again = time + 1;
        }
        if (time > $until) {
            warn "WARNING: nginx $pid did not exit after QUIT; killing it\n";
            kill 'KILL', -$pid;
            kill 'KILL', $pid;
            waitpid $pid, 0 if $is_child;
            return 0;
        }
        sleep 0.01;
    }
    return 1;
}

# ------------------------------------------------------------------ logs

sub slurp {
    open my $fh, '<', shift or return '';
    local $/;
    return scalar <$fh> // '';
}

my %LogPos;    # file => offset up to which lines were already checked

sub reset_log_pos { %LogPos = () }

# Lines appended to $file since the last call in this block (or all lines
# with check_accum_error_log).
sub log_lines {
    my ($file, $whole) = @_;
    sleep $TestNginxSleep * 3;    # let log-phase handlers write their lines
    open my $fh, '<', $file or return [];
    my $accum = $whole || $CheckAccumErrLog;
    seek $fh, $LogPos{$file} // 0, 0 unless $accum;
    my @lines = <$fh>;
    $LogPos{$file} = tell $fh unless $accum;
    return \@lines;
}

# Returns the memcheck records of a valgrind log (in $log_dir, the servroot's
# logs by default) that indicate real errors ('' when clean).
sub valgrind_errors {
    my $log_dir = shift // $LogDir;
    my @records = grep { /\S/ } split /\n\s*\n/,
        join "\n", map { s/^==\d+==\s?//r } split /\n/, slurp("$log_dir/valgrind.log");
    my $kinds = join '|', 'Invalid (?:read|write|free)', 'Mismatched free',
        'Conditional jump', 'Source and destination overlap', 'Process terminating',
        'Jump to the invalid address';
    my @bad = grep {
        /\A(?:$kinds)/
        || /\A[^\n]*uninitialised/
        || /\A[^\n]*are definitely lost in loss record/
        || /\ALEAK SUMMARY:.*definitely lost: (?!0 bytes)/s
    } @records;
    my @lines = split /\n/, join "\n\n", @bad;
    splice @lines, 80, @lines - 80, '[...]' if @lines > 80;
    return join "\n", @lines;
}

sub cleanup {
    # A foreground (valgrind) nginx cannot outlive us in a useful way.
    return if $$ != $MainPid || ($ENV{TEST_NGINX_NO_CLEAN} && !$NginxIsChild);
    # one caught between spawn and pid file; only if we started one: a
    # script that loads this file for its functions must not stop the
    # nginx of another run that uses the same servroot
    $NginxPid //= read_pid() if $Spawned;
    stop_nginx();
}

# Dying of a signal skips END blocks, so stop nginx first (with the cleanup
# given, cleanup() by default) and then hand over to a previous handler
# (e.g. MockProvider's, which re-raises the signal).
sub install_signal_handlers {
    my $cleanup = shift // \&cleanup;
    for my $sig (qw(INT TERM HUP)) {
        my $prev = $SIG{$sig};
        next if defined $prev && $prev eq 'IGNORE';
        $SIG{$sig} = sub {
            $cleanup->();
            return $prev->(@_) if ref $prev eq 'CODE';
            $SIG{$sig} = 'DEFAULT';
            kill $sig, $$;
        };
    }
}

END {
    local $?;    # keep Test::Builder's exit code
    cleanup();
}

1;
