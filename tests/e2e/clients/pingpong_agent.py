#!/usr/bin/env python3
"""Agents that answer each other: each turn is ONE LLM call, then a message to the next agent.

Topologies
  TCP ring   --ring-dir DIR --index I --size K
             Agent I listens on 127.0.0.1 (port 0) and writes DIR/I.port, then connects to
             agent (I+1) % K and accepts agent (I-1) % K: every hop is a loopback TCP
             connect/accept pair. The conversation travels 0 → 1 → ... → K-1 → 0. Start the K
             agents in any order (each waits up to --setup-timeout for the others).
  pipes      --pipe-child
             This process (agent 0) forks a child (agent 1, this same program) connected by two
             pipes the child inherits across fork (parent → child, child → parent). The child
             prints its JSON lines to the same stdout.

Exchange: agent 0 makes an LLM call and sends its turn to agent 1; each agent, on a message
from its predecessor, makes an LLM call (whose prompt is that message) and sends a new turn to
its successor. One round trip = one lap of the ring: for two agents A → B, B calls the LLM,
B → A, A calls the LLM. With --turns N agent 0 makes N LLM calls, i.e. the ring completes
N - 1 round trips; then agent 0 sends STOP around the ring and every agent exits 0.

Other flags (besides common.py's --port/--cafile/--plain/--api/--model/--max-tokens/--tag/
--header/--timeout...):
  --think S        pause before each LLM call (default 0.05)
  --no-llm         this agent relays turns without calling the LLM (a tool server / broker)
  --words N        words of fresh text per turn (default 40; every turn's text differs)
  --eof-grace S    when the predecessor disappears (EOF), wait S s, then exit 3 (default 1.0)

Output: {"listening": PORT, ...} (TCP), one JSON line per LLM call (common.py format, plus
"index", "turn", "peer_turn"), and {"exit": RC, ...} on a normal end. A killed agent prints
no exit line.
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import llm  # noqa: E402

NAME = "pingpong_agent"


class TcpLink:
    def __init__(self, args):
        self.args = args
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        port = lst.getsockname()[1]
        path = os.path.join(args.ring_dir, "%d.port" % args.index)
        with open(path + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(path + ".tmp", path)
        llm.out({"listening": port, "index": args.index, "pid": os.getpid()})
        nxt = (args.index + 1) % args.size
        deadline = time.time() + args.setup_timeout
        npath = os.path.join(args.ring_dir, "%d.port" % nxt)
        while not os.path.exists(npath):
            if time.time() > deadline:
                raise SystemExit("agent %d: no port file from agent %d" % (args.index, nxt))
            time.sleep(0.02)
        with open(npath) as f:
            nport = int(f.read().strip())
        while True:
            try:
                self.out = socket.create_connection(("127.0.0.1", nport), timeout=args.setup_timeout)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.out.settimeout(None)
        lst.settimeout(args.setup_timeout)
        self.inp, _ = lst.accept()
        self.inp.settimeout(None)
        lst.close()
        self.rfile = self.inp.makefile("rb")

    def send(self, obj):
        try:
            self.out.sendall((json.dumps(obj) + "\n").encode())
            return True
        except OSError:
            return False

    def recv(self):
        line = self.rfile.readline()
        return json.loads(line) if line.strip() else None


class PipeLink:
    def __init__(self, rfd, wfd):
        self.r = os.fdopen(rfd, "rb")
        self.w = os.fdopen(wfd, "wb")

    def send(self, obj):
        try:
            self.w.write((json.dumps(obj) + "\n").encode())
            self.w.flush()
            return True
        except OSError:
            return False

    def recv(self):
        line = self.r.readline()
        return json.loads(line) if line.strip() else None


def spawn_pipe_child(args):
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    argv = [sys.executable, os.path.abspath(__file__)] + [a for a in sys.argv[1:] if a != "--pipe-child"]
    argv += ["--pipe-role", "child", "--index", "1", "--size", "2", "--rfd", str(p2c_r), "--wfd", str(c2p_w)]
    child = subprocess.Popen(argv, pass_fds=(p2c_r, c2p_w), stdin=subprocess.DEVNULL)
    os.close(p2c_r)
    os.close(c2p_w)
    llm.out({"pipe_child": child.pid, "pid": os.getpid()})
    return child, PipeLink(c2p_r, p2c_w)


def main():
    p = common.parser(NAME)
    p.add_argument("--ring-dir")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--size", type=int, default=2)
    p.add_argument("--pipe-child", action="store_true")
    p.add_argument("--pipe-role", choices=["parent", "child"], default=None, help=argparse_hidden())
    p.add_argument("--rfd", type=int, help=argparse_hidden())
    p.add_argument("--wfd", type=int, help=argparse_hidden())
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--think", type=float, default=0.05)
    p.add_argument("--no-llm", action="store_true")
    p.add_argument("--words", type=int, default=40)
    p.add_argument("--eof-grace", type=float, default=1.0)
    p.add_argument("--setup-timeout", type=float, default=60.0)
    args = p.parse_args()

    child = None
    if args.pipe_role == "child":
        link = PipeLink(args.rfd, args.wfd)
    elif args.pipe_child:
        args.index, args.size = 0, 2
        child, link = spawn_pipe_child(args)
    elif args.ring_dir:
        link = TcpLink(args)
    else:
        p.error("need --ring-dir or --pipe-child")

    client = llm.Client(args, NAME)
    tag = args.tag or "pp"
    history = [{"role": "system", "content": "You are agent %d of a team of %d; answer your colleague."
                % (args.index, args.size)}]

    def take_turn(turn, incoming, peer_turn):
        if args.think:
            time.sleep(args.think)
        if not args.no_llm:
            history.append({"role": "user", "content": incoming})
            r = client.call(history[-12:] if len(history) > 12 else history, index=args.index, turn=turn,
                            peer_turn=peer_turn)
            history.append({"role": "assistant", "content": r["text"]})
        text = "agent %d turn %d: %s" % (args.index, turn, llm.words("%s/%d/%d" % (tag, args.index, turn), args.words))
        return {"from": args.index, "turn": turn, "text": text}

    def end(rc):
        client.close()
        if child is not None:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        return llm.emit_exit(NAME, rc, index=args.index)

    turn = 0
    if args.index == 0:
        msg = take_turn(0, "Let us plan the migration of the billing service together. " +
                        llm.words("%s/task" % tag, args.words), None)
        turn = 1
        if not link.send(msg):
            return end(3)
    while True:
        m = link.recv()
        if m is None:
            time.sleep(args.eof_grace)   # if we are being killed with our peer, die silently
            return end(3)
        if m.get("stop"):
            if args.index != 0:
                link.send(m)
            return end(0)
        if args.index == 0 and turn >= args.turns:
            link.send({"stop": True})
            # wait for STOP to come back around (or the ring to close)
            while True:
                m = link.recv()
                if m is None or m.get("stop"):
                    return end(0)
        msg = take_turn(turn, m["text"], m.get("turn"))
        turn += 1
        if not link.send(msg):
            time.sleep(args.eof_grace)
            return end(3)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
