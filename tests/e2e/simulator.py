#!/usr/bin/env python3
"""LLM provider simulator for agentbrake's end-to-end tests (Python stdlib only).

Serves OpenAI Chat Completions, OpenAI Responses, Anthropic Messages and Ollama (/api/chat,
/api/generate: NDJSON streams unless "stream": false) on 127.0.0.1 over
HTTPS (a self-signed certificate made per run with the `openssl` CLI) or plain HTTP, with
HTTP/1.1 keep-alive. Its first stdout line is JSON: {"port": N, "tls": bool, "cafile": PATH,
"pid": N, "log": PATH}. Then it serves until SIGTERM/SIGINT.

Usage is deterministic so that tests can compare the daemon's accounting with what was served:
  * input tokens  = --input-tokens if given, else ceil(characters of the prompt text / 4)
                    (at least 1). Anthropic adds --cache-read / --cache-write on top
                    (billed input = input + cache writes + cache reads); OpenAI reports
                    --cache-read as prompt_tokens_details.cached_tokens (inside prompt_tokens).
  * output tokens = max_tokens / max_completion_tokens / max_output_tokens, else
                    --default-output-tokens. The generated text has exactly that many 4-character
                    words ("tok "), so a chars/4 estimate of the output is exact.

Every served request appends one JSON line to --log: ts, ts_start, path, model, stream,
status, input_tokens (billed, cache included), output_tokens, cache_read, cache_write,
usage_sent (false when the response carried no usage), aborted (client went away),
client_tag (header x-test-client), request_bytes, pid/port of the peer. Auth headers and
bodies are never logged.

Behaviour is configured by flags, then by the JSON --control file (re-read when it changes),
then per request by headers (x-sim-status, x-sim-retry-after, x-sim-latency-ms,
x-sim-chunk-ms, x-sim-chunks, x-sim-no-usage, x-sim-cache-read, x-sim-cache-write,
x-sim-cache-write-1h, x-sim-usage-style, x-sim-input-tokens, x-sim-ratelimit-*). Keys of the
control file are the long flag names with '_' for '-'. Any path ending in /chat/completions
is Chat Completions (Azure deployments, OpenRouter's /api/v1).

Provider quota headers (off unless ratelimit_remaining_requests or ratelimit_remaining_tokens
is set; per request: x-sim-ratelimit-remaining-requests, x-sim-ratelimit-remaining-tokens,
x-sim-ratelimit-reset-ms, x-sim-ratelimit-style). Every response (200, error, stream) then
carries, in the form of its API (style auto: Anthropic for /v1/messages, else OpenAI):
  OpenAI     x-ratelimit-limit-requests, x-ratelimit-limit-tokens,
             x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens,
             x-ratelimit-reset-requests, x-ratelimit-reset-tokens   (durations: "20ms", "2s",
             "1.5s", "6m0s": reset_ms after the response)
  Anthropic  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}
             (reset: RFC 3339 UTC, whole seconds, now + reset_ms rounded UP to the next second)
The quantity not configured is reported as its full limit (ratelimit_limit_requests /
ratelimit_limit_tokens). The log line of such a response has "ratelimit": {header: value}.
"""
import argparse
import base64
import binascii
import gzip
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULTS = {
    "latency_ms": 0,            # before the response headers
    "chunk_ms": 0,              # between SSE events
    "chunks": 4,                # content deltas in a stream (capped at the output tokens)
    "status": 200,              # forced status: 429, 500, 529, ...
    "retry_after": 2,           # seconds, sent with 429/529
    "no_usage": False,          # streams never carry usage (OpenAI include_usage ignored)
    "gzip": False,              # gzip non-stream bodies when the client accepts it
    "input_tokens": None,       # fixed input tokens instead of the chars/4 rule
    "default_output_tokens": 16,
    "stop_reason": "max_tokens",  # Anthropic stop_reason (Claude Code retries on max_tokens: end_turn)
    "cache_read": 0,
    "cache_write": 0,
    "cache_write_1h": 0,        # Anthropic: of cache_write, written with the 1-hour TTL (cache_creation)
    "usage_style": "openai",    # chat usage: openai | deepseek (prompt_cache_hit/miss_tokens, no cached_tokens)
    "reasoning_tokens": 0,      # OpenAI: reported inside completion/output tokens
    "idle_timeout": 120,        # seconds a keep-alive connection may stay idle
    # provider quota headers (sent only when a remaining_* is set; see the module doc)
    "ratelimit_remaining_requests": None,
    "ratelimit_remaining_tokens": None,
    "ratelimit_limit_requests": 500,
    "ratelimit_limit_tokens": 200000,
    "ratelimit_reset_ms": 1000,  # until the quota is replenished, from the response
    "ratelimit_style": "auto",   # auto | openai | anthropic
}
OPTIONAL_INTS = ("input_tokens", "ratelimit_remaining_requests", "ratelimit_remaining_tokens")

