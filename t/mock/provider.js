#!/usr/bin/env node
// Mock LLM provider for the ngx_http_ai_gateway_module test suite and quickstart.
//
// Dependency-free (Node >= 18 core modules only, CommonJS). Speaks the OpenAI
// (chat/completions, completions, responses, embeddings, moderations, models)
// and Anthropic (messages, messages/count_tokens) HTTP APIs, JSON and SSE (text
// answers or tool calls), with per-request behaviour controlled by x-mock-*
// request headers or a "mock" object in the JSON body. See t/mock/README.md
// for the full list of controls.
//
//   node t/mock/provider.js [--port N] [--host 127.0.0.1] [--exit-with-parent] [--verbose]
//
// Prints exactly one line "listening PORT" on stdout once it accepts connections.
'use strict';

const http = require('http');
const crypto = require('crypto');

const DEFAULT_TEXT = 'This is a mock response from the AI gateway test provider.';
const DEFAULT_MODEL = 'mock-model';
const DEFAULT_PORT = 8081;
const MAX_LOG = 100;
const EMBEDDING_DIMS = 8;
const TOOL_PIECE = 10; // code points per streamed tool-argument piece (at least 3 pieces)
const MODERATION_MODEL = 'omni-moderation-latest';
const DEFAULT_FLAG_WORDS = 'kill,bomb,hate';
const MODELS = [
  ['gpt-4o', 'system'],
  ['gpt-4o-mini', 'system'],
  ['gpt-4.1', 'system'],
  ['gpt-4.1-mini', 'system'],
  ['o3-mini', 'system'],
  ['gpt-3.5-turbo-instruct', 'system'],
  ['text-embedding-3-small', 'system'],
  ['text-embedding-3-large', 'system'],
  ['mock-model', 'mock'],
];

// ---------------------------------------------------------------- arguments

function usage(code) {
  process.stderr.write(
    'usage: node provider.js [--port N] [--host ADDR] [--exit-with-parent] [--verbose]\n' +
    '  --port N            port to listen on, 0 = any free port (default ' + DEFAULT_PORT + ')\n' +
    '  --host ADDR         loopback address to bind (default 127.0.0.1)\n' +
    '  --exit-with-parent  exit when the parent process goes away\n' +
    '  --verbose           log one line per request to stderr\n');
  process.exit(code);
}

function parseArgs(argv) {
  const opt = { port: DEFAULT_PORT, host: '127.0.0.1', exitWithParent: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) { process.stderr.write(a + ' needs a value\n'); usage(2); }
      return argv[++i];
    };
    switch (a) {
      case '--port': case '-p': {
        const s = val();
        if (!/^\d+$/.test(s) || Number(s) > 65535) { process.stderr.write('bad port: ' + s + '\n'); usage(2); }
        opt.port = Number(s);
        break;
      }
      case '--host': case '-H': opt.host = val(); break;
      case '--exit-with-parent': opt.exitWithParent = true; break;
      case '--verbose': case '-v': opt.verbose = true; break;
      case '--help': case '-h': usage(0); break;
      default: process.stderr.write('unknown argument: ' + a + '\n'); usage(2);
    }
  }
  return opt;
}

function isLoopback(host) {
  return host === 'localhost' || host === '::1' || host === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Math.floor(Date.now() / 1000);

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function randId(prefix, n) {
  const bytes = crypto.randomBytes(n);
  let s = prefix;
  for (let i = 0; i < n; i++) s += ALNUM[bytes[i] % ALNUM.length];
  return s;
}
const randHex = (prefix, n) => prefix + crypto.randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n);

function chars(s) {
  // Unicode code points, not UTF-16 units and not bytes.
  let n = 0;
  for (const _ of s) n++; // eslint-disable-line no-unused-vars
  return n;
}

// Text of a prompt element: strings, arrays of parts, {text}, {content}.
function textOf(x) {
  if (x === null || x === undefined) return '';
  if (typeof x === 'string') return x;
  if (Array.isArray(x)) return x.map(textOf).join('');
  if (typeof x === 'object') {
    if (typeof x.text === 'string') return x.text;
    if (x.content !== undefined) return textOf(x.content);
  }
  return '';
}

// prompt tokens = ceil(code points of all prompt text / 4)
function promptTokens(body) {
  let n = 0;
  for (const k of ['system', 'instructions', 'messages', 'prompt', 'input']) n += chars(textOf(body[k]));
  return Math.ceil(n / 4);
}

const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

function toInt(v, dflt) {
  if (v === undefined || v === null || v === '') return dflt;
  const n = Number(String(v).trim());
  return Number.isFinite(n) ? Math.trunc(n) : dflt;
}
const truthy = (v) => v !== undefined && /^(1|true|yes|on)$/i.test(String(v).trim());

// Header values arrive as latin1; re-decode UTF-8 sent by curl/nginx.
function headerText(v) {
  const b = Buffer.from(v, 'latin1');
  const s = b.toString('utf8');
  return Buffer.from(s, 'utf8').equals(b) ? s : v;
}

// ---------------------------------------------------------------- controls

// Controls from the JSON body's "mock" object (keys "x-mock-text", "text",
// "delay_ms", ... all accepted), then x-mock-* headers, which win.
function getControls(req, body) {
  const c = {};
  if (isObj(body) && isObj(body.mock)) {
    for (const [k, v] of Object.entries(body.mock)) {
      if (v === null || v === undefined) continue;
      const name = k.toLowerCase().replace(/_/g, '-').replace(/^x-mock-/, '');
      c[name] = typeof v === 'object' ? JSON.stringify(v) : String(v);
    }
  }
  for (const [k, v] of Object.entries(req.headers)) {
    if (!k.startsWith('x-mock-')) continue;
    c[k.slice(7)] = headerText(Array.isArray(v) ? v.join(', ') : v);
  }
  return c;
}

