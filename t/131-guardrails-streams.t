# Guardrails, found in a review (2026-11-27): escaped keys and deep nesting
# on input; on output streams, the held-back text at a stream's end (blocked,
# or sent when no finish_reason chunk comes), number groups with letters
# (IBAN) and brackets (phones), PEM blocks and JWTs split over many deltas,
# more than 8 texts at once, the Responses API's events that repeat the
# text; a compressed answer under on_error=deny; a blocked request's record.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use MockProvider;
use JSON::PP ();
use IO::Compress::Gzip ();

# an OpenAI chat stream of these deltas; $finish: a finish_reason chunk
sub oa_stream {
    my ($finish, @deltas) = @_;
    my $s = '';
    for my $d (@deltas) {
        $s .= 'data: ' . JSON::PP->new->canonical->ascii->encode({id => 'c1', object => 'chat.completion.chunk',
                 model => 'm', choices => [{index => 0, delta => {content => $d}, finish_reason => undef}]}) . "\n\n";
    }
    $s .= qq|data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n| if $finish;
    return $s . "data: [DONE]\n\n";
}

# an Anthropic stream: one text block a list of deltas
sub an_stream {
    my (@blocks) = @_;
    my $s = qq|event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}\n\n|;
    my $i = 0;
    for my $b (@blocks) {
        $s .= qq|event: content_block_start\ndata: {"type":"content_block_start","index":$i,"content_block":{"type":"text","text":""}}\n\n|;
        for my $d (@$b) {
            $s .= "event: content_block_delta\ndata: " . JSON::PP->new->canonical->encode({type => 'content_block_delta',
                     index => $i, delta => {type => 'text_delta', text => $d}}) . "\n\n";
        }
        $s .= qq|event: content_block_stop\ndata: {"type":"content_block_stop","index":$i}\n\n|;
        $i++;
    }
    return $s . qq|event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n|;
}

# pieces of n characters
sub pieces { my ($t, $n) = @_; return $t =~ /(.{1,$n})/sg }

# the text a client got from an OpenAI stream, and how it ended
sub oa_text {
    my ($body) = @_;
    my ($text, $bad) = ('', 0);
    for my $l ($body =~ /^data: (\{.*\})$/mg) {
        my $j = eval { JSON::PP::decode_json($l) };
        if (!$j) { $bad++; next }
        return "$text|blocked ($j->{error}{message})" if $j->{error};
        $text .= $_->{delta}{content} // $_->{text} // '' for @{ $j->{choices} };
    }
    return "$text|$bad bad|" . ($body =~ /data: \[DONE\]\n\n\z/ ? 'DONE' : 'no end');
}

sub an_text {
    my ($body) = @_;
    return oa_text($body) if $body !~ /^event: message_start$/m;
    my %text;
    for my $l ($body =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        return CORE::join('/', map { $text{$_} } sort { $a <=> $b } keys %text) . "|blocked ($j->{error}{message})"
            if $j->{type} eq 'error';
        $text{$j->{index}} .= $j->{delta}{text} // '' if $j->{type} eq 'content_block_delta';
    }
    return CORE::join('/', map { $text{$_} } sort { $a <=> $b } keys %text) . '|'
        . ($body =~ /event: message_stop\ndata: \{"type":"message_stop"\}\n\n\z/ ? 'message_stop' : 'no end');
}

our $pem = "-----BEGIN RSA PRIVATE KEY-----\n" . CORE::join('', map { ('MIIEpAIBAAKCAQEA' x 4) . "\n" } 1 .. 13)
    . "-----END RSA PRIVATE KEY-----";
# a JWT of 763 bytes, as OIDC tokens are
our $jwt = 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.' . ('eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0' x 12) . '.' . ('SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c' x 3);

# the splits of TEST 7: [name, text, pieces]
our @splits = (
    ['IBAN a word a delta', 'IBAN GB82 WEST 1234 5698 7654 32 thanks', [map { " $_" } qw(IBAN GB82 WEST 1234 5698 7654 32 thanks)]],
    ['NL IBAN in 3s', 'pay NL91 ABNA 0417 1643 00 now', [pieces('pay NL91 ABNA 0417 1643 00 now', 3)]],
    ['phone cut after "(415) "', 'US: (415) 555-0134 ok', ['US: (415) ', '555-0134 ok']],
    ['phone cut after "+49 ("', 'tel +49 (0)30 1234 5678 ok', ['tel +49 (', '0)30 1234 5678 ok']],
    ['card in 2s', 'card 4111 1111 1111 1111 ok', [pieces('card 4111 1111 1111 1111 ok', 2)]],
);
our @split_files = map { ["s$_.sse", oa_stream(1, @{ $splits[$_][2] })] } 0 .. $#splits;

# TEST 22: tool arguments with escapes and a long string, in pieces of 1 to
# 13 bytes (OpenAI tool_calls deltas)
our $args = '{"a":"q\\"x\\\\ \\u00e9 mail john@example.com\\n","long":"' . ('word ' x 70)
    . 'reach me at jane@corp.example ok","n":[1,2.5e3,true,null]}';
sub tool_stream {
    my ($n) = @_;
    my $s = '';
    for my $p ($args =~ /(.{1,$n})/sg) {
        $s .= 'data: ' . JSON::PP->new->canonical->encode({choices => [{index => 0, delta => {tool_calls =>
                 [{index => 0, function => {arguments => $p}}]}}]}) . "\n\n";
    }
    return $s . qq|data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n|;
}
our @tool_files = map { ["t$_.sse", tool_stream($_)] } 1 .. 13;