CONFIG_LOCK = threading.Lock()
LOG_LOCK = threading.Lock()


def _coerce(key, value):
    base = DEFAULTS.get(key)
    if value is None:
        return None
    if isinstance(base, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(base, int) or key in OPTIONAL_INTS:
        return int(float(value))
    if isinstance(base, float):
        return float(value)
    return value


class Config:
    def __init__(self, flags, control_path):
        self.flags = dict(flags)
        self.control_path = control_path
        self._control = {}
        self._mtime = None

    def snapshot(self):
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in self.flags.items() if v is not None})
        if self.control_path:
            with CONFIG_LOCK:
                try:
                    st = os.stat(self.control_path)
                    key = (st.st_mtime_ns, st.st_size)
                    if key != self._mtime:
                        with open(self.control_path) as f:
                            text = f.read()
                        self._control = json.loads(text) if text.strip() else {}
                        self._mtime = key
                except FileNotFoundError:
                    self._control = {}
                    self._mtime = None
                except ValueError:
                    pass  # half-written control file: keep the previous one
                control = dict(self._control)
            for k, v in control.items():
                if k in DEFAULTS:
                    cfg[k] = _coerce(k, v)
        return cfg


def make_cert(directory):
    """Self-signed CA-capable certificate for localhost / 127.0.0.1, made with the openssl CLI."""
    key = os.path.join(directory, "key.pem")
    cert = os.path.join(directory, "cert.pem")
    cnf = os.path.join(directory, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(
            "[req]\ndistinguished_name=dn\nx509_extensions=ext\nprompt=no\n"
            "[dn]\nCN=localhost\n"
            "[ext]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=critical,CA:TRUE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-keyout", key, "-out", cert, "-config", cnf],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return cert, key


def make_cert_chain(directory):
    """A CA and a localhost / 127.0.0.1 server certificate it signed (rustls, e.g. Codex,
    refuses a CA certificate presented as the server's own). Returns (ca, chain, key)."""
    ca_key, ca = os.path.join(directory, "ca-key.pem"), os.path.join(directory, "ca.pem")
    key, csr = os.path.join(directory, "leaf-key.pem"), os.path.join(directory, "leaf.csr")
    leaf, chain = os.path.join(directory, "leaf.pem"), os.path.join(directory, "chain.pem")
    ext = os.path.join(directory, "leaf.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run = lambda *argv: subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, timeout=60)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", ca_key, "-out", ca, "-subj", "/CN=agentbrake e2e CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", leaf, "-days", "2", "-sha256", "-extfile", ext)
    with open(chain, "w") as out, open(leaf) as l1, open(ca) as l2:
        out.write(l1.read() + l2.read())
    return ca, chain, key


def peer_info(server_port, peer_port):
    """Dev aid (--peer-info): the local process owning the client end of this loopback
    connection, with its ancestors [{pid, comm, cgroup}], found through /proc/net/tcp*."""
    inode = None
    for tbl in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tbl) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    if lport == peer_port and rport == server_port:
                        inode = parts[9]
                        break
        except OSError:
            pass
        if inode:
            break
    if not inode:
        return None
    target = "socket:[%s]" % inode
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % d):
                try:
                    if os.readlink("/proc/%s/fd/%s" % (d, fd)) == target:
                        return _ancestry(int(d))
                except OSError:
                    pass
        except OSError:
            pass
    return None