// Split s (by code points) into max(3, ceil(length / TOOL_PIECE)) consecutive
// pieces of about equal size, so that pieces.join('') === s. Short strings get
// empty leading pieces ('{}' -> '', '{', '}').
function splitPieces(s) {
  const cps = Array.from(s);
  const n = Math.max(3, Math.ceil(cps.length / TOOL_PIECE));
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(cps.slice(Math.floor(i * cps.length / n), Math.floor((i + 1) * cps.length / n)).join(''));
  }
  return out;
}

// Deterministic id: prefix + n characters of ALNUM taken from a digest.
function hashId(prefix, digest, n) {
  let s = prefix;
  for (let i = 0; i < n; i++) s += ALNUM[digest[i % digest.length] % ALNUM.length];
  return s;
}

// Tool calls asked for by x-mock-tool-call / x-mock-tool-args and the second
// pair x-mock-tool-call-2 / x-mock-tool-args-2. Returns an array (empty when
// none is asked for) of {index, name, args, json, pieces, tokens, callId,
// toolUseId}, or {error} when an arguments text is not a JSON object.
function makeToolCalls(ctl) {
  const out = [];
  for (const sfx of ['', '-2']) {
    const name = ctl['tool-call' + sfx];
    if (name === undefined || name === '') continue;
    const text = ctl['tool-args' + sfx] !== undefined ? ctl['tool-args' + sfx] : '{}';
    let args;
    try { args = JSON.parse(text); } catch (e) {
      return { error: 'x-mock-tool-args' + sfx + ' is not valid JSON: ' + e.message };
    }
    if (!isObj(args)) return { error: 'x-mock-tool-args' + sfx + ' must be a JSON object' };
    const json = JSON.stringify(args);
    const index = out.length;
    const digest = crypto.createHash('sha256').update(name + '\u0000' + json + '\u0000' + index).digest();
    out.push({
      index, name, args, json,
      pieces: splitPieces(json),
      tokens: Math.ceil((chars(name) + chars(json)) / 4),
      callId: hashId('call_', digest, 24),
      toolUseId: hashId('toolu_01', digest, 22),
    });
  }
  return out;
}

// The answer text, split into stream pieces (one per word, leading whitespace
// attached, so that pieces.join('') === text), possibly cut to maxTokens words.
// With tool calls the text is x-mock-text or empty, max tokens do not apply,
// and the tool calls' tokens are added to the completion tokens.
function makeAnswer(ctl, maxTokens, tools) {
  tools = tools || [];
  if (tools.length) maxTokens = undefined;
  let text = ctl.text !== undefined ? ctl.text : (tools.length ? '' : DEFAULT_TEXT);
  let pieces = text.match(/\s*\S+/g) || [];
  const rest = text.slice(pieces.join('').length);
  if (rest) { if (pieces.length) pieces[pieces.length - 1] += rest; else pieces.push(rest); }
  let words = (text.match(/\S+/g) || []).length;
  let truncated = false;
  const max = toInt(maxTokens, -1);
  if (max >= 0 && words > max) {
    pieces = pieces.slice(0, max);
    text = pieces.join('');
    words = max;
    truncated = true;
  }
  const reasoning = Math.max(0, toInt(ctl['reasoning-tokens'], 0));
  const toolTokens = tools.reduce((n, t) => n + t.tokens, 0);
  return { text, pieces, words, truncated, reasoning, tools, completion: words + toolTokens + reasoning };
}

// ---------------------------------------------------------------- state

const requestLog = [];
const failCounters = new Map();

function record(req, raw) {
  requestLog.push({
    time: new Date().toISOString(),
    method: req.method,
    url: req.url,
    http_version: req.httpVersion,
    headers: lowerHeaders(req),
    body: raw.toString('utf8'),
  });
  while (requestLog.length > MAX_LOG) requestLog.shift();
}

function lowerHeaders(req) {
  const h = {};
  for (const [k, v] of Object.entries(req.headers)) h[k] = Array.isArray(v) ? v.join(', ') : v;
  return h;
}

// ---------------------------------------------------------------- output

function gone(res) {
  return res.destroyed || res.writableEnded || !res.socket || res.socket.destroyed;
}

function writeAsync(res, data) {
  return new Promise((resolve) => {
    if (gone(res)) return resolve(false);
    res.write(data, (err) => resolve(!err));
  });
}

function resetSocket(res) {
  const s = res.socket;
  if (!s || s.destroyed) return;
  if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy(); // TCP RST (Node >= 16.17 / 18.3)
  else s.destroy();
}

function baseHeaders(ctx, extra) {
  const h = {};
  if (ctx.flavor === 'anthropic') {
    h['request-id'] = randId('req_011C', 20);
  } else {
    h['x-request-id'] = randHex('req_', 32);
    h['openai-version'] = '2020-10-01';
    h['openai-processing-ms'] = String(ctx.processingMs || 1);
  }
  return Object.assign(h, extra || {});
}

function successRateHeaders(ctx) {
  if (ctx.flavor === 'anthropic') return {};
  return {
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-limit-tokens': '2000000',
    'x-ratelimit-remaining-requests': '9999',
    'x-ratelimit-remaining-tokens': '1999000',
    'x-ratelimit-reset-requests': '6ms',
    'x-ratelimit-reset-tokens': '30ms',
  };
}