# TEST 24-29 (a second review): texts, in pieces of the sizes given, and what
# the client must get; one request each
our @cases2 = (
    (map { my $n = $_; map { ["t $n $_->[0]", $_->[1], $n, $_->[2]] }
        (['quote', qq|here token "$jwt" after|, 'here token "[REDACTED_SECRET]" after'],
         ['bearer', "auth Bearer:$jwt ok", 'auth Bearer:[REDACTED_SECRET] ok'],
         ['x=', "x=$jwt&y=1 ok", 'x=[REDACTED_SECRET]&y=1 ok']) } (3, 16, 50, 300)),
    (map { ["pem end $_", "here key:\n$pem\nafter text", $_, "here key:\n[REDACTED_SECRET]\nafter text"] } (5, 29, 64, 300, 2000)),
    (map { ["pem end cut $_", "here key:\n$pem\nafter text", ["here key:\n" . substr($pem, 0, length($pem) - $_), substr($pem, -$_) . "\nafter text"],
            "here key:\n[REDACTED_SECRET]\nafter text"] } (1, 3, 5, 12, 28)),
    ['pem end whole', "here key:\n$pem\nafter text", ["here key:\n$pem", "\nafter text"], "here key:\n[REDACTED_SECRET]\nafter text"],
    ['iban W', "IBAN GB82 WEST 1234 5698 7654 32 thanks", ['IBAN GB82 W', 'EST 1234 5698 7654 32 thanks'], 'IBAN [REDACTED_IBAN] thanks'],
    ['iban A', "pay NL91 ABNA 0417 1643 00 now", ['pay NL91 A', 'BNA 0417 1643 00 now'], 'pay [REDACTED_IBAN] now'],
    (map { ["phones $_", 'Phones: +49 30 1234 5678, +49 30 8765 4321, +49 30 1111 2222, +49 30 3333 4444 end', $_,
            'Phones: [REDACTED_PHONE], [REDACTED_PHONE], [REDACTED_PHONE], [REDACTED_PHONE] end'] } (1, 2, 5, 11, 'words')),
    (map { my $cjk = "\x{8054}\x{7cfb}" x 60; my $b = $cjk; utf8::encode($b);
           ["cjk $_", "${cjk}john\@example.com$cjk ok", $_, "${b}[REDACTED_EMAIL]$b ok"] } (5, 7, 10, 13, 31, 44, 73)),
);
# a third review's texts
my $jwt3 = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijklmnop';
push @cases2,
    ['card label', "\x{4fe1}\x{7528}\x{5361}\x{53f7}\x{7801}\x{ff1a}4111 1111 1111 1111 ok",
     ["\x{4fe1}\x{7528}\x{5361}\x{53f7}\x{7801}\x{ff1a}4111 ", '1111 ', '1111 ', '1111 ', 'ok'],
     "\xe4\xbf\xa1\xe7\x94\xa8\xe5\x8d\xa1\xe5\x8f\xb7\xe7\xa0\x81\xef\xbc\x9a[REDACTED_CARD] ok"],
    ['phone label', 'Telefonnummer:+49 30 1234 5678 ok', 'words', 'Telefonnummer:[REDACTED_PHONE] ok'],
    ['phone label cjk', "\x{8bf7}\x{62e8}\x{6253}\x{ff1a}+1 415 555 0134 ok", 'words',
     "\xe8\xaf\xb7\xe6\x8b\xa8\xe6\x89\x93\xef\xbc\x9a[REDACTED_PHONE] ok"],
    ['long key', 'key sk-' . ('a' x 30000) . ' done', 100, 'key [REDACTED_SECRET] done'],
    ['jwt dot', "Token: $jwt3. Thanks", ["Token: $jwt3", '. Thanks'], 'Token: [REDACTED_SECRET]. Thanks'],
    ['jwt slash', "Token: $jwt3/path ok", ["Token: $jwt3", '/path ok'], 'Token: [REDACTED_SECRET]/path ok'],
    (map { my $cut = $_; ["pem end space $cut", "k:\n$pem\nafter", ["k:\n" . substr($pem, 0, index($pem, $cut) + length($cut)),
        substr($pem, index($pem, $cut) + length($cut)) . "\nafter"], "k:\n[REDACTED_SECRET]\nafter"] }
        ('-----END ', '-----END RSA PRIVATE '));

# a fourth review's texts
my $bigpem = "-----BEGIN RSA PRIVATE KEY-----\n" . CORE::join('', map { ('MIIEpAIBAAKCAQEA' x 4) . "\n" } 1 .. 300)
    . "-----END RSA PRIVATE KEY-----";
push @cases2,
    (map { my $cut = $_; my $i = index($bigpem, '-----END ') + $cut;
        ["big pem end cut $cut", "key:\n$bigpem\nafter the key, mail x\@y.io ok",
         ["key:\n" . substr($bigpem, 0, $i), substr($bigpem, $i) . "\nafter the key, mail x\@y.io ok"],
         "key:\n[REDACTED_SECRET]\nafter the key, mail [REDACTED_EMAIL] ok"] } (3, 9, 20, 28)),
    ['jwt final dot', "Your token is $jwt3.", ["Your token is " . substr($jwt3, 0, -4), substr($jwt3, -4) . '.'],
     'Your token is [REDACTED_SECRET].'];

