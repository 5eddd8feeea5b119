"""Conversation-level LLM client shared by the loop agents (pingpong, repeat, retry, chat,
batch, tool agents).

Same wire code as py_httpclient.py: http.client over ssl (or plain HTTP), one keep-alive
connection, headers from common.headers, usage from common.parse_full / SSEAccumulator, and
one JSON line per call through common.emit. What it adds: request bodies built from a list
of chat messages ({"role", "content"} plus OpenAI tool calls), the answer's text, the
retry-after header, and `words()`, a deterministic generator of varied English-like text so
that agents can make requests whose contents really differ (the simulator always answers
"tok tok ...", and a fixed filler would make every request a near-duplicate of the others).
"""
import contextlib
import http.client
import io
import json
import os
import random
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

EMIT_LOCK = threading.Lock()


def write_line(text):
    """One line to stdout in ONE write(2): several processes (pipe children, batch workers)
    share the test's stdout pipe, and print() may write the text and its newline separately
    (e.g. under PYTHONUNBUFFERED), which interleaves lines of different processes."""
    with EMIT_LOCK:
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), (text.rstrip("\n") + "\n").encode())


def out(obj):
    write_line(json.dumps(obj))


VOCAB = (
    "account action active address agent allow answer apple archive area argument array "
    "balance banana basket batch battery beacon before belief bench binary bird blanket "
    "border bottle branch bridge bucket budget buffer button cabin cable cactus camera "
    "canal candle canvas carbon carpet castle catalog cedar cellar census chapter charge "
    "cherry circle citizen claim client climate clock cloud cluster coast coffee column "
    "comet comment copper corner cotton county course cousin crane credit cricket crystal "
    "current custom cycle dancer debate decade decimal delta desert design detail device "
    "diamond digest dinner doctor domain donkey dragon drawer driver eagle echo editor "
    "effect elbow element empire energy engine estate event export fabric falcon family "
    "feather fiber figure filter finger forest format fossil fountain frame friend galaxy "
    "garden garlic gate gender ginger glacier glass global gravel guitar hammer harbor "
    "harvest helmet herald hollow honey horizon hotel hunter icon index insect island "
    "jacket jungle kernel kettle kitchen ladder lantern laser layer leader legend lemon "
    "letter lever library limit linen liquid lizard lobby locker lumber magnet mammal "
    "manner marble market meadow medal melody memory mentor metal meteor mirror module "
    "monkey mortar motion mountain muffin museum napkin native needle network nickel noble "
    "notice number oasis object ocean office olive onion option orange orbit orchard "
    "outcome owner oxygen paddle palace panel parade parcel parrot pastry patch pencil "
    "pepper period pillow pilot planet plaza pocket poem portal potato powder prairie "
    "prism profit pulse puzzle quarry quartz rabbit radar radio random reason record "
    "region relay remote report ribbon ridge river rocket rubber saddle salmon sample "
    "scale school screen season second sector signal silver sketch socket spider spiral "
    "stable statue stream street string summit sunset symbol system tablet talent temple "
    "tennis theory thread ticket timber tomato topic tower tractor trail travel tunnel "
    "turtle umbrella uniform valley vector velvet vendor venture vessel village violin "
    "volume voyage wagon walnut window winter wizard yellow zebra").split()


def words(seed, n=40):
    """n words of varied text, the same for the same seed (any str)."""
    rng = random.Random("ab-e2e/" + str(seed))
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def message_text(m):
    """A message flattened to text (content + tool calls), for APIs without tool messages."""
    parts = []
    c = m.get("content")
    if isinstance(c, str):
        parts.append(c)
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function") or {}
        parts.append("[tool call %s %s]" % (fn.get("name"), fn.get("arguments")))
    return "\n".join(p for p in parts if p)


