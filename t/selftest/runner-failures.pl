#!/usr/bin/perl
# Checks that the bundled runner (t/lib/Test/Nginx) *reports* failures: it
# runs deliberately failing Test::Nginx blocks in a child perl and inspects
# the TAP and diagnostics.  Stock nginx only.  From the project root:
#
#     prove t/selftest/runner-failures.pl
#
# (named .pl so that `prove -r t` leaves it out).  It uses its own servroot
# and port 1986, so it does not disturb a suite running on the default 1984.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);

my $tmp = tempdir(CLEANUP => 1);
$ENV{TEST_NGINX_SERVROOT}    = "$tmp/servroot";
$ENV{TEST_NGINX_SERVER_PORT} = 1986;
$ENV{TEST_NGINX_NO_SHUFFLE}  = 1;
delete @ENV{qw(TEST_NGINX_USE_VALGRIND TEST_NGINX_NO_CLEAN TEST_NGINX_PORT)};

sub slurp { open my $fh, '<', shift or return ''; local $/; <$fh> // '' }

# Runs the given blocks as a .t file; returns its combined output.
sub run_blocks {
    my ($data, %env) = @_;
    my $file = "$tmp/fixture.t";
    open my $out, '>', $file or die "$file: $!";
    print $out "use lib 't/lib';\nuse Test::Nginx::Socket 'no_plan';\n"
             . ($env{HEAD} // '') . "run_tests();\n__DATA__\n$data";
    close $out;
    delete $env{HEAD};
    local @ENV{keys %env} = values %env;
    return scalar `$^X $file 2>&1`;
}

# pids of live processes started for our servroot
sub our_nginx {
    grep { slurp("/proc/$_/cmdline") =~ /\Q$tmp\E/ && slurp("/proc/$_/stat") !~ /^\d+ \(.*\) [ZX]/s }
    map { m{(\d+)$} } glob '/proc/[0-9]*';
}

my $echo = <<'_EOC_';
    location = /t { return 200 "line one\nline two\n"; }
    location = /deny { deny all; }
    location = /slow { limit_rate 1; return 200 "slow response"; }
_EOC_

my $out = run_blocks(<<"_EOD_");
=== TEST 1: body mismatch
--- config
$echo
--- request
GET /t
--- response_body
line one
line 2

=== TEST 2: status, header and logs
--- config
$echo
--- request
GET /deny
--- response_headers
X-Foo: bar
--- error_log
this never appears
--- no_error_log
access forbidden by rule

=== TEST 3: timeout
--- config
$echo
--- request
GET /slow
--- timeout: 0.3
--- ignore_response

=== TEST 4: timeout with abort
--- config
$echo
--- request
GET /slow
--- timeout: 0.3
--- abort
--- ignore_response
--- no_error_log
[alert]

=== TEST 5: unsupported section
--- config
$echo
--- tcp_listen: 12345
--- request
GET /t
--- response_body_like: line one

=== TEST 6: nginx does not start
--- config
    no_such_directive;
--- request
GET /t

=== TEST 7: must_die, but nginx starts
--- config
$echo
--- must_die

=== TEST 8: still running after the failures above
--- config
$echo
--- request
GET /t
--- response_body_like: ^line one
_EOD_

like $out, qr/^not ok \d+ - \S+ TEST 1: body mismatch - response_body - response is expected/m,
     'body mismatch fails';
like $out, qr/first difference at offset 14/, 'offset of the first difference';
like $out, qr/^# -line 2\n# \+line two$/m, 'unified diff of the body';
like $out, qr/^not ok \d+ - .*TEST 2: .* - status code ok/m, 'wrong status fails';
like $out, qr/^#\s+got: '403'\n#\s+expected: '200'/m, 'status diagnostics';
like $out, qr/^not ok \d+ - .*TEST 2: .* - header X-Foo ok/m, 'missing header fails';
like $out, qr/^not ok \d+ - .*TEST 2: .* pattern "this never appears" should match a line/m,
     'error_log pattern not found fails';
like $out, qr/^not ok \d+ - .*TEST 2: .* pattern "access forbidden by rule" should not match/m,
     'no_error_log pattern found fails';
like $out, qr/^not ok \d+ - ERROR: client socket timed out - \S+ TEST 3: timeout$/m,
     'timeout fails';
unlike $out, qr/timed out - \S+ TEST 4/, 'abort: no failure on timeout';
like $out, qr/^ok \d+ - \S+ TEST 4: .* "\[alert\]" does not match/m, 'block after timeout ok';
like $out, qr/^not ok \d+ - .*TEST 5: .* section --- tcp_listen is not supported/m,
     'unsupported section fails';
like $out, qr/^not ok \d+ - .*TEST 6: .* failed to start nginx/m, 'start failure fails';
like $out, qr/unknown directive "no_such_directive"/, 'start failure shows nginx errors';
like $out, qr/^not ok \d+ - .*TEST 7: .* die as expected/m, 'must_die fails when nginx starts';
like $out, qr/^ok \d+ - .*TEST 8: .* response_body_like/m, 'later blocks still run';
is join(',', our_nginx()), '', 'no nginx left running';

# --- a dying test file still stops its nginx; TEST_NGINX_NO_CLEAN keeps it
my $dying = <<'_EOD_';
=== TEST 1: ok
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
=== TEST 2: dies in a preprocessor
--- config
--- request
GET /t
_EOD_
my $head = "add_block_preprocessor(sub { die \"boom\\n\" if \$_[0]->name =~ /TEST 2/ });\n";
$out = run_blocks($dying, HEAD => $head);
like $out, qr/^boom$/m, 'test file died';
is join(',', our_nginx()), '', 'nginx stopped although the test died';

$out = run_blocks($dying, HEAD => "", TEST_NGINX_NO_CLEAN => 1);
my @left = our_nginx();
ok @left >= 1, 'TEST_NGINX_NO_CLEAN leaves nginx running';
kill 'QUIT', @left;

# --- valgrind: clean nginx passes; injected memory errors are reported
SKIP: {
    skip 'valgrind or cc not available', 4
        unless `which valgrind cc 2>/dev/null` =~ /valgrind.*\n.*cc/s;
    open my $c, '>', "$tmp/bad.c" or die;
    print $c <<'_EOC_';
#include <stdlib.h>
static volatile int sink;
__attribute__((constructor)) static void bad(void) {
    char *p = malloc(8);
    sink = p[8];                /* invalid read */
    if (p[0] == 42) sink++;     /* uninitialised */
    free(p);
    p = malloc(100);            /* definitely lost */
    p[0] = 1;
    p = NULL;
}
_EOC_
    close $c;
    system("cc -shared -fPIC -O0 -o $tmp/bad.so $tmp/bad.c") == 0 or die "cc failed";

    my $sane = <<'_EOD_';
=== TEST 1: sanity under valgrind
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- response_body chomp
ok
_EOD_
    $out = run_blocks($sane, TEST_NGINX_USE_VALGRIND => 1);
    unlike $out, qr/^not ok/m, 'stock nginx is clean under valgrind'
        or diag $out;
    # LD_PRELOAD reaches nginx (and perl, harmlessly) through valgrind.
    $out = run_blocks($sane, TEST_NGINX_USE_VALGRIND => 1, LD_PRELOAD => "$tmp/bad.so");
    like $out, qr/^not ok \d+ - .*TEST 1: .* - valgrind reported memory errors/m,
         'valgrind errors fail the block';
    like $out, qr/^# Invalid read of size 1/m, 'invalid read shown';
    like $out, qr/^# 100 bytes in 1 blocks are definitely lost/m, 'leak shown';
}

done_testing();
