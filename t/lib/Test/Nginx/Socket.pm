package Test::Nginx::Socket;

# A small, dependency-light stand-in for Test::Nginx::Socket from CPAN
# (openresty/test-nginx), written for this project's test suite.  It reads the
# same data-driven .t files (Test::Base blocks: "=== TEST n: name" followed by
# "--- section" lines), starts nginx for each block, sends the request(s) over
# a raw TCP socket and turns every expectation into one Test::More test named
# as the real runner names it, so that the .t files run unchanged under both.
#
# Layout: this file holds the client side (building requests, reading and
# parsing responses, assertions); Test/Nginx/Util.pm holds the server side
# (settings, nginx.conf, start/stop, valgrind, logs).
#
# Only Perl core plus Debian's libtest-base-perl are needed (Text::Diff is
# used for diffs when installed).
#
# Sections: config http_config main_config post_main_config user_files
#   request (string, or eval'ed array of requests, each a string or an array
#   of packets) more_headers raw_request raw_request_middle_delay
#   pipelined_requests timeout abort shutdown wait log_level must_die
#   error_code error_code_like response_headers response_headers_like
#   raw_response_headers_like raw_response_headers_unlike response_body
#   response_body_like response_body_unlike response_body_filters
#   error_log no_error_log
#   grep_error_log grep_error_log_out access_log no_access_log skip_nginx
#   ignore_response http09, plus Test::Base's ONLY / SKIP / LAST.
# Environment: TEST_NGINX_BINARY LOAD_MODULES SERVER_PORT (or PORT)
#   CLIENT_PORT SERVROOT NO_CLEAN USE_VALGRIND SLEEP TIMEOUT LOG_LEVEL
#   MASTER_PROCESS NO_SHUFFLE (all prefixed TEST_NGINX_).
# Valgrind mode runs nginx in the foreground (daemon and master off), stops
# it after every block and turns memcheck errors into a failing test; see
# Test/Nginx/valgrind-nginx-core.supp for the nginx-core noise suppressed.

use strict;
use warnings;

# -base (lower case) makes us a Test::Base subclass without Spiffy's source
# filter; test files then get blocks(), plan(), the section filters, etc.
use Test::Base -base;
use Test::Nginx::Util;
use IO::Select ();
use IO::Socket::INET ();
use List::Util qw(shuffle min max);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(
    run_tests repeat_each workers worker_connections log_level timeout
    master_on master_off master_process_enabled
    no_shuffle no_long_string no_root_location check_accum_error_log
    env_to_nginx add_block_preprocessor bail_out is_str
    server_name server_addr server_port server_port_for_client
    server_root html_dir
);

# Sections of the real runner we do not implement: using one makes a
# failing test instead of being silently ignored.
my @Unsupported = qw(
    tcp_listen tcp_reply tcp_query tcp_query_len udp_listen udp_reply udp_query
    stap stap_out stap_out_like stap_out_unlike init post_setup_server_root
    http2 http3 shutdown_error_log no_shutdown_error_log error_log_file
    server_name response_body_json_sort charset todo todo_nginx skip_openssl
    skip_nginx2 skip_slave skip_eval server_addr_for_client write_resp_body_file
    request_eval response_body_eval curl
);

# Sections whose $TEST_NGINX_* variables the real runner does NOT expand; we
# do, but say so, because such a .t would not pass under the real runner.
my %NonPortableExpansion;

our $PrevConfig;

# ================================================================ driver

sub run_tests () {
    nginx_info();    # bails out early when there is no usable nginx
    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;
    install_signal_handlers();
    my @blocks = blocks();
    @blocks = shuffle @blocks unless $NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
    }
}

