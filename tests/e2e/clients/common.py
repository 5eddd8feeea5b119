"""Shared helpers of the Python test agents: arguments, request bodies, response parsing.

Every agent prints one JSON line per call on stdout:
  {"client": NAME, "call": i, "pid": PID, "comm": COMM, "status": 200, "model": M,
   "stream": bool, "api": "chat"|"responses"|"anthropic", "input_tokens": N|null,
   "output_tokens": N|null, "cache_read": N, "cache_write": N, "text_chars": N,
   "t_start": epoch, "t_end": epoch, "conn": K}
input/output tokens are what the response reported (billed input: Anthropic cache included);
null when the response carried no usage.
"""
import argparse
import gzip
import json
import os
import ssl
import sys

FAKE_KEY = "sk-test-AGENTBRAKE-SECRET-0001"

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}


def comm():
    try:
        with open("/proc/self/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def parser(name):
    p = argparse.ArgumentParser(prog=name)
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", help="CA to trust (HTTPS); absent with --plain")
    p.add_argument("--plain", action="store_true", help="plain HTTP")
    p.add_argument("--api", choices=sorted(PATHS), default="chat")
    p.add_argument("-n", "--calls", type=int, default=1)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--include-usage", action="store_true",
                   help="OpenAI chat streams: ask for the usage chunk (stream_options.include_usage)")
    p.add_argument("--model", default="e2e-gpt")
    p.add_argument("--max-tokens", type=int, default=12)
    p.add_argument("--prompt-chars", type=int, default=200, help="size of the prompt text")
    p.add_argument("--body-size", type=int, default=0, help="pad the prompt so the body has >= this many bytes")
    p.add_argument("--tag", default=None, help="x-test-client header")
    p.add_argument("--key", default=FAKE_KEY)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between calls")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--header", action="append", default=[], help="extra header 'Name: value'")
    return p


