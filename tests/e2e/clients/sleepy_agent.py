#!/usr/bin/env python3
"""Agent that keeps ONE keep-alive HTTPS connection open across rounds.

Round k (k = 0..N-1): make one call on the connection, print its JSON line and then
{"progress": "waiting", "round": k}, then wait for SIGUSR1 (or for --go-file to appear, which
it then removes) before the next round. Used to restart the daemon while the connection
stays open."""
import http.client
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    p = common.parser("sleepy_agent")
    p.add_argument("--go-file", help="wait for this file instead of SIGUSR1")
    p.add_argument("--max-wait", type=float, default=120.0, help="give up waiting after this")
    args = p.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    if args.plain:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    else:
        conn = http.client.HTTPSConnection(args.host, args.port, timeout=args.timeout,
                                           context=common.ssl_context(args))
    for i in range(args.calls):
        if i:
            if args.go_file:
                deadline = time.time() + args.max_wait
                while not os.path.exists(args.go_file):
                    if time.time() > deadline:
                        return 3
                    time.sleep(0.05)
                os.unlink(args.go_file)
            else:
                if signal.sigtimedwait({signal.SIGUSR1}, args.max_wait) is None:
                    return 3
        data = common.body(args, i)
        t0 = time.time()
        conn.request("POST", common.PATHS[args.api], body=data, headers=common.headers(args, len(data)))
        resp = conn.getresponse()
        raw = resp.read()
        t1 = time.time()
        if resp.will_close:
            print(json.dumps({"error": "server closed the keep-alive connection"}), flush=True)
            return 4
        usage, chars = common.parse_full(args.api, args.stream, resp.status, raw,
                                         resp.getheader("Content-Encoding"))
        common.emit("sleepy_agent", args, i, resp.status, usage, chars, t0, t1, 1,
                    local_port=conn.sock.getsockname()[1])
        print(json.dumps({"progress": "waiting", "round": i, "pid": os.getpid()}), flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