sub run_block {
    my $block = shift;
    my $name = $block->name;
    %RandPorts = ();

    if (my ($n, $why) = skip_count($block)) {
        # nginx is not started; the tests are skipped once per repetition
        for (1 .. $RepeatEach) { SKIP: { skip("$name - $why", $n) } }
        return;
    }
    for my $s (@Unsupported) {
        fail("$name - section --- $s is not supported by t/lib/Test/Nginx")
            if defined $block->$s;
    }
    diag("$name - both response_headers and response_headers_like given; "
         . "like the real runner, only response_headers is checked")
        if defined $block->response_headers && defined $block->response_headers_like;

    return run_must_die($block) if defined $block->must_die;

    # Like the real runner, a block without --- config keeps the previous
    # block's server (and config) running.
    my $config = $block->config;
    my $restart = 1;
    if (!defined $config) {
        bail_out("$name - No '--- config' section specified and could not get "
                 . "previous one") unless defined $PrevConfig;
        $config = $PrevConfig;
        $restart = !nginx_alive();
    }
    $PrevConfig = $config;

    if ($restart) {
        stop_nginx();
        setup_servroot();
        write_user_files($block);
        write_config($block, expand_env($config, $name));
        if (my $err = start_nginx()) {
            # The real runner bails out of the whole run here; failing the
            # block lets the other blocks and files still report.
            fail("$name - failed to start nginx: $err");
            diag_startup_errors();
            return;
        }
    }
    reset_log_pos();

    run_requests($block, $_) for 0 .. $RepeatEach - 1;

    if (!nginx_alive()) {
        fail("$name - nginx is no longer running (crashed?)");
        diag_startup_errors();
    }
    if ($UseValgrind) {
        # Stop now so that valgrind's report is attributed to this block.
        stop_nginx();
        if (my $errors = valgrind_errors()) {
            fail("$name - valgrind reported memory errors");
            diag($errors);
        }
    }
}

sub diag_startup_errors {
    my @lines = (@{ log_lines("$LogDir/stderr.log", 1) },
                 grep { /\[(?:emerg|alert|crit)\]|signal/ } @{ log_lines($ErrLogFile, 1) });
    diag(join '', @lines[max(0, @lines - 20) .. $#lines]) if @lines;
}

# --- must_die: nginx has to refuse to start; error_log sees its complaints.
sub run_must_die {
    my $block = shift;
    my $name = $block->name;
    my $want = $block->must_die;
    my $config = $block->config // $PrevConfig // '';

    stop_nginx();
    setup_servroot();
    write_user_files($block);
    # Never under valgrind, and daemonized so a config that does start
    # cannot hang us.
    write_config($block, expand_env($config, $name), daemon => 'on',
                 master => Test::Nginx::Util::master_process_enabled());
    reset_log_pos();

    for my $rep (0 .. $RepeatEach - 1) {
        my $status = run_nginx_once();
        if ($status & 127) {
            fail("$name - nginx crashed (signal " . ($status & 127) . ")");
        } elsif ($want =~ /^\s*(\d+)\s*$/) {
            is($status >> 8, $1, "$name - die with the expected exit code");
        } else {
            isnt($status, 0, "$name - die as expected");
        }
        check_logs($block, $rep, 'emerg');    # the [emerg] is expected here
        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing it\n";
            sleep 0.1;
            $Test::Nginx::Util::NginxPid = Test::Nginx::Util::read_pid();
            $Test::Nginx::Util::NginxIsChild = 0;
            stop_nginx();
        }
    }
}

my %VersionCmp = ('<' => sub { $_[0] < $_[1] },  '<=' => sub { $_[0] <= $_[1] },
                  '>' => sub { $_[0] > $_[1] },  '>=' => sub { $_[0] >= $_[1] });

# skip_nginx "N: OP x.y.z [: reason]": skip N tests (per repetition).
sub skip_count {
    my $block = shift;
    my $name = $block->name;
    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)\s*(?::\s*(.*?))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        my $ver = sprintf '%d.%03d%03d', $3, $4, $5;
        return ($1, $6 || "nginx version $2 $3.$4.$5")
            if $VersionCmp{$2}->($NginxVersion, $ver);
    }
    return;
}

# ======================================================= requests & checks

