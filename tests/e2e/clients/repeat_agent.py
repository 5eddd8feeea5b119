#!/usr/bin/env python3
"""Agent stuck in a loop: it sends the same request again and again, each time in a fresh
conversation, with only what an honest retry would change: a new request id, trace uuid,
tool-call id and timestamps (--vary ids, the default). --vary none sends byte-identical
prompts; --vary words gives every request different content (an honest control); --vary
counter sends a long (~2 KB) prompt in which only a step counter changes ("... step 1 ...",
"... step 2 ..."): an agent looping over the same instructions while counting.

Flags (besides common.py's): -n/--calls N, --interval S (between calls), --prompt TEXT (the
repeated task; a fixed ~60-word request by default). One JSON line per call (common.py
format, plus "vary"); {"exit": 0, ...} at the end.
"""
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "repeat_agent"

TASK = ("Summarize the attached incident report for the on-call channel and list the three most "
        "likely root causes, each with a confidence and the first check an engineer should run. "
        "Report: the checkout service returned errors for twenty minutes after the deploy; the "
        "database connection pool was exhausted, retries piled up behind the payment gateway, and "
        "the cache warmer kept restarting because its health probe timed out.")

# --vary counter: the same long runbook every time; only "step N" changes.
RUNBOOK = ("You are the migration agent for the billing database. Follow the runbook below exactly "
           "and report what you did in one short paragraph. " + llm.words("repeat_agent/runbook", 140)
           + ". Now carry out step %d of the runbook and stop. Remember: "
           + llm.words("repeat_agent/runbook-tail", 140) + ".")


def main():
    p = common.parser(NAME)
    p.add_argument("--vary", choices=["ids", "none", "words", "counter"], default="ids")
    p.add_argument("--prompt", default=TASK)
    args = p.parse_args()
    client = llm.Client(args, NAME)
    rng = random.Random()
    for i in range(args.calls):
        if i and args.interval:
            time.sleep(args.interval)
        now = time.time()
        if args.vary == "ids":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
            head = ("[request req_%s sent %s, trace %s, epoch %d]"
                    % ("%016x" % rng.getrandbits(64), stamp, uuid.uuid4(), int(now * 1000)))
            tool_id = "call_%s" % "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                                          for _ in range(24))
            text = "%s %s (tool call %s)" % (head, args.prompt, tool_id)
        elif args.vary == "counter":
            text = RUNBOOK % (i + 1)
        elif args.vary == "words":
            text = "request %d: %s" % (i, llm.words("%s/%d/%d" % (args.tag, os.getpid(), i), 60))
        else:
            text = args.prompt
        msgs = [{"role": "system", "content": "You are an incident-response assistant."},
                {"role": "user", "content": text}]
        client.call(msgs, vary=args.vary)
    client.close()
    return llm.emit_exit(NAME, 0)


if __name__ == "__main__":
    sys.exit(main())
