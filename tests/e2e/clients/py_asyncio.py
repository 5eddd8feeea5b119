#!/usr/bin/env python3
"""Agent: asyncio streams with ssl (OpenSSL on memory BIOs: the SSL object has no fd).

Hand-written HTTP/1.1 over asyncio.open_connection(ssl=ctx); N calls on one keep-alive
connection unless --conn-per-call; --parallel K runs K connections concurrently (calls are
spread over them)."""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


async def read_response(reader, api, stream):
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    hdrs = {}
    while True:
        ln = await reader.readline()
        if ln in (b"\r\n", b"\n", b""):
            break
        k, _, v = ln.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    body = bytearray()
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in hdrs:
        body += await reader.readexactly(int(hdrs["content-length"]))
    else:
        body += await reader.read()
    close = hdrs.get("connection", "").lower() == "close"
    return status, bytes(body), hdrs.get("content-encoding"), close


async def worker(args, ctx, calls, conn_no):
    reader = writer = None
    for i in calls:
        if i and args.interval:
            await asyncio.sleep(args.interval)
        if writer is None or args.conn_per_call:
            if writer is not None:
                writer.close()
            reader, writer = await asyncio.open_connection(
                args.host, args.port, ssl=ctx, server_hostname=None if args.plain else args.host)
        data = common.body(args, i)
        hdrs = common.headers(args, len(data))
        hdrs["Host"] = "%s:%d" % (args.host, args.port)
        head = "POST %s HTTP/1.1\r\n" % common.PATHS[args.api]
        head += "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
        t0 = time.time()
        writer.write(head.encode("latin-1"))
        writer.write(data)
        await writer.drain()
        status, raw, enc, close = await asyncio.wait_for(
            read_response(reader, args.api, args.stream), args.timeout)
        t1 = time.time()
        usage, chars = common.parse_full(args.api, args.stream, status, raw, enc)
        common.emit("py_asyncio", args, i, status, usage, chars, t0, t1, conn_no)
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:
            pass


async def amain(args):
    ctx = None if args.plain else common.ssl_context(args)
    k = max(1, args.parallel)
    groups = [list(range(j, args.calls, k)) for j in range(k)]
    await asyncio.gather(*(worker(args, ctx, g, j + 1) for j, g in enumerate(groups) if g))


def main():
    p = common.parser("py_asyncio")
    p.add_argument("--conn-per-call", action="store_true")
    p.add_argument("--parallel", type=int, default=1)
    args = p.parse_args()
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
