#!/usr/bin/env python3
"""A batch job: --prompts N distinct prompts (a review to classify each, different text every
time) run by --parallel P workers, so at most P calls are in flight at once.

--workers procs (default): the root spawns P worker processes (this program with
--worker-index W), all in the root's agent tree; worker W runs prompts W, W+P, W+2P, ... on its
own keep-alive connection. The root makes no LLM call itself.
--workers threads: P threads of this one process, one connection each.
--all-at-once (with procs): every worker starts up (interpreter, imports) and then waits; once
all P are ready the root releases them together, so their first calls start within
milliseconds of each other (a planner fanning out into sub-agents).

Flags (besides common.py's): --prompts N (default 50), --parallel P (default 8), --workers,
--words N (words per prompt, default 40). One JSON line per call (common.py format, plus
"prompt" and "worker"); the root ends with {"exit": RC, "workers": [PIDS], ...} (RC: the first
failing worker's status).
"""
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "batch_agent"


def run_worker(args, w):
    if args.ready_fd is not None:   # --all-at-once: say "ready", wait for the root's "go" on stdin
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
        sys.stdin.buffer.read(1)
    client = llm.Client(args, NAME)
    ok = True
    tag = args.tag or "batch"
    for i in range(w, args.prompts, args.parallel):
        text = ("Classify the sentiment of customer review #%d as positive, negative or mixed, and give "
                "one reason. Review: %s" % (i, llm.words("%s/review/%d" % (tag, i), args.words)))
        r = client.call([{"role": "user", "content": text}], prompt=i, worker=w)
        ok = ok and r["status"] == 200
    client.close()
    return 0 if ok else 1


def main():
    p = common.parser(NAME)
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--workers", choices=["procs", "threads"], default="procs")
    p.add_argument("--words", type=int, default=40)
    p.add_argument("--all-at-once", action="store_true")
    p.add_argument("--worker-index", type=int, default=None, help=argparse_hidden())
    p.add_argument("--ready-fd", type=int, default=None, help=argparse_hidden())
    args = p.parse_args()
    if args.worker_index is not None:
        return run_worker(args, args.worker_index)
    n = min(args.parallel, args.prompts)
    rc = 0
    pids = []
    if args.workers == "procs" and args.all_at_once:
        ready_r, ready_w = os.pipe()
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
                                  + ["--worker-index", str(w), "--ready-fd", str(ready_w)],
                                  stdin=subprocess.PIPE, pass_fds=(ready_w,)) for w in range(n)]
        os.close(ready_w)
        pids = [pr.pid for pr in procs]
        got = 0
        while got < n:
            b = os.read(ready_r, n - got)
            if not b:
                break   # a worker died before it was ready; release the others anyway
            got += len(b)
        os.close(ready_r)
        for pr in procs:   # go
            try:
                pr.stdin.write(b"g")
                pr.stdin.close()
            except OSError:
                pass
        for pr in procs:
            r = pr.wait()
            rc = rc or r
    elif args.workers == "procs":
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
                                  + ["--worker-index", str(w)], stdin=subprocess.DEVNULL) for w in range(n)]
        pids = [pr.pid for pr in procs]
        for pr in procs:
            r = pr.wait()
            rc = rc or r
    else:
        results = [1] * n

        def go(w):
            try:
                results[w] = run_worker(args, w)
            except Exception as e:  # noqa: BLE001
                llm.out({"worker_error": str(e)})

        ts = [threading.Thread(target=go, args=(w,)) for w in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rc = next((r for r in results if r), 0)
    return llm.emit_exit(NAME, rc, workers=pids)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