def _ancestry(pid):
    chain = []
    while pid > 1 and len(chain) < 32:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cg = ""
            with open("/proc/%d/cgroup" % pid) as f:
                for line in f:
                    if line.startswith("0::"):
                        cg = line[3:].strip()
            chain.append({"pid": pid, "comm": comm, "cgroup": cg})
            pid = ppid
        except (OSError, ValueError):
            break
    return chain


def prompt_text(body):
    """All prompt text of a request (messages, system, input, instructions)."""
    parts = []

    def walk(x):
        if isinstance(x, str):
            parts.append(x)
        elif isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for k in ("content", "text", "input", "system", "instructions"):
                if k in x:
                    walk(x[k])

    for k in ("messages", "system", "input", "instructions", "prompt"):
        if k in body:
            walk(body[k])
    return "".join(parts)


BEDROCK_OPS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")


def eventstream_message(event_type, payload):
    """One application/vnd.amazon.eventstream message with the three string headers."""
    h = b""
    for k, v in ((b":event-type", event_type.encode()), (b":content-type", b"application/json"),
                 (b":message-type", b"event")):
        h += bytes([len(k)]) + k + b"\x07" + len(v).to_bytes(2, "big") + v
    pre = (12 + len(h) + len(payload) + 4).to_bytes(4, "big") + len(h).to_bytes(4, "big")
    m = pre + binascii.crc32(pre).to_bytes(4, "big") + h + payload
    return m + binascii.crc32(m).to_bytes(4, "big")


def output_text(n):
    return "tok " * n


def split_words(n, chunks):
    """Split n tokens into `chunks` contiguous groups (every group non-empty when n >= chunks)."""
    chunks = max(1, min(chunks, n)) if n > 0 else 1
    base, extra = divmod(n, chunks)
    return [base + (1 if i < extra else 0) for i in range(chunks)]


def go_duration(ms):
    """A duration the way OpenAI writes its reset headers (Go's time.Duration): "20ms", "1s",
    "1.5s", "6m0s", "1h2m3s"."""
    ms = max(0, int(round(ms)))
    if ms < 1000:
        return "%dms" % ms
    h, rest = divmod(ms, 3600000)
    m, rest = divmod(rest, 60000)
    sec = ("%.3f" % (rest / 1000.0)).rstrip("0").rstrip(".")
    if h:
        return "%dh%dm%ss" % (h, m, sec)
    if m:
        return "%dm%ss" % (m, sec)
    return "%ss" % sec


