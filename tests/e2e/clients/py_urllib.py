#!/usr/bin/env python3
"""Agent: urllib.request (a new HTTPS connection per call, `Connection: close`)."""
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    p = common.parser("py_urllib")
    p.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip")
    args = p.parse_args()
    scheme = "http" if args.plain else "https"
    ctx = None if args.plain else common.ssl_context(args)
    for i in range(args.calls):
        if i and args.interval:
            time.sleep(args.interval)
        data = common.body(args, i)
        hdrs = common.headers(args, len(data))
        if args.gzip:
            hdrs["Accept-Encoding"] = "gzip"
        url = "%s://%s:%d%s" % (scheme, args.host, args.port, common.PATHS[args.api])
        req = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
        t0 = time.time()
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=args.timeout) as resp:
                status, raw, enc = resp.status, resp.read(), resp.headers.get("Content-Encoding")
        except urllib.error.HTTPError as e:
            status, raw, enc = e.code, e.read(), None
        t1 = time.time()
        usage, chars = common.parse_full(args.api, args.stream, status, raw, enc)
        common.emit("py_urllib", args, i, status, usage, chars, t0, t1, i + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
