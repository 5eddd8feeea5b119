// Agent: the official `@anthropic-ai/sdk` (Node 20). Messages API, stream or not.
// node anthropic_agent.mjs --port N [-n CALLS] [--stream]
// Trust: NODE_EXTRA_CA_CERTS=<simulator cert>. Prints one JSON line per call.
import Anthropic from '@anthropic-ai/sdk';
import { parseArgs, prompt, emit, sleep, extraHeaders } from './args.mjs';

const a = parseArgs(process.argv.slice(2), { api: 'anthropic', model: 'e2e-claude' });
const client = new Anthropic({
  apiKey: a.key,
  baseURL: `${a.plain ? 'http' : 'https'}://${a.host}:${a.port}`,
  maxRetries: 0,
  timeout: 30000,
  defaultHeaders: extraHeaders(a),
});

function billed(u) {
  const cr = u.cache_read_input_tokens ?? 0;
  const cw = u.cache_creation_input_tokens ?? 0;
  return { input_tokens: (u.input_tokens ?? 0) + cr + cw, output_tokens: u.output_tokens, cache_read: cr, cache_write: cw };
}

for (let i = 0; i < a.calls; i++) {
  if (i && a.interval) await sleep(a.interval * 1000);
  const t0 = Date.now();
  const req = { model: a.model, max_tokens: a.maxTokens, messages: [{ role: 'user', content: prompt(a, i) }] };
  let usage = null;
  let text = '';
  let status = 200;
  try {
    if (a.stream) {
      const s = await client.messages.create({ ...req, stream: true });
      for await (const ev of s) {
        if (ev.type === 'message_start' && ev.message.usage && ev.message.usage.input_tokens !== undefined) {
          usage = billed(ev.message.usage);
        } else if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') {
          text += ev.delta.text;
        } else if (ev.type === 'message_delta' && ev.usage && usage) {
          usage.output_tokens = ev.usage.output_tokens; // cumulative
        }
      }
    } else {
      const r = await client.messages.create(req);
      usage = billed(r.usage);
      text = r.content.map((c) => c.text ?? '').join('');
    }
  } catch (e) {
    if (e && typeof e.status === 'number') status = e.status; else throw e;
  }
  emit('node_anthropic', a, i, status, usage, text.length, t0, Date.now());
}