# a fifth review's
push @cases2,
    ['jwt six segments', "see $jwt3.a.b.c.d end", ["see $jwt3", '.a.b.c.d end'], 'see [REDACTED_SECRET].c.d end'];

# a sixth review's: numbers glued by punctuation to a long word
push @cases2,
    ['url card', 'see https://example.com/4111 1111 1111 1111 ok', ['see https://example.com/4111 1111 1111 ', '1111 ok'],
     'see https://example.com/[REDACTED_CARD] ok'],
    ['path card', 'path /usr/local/bin/4111 1111 1111 1111 ok', ['path /usr/local/bin/4111 1111 1111 ', '1111 ok'],
     'path /usr/local/bin/[REDACTED_CARD] ok'],
    ['domain iban', 'b@c.d.e.co.uk.GB82 WEST 1234 5698 7654 32 ok', ['b@c.d.e.co.uk.GB82 WEST 1234 ', '5698 7654 32 ok'],
     '[REDACTED_EMAIL].[REDACTED_IBAN] ok'],
    ['domain phone', 'ask john.doe@example.com/+1 415 555 0134 ok', ['ask john.doe@example.com/+1 415 555 ', '0134 ok'],
     'ask [REDACTED_EMAIL]/[REDACTED_PHONE] ok'];

sub split_text {
    my ($text, $n) = @_;
    return @$n if ref $n;
    return $text =~ /(\S+\s*)/g if $n eq 'words';
    return $text =~ /(.{1,$n})/sg;
}
our @files2 = map { ["c$_.sse", oa_stream(1, split_text($cases2[$_][1], $cases2[$_][2]))] } 0 .. $#cases2;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a key spelled with escapes is the key it decodes to: "cont\u0065nt" is inspected as "content"
--- config
    location /v1/ {
        ai_gateway_guardrails input pii=block invalid_keywords=$TEST_NGINX_HTML_DIR/kw.txt;
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- user_files
>>> kw.txt
exploit
--- request eval
['POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","cont\u0065nt":"mail john@example.com"}]}',
'POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","\u0063ontent":"an exploit"}]}',
'POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","c\u006fntent":"hello"}]}']
--- error_code eval
[400, 400, 200]
--- response_body_like eval
[qr/"code":"guardrail_blocked"/, qr/"code":"guardrail_blocked"/, qr/"body":/]



=== TEST 2: nesting deeper than 512 levels elsewhere in the body does not switch the input guard off
--- config
    location /v1/ {
        ai_gateway_guardrails input pii=block;
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n" . '{"model":"m","metadata":{"x":' . ('[' x 1000) . (']' x 1000)
    . '},"messages":[{"role":"user","content":"mail john@example.com"}]}'
--- error_code: 400
--- response_body_like: "message":"The request was blocked by the input guardrail \(pii_email\)\."
--- no_error_log
could not inspect



=== TEST 3: pii=block on a stream judges the held-back last word too: an address that ends the text blocks (OpenAI)
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=block;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::oa_stream(1, "contact me at ", "john.doe\@example.com")],
 ["b.sse", main::oa_stream(1, "call +1 415 555 0134")],
 ["c.sse", main::oa_stream(1, "contact me at ", "john.doe\@example.com", " ok")]]
