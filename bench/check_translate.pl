#!/usr/bin/env perl
# check_translate.pl ANTHROPIC_ANSWER_FILE BODY_FILE
#
# Checks that BODY_FILE is the OpenAI chat.completion the gateway must make of
# the Anthropic Messages answer in ANTHROPIC_ANSWER_FILE (the "translate"
# case of bench/run.sh and bench/callgrind.sh).  An exact comparison is
# impossible ("created" is the time of the answer), so it checks:
#   - the literal pieces (as the module writes them): "finish_reason":"stop"
#     and "usage":{"prompt_tokens":IN,"completion_tokens":OUT,"total_tokens":SUM
#     where IN = input + cache read + cache creation tokens of the answer;
#   - the parsed JSON: id "chatcmpl-" + Anthropic's id without "msg_", object
#     "chat.completion", created an integer within a day of now, model
#     Anthropic's, exactly one choice, index 0, role "assistant", content the
#     answer's text blocks joined, no tool_calls, finish_reason "stop" (for
#     end_turn), usage prompt/completion/total tokens and
#     prompt_tokens_details.cached_tokens (the cache read tokens).
# Prints one line describing the answer; exits 1 with the reason otherwise.
#
# Also a library: bench/fixed_client.pl does
#   require ".../check_translate.pl"; my $check = BenchTranslate::checker($file);
#   my $err = $check->($body);       # undef when the body is right
use strict;
use warnings;

package BenchTranslate;

use JSON::PP ();

sub slurp {
    my $f = shift;
    open my $fh, '<:raw', $f or die "check_translate: $f: $!\n";
    local $/;
    return scalar <$fh>;
}

# checker(ANTHROPIC_ANSWER_FILE): a sub BODY -> undef (right) or the reason
sub checker {
    my $file = shift;
    my $a = JSON::PP->new->utf8->decode(slurp($file));
    my $u = $a->{usage} // {};
    my $in = ($u->{input_tokens} // 0) + ($u->{cache_read_input_tokens} // 0)
           + ($u->{cache_creation_input_tokens} // 0);
    my $out = $u->{output_tokens} // 0;
    my $cached = $u->{cache_read_input_tokens} // 0;
    my %finish = (end_turn => 'stop', stop_sequence => 'stop',
                  max_tokens => 'length', tool_use => 'tool_calls');
    my $reason = $finish{ $a->{stop_reason} // '' }
        // die "check_translate: unexpected stop_reason in $file\n";
    (my $id = $a->{id}) =~ s/^msg_//;
    my $text = join '', map { $_->{text} } grep { $_->{type} eq 'text' } @{ $a->{content} };
    my $usage_lit = qq("usage":{"prompt_tokens":$in,"completion_tokens":$out,)
                  . qq("total_tokens":) . ($in + $out);
    my $finish_lit = qq("finish_reason":"$reason");
    my $json = JSON::PP->new->utf8;

    return sub {
        my $body = shift;
        index($body, $finish_lit) >= 0 or return "no $finish_lit";
        index($body, $usage_lit) >= 0 or return "no $usage_lit";
        my $r = eval { $json->decode($body) };
        defined $r or return "not JSON: $@";
        ref $r eq 'HASH' or return 'not a JSON object';
        my @e;
        my $is = sub { my ($what, $got, $want) = @_;
                       push @e, "$what is " . (defined $got ? "\"$got\"" : 'missing')
                                . ", expected \"$want\""
                           unless defined $got && !ref $got && $got eq $want; };
        $is->('id', $r->{id}, "chatcmpl-$id");
        $is->('object', $r->{object}, 'chat.completion');
        my $c = $r->{created};
        push @e, 'created is ' . ($c // 'missing') . ', not the time of the answer'
            unless defined $c && !ref $c && $c =~ /^\d+$/ && abs($c - time) < 86400;
        $is->('model', $r->{model}, $a->{model});
        my $ch = $r->{choices};
        if (ref $ch eq 'ARRAY' && @$ch == 1 && ref $ch->[0] eq 'HASH') {
            my $m = $ch->[0]{message} // {};
            $is->('choices[0].index', $ch->[0]{index}, 0);
            $is->('choices[0].message.role', $m->{role}, 'assistant');
            $is->('choices[0].message.content', $m->{content}, $text);
            push @e, 'choices[0].message has tool_calls' if exists $m->{tool_calls};
            $is->('choices[0].finish_reason', $ch->[0]{finish_reason}, $reason);
        } else {
            push @e, 'choices is not an array of one object';
        }
        my $ru = $r->{usage};
        if (ref $ru eq 'HASH') {
            $is->('usage.prompt_tokens', $ru->{prompt_tokens}, $in);
            $is->('usage.completion_tokens', $ru->{completion_tokens}, $out);
            $is->('usage.total_tokens', $ru->{total_tokens}, $in + $out);
            $is->('usage.prompt_tokens_details.cached_tokens',
                  ref $ru->{prompt_tokens_details} eq 'HASH'
                      ? $ru->{prompt_tokens_details}{cached_tokens} : undef, $cached);
        } else {
            push @e, 'no usage object';
        }
        return @e ? join('; ', @e) : undef;
    };
}

package main;

unless (caller) {
    my ($answer, $file) = @ARGV;
    die "usage: $0 ANTHROPIC_ANSWER_FILE BODY_FILE\n" unless defined $file;
    my $body = BenchTranslate::slurp($file);
    my $err = BenchTranslate::checker($answer)->($body);
    if (defined $err) {
        print STDERR "check_translate: $file: $err\n";
        exit 1;
    }
    my $r = JSON::PP->new->utf8->decode($body);
    my $u = $r->{usage};
    printf "chat.completion id %s, created %s, model %s, content %d chars, finish_reason %s, "
         . "usage %d/%d/%d cached %d\n",
        $r->{id}, $r->{created}, $r->{model}, length $r->{choices}[0]{message}{content},
        $r->{choices}[0]{finish_reason}, $u->{prompt_tokens}, $u->{completion_tokens},
        $u->{total_tokens}, $u->{prompt_tokens_details}{cached_tokens};
}

1;
