#!/usr/bin/env perl
# fixed_client.pl PORT BODY_FILE N [EXPECT_MODEL]
#
# Sends exactly N POST /v1/chat/completions requests with BODY_FILE to
# 127.0.0.1:PORT, one after another on one keep-alive connection (it
# reconnects, and counts it, if the server closes).  Every answer must be
# 200; with EXPECT_MODEL, every answer's X-AI-Model header must be that.
# Prints "requests=N ok=N reconnects=R seconds=S" and exits 1 on any failure.
#
# Environment: BENCH_URI (default /v1/chat/completions) is the URI;
# EXPECT_BODY=FILE: every answer's body (de-chunked) must be exactly FILE.
# EXPECT_TRANSLATION=FILE: every answer's body must be the chat.completion
# translation of the Anthropic answer in FILE (bench/check_translate.pl).
#
# Used by bench/callgrind.sh: a client that costs the server the same work
# per request as wrk does, but sends a fixed count (wrk only knows durations).
use strict;
use warnings;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);

my ($port, $file, $n, $expect) = @ARGV;
die "usage: $0 PORT BODY_FILE N [EXPECT_MODEL]\n" unless defined $n && $n =~ /^\d+$/;
my $user = $ENV{BENCH_USER} // 'bench-user';
my $uri = $ENV{BENCH_URI} // '/v1/chat/completions';
my $expect_body;
if (defined $ENV{EXPECT_BODY} && length $ENV{EXPECT_BODY}) {
    open my $eh, '<:raw', $ENV{EXPECT_BODY} or die "$0: $ENV{EXPECT_BODY}: $!\n";
    $expect_body = do { local $/; <$eh> };
}
my $check_translation;
if (defined $ENV{EXPECT_TRANSLATION} && length $ENV{EXPECT_TRANSLATION}) {
    require File::Basename;
    require File::Spec;
    require(File::Basename::dirname(File::Spec->rel2abs(__FILE__)) . '/check_translate.pl');
    $check_translation = BenchTranslate::checker($ENV{EXPECT_TRANSLATION});
}

open my $fh, '<:raw', $file or die "$0: $file: $!\n";
my $body = do { local $/; <$fh> };
close $fh;

my $req = "POST $uri HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n"
        . "Content-Type: application/json\r\n"
        . "Authorization: Bearer sk-bench-0000000000000000\r\n"
        . "X-User: $user\r\n"
        . "Content-Length: " . length($body) . "\r\n"
        . "\r\n" . $body;

my ($sock, $buf, $reconnects) = (undef, '', -1);

sub connect_ {
    $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 30)
        or die "$0: connect 127.0.0.1:$port: $!\n";
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
    binmode $sock;
    $buf = '';
    $reconnects++;
}

# read more into $buf; 0 on EOF
sub fill {
    my $r = sysread($sock, $buf, 65536, length $buf);
    die "$0: read: $!\n" unless defined $r;
    return $r;
}

sub response {
    my $end;
    until (($end = index($buf, "\r\n\r\n")) >= 0) {
        fill() or return undef;
    }
    my $head = substr($buf, 0, $end + 4, '');
    my ($status) = $head =~ m{^HTTP/1\.[01] (\d{3})} or die "$0: bad response: $head\n";
    my ($model) = $head =~ /^X-AI-Model:[ \t]*([^\r\n]*)/mi;
    my $close = $head =~ /^Connection:[ \t]*close/mi;
    my $resp_body;
    if ($head =~ /^Content-Length:[ \t]*(\d+)/mi) {
        my $len = $1;
        while (length($buf) < $len) { fill() or die "$0: short body\n"; }
        $resp_body = substr($buf, 0, $len, '');
    } elsif ($head =~ /^Transfer-Encoding:[ \t]*chunked/mi) {
        $resp_body = '';
        while (1) {
            my $e;
            until (($e = index($buf, "\r\n")) >= 0) { fill() or die "$0: short chunk\n"; }
            my $line = substr($buf, 0, $e + 2, '');
            $line =~ /^([0-9a-fA-F]+)/ or die "$0: bad chunk size line: $line\n";
            my $size = hex $1;
            while (length($buf) < $size + 2) { fill() or die "$0: short chunk\n"; }
            $resp_body .= substr($buf, 0, $size, '');
            substr($buf, 0, 2, '');     # the CRLF after the chunk
            if ($size == 0) { last; }
        }
    } else {
        1 while fill();
        $resp_body = $buf; $buf = ''; $close = 1;
    }
    return { status => $status, model => $model, close => $close, body => $resp_body };
}

connect_();
my $t0 = time;
my $ok = 0;
for my $i (1 .. $n) {
    my $r;
    for my $try (1 .. 2) {
        my $w = syswrite($sock, $req);
        if (defined $w && $w == length $req) {
            $r = response();
            last if $r;
        } elsif (defined $w) {
            # partial write: finish it
            my $off = $w;
            while ($off < length $req) {
                my $m = syswrite($sock, $req, length($req) - $off, $off);
                die "$0: write: $!\n" unless defined $m;
                $off += $m;
            }
            $r = response();
            last if $r;
        }
        connect_();     # the server closed a kept-alive connection
    }
    die "$0: no response to request $i\n" unless $r;
    if ($r->{status} != 200) {
        print STDERR "$0: request $i: HTTP $r->{status}\n", substr($r->{body}, 0, 1000), "\n";
        exit 1;
    }
    if (defined $expect && ($r->{model} // '') ne $expect) {
        print STDERR "$0: request $i: X-AI-Model is '", $r->{model} // '(none)',
                     "', expected '$expect'\n";
        exit 1;
    }
    if (defined $expect_body && $r->{body} ne $expect_body) {
        print STDERR "$0: request $i: the body (", length($r->{body}), " bytes) is not $ENV{EXPECT_BODY} (",
                     length($expect_body), " bytes); it begins:\n", substr($r->{body}, 0, 500), "\n";
        exit 1;
    }
    if ($check_translation) {
        my $err = $check_translation->($r->{body});
        if (defined $err) {
            print STDERR "$0: request $i: the body is not the translation of $ENV{EXPECT_TRANSLATION}: ",
                         "$err; it begins:\n", substr($r->{body}, 0, 500), "\n";
            exit 1;
        }
    }
    $ok++;
    connect_() if $r->{close};
}
printf "requests=%d ok=%d reconnects=%d seconds=%.2f\n", $n, $ok, $reconnects, time - $t0;