--- request eval
[map { "POST /v1/chat/completions?f=$_\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } qw(a.sse b.sse c.sse)]
--- response_body_filters eval
\&main::oa_text
--- response_body eval
["contact me at |blocked (The response was blocked by the output guardrail (pii_email).)",
 "call|blocked (The response was blocked by the output guardrail (pii_phone).)",
 "contact me at |blocked (The response was blocked by the output guardrail (pii_email).)"]



=== TEST 4: pii=block on an Anthropic stream: the last word, held back, is judged at content_block_stop
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=block;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::an_stream(["contact me at ", "john.doe\@example.com"])]]
--- request
POST /v1/messages
{"model":"claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
\&main::an_text
--- response_body chomp
contact me at |blocked (The response was blocked by the output guardrail (pii_email).)
--- error_log
ai_gateway: guardrail_blocked: output pii_email



=== TEST 5: a stream without a finish_reason chunk: the held-back rest goes out, masked, before [DONE]; and a stream that ends without [DONE]
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::oa_stream(0, "mail ", "john\@example.com")],
 ["b.sse", main::oa_stream(0, "mail ", "john\@example.com") =~ s/data: \[DONE\]\n\n\z//r]]
--- request eval
[map { "POST /v1/chat/completions?f=$_\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } qw(a.sse b.sse)]
--- response_body_filters eval
\&main::oa_text
--- response_body eval
["mail [REDACTED_EMAIL]|0 bad|DONE", "mail [REDACTED_EMAIL]|0 bad|no end"]



=== TEST 6: ten texts at once (Anthropic blocks, OpenAI choices) are all followed: the streams end as they should
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::an_stream(map { ["block $_ ", "mail u$_\@corp.example"] } 0 .. 9)],
 ["b.sse", CORE::join('', map { my $i = $_; map { qq|data: {"choices":[{"index":$i,"delta":{"content":"$_"}}]}\n\n| } ("c$i ", "u$i\@corp.example") } 0 .. 9)
           . CORE::join('', map { qq|data: {"choices":[{"index":$_,"delta":{},"finish_reason":"stop"}]}\n\n| } 0 .. 9) . "data: [DONE]\n\n"]]
--- request eval
["POST /v1/messages?f=a.sse\n" . '{"model":"claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1/chat/completions?f=b.sse\n" . '{"model":"m","stream":true,"n":10,"messages":[{"role":"user","content":"Hi"}]}']
--- response_body_filters eval
\&main::an_text
--- response_body eval
[CORE::join('/', map { "block $_ mail [REDACTED_EMAIL]" } 0 .. 9) . "|message_stop",
 CORE::join('', map { "c$_ [REDACTED_EMAIL]" } 0 .. 9) . "|0 bad|DONE"]



=== TEST 7: numbers split over deltas: IBANs with groups of letters, phones with brackets, cards, all masked
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
\@::split_files
--- request eval
[map { "POST /v1/chat/completions?f=s$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } 0 .. $#::splits]
--- response_body_filters eval
\&main::oa_text
--- response_body eval
[" IBAN [REDACTED_IBAN] thanks|0 bad|DONE", "pay [REDACTED_IBAN] now|0 bad|DONE",
 "US: [REDACTED_PHONE] ok|0 bad|DONE", "tel [REDACTED_PHONE] ok|0 bad|DONE", "card [REDACTED_CARD] ok|0 bad|DONE"]



=== TEST 8: a private key and a long JWT in 4-byte deltas are masked whole (OpenAI and Anthropic), none of their bytes sent
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::oa_stream(1, main::pieces("Here is the key:\n$::pem\nDone.", 4))],
 ["b.sse", main::an_stream([main::pieces("Here is the key:\n$::pem\nDone.", 4)])],
 ["c.sse", main::oa_stream(1, main::pieces("token $::jwt and more", 4))],
 ["d.sse", main::oa_stream(1, "Here is the key:\n-----BEGIN RSA PRIV", "ATE KEY-----\nMIIE", "pAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nDone.")]]
--- request eval
["POST /v1/chat/completions?f=a.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1/messages?f=b.sse\n" . '{"model":"claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1/chat/completions?f=c.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1/chat/completions?f=d.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}']
--- response_body_filters eval
\&main::an_text
--- response_body eval
["Here is the key:\n[REDACTED_SECRET]\nDone.|0 bad|DONE", "Here is the key:\n[REDACTED_SECRET]\nDone.|message_stop",
 "token [REDACTED_SECRET] and more|0 bad|DONE", "Here is the key:\n[REDACTED_SECRET]\nDone.|0 bad|DONE"]



=== TEST 9: pii=block: a private key streamed in pieces blocks the stream before any of it is sent
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=block;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::oa_stream(1, main::pieces("Here is the key:\n$::pem\nDone.", 4))]]
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
\&main::oa_text
--- response_body chomp
Here is the key:
|blocked (The response was blocked by the output guardrail (pii_secret).)



=== TEST 10: a Responses API stream: the events that repeat the text (*.done, response.completed) are masked as the deltas are
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_buffering off;
        proxy_set_header x-mock-text "Write to john.doe@example.com now";
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/responses
{"model":"gpt-4o","stream":true,"input":"hi"}
--- response_body_filters eval
sub {
    my ($body) = @_;
    my ($deltas, $done) = ('', 0);
    for my $l ($body =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $deltas .= $j->{delta} if $j->{type} eq 'response.output_text.delta';
        $done++ if $l =~ /Write to \[REDACTED_EMAIL\] now/ && $j->{type} ne 'response.output_text.delta';
    }
    "$deltas|" . ($done >= 4 ? 'repeats masked' : "$done repeats masked") . "\n";
}
--- response_body
Write to [REDACTED_EMAIL] now|repeats masked
--- response_body_unlike: john



=== TEST 11: a Responses API stream's function call arguments are masked, in their deltas, their .done event and the completed response
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", qq|event: response.output_item.added\ndata: {"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","id":"fc1","call_id":"c1","name":"send","arguments":""}}\n\n|
 . qq|event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","output_index":0,"item_id":"fc1","delta":"{\\"to\\":\\"john.doe\@example.com\\"}"}\n\n|
 . qq|event: response.function_call_arguments.done\ndata: {"type":"response.function_call_arguments.done","output_index":0,"item_id":"fc1","arguments":"{\\"to\\":\\"john.doe\@example.com\\"}"}\n\n|
 . qq|event: response.output_item.done\ndata: {"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","id":"fc1","call_id":"c1","name":"send","arguments":"{\\"to\\":\\"john.doe\@example.com\\"}"}}\n\n|
 . qq|event: response.completed\ndata: {"type":"response.completed","response":{"id":"r1","output":[{"type":"function_call","id":"fc1","call_id":"c1","name":"send","arguments":"{\\"to\\":\\"john.doe\@example.com\\"}"}],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}}\n\n|]]
--- request
POST /v1/responses
{"model":"gpt-4o","stream":true,"input":"hi"}
--- response_body_filters eval
sub { my ($b) = @_; my $n = () = $b =~ /\{\\"to\\":\\"\[REDACTED_EMAIL\]\\"\}/g; "$n masked\n" }
--- response_body
4 masked
--- response_body_unlike: john



