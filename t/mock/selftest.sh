#!/usr/bin/env bash
# Self-test for the mock LLM provider (t/mock/provider.js) and t/lib/MockProvider.pm.
# Needs: bash, curl, node (>= 18), perl. Exits non-zero if any check fails.
#
#   bash t/mock/selftest.sh          # quiet: prints failures and a summary
#   VERBOSE=1 bash t/mock/selftest.sh
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROVIDER="$HERE/provider.js"
NODE=${NODE:-$(command -v node || command -v nodejs || true)}
if [ -z "$NODE" ]; then echo "selftest: node not found" >&2; exit 1; fi
command -v curl >/dev/null || { echo "selftest: curl not found" >&2; exit 1; }

TMP=$(mktemp -d)
MOCK_PID=
cleanup() {
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

PASS=0
FAIL=0
# alive PID: running and not a zombie (an orphan's zombie may linger until pid 1 reaps it)
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/status" ]; then ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; fi
}
ok()   { PASS=$((PASS + 1)); [ -n "${VERBOSE:-}" ] && echo "ok - $1"; return 0; }
nok()  { FAIL=$((FAIL + 1)); echo "not ok - $1"; [ $# -gt 1 ] && echo "$2" | sed 's/^/    # /' | head -40; return 0; }

# ---------------------------------------------------------------- checker (node)
cat > "$TMP/check.js" <<'EOF'
// usage: node check.js NAME 'description' 'js expr' ['description' 'js expr' ...]
// In expressions: s (status), rc (curl exit code), ttfb, total (seconds),
// h (response headers, lowercased), t (body text), b (parsed JSON or null),
// ev (parsed SSE events: [{event, data, json}]), dj (data JSON objects of ev).
'use strict';
const fs = require('fs');
const [, , dir, name, ...pairs] = process.argv;
const f = (ext) => { try { return fs.readFileSync(`${dir}/${name}.${ext}`, 'utf8'); } catch (e) { return ''; } };
const t = f('body');
const meta = f('meta').trim().split(/\s+/);
const s = Number(meta[0]); const ttfb = Number(meta[1]); const total = Number(meta[2]);
const rc = Number(f('rc').trim() || 0);
const h = {};
const blocks = f('hdr').split(/\r?\n\r?\n/).filter((x) => x.trim());
for (const line of (blocks[blocks.length - 1] || '').split(/\r?\n/).slice(1)) {
  const i = line.indexOf(':');
  if (i > 0) h[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
}
let b = null; try { b = JSON.parse(t); } catch (e) { /* not json */ }
const ev = [];
for (const block of t.split(/\n\n/)) {
  if (!block.trim()) continue;
  const e = { event: null, data: null, json: null };
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) e.event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  e.data = data.join('\n');
  try { e.json = JSON.parse(e.data); } catch (x) { /* [DONE] */ }
  ev.push(e);
}
const dj = ev.map((e) => e.json).filter(Boolean);
const DEFAULT_TEXT = 'This is a mock response from the AI gateway test provider.';
const words = (x) => (x.match(/\S+/g) || []).length;
let fails = 0;
for (let i = 0; i < pairs.length; i += 2) {
  const desc = pairs[i]; const expr = pairs[i + 1];
  let r; let err = '';
  try { r = eval(expr); } catch (e) { err = String(e); }
  if (r) { if (process.env.VERBOSE) console.log(`ok - ${name}: ${desc}`); continue; }
  fails++;
  console.log(`not ok - ${name}: ${desc}\n    # expr: ${expr}${err ? '\n    # error: ' + err : ''}\n    # status=${s} rc=${rc}\n` +
    t.slice(0, 1500).split('\n').map((l) => '    # | ' + l).join('\n'));
}
console.log(`COUNT ${pairs.length / 2} ${fails}`);
process.exit(0);
EOF

# call NAME [curl args...]  -> $TMP/NAME.{body,hdr,meta,rc}
call() {
    local name=$1; shift
    curl -sS -N --max-time 20 -o "$TMP/$name.body" -D "$TMP/$name.hdr" \
        -w '%{http_code} %{time_starttransfer} %{time_total}' "$@" > "$TMP/$name.meta" 2> "$TMP/$name.err"
    echo $? > "$TMP/$name.rc"
}
# check NAME 'description' 'expr' ...
check() {
    local out line n f
    out=$("$NODE" "$TMP/check.js" "$TMP" "$@")
    line=$(printf '%s\n' "$out" | grep '^COUNT ' | tail -1)
    if [ -z "$line" ]; then nok "$1: checker crashed" "$out"; return; fi
    n=$(echo "$line" | cut -d' ' -f2); f=$(echo "$line" | cut -d' ' -f3)
    printf '%s\n' "$out" | grep -v '^COUNT '
    PASS=$((PASS + n - f)); FAIL=$((FAIL + f))
}
post()  { local name=$1 path=$2 data=$3; shift 3; call "$name" -X POST -H 'content-type: application/json' --data-binary "$data" "$@" "$BASE$path"; }

# ---------------------------------------------------------------- start
"$NODE" "$PROVIDER" --port 0 > "$TMP/mock.out" 2> "$TMP/mock.err" &
MOCK_PID=$!
for _ in $(seq 1 100); do grep -q '^listening' "$TMP/mock.out" 2>/dev/null && break; sleep 0.05; done
if ! grep -Eq '^listening [0-9]+$' "$TMP/mock.out"; then
    nok "mock starts and prints 'listening PORT'" "$(cat "$TMP/mock.out" "$TMP/mock.err")"; exit 1
fi
[ "$(wc -l < "$TMP/mock.out")" -eq 1 ] && ok "exactly one stdout line" || nok "exactly one stdout line" "$(cat "$TMP/mock.out")"
PORT=$(awk '{print $2; exit}' "$TMP/mock.out")
BASE="http://127.0.0.1:$PORT"

# system "You are terse." (14) + user "Hello there, mock!" (18) = 32 chars -> 8 prompt tokens
CHAT='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there, mock!"}]}'
CHAT_STREAM='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":[{"type":"text","text":"Hello there, mock!"}]}]}'
CHAT_STREAM_U='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there, mock!"}]}'
ANTH='{"model":"claude-sonnet-4-20250514","max_tokens":1024,"system":"You are terse.","messages":[{"role":"user","content":[{"type":"text","text":"Hello there, mock!"}]}]}'
ANTH_STREAM='{"model":"claude-sonnet-4-20250514","max_tokens":1024,"stream":true,"system":[{"type":"text","text":"You are terse."}],"messages":[{"role":"user","content":"Hello there, mock!"}]}'

# ---------------------------------------------------------------- control endpoints, models, 404
call health "$BASE/__mock/health"
check health 'status ok' 's === 200 && b.status === "ok"'

call models "$BASE/v1/models"
check models 'OpenAI model list' 's === 200 && b.object === "list" && b.data.length > 0 && b.data.every(m => m.object === "model" && typeof m.id === "string" && m.owned_by)'
call model1 "$BASE/v1/models/gpt-4o"
check model1 'single model' 's === 200 && b.object === "model" && b.id === "gpt-4o"'

post nf /v1/nothing/here '{}'
check nf '404 OpenAI error shape' 's === 404 && b.error && typeof b.error.message === "string" && b.error.type === "invalid_request_error" && "code" in b.error'
post nfa /v1/nothing '{}' -H 'anthropic-version: 2023-06-01'
check nfa '404 Anthropic shape when anthropic-version is sent' 's === 404 && b.type === "error" && b.error.type === "not_found_error"'
call getchat "$BASE/v1/chat/completions"
check getchat 'GET on a POST route is 405' 's === 405 && h.allow === "POST" && b.error'

# ---------------------------------------------------------------- OpenAI chat
post chat /v1/chat/completions "$CHAT"
check chat \
  'status/content-type' 's === 200 && /^application\/json/.test(h["content-type"])' \
  'object/id/model' 'b.object === "chat.completion" && /^chatcmpl-/.test(b.id) && b.model === "gpt-4o-mini" && Number.isInteger(b.created)' \
  'message' 'b.choices.length === 1 && b.choices[0].index === 0 && b.choices[0].message.role === "assistant" && b.choices[0].message.content === DEFAULT_TEXT' \
  'finish_reason' 'b.choices[0].finish_reason === "stop"' \
  'usage counts' 'b.usage.prompt_tokens === 8 && b.usage.completion_tokens === 11 && b.usage.total_tokens === 19' \
  'usage details' 'b.usage.prompt_tokens_details.cached_tokens === 0 && b.usage.completion_tokens_details.reasoning_tokens === 0' \
  'provider headers' 'h["x-request-id"] && h["x-ratelimit-limit-requests"] && h["x-ratelimit-remaining-tokens"]'

post chat_p1 '/openai/v1/chat/completions' "$CHAT"
check chat_p1 'prefix /openai/v1/' 's === 200 && b.object === "chat.completion"'
post chat_p2 '/serving-endpoints/my-endpoint/chat/completions?api-version=2024-06-01' "$CHAT"
check chat_p2 'prefix /serving-endpoints/x/ with query' 's === 200 && b.object === "chat.completion"'

post chat_s /v1/chat/completions "$CHAT_STREAM"
check chat_s \
  'SSE content-type' 's === 200 && /^text\/event-stream/.test(h["content-type"])' \
  'no event: lines' 'ev.every(e => e.event === null)' \
  'ends with [DONE]' 'ev[ev.length - 1].data === "[DONE]" && t.endsWith("data: [DONE]\n\n")' \
  'all chunks are chat.completion.chunk with same id' 'dj.length === ev.length - 1 && dj.every(c => c.object === "chat.completion.chunk" && c.id === dj[0].id && /^chatcmpl-/.test(c.id) && c.model === "gpt-4o-mini")' \
  'first is role delta' 'dj[0].choices[0].delta.role === "assistant" && dj[0].choices[0].delta.content === ""' \
  'one delta per word, concatenating to the text' 'dj.slice(1, -1).length === 11 && dj.slice(1, -1).map(c => c.choices[0].delta.content).join("") === DEFAULT_TEXT' \
  'finish chunk' 'dj[dj.length - 1].choices[0].finish_reason === "stop" && Object.keys(dj[dj.length - 1].choices[0].delta).length === 0 && dj.slice(0, -1).every(c => c.choices[0].finish_reason === null)' \
  'no usage without include_usage' 'dj.every(c => !("usage" in c))'

post chat_su /v1/chat/completions "$CHAT_STREAM_U"
check chat_su \
  'usage chunk before [DONE]' 'ev[ev.length - 1].data === "[DONE]" && dj[dj.length - 1].choices.length === 0 && dj[dj.length - 1].usage.prompt_tokens === 8 && dj[dj.length - 1].usage.completion_tokens === 11 && dj[dj.length - 1].usage.total_tokens === 19' \
  'usage details in chunk' 'dj[dj.length - 1].usage.prompt_tokens_details.cached_tokens === 0 && dj[dj.length - 1].usage.completion_tokens_details.reasoning_tokens === 0' \
  'other chunks have usage null' 'dj.slice(0, -1).every(c => c.usage === null)' \
  'finish chunk is second to last' 'dj[dj.length - 2].choices[0].finish_reason === "stop"'

post chat_max /v1/chat/completions '{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}'
check chat_max 'max_tokens truncates, finish_reason length' 'b.choices[0].message.content === "This is a" && b.choices[0].finish_reason === "length" && b.usage.completion_tokens === 3 && b.usage.prompt_tokens === 1'

# ---------------------------------------------------------------- legacy completions
post cmpl /v1/completions '{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test"}'
check cmpl \
  'text_completion JSON' 's === 200 && b.object === "text_completion" && /^cmpl-/.test(b.id) && b.model === "gpt-3.5-turbo-instruct" && b.choices[0].text === DEFAULT_TEXT && b.choices[0].finish_reason === "stop"' \
  'usage (18 chars -> 5)' 'b.usage.prompt_tokens === 5 && b.usage.completion_tokens === 11 && b.usage.total_tokens === 16'
post cmpl_s /v1/completions '{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true}'
check cmpl_s \
  'stream of text_completion chunks' 'dj.every(c => c.object === "text_completion" && /^cmpl-/.test(c.id)) && ev[ev.length - 1].data === "[DONE]"' \
  'one chunk per word' 'dj.slice(0, -1).length === 11 && dj.slice(0, -1).map(c => c.choices[0].text).join("") === DEFAULT_TEXT' \
  'finish chunk, no usage' 'dj[dj.length - 1].choices[0].finish_reason === "stop" && dj.every(c => !("usage" in c))'
post cmpl_su /v1/completions '{"model":"gpt-3.5-turbo-instruct","prompt":["Say this is a test"],"stream":true,"stream_options":{"include_usage":true}}'
check cmpl_su 'usage chunk with include_usage' 'dj[dj.length - 1].choices.length === 0 && dj[dj.length - 1].usage.prompt_tokens === 5 && dj[dj.length - 1].usage.completion_tokens === 11 && ev[ev.length - 1].data === "[DONE]"'

# ---------------------------------------------------------------- Responses API
post resp /v1/responses '{"model":"gpt-4.1","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Hello there, mock!"}]}]}'
check resp \
  'response object' 's === 200 && b.object === "response" && /^resp_/.test(b.id) && b.status === "completed" && b.model === "gpt-4.1" && b.instructions === "Be brief."' \
  'output message' 'b.output.length === 1 && b.output[0].type === "message" && /^msg_/.test(b.output[0].id) && b.output[0].role === "assistant" && b.output[0].content[0].type === "output_text" && b.output[0].content[0].text === DEFAULT_TEXT' \
  'usage (9+18=27 chars -> 7)' 'b.usage.input_tokens === 7 && b.usage.output_tokens === 11 && b.usage.total_tokens === 18 && b.usage.input_tokens_details.cached_tokens === 0 && b.usage.output_tokens_details.reasoning_tokens === 0'
post resp_s /v1/responses '{"model":"gpt-4.1","input":"Hello there, mock!","stream":true}'
check resp_s \
  'every event has event: line matching data.type' 'ev.length > 0 && ev.every(e => e.event && e.json && e.json.type === e.event)' \
  'sequence numbers 0..n-1' 'ev.every((e, i) => e.json.sequence_number === i)' \
  'event order' 'JSON.stringify(ev.map(e => e.event).filter((x, i, a) => x !== a[i - 1])) === JSON.stringify(["response.created","response.in_progress","response.output_item.added","response.content_part.added","response.output_text.delta","response.output_text.done","response.content_part.done","response.output_item.done","response.completed"])' \
  'one delta per word' 'ev.filter(e => e.event === "response.output_text.delta").length === 11 && ev.filter(e => e.event === "response.output_text.delta").map(e => e.json.delta).join("") === DEFAULT_TEXT' \
  'text.done carries full text' 'ev.find(e => e.event === "response.output_text.done").json.text === DEFAULT_TEXT' \
  'created is in_progress' 'ev[0].json.response.status === "in_progress" && ev[0].json.response.object === "response"' \
  'completed carries usage' 'ev[ev.length - 1].json.response.status === "completed" && ev[ev.length - 1].json.response.usage.input_tokens === 5 && ev[ev.length - 1].json.response.usage.output_tokens === 11 && ev[ev.length - 1].json.response.usage.total_tokens === 16' \
  'no [DONE] in Responses API' '!t.includes("[DONE]")'

# ---------------------------------------------------------------- embeddings
post emb /v1/embeddings '{"model":"text-embedding-3-small","input":["hello world","second input text","x"]}'
check emb \
  'list of embeddings' 's === 200 && b.object === "list" && b.model === "text-embedding-3-small" && b.data.length === 3 && b.data.every((d, i) => d.object === "embedding" && d.index === i && d.embedding.length === 8 && d.embedding.every(x => typeof x === "number"))' \
  'usage (11+17+1=29 chars -> 8)' 'b.usage.prompt_tokens === 8 && b.usage.total_tokens === 8'
cp "$TMP/emb.body" "$TMP/emb_first.json"
post emb /v1/embeddings '{"model":"text-embedding-3-small","input":["hello world","second input text","x"]}'
check emb 'deterministic' 'JSON.stringify(b.data) === JSON.stringify(JSON.parse(require("fs").readFileSync(process.argv[2] + "/emb_first.json", "utf8")).data)'
post emb1 /openai/v1/embeddings '{"model":"text-embedding-3-small","input":"hello world"}'
check emb1 'single string input' 'b.data.length === 1 && b.usage.prompt_tokens === 3'

# ---------------------------------------------------------------- Anthropic
post msg /v1/messages "$ANTH" -H 'anthropic-version: 2023-06-01'
check msg \
  'message JSON' 's === 200 && b.type === "message" && /^msg_/.test(b.id) && b.role === "assistant" && b.model === "claude-sonnet-4-20250514"' \
  'content' 'b.content.length === 1 && b.content[0].type === "text" && b.content[0].text === DEFAULT_TEXT' \
  'stop_reason' 'b.stop_reason === "end_turn" && b.stop_sequence === null' \
  'usage' 'b.usage.input_tokens === 8 && b.usage.output_tokens === 11 && b.usage.cache_creation_input_tokens === 0 && b.usage.cache_read_input_tokens === 0' \
  'request-id header' '!!h["request-id"]'
post msg_s /v1/messages "$ANTH_STREAM"
check msg_s \
  'SSE with event: lines matching data.type' 's === 200 && /^text\/event-stream/.test(h["content-type"]) && ev.every(e => e.event && e.json && e.json.type === e.event)' \
  'event order' 'JSON.stringify(ev.map(e => e.event).filter((x, i, a) => x !== a[i - 1])) === JSON.stringify(["message_start","content_block_start","ping","content_block_delta","content_block_stop","message_delta","message_stop"])' \
  'message_start usage' 'ev[0].json.message.usage.input_tokens === 8 && ev[0].json.message.usage.output_tokens === 1 && ev[0].json.message.type === "message" && ev[0].json.message.content.length === 0' \
  'text_delta per word' 'ev.filter(e => e.event === "content_block_delta").length === 11 && ev.filter(e => e.event === "content_block_delta").every(e => e.json.delta.type === "text_delta" && e.json.index === 0) && ev.filter(e => e.event === "content_block_delta").map(e => e.json.delta.text).join("") === DEFAULT_TEXT' \
  'message_delta' 'ev.find(e => e.event === "message_delta").json.delta.stop_reason === "end_turn" && ev.find(e => e.event === "message_delta").json.usage.output_tokens === 11' \
  'no [DONE]' '!t.includes("[DONE]")'
post msg_max /anthropic/v1/messages '{"model":"c","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}'
check msg_max 'max_tokens -> stop_reason max_tokens' 'b.stop_reason === "max_tokens" && b.content[0].text === "This is" && b.usage.output_tokens === 2'
post msg_ct /v1/messages/count_tokens "$ANTH"
check msg_ct 'count_tokens' 's === 200 && b.input_tokens === 8'

# ---------------------------------------------------------------- tool calls (x-mock-tool-call / x-mock-tool-args)
# get_weather (11) + {"city":"Paris","unit":"celsius"} (33) = 44 code points -> 11 completion tokens
TARGS='{"city": "Paris", "unit": "celsius"}'
TJ='JSON.stringify({city: "Paris", unit: "celsius"})'
post tc_chat /v1/chat/completions "$CHAT" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS"
check tc_chat \
  'message with tool_calls, content null' 's === 200 && b.choices[0].message.role === "assistant" && b.choices[0].message.content === null && b.choices[0].message.refusal === null && Array.isArray(b.choices[0].message.annotations) && b.choices[0].message.tool_calls.length === 1' \
  'tool call shape' "const c = b.choices[0].message.tool_calls[0]; /^call_[A-Za-z0-9]{24}\$/.test(c.id) && c.type === 'function' && c.function.name === 'get_weather' && c.function.arguments === $TJ" \
  'finish_reason tool_calls' 'b.choices[0].finish_reason === "tool_calls"' \
  'usage (8 prompt, ceil(44/4) = 11 completion)' 'b.usage.prompt_tokens === 8 && b.usage.completion_tokens === 11 && b.usage.total_tokens === 19'
cp "$TMP/tc_chat.body" "$TMP/tc_chat_first.json"
post tc_chat /v1/chat/completions "$CHAT" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS"
check tc_chat 'deterministic tool call id' 'b.choices[0].message.tool_calls[0].id === JSON.parse(require("fs").readFileSync(process.argv[2] + "/tc_chat_first.json", "utf8")).choices[0].message.tool_calls[0].id'
post tc_chat_t /v1/chat/completions "$CHAT" -H 'x-mock-tool-call: lookup' -H 'x-mock-text: Checking now'
check tc_chat_t 'x-mock-text goes to content, default args {}' 'b.choices[0].message.content === "Checking now" && b.choices[0].message.tool_calls[0].function.arguments === "{}" && b.usage.completion_tokens === 2 + 2'

post tc_chat_s /v1/chat/completions "$CHAT_STREAM_U" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS"
check tc_chat_s \
  'SSE, ends with [DONE]' 's === 200 && /^text\/event-stream/.test(h["content-type"]) && ev[ev.length - 1].data === "[DONE]"' \
  'role chunk first, content null' 'dj[0].choices[0].delta.role === "assistant" && dj[0].choices[0].delta.content === null && !("tool_calls" in dj[0].choices[0].delta)' \
  'then the tool call head chunk' "const tc = dj[1].choices[0].delta.tool_calls; tc.length === 1 && tc[0].index === 0 && tc[0].id === JSON.parse(require('fs').readFileSync(process.argv[2] + '/tc_chat_first.json', 'utf8')).choices[0].message.tool_calls[0].id && tc[0].type === 'function' && tc[0].function.name === 'get_weather' && tc[0].function.arguments === ''" \
  'then >= 3 argument pieces that join to the args JSON' "const p = dj.slice(2, -2); p.length >= 3 && p.every(c => c.choices[0].delta.tool_calls.length === 1 && c.choices[0].delta.tool_calls[0].index === 0 && !('id' in c.choices[0].delta.tool_calls[0]) && !('name' in c.choices[0].delta.tool_calls[0].function)) && p.map(c => c.choices[0].delta.tool_calls[0].function.arguments).join('') === $TJ" \
  'finish chunk tool_calls' 'Object.keys(dj[dj.length - 2].choices[0].delta).length === 0 && dj[dj.length - 2].choices[0].finish_reason === "tool_calls" && dj.slice(0, -2).every(c => c.choices[0].finish_reason === null)' \
  'usage chunk last' 'dj[dj.length - 1].choices.length === 0 && dj[dj.length - 1].usage.completion_tokens === 11 && dj[dj.length - 1].usage.total_tokens === 19 && dj.slice(0, -1).every(c => c.usage === null)'

# two tool calls through the body "mock" object (args as an object and as text)
TWO='"mock":{"tool_call":"get_weather","tool_args":{"city":"Paris","unit":"celsius"},"tool_call_2":"get_time","tool_args_2":"{\"tz\": \"Europe/Paris\"}"}'
post tc_two /v1/chat/completions '{"model":"m","messages":[{"role":"user","content":"hi"}],'"$TWO"'}'
check tc_two \
  'two tool calls' "const c = b.choices[0].message.tool_calls; c.length === 2 && c[0].function.name === 'get_weather' && c[0].function.arguments === $TJ && c[1].function.name === 'get_time' && c[1].function.arguments === '{\"tz\":\"Europe/Paris\"}' && c[0].id !== c[1].id && c.every(x => /^call_/.test(x.id) && x.type === 'function')" \
  'usage sums both calls (11 + ceil((8+21)/4) = 19)' 'b.finish_reason === undefined && b.choices[0].finish_reason === "tool_calls" && b.usage.completion_tokens === 19 && b.usage.total_tokens === b.usage.prompt_tokens + 19'
post tc_two_s /v1/chat/completions '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],'"$TWO"'}'
check tc_two_s \
  'one head chunk per index, in order' "const heads = dj.filter(c => c.choices[0].delta.tool_calls && c.choices[0].delta.tool_calls[0].id); heads.length === 2 && heads[0].choices[0].delta.tool_calls[0].index === 0 && heads[1].choices[0].delta.tool_calls[0].index === 1 && heads[1].choices[0].delta.tool_calls[0].function.name === 'get_time'" \
  'argument pieces join per index' "const args = k => dj.filter(c => c.choices[0].delta.tool_calls && c.choices[0].delta.tool_calls[0].index === k).map(c => c.choices[0].delta.tool_calls[0].function.arguments).join(''); args(0) === $TJ && args(1) === '{\"tz\":\"Europe/Paris\"}' && dj.filter(c => c.choices[0].delta.tool_calls && c.choices[0].delta.tool_calls[0].index === 1 && !c.choices[0].delta.tool_calls[0].id).length >= 3" \
  'finish tool_calls, no usage chunk without include_usage' 'dj[dj.length - 1].choices[0].finish_reason === "tool_calls" && dj.every(c => !("usage" in c)) && ev[ev.length - 1].data === "[DONE]"'
post tc_empty_s /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-tool-call: noop'
check tc_empty_s 'default {} args stream as 3 pieces "", "{", "}"' 'JSON.stringify(dj.filter(c => c.choices[0].delta.tool_calls && !c.choices[0].delta.tool_calls[0].id).map(c => c.choices[0].delta.tool_calls[0].function.arguments)) === JSON.stringify(["", "{", "}"])'

post tc_msg /v1/messages "$ANTH" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS"
check tc_msg \
  'tool_use block only' "s === 200 && b.type === 'message' && b.content.length === 1 && b.content[0].type === 'tool_use' && /^toolu_01[A-Za-z0-9]{22}\$/.test(b.content[0].id) && b.content[0].name === 'get_weather' && JSON.stringify(b.content[0].input) === $TJ" \
  'stop_reason tool_use' 'b.stop_reason === "tool_use" && b.stop_sequence === null' \
  'usage' 'b.usage.input_tokens === 8 && b.usage.output_tokens === 11'
post tc_msg_t /v1/messages "$ANTH" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS" -H 'x-mock-text: Let me check the weather.'
check tc_msg_t 'text block before tool_use' 'b.content.length === 2 && b.content[0].type === "text" && b.content[0].text === "Let me check the weather." && b.content[1].type === "tool_use" && b.content[1].id === JSON.parse(require("fs").readFileSync(process.argv[2] + "/tc_msg.body", "utf8")).content[0].id && b.stop_reason === "tool_use" && b.usage.output_tokens === 5 + 11'

post tc_msg_s /v1/messages "$ANTH_STREAM" -H 'x-mock-tool-call: get_weather' -H "x-mock-tool-args: $TARGS"
check tc_msg_s \
  'event: lines match data.type' 's === 200 && ev.every(e => e.event && e.json && e.json.type === e.event)' \
  'event order' 'JSON.stringify(ev.map(e => e.event).filter((x, i, a) => x !== a[i - 1])) === JSON.stringify(["message_start","content_block_start","ping","content_block_delta","content_block_stop","message_delta","message_stop"])' \
  'tool_use block start at index 0' "const s0 = ev.find(e => e.event === 'content_block_start').json; s0.index === 0 && s0.content_block.type === 'tool_use' && s0.content_block.id === JSON.parse(require('fs').readFileSync(process.argv[2] + '/tc_msg.body', 'utf8')).content[0].id && s0.content_block.name === 'get_weather' && JSON.stringify(s0.content_block.input) === '{}'" \
  '>= 3 input_json_delta pieces joining to the args' "const d = ev.filter(e => e.event === 'content_block_delta'); d.length >= 3 && d.every(e => e.json.index === 0 && e.json.delta.type === 'input_json_delta') && d.map(e => e.json.delta.partial_json).join('') === $TJ" \
  'stop at index 0' 'ev.filter(e => e.event === "content_block_stop").length === 1 && ev.find(e => e.event === "content_block_stop").json.index === 0' \
  'message_delta tool_use + usage' 'ev.find(e => e.event === "message_delta").json.delta.stop_reason === "tool_use" && ev.find(e => e.event === "message_delta").json.usage.output_tokens === 11 && ev[0].json.message.usage.output_tokens === 1'
post tc_msg_s2 /v1/messages '{"model":"c","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}],'"$TWO"'}' -H 'x-mock-text: Two tools.'
check tc_msg_s2 \
  'blocks: text 0, tool_use 1, tool_use 2' "const st = ev.filter(e => e.event === 'content_block_start').map(e => e.json); st.length === 3 && st.map(x => x.index).join() === '0,1,2' && st[0].content_block.type === 'text' && st[1].content_block.name === 'get_weather' && st[2].content_block.name === 'get_time' && st[1].content_block.id !== st[2].content_block.id" \
  'each block: start, deltas, stop with its own index' "let cur = -1, okk = true; for (const e of ev) { if (e.event === 'content_block_start') { okk = okk && e.json.index === cur + 1; cur = e.json.index; } else if (e.event === 'content_block_delta' || e.event === 'content_block_stop') okk = okk && e.json.index === cur; } okk && ev.filter(e => e.event === 'content_block_stop').map(e => e.json.index).join() === '0,1,2'" \
  'one ping, after the first block start' 'ev.filter(e => e.event === "ping").length === 1 && ev[2].event === "ping"' \
  'text and partial_json per block' "const j = k => ev.filter(e => e.event === 'content_block_delta' && e.json.index === k).map(e => e.json.delta.text !== undefined ? e.json.delta.text : e.json.delta.partial_json).join(''); j(0) === 'Two tools.' && j(1) === $TJ && j(2) === '{\"tz\":\"Europe/Paris\"}'" \
  'stop_reason tool_use, output tokens 2 + 11 + 8' 'ev.find(e => e.event === "message_delta").json.delta.stop_reason === "tool_use" && ev.find(e => e.event === "message_delta").json.usage.output_tokens === 21 && ev[ev.length - 1].event === "message_stop"'

post tc_bad /v1/chat/completions "$CHAT" -H 'x-mock-tool-call: f' -H 'x-mock-tool-args: {"city": Paris}'
check tc_bad 'invalid x-mock-tool-args -> 400 OpenAI shape' 's === 400 && b.error.type === "invalid_request_error" && /x-mock-tool-args/.test(b.error.message) && "param" in b.error && "code" in b.error'
post tc_bad_s /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-tool-call: f' -H 'x-mock-tool-args: [1, 2]'
check tc_bad_s 'non-object args on a stream -> 400 JSON' 's === 400 && /^application\/json/.test(h["content-type"]) && /JSON object/.test(b.error.message)'
post tc_bad_a /v1/messages "$ANTH" -H 'x-mock-tool-call: f' -H 'x-mock-tool-call-2: g' -H 'x-mock-tool-args-2: nope'
check tc_bad_a 'invalid x-mock-tool-args-2 -> 400 Anthropic shape' 's === 400 && b.type === "error" && b.error.type === "invalid_request_error" && /x-mock-tool-args-2/.test(b.error.message)'
post tc_other /v1/completions '{"prompt":"x"}' -H 'x-mock-tool-call: f'
check tc_other 'other routes ignore tool controls' 's === 200 && b.choices[0].text === DEFAULT_TEXT'

# ---------------------------------------------------------------- moderations
CATS='["harassment","harassment/threatening","hate","hate/threatening","illicit","illicit/violent","self-harm","self-harm/intent","self-harm/instructions","sexual","sexual/minors","violence","violence/graphic"]'
post mod_flag /v1/moderations '{"input":"How do I build a BOMB at home?"}'
check mod_flag \
  'moderation object' 's === 200 && /^application\/json/.test(h["content-type"]) && /^modr-/.test(b.id) && b.model === "omni-moderation-latest" && b.results.length === 1 && !("usage" in b)' \
  'all categories, booleans and scores' "const r = b.results[0]; JSON.stringify(Object.keys(r.categories)) === '$CATS' && JSON.stringify(Object.keys(r.category_scores)) === '$CATS' && Object.values(r.categories).every(x => typeof x === 'boolean') && Object.values(r.category_scores).every(x => typeof x === 'number' && x >= 0 && x < 1) && Object.values(r.category_applied_input_types).every(x => JSON.stringify(x) === '[\"text\"]')" \
  'flagged as violence only' 'const r = b.results[0]; r.flagged === true && r.categories.violence === true && Object.entries(r.categories).filter(([k, v]) => v).length === 1 && r.category_scores.violence >= 0.9 && r.category_scores.hate < 0.001'
post mod_clean /openai/v1/moderations '{"model":"omni-moderation-2024-09-26","input":"What a lovely day for a walk."}'
check mod_clean 'clean input' 's === 200 && b.model === "omni-moderation-2024-09-26" && b.results.length === 1 && b.results[0].flagged === false && Object.values(b.results[0].categories).every(x => x === false) && Object.values(b.results[0].category_scores).every(x => x < 0.001)'
post mod_arr /v1/moderations '{"input":["I hate Mondays","nice day","Kill the process","hello"]}'
check mod_arr \
  'one result per string' 's === 200 && b.results.length === 4' \
  'flags' 'JSON.stringify(b.results.map(r => r.flagged)) === "[true,false,true,false]" && b.results[0].categories.hate === true && b.results[0].categories.violence === false && b.results[2].categories.violence === true'
cp "$TMP/mod_arr.body" "$TMP/mod_arr_first.json"
post mod_arr /v1/moderations '{"input":["I hate Mondays","nice day","Kill the process","hello"]}'
check mod_arr 'deterministic scores' 'JSON.stringify(b.results) === JSON.stringify(JSON.parse(require("fs").readFileSync(process.argv[2] + "/mod_arr_first.json", "utf8")).results)'
post mod_parts /v1/moderations '{"input":[{"type":"text","text":"bomb threat"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"text","text":"fine"}]}'
check mod_parts 'array of parts' 's === 200 && b.results.length === 3 && JSON.stringify(b.results.map(r => r.flagged)) === "[true,false,false]" && JSON.stringify(b.results[1].category_applied_input_types.violence) === "[\"image\"]" && JSON.stringify(b.results[1].category_applied_input_types.hate) === "[]"'
post mod_words /v1/moderations '{"input":["buy cheap PILLS now","kill"]}' -H 'x-mock-flag-words: spam, pills:self-harm'
check mod_words 'x-mock-flag-words with WORD:CATEGORY replaces the default list' 'b.results[0].flagged && b.results[0].categories["self-harm"] && !b.results[0].categories.harassment && b.results[1].flagged === false'
post mod_words_b /v1/moderations '{"input":"you are a troll","mock":{"flag_words":"troll"}}'
check mod_words_b 'flag words via body, other words -> harassment' 'b.results[0].flagged && b.results[0].categories.harassment && Object.values(b.results[0].categories).filter(Boolean).length === 1'
post mod_words_e /v1/moderations '{"input":"kill"}' -H 'x-mock-flag-words;'
check mod_words_e 'empty flag words flag nothing' 's === 200 && b.results[0].flagged === false'
post mod_words_x /v1/moderations '{"input":"x"}' -H 'x-mock-flag-words: a:nonsense'
check mod_words_x 'unknown category -> 400' 's === 400 && b.error.type === "invalid_request_error"'
post mod_bad /v1/moderations '{"model":"omni-moderation-latest"}'
check mod_bad 'missing input -> 400' 's === 400 && b.error.type === "invalid_request_error"'
post mod_bad2 /v1/moderations '{"input":[{"type":"audio"}]}'
check mod_bad2 'bad part -> 400' 's === 400'
call mod_get "$BASE/v1/moderations"
check mod_get 'GET moderations -> 405' 's === 405 && h.allow === "POST"'
post mod_st /v1/moderations '{"input":"x"}' -H 'x-mock-status: 429'
check mod_st 'x-mock-status on moderations' 's === 429 && b.error.code === "rate_limit_exceeded" && h["retry-after"] === "1"'
post mod_ff1 /v1/moderations '{"input":"x","mock":{"fail_first":1,"key":"mod-ff"}}'
post mod_ff2 /v1/moderations '{"input":"x","mock":{"fail_first":1,"key":"mod-ff"}}'
check mod_ff1 'fail-first on moderations' 's === 503'
check mod_ff2 'then ok' 's === 200 && b.results.length === 1'
post mod_delay /v1/moderations '{"input":"x"}' -H 'x-mock-delay-ms: 300'
check mod_delay 'delay on moderations' 's === 200 && ttfb >= 0.3'
post mod_rst /v1/moderations '{"input":"x"}' -H 'x-mock-reset-after: 1'
check mod_rst 'reset-after on moderations' 'rc !== 0 && s === 200 && b === null'

# ---------------------------------------------------------------- malformed bodies
post bad_chat /v1/chat/completions '{"model": "x", "messages": [' 
check bad_chat 'malformed JSON -> 400 OpenAI shape' 's === 400 && b.error.type === "invalid_request_error" && typeof b.error.message === "string" && "param" in b.error && "code" in b.error'
post bad_msg /v1/messages 'not json'
check bad_msg 'malformed JSON -> 400 Anthropic shape' 's === 400 && b.type === "error" && b.error.type === "invalid_request_error" && typeof b.error.message === "string"'
printf '{"model":"chunked","messages":[{"role":"user","content":"Hello there, mock!"}]}' > "$TMP/chunked.json"
call chunked -X POST -H 'transfer-encoding: chunked' -H 'content-type: application/json' --data-binary @"$TMP/chunked.json" "$BASE/v1/chat/completions"
check chunked 'chunked request body accepted' 's === 200 && b.model === "chunked" && b.usage.prompt_tokens === 5'

# ---------------------------------------------------------------- x-mock-text / precedence
post text_h /v1/chat/completions "$CHAT" -H 'x-mock-text: Hello from header'
check text_h 'x-mock-text header' 'b.choices[0].message.content === "Hello from header" && b.usage.completion_tokens === 3'
post text_b /v1/messages '{"model":"c","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"text":"one two three four"}}'
check text_b 'mock.text in body' 'b.content[0].text === "one two three four" && b.usage.output_tokens === 4'
post text_b2 /v1/messages '{"model":"c","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"x-mock-text":"alpha beta"}}'
check text_b2 'mock["x-mock-text"] in body' 'b.content[0].text === "alpha beta"'
post text_p /v1/chat/completions '{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"text":"from body"}}' -H 'x-mock-text: from header'
check text_p 'header wins over body' 'b.choices[0].message.content === "from header"'
post text_s /v1/responses '{"model":"m","input":"hi","stream":true}' -H 'x-mock-text: héllo wörld ✓'
check text_s 'UTF-8 x-mock-text in stream' 'ev.filter(e => e.event === "response.output_text.delta").map(e => e.json.delta).join("") === "héllo wörld ✓"'

# ---------------------------------------------------------------- x-mock-no-usage
post nu_chat /v1/chat/completions "$CHAT" -H 'x-mock-no-usage: 1'
check nu_chat 'chat JSON without usage' 's === 200 && !("usage" in b)'
post nu_chat_s /v1/chat/completions "$CHAT_STREAM_U" -H 'x-mock-no-usage: 1'
check nu_chat_s 'chat stream without usage chunk' 'dj.every(c => !("usage" in c) && c.choices.length === 1) && ev[ev.length - 1].data === "[DONE]"'
post nu_cmpl /v1/completions '{"prompt":"x"}' -H 'x-mock-no-usage: 1'
check nu_cmpl 'completions without usage' '!("usage" in b)'
post nu_resp /v1/responses '{"input":"x","stream":true,"mock":{"no_usage":true}}'
check nu_resp 'responses stream without usage (body control)' '!("usage" in ev[ev.length - 1].json.response)'
post nu_resp_j /v1/responses '{"input":"x"}' -H 'x-mock-no-usage: 1'
check nu_resp_j 'responses JSON without usage' '!("usage" in b)'
post nu_emb /v1/embeddings '{"input":"x"}' -H 'x-mock-no-usage: 1'
check nu_emb 'embeddings without usage' '!("usage" in b) && b.data.length === 1'
post nu_msg /v1/messages "$ANTH" -H 'x-mock-no-usage: 1'
check nu_msg 'messages JSON without usage' '!("usage" in b)'
post nu_msg_s /v1/messages "$ANTH_STREAM" -H 'x-mock-no-usage: 1'
check nu_msg_s 'messages stream without usage' '!("usage" in ev[0].json.message) && !("usage" in ev.find(e => e.event === "message_delta").json)'

# ---------------------------------------------------------------- token detail controls
post tok /v1/chat/completions "$CHAT" -H 'x-mock-cached-tokens: 4' -H 'x-mock-reasoning-tokens: 5'
check tok 'cached/reasoning tokens' 'b.usage.prompt_tokens_details.cached_tokens === 4 && b.usage.completion_tokens_details.reasoning_tokens === 5 && b.usage.completion_tokens === 16 && b.usage.total_tokens === 24'
post tok_a /v1/messages "$ANTH" -H 'x-mock-cached-tokens: 4' -H 'x-mock-cache-creation-tokens: 6'
check tok_a 'anthropic cache tokens' 'b.usage.cache_read_input_tokens === 4 && b.usage.cache_creation_input_tokens === 6 && b.usage.input_tokens === 8'

# ---------------------------------------------------------------- x-mock-status
post st429 /v1/chat/completions "$CHAT" -H 'x-mock-status: 429'
check st429 '429 OpenAI' 's === 429 && b.error.code === "rate_limit_exceeded" && h["retry-after"] === "1" && h["x-ratelimit-remaining-requests"] === "0" && h["x-ratelimit-limit-requests"] && h["x-ratelimit-reset-requests"]'
post st429r /v1/chat/completions "$CHAT" -H 'x-mock-status: 429' -H 'x-mock-retry-after: 7'
check st429r '429 with x-mock-retry-after' 's === 429 && h["retry-after"] === "7"'
post st429a /v1/messages "$ANTH" -H 'x-mock-status: 429'
check st429a '429 Anthropic' 's === 429 && b.type === "error" && b.error.type === "rate_limit_error" && h["retry-after"] === "1" && h["anthropic-ratelimit-requests-remaining"] === "0"'
post st429b /v1/chat/completions '{"messages":[],"mock":{"status":429,"retry_after":3}}'
check st429b 'status + retry-after via body' 's === 429 && h["retry-after"] === "3"'
for code in 400 401 500 502 503; do
    post "st$code" /v1/chat/completions "$CHAT" -H "x-mock-status: $code"
    check "st$code" "$code OpenAI shape" "s === $code && b.error && typeof b.error.message === 'string' && typeof b.error.type === 'string' && 'code' in b.error && 'param' in b.error"
    post "st${code}a" /v1/messages "$ANTH" -H "x-mock-status: $code"
    check "st${code}a" "$code Anthropic shape" "s === $code && b.type === 'error' && typeof b.error.type === 'string' && typeof b.error.message === 'string'"
done
check st500 '500 type server_error' 'b.error.type === "server_error"'
check st401a '401 authentication_error' 'b.error.type === "authentication_error"'
check st503a '503 overloaded_error' 'b.error.type === "overloaded_error"'
post st_s /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-status: 503'
check st_s 'status on stream request is plain JSON error' 's === 503 && /^application\/json/.test(h["content-type"]) && b.error.type === "server_error"'
call st_models -H 'x-mock-status: 500' "$BASE/v1/models"
check st_models 'status on GET models' 's === 500'

# ---------------------------------------------------------------- x-mock-delay-ms / x-mock-chunk-delay-ms
post delay /v1/chat/completions "$CHAT" -H 'x-mock-delay-ms: 400'
check delay 'delay before headers' 's === 200 && ttfb >= 0.4'
post cdelay /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-chunk-delay-ms: 50'
check cdelay 'slow stream: 14 events, >= 13*50ms' 's === 200 && ev.length === 14 && total >= 0.65 && ttfb < 0.5'
post cdelay_a /v1/messages "$ANTH_STREAM" -H 'x-mock-chunk-delay-ms: 30'
check cdelay_a 'slow anthropic stream' 'ev.length === 17 && total >= 0.45'

# ---------------------------------------------------------------- x-mock-reset-after
post rst /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-reset-after: 3'
check rst 'stream reset after 3 events' 'rc !== 0 && s === 200 && ev.length === 3 && !t.includes("[DONE]")'
grep -qi 'reset' "$TMP/rst.err" && ok 'rst: curl saw a connection reset' || nok 'rst: curl saw a connection reset' "$(cat "$TMP/rst.err")"
post rst_a /v1/messages "$ANTH_STREAM" -H 'x-mock-reset-after: 5'
check rst_a 'anthropic stream reset after 5 events' 'rc !== 0 && ev.length === 5 && ev[4].event === "content_block_delta"'
post rst_r /v1/responses '{"input":"x","stream":true,"mock":{"reset_after":2}}'
check rst_r 'responses stream reset via body control' 'rc !== 0 && ev.length === 2'
post rst_j /v1/chat/completions "$CHAT" -H 'x-mock-reset-after: 1'
check rst_j 'JSON: headers + partial body, then reset' 'rc !== 0 && s === 200 && t.length > 0 && b === null && Number(h["content-length"]) > t.length'
post rst_0 /v1/chat/completions "$CHAT_STREAM" -H 'x-mock-reset-after: 0'
check rst_0 'reset-after 0: headers only' 'rc !== 0 && s === 200 && t.length === 0'
post rst_n /v1/chat/completions "$CHAT" -H 'x-mock-reset-after: -1'
check rst_n 'reset-after -1: reset before any byte' 'rc !== 0 && s === 0'

# client going away mid-stream / mid-delay must not upset the mock
curl -sS -N --max-time 0.3 -o /dev/null -X POST --data-binary "$CHAT_STREAM" -H 'x-mock-chunk-delay-ms: 100' "$BASE/v1/chat/completions" 2>/dev/null
curl -sS -N --max-time 0.2 -o /dev/null -X POST --data-binary "$ANTH" -H 'x-mock-delay-ms: 500' "$BASE/v1/messages" 2>/dev/null
sleep 0.6
call after_abort "$BASE/__mock/health"
check after_abort 'still healthy after client aborts' 's === 200'

# ---------------------------------------------------------------- x-mock-echo
printf '{"model": "x",\n  "messages":[{"role":"user","content":"h\\u00e9llo  wörld"}] ,"n":1}  \n' > "$TMP/echo.json"
SHA=$(sha256sum "$TMP/echo.json" 2>/dev/null | cut -d' ' -f1 || shasum -a 256 "$TMP/echo.json" | cut -d' ' -f1)
LEN=$(wc -c < "$TMP/echo.json" | tr -d ' ')
call echo -X POST -H 'x-mock-echo: 1' -H 'Content-Type: application/json' -H 'X-Custom-Thing: Abc' -H 'Authorization: Bearer sk-test' \
    --data-binary @"$TMP/echo.json" "$BASE/openai/v1/chat/completions?foo=bar"
check echo \
  'method/url/version' 's === 200 && b.method === "POST" && b.url === "/openai/v1/chat/completions?foo=bar" && b.http_version === "1.1"' \
  'headers lowercased' 'b.headers["x-custom-thing"] === "Abc" && b.headers.authorization === "Bearer sk-test" && b.headers["x-mock-echo"] === "1" && Object.keys(b.headers).every(k => k === k.toLowerCase())' \
  'body byte-identical' "b.body === require('fs').readFileSync(process.argv[2] + '/echo.json', 'utf8') && Buffer.from(b.body_base64, 'base64').equals(require('fs').readFileSync(process.argv[2] + '/echo.json'))" \
  'length and sha256' "b.body_length === $LEN && b.body_sha256 === '$SHA'"
call echo_c -X POST -H 'x-mock-echo: 1' -H 'transfer-encoding: chunked' --data-binary @"$TMP/echo.json" "$BASE/v1/messages"
check echo_c 'echo of chunked body' "b.headers['transfer-encoding'] === 'chunked' && b.body_sha256 === '$SHA' && !('content-length' in b.headers)"
post echo_bad /v1/chat/completions 'this is {not json' -H 'x-mock-echo: true'
check echo_bad 'echo works for non-JSON bodies' 's === 200 && b.body === "this is {not json"'
call echo_get -H 'x-mock-echo: 1' "$BASE/anything/at/all"
check echo_get 'echo on GET/unknown path' 's === 200 && b.method === "GET" && b.body === "" && b.body_length === 0'
post echo_b /v1/chat/completions '{"mock":{"echo":1},"a":1}'
check echo_b 'echo via body control' 'b.body === "{\"mock\":{\"echo\":1},\"a\":1}"'

# ---------------------------------------------------------------- x-mock-fail-first / x-mock-key
for i in 1 2 3 4; do post "ff$i" /v1/chat/completions "$CHAT" -H 'x-mock-fail-first: 2' -H 'x-mock-key: ff-a'; done
check ff1 'fail-first #1 -> 503' 's === 503 && b.error.type === "server_error"'
check ff2 'fail-first #2 -> 503' 's === 503'
check ff3 'fail-first #3 -> 200' 's === 200 && b.object === "chat.completion"'
check ff4 'fail-first #4 -> 200' 's === 200'
post ffb1 /v1/messages "$ANTH" -H 'x-mock-fail-first: 1' -H 'x-mock-key: ff-b' -H 'x-mock-status: 429'
post ffc1 /v1/messages "$ANTH" -H 'x-mock-fail-first: 1' -H 'x-mock-key: ff-c'
post ffb2 /v1/messages "$ANTH" -H 'x-mock-fail-first: 1' -H 'x-mock-key: ff-b' -H 'x-mock-status: 429'
check ffb1 'fail-first with x-mock-status 429' 's === 429 && b.error.type === "rate_limit_error" && h["retry-after"] === "1"'
check ffc1 'independent key fails too' 's === 503 && b.error.type === "overloaded_error"'
check ffb2 'then succeeds' 's === 200 && b.type === "message"'
post ffd1 /v1/chat/completions '{"messages":[],"mock":{"fail_first":1,"key":"ff-d"}}'
post ffd2 /v1/chat/completions '{"messages":[],"mock":{"fail_first":1,"key":"ff-d"}}'
check ffd1 'fail-first via body' 's === 503'
check ffd2 'fail-first via body then ok' 's === 200'
call counters "$BASE/__mock/counters"
check counters 'GET /__mock/counters' 'b["ff-a"] === 4 && b["ff-b"] === 2'

# ---------------------------------------------------------------- request log
call clr -X DELETE "$BASE/__mock/requests"
check clr 'DELETE /__mock/requests' 's === 200'
call log0 "$BASE/__mock/requests"
check log0 'log empty after clear' 's === 200 && Array.isArray(b) && b.length === 0'
post logged /v2/chat/completions '{"model":"logme","messages":[]}' -H 'X-Trace: 42'
call log1 "$BASE/__mock/requests"
check log1 'request recorded' 'b.length === 1 && b[0].method === "POST" && b[0].url === "/v2/chat/completions" && b[0].headers["x-trace"] === "42" && b[0].body === "{\"model\":\"logme\",\"messages\":[]}"'
for i in $(seq 1 105); do echo "url = \"$BASE/v1/models?i=$i\""; done > "$TMP/many.cfg"
curl -sS -K "$TMP/many.cfg" > /dev/null
call log2 "$BASE/__mock/requests"
check log2 'keeps the last 100' 'b.length === 100 && b[99].url === "/v1/models?i=105" && b[0].url === "/v1/models?i=6"'

# ---------------------------------------------------------------- keep-alive
out=$(curl -sS -o /dev/null -o /dev/null -w '%{num_connects} %{http_version}\n' \
    -X POST -H 'content-type: application/json' --data-binary "$CHAT" "$BASE/v1/chat/completions" "$BASE/v1/chat/completions")
[ "$(echo "$out" | tr '\n' ' ')" = "1 1.1 0 1.1 " ] && ok 'HTTP/1.1 keep-alive reuses the connection' || nok 'HTTP/1.1 keep-alive reuses the connection' "$out"
out=$(curl -sS -N -o /dev/null -o /dev/null -w '%{num_connects}\n' \
    -X POST -H 'content-type: application/json' --data-binary "$CHAT_STREAM" "$BASE/v1/chat/completions" "$BASE/v1/chat/completions")
[ "$(echo "$out" | tr '\n' ' ')" = "1 0 " ] && ok 'keep-alive after a stream' || nok 'keep-alive after a stream' "$out"
call http10 --http1.0 -X POST -H 'content-type: application/json' --data-binary "$CHAT_STREAM" "$BASE/v1/chat/completions"
check http10 'HTTP/1.0 client gets a complete stream' 's === 200 && ev[ev.length - 1].data === "[DONE]"'

# ---------------------------------------------------------------- command line
if "$NODE" "$PROVIDER" --port 0 --host 0.0.0.0 > /dev/null 2>&1; then nok 'refuses non-loopback --host'; else ok 'refuses non-loopback --host'; fi

# clean exit on SIGTERM / SIGINT
for sig in TERM INT; do
    "$NODE" "$PROVIDER" --port 0 > "$TMP/sig.out" 2>&1 &
    p=$!
    for _ in $(seq 1 100); do grep -q '^listening' "$TMP/sig.out" && break; sleep 0.05; done
    kill -"$sig" "$p"; wait "$p"; rc=$?
    [ "$rc" -eq 0 ] && ok "exit 0 on SIG$sig" || nok "exit 0 on SIG$sig" "rc=$rc $(cat "$TMP/sig.out")"
done

# ---------------------------------------------------------------- MockProvider.pm
if command -v perl >/dev/null; then
    cd "$TMP" || exit 1   # any cwd must work
    out=$(perl -I"$ROOT/t/lib" -e '
        $| = 1;
        use MockProvider;
        print "port=$ENV{TEST_NGINX_MOCK_PORT} pid=", MockProvider::pid(), "\n";
        my @r = MockProvider::requests(); print "log=", scalar(@r), "\n";
        if (!fork) { exit 0 } wait;            # END in a forked child must not stop it
        print "alive=", (kill(0, MockProvider::pid()) ? 1 : 0), "\n";
        exit 7;' 2>&1); rc=$?
    mport=$(echo "$out" | sed -n 's/^port=\([0-9]*\) .*/\1/p'); mpid=$(echo "$out" | sed -n 's/.* pid=\([0-9]*\)$/\1/p')
    if [ "$rc" -eq 7 ] && [ -n "$mport" ] && echo "$out" | grep -q '^log=0$' && echo "$out" | grep -q '^alive=1$'; then
        ok 'MockProvider: use MockProvider starts it, keeps exit code'
    else
        nok 'MockProvider: use MockProvider starts it, keeps exit code' "rc=$rc $out"
    fi
    sleep 0.2
    if [ -n "$mpid" ] && ! alive "$mpid"; then ok 'MockProvider: stopped at exit'; else nok 'MockProvider: stopped at exit' "pid $mpid"; fi

    out=$(perl -I"$ROOT/t/lib" -e 'use MockProvider; print MockProvider::pid(), "\n"; die "boom\n"' 2>/dev/null)
    sleep 0.2
    if [ -n "$out" ] && ! alive "$out"; then ok 'MockProvider: stopped when the test dies'; else nok 'MockProvider: stopped when the test dies' "$out"; fi

    out=$(perl -I"$ROOT/t/lib" -e '$|=1; use MockProvider; print MockProvider::pid(), "\n"; kill TERM => $$; sleep 5' 2>/dev/null)
    sleep 0.2
    if [ -n "$out" ] && ! alive "$out"; then ok 'MockProvider: stopped on SIGTERM'; else nok 'MockProvider: stopped on SIGTERM' "$out"; fi

    out=$( (perl -I"$ROOT/t/lib" -e '$|=1; use MockProvider; print MockProvider::pid(), "\n"; kill KILL => $$; sleep 5') 2>/dev/null)
    for _ in $(seq 1 40); do alive "$out" || break; sleep 0.05; done
    if [ -n "$out" ] && ! alive "$out"; then ok 'MockProvider: mock exits when its parent is SIGKILLed'; else nok 'MockProvider: mock exits when its parent is SIGKILLed' "$out"; fi

    out=$(NODE=/nonexistent/node perl -I"$ROOT/t/lib" -e 'use MockProvider; print "not reached\n"' 2>&1)
    echo "$out" | grep -q '^1\.\.0 # SKIP' && ok 'MockProvider: skip_all without node' || nok 'MockProvider: skip_all without node' "$out"

    if command -v prove >/dev/null; then
        mkdir -p "$TMP/t"
        cat > "$TMP/t/mock.t" <<'EOF'
use strict; use warnings;
use FindBin; use lib $ENV{MP_LIB};
use MockProvider;
use Test::More tests => 2;
ok($ENV{TEST_NGINX_MOCK_PORT} =~ /^\d+$/, 'port set');
is(MockProvider::last_request(), undef, 'no requests yet');
EOF
        out=$(MP_LIB="$ROOT/t/lib" prove "$TMP/t" 2>&1) && ok 'MockProvider: works under prove' || nok 'MockProvider: works under prove' "$out"
    fi
    cd - >/dev/null || true
fi

# ---------------------------------------------------------------- summary
if [ -s "$TMP/mock.err" ]; then nok 'mock wrote nothing to stderr' "$(cat "$TMP/mock.err")"; fi
kill -0 "$MOCK_PID" 2>/dev/null && ok 'mock still running at the end' || nok 'mock still running at the end'
echo "selftest: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
