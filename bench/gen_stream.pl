#!/usr/bin/env perl
# gen_stream.pl [CHUNKS] [MODEL] [PROMPT_TOKENS]
#
# Prints the mock provider's answer to a streaming OpenAI chat request: an
# SSE stream as OpenAI sends it when the request had
# stream_options.include_usage, i.e.
#
#   data: {... "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}
#   data: {... "choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}  x CHUNKS
#   data: {... "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
#   data: {... "choices":[],"usage":{"prompt_tokens":P,"completion_tokens":CHUNKS,"total_tokens":P+CHUNKS}}
#   data: [DONE]
#
# each event followed by a blank line ("\n\n").  One content chunk is one
# token (a space and a word from a fixed list), so completion_tokens is
# CHUNKS.  Deterministic: the same arguments always give the same bytes.
#
# With --strip, prints the stream a client that did not ask for usage must
# get from the gateway: the same bytes without the usage event.
use strict;
use warnings;

my $strip = @ARGV && $ARGV[0] eq '--strip' ? shift : 0;
my $chunks = shift // 200;
my $model  = shift // 'gpt-4o-mini';
my $prompt = shift // 250;
$chunks =~ /^\d+$/ && $chunks > 0 or die "$0: CHUNKS must be a positive number\n";

my @words = qw(
  Revenue grew twelve percent last quarter while refunds fell to under two
  percent of orders and the average delivery time dropped to two days The
  largest region by orders was EU-West followed by US-East and the strongest
  product line was kitchen appliances Supplier lead times improved as well
);

my $head = '{"id":"chatcmpl-B1ench0000000000000000000002","object":"chat.completion.chunk",'
         . '"created":1732600000,"model":"' . $model . '",';

my @ev;
push @ev, $head . '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}';
for my $i (0 .. $chunks - 1) {
    push @ev, $head . '"choices":[{"index":0,"delta":{"content":" ' . $words[$i % @words]
            . '"},"finish_reason":null}]}';
}
push @ev, $head . '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}';
push @ev, $head . '"choices":[],"usage":{"prompt_tokens":' . $prompt
            . ',"completion_tokens":' . $chunks . ',"total_tokens":' . ($prompt + $chunks) . '}}'
    unless $strip;
push @ev, '[DONE]';

binmode STDOUT;
print map { "data: $_\n\n" } @ev;
