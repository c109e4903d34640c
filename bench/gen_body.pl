#!/usr/bin/env perl
# gen_body.pl SIZE_BYTES [MODEL] [STREAM]
#
# Prints an OpenAI chat-completions request body of exactly SIZE_BYTES bytes
# to stdout: model, a system prompt, alternating user/assistant turns (as many
# as fit; the 1 KiB body has just one user turn), max_tokens, temperature,
# stream (false, or true when STREAM is "true"; no stream_options) and user.  The text is pseudo-random prose from a fixed-seed
# generator, so the same SIZE always gives the same bytes.  It contains a few
# JSON escapes (\n, \", \u00e9) and raw UTF-8, as real prompts do.
use strict;
use warnings;

my $size  = shift // die "usage: $0 SIZE_BYTES [MODEL]\n";
my $model = shift // 'gpt-4o-mini';
my $stream = shift // 'false';
$size =~ /^\d+$/ or die "$0: SIZE_BYTES must be a number\n";
$stream =~ /^(true|false)$/ or die "$0: STREAM must be true or false\n";

my @words = qw(
  the a of to and in for is on that with as by this be are from at or an it
  request response model token latency gateway upstream buffer stream
  context window prompt completion summary table column query index cache
  customer order invoice payment refund account balance report quarter
  revenue forecast region product shipment delivery warehouse supplier
  please explain why how what which could would should describe compare
  list steps example function parameter return value error retry timeout
  python javascript json schema field array object string number boolean
  database migration deployment cluster service container kubernetes
  nginx proxy header body status code client server connection keepalive
);

my $seed = 20241126;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

sub sentence {
    my $n = 6 + rnd() % 14;
    my @w = map { $words[rnd() % @words] } 1 .. $n;
    $w[0] = ucfirst $w[0];
    return join(' ', @w) . (rnd() % 5 ? '.' : '?');
}

sub paragraph {
    my $len = shift;
    my $s = '';
    while (length($s) < $len) {
        $s .= ($s eq '' ? '' : (rnd() % 4 ? ' ' : "\n")) . sentence();
    }
    return $s;
}

sub jstr {
    my $s = shift;
    $s =~ s/\\/\\\\/g;
    $s =~ s/"/\\"/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/\t/\\t/g;
    return qq("$s");
}

sub msg { my ($role, $content) = @_;
          return '{"role":' . jstr($role) . ',"content":' . $content . '}'; }

my $system = 'You are a helpful assistant for an online retailer. Answer '
           . 'concisely, use "metric" units, and format tables as Markdown.';

my @msgs = (msg('system', jstr($system)));

# turns of about 3 KiB while at least ~4 KiB are left, then the final turn
my $tail = ',"max_tokens":512,"temperature":0.7,"stream":' . $stream . ','
         . '"user":"bench-user-42"}';
my $head = '{"model":' . jstr($model) . ',"messages":[';

my $role = 'user';
my $turn = 0;
while (1) {
    my $cur = length($head . join(',', @msgs) . ']' . $tail);
    last if $size - $cur < 4096;
    my $text = paragraph(2000 + rnd() % 2000);
    $text = "Caf\\u00e9 orders: \\\"last quarter\\\" " . $text if $turn == 0;
    # $text is already partly escaped above: escape the rest by hand
    my $j = $text; $j =~ s/\n/\\n/g;
    push @msgs, msg($role, qq("$j"));
    $role = $role eq 'user' ? 'assistant' : 'user';
    $turn++;
}
push @msgs, msg('assistant', jstr(paragraph(200))) if $role eq 'assistant';

# the final user turn: prose cut at a word, then spaces to the exact size
my $prefix = $head . join(',', @msgs) . ',{"role":"user","content":"';
my $suffix = '"}]' . $tail;
my $room = $size - length($prefix) - length($suffix);
die "$0: $size bytes is too small for a request body\n" if $room < 40;

my $text = 'Na' . "\xc3\xaf" . 've question:';     # raw UTF-8, 2 bytes
$text .= ' ' . sentence() while length($text) < $room;
$text = substr($text, 0, rindex($text, ' ', $room - 1));  # whole words
$text .= ' ' x ($room - 1 - length($text)) . '?';

my $body = $prefix . $text . $suffix;
length($body) == $size or die "$0: internal error: got " . length($body) . "\n";
binmode STDOUT;
print $body;
