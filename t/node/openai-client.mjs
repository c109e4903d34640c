// The official openai package as a client of the gateway: node
// openai-client.mjs BASE_URL.  Each check prints "ok - ..." or
// "not ok - ...: detail"; the exit status is the number of failures.  The
// test (t/120-openai-sdk.t) points BASE_URL at a location whose upstream
// speaks Anthropic, so every answer here was translated by the gateway.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'client-key', maxRetries: 0 });
let failures = 0;

function check(what, cond, detail) {
  if (cond) {
    console.log(`ok - ${what}`);
  } else {
    failures++;
    console.log(`not ok - ${what}: ${detail}`);
  }
}

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const toolHeaders = {
  'x-mock-tool-call': 'get_weather',
  'x-mock-tool-args': JSON.stringify({ city: 'Paris', unit: 'celsius' }),
};

try {
  const r = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'Hello there' }],
  });
  const text = r.choices[0].message.content;
  check('non-streaming: the answer text', text === 'This is a mock response from the AI gateway test provider.', text);
  check('non-streaming: finish_reason', r.choices[0].finish_reason === 'stop', r.choices[0].finish_reason);
  check('non-streaming: usage', r.usage && r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens
        && r.usage.completion_tokens === 11, JSON.stringify(r.usage));
} catch (e) {
  check('non-streaming call', false, e.message);
}

try {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Hello there' }],
  });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check('streaming: the deltas make the text', text === 'This is a mock response from the AI gateway test provider.', text);
  check('streaming: finish_reason', finish === 'stop', finish);
  check('streaming: the usage chunk', usage && usage.completion_tokens === 11 && usage.prompt_tokens === 3,
        JSON.stringify(usage));
} catch (e) {
  check('streaming call', false, e.message);
}

try {
  const r = await client.chat.completions.create(
    { model: 'gpt-4o', tools: [weather], messages: [{ role: 'user', content: 'Weather in Paris?' }] },
    { headers: toolHeaders });
  const call = r.choices[0].message.tool_calls?.[0];
  check('tool call: finish_reason', r.choices[0].finish_reason === 'tool_calls', r.choices[0].finish_reason);
  check('tool call: name', call?.function?.name === 'get_weather', JSON.stringify(call));
  const args = JSON.parse(call?.function?.arguments ?? 'null');
  check('tool call: arguments parse', args?.city === 'Paris' && args?.unit === 'celsius', call?.function?.arguments);
} catch (e) {
  check('tool call', false, e.message);
}

try {
  // the SDK's own accumulation of streamed tool call deltas
  const runner = client.chat.completions.stream(
    { model: 'gpt-4o', tools: [weather], messages: [{ role: 'user', content: 'Weather in Paris?' }] },
    { headers: toolHeaders });
  const final = await runner.finalChatCompletion();
  const call = final.choices[0].message.tool_calls?.[0];
  check('streamed tool call: finish_reason', final.choices[0].finish_reason === 'tool_calls',
        final.choices[0].finish_reason);
  check('streamed tool call: id and name', /^toolu_/.test(call?.id ?? '') && call?.function?.name === 'get_weather',
        JSON.stringify(call));
  const args = JSON.parse(call?.function?.arguments ?? 'null');
  check('streamed tool call: arguments parse', args?.city === 'Paris' && args?.unit === 'celsius',
        call?.function?.arguments);
} catch (e) {
  check('streamed tool call', false, e.message);
}

try {
  await client.chat.completions.create({ model: 'gpt-4o', n: 2, messages: [{ role: 'user', content: 'Hi' }] });
  check('an untranslatable request fails', false, 'it did not');
} catch (e) {
  check('an untranslatable request is a BadRequestError', e instanceof OpenAI.BadRequestError && e.status === 400,
        `${e.constructor.name} ${e.status}`);
}

process.exit(failures);