sub run_requests {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my @reqs = build_requests($block);
    my $pipelined = defined $block->pipelined_requests;
    my $total = $pipelined ? scalar @{ $block->pipelined_requests } : scalar @reqs;
    my $need_array = $pipelined || $total > 1;    # as the real runner decides
    my $timeout = parse_time($block->timeout) // timeout();
    my $wait = parse_time($block->wait);
    my $idx = 0;

    for my $req (@reqs) {
        my $raw = send_request($block, $req, $timeout);
        my $head = join('', map { $_->{value} } @$req) =~ /^\s*HEAD\s/;
        # Pipelined responses all arrive on one connection; split them.
        for my $k (1 .. ($pipelined ? $total : 1)) {
            my ($res, $left) = parse_response($block, $raw, $head);
            $raw = $left // '';
            if ($k == ($pipelined ? $total : 1) && $raw ne '') {
                (my $show = $raw) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after last chunk in "
                     . "response: \"$show\"\n";
            }
            check_response($block, $res, $idx, $rep, $need_array)
                unless defined $block->ignore_response;
            # As in the real runner, logs are checked after every response.
            if ($idx < $total - 1) {
                sleep $wait if $wait;
                check_logs($block, $rep);
            }
            $idx++;
        }
    }
    sleep $wait if $wait;
    check_logs($block, $rep);
}

