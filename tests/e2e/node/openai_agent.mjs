// Agent: the official `openai` SDK (Node 20, OpenSSL linked into node, memory BIOs).
// node openai_agent.mjs --port N [--api chat|responses] [-n CALLS] [--stream [--include-usage]]
// Trust: NODE_EXTRA_CA_CERTS=<simulator cert>. Prints one JSON line per call.
import OpenAI from 'openai';
import { parseArgs, prompt, emit, sleep, extraHeaders } from './args.mjs';

const a = parseArgs(process.argv.slice(2));
const client = new OpenAI({
  apiKey: a.key,
  baseURL: `${a.plain ? 'http' : 'https'}://${a.host}:${a.port}/v1`,
  maxRetries: 0,
  timeout: 30000,
  defaultHeaders: extraHeaders(a),
});

function chatUsage(u) {
  return u ? { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens,
    cache_read: u.prompt_tokens_details?.cached_tokens ?? 0, cache_write: 0 } : null;
}
function respUsage(u) {
  return u ? { input_tokens: u.input_tokens, output_tokens: u.output_tokens,
    cache_read: u.input_tokens_details?.cached_tokens ?? 0, cache_write: 0 } : null;
}

for (let i = 0; i < a.calls; i++) {
  if (i && a.interval) await sleep(a.interval * 1000);
  const t0 = Date.now();
  let usage = null;
  let text = '';
  let status = 200;
  try {
    if (a.api === 'responses') {
      const req = { model: a.model, input: prompt(a, i), max_output_tokens: a.maxTokens };
      if (a.stream) {
        const s = await client.responses.create({ ...req, stream: true });
        for await (const ev of s) {
          if (ev.type === 'response.output_text.delta') text += ev.delta;
          if (ev.type === 'response.completed') usage = respUsage(ev.response.usage);
        }
      } else {
        const r = await client.responses.create(req);
        usage = respUsage(r.usage);
        text = r.output_text ?? '';
      }
    } else {
      const req = { messages: [{ role: 'user', content: prompt(a, i) }], model: a.model, max_tokens: a.maxTokens };
      if (a.stream) {
        const s = await client.chat.completions.create({ ...req, stream: true,
          ...(a.includeUsage ? { stream_options: { include_usage: true } } : {}) });
        for await (const ch of s) {
          for (const c of ch.choices ?? []) text += c.delta?.content ?? '';
          if (ch.usage) usage = chatUsage(ch.usage);
        }
      } else {
        const r = await client.chat.completions.create(req);
        usage = chatUsage(r.usage);
        text = r.choices[0]?.message?.content ?? '';
      }
    }
  } catch (e) {
    if (e && typeof e.status === 'number') status = e.status; else throw e;
  }
  emit('node_openai', a, i, status, usage, text.length, t0, Date.now());
}
