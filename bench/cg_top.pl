#!/usr/bin/env perl
# cg_top.pl self|incl N REQUESTS [FILTER_REGEX] < callgrind_annotate output
#
# callgrind_annotate may list one function several times: once per source
# file its code was attributed to ("???:f" and "file.c:f"), and once per
# recursion level ("f'2").  This merges them by function name: own (self)
# costs are summed (they are disjoint); for inclusive costs the largest entry
# of the non-recursive name is kept.  Prints the top N with Ir per request.
use strict;
use warnings;

my ($mode, $top, $n, $filter) = @ARGV;
die "usage: $0 self|incl N REQUESTS [REGEX]\n" unless defined $n && $n > 0;

my (%ir, %obj, $total, $state);
$state = 0;     # 0: before the function table, 1: its header, 2: in it, 3: after
while (<STDIN>) {
    if (/^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+PROGRAM TOTALS/) {
        ($total = $1) =~ tr/,//d;
        next;
    }
    if ($state == 0) { $state = 1 if /\bfile:function\b/; next; }
    if ($state == 1) { $state = 2 if /^-+$/; next; }
    last if /^-+$/;     # source annotations follow (none with --auto=no)
    next if /^\s*[\d,]+\s+\(\s*[\d.]+%\)\s+</;
    next unless /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s*$/;
    (my $cost = $1) =~ tr/,//d;
    my $rest = $2;
    my $o = $rest =~ s/\s*\[([^\]]*)\]$// ? $1 : undef;
    (my $fn = $rest) =~ s/^.*?:(?=[^:]+$)//;     # drop "file:"
    my $rec = $fn =~ s/'\d+$//;
    next if defined $filter && $fn !~ /$filter/;
    if ($mode eq 'self') {
        $ir{$fn} += $cost;
    } else {
        next if $rec;
        $ir{$fn} = $cost if !defined $ir{$fn} || $cost > $ir{$fn};
    }
    $obj{$fn} //= $o if defined $o;
}
die "$0: no PROGRAM TOTALS in the input\n" unless $total;

my @f = sort { $ir{$b} <=> $ir{$a} } keys %ir;
splice @f, $top if @f > $top;
printf "%12s %7s %10s  %s\n", 'Ir', '%', 'Ir/req', 'function [object]';
for my $fn (@f) {
    my $o = $obj{$fn} // '?';
    $o =~ s{.*/}{};
    printf "%12s %6.2f%% %10.0f  %s [%s]\n", commify($ir{$fn}),
           100 * $ir{$fn} / $total, $ir{$fn} / $n, $fn, $o;
}

sub commify { my $x = shift; 1 while $x =~ s/^(\d+)(\d{3})/$1,$2/; $x }