# Returns a list of requests, each an array of packets
# { value => bytes, delay_before => seconds }, one TCP connection each.
sub build_requests {
    my $block = shift;
    my $name = $block->name;

    if (defined(my $raw = $block->raw_request)) {
        # Sent verbatim; an eval'ed array gives the TCP writes.
        my @parts = ref $raw ? @$raw : ($raw);
        return [ map { { value => expand_nonportable($_, $name, 'raw_request') } } @parts ];
    }

    my $more = $block->more_headers // '';
    if (defined(my $pipe = $block->pipelined_requests)) {
        bail_out("$name - invalid entries in --- pipelined_requests") if ref $pipe ne 'ARRAY';
        my $all = '';
        for my $i (0 .. $#$pipe) {
            $all .= join '', build_one($name, [expand_env($pipe->[$i], $name)],
                                       more_headers_for($name, $more, $i),
                                       $i == $#$pipe ? 'close' : 'keep-alive');
        }
        return [ { value => $all } ];
    }

    my $request = $block->request;
    bail_out("$name - no --- request, --- raw_request or --- pipelined_requests")
        unless defined $request;
    my @list;
    if (!ref $request) {
        # leading comment lines and blank space are not part of the request
        1 while $request =~ s/^\s*#[^\n]+\s+|^\s+//s;
        @list = ($request);
    } elsif (ref $request eq 'ARRAY') {
        @list = @$request;
    } else {
        bail_out("$name - invalid --- request: MUST be string or array of requests");
    }

    my @out;
    for my $i (0 .. $#list) {
        # An element is a request string or an array of packets (strings or
        # { value, delay_before } hashes) making up one request.
        my @packets = ref $list[$i] eq 'ARRAY' ? @{ $list[$i] } : ($list[$i]);
        my @values = map { expand_nonportable(ref $_ ? $_->{value} : $_, $name, 'request') } @packets;
        my @built = build_one($name, \@values, more_headers_for($name, $more, $i), 'close');
        push @out, [ map { { value => $built[$_],
                             delay_before => ref $packets[$_] ? $packets[$_]{delay_before} : undef }
                         } 0 .. $#built ];
    }
    return @out;
}

sub more_headers_for {
    my ($name, $more, $i) = @_;
    if (ref $more eq 'ARRAY') {
        $more = $more->[$i];
        bail_out("$name - --- more_headers lacks data for request $i") unless defined $more;
    }
    my $out = '';
    for my $line (split /\n+/, expand_nonportable($more, $name, 'more_headers')) {
        next if $line =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $out .= "$key: " . ($val // '') . "\r\n";
    }
    return $out;
}

# Turns "METHOD [URI [VERSION]]\nbody" into a full HTTP request: adds Host,
# Connection and (unless chunked or given) Content-Length, trimming the body
# as the real runner does.  The request may come split in packets; the split
# points are kept at the same place relative to the original text.
sub build_one {
    my ($name, $packets, $headers, $conn) = @_;
    my $orig = join '', @$packets;
    my ($line) = $orig =~ /\A([^\n]*\n?)/;
    my ($meth, $uri, $ver) = $line =~ /^\s*(\S+)(?:[ \t]+(\S+))?(?:[ \t]+(\S+))?\s*$/
        or bail_out("$name - Request line is not valid. Should be "
                    . "'meth [url [version]]' but got \"$line\".");
    my $body = substr $orig, length $line;
    my @edits;    # [from, to, replacement] in $orig coordinates

    my $cl = '';
    if ($body ne '' && $headers !~ /^Transfer-Encoding:\s*chunked/mi
        && $headers !~ /^Content-Length:/mi)
    {
        (my $trimmed = $body) =~ s/^\s+|\s+$//g;
        $cl = 'Content-Length: ' . length($trimmed) . "\r\n";
        my ($lead) = $body =~ /\A(\s*)/;
        my ($trail) = $body =~ /(\s*)\z/;
        my ($start, $end) = (length $line, length $orig);
        if ($trimmed eq '') {
            push @edits, [$start, $end, ''];
        } else {
            push @edits, [$start, $start + length $lead, ''] if length $lead;
            push @edits, [$end - length $trail, $end, ''] if length $trail;
        }
    }
    my $head = sprintf "%s %s %s\r\n", $meth, $uri // '/', $ver // 'HTTP/1.1';
    $head .= "Host: $ServerName\r\n" unless $headers =~ /^Host:/mi;
    $head .= "Connection: $conn\r\n" unless $headers =~ /^Connection/mi;
    unshift @edits, [0, length $line, "$head$headers$cl\r\n"];

    my $new = $orig;
    substr($new, $_->[0], $_->[1] - $_->[0]) = $_->[2] for reverse @edits;

    # map an offset in $orig to the corresponding offset in $new
    my $map = sub {
        my $pos = shift;
        my $shift = 0;
        for my $e (@edits) {
            my ($from, $to, $repl) = @$e;
            if ($pos >= $to) {
                $shift += length($repl) - ($to - $from);
            } elsif ($pos > $from) {
                $shift += min($pos - $from, length $repl) - ($pos - $from);
            }
        }
        return $pos + $shift;
    };
    my ($from, $acc, @out) = (0, 0);
    for my $i (0 .. $#$packets) {
        $acc += length $packets->[$i];
        my $to = $i == $#$packets ? length $new : $map->($acc);
        push @out, substr $new, $from, $to - $from;
        $from = $to;
    }
    return @out;
}

sub expand_nonportable {
    my ($text, $name, $section) = @_;
    return $text if !defined $text || $text !~ /\$TEST_NGINX_/;
    diag("NOTE: \$TEST_NGINX_* in --- $section is expanded here but not by the "
         . "real Test::Nginx") unless $NonPortableExpansion{$section}++;
    return expand_env($text, $name);
}

sub connect_nginx {
    my ($block) = @_;
    my $err;
    for my $try (1 .. 30) {
        my $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                         PeerPort => $ServerPortForClient,
                                         Proto => 'tcp', Timeout => timeout());
        if ($sock) {
            # each syswrite should become its own TCP segment
            setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
            $sock->blocking(0);
            return $sock;
        }
        $err = $!;
        last if defined $Test::Nginx::Util::NginxPid && !nginx_alive();
        sleep min(1, 0.05 * $try);
    }
    fail($block->name . " - Can't connect to $ServerAddr:$ServerPortForClient: $err (aborted)");
    return;
}

# Writes the packets (sleeping raw_request_middle_delay or delay_before
# between them) and reads until the server closes the connection, like the
# real runner.  $timeout applies to each wait for I/O.
sub send_request {
    my ($block, $packets, $timeout) = @_;
    my $sock = connect_nginx($block) or return '';
    local $SIG{PIPE} = 'IGNORE';
    my @todo = @$packets;
    my ($out, $resp, $first, $shut) = ('', '', 1, 0);
    my $sel = IO::Select->new($sock);

    while (1) {
        while ($out eq '' && @todo) {
            my $p = shift @todo;
            my $delay = $p->{delay_before} // $block->raw_request_middle_delay;
            sleep $delay if $delay && !$first;
            ($out, $first) = ($p->{value} // '', 0);
        }
        if ($out eq '' && !$shut) {
            # all written
            $shut = 1;
            if (defined(my $how = $block->shutdown)) {
                shutdown $sock, $how =~ /^\s*(\d)/ ? $1 : 1;
            }
        }
        my ($r, $w) = IO::Select->select($sel, $out ne '' ? $sel : undef, undef, $timeout);
        if (!$r && !$w) {
            fail("ERROR: client socket timed out - " . $block->name)
                unless defined $block->abort;
            last;
        }
        if ($w && @$w) {
            my $n = syswrite $sock, $out;
            if (defined $n) {
                substr($out, 0, $n) = '';
            } elsif (!$!{EAGAIN} && !$!{EINTR}) {
                # e.g. nginx answered early and closed; still read its reply
                warn "WARNING: " . $block->name . " - write failed: $!\n";
                ($out, @todo) = ('');
            }
        }
        if ($r && @$r) {
            my $n = sysread $sock, my $buf, 65536;
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EINTR};
                warn "WARNING: " . $block->name . " - HTTP response read failure: $!\n";
                last;
            }
            last if $n == 0;
            $resp .= $buf;
        }
    }
    close $sock;
    return $resp;
}

# Parses one response off the front of $raw.  Returns ($res, $leftover);
# $res = { code, raw_headers, headers => [[name, value], ...], body }.
sub parse_response {
    my ($block, $raw, $head_req) = @_;
    my $name = $block->name;
    if (defined $block->http09) {
        return { code => 200, raw_headers => '', headers => [], body => $raw };
    }
    my $res = { code => undef, raw_headers => '', headers => [], body => undef };
    return $res if $raw eq '';

    my ($head, $rest) = $raw =~ /\A(.*?\r?\n)\r?\n(.*)\z/s ? ($1, $2) : ($raw, '');
    $res->{raw_headers} = $head;
    my ($status, @lines) = split /\r?\n/, $head;
    $res->{code} = $1 if $status =~ m{^HTTP/\S+\s+(\d+)};
    for (@lines) {
        if (/^([^:\s]+)\s*:\s*(.*?)\s*$/) {
            push @{ $res->{headers} }, [$1, $2];
        } elsif (/^\s+(.*?)\s*$/ && @{ $res->{headers} }) {    # folded line
            $res->{headers}[-1][1] .= " $1";
        }
    }
    my $code = $res->{code} // 0;
    if ($code == 304 || $code == 101) {
        $res->{body} = $rest;
        return $res;
    }

    my $te = header($res, 'Transfer-Encoding');
    my $len = header($res, 'Content-Length');
    if (defined $te && $te eq 'chunked') {
        my $body = '';
        while (1) {
            if ($rest !~ /\G[ \t]*([0-9A-Fa-f]+)[^\r\n]*\r\n/gc) {
                fail("$name - invalid chunked body received: "
                     . ($rest =~ /\G(.{1,80})/gcs ? $1 : 'no last chunk found'));
                $res->{body} = $body;
                return $res;
            }
            my $size = hex $1;
            if ($size == 0) {
                $rest =~ /\G(?:[^\r\n]+\r\n)*\r\n/gc;    # trailers
                $res->{body} = $body;
                return ($res, substr $rest, pos($rest) // length $rest);
            }
            my $at = pos $rest;
            if (length($rest) < $at + $size + 2 || substr($rest, $at + $size, 2) ne "\r\n") {
                fail("$name - invalid chunked data received (chunk of $size "
                     . "bytes truncated or not followed by CRLF)");
                $res->{body} = $body;
                return $res;
            }
            $body .= substr $rest, $at, $size;
            pos($rest) = $at + $size + 2;
        }
    }
    if (defined $len && $len =~ /^\d+$/) {
        if (length $rest < $len) {
            warn "WARNING: $name - response body truncated: $len expected, but got "
                 . length($rest) . "\n" unless $head_req;
        } elsif (length $rest > $len) {
            $res->{body} = substr $rest, 0, $len;
            return ($res, substr $rest, $len);
        }
    }
    $res->{body} = $rest;
    return $res;
}

sub header {
    my ($res, $key) = @_;
    my @vals = map { $_->[1] } grep { lc $_->[0] eq lc $key } @{ $res->{headers} };
    return @vals ? join(', ', @vals) : undef;
}

# The expected value for the $i-th response: sections must be arrays when a
# block sends several requests.
sub indexed {
    my ($name, $val, $i, $need_array) = @_;
    return $val->[$i] if ref $val eq 'ARRAY';
    bail_out("$name - You asked for many requests, the expected results should "
             . "be arrays as well.") if $need_array;
    return $val;
}

sub check_response {
    my ($block, $res, $i, $rep, $need_array) = @_;
    my $name = $block->name;
    my $code = $res->{code} // '';

    if (defined $block->error_code_like) {
        my $want = indexed($name, scalar $block->error_code_like, $i, $need_array);
        like($code, qr/$want/sm, "$name - status code ok");
    } else {
        my $want = defined $block->error_code
            ? indexed($name, scalar $block->error_code, $i, $need_array) : 200;
        is($code, $want, "$name - status code ok");
    }

    for my $how (qw(like unlike)) {
        my $spec = $block->${\"raw_response_headers_$how"};
        next unless defined $spec;
        my $want = indexed($name, $spec, $i, $need_array);
        no strict 'refs';
        &{"Test::More::$how"}($res->{raw_headers}, qr/$want/s, "$name - raw resp headers $how");
    }

    if (defined $block->response_headers) {
        for my $line (split /\n/, indexed($name, scalar $block->response_headers, $i, $need_array)) {
            $line =~ s/^\s+|\s+$//g;
            next if $line eq '';
            my ($key, $val) = $line =~ s/^!\s*// ? ($line) : split /\s*:\s*/, $line, 2;
            if (!defined $val) {
                unlike($res->{raw_headers}, qr/^\s*\Q$key\E\s*:/mi,
                       "$name - header $key not present in the raw headers");
                next;
            }
            is(header($res, $key) // '', expand_expected($val, $name), "$name - header $key ok");
        }
    } elsif (defined $block->response_headers_like) {
        for my $line (split /\n/, indexed($name, scalar $block->response_headers_like, $i, $need_array)) {
            $line =~ s/^\s+|\s+$//g;
            next if $line eq '';
            my ($key, $val) = split /\s*:\s*/, $line, 2;
            $val = expand_expected($val // '', $name);
            like(header($res, $key) // '', qr/^$val$/, "$name - header $key like ok");
        }
    }

    my $body = $res->{body};
    # each filter gets the body and returns what is compared
    if (defined(my $filters = $block->response_body_filters)) {
        my %named = (uc => sub { uc $_[0] }, lc => sub { lc $_[0] });
        for my $f (ref $filters eq 'ARRAY' ? @$filters : ($filters)) {
            my $code = ref $f ? $f : $named{$f}
                or die "$name - unknown response_body_filters entry \"$f\"\n";
            $body = $code->($body);
        }
    }
    if (defined $block->response_body) {
        my $want = expand_expected(indexed($name, scalar $block->response_body, $i, $need_array), $name);
        if (ref $want) {
            like($body, $want, "$name - response_body - like (repeated req $rep, req $i)");
        } else {
            is_str($body, $want,
                   "$name - response_body - response is expected (repeated req $rep, req $i)");
        }
    } else {
        for my $how (qw(like unlike)) {
            next unless defined $block->${\"response_body_$how"};
            my $pat = expand_expected(indexed($name, scalar $block->${\"response_body_$how"}, $i, $need_array), $name);
            my $summary = $body // '';
            $summary =~ s/^\s+|\s+$//g;
            $summary =~ s/\s+/ /g;
            no strict 'refs';
            &{"Test::More::$how"}($body, qr/$pat/s,
                                  "$name - response_body_$how - response is expected ($summary)");
        }
    }
}

# $ServerPort and $TEST_NGINX_* in expected values (as the real runner does
# for response_body; we do it for all response_* sections).
sub expand_expected {
    my ($val, $name) = @_;
    return $val if !defined $val || ref $val;
    $val =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
    $val =~ s/\$ServerPort\b/$ServerPort/g;
    return expand_env($val, $name);
}

# String equality with helpful diagnostics: sizes, first differing offset,
# the bytes around it and (for multi-line text) a unified diff.
sub is_str {
    my ($got, $want, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::like($got, $want, $desc) if ref $want eq 'Regexp';
    return Test::More::is($got, $want, $desc) if $NoLongString || !defined $got || !defined $want;
    return 1 if Test::More::ok($got eq $want, $desc);

    my $pos = 0;
    $pos++ while $pos < min(length $got, length $want)
              && substr($got, $pos, 1) eq substr($want, $pos, 1);
    my $show = sub {
        my $s = substr $_[0], max(0, $pos - 20), 70;
        $s =~ s/([\\"])/\\$1/g;
        $s =~ s/\n/\\n/g;
        $s =~ s/\r/\\r/g;
        $s =~ s/\t/\\t/g;
        $s =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
        return qq{"$s"};
    };
    Test::More::diag(sprintf "got %d bytes, expected %d bytes, first difference at offset %d\n"
                     . "     got: %s\nexpected: %s", length $got, length $want, $pos,
                     $show->($got), $show->($want));
    if (!$ENV{TEST_SHOW_NO_DIFFS} && "$got$want" =~ /\n./ && eval { require Text::Diff }) {
        Test::More::diag(Text::Diff::diff(\$want, \$got,
            { STYLE => 'Unified', FILENAME_A => 'expected', FILENAME_B => 'got' }));
    }
    return 0;
}

# error_log / no_error_log / grep_error_log and access_log / no_access_log.
sub check_logs {
    my ($block, $rep, @quiet) = @_;
    my $name = $block->name;
    my $err = log_lines($ErrLogFile);    # new lines since the last check

    if (defined(my $grep = $block->grep_error_log)) {
        $grep = $grep->[$rep] if ref $grep eq 'ARRAY';
        my $want = $block->grep_error_log_out;
        bail_out("$name - --- grep_error_log needs --- grep_error_log_out") unless defined $want;
        $want = $want->[$rep] if ref $want eq 'ARRAY';
        my $got = '';
        for (@$err) {
            $got .= "$&\n" if (ref $grep ? /$grep/ : /\Q$grep\E/) && $& !~ /\n/;
        }
        is_str($got, ref $want ? $want : expand_env($want, $name),
               "$name - grep_error_log_out (req $rep)");
    }

    my %quiet = map { $_ => 1 } @quiet;    # severities not to warn about
    for my $spec (['error_log', $err], ['access_log']) {
        my ($sect, $lines) = @$spec;
        (my $file = $sect) =~ s/_log$/.log/;
        for my $neg ('', 'no_') {
            my $pats = $block->${\"$neg$sect"};
            next unless defined $pats;
            # the real runner rereads the whole access log every time
            $lines //= log_lines($AccLogFile, 1);
            my @pats = ref $pats eq 'ARRAY' ? @$pats : ref $pats ? ($pats) : split /\n+/, $pats;
            for my $pat (@pats) {
                $quiet{$1} = 1 if "$pat" =~ /\[(alert|crit|emerg)/;
                my ($hit) = grep { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 } @$lines;
                if (!$neg) {
                    ok(defined $hit, "$name - pattern \"$pat\" " . (defined $hit ? 'matches'
                       : 'should match') . " a line in $file (req $rep)");
                } elsif (defined $hit) {
                    chomp $hit;
                    fail("$name - pattern \"$pat\" should not match any line in $file "
                         . "but matches line \"$hit\" (req $rep)");
                } else {
                    pass("$name - pattern \"$pat\" does not match a line in $file (req $rep)");
                }
            }
        }
    }

    for (@$err) {
        warn "WARNING: $name - $_" if /\[(alert|crit|emerg)\]/ && !$quiet{$1};
        fail("$name - $_") if /\bAssertion .*?failed\b/;
    }
}

1;