// Send a JSON answer; honours reset-after (send headers + half the body, then RST).
async function sendJson(res, ctx, status, obj, headers, pretty) {
  const buf = Buffer.from((pretty ? JSON.stringify(obj, null, 2) : JSON.stringify(obj)) + (pretty ? '\n' : ''), 'utf8');
  const h = Object.assign({ 'content-type': 'application/json', 'content-length': String(buf.length) }, headers || {});
  if (ctx.resetAfter !== null) {
    if (ctx.resetAfter < 0) return resetSocket(res);
    res.writeHead(status, h);
    await writeAsync(res, buf.subarray(0, Math.floor(buf.length / 2)));
    await sleep(20);
    return resetSocket(res);
  }
  res.writeHead(status, h);
  res.end(buf);
}

// Server-sent events writer: chunk delay between events, reset-after N events.
class Sse {
  constructor(res, ctx) {
    this.res = res;
    this.ctx = ctx;
    this.count = 0;
    this.dead = false;
  }
  async start(headers) {
    this.res.writeHead(200, Object.assign({
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
    }, headers || {}));
    // keepalive comments before the first event (as providers send while a
    // reasoning model thinks)
    for (let i = 0; i < this.ctx.keepalive; i++) {
      if (!(await writeAsync(this.res, ': keepalive\n\n'))) { this.dead = true; return false; }
    }
    if (this.ctx.resetAfter !== null && this.ctx.resetAfter <= 0) {
      if (this.ctx.resetAfter === 0) { this.res.flushHeaders(); await sleep(20); }
      resetSocket(this.res);
      this.dead = true;
      return false;
    }
    return true;
  }
  // name === null: OpenAI chat/completions style (data only).
  async send(name, data) {
    if (this.dead) return false;
    if (this.count > 0 && this.ctx.chunkDelay > 0) await sleep(this.ctx.chunkDelay);
    if (this.ctx.stallAfter !== null && this.count === this.ctx.stallAfter) {
      // a provider that goes quiet mid-stream (the client gives up first)
      for (let t = 0; t < this.ctx.stallMs && !gone(this.res); t += 50) await sleep(50);
    }
    if (gone(this.res)) { this.dead = true; return false; }
    const payload = typeof data === 'string' ? data : JSON.stringify(data);
    const s = (name ? 'event: ' + name + '\n' : '') + 'data: ' + payload + '\n\n';
    if (!(await writeAsync(this.res, s))) { this.dead = true; return false; }
    this.count++;
    if (this.ctx.resetAfter !== null && this.count >= this.ctx.resetAfter) {
      await sleep(20);
      resetSocket(this.res);
      this.dead = true;
      return false;
    }
    return true;
  }
  end() {
    if (!this.dead && !gone(this.res)) this.res.end();
  }
}

// ---------------------------------------------------------------- errors

const OPENAI_ERRORS = {
  400: ['invalid_request_error', null, 'Invalid request (mock provider).'],
  401: ['invalid_request_error', 'invalid_api_key', 'Incorrect API key provided: sk-mock****. You can find your API key at https://platform.openai.com/account/api-keys.'],
  403: ['invalid_request_error', 'unsupported_country_region_territory', 'Country, region, or territory not supported'],
  404: ['invalid_request_error', 'model_not_found', 'The model does not exist or you do not have access to it.'],
  408: ['timeout', null, 'Request timed out.'],
  409: ['invalid_request_error', 'conflict', 'Conflict.'],
  413: ['invalid_request_error', 'request_too_large', 'Request too large.'],
  422: ['invalid_request_error', null, 'Unprocessable entity.'],
  429: ['requests', 'rate_limit_exceeded', 'Rate limit reached for requests (mock provider). Please try again later.'],
  500: ['server_error', null, 'The server had an error while processing your request. Sorry about that!'],
  502: ['server_error', null, 'Bad gateway.'],
  503: ['server_error', null, 'The server is overloaded or not ready yet.'],
  504: ['server_error', null, 'Gateway timeout.'],
};
const ANTHROPIC_ERRORS = {
  400: ['invalid_request_error', 'Invalid request (mock provider).'],
  401: ['authentication_error', 'invalid x-api-key'],
  403: ['permission_error', 'Your API key does not have permission to use the specified resource.'],
  404: ['not_found_error', 'Not found.'],
  413: ['request_too_large', 'Request exceeds the maximum allowed number of bytes.'],
  429: ['rate_limit_error', 'Number of requests has exceeded your rate limit (mock provider).'],
  500: ['api_error', 'Internal server error'],
  502: ['api_error', 'Bad gateway'],
  503: ['overloaded_error', 'Overloaded'],
  504: ['api_error', 'Gateway timeout'],
  529: ['overloaded_error', 'Overloaded'],
};

function errorBody(flavor, status, message, type, code) {
  if (flavor === 'anthropic') {
    const d = ANTHROPIC_ERRORS[status] || [status >= 500 ? 'api_error' : 'invalid_request_error', 'Error (mock provider).'];
    return {
      type: 'error',
      error: { type: type || d[0], message: message || d[1] },
      request_id: randId('req_011C', 20),
    };
  }
  const d = OPENAI_ERRORS[status] || [status >= 500 ? 'server_error' : 'invalid_request_error', null, 'Error (mock provider).'];
  return {
    error: {
      message: message || d[2],
      type: type || d[0],
      param: null,
      code: code !== undefined ? code : d[1],
    },
  };
}