def ssl_context(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    return ctx


def prompt(args, i):
    head = "call %d from pid %d: " % (i, os.getpid())
    n = max(args.prompt_chars - len(head), 0)
    return head + ("word " * (n // 5 + 1))[:n]


def body(args, i):
    text = prompt(args, i)
    if args.api == "chat":
        b = {"messages": [{"role": "user", "content": text}], "model": args.model,
             "max_tokens": args.max_tokens}
        if args.stream:
            b["stream"] = True
            if args.include_usage:
                b["stream_options"] = {"include_usage": True}
    elif args.api == "responses":
        b = {"model": args.model, "input": text, "max_output_tokens": args.max_tokens}
        if args.stream:
            b["stream"] = True
    else:
        b = {"model": args.model, "max_tokens": args.max_tokens,
             "messages": [{"role": "user", "content": text}]}
        if args.stream:
            b["stream"] = True
    raw = json.dumps(b).encode()
    if args.body_size and len(raw) < args.body_size:
        # put the padding in the prompt (first field for chat, as the OpenAI Python SDK does)
        pad = args.body_size - len(raw)
        msgs_key = "messages" if args.api != "responses" else None
        if msgs_key:
            b[msgs_key][0]["content"] = text + "x" * pad
        else:
            b["input"] = text + "x" * pad
        raw = json.dumps(b).encode()
    return raw


def headers(args, length):
    h = {"Content-Type": "application/json", "Content-Length": str(length),
         "Accept": "text/event-stream" if args.stream else "application/json",
         "User-Agent": "agentbrake-e2e/%s" % os.path.basename(sys.argv[0])}
    if args.api == "anthropic":
        h["x-api-key"] = args.key
        h["anthropic-version"] = "2023-06-01"
    else:
        h["Authorization"] = "Bearer " + args.key
    if args.tag:
        h["x-test-client"] = args.tag
    for extra in args.header:
        k, _, v = extra.partition(":")
        h[k.strip()] = v.strip()
    return h


def usage_from_json(api, obj):
    u = obj.get("usage") or None
    if not u:
        return None
    if api == "chat":
        return {"input_tokens": u.get("prompt_tokens"), "output_tokens": u.get("completion_tokens"),
                "cache_read": (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0), "cache_write": 0}
    if api == "responses":
        return {"input_tokens": u.get("input_tokens"), "output_tokens": u.get("output_tokens"),
                "cache_read": (u.get("input_tokens_details") or {}).get("cached_tokens", 0), "cache_write": 0}
    cr = u.get("cache_read_input_tokens") or 0
    cw = u.get("cache_creation_input_tokens") or 0
    return {"input_tokens": (u.get("input_tokens") or 0) + cr + cw, "output_tokens": u.get("output_tokens"),
            "cache_read": cr, "cache_write": cw}


class SSEAccumulator:
    """Feeds SSE lines; keeps the usage and the text of the stream."""

    def __init__(self, api):
        self.api = api
        self.usage = None
        self.text = []
        self.done = False
        self._event = None

    def line(self, raw):
        line = raw.decode("utf-8", "replace").rstrip("\r\n") if isinstance(raw, bytes) else raw.rstrip("\r\n")
        if not line:
            self._event = None
            return
        if line.startswith("event:"):
            self._event = line[6:].strip()
            return
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if self.api == "chat":
            for ch in obj.get("choices") or []:
                c = (ch.get("delta") or {}).get("content")
                if c:
                    self.text.append(c)
            if obj.get("usage"):
                self.usage = usage_from_json("chat", obj)
        elif self.api == "responses":
            t = obj.get("type")
            if t == "response.output_text.delta":
                self.text.append(obj.get("delta") or "")
            elif t in ("response.completed", "response.incomplete", "response.failed"):
                self.done = True
                if (obj.get("response") or {}).get("usage"):
                    self.usage = usage_from_json("responses", obj["response"])
        else:
            t = obj.get("type")
            if t == "message_start":
                u = (obj.get("message") or {}).get("usage")
                if u:
                    self.usage = usage_from_json("anthropic", {"usage": u})
            elif t == "content_block_delta":
                self.text.append((obj.get("delta") or {}).get("text") or "")
            elif t == "message_delta":
                u = obj.get("usage") or {}
                if "output_tokens" in u and self.usage is not None:
                    self.usage["output_tokens"] = u["output_tokens"]   # cumulative
            elif t == "message_stop":
                self.done = True


def parse_full(api, stream, status, data, content_encoding=None):
    """(usage or None, text chars) from a complete response body."""
    if content_encoding == "gzip":
        data = gzip.decompress(data)
    if status != 200:
        return None, 0
    if stream:
        acc = SSEAccumulator(api)
        for ln in data.split(b"\n"):
            acc.line(ln)
        return acc.usage, len("".join(acc.text))
    obj = json.loads(data.decode("utf-8"))
    text = 0
    if api == "chat":
        text = len(((obj.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
    elif api == "anthropic":
        text = sum(len(c.get("text") or "") for c in obj.get("content") or [])
    else:
        for item in obj.get("output") or []:
            text += sum(len(c.get("text") or "") for c in item.get("content") or [])
    return usage_from_json(api, obj), text


def emit(client, args, i, status, usage, text_chars, t_start, t_end, conn=0, **extra):
    rec = {"client": client, "call": i, "pid": os.getpid(), "ppid": os.getppid(), "comm": comm(),
           "status": status, "model": args.model, "stream": bool(args.stream), "api": args.api,
           "path": PATHS[args.api], "host": args.host,
           "input_tokens": usage and usage.get("input_tokens"),
           "output_tokens": usage and usage.get("output_tokens"),
           "cache_read": (usage or {}).get("cache_read", 0), "cache_write": (usage or {}).get("cache_write", 0),
           "text_chars": text_chars, "t_start": t_start, "t_end": t_end, "conn": conn}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def summarize_main(argv):
    """`common.py summarize API STREAM(0|1) STATUS FILE` → the usage JSON of a saved response."""
    api, stream, status, path = argv[0], argv[1] == "1", int(argv[2]), argv[3]
    with open(path, "rb") as f:
        data = f.read()
    usage, text = parse_full(api, stream, status, data)
    print(json.dumps({"usage": usage, "text_chars": text}))
    return 0


def body_main(argv):
    """`common.py body [agent flags] --call I` → the request body on stdout (for curl_agent.sh)."""
    p = parser("body")
    p.add_argument("--call", type=int, default=0)
    args, _ = p.parse_known_args(argv + ["--port", "0"] if "--port" not in argv else argv)
    sys.stdout.buffer.write(body(args, args.call))
    return 0


def emitfile_main(argv):
    """`common.py emitfile [agent flags] --client C --call I --pid P --status S --t0 T --t1 T
    --file F [--conn K]` → the JSON line of one call whose response body was saved to F."""
    p = parser("emitfile")
    for k in ("--client", "--file"):
        p.add_argument(k, required=True)
    for k in ("--call", "--pid", "--status", "--conn"):
        p.add_argument(k, type=int, default=0)
    for k in ("--t0", "--t1"):
        p.add_argument(k, type=float, default=0.0)
    args = p.parse_args(argv)
    with open(args.file, "rb") as f:
        data = f.read()
    try:
        usage, chars = parse_full(args.api, args.stream, args.status, data)
    except ValueError:
        usage, chars = None, 0
    rec = {"client": args.client, "call": args.call, "pid": args.pid, "ppid": os.getppid(), "comm": "curl",
           "status": args.status, "model": args.model, "stream": bool(args.stream), "api": args.api,
           "path": PATHS[args.api], "host": args.host,
           "input_tokens": usage and usage.get("input_tokens"),
           "output_tokens": usage and usage.get("output_tokens"),
           "cache_read": (usage or {}).get("cache_read", 0), "cache_write": (usage or {}).get("cache_write", 0),
           "text_chars": chars, "t_start": args.t0, "t_end": args.t1, "conn": args.conn}
    print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    cmds = {"summarize": summarize_main, "body": body_main, "emitfile": emitfile_main}
    if len(sys.argv) > 1 and sys.argv[1] in cmds:
        sys.exit(cmds[sys.argv[1]](sys.argv[2:]))
    sys.exit(2)