=== TEST 12: an upstream that compresses its answer anyway: on_error=deny answers 502, on_error=allow sends it as it is
--- config
    location /deny/ {
        ai_gateway_guardrails output pii=mask on_error=deny;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/gz;
    }
    location /allow/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/gz;
    }
    location = /gz {
        default_type application/json;
        add_header Content-Encoding gzip;
        alias html/a.json.gz;
    }
--- user_files eval
my $gz;
IO::Compress::Gzip::gzip(\'{"choices":[{"index":0,"message":{"role":"assistant","content":"mail john@example.com"}}]}' => \$gz);
[["a.json.gz", $gz]]
--- request eval
["POST /deny/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"Hi"}]}',
 "POST /allow/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"Hi"}]}']
--- error_code eval
[502, 200]
--- response_headers eval
["Content-Encoding:\nContent-Type: application/json", "Content-Encoding: gzip"]
--- response_body_like eval
[qr/^\{"error":\{"message":"The upstream's answer could not be inspected\.","type":"server_error","code":"guardrail_unavailable"\}\}\n\z/, qr/^\x1f\x8b/]



=== TEST 13: a compressed answer under on_error=deny leaves a line in the error log
--- config
    location /deny/ {
        ai_gateway_guardrails output pii=mask on_error=deny;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/gz;
    }
    location = /gz {
        default_type application/json;
        add_header Content-Encoding gzip;
        alias html/a.json.gz;
    }
--- user_files eval
my $gz;
IO::Compress::Gzip::gzip(\'{"choices":[]}' => \$gz);
[["a.json.gz", $gz]]
--- request
POST /deny/chat/completions
{"model":"m","messages":[{"role":"user","content":"Hi"}]}
--- error_code: 502
--- error_log
502 guardrail_unavailable: the output guardrail cannot inspect a compressed answer (on_error=deny)



=== TEST 14: a blocked request is recorded with its PII masked, never as it came
--- http_config
    ai_gateway_inference_log logs/inference.jsonl buffer=0;
--- config
    location /v1/ {
        ai_gateway_inference_table on;
        ai_gateway_guardrails input pii=block;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /inference {
        default_type text/plain;
        alias logs/inference.jsonl;
    }
--- request eval
["POST /v1/chat/completions\n" . '{"model":"m","messages":[{"role":"user","content":"mail jane@corp.example please"}]}', "GET /inference"]
--- error_code eval
[400, 200]
--- response_body_like eval
[qr/guardrail_blocked/, qr/"status_code":400,.*"request":"\{\\"model\\":\\"m\\",\\"messages\\":\[\{\\"role\\":\\"user\\",\\"content\\":\\"mail \[REDACTED_EMAIL\] please\\"\}\]\}"/]
--- response_body_unlike eval
[qr/jane/, qr/jane/]



=== TEST 15: a delta with \u0000 (which jansson refuses by default) is still judged: its address is masked
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", qq|data: {"choices":[{"index":0,"delta":{"content":"mail john\@example.com \\u0000 ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n|]]
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
sub { my $t = main::oa_text($_[0]); $t =~ s/\0/<NUL>/g; "$t\n" }
--- response_body
mail [REDACTED_EMAIL] <NUL> ok|0 bad|DONE



=== TEST 16: a keepalive comment of the upstream reaches the client at once through the output guard (which writes the events itself)
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_buffering off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions HTTP/1.0
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- more_headers
X-Mock-Keepalive: 2
X-Mock-Stall-After: 0
--- timeout: 0.5
--- abort
--- error_code: 200
--- response_body eval
": keepalive\n\n: keepalive\n\n"



