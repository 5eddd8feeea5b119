// Agent: Node's http2 client. All -n calls go on ONE HTTP/2 session (one TLS connection), one
// after the other, with the same request headers: from the second call on, the headers are
// HPACK-indexed against the first's (the dynamic table). OpenAI Chat Completions, streaming
// with stream_options.include_usage when --stream --include-usage, or Anthropic Messages
// (--api anthropic). Prints one JSON line per call (as ../clients/common.py):
// {"client":"node_h2","call":i,"pid":..,"status":..,"usage":{..},"t_start":..,"t_end":..,"proto":"h2"}.
// With --wait-file F it waits, after each call, until F exists (the test's go) — then F is
// removed — so a test can change the budget between calls without a timing window.
import http2 from 'node:http2';
import { existsSync, unlinkSync } from 'node:fs';
import { parseArgs, prompt } from './args.mjs';

const argv = process.argv.slice(2);
let waitFile = null;
const wi = argv.indexOf('--wait-file');
if (wi >= 0) { waitFile = argv[wi + 1]; argv.splice(wi, 2); }
const a = parseArgs(argv, {});
const now = () => Date.now() / 1000;

const session = http2.connect(`https://${a.host}:${a.port}`);
session.on('error', (e) => { console.error('session', e.message); process.exit(1); });

function call(i) {
  return new Promise((resolve, reject) => {
    const anthropic = a.api === 'anthropic';
    const body = anthropic
      ? { model: a.model, max_tokens: a.maxTokens, stream: a.stream,
          messages: [{ role: 'user', content: prompt(a, i) }] }
      : { model: a.model, max_tokens: a.maxTokens, stream: a.stream,
          ...(a.includeUsage ? { stream_options: { include_usage: true } } : {}),
          messages: [{ role: 'user', content: prompt(a, i) }] };
    const headers = {
      ':method': 'POST',
      ':path': anthropic ? '/v1/messages' : '/v1/chat/completions',
      'content-type': 'application/json',
      ...(anthropic ? { 'x-api-key': a.key, 'anthropic-version': '2023-06-01' }
                    : { authorization: `Bearer ${a.key}` }),
      ...(a.tag ? { 'x-test-client': a.tag } : {}),
    };
    const t0 = now();
    const req = session.request(headers);
    let status = 0;
    let text = '';
    req.on('response', (h) => { status = h[':status']; });
    req.setEncoding('utf8');
    req.on('data', (d) => { text += d; });
    req.on('error', reject);
    req.on('end', () => {
      let usage = null;
      if (a.stream) {
        for (const line of text.split('\n')) {
          if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.usage && !anthropic) usage = ev.usage;
          if (anthropic && ev.type === 'message_start') usage = { ...ev.message.usage };
          if (anthropic && ev.type === 'message_delta') usage.output_tokens = ev.usage.output_tokens;
        }
      } else {
        usage = JSON.parse(text).usage;
      }
      const u = usage ? (anthropic ? { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens }
                                   : { input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens })
                      : null;
      resolve({ client: 'node_h2', call: i, pid: process.pid, status, usage: u, t_start: t0, t_end: now(),
                proto: 'h2', conn: 0 });
    });
    req.end(JSON.stringify(body));
  });
}

async function waitGo() {
  while (!existsSync(waitFile)) await new Promise((r) => setTimeout(r, 20));
  unlinkSync(waitFile);
}

try {
  for (let i = 0; i < a.calls; i++) {
    if (i > 0 && waitFile) await waitGo();
    const r = await call(i);
    console.log(JSON.stringify(r));
  }
  session.close();
} catch (e) {
  console.error(e.stack || String(e));
  process.exit(1);
}
