#!/usr/bin/env python3
"""Agent with a naive retry loop: it makes a call and, on an error (429, 5xx, 529, or no
response), retries after --retry-delay seconds, ignoring any retry-after the provider sent
(unless --honour-retry-after). The test makes the simulator fail with
`--header "x-sim-status: 429" --header "x-sim-retry-after: 2"`.

Flags (besides common.py's): --attempts N (requests in all, default 10), --retry-delay S
(default 0.05), --honour-retry-after, --stop-on-success. One JSON line per attempt
(common.py format, plus "attempt" and "retry_after" when the response carried one);
{"exit": 0, "errors": E, ...} at the end.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "retry_agent"


def main():
    p = common.parser(NAME)
    p.add_argument("--attempts", type=int, default=10)
    p.add_argument("--retry-delay", type=float, default=0.05)
    p.add_argument("--honour-retry-after", action="store_true")
    p.add_argument("--stop-on-success", action="store_true")
    args = p.parse_args()
    client = llm.Client(args, NAME)
    msgs = [{"role": "user", "content": "Translate the release notes into French: " + llm.words("retry", 30)}]
    errors = 0
    for attempt in range(args.attempts):
        r = client.call(msgs, attempt=attempt)
        if r["status"] == 200:
            if args.stop_on_success:
                break
            continue
        errors += 1
        delay = args.retry_delay
        if args.honour_retry_after and r["retry_after"]:
            try:
                delay = max(delay, float(r["retry_after"]))
            except ValueError:
                pass
        time.sleep(delay)
    client.close()
    return llm.emit_exit(NAME, 0, errors=errors)


if __name__ == "__main__":
    sys.exit(main())