=== TEST 17: through the Anthropic translation and the output guard, Anthropic's ping is a comment in the OpenAI stream
--- config
    location /v1/ {
        ai_gateway_upstream_api anthropic_messages;
        ai_gateway_guardrails output pii=mask;
        proxy_buffering off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- more_headers
X-Mock-Text: mail john@example.com now
--- error_code: 200
--- response_body_like eval
qr/^data: \{[^\n]*"role":"assistant"[^\n]*\n\n: keepalive\n\n(data: [^\n]*\n\n)+data: \[DONE\]\n\n\z/
--- response_body_unlike: john



=== TEST 18: a JSON answer's tool arguments are masked inside their strings: escapes before an address, an escaped "@", a key block without its end; the arguments stay JSON
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/a.json;
    }
    location = /a.json {
        default_type application/json;
        alias html/a.json;
    }
--- user_files eval
[["a.json", JSON::PP->new->canonical->encode({id => 'x', object => 'chat.completion', model => 'm',
    choices => [{index => 0, finish_reason => 'tool_calls', message => {role => 'assistant', content => undef,
    tool_calls => [{id => 'c1', type => 'function', function => {name => 'send',
        arguments => '{"body": "Contact:\njohn@example.com", "to": "caf\u00e9jane@corp.example", "cc": "x\u0040corp.example", "key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}'}}]}}]})]]
--- request
POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
sub {
    my $j = JSON::PP::decode_json($_[0]);
    my $args = eval { JSON::PP->new->decode($j->{choices}[0]{message}{tool_calls}[0]{function}{arguments}) };
    return "not JSON: $j->{choices}[0]{message}{tool_calls}[0]{function}{arguments}\n" unless $args;
    JSON::PP->new->canonical->ascii->encode($args) . "\n";
}
--- response_body
{"body":"Contact:\n[REDACTED_EMAIL]","cc":"[REDACTED_EMAIL]","key":"[REDACTED_SECRET]","to":"caf\u00e9[REDACTED_EMAIL]"}



=== TEST 19: streamed tool arguments in 10-character pieces (OpenAI, Anthropic): an address and a phone split over pieces are masked, the arguments stay JSON
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_buffering off;
        proxy_set_header x-mock-tool-call send;
        proxy_set_header x-mock-tool-args '{"to":"john.doe@example.com","body":"call +1 415 555 0134 today","n":4111111111111111}';
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
["POST /v1/chat/completions\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1/messages\n" . '{"model":"claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}']
--- response_body_filters eval
sub {
    my ($body) = @_;
    my $args = '';
    for my $l ($body =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $args .= $_->{function}{arguments} // '' for @{ $j->{choices}[0]{delta}{tool_calls} // [] };
        $args .= $j->{delta}{partial_json} // '' if ($j->{type} // '') eq 'content_block_delta';
    }
    my $a = eval { JSON::PP->new->decode($args) };
    ($a ? JSON::PP->new->canonical->encode($a) : "not JSON: $args") . "\n";
}
--- response_body eval
['{"body":"call [REDACTED_PHONE] today","n":4111111111111111,"to":"[REDACTED_EMAIL]"}' . "\n",
 '{"body":"call [REDACTED_PHONE] today","n":4111111111111111,"to":"[REDACTED_EMAIL]"}' . "\n"]
--- response_body_unlike eval
[qr/john|doe|0134/, qr/john|doe|0134/]



=== TEST 20: pii=block: an address in streamed tool arguments blocks the stream, whatever the pieces
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=block;
        proxy_buffering off;
        proxy_set_header x-mock-tool-call send;
        proxy_set_header x-mock-tool-args '{"to":"john.doe@example.com"}';
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_like: data: \{"error":\{"message":"The response was blocked by the output guardrail \(pii_email\)\.","type":"invalid_request_error","code":"guardrail_blocked"\}\}\n\ndata: \[DONE\]\n\n\z
--- response_body_unlike: john



=== TEST 21: input: an earlier tool call's arguments in the history are masked inside their strings and stay JSON
--- config
    location /v1/ {
        ai_gateway_guardrails input pii=mask;
        proxy_set_header x-mock-echo 1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request eval
"POST /v1/chat/completions\n" . JSON::PP->new->canonical->encode({model => 'm', messages => [
    {role => 'user', content => 'Hi'},
    {role => 'assistant', content => undef, tool_calls => [{id => 'c1', type => 'function',
        function => {name => 'send', arguments => '{"body": "Contact:\njohn@example.com"}'}}]},
    {role => 'tool', tool_call_id => 'c1', content => 'sent'}]})
--- response_body_filters eval
sub {
    my $echo = JSON::PP::decode_json($_[0]);
    my $req = JSON::PP::decode_json($echo->{body});
    my $args = eval { JSON::PP->new->decode($req->{messages}[1]{tool_calls}[0]{function}{arguments}) };
    ($args ? JSON::PP->new->canonical->encode($args) : "not JSON") . "\n";
}
--- response_body
{"body":"Contact:\n[REDACTED_EMAIL]"}



=== TEST 22: tool arguments with escapes, numbers and a string longer than the hold, cut in pieces of 1 to 13 bytes: always JSON, always masked
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
\@::tool_files
--- request eval
[map { "POST /v1/chat/completions?f=t$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } 1 .. 13]
--- response_body_filters eval
sub {
    my ($body) = @_;
    my $args = '';
    for my $l ($body =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $args .= $_->{function}{arguments} // '' for @{ $j->{choices}[0]{delta}{tool_calls} // [] };
    }
    my $a = eval { JSON::PP->new->decode($args) };
    ($a ? JSON::PP->new->canonical->ascii->encode($a) : "not JSON: $args") . "\n";
}
--- response_body eval
[map { '{"a":"q\\"x\\\\ \\u00e9 mail [REDACTED_EMAIL]\\n","long":"' . ('word ' x 70) . 'reach me at [REDACTED_EMAIL] ok","n":[1,2500,true,null]}' . "\n" } 1 .. 13]



=== TEST 23: a delta with a lone surrogate (which jansson refuses) is still judged: its address is masked, the surrogate is U+FFFD
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", qq|data: {"choices":[{"index":0,"delta":{"content":"mail john\@example.com \\ud83d ok \\ud83d\\ude00 \\\\ud83d"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n|]]
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
sub { my $t = main::oa_text($_[0]); utf8::encode($t); "$t\n" }
--- response_body eval
"mail [REDACTED_EMAIL] \xef\xbf\xbd ok \xf0\x9f\x98\x80 \\ud83d|0 bad|DONE\n"



=== TEST 24: a second review's texts (JWTs after a quote, "Bearer:" or "x="; PEM blocks ended in one delta; IBANs cut after a capital; chains of phone numbers; addresses in long runs of Chinese), in many piece sizes: masked, nothing lost
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
\@::files2
--- request eval
[map { "POST /v1/chat/completions?f=c$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } 0 .. $#::cases2]
--- response_body_filters eval
sub { my $t = main::oa_text($_[0]); utf8::encode($t); "$t\n" }
--- response_body eval
[map { "$_->[3]|0 bad|DONE\n" } @::cases2]



=== TEST 25: a private key and a JWT in streamed tool arguments (pieces of 20 to 300 bytes) are masked whole; the arguments stay JSON
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
my $args = JSON::PP->new->canonical->encode({key => $::pem, token => $::jwt, after => 'ok'});
[map { my $n = $_; ["a$n.sse", CORE::join('', map { 'data: ' . JSON::PP->new->encode({choices => [{index => 0, delta => {tool_calls =>
    [{index => 0, function => {arguments => $_}}]}}]}) . "\n\n" } $args =~ /(.{1,$n})/sg)
    . qq|data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n|] } (20, 50, 100, 300)]
--- request eval
[map { "POST /v1/chat/completions?f=a$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } (20, 50, 100, 300)]
--- response_body_filters eval
sub {
    my $args = '';
    for my $l ($_[0] =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $args .= $_->{function}{arguments} // '' for @{ $j->{choices}[0]{delta}{tool_calls} // [] };
    }
    my $a = eval { JSON::PP->new->decode($args) };
    ($a ? JSON::PP->new->canonical->encode($a) : "not JSON: $args") . "\n";
}
--- response_body eval
[map { '{"after":"ok","key":"[REDACTED_SECRET]","token":"[REDACTED_SECRET]"}' . "\n" } 1 .. 4]



=== TEST 26: a tool argument string over 16 KiB with surrogate pairs is cut between escapes, never inside a pair: the reply is whole and JSON
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
my $args = '{"b":"mail john@example.com ' . ('aaaaaaaaa\\ud83d\\ude00' x 1200) . ' end"}';
[map { my $n = $_; ["a$n.sse", CORE::join('', map { 'data: ' . JSON::PP->new->encode({choices => [{index => 0, delta => {tool_calls =>
    [{index => 0, function => {arguments => $_}}]}}]}) . "\n\n" } $args =~ /(.{1,$n})/sg)
    . qq|data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n|] } (7, 300, 4000)]
--- request eval
[map { "POST /v1/chat/completions?f=a$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } (7, 300, 4000)]
--- response_body_filters eval
sub {
    my $args = '';
    for my $l ($_[0] =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $args .= $_->{function}{arguments} // '' for @{ $j->{choices}[0]{delta}{tool_calls} // [] };
    }
    my $a = eval { JSON::PP->new->decode($args) };
    return "not JSON\n" unless $a;
    my $b = $a->{b};
    utf8::encode($b);
    ($b eq 'mail [REDACTED_EMAIL] ' . ("aaaaaaaaa\xf0\x9f\x98\x80" x 1200) . ' end' ? 'whole' : 'changed') . "\n";
}
--- response_body eval
["whole\n", "whole\n", "whole\n"]



=== TEST 27: an Anthropic stream whose block has no content_block_stop: the held rest goes out before message_stop
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::an_stream(["mail ", "john\@example.com"]) =~ s/event: content_block_stop\n[^\n]*\n\n//r]]
--- request
POST /v1/messages
{"model":"claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}
--- response_body_filters eval
\&main::an_text
--- response_body chomp
mail [REDACTED_EMAIL]|message_stop



=== TEST 28: a finish chunk whose delta is null, or missing: the held rest goes out in a delta of its own making
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[map { my $d = $_; ["$_->[0].sse", qq|data: {"choices":[{"index":0,"delta":{"content":"Hello wor"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"ld x\@y.io"}}]}\n\n|
    . qq|data: {"choices":[{"index":0,$d->[1]"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n|] } (['null', '"delta":null,'], ['none', ''])]
--- request eval
[map { "POST /v1/chat/completions?f=$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } qw(null none)]
--- response_body_filters eval
sub {
    # chat clients read delta.content only
    my $text = '';
    $text .= $_->{delta}{content} // '' for map { @{ JSON::PP::decode_json($_)->{choices} } } $_[0] =~ /^data: (\{.*\})$/mg;
    $text . ($_[0] =~ /data: \[DONE\]\n\n\z/ ? '|DONE' : '|no end');
}
--- response_body eval
["Hello world [REDACTED_EMAIL]|DONE", "Hello world [REDACTED_EMAIL]|DONE"]



=== TEST 29: keywords are judged on whole words: a delta that ends inside a longer word does not block; the keyword itself, cut anywhere, does
--- user_files eval
[["kw.txt", "exploit\n"],
 ["d.sse", main::oa_stream(1, 'Search exploitDB 2', '024 entries today')],
 ["e.sse", main::oa_stream(1, 'Search exploitDB 20', '24 entries today')],
 ["a.sse", main::oa_stream(1, 'the exploit', 's are fine')],
 ["b.sse", main::oa_stream(1, 'the exp', 'loit is bad')],
 ["c.sse", main::oa_stream(1, 'the exploit')]]
--- config
    location /v1/ {
        ai_gateway_guardrails output invalid_keywords=$TEST_NGINX_HTML_DIR/kw.txt;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- request eval
[map { "POST /v1/chat/completions?f=$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } qw(d e a b c)]
--- response_body_filters eval
\&main::oa_text
--- response_body eval
["Search exploitDB 2024 entries today|0 bad|DONE", "Search exploitDB 2024 entries today|0 bad|DONE",
 "the exploits are fine|0 bad|DONE",
 "the |blocked (The response was blocked by the output guardrail (invalid_keyword).)",
 "the |blocked (The response was blocked by the output guardrail (invalid_keyword).)"]



=== TEST 30: pii=block: a card number with a label glued to it blocks the stream before any digit is sent
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=block;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", main::oa_stream(1, 'Kreditkartennummer:4111 ', '1111 ', '1111 ', '1111 ', 'ok')],
 ["b.sse", main::oa_stream(1, 'see https://example.com/4111 1111 1111 ', '1111 ok')]]
--- request eval
[map { "POST /v1/chat/completions?f=$_\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } qw(a.sse b.sse)]
--- response_body_filters eval
\&main::oa_text
--- response_body eval
["Kreditkartennummer:|blocked (The response was blocked by the output guardrail (pii_card).)",
 "see https://example.com/|blocked (The response was blocked by the output guardrail (pii_card).)"]



=== TEST 31: a tool argument string over 16 KiB with a private key in it: the key is masked whole, the arguments stay JSON
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
my $filler = CORE::join(' ', map { "word$_" } 0 .. 2700);
my $key = "-----BEGIN RSA PRIVATE KEY-----\n" . CORE::join('', map { ('MIIEpAIBAAKCAQEA' x 4) . "\n" } 1 .. 40) . "-----END RSA PRIVATE KEY-----";
my $args = JSON::PP->new->canonical->encode({path => '/etc/key', content => substr($filler, 0, 16300) . "\n$key\n" . substr($filler, 0, 3000)});
[map { my $n = $_; ["a$n.sse", CORE::join('', map { 'data: ' . JSON::PP->new->encode({choices => [{index => 0, delta => {tool_calls =>
    [{index => 0, function => {arguments => $_}}]}}]}) . "\n\n" } $args =~ /(.{1,$n})/sg)
    . qq|data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n|] } (37, 100)]
--- request eval
[map { "POST /v1/chat/completions?f=a$_.sse\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' } (37, 100)]
--- response_body_filters eval
sub {
    my $args = '';
    for my $l ($_[0] =~ /^data: (\{.*\})$/mg) {
        my $j = JSON::PP::decode_json($l);
        $args .= $_->{function}{arguments} // '' for @{ $j->{choices}[0]{delta}{tool_calls} // [] };
    }
    my $a = eval { JSON::PP->new->decode($args) };
    return "not JSON\n" unless $a;
    my $filler = CORE::join(' ', map { "word$_" } 0 .. 2700);
    ($a->{content} eq substr($filler, 0, 16300) . "\n[REDACTED_SECRET]\n" . substr($filler, 0, 3000) ? 'masked whole' : 'changed: '
        . ($a->{content} =~ /(MIIE|BEGIN|END)/ ? "key in it ($1)" : 'other')) . "\n";
}
--- response_body eval
["masked whole\n", "masked whole\n"]



=== TEST 32: no false block where a cut would fall inside a word: a long word after a number, a long URL cut at 256 bytes
--- user_files eval
[["kw.txt", "exploit\n"],
 ["a.sse", main::oa_stream(1, 'see exploit12345678901234567', ' 5', ' ok')],
 ["b.sse", main::oa_stream(1, 'tel +1 415 555 0134 12345678901234567', ' 5', ' ok')],
 ["c.sse", main::oa_stream(1, main::pieces('See https://example.com/docs/xxx/exploitation-guide/' . ('chapter-one/' x 22) . 'index.html for more.', 4))]]
--- config
    location /kw/ {
        ai_gateway_guardrails output invalid_keywords=$TEST_NGINX_HTML_DIR/kw.txt;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /block/ {
        ai_gateway_guardrails output pii=block;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/$arg_f;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- request eval
[map { "POST $_\n" . '{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}' }
 '/kw/chat/completions?f=a.sse', '/block/chat/completions?f=b.sse', '/kw/chat/completions?f=c.sse']
--- response_body_filters eval
\&main::oa_text
--- response_body eval
["see exploit12345678901234567 5 ok|0 bad|DONE", "tel +1 415 555 0134 12345678901234567 5 ok|0 bad|DONE",
 'See https://example.com/docs/xxx/exploitation-guide/' . ('chapter-one/' x 22) . 'index.html for more.|0 bad|DONE']



=== TEST 33: more texts at once than the guard follows (257 choices): the stream ends with the error event and [DONE], and a warning names the limit
--- config
    location /v1/ {
        ai_gateway_guardrails output pii=mask;
        proxy_method GET;
        proxy_pass http://127.0.0.1:$server_port/s/a.sse;
        proxy_buffering off;
    }
    location /s/ {
        default_type text/event-stream;
        alias html/;
    }
--- user_files eval
[["a.sse", CORE::join('', map { qq|data: {"choices":[{"index":$_,"delta":{"content":"c$_"}}]}\n\n| } 0 .. 256) . "data: [DONE]\n\n"]]
--- request
POST /v1/chat/completions
{"model":"m","stream":true,"n":257,"messages":[{"role":"user","content":"Hi"}]}
--- error_code: 200
--- response_body_like: data: \{"error":\{"message":"The response was blocked by the output guardrail \(too_many_texts\)\.","type":"invalid_request_error","code":"guardrail_blocked"\}\}\n\ndata: \[DONE\]\n\n\z
--- error_log
ai_gateway: the output guardrail follows at most 256 texts of a stream at once: the stream is ended