def rfc3339_ceil(t):
    """Epoch seconds → RFC 3339 UTC with whole seconds, rounded up ("2026-11-29T10:00:03Z")."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(t)))


def ratelimit_headers(kind, cfg):
    """The provider's quota headers for this response ({} unless a remaining_* is configured)."""
    rr, rt = cfg.get("ratelimit_remaining_requests"), cfg.get("ratelimit_remaining_tokens")
    if rr is None and rt is None:
        return {}
    lr, lt = int(cfg["ratelimit_limit_requests"]), int(cfg["ratelimit_limit_tokens"])
    rr = lr if rr is None else int(rr)
    rt = lt if rt is None else int(rt)
    reset_ms = int(cfg["ratelimit_reset_ms"])
    style = str(cfg.get("ratelimit_style") or "auto").lower()
    if style not in ("openai", "anthropic"):
        style = "anthropic" if kind == "anthropic" else "openai"
    if style == "openai":
        reset = go_duration(reset_ms)
        return {"x-ratelimit-limit-requests": str(lr), "x-ratelimit-limit-tokens": str(lt),
                "x-ratelimit-remaining-requests": str(rr), "x-ratelimit-remaining-tokens": str(rt),
                "x-ratelimit-reset-requests": reset, "x-ratelimit-reset-tokens": reset}
    reset = rfc3339_ceil(time.time() + reset_ms / 1000.0)
    h = {}
    for name, limit, remaining in (("requests", lr, rr), ("tokens", lt, rt),
                                   ("input-tokens", lt, rt), ("output-tokens", lt, rt)):
        h["anthropic-ratelimit-%s-limit" % name] = str(limit)
        h["anthropic-ratelimit-%s-remaining" % name] = str(remaining)
        h["anthropic-ratelimit-%s-reset" % name] = reset
    return h


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentbrake-sim/1.0"
    sys_version = ""

    def log_message(self, fmt, *args):  # no access log on stderr (and never headers)
        pass

    def setup(self):
        super().setup()
        cfg = self.server.config.snapshot()
        self.connection.settimeout(cfg["idle_timeout"])

    # ---- request plumbing --------------------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline(65537)
            return bytes(data)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send_chunk(self, data):
        if not data:
            return
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cfg(self):
        cfg = self.server.config.snapshot()
        hmap = {
            "x-sim-status": "status", "x-sim-retry-after": "retry_after",
            "x-sim-latency-ms": "latency_ms", "x-sim-chunk-ms": "chunk_ms",
            "x-sim-chunks": "chunks", "x-sim-no-usage": "no_usage",
            "x-sim-cache-read": "cache_read", "x-sim-cache-write": "cache_write",
            "x-sim-input-tokens": "input_tokens", "x-sim-gzip": "gzip",
            "x-sim-reasoning-tokens": "reasoning_tokens",
            "x-sim-cache-write-1h": "cache_write_1h", "x-sim-usage-style": "usage_style",
            "x-sim-ratelimit-remaining-requests": "ratelimit_remaining_requests",
            "x-sim-ratelimit-remaining-tokens": "ratelimit_remaining_tokens",
            "x-sim-ratelimit-reset-ms": "ratelimit_reset_ms",
            "x-sim-ratelimit-style": "ratelimit_style",
        }
        for h, k in hmap.items():
            v = self.headers.get(h)
            if v is not None:
                cfg[k] = _coerce(k, v)
        return cfg

    def _log(self, rec, path=None):
        path = path or self.server.log_path
        if not path:
            return
        line = json.dumps(rec, sort_keys=True) + "\n"
        with LOG_LOCK:
            with open(path, "a") as f:
                f.write(line)
                f.flush()

    def do_GET(self):
        if self.path == "/healthz":
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._simple(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def _simple(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        t0 = time.time()
        self.rl_headers = {}
        raw = self._read_body()
        cfg = self._cfg()
        path = self.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):   # also Azure /openai/deployments/{d}/..., /api/v1/...
            kind = "chat"
        elif path in ("/v1/responses", "/responses"):
            kind = "responses"
        elif path in ("/v1/messages", "/messages"):
            kind = "anthropic"
        elif path.startswith("/model/") and path.rsplit("/", 1)[-1] in BEDROCK_OPS:
            kind = "bedrock"
        elif path in ("/api/chat", "/api/generate"):   # Ollama (NDJSON stream unless "stream": false)
            kind = "ollama_" + path[len("/api/"):]
        else:
            self._simple(404, {"error": {"message": "unknown path", "type": "not_found"}})
            return
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except (ValueError, UnicodeDecodeError) as e:
            self._simple(400, {"error": {"message": "bad json: %s" % e, "type": "invalid_request_error"}})
            return
        if self.server.peer_info:
            self.peer = peer_info(self.server.server_address[1], self.client_address[1])
        if self.server.log_path:
            # every request is logged once at its start too (<log>.started), so a test can tell
            # a request still being served from one never sent
            self._log({"client_tag": self.headers.get("x-test-client"), "ts_start": t0}, self.server.log_path + ".started")
        model = str(body.get("model", "unknown"))
        stream = bool(body.get("stream", kind.startswith("ollama")))
        if kind == "bedrock":
            from urllib.parse import unquote
            model_id, op = path[len("/model/"):].rsplit("/", 1)
            model, stream = unquote(model_id), op.endswith("stream")
            self.bedrock_op = op
            ic = body.get("inferenceConfig") or {}
            if "maxTokens" in ic:
                body = dict(body, max_tokens=ic["maxTokens"])
        text = prompt_text(body)
        base_in = cfg["input_tokens"] if cfg["input_tokens"] is not None else max(1, math.ceil(len(text) / 4))
        out = body.get("max_tokens", body.get("max_completion_tokens", body.get("max_output_tokens")))
        if kind.startswith("ollama"):
            out = (body.get("options") or {}).get("num_predict")
        out = int(out) if isinstance(out, (int, float)) and out > 0 else int(cfg["default_output_tokens"])
        cr, cw = int(cfg["cache_read"]), int(cfg["cache_write"])
        if kind in ("anthropic", "bedrock"):
            billed_in, wire_in = base_in + cr + cw, base_in
        else:
            cw = 0
            cr = min(cr, base_in)
            billed_in, wire_in = base_in, base_in
        rec = {
            "ts_start": round(t0, 6), "path": path, "model": model, "stream": stream,
            "status": int(cfg["status"]), "input_tokens": billed_in, "output_tokens": out,
            "cache_read": cr, "cache_write": cw, "usage_sent": True, "aborted": False,
            "client_tag": self.headers.get("x-test-client"), "request_bytes": len(raw),
            "kind": kind, "peer_port": self.client_address[1] if self.client_address else None,
            "gzip": False,
        }
        if self.server.peer_info:
            rec["peer"] = self.peer
        if cfg["latency_ms"]:
            time.sleep(cfg["latency_ms"] / 1000.0)
        self.rl_headers = ratelimit_headers(kind, cfg)   # reset times count from the response
        if self.rl_headers:
            rec["ratelimit"] = dict(self.rl_headers)
        try:
            if cfg["status"] != 200:
                rec["usage_sent"] = False
                rec["retry_after"] = cfg["retry_after"] if cfg["status"] in (429, 529) else None
                rec["input_tokens"] = rec["output_tokens"] = rec["cache_read"] = rec["cache_write"] = 0
                self._error(kind, int(cfg["status"]), cfg)
            elif kind == "bedrock":
                self._bedrock(self.bedrock_op, model, wire_in, out, cr, cw, cfg)
            elif kind.startswith("ollama"):
                self._ollama(kind, model, wire_in, out, cfg, stream)
            elif not stream:
                rec["gzip"] = self._non_stream(kind, model, wire_in, out, cr, cw, cfg)
            else:
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                if kind == "chat" and (not include or cfg["no_usage"]):
                    rec["usage_sent"] = False
                if kind != "chat" and cfg["no_usage"]:
                    rec["usage_sent"] = False
                self._stream(kind, model, wire_in, out, cr, cw, cfg, rec["usage_sent"])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            rec["aborted"] = True
            self.close_connection = True
        rec["ts"] = round(time.time(), 6)
        self._log(rec)

    # ---- responses ---------------------------------------------------------------------
    def _ollama(self, kind, model, wire_in, out, cfg, stream):
        """Ollama /api/chat and /api/generate: one JSON object, or (stream) NDJSON lines in a
        chunked body, the last with "done": true, prompt_eval_count and eval_count."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

        def piece(txt, done):
            obj = {"model": model, "created_at": now, "done": done}
            if kind == "ollama_chat":
                obj["message"] = {"role": "assistant", "content": txt}
            else:
                obj["response"] = txt
            if done:
                obj.update({"done_reason": "length", "total_duration": 1000, "load_duration": 10,
                            "prompt_eval_count": wire_in, "prompt_eval_duration": 100,
                            "eval_count": out, "eval_duration": 500})
            return obj

        if not stream:
            body = json.dumps(piece(output_text(out), True)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        delay = cfg["chunk_ms"] / 1000.0
        for g in split_words(out, int(cfg["chunks"])):
            if delay:
                time.sleep(delay)
            self._send_chunk((json.dumps(piece(output_text(g), False)) + "\n").encode())
        self._send_chunk((json.dumps(piece("", True)) + "\n").encode())
        self._end_chunks()

    def _bedrock(self, op, model, wire_in, out, cr, cw, cfg):
        """AWS Bedrock: Converse (JSON), ConverseStream (event stream), InvokeModel (Claude's
        Messages body + X-Amzn-Bedrock-*-Token-Count headers) and its stream (base64 chunks)."""
        txt = output_text(out)
        words = split_words(out, int(cfg["chunks"]))
        usage = {"inputTokens": wire_in, "outputTokens": out, "totalTokens": wire_in + cr + cw + out,
                 "cacheReadInputTokens": cr, "cacheWriteInputTokens": cw}
        headers = {"x-amzn-requestid": "sim-req",
                   "x-amzn-bedrock-input-token-count": str(wire_in),
                   "x-amzn-bedrock-output-token-count": str(out),
                   "x-amzn-bedrock-cache-read-input-token-count": str(cr),
                   "x-amzn-bedrock-cache-write-input-token-count": str(cw)}
        if op == "converse":
            return self._simple(200, {"output": {"message": {"role": "assistant", "content": [{"text": txt}]}},
                                      "stopReason": "max_tokens", "usage": usage, "metrics": {"latencyMs": 1}})
        if op == "invoke":
            return self._simple(200, {"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                                      "content": [{"type": "text", "text": txt}], "stop_reason": "max_tokens",
                                      "usage": {"input_tokens": wire_in, "cache_read_input_tokens": cr,
                                                "cache_creation_input_tokens": cw, "output_tokens": out}}, headers)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        if op == "invoke-with-response-stream":
            for k, v in headers.items():
                self.send_header(k, v)
        self.end_headers()

        def send(event, payload):
            self._send_chunk(eventstream_message(event, json.dumps(payload).encode()))
            if cfg["chunk_ms"]:
                time.sleep(cfg["chunk_ms"] / 1000.0)

        if op == "converse-stream":
            send("messageStart", {"role": "assistant"})
            for n in words:
                send("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "tok " * n}})
            send("contentBlockStop", {"contentBlockIndex": 0})
            send("messageStop", {"stopReason": "max_tokens"})
            if not cfg["no_usage"]:
                send("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})
        else:
            def chunk(obj):
                send("chunk", {"bytes": base64.b64encode(json.dumps(obj).encode()).decode()})
            chunk({"type": "message_start", "message": {"id": "msg_sim", "type": "message", "role": "assistant",
                   "model": model, "usage": {"input_tokens": wire_in, "cache_read_input_tokens": cr,
                                             "cache_creation_input_tokens": cw, "output_tokens": 1}}})
            for n in words:
                chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok " * n}})
            chunk({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": out}})
            chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": wire_in, "outputTokenCount": out, "invocationLatency": 1, "firstByteLatency": 1,
                "cacheReadInputTokenCount": cr, "cacheWriteInputTokenCount": cw}})
        self._end_chunks()

    def _error(self, kind, status, cfg):
        headers = dict(getattr(self, "rl_headers", None) or {})
        if status in (429, 529):
            headers["retry-after"] = str(cfg["retry_after"])
        if kind == "anthropic":
            etype = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}.get(status, "api_error")
            obj = {"type": "error", "error": {"type": etype, "message": "simulated %d" % status}}
        else:
            etype = {429: "rate_limit_exceeded", 500: "server_error"}.get(status, "server_error")
            obj = {"error": {"message": "simulated %d" % status, "type": etype, "code": etype}}
        self._simple(status, obj, headers)

    def _usage(self, kind, wire_in, out, cr, cw, cfg):
        if kind == "chat" and cfg["usage_style"] == "deepseek":
            return {"prompt_tokens": wire_in, "completion_tokens": out, "total_tokens": wire_in + out,
                    "prompt_cache_hit_tokens": cr, "prompt_cache_miss_tokens": wire_in - cr,
                    "completion_tokens_details": {"reasoning_tokens": min(cfg["reasoning_tokens"], out)}}
        if kind == "chat":
            return {"prompt_tokens": wire_in, "completion_tokens": out, "total_tokens": wire_in + out,
                    "prompt_tokens_details": {"cached_tokens": cr, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": min(cfg["reasoning_tokens"], out),
                                                  "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                                  "rejected_prediction_tokens": 0}}
        if kind == "responses":
            return {"input_tokens": wire_in, "input_tokens_details": {"cached_tokens": cr},
                    "output_tokens": out,
                    "output_tokens_details": {"reasoning_tokens": min(cfg["reasoning_tokens"], out)},
                    "total_tokens": wire_in + out}
        return {"input_tokens": wire_in, "cache_creation_input_tokens": cw, "cache_read_input_tokens": cr,
                "output_tokens": out,
                "cache_creation": {"ephemeral_5m_input_tokens": cw - min(cfg["cache_write_1h"], cw),
                                   "ephemeral_1h_input_tokens": min(cfg["cache_write_1h"], cw)},
                "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"}

    def _non_stream(self, kind, model, wire_in, out, cr, cw, cfg):
        usage = self._usage(kind, wire_in, out, cr, cw, cfg)
        txt = output_text(out)
        now = int(time.time())
        if kind == "chat":
            obj = {"id": "chatcmpl-sim%d" % now, "object": "chat.completion", "created": now, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": txt, "refusal": None},
                                "logprobs": None, "finish_reason": "length"}],
                   "usage": usage, "system_fingerprint": "fp_sim"}
        elif kind == "responses":
            obj = self._response_obj(model, txt, usage, now)
        else:
            obj = {"id": "msg_sim%d" % now, "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": txt}], "stop_reason": cfg["stop_reason"],
                   "stop_sequence": None, "usage": usage}
        body = json.dumps(obj).encode()
        headers = {"x-request-id": "req_sim"}
        headers.update(getattr(self, "rl_headers", None) or {})
        if cfg["gzip"] and "gzip" in (self.headers.get("Accept-Encoding") or "").lower():
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        return "Content-Encoding" in headers

    @staticmethod
    def _response_obj(model, txt, usage, now, status="completed"):
        return {"id": "resp_sim%d" % now, "object": "response", "created_at": now, "status": status,
                "model": model,
                "output": [{"type": "message", "id": "msg_sim", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": txt, "annotations": []}]}],
                "usage": usage}

    def _stream(self, kind, model, wire_in, out, cr, cw, cfg, with_usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (getattr(self, "rl_headers", None) or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        delay = cfg["chunk_ms"] / 1000.0
        groups = split_words(out, int(cfg["chunks"]))
        usage = self._usage(kind, wire_in, out, cr, cw, cfg)
        now = int(time.time())

        def send(event, data, named=False):
            payload = json.dumps(data) if not isinstance(data, str) else data
            s = ("event: %s\n" % event if named else "") + "data: %s\n\n" % payload
            self._send_chunk(s.encode())

        def pause():
            if delay:
                time.sleep(delay)

        if kind == "chat":
            base = {"id": "chatcmpl-sim%d" % now, "object": "chat.completion.chunk", "created": now,
                    "model": model, "system_fingerprint": "fp_sim"}
            first = dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}], usage=None)
            send(None, first)
            for g in groups:
                pause()
                send(None, dict(base, choices=[{"index": 0, "delta": {"content": output_text(g)},
                                                "logprobs": None, "finish_reason": None}], usage=None))
            pause()
            send(None, dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": "length"}], usage=None))
            if with_usage:
                send(None, dict(base, choices=[], usage=usage))
            send(None, "[DONE]")
        elif kind == "responses":
            seq = 0
            empty = self._response_obj(model, "", None, now, status="in_progress")
            for ev in ("response.created", "response.in_progress"):
                send(ev, {"type": ev, "sequence_number": seq, "response": empty}, named=True)
                seq += 1
            for g in groups:
                pause()
                send("response.output_text.delta",
                     {"type": "response.output_text.delta", "sequence_number": seq, "item_id": "msg_sim",
                      "output_index": 0, "content_index": 0, "delta": output_text(g)}, named=True)
                seq += 1
            pause()
            final = self._response_obj(model, output_text(out), usage if with_usage else None, now)
            send("response.completed", {"type": "response.completed", "sequence_number": seq,
                                        "response": final}, named=True)
        else:
            start_usage = dict(usage, output_tokens=1)
            if not with_usage:
                start_usage = {}
            msg = {"id": "msg_sim%d" % now, "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
            send("message_start", {"type": "message_start", "message": msg}, named=True)
            send("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}, named=True)
            send("ping", {"type": "ping"}, named=True)
            done = 0
            for g in groups:
                pause()
                done += g
                send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": output_text(g)}},
                     named=True)
            send("content_block_stop", {"type": "content_block_stop", "index": 0}, named=True)
            pause()
            delta = {"type": "message_delta", "delta": {"stop_reason": cfg["stop_reason"], "stop_sequence": None}}
            if with_usage:
                delta["usage"] = {"output_tokens": out}   # cumulative
            send("message_delta", delta, named=True)
            send("message_stop", {"type": "message_stop"}, named=True)
        self._end_chunks()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, config, log_path, ssl_ctx):
        self.config = config
        self.log_path = log_path
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_ctx is not None:
            # handshake in the handler thread, on first read, so a slow client blocks no one
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # clients that vanish mid-handshake are normal in these tests


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument("--cert-dir", help="where to put the generated certificate (default: a temp dir)")
    p.add_argument("--ca-chain", action="store_true",
                   help="serve a certificate signed by a generated CA (cafile is the CA) instead of a self-signed one")
    p.add_argument("--log", help="JSONL file, one line per served request")
    p.add_argument("--control", help="JSON file with settings, re-read when it changes")
    p.add_argument("--peer-info", action="store_true",
                   help="log the client process and its ancestors (dev aid for tools/fake_agentbraked.py)")
    for k, v in DEFAULTS.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            p.add_argument(flag, dest=k, action="store_const", const=True, default=None)
        elif isinstance(v, str):
            p.add_argument(flag, dest=k, default=None)
        else:
            p.add_argument(flag, dest=k, type=int, default=None)
    a = p.parse_args(argv)
    flags = {k: getattr(a, k) for k in DEFAULTS}

    tmp = None
    cafile = None
    ctx = None
    if not a.plain:
        cert_dir = a.cert_dir
        if not cert_dir:
            tmp = tempfile.mkdtemp(prefix="ab-sim-")
            cert_dir = tmp
        os.makedirs(cert_dir, exist_ok=True)
        if a.ca_chain:
            cafile, chain, key = make_cert_chain(cert_dir)
        else:
            cafile, key = make_cert(cert_dir)
            chain = cafile
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        ctx.set_alpn_protocols(["http/1.1"])

    srv = Server((a.host, a.port), Handler, Config(flags, a.control), a.log, ctx)
    srv.peer_info = a.peer_info or os.environ.get("AB_SIM_PEER_INFO") == "1"

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"port": srv.server_address[1], "tls": not a.plain, "cafile": cafile,
                      "pid": os.getpid(), "log": a.log}), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
