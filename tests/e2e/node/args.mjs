// Shared argument parsing and output for the Node agents (same flags and JSON lines as the
// Python agents in ../clients/common.py).
import { readFileSync } from 'node:fs';

export const FAKE_KEY = 'sk-test-AGENTBRAKE-SECRET-0001';

export function parseArgs(argv, defaults) {
  const a = { host: 'localhost', port: 0, calls: 1, stream: false, includeUsage: false,
    model: 'e2e-gpt', maxTokens: 12, promptChars: 200, tag: null, key: FAKE_KEY, interval: 0,
    api: 'chat', plain: false, headers: {}, ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const next = () => argv[++i];
    switch (f) {
      case '--host': a.host = next(); break;
      case '--port': a.port = Number(next()); break;
      case '-n': case '--calls': a.calls = Number(next()); break;
      case '--stream': a.stream = true; break;
      case '--include-usage': a.includeUsage = true; break;
      case '--model': a.model = next(); break;
      case '--max-tokens': a.maxTokens = Number(next()); break;
      case '--prompt-chars': a.promptChars = Number(next()); break;
      case '--tag': a.tag = next(); break;
      case '--key': a.key = next(); break;
      case '--interval': a.interval = Number(next()); break;
      case '--api': a.api = next(); break;
      case '--plain': a.plain = true; break;
      case '--header': { const [k, ...v] = next().split(':'); a.headers[k.trim()] = v.join(':').trim(); break; }
      case '--cafile': next(); break; // trust comes from NODE_EXTRA_CA_CERTS
      default: throw new Error(`unknown flag ${f}`);
    }
  }
  if (!a.port) throw new Error('--port is required');
  return a;
}

export function prompt(a, i) {
  const head = `call ${i} from pid ${process.pid}: `;
  const n = Math.max(a.promptChars - head.length, 0);
  return head + 'word '.repeat(Math.floor(n / 5) + 1).slice(0, n);
}

export function comm() {
  try { return readFileSync('/proc/self/comm', 'utf8').trim(); } catch { return ''; }
}

const PATHS = { chat: '/v1/chat/completions', responses: '/v1/responses', anthropic: '/v1/messages' };

export function emit(client, a, i, status, usage, textChars, t0, t1) {
  console.log(JSON.stringify({ client, call: i, pid: process.pid, ppid: process.ppid, comm: comm(),
    status, model: a.model, stream: a.stream, api: a.api, path: PATHS[a.api], host: a.host,
    input_tokens: usage ? usage.input_tokens : null, output_tokens: usage ? usage.output_tokens : null,
    cache_read: usage ? usage.cache_read : 0, cache_write: usage ? usage.cache_write : 0,
    text_chars: textChars, t_start: t0 / 1000, t_end: t1 / 1000, conn: 0 }));
}

export function extraHeaders(a) {
  return { ...(a.tag ? { 'x-test-client': a.tag } : {}), ...a.headers };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
