#!/usr/bin/env perl
# check_records.pl -- the gateway's usage and inference records, for
# bench/run.sh and bench/callgrind.sh.
#
#   check_records.pl check USAGE_LOG INFERENCE_LOG CLIENT_REQUEST_ID CASE \
#                    BODY_FILE RESPONSE_FILE STREAM_CHUNKS
#       The records of one request (found by its X-Client-Request-Id) must
#       be right: exactly one of each; usage: status 200, api openai_chat,
#       model, request_streaming (true for CASE "stream"),
#       token_count_source "provider", the provider's token counts (JSON
#       answer: 231/48, stream: 250/STREAM_CHUNKS), client_aborted false;
#       inference: status 200, request = BODY_FILE exactly, response =
#       RESPONSE_FILE exactly (JSON) or, for a stream, the assembled message
#       (content = the concatenated deltas, finish_reason "stop", usage),
#       no logging_error_codes.  Prints one line; exits 1 with the reasons
#       otherwise.  INFERENCE_LOG "-": no inference record is looked for.
#
#   check_records.pl count USAGE_LOG INFERENCE_LOG
#       Counts the records per endpoint (fast: regexes, no JSON parsing),
#       one line per endpoint and log:
#       "usage ENDPOINT records=N provider=N estimate=N none=N status200=N
#        aborted=N" and "inference ENDPOINT records=N errors=N"
use strict;
use warnings;
use JSON::PP;

my $mode = shift // '';

if ($mode eq 'count') {
    my ($ulog, $ilog) = @ARGV;
    my (%u, %i);
    if (open my $fh, '<:raw', $ulog) {
        while (<$fh>) {
            my ($ep) = /"endpoint":"([^"]*)"/;
            $ep //= '?';
            my $x = $u{$ep} //= { records => 0, provider => 0, estimate => 0, none => 0,
                                  status200 => 0, aborted => 0, other => 0 };
            $x->{records}++;
            my ($src) = /"token_count_source":"(\w+)"/;
            $x->{ defined $src && exists $x->{$src} ? $src : 'other' }++;
            $x->{status200}++ if /"status_code":200,/;
            $x->{aborted}++ if /"client_aborted":true/;
        }
    }
    if (open my $fh, '<:raw', $ilog) {
        while (<$fh>) {
            my $head = substr $_, 0, 1000;
            my ($ep) = $head =~ /"endpoint":"([^"]*)"/;
            $ep //= '?';
            $i{$ep}{records}++;
            $i{$ep}{errors} //= 0;
            $i{$ep}{errors}++ unless /"logging_error_codes":\[\]\}$/;
        }
    }
    for my $ep (sort keys %u) {
        my $x = $u{$ep};
        print "usage $ep ", join(' ', map { "$_=$x->{$_}" }
              qw(records provider estimate none other status200 aborted)), "\n";
    }
    for my $ep (sort keys %i) {
        print "inference $ep records=$i{$ep}{records} errors=$i{$ep}{errors}\n";
    }
    exit 0;
}

die "usage: $0 check|count ...\n" unless $mode eq 'check';

my ($ulog, $ilog, $id, $case, $body_file, $resp_file, $chunks) = @ARGV;
die "usage: $0 check USAGE_LOG INFERENCE_LOG ID CASE BODY_FILE RESPONSE_FILE CHUNKS\n"
    unless defined $chunks;

sub slurp { open my $fh, '<:raw', $_[0] or die "$0: $_[0]: $!\n"; local $/; <$fh> }

sub records {
    my ($file) = @_;
    my @r;
    open my $fh, '<:raw', $file or return ();
    while (my $line = <$fh>) {
        next unless index($line, $id) >= 0;
        my $rec = eval { JSON::PP->new->utf8->decode($line) };
        push @r, $rec // { _invalid => $@, _line => $line };
    }
    return @r;
}

my @err;
my $stream = $case eq 'stream';
my $json = JSON::PP->new->canonical;

my @u = records($ulog);
my @i = $ilog eq '-' ? () : records($ilog);
push @err, sprintf("%d usage records for client_request_id %s in %s (want 1)", scalar @u, $id, $ulog)
    unless @u == 1;
