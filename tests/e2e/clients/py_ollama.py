#!/usr/bin/env python3
"""Agent: an Ollama client over plain HTTP, with urllib.request (a new connection per call) or
http.client (one keep-alive connection). /api/chat or /api/generate, NDJSON stream (Ollama's
default) or "stream": false. One JSON line per call: pid, status, input/output tokens as the
final object reported (prompt_eval_count, eval_count), t_start, t_end."""
import argparse
import http.client
import json
import os
import sys
import time
import urllib.request


def main():
    p = argparse.ArgumentParser(prog="py_ollama")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lib", choices=("urllib", "httpclient"), default="urllib")
    p.add_argument("--api", choices=("chat", "generate"), default="chat")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("-n", "--calls", type=int, default=1)
    p.add_argument("--model", default="llama3.2")
    p.add_argument("--num-predict", type=int, default=12)
    p.add_argument("--prompt-chars", type=int, default=200)
    p.add_argument("--tag", default=None)
    p.add_argument("--wait-file", help="before each call after the first, wait until this file exists")
    args = p.parse_args()
    path = "/api/" + args.api
    conn = http.client.HTTPConnection(args.host, args.port, timeout=60) if args.lib == "httpclient" else None
    for i in range(args.calls):
        while i and args.wait_file and not os.path.exists(args.wait_file):
            time.sleep(0.02)
        head = "call %d from pid %d: " % (i, os.getpid())
        n = max(args.prompt_chars - len(head), 0)
        text = head + ("word " * (n // 5 + 1))[:n]
        b = {"model": args.model, "options": {"num_predict": args.num_predict}}
        if args.no_stream:
            b["stream"] = False
        if args.api == "chat":
            b["messages"] = [{"role": "user", "content": text}]
        else:
            b["prompt"] = text
        data = json.dumps(b).encode()
        hdrs = {"Content-Type": "application/json"}
        if args.tag:
            hdrs["x-test-client"] = args.tag
        t0 = time.time()
        if conn is not None:
            conn.request("POST", path, body=data, headers=hdrs)
            resp = conn.getresponse()
            status, lines = resp.status, resp.read().splitlines()
        else:
            req = urllib.request.Request("http://%s:%d%s" % (args.host, args.port, path), data=data,
                                         headers=hdrs, method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, lines = resp.status, [ln for ln in resp]
        t1 = time.time()
        inp = out = None
        for ln in lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                continue
            if obj.get("done"):
                inp, out = obj.get("prompt_eval_count"), obj.get("eval_count")
        print(json.dumps({"client": "py_ollama", "call": i, "pid": os.getpid(), "status": status,
                          "input_tokens": inp, "output_tokens": out, "t_start": t0, "t_end": t1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