def body(args, messages, max_tokens=None):
    """The request body (bytes) for `messages` in the wire format of args.api."""
    mt = args.max_tokens if max_tokens is None else max_tokens
    if args.api == "chat":
        b = {"messages": messages, "model": args.model, "max_tokens": mt}
        if args.stream:
            b["stream"] = True
            if getattr(args, "include_usage", False):
                b["stream_options"] = {"include_usage": True}
    elif args.api == "responses":
        b = {"model": args.model, "max_output_tokens": mt,
             "input": [{"role": "user" if m["role"] == "tool" else m["role"], "content": message_text(m)}
                       for m in messages]}
        if args.stream:
            b["stream"] = True
    else:
        system = "\n".join(message_text(m) for m in messages if m["role"] == "system")
        msgs = []
        for m in messages:
            if m["role"] == "system":
                continue
            role = "assistant" if m["role"] == "assistant" else "user"
            text = message_text(m) or "(empty)"
            if msgs and msgs[-1]["role"] == role:   # Anthropic wants alternating roles
                msgs[-1]["content"] += "\n" + text
            else:
                msgs.append({"role": role, "content": text})
        b = {"model": args.model, "max_tokens": mt, "messages": msgs}
        if system:
            b["system"] = system
        if args.stream:
            b["stream"] = True
    return json.dumps(b).encode()


def answer_text(api, obj):
    if api == "chat":
        return ((obj.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    if api == "anthropic":
        return "".join(c.get("text") or "" for c in obj.get("content") or [])
    out = []
    for item in obj.get("output") or []:
        out += [c.get("text") or "" for c in item.get("content") or []]
    return "".join(out)


class Client:
    """One keep-alive connection to the simulator; .call(messages) makes one LLM call and
    prints its JSON line. Reconnects when the server closed the connection."""

    def __init__(self, args, name):
        self.args = args
        self.name = name
        self.conn = None
        self.conn_no = 0
        self.calls = 0

    def _connect(self):
        a = self.args
        if a.plain:
            self.conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
        else:
            self.conn = http.client.HTTPSConnection(a.host, a.port, timeout=a.timeout,
                                                    context=common.ssl_context(a))
        self.conn_no += 1

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, messages, headers=None, max_tokens=None, emit=True, **extra):
        """One call. Returns {"status", "text", "usage", "retry_after", "t_start", "t_end"};
        status 0 when no response came (connection error)."""
        a = self.args
        data = body(a, messages, max_tokens)
        hdrs = common.headers(a, len(data))
        hdrs.update(headers or {})
        i = self.calls
        self.calls += 1
        t0 = time.time()
        status, text, usage, retry_after, err = 0, "", None, None, None
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self._connect()
            try:
                self.conn.request("POST", common.PATHS[a.api], body=data, headers=hdrs)
                resp = self.conn.getresponse()
                status = resp.status
                retry_after = resp.getheader("retry-after")
                if a.stream and resp.status == 200:
                    acc = common.SSEAccumulator(a.api)
                    while True:
                        line = resp.readline()
                        if not line:
                            break
                        acc.line(line)
                    usage, text = acc.usage, "".join(acc.text)
                else:
                    raw = resp.read()
                    usage, _chars = common.parse_full(a.api, False, resp.status, raw,
                                                      resp.getheader("Content-Encoding"))
                    if resp.status == 200:
                        text = answer_text(a.api, json.loads(raw.decode("utf-8")))
                if resp.will_close:
                    self.close()
                err = None
                break
            except (http.client.HTTPException, ConnectionError, socket.timeout, ssl.SSLError, OSError) as e:
                self.close()
                status, err = 0, "%s: %s" % (type(e).__name__, e)
                if fresh or attempt:
                    break   # a fresh connection failed: report status 0, do not loop here
        t1 = time.time()
        rec = {"status": status, "text": text, "usage": usage, "retry_after": retry_after,
               "t_start": t0, "t_end": t1, "error": err}
        if emit:
            if err:
                extra["error"] = err
            if retry_after is not None:
                extra["retry_after"] = retry_after
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                common.emit(self.name, a, i, status, usage, len(text), t0, t1, self.conn_no, **extra)
            write_line(buf.getvalue())
        return rec


def emit_exit(client, rc, **extra):
    """The last line of an agent that ends normally (a killed agent never prints it)."""
    rec = {"exit": rc, "client": client, "pid": os.getpid(), "ppid": os.getppid(), "t": time.time()}
    rec.update(extra)
    out(rec)
    return rc