async function sendError(res, ctx, status, opts) {
  opts = opts || {};
  const headers = baseHeaders(ctx);
  const retryAfter = ctx.ctl['retry-after'];
  if (status === 429 || retryAfter !== undefined) {
    const ra = Math.max(0, toInt(retryAfter, 1));
    headers['retry-after'] = String(ra);
    if (status === 429) {
      if (ctx.flavor === 'anthropic') {
        const reset = new Date(Date.now() + ra * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
        Object.assign(headers, {
          'anthropic-ratelimit-requests-limit': '50',
          'anthropic-ratelimit-requests-remaining': '0',
          'anthropic-ratelimit-requests-reset': reset,
          'anthropic-ratelimit-tokens-limit': '40000',
          'anthropic-ratelimit-tokens-remaining': '0',
          'anthropic-ratelimit-tokens-reset': reset,
        });
      } else {
        Object.assign(headers, {
          'x-ratelimit-limit-requests': '10000',
          'x-ratelimit-limit-tokens': '2000000',
          'x-ratelimit-remaining-requests': '0',
          'x-ratelimit-remaining-tokens': '0',
          'x-ratelimit-reset-requests': ra + 's',
          'x-ratelimit-reset-tokens': ra + 's',
        });
      }
    }
  }
  if (opts.headers) Object.assign(headers, opts.headers);
  const body = errorBody(ctx.flavor, status, opts.message, opts.type, opts.code);
  return sendJson(res, ctx, status, body, headers, ctx.flavor !== 'anthropic');
}

// ---------------------------------------------------------------- usage shapes

function chatUsage(p, a, ctl) {
  return {
    prompt_tokens: p,
    completion_tokens: a.completion,
    total_tokens: p + a.completion,
    prompt_tokens_details: { cached_tokens: Math.max(0, toInt(ctl['cached-tokens'], 0)), audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: a.reasoning,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function responsesUsage(p, a, ctl) {
  return {
    input_tokens: p,
    input_tokens_details: { cached_tokens: Math.max(0, toInt(ctl['cached-tokens'], 0)) },
    output_tokens: a.completion,
    output_tokens_details: { reasoning_tokens: a.reasoning },
    total_tokens: p + a.completion,
  };
}

function anthropicUsage(p, a, ctl, outputTokens) {
  return {
    input_tokens: p,
    cache_creation_input_tokens: Math.max(0, toInt(ctl['cache-creation-tokens'], 0)),
    cache_read_input_tokens: Math.max(0, toInt(ctl['cached-tokens'], 0)),
    output_tokens: outputTokens,
  };
}

// ---------------------------------------------------------------- handlers

const modelOf = (body) => (typeof body.model === 'string' && body.model) ? body.model : DEFAULT_MODEL;
const wantsUsageChunk = (body) => isObj(body.stream_options) && body.stream_options.include_usage === true;

async function handleChat(req, res, ctx, body) {
  const ctl = ctx.ctl;
  const model = modelOf(body);
  const tools = makeToolCalls(ctl);
  if (tools.error) return sendError(res, ctx, 400, { message: tools.error });
  const a = makeAnswer(ctl, body.max_completion_tokens !== undefined ? body.max_completion_tokens : body.max_tokens, tools);
  const p = promptTokens(body);
  const id = randId('chatcmpl-', 29);
  const created = now();
  const fp = 'fp_mock0000';
  const finish = tools.length ? 'tool_calls' : a.truncated ? 'length' : 'stop';
  const usage = ctx.noUsage ? undefined : chatUsage(p, a, ctl);

  if (body.stream !== true) {
    const message = !tools.length
      ? { role: 'assistant', content: a.text, refusal: null, annotations: [] }
      : {
        role: 'assistant',
        content: a.text !== '' ? a.text : null,
        tool_calls: tools.map((t) => ({ id: t.callId, type: 'function', function: { name: t.name, arguments: t.json } })),
        refusal: null,
        annotations: [],
      };
    const o = {
      id, object: 'chat.completion', created, model,
      choices: [{
        index: 0,
        message,
        logprobs: null,
        finish_reason: finish,
      }],
      usage,
      service_tier: 'default',
      system_fingerprint: fp,
    };
    if (!usage) delete o.usage;
    return sendJson(res, ctx, 200, o, baseHeaders(ctx, successRateHeaders(ctx)), true);
  }

  const includeUsage = wantsUsageChunk(body) && !ctx.noUsage;
  const chunk = (delta, finishReason) => {
    const c = {
      id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: fp,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    };
    if (includeUsage) c.usage = null;
    return c;
  };
  const sse = new Sse(res, ctx);
  if (!(await sse.start(baseHeaders(ctx, successRateHeaders(ctx))))) return;
  const roleContent = tools.length && a.text === '' ? null : '';
  if (!(await sse.send(null, chunk({ role: 'assistant', content: roleContent, refusal: null }, null)))) return;
  for (const piece of a.pieces) if (!(await sse.send(null, chunk({ content: piece }, null)))) return;
  for (const t of tools) {
    const head = { index: t.index, id: t.callId, type: 'function', function: { name: t.name, arguments: '' } };
    if (!(await sse.send(null, chunk({ tool_calls: [head] }, null)))) return;
    for (const piece of t.pieces) {
      if (!(await sse.send(null, chunk({ tool_calls: [{ index: t.index, function: { arguments: piece } }] }, null)))) return;
    }
  }
  if (!(await sse.send(null, chunk({}, finish)))) return;
  if (includeUsage) {
    const u = { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: fp, choices: [], usage };
    if (!(await sse.send(null, u))) return;
  }
  if (!(await sse.send(null, '[DONE]'))) return;
  sse.end();
}

async function handleCompletions(req, res, ctx, body) {
  const ctl = ctx.ctl;
  const model = modelOf(body);
  const a = makeAnswer(ctl, body.max_tokens);
  const p = promptTokens(body);
  const id = randId('cmpl-', 29);
  const created = now();
  const finish = a.truncated ? 'length' : 'stop';
  const usage = ctx.noUsage ? undefined
    : { prompt_tokens: p, completion_tokens: a.completion, total_tokens: p + a.completion };

  if (body.stream !== true) {
    const o = {
      id, object: 'text_completion', created, model,
      choices: [{ text: a.text, index: 0, logprobs: null, finish_reason: finish }],
      usage,
    };
    if (!usage) delete o.usage;
    return sendJson(res, ctx, 200, o, baseHeaders(ctx, successRateHeaders(ctx)), true);
  }

  const includeUsage = wantsUsageChunk(body) && !ctx.noUsage;
  const chunk = (text, finishReason) => {
    const c = {
      id, object: 'text_completion', created,
      choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason }],
      model, system_fingerprint: null,
    };
    if (includeUsage) c.usage = null;
    return c;
  };
  const sse = new Sse(res, ctx);
  if (!(await sse.start(baseHeaders(ctx, successRateHeaders(ctx))))) return;
  for (const piece of a.pieces) if (!(await sse.send(null, chunk(piece, null)))) return;
  if (!(await sse.send(null, chunk('', finish)))) return;
  if (includeUsage) {
    const u = { id, object: 'text_completion', created, choices: [], model, system_fingerprint: null, usage };
    if (!(await sse.send(null, u))) return;
  }
  if (!(await sse.send(null, '[DONE]'))) return;
  sse.end();
}

async function handleResponses(req, res, ctx, body) {
  const ctl = ctx.ctl;
  const model = modelOf(body);
  const a = makeAnswer(ctl, body.max_output_tokens);
  const p = promptTokens(body);
  const id = randHex('resp_', 48);
  const msgId = randHex('msg_', 48);
  const created = now();
  const status = a.truncated ? 'incomplete' : 'completed';
  const usage = ctx.noUsage ? undefined : responsesUsage(p, a, ctl);

  const part = (text) => ({ type: 'output_text', annotations: [], logprobs: [], text });
  const item = (st, content) => ({ id: msgId, type: 'message', status: st, content, role: 'assistant' });
  const response = (st, output, u) => {
    const r = {
      id, object: 'response', created_at: created, status, background: false, error: null,
      incomplete_details: st === 'incomplete' ? { reason: 'max_output_tokens' } : null,
      instructions: body.instructions !== undefined ? body.instructions : null,
      max_output_tokens: body.max_output_tokens !== undefined ? body.max_output_tokens : null,
      model, output, parallel_tool_calls: true,
      previous_response_id: body.previous_response_id !== undefined ? body.previous_response_id : null,
      reasoning: { effort: null, summary: null },
      service_tier: 'default',
      store: body.store !== undefined ? body.store : true,
      temperature: body.temperature !== undefined ? body.temperature : 1.0,
      text: { format: { type: 'text' } },
      tool_choice: 'auto', tools: [],
      top_p: body.top_p !== undefined ? body.top_p : 1.0,
      truncation: 'disabled',
      usage: u,
      user: null,
      metadata: isObj(body.metadata) ? body.metadata : {},
    };
    r.status = st;
    if (u === undefined) delete r.usage;
    return r;
  };

  if (body.stream !== true) {
    const o = response(status, [item(status, [part(a.text)])], usage);
    return sendJson(res, ctx, 200, o, baseHeaders(ctx, successRateHeaders(ctx)), true);
  }

  let seq = 0;
  const sse = new Sse(res, ctx);
  const ev = (type, fields) => sse.send(type, Object.assign({ type, sequence_number: seq++ }, fields));
  const ids = { item_id: msgId, output_index: 0, content_index: 0 };
  if (!(await sse.start(baseHeaders(ctx, successRateHeaders(ctx))))) return;
  if (!(await ev('response.created', { response: response('in_progress', [], null) }))) return;
  if (!(await ev('response.in_progress', { response: response('in_progress', [], null) }))) return;
  if (!(await ev('response.output_item.added', { output_index: 0, item: item('in_progress', []) }))) return;
  if (!(await ev('response.content_part.added', Object.assign({}, ids, { part: part('') })))) return;
  for (const piece of a.pieces) {
    if (!(await ev('response.output_text.delta', Object.assign({}, ids, { delta: piece, logprobs: [] })))) return;
  }
  if (!(await ev('response.output_text.done', Object.assign({}, ids, { text: a.text, logprobs: [] })))) return;
  if (!(await ev('response.content_part.done', Object.assign({}, ids, { part: part(a.text) })))) return;
  if (!(await ev('response.output_item.done', { output_index: 0, item: item(status, [part(a.text)]) }))) return;
  const final = a.truncated ? 'response.incomplete' : 'response.completed';
  if (!(await ev(final, { response: response(status, [item(status, [part(a.text)])], usage) }))) return;
  sse.end();
}

function embeddingVector(key, dims) {
  const out = [];
  for (let block = 0; out.length < dims; block++) {
    const h = crypto.createHash('sha256').update(key + '\u0000' + block).digest();
    for (let i = 0; i + 4 <= h.length && out.length < dims; i += 4) out.push(h.readUInt32BE(i) / 0xffffffff * 2 - 1);
  }
  const norm = Math.sqrt(out.reduce((s, x) => s + x * x, 0)) || 1;
  return out.map((x) => Math.round((x / norm) * 1e8) / 1e8);
}

async function handleEmbeddings(req, res, ctx, body) {
  const model = modelOf(body);
  const input = body.input;
  let items;
  if (typeof input === 'string') items = [input];
  else if (Array.isArray(input) && input.length && input.every((x) => typeof x === 'number')) items = [input];
  else if (Array.isArray(input) && input.length) items = input;
  else {
    return sendError(res, ctx, 400, { message: "'input' is a required property and must be a non-empty string or array." });
  }
  const dims = Math.min(4096, Math.max(1, toInt(body.dimensions, EMBEDDING_DIMS)));
  let nchars = 0;
  let ntok = 0;
  const data = items.map((x, index) => {
    let key;
    if (typeof x === 'string') { nchars += chars(x); key = 's:' + x; }
    else if (Array.isArray(x)) { ntok += x.length; key = 't:' + JSON.stringify(x); }
    else { key = 'j:' + JSON.stringify(x); }
    let embedding = embeddingVector(key, dims);
    if (body.encoding_format === 'base64') {
      const buf = Buffer.alloc(4 * dims);
      embedding.forEach((f, i) => buf.writeFloatLE(f, 4 * i));
      embedding = buf.toString('base64');
    }
    return { object: 'embedding', index, embedding };
  });
  const p = Math.ceil(nchars / 4) + ntok;
  const o = { object: 'list', data, model, usage: { prompt_tokens: p, total_tokens: p } };
  if (ctx.noUsage) delete o.usage;
  return sendJson(res, ctx, 200, o, baseHeaders(ctx, successRateHeaders(ctx)), true);
}

const MODERATION_CATEGORIES = [
  'harassment', 'harassment/threatening', 'hate', 'hate/threatening', 'illicit', 'illicit/violent',
  'self-harm', 'self-harm/intent', 'self-harm/instructions', 'sexual', 'sexual/minors',
  'violence', 'violence/graphic',
];
// categories omni-moderation also applies to images
const MODERATION_IMAGE = new Set(['self-harm', 'self-harm/intent', 'self-harm/instructions', 'sexual', 'violence', 'violence/graphic']);

// x-mock-flag-words: "w1,w2,w3:category" (or a JSON array of such strings in
// the body). A word without ":category" maps to violence (kill, bomb), hate
// (hate) or harassment (anything else). Returns [[word, category], ...] or {error}.
function flagWords(v) {
  if (v === undefined) v = DEFAULT_FLAG_WORDS;
  let list;
  if (/^\s*\[/.test(v)) {
    try { list = JSON.parse(v); } catch (e) { list = null; }
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) return { error: 'x-mock-flag-words: bad JSON array' };
  } else {
    list = v.split(',');
  }
  const out = [];
  for (const entry of list) {
    let word = entry;
    let cat;
    const i = entry.lastIndexOf(':');
    if (i >= 0) { word = entry.slice(0, i); cat = entry.slice(i + 1).trim().toLowerCase(); }
    word = word.trim().toLowerCase();
    if (!word) continue;
    if (cat === undefined || cat === '') cat = (word === 'kill' || word === 'bomb') ? 'violence' : word === 'hate' ? 'hate' : 'harassment';
    if (!MODERATION_CATEGORIES.includes(cat)) return { error: 'x-mock-flag-words: unknown category ' + JSON.stringify(cat) };
    out.push([word, cat]);
  }
  return out;
}

// deterministic score in [0, 1) for one input text and category
function unitHash(key) {
  return crypto.createHash('sha256').update(key).digest().readUInt32BE(0) / 0x100000000;
}

async function handleModerations(req, res, ctx, body) {
  const input = body.input;
  const bad = () => sendError(res, ctx, 400, {
    message: "'input' is a required property and must be a non-empty string, array of strings, or array of {type: \"text\"|\"image_url\"} objects.",
  });
  let items;
  if (typeof input === 'string') items = [{ text: input }];
  else if (Array.isArray(input) && input.length) {
    items = [];
    for (const x of input) {
      if (typeof x === 'string') items.push({ text: x });
      else if (isObj(x) && x.type === 'text' && typeof x.text === 'string') items.push({ text: x.text });
      else if (isObj(x) && x.type === 'image_url') items.push({ text: '', image: true });
      else return bad();
    }
  } else return bad();
  const words = flagWords(ctx.ctl['flag-words']);
  if (words.error) return sendError(res, ctx, 400, { message: words.error });

  const results = items.map((it) => {
    const lower = it.text.toLowerCase();
    const hit = new Set(words.filter(([w]) => lower.includes(w)).map(([, c]) => c));
    const categories = {};
    const scores = {};
    const applied = {};
    for (const c of MODERATION_CATEGORIES) {
      const u = unitHash((it.image ? 'i:' : 't:') + it.text + '\u0000' + c);
      categories[c] = hit.has(c);
      scores[c] = hit.has(c) ? Math.round((0.9 + 0.09 * u) * 1e8) / 1e8 : Math.round(u * 1e-3 * 1e8) / 1e8;
      applied[c] = it.image ? (MODERATION_IMAGE.has(c) ? ['image'] : []) : ['text'];
    }
    return { flagged: hit.size > 0, categories, category_scores: scores, category_applied_input_types: applied };
  });
  const model = (typeof body.model === 'string' && body.model) ? body.model : MODERATION_MODEL;
  const o = { id: randHex('modr-', 32), model, results };
  return sendJson(res, ctx, 200, o, baseHeaders(ctx, successRateHeaders(ctx)), true);
}

async function handleMessages(req, res, ctx, body) {
  const ctl = ctx.ctl;
  const model = modelOf(body);
  const tools = makeToolCalls(ctl);
  if (tools.error) return sendError(res, ctx, 400, { message: tools.error });
  const a = makeAnswer(ctl, body.max_tokens, tools);
  const p = promptTokens(body);
  const id = randId('msg_01', 22);
  const stop = tools.length ? 'tool_use' : a.truncated ? 'max_tokens' : 'end_turn';
  // with tool calls, a text block comes first only if x-mock-text gave some text
  const withText = !tools.length || a.text !== '';

  if (body.stream !== true) {
    const content = withText ? [{ type: 'text', text: a.text }] : [];
    for (const t of tools) content.push({ type: 'tool_use', id: t.toolUseId, name: t.name, input: t.args });
    const o = {
      id, type: 'message', role: 'assistant', model,
      content,
      stop_reason: stop, stop_sequence: null,
      usage: anthropicUsage(p, a, ctl, a.completion),
    };
    if (ctx.noUsage) delete o.usage;
    return sendJson(res, ctx, 200, o, baseHeaders(ctx), false);
  }

  const sse = new Sse(res, ctx);
  if (!(await sse.start(baseHeaders(ctx)))) return;
  const message = {
    id, type: 'message', role: 'assistant', model, content: [],
    stop_reason: null, stop_sequence: null,
    usage: anthropicUsage(p, a, ctl, 1),
  };
  if (ctx.noUsage) delete message.usage;
  if (!(await sse.send('message_start', { type: 'message_start', message }))) return;
  let index = 0;
  // a ping follows the first content_block_start, as with the real API
  const blockStart = async (block) => {
    if (!(await sse.send('content_block_start', { type: 'content_block_start', index, content_block: block }))) return false;
    return index > 0 || sse.send('ping', { type: 'ping' });
  };
  const blockDelta = (delta) => sse.send('content_block_delta', { type: 'content_block_delta', index, delta });
  const blockStop = async () => {
    if (!(await sse.send('content_block_stop', { type: 'content_block_stop', index }))) return false;
    index++;
    return true;
  };
  if (withText) {
    if (!(await blockStart({ type: 'text', text: '' }))) return;
    for (const piece of a.pieces) if (!(await blockDelta({ type: 'text_delta', text: piece }))) return;
    if (!(await blockStop())) return;
  }
  for (const t of tools) {
    if (!(await blockStart({ type: 'tool_use', id: t.toolUseId, name: t.name, input: {} }))) return;
    for (const piece of t.pieces) if (!(await blockDelta({ type: 'input_json_delta', partial_json: piece }))) return;
    if (!(await blockStop())) return;
  }
  const md = { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: a.completion } };
  if (ctx.noUsage) delete md.usage;
  if (!(await sse.send('message_delta', md))) return;
  if (!(await sse.send('message_stop', { type: 'message_stop' }))) return;
  sse.end();
}

async function handleCountTokens(req, res, ctx, body) {
  return sendJson(res, ctx, 200, { input_tokens: promptTokens(body) }, baseHeaders(ctx), false);
}

async function handleModels(req, res, ctx, id) {
  const created = 1715367049;
  if (id) {
    return sendJson(res, ctx, 200, { id, object: 'model', created, owned_by: 'system' }, baseHeaders(ctx), true);
  }
  const data = MODELS.map(([m, owner]) => ({ id: m, object: 'model', created, owned_by: owner }));
  return sendJson(res, ctx, 200, { object: 'list', data }, baseHeaders(ctx), true);
}

async function handleEcho(req, res, ctx, raw) {
  const o = {
    method: req.method,
    url: req.url,
    http_version: req.httpVersion,
    headers: lowerHeaders(req),
    raw_headers: (() => { const r = []; for (let i = 0; i < req.rawHeaders.length; i += 2) r.push([req.rawHeaders[i], req.rawHeaders[i + 1]]); return r; })(),
    body: raw.toString('utf8'),
    body_base64: raw.toString('base64'),
    body_length: raw.length,
    body_sha256: crypto.createHash('sha256').update(raw).digest('hex'),
  };
  return sendJson(res, ctx, 200, o, baseHeaders(ctx), false);
}

// ---------------------------------------------------------------- routing

// Route by URI suffix so any prefix works (/v1/, /openai/v1/, /serving-endpoints/x/ ...).
function route(method, path) {
  const p = path.length > 1 ? path.replace(/\/+$/, '') : path;
  const post = (name, flavor) => (method === 'POST' ? { name, flavor } : { name: 'method', flavor, allow: 'POST' });
  if (p.endsWith('/chat/completions')) return post('chat', 'openai');
  if (p.endsWith('/completions')) return post('completions', 'openai');
  if (p.endsWith('/responses')) return post('responses', 'openai');
  if (p.endsWith('/embeddings')) return post('embeddings', 'openai');
  if (p.endsWith('/moderations')) return post('moderations', 'openai');
  if (p.endsWith('/messages/count_tokens')) return post('count_tokens', 'anthropic');
  if (p.endsWith('/messages')) return post('messages', 'anthropic');
  let m;
  if (p.endsWith('/models')) return method === 'GET' ? { name: 'models', flavor: 'openai' } : { name: 'method', flavor: 'openai', allow: 'GET' };
  if ((m = /\/models\/([^/]+)$/.exec(p))) {
    return method === 'GET' ? { name: 'model', flavor: 'openai', id: decodeURIComponent(m[1]) } : { name: 'method', flavor: 'openai', allow: 'GET' };
  }
  return { name: 'notfound', flavor: null };
}

const HANDLERS = {
  chat: handleChat,
  completions: handleCompletions,
  responses: handleResponses,
  embeddings: handleEmbeddings,
  moderations: handleModerations,
  messages: handleMessages,
  count_tokens: handleCountTokens,
};

async function handleControl(req, res, path) {
  const send = (status, obj) => {
    const b = Buffer.from(JSON.stringify(obj));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(b.length) });
    res.end(b);
  };
  if (path === '/__mock/health' && req.method === 'GET') return send(200, { status: 'ok', pid: process.pid });
  if (path === '/__mock/requests' && req.method === 'GET') return send(200, requestLog);
  if (path === '/__mock/requests' && req.method === 'DELETE') { requestLog.length = 0; return send(200, { cleared: true }); }
  if (path === '/__mock/counters' && req.method === 'GET') return send(200, Object.fromEntries(failCounters));
  if (path === '/__mock/counters' && req.method === 'DELETE') { failCounters.clear(); return send(200, { cleared: true }); }
  return send(404, { error: { message: 'Unknown mock control endpoint: ' + req.method + ' ' + path, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
}

async function handle(req, res, raw, opt) {
  const t0 = Date.now();
  const path = req.url.split('?')[0];
  if (path.startsWith('/__mock/')) return handleControl(req, res, path);

  record(req, raw);

  let body;
  let parsed = false;
  if (raw.length) {
    try { body = JSON.parse(raw.toString('utf8')); parsed = true; } catch (e) { /* malformed */ }
  }
  const ctl = getControls(req, parsed ? body : undefined);
  const r = route(req.method, path);
  const flavor = r.flavor || (req.headers['anthropic-version'] ? 'anthropic' : 'openai');
  const ctx = {
    ctl,
    flavor,
    noUsage: truthy(ctl['no-usage']),
    chunkDelay: Math.max(0, toInt(ctl['chunk-delay-ms'], 0)),
    resetAfter: ctl['reset-after'] !== undefined ? toInt(ctl['reset-after'], null) : null,
    stallAfter: ctl['stall-after'] !== undefined ? toInt(ctl['stall-after'], null) : null,
    stallMs: Math.max(0, toInt(ctl['stall-ms'], 10000)),
    keepalive: Math.min(100, Math.max(0, toInt(ctl.keepalive, 0))),
  };

  if (opt.verbose) process.stderr.write(new Date().toISOString() + ' ' + req.method + ' ' + req.url + ' ' + JSON.stringify(ctl) + '\n');

  const delay = toInt(ctl['delay-ms'], 0);
  if (delay > 0) await sleep(delay);
  if (gone(res)) return;
  ctx.processingMs = Date.now() - t0 + 1;

  // error injection: x-mock-status, or x-mock-fail-first N (per x-mock-key)
  let status = toInt(ctl.status, 0);
  if (ctl['fail-first'] !== undefined) {
    const key = ctl.key !== undefined ? ctl.key : '';
    const seen = (failCounters.get(key) || 0) + 1;
    failCounters.set(key, seen);
    status = seen <= toInt(ctl['fail-first'], 0) ? (status >= 400 ? status : 503) : 0;
  }
  if (status >= 400 && status <= 599) return sendError(res, ctx, status);

  if (truthy(ctl.echo)) return handleEcho(req, res, ctx, raw);

  if (r.name === 'notfound') {
    return sendError(res, ctx, 404, ctx.flavor === 'anthropic'
      ? { type: 'not_found_error', message: 'Not found: ' + req.method + ' ' + path }
      : { message: 'Invalid URL (' + req.method + ' ' + path + ')', code: 'unknown_url' });
  }
  if (r.name === 'method') {
    return sendError(res, ctx, 405, {
      headers: { allow: r.allow },
      message: 'Method ' + req.method + ' not allowed on ' + path + ' (use ' + r.allow + ').',
      code: ctx.flavor === 'anthropic' ? undefined : 'method_not_allowed',
    });
  }
  if (r.name === 'models') return handleModels(req, res, ctx, null);
  if (r.name === 'model') return handleModels(req, res, ctx, r.id);

  if (!parsed || !isObj(body)) {
    return sendError(res, ctx, 400, ctx.flavor === 'anthropic'
      ? { message: raw.length ? 'There was an error parsing the body: invalid JSON' : 'Request body is empty; expected a JSON object' }
      : { message: 'We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)' });
  }
  return HANDLERS[r.name](req, res, ctx, body);
}

// ---------------------------------------------------------------- main

function main() {
  const opt = parseArgs(process.argv.slice(2));
  if (!isLoopback(opt.host)) {
    process.stderr.write('refusing to listen on non-loopback address ' + opt.host + '\n');
    process.exit(2);
  }
  const host = opt.host.replace(/^\[(.*)\]$/, '$1');

  const server = http.createServer({ requestTimeout: 0, headersTimeout: 120000, maxHeaderSize: 65536 }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => {});
    res.on('error', () => {});
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks), opt).catch((err) => {
        process.stderr.write('mock provider error: ' + (err && err.stack || err) + '\n');
        if (!res.headersSent && !gone(res)) {
          const b = JSON.stringify({ error: { message: 'mock provider internal error: ' + err, type: 'server_error', param: null, code: null } });
          res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
          res.end(b);
        } else if (!gone(res)) {
          res.destroy();
        }
      });
    });
  });
  // Keep idle upstream connections longer than nginx's default keepalive_timeout (60s)
  // so a pooled connection is never closed under nginx's feet.
  server.keepAliveTimeout = 120000;
  server.timeout = 0;
  server.on('clientError', (err, socket) => {
    if (socket.writable && !socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
  server.on('error', (err) => {
    process.stderr.write('mock provider: ' + err.message + '\n');
    process.exit(1);
  });

  const shutdown = () => {
    try { server.close(); } catch (e) { /* ignore */ }
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('SIGHUP', shutdown);
  process.stdout.on('error', () => {});

  if (opt.exitWithParent) {
    const ppid = process.ppid;
    setInterval(() => { if (process.ppid !== ppid) shutdown(); }, 500).unref();
  }

  server.listen(opt.port, host, () => {
    process.stdout.write('listening ' + server.address().port + '\n');
  });
}

main();
