#!/usr/bin/env python3
"""Honest conversations whose context grows with every turn.

--mode chat     a human chatting: N user messages, --pace S seconds apart (± --jitter), every
                --continue-every K-th message is just "continue"; the whole history is sent
                each time (system, then user/assistant pairs).
--mode session  a long single-agent coding session: each turn the model "asks" for a tool
                (an OpenAI tool call: read_file with a new path) and the tool's result (new text
                every time) is appended; the context grows call after call, --pace apart
                (default 0: as fast as the model answers).

The simulator always answers "tok tok ...", which no real model does. With
--history-replies synthetic (the default) the assistant turn kept in the history is a
different, deterministic answer for every turn (as a real model's would be); with `served`
it is the simulator's text.

Flags (besides common.py's): --turns N (default 10), --pace S, --jitter S, --continue-every K
(0 = never), --mode, --history-replies, --words N. One JSON line per call (common.py format,
plus "turn", "kind": question|continue|tool, "history_len");
{"exit": 0, ...} at the end.
"""
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "chat_agent"

QUESTIONS = [
    "How do I rotate the TLS certificates of our staging cluster without downtime?",
    "What does the error 'too many open files' mean when the indexer starts?",
    "Can you draft a short note to the team about Friday's maintenance window?",
    "Which of these two queries would use the index on created_at, and why?",
    "Suggest a name for a library that parses invoices from scanned PDFs.",
    "Explain the difference between a mutex and a semaphore with a kitchen analogy.",
    "What should I check first when the nightly backup job runs twice as long as usual?",
    "Rewrite this sentence so it sounds friendlier: the report is late because of you.",
    "Give me three ideas for a team lunch that also works for vegetarians.",
    "How would you test a function that depends on the current time?",
    "What is a reasonable retry policy for a payment webhook?",
    "Summarize the pros and cons of monorepos for a team of eight.",
]


def main():
    p = common.parser(NAME)
    p.add_argument("--mode", choices=["chat", "session"], default="chat")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--pace", type=float, default=None, help="seconds between turns (chat: 1.5, session: 0)")
    p.add_argument("--jitter", type=float, default=0.3)
    p.add_argument("--continue-every", type=int, default=0)
    p.add_argument("--history-replies", choices=["synthetic", "served"], default="synthetic")
    p.add_argument("--words", type=int, default=40)
    args = p.parse_args()
    pace = args.pace if args.pace is not None else (1.5 if args.mode == "chat" else 0.0)
    rng = random.Random("chat/%s/%d" % (args.tag, os.getpid()))
    client = llm.Client(args, NAME)
    tag = args.tag or "chat"
    if args.mode == "chat":
        history = [{"role": "system", "content": "You are a friendly, concise assistant."}]
    else:
        history = [{"role": "system", "content": "You are a coding agent. Use the tools to read the code."},
                   {"role": "user", "content": "Find why the invoice totals are off by one cent and fix it. "
                                               + llm.words("%s/task" % tag, args.words)}]
    for t in range(args.turns):
        if t and pace:
            time.sleep(max(0.0, pace + rng.uniform(-args.jitter, args.jitter)))
        if args.mode == "chat":
            if args.continue_every and t and t % args.continue_every == 0:
                kind, text = "continue", "continue"
            else:
                kind = "question"
                text = QUESTIONS[t % len(QUESTIONS)]
                if t >= len(QUESTIONS):
                    text += " (" + llm.words("%s/q/%d" % (tag, t), 8) + ")"
            history.append({"role": "user", "content": text})
            r = client.call(history, turn=t, kind=kind, history_len=len(history))
            reply = r["text"]
            if args.history_replies == "synthetic":
                reply = "Answer %d: %s" % (t, llm.words("%s/a/%d" % (tag, t), args.words))
            history.append({"role": "assistant", "content": reply})
        else:
            r = client.call(history, turn=t, kind="tool", history_len=len(history))
            path = "src/billing/module_%02d.py" % t
            call_id = "call_%s" % llm.words("%s/id/%d" % (tag, t), 1) + "%06d" % (t * 7919 % 1000000)
            history.append({"role": "assistant", "content": None if args.history_replies == "synthetic" else r["text"],
                            "tool_calls": [{"id": call_id, "type": "function",
                                            "function": {"name": "read_file",
                                                         "arguments": json.dumps({"path": path})}}]})
            history.append({"role": "tool", "tool_call_id": call_id,
                            "content": "# %s\n%s" % (path, llm.words("%s/file/%d" % (tag, t), args.words * 2))})
    client.close()
    return llm.emit_exit(NAME, 0, turns=args.turns)


if __name__ == "__main__":
    sys.exit(main())
