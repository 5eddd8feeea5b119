#!/usr/bin/env python3
"""Agent: http.client over ssl (socket BIO: SSL_write_ex/SSL_read_ex on the socket's fd).

Makes N calls on ONE keep-alive connection (unless --conn-per-call), prints one JSON line per
call (see common.py). --progress prints {"progress": "first_data", ...} when the first bytes
of a streamed body arrive (a test can then kill the process mid-response)."""
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def connect(args):
    if args.plain:
        return http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    return http.client.HTTPSConnection(args.host, args.port, timeout=args.timeout,
                                       context=common.ssl_context(args))


def main():
    p = common.parser("py_httpclient")
    p.add_argument("--conn-per-call", action="store_true")
    p.add_argument("--expect-continue", action="store_true", help="send Expect: 100-continue")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    conn = None
    conn_no = 0
    for i in range(args.calls):
        if i and args.interval:
            time.sleep(args.interval)
        if conn is None or args.conn_per_call:
            if conn is not None:
                conn.close()
            conn = connect(args)
            conn_no += 1
        data = common.body(args, i)
        hdrs = common.headers(args, len(data))
        if args.expect_continue:
            hdrs["Expect"] = "100-continue"
        t0 = time.time()
        conn.request("POST", common.PATHS[args.api], body=data, headers=hdrs)
        resp = conn.getresponse()
        if args.stream and resp.status == 200:
            acc = common.SSEAccumulator(args.api)
            first = True
            while True:
                line = resp.readline()
                if not line:
                    break
                if first and args.progress:
                    print(json.dumps({"progress": "first_data", "pid": os.getpid(), "call": i}), flush=True)
                first = False
                acc.line(line)
            usage, chars = acc.usage, len("".join(acc.text))
        else:
            raw = resp.read()
            usage, chars = common.parse_full(args.api, False, resp.status, raw,
                                             resp.getheader("Content-Encoding"))
        t1 = time.time()
        if resp.will_close:
            conn.close()
            conn = None
        common.emit("py_httpclient", args, i, resp.status, usage, chars, t0, t1, conn_no)
    if conn is not None:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