push @err, sprintf("%d inference records for client_request_id %s in %s (want 1)", scalar @i, $id, $ilog)
    unless @i == 1 || $ilog eq '-';

sub want {
    my ($what, $rec, $key, $exp) = @_;
    my $got = $rec->{$key};
    my $g = !defined $got ? 'null' : JSON::PP::is_bool($got) ? ($got ? 'true' : 'false') : "$got";
    push @err, "$what record: \"$key\" is $g, expected $exp" unless $g eq $exp;
}

if (@u == 1) {
    my $r = $u[0];
    if ($r->{_invalid}) {
        push @err, "usage record is not valid JSON ($r->{_invalid}): $r->{_line}";
    } else {
        want('usage', $r, 'status_code', 200);
        want('usage', $r, 'api', 'openai_chat');
        want('usage', $r, 'model', 'gpt-4o-mini');
        want('usage', $r, 'client_request_id', $id);
        want('usage', $r, 'request_streaming', $stream ? 'true' : 'false');
        want('usage', $r, 'token_count_source', 'provider');
        want('usage', $r, 'input_token_count', $stream ? 250 : 231);
        want('usage', $r, 'output_token_count', $stream ? $chunks : 48);
        want('usage', $r, 'total_token_count', $stream ? 250 + $chunks : 279);
        want('usage', $r, 'client_aborted', 'false');
    }
}

if (@i == 1) {
    my $r = $i[0];
    if ($r->{_invalid}) {
        push @err, "inference record is not valid JSON ($r->{_invalid}): " . substr($r->{_line}, 0, 500);
    } else {
        want('inference', $r, 'status_code', 200);
        my $body = slurp($body_file);
        # the record's strings are decoded characters; compare bytes
        my $req = defined $r->{request} ? $r->{request} : '';
        utf8::encode($req);
        push @err, "inference record: \"request\" is not the request body (" . length($req)
                 . " bytes, body " . length($body) . ")" unless $req eq $body;
        my $resp = defined $r->{response} ? $r->{response} : '';
        utf8::encode($resp);
        if (!$stream) {
            my $exp = slurp($resp_file);
            push @err, "inference record: \"response\" is not the upstream's answer: "
                     . substr($resp, 0, 300) unless $resp eq $exp;
        } else {
            # the stream, assembled: content = the deltas, in order
            my $sse = slurp($resp_file);
            my $content = '';
            while ($sse =~ /^data: (\{.*\})$/mg) {
                my $ev = JSON::PP->new->utf8->decode($1);
                for my $c (@{ $ev->{choices} }) {
                    $content .= $c->{delta}{content} if defined $c->{delta}{content};
                }
            }
            my $m = eval { JSON::PP->new->utf8->decode($resp) };
            if (!$m) {
                push @err, "inference record: \"response\" is not JSON: " . substr($resp, 0, 300);
            } else {
                push @err, "inference record: response.content is not the streamed text ("
                         . length($m->{content} // '') . " vs " . length($content) . " characters)"
                    unless defined $m->{content} && $m->{content} eq $content;
                push @err, "inference record: response.finish_reason is "
                         . ($m->{finish_reason} // 'null') . ", expected stop"
                    unless ($m->{finish_reason} // '') eq 'stop';
                my $u = $m->{usage} // {};
                push @err, "inference record: response.usage is " . $json->encode($u)
                         . ", expected input 250, output $chunks"
                    unless ($u->{input_tokens} // -1) == 250 && ($u->{output_tokens} // -1) == $chunks;
            }
        }
        my $codes = $r->{logging_error_codes};
        push @err, "inference record: logging_error_codes " . $json->encode($codes)
            unless ref $codes eq 'ARRAY' && !@$codes;
    }
}

if (@err) {
    print STDERR "records of $id ($case):\n";
    print STDERR "  $_\n" for @err;
    print STDERR "  usage record: ", (@u ? ($u[0]{_line} // $json->encode($u[0])) : '(none)'), "\n";
    exit 1;
}
my $r = $u[0];
printf "usage record: token_count_source %s, input %d, output %d tokens, streaming %s; inference record: request and %s match\n",
    $r->{token_count_source}, $r->{input_token_count}, $r->{output_token_count},
    $r->{request_streaming} ? 'true' : 'false', $stream ? 'assembled stream' : 'response';
