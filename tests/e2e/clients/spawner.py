#!/usr/bin/env python3
"""Agent tree: a parent that makes one call itself, then spawns --children sub-agents
(py_httpclient.py, each a grandchild-free child) and one curl tool (curl_agent.sh, whose curl
is a grandchild), waits for them all and exits with the first failure. Every process prints
its own JSON lines to the shared stdout; the spawner adds
{"spawner": PID, "children": [PIDS]} at the end."""
import http.client
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = common.parser("spawner")
    p.add_argument("--children", type=int, default=2)
    p.add_argument("--no-curl", action="store_true")
    args = p.parse_args()
    conn_args = ["--host", args.host, "--port", str(args.port), "--api", args.api,
                 "--model", args.model, "--max-tokens", str(args.max_tokens), "-n", str(args.calls)]
    if args.cafile:
        conn_args += ["--cafile", args.cafile]
    if args.plain:
        conn_args += ["--plain"]
    if args.tag:
        conn_args += ["--tag", args.tag]

    # the root's own call
    if args.plain:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    else:
        conn = http.client.HTTPSConnection(args.host, args.port, timeout=args.timeout,
                                           context=common.ssl_context(args))
    data = common.body(args, 0)
    t0 = time.time()
    conn.request("POST", common.PATHS[args.api], body=data, headers=common.headers(args, len(data)))
    resp = conn.getresponse()
    raw = resp.read()
    t1 = time.time()
    conn.close()
    usage, chars = common.parse_full(args.api, False, resp.status, raw)
    common.emit("spawner", args, 0, resp.status, usage, chars, t0, t1, 1)

    procs = []
    for _ in range(args.children):
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "py_httpclient.py")] + conn_args))
    if not args.no_curl:
        procs.append(subprocess.Popen(["bash", os.path.join(HERE, "curl_agent.sh")] + conn_args))
    rc = 0
    for pr in procs:
        r = pr.wait(timeout=120)
        rc = rc or r
    print(json.dumps({"spawner": os.getpid(), "children": [pr.pid for pr in procs]}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
