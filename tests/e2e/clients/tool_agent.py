#!/usr/bin/env python3
"""An agent using a local tool server that makes no LLM calls (an MCP-like server).

Agent (default): --turns N times: one LLM call with the growing conversation, then one tool
call to the server (read_file of a new path) whose result is appended to the conversation.
  --transport stdio   the agent starts the server as its child on stdin/stdout pipes (the way
                      MCP servers run), JSON lines both ways
  --transport tcp     the agent connects to a server on 127.0.0.1: --server-port P or
                      --server-port-file F (waits for the file)
  --pace S            seconds between turns (default 0)
Server: `tool_agent.py --serve [--port-file F]`: with --port-file it listens on 127.0.0.1
(port 0, written to F), serves any number of clients until killed, and prints
{"listening": PORT}; without, it serves one client on stdin/stdout. It never calls an LLM.

Agent output: one JSON line per LLM call (common.py format, plus "turn", "history_len"),
{"tool": ..., "ms": ...} per tool call, {"exit": 0, ...} at the end.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "tool_agent"


# ---- server -----------------------------------------------------------------------------------
def handle(req):
    args = (req.get("params") or {}).get("arguments") or {}
    path = str(args.get("path", ""))
    text = "# %s (served by tool server %d)\n%s" % (path, os.getpid(), llm.words("file/" + path, 60))
    return {"jsonrpc": "2.0", "id": req.get("id"), "result": {"content": [{"type": "text", "text": text}]}}


def serve_stream(rfile, wfile):
    for line in rfile:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            continue
        wfile.write((json.dumps(handle(req)) + "\n").encode())
        wfile.flush()


def serve_main(argv):
    port_file = None
    if "--port-file" in argv:
        port_file = argv[argv.index("--port-file") + 1]
    if port_file is None:
        serve_stream(sys.stdin.buffer, sys.stdout.buffer)
        return 0
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    port = lst.getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    llm.out({"listening": port, "pid": os.getpid()})

    def client(conn):
        with conn:
            serve_stream(conn.makefile("rb"), conn.makefile("wb"))

    while True:
        conn, _ = lst.accept()
        threading.Thread(target=client, args=(conn,), daemon=True).start()


# ---- agent ------------------------------------------------------------------------------------
def main():
    if "--serve" in sys.argv[1:]:
        return serve_main(sys.argv[1:])
    p = common.parser(NAME)
    p.add_argument("--transport", choices=["stdio", "tcp"], default="stdio")
    p.add_argument("--server-port", type=int)
    p.add_argument("--server-port-file")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--pace", type=float, default=0.0)
    args = p.parse_args()
    server = None
    if args.transport == "stdio":
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        wfile, rfile = server.stdin, server.stdout
        llm.out({"tool_server": server.pid, "transport": "stdio", "pid": os.getpid()})
    else:
        port = args.server_port
        if port is None:
            deadline = time.time() + 30
            while not os.path.exists(args.server_port_file or ""):
                if time.time() > deadline:
                    raise SystemExit("no tool server port file")
                time.sleep(0.02)
            with open(args.server_port_file) as f:
                port = int(f.read().strip())
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        wfile, rfile = sock.makefile("wb"), sock.makefile("rb")
    client = llm.Client(args, NAME)
    tag = args.tag or "tool"
    history = [{"role": "system", "content": "You are a coding agent with a read_file tool."},
               {"role": "user", "content": "Review the retry logic of the upload service. " + llm.words(tag, 30)}]
    for t in range(args.turns):
        if t and args.pace:
            time.sleep(args.pace)
        client.call(history, turn=t, history_len=len(history))
        path = "%s/src/upload/part_%02d.py" % (tag, t)
        call_id = "call_%s%04d" % (tag.replace("-", "")[:12], t)
        history.append({"role": "assistant", "content": None,
                        "tool_calls": [{"id": call_id, "type": "function",
                                        "function": {"name": "read_file", "arguments": json.dumps({"path": path})}}]})
        t0 = time.time()
        wfile.write((json.dumps({"jsonrpc": "2.0", "id": t, "method": "tools/call",
                                 "params": {"name": "read_file", "arguments": {"path": path}}}) + "\n").encode())
        wfile.flush()
        line = rfile.readline()
        if not line:
            return llm.emit_exit(NAME, 3, error="tool server went away")
        res = json.loads(line)
        text = res["result"]["content"][0]["text"]
        llm.out({"tool": "read_file", "turn": t, "ms": round((time.time() - t0) * 1000, 1), "pid": os.getpid()})
        history.append({"role": "tool", "tool_call_id": call_id, "content": text})
    client.close()
    if server is not None:
        server.stdin.close()
        server.wait(timeout=30)
    return llm.emit_exit(NAME, 0, tool_server=server.pid if server else None)


if __name__ == "__main__":
    sys.exit(main())
