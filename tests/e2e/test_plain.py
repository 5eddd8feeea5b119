#!/usr/bin/env python3
"""Plain HTTP (endpoints with `tls: false`: Ollama, vLLM, llama.cpp, LM Studio, LiteLLM on a
local port). The connect tracepoint puts such a socket in plain_socks; per-process probes read
it — the C library's send/recv/write/read (Python, curl) and Go's internal/poll.(*FD)
Write/Read (Go makes raw syscalls) — and the same parser and adapters as TLS make the calls.

  * Python (urllib: a connection per call; http.client: keep-alive) to an Ollama-like plain
    server, /api/chat and /api/generate, NDJSON streams and "stream": false: each call
    recorded once, attributed to the client's pid and cgroup, tokens exact;
  * a Go net/http client, the same;
  * curl to an OpenAI-compatible plain server: the same, and its API key is never stored;
  * a {requests: 1} budget with action throttle holds a plain-HTTP client (Python, Go) before
    its next request leaves: the simulator has not received it while the client is stopped,
    and receives it after the release.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

PY_OLLAMA = os.path.join(abtest.CLIENTS, "py_ollama.py")
GO_SRC = os.path.join(abtest.CLIENTS, "go_ollama")
GO_BIN = []


def setUpModule():
    abtest.require_daemon()


def build_go():
    if GO_BIN:
        return GO_BIN[0]
    abtest.require_tools("go")
    tmp = tempfile.mkdtemp(prefix="ab-e2e-plain-go-")
    unittest.addModuleCleanup(shutil.rmtree, tmp, True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GOPROXY": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": os.path.join(tmp, "cache"), "GOPATH": os.path.join(tmp, "gopath"), "HOME": tmp,
           "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    out = os.path.join(tmp, "go_ollama")
    r = subprocess.run(["go", "build", "-o", out, "."], cwd=GO_SRC, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    abtest.require_or_skip(r.returncode == 0, "go build failed: %s" % r.stdout[-2000:])
    GO_BIN.append(out)
    return out


def plain_policy(sim, extra=""):
    return ("endpoints:\n"
            "  - {host: 127.0.0.1, port: %d, api: ollama, tls: false}\n"
            "  - {host: localhost, port: %d, api: ollama, tls: false}\n" % (sim.port, sim.port)) + extra


def short(evs):
    return json.dumps([{k: e.get(k) for k in ("kind", "pid", "cgroup", "comm")} | {"detail": detail(e)}
                       for e in evs])[:3000]


def start(cg, sim, argv, tag):
    errfile = tempfile.NamedTemporaryFile(prefix="plain-", suffix=".err", delete=False, dir=abtest.scratch_dir())
    p = cg.run(argv, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL, env=sim.client_env(),
               cwd=abtest.HERE)
    a = abtest.Agent(p, tag)
    a.errfile = errfile
    a.kind = tag
    return a


def py_ollama(sim, tag, *args):
    return [abtest.PYTHON, PY_OLLAMA, "--port", str(sim.port), "--tag", tag] + [str(x) for x in args]


def go_ollama(sim, tag, *args):
    return [build_go(), "-port", str(sim.port), "-tag", tag] + [str(x) for x in args]


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


class PlainCapture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        cls.sim = abtest.Simulator(plain=True).__enter__()
        try:
            cls.daemon = Daemon(plain_policy(cls.sim)).__enter__()
        except BaseException:
            cls.sim.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.daemon.__exit__(None, None, None)
        cls.sim.__exit__(None, None, None)

    def check_calls(self, cg, agent, tag, n, path, comm=None):
        """comm: the calls are made by children of the agent (curl_agent.sh runs curl per call)."""
        events, _timeline, calls = abtest.observe_calls(self.daemon, cg.path, [agent], n)
        self.assertEqual(len(calls), n, "the client made %d of %d calls; stderr: %s" % (len(calls), n, agent.stderr_text()))
        for c in calls:
            self.assertEqual(c["status"], 200, c)
        self.assertEqual(len(events), n, "want each of %d calls once as llm_call in %s: %s\nlog:\n%s"
                         % (n, cg.path, short(events), self.daemon.log_tail(30)))
        for e in events:
            d = detail(e)
            if comm:
                self.assertEqual(e.get("comm"), comm, short([e]))
            else:
                self.assertEqual(e.get("pid"), agent.pid, short([e]))
            self.assertEqual(e.get("cgroup"), cg.path, short([e]))
            self.assertEqual(d.get("path"), path, short([e]))
            self.assertEqual(d.get("status"), 200, short([e]))
            self.assertIs(d.get("complete"), True, short([e]))
            self.assertIs(d.get("estimated"), False, short([e]))
        self.sim.wait_quiet(tag)
        served = self.sim.records(tag)
        self.assertEqual(len(served), n)
        self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in events),
                         sorted((s["input_tokens"], s["output_tokens"]) for s in served), "tokens (input, output) per call")
        self.assertEqual(sorted((c["input_tokens"], c["output_tokens"]) for c in calls),
                         sorted((s["input_tokens"], s["output_tokens"]) for s in served), "what the client was told")
        return events

    def test_01_python_ollama_calls_recorded(self):
        """urllib and http.client, /api/chat and /api/generate, streamed (NDJSON) and not."""
        cases = [("urllib", "chat", False), ("urllib", "generate", True), ("httpclient", "chat", True),
                 ("httpclient", "generate", False)]
        for lib, api, no_stream in cases:
            tag = "py-%s-%s-%s" % (lib, api, "json" if no_stream else "ndjson")
            with self.subTest(tag=tag), Cgroup(tag) as cg:
                args = ["--lib", lib, "--api", api, "-n", 3, "--num-predict", 17]
                if no_stream:
                    args.append("--no-stream")
                a = start(cg, self.sim, py_ollama(self.sim, tag, *args), tag)
                events = self.check_calls(cg, a, tag, 3, "/api/" + api)
                for e in events:
                    self.assertEqual(detail(e).get("model"), "llama3.2", short([e]))
                    self.assertEqual(detail(e).get("output_tokens"), 17, short([e]))

    def test_02_go_ollama_calls_recorded(self):
        """Go net/http (raw syscalls, read at internal/poll.(*FD)): streamed and not."""
        for api, stream in (("chat", "true"), ("generate", "false")):
            tag = "go-%s-%s" % (api, stream)
            with self.subTest(tag=tag), Cgroup(tag) as cg:
                a = start(cg, self.sim, go_ollama(self.sim, tag, "-api", api, "-stream=" + stream, "-n", 3,
                                                  "-num-predict", 9), tag)
                events = self.check_calls(cg, a, tag, 3, "/api/" + api)
                for e in events:
                    self.assertEqual(detail(e).get("output_tokens"), 9, short([e]))
                att = [e for e in self.daemon.events("probe_attached") if e.get("pid") == a.pid]
                self.assertEqual(len(att), 1, short(att))
                self.assertIn("plain:go", str(detail(att[0]).get("tls")), short(att))

    def test_03_curl_openai_compatible_plain(self):
        """curl (libc send/recv) to an OpenAI-compatible plain server (vLLM, llama.cpp, LiteLLM
        speak this): recorded once each, tokens exact; the API key is never stored."""
        tag = "curl-plain"
        with Cgroup(tag) as cg:
            a = start(cg, self.sim, abtest.agent_cmd("curl", self.sim, "-n", 3, "--tag", tag, "--max-tokens", 21), tag)
            events = self.check_calls(cg, a, tag, 3, "/v1/chat/completions", comm="curl")
            self.assertEqual(len({e.get("pid") for e in events}), 3, "one curl process per call: " + short(events))
        con = sqlite3.connect("file:%s?mode=ro" % self.daemon.db, uri=True)
        try:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                for row in con.execute("SELECT * FROM \"%s\"" % table):
                    self.assertNotIn("AGENTBRAKE-SECRET", json.dumps(row, default=str), table)
        finally:
            con.close()
        with open(self.daemon.log_path, errors="replace") as f:
            self.assertNotIn("AGENTBRAKE-SECRET", f.read())


class PlainThrottle(unittest.TestCase):
    def hold_case(self, make_argv, tag):
        """{requests: 1, window: 4s}, throttle: the first call passes; the second is held before
        it leaves (the process stopped, paused with reason budget, the simulator without it)
        and released when the window rolls, then served and recorded."""
        with abtest.Simulator(plain=True) as sim, Cgroup(tag) as cg:
            pol = plain_policy(sim, "max_hold: 60s\ncooldown: 1s\nbudgets:\n"
                               "  - name: plainthr\n    match: {cgroup: \"%s\"}\n    per: cgroup\n"
                               "    limits:\n      - {requests: 1, window: 4s}\n    action: throttle\n" % cg.path)
            with Daemon(pol) as d:
                go = os.path.join(abtest.scratch_dir(), "plain-go-%s-%d" % (tag, os.getpid()))
                a = start(cg, sim, make_argv(sim, tag, go), tag)
                try:
                    first = a.wait_line(lambda x: x.get("call") == 0, timeout=30)
                    self.assertEqual(first["status"], 200)
                    abtest.wait_visible(d, cg.path, 1, first["t_end"], what="the first plain call")
                    with open(go, "w"):
                        pass   # the client makes its second call now: over budget

                    def held():
                        p = [e for e in d.events("paused") if detail(e).get("reason") == "budget"
                             and e.get("pid") == a.pid]
                        return p if p and proc_state(a.pid) == "T" else None
                    abtest.wait_for(held, 20, what="the plain client held (paused, reason budget, stopped)",
                                    on_fail=lambda: d.log_tail(40))
                    t_held = time.time()
                    # held before the request left: the simulator has only the first
                    self.assertEqual(len(sim.records(tag, started=True)), 1, sim.records(tag, started=True))
                    self.assertEqual(proc_state(a.pid), "T")
                    abtest.wait_for(lambda: [e for e in d.events("resumed") if detail(e).get("reason") == "budget"
                                             and e.get("pid") == a.pid], 30, what="the plain client released")
                    second = a.wait_line(lambda x: x.get("call") == 1, timeout=30)
                    a.wait(timeout=30)
                finally:
                    if a.p.poll() is None:
                        a.p.kill()
                        a.p.wait(timeout=10)
                self.assertEqual(second["status"], 200)
                sim.wait_quiet(tag)
                recs = sim.records(tag)
                self.assertEqual(len(recs), 2)
                started = sorted(r["ts_start"] for r in sim.records(tag, started=True))
                self.assertGreater(started[1], t_held, "the second request reached the simulator after the hold")
                ev = abtest.wait_visible(d, cg.path, 2, second["t_end"], what="the throttled plain calls")
                self.assertEqual(len(ev), 2, short(ev))
                self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in ev),
                                 sorted((r["input_tokens"], r["output_tokens"]) for r in recs))
                c = d.status().get("counters", {})
                self.assertGreaterEqual(c.get("gate_requests_held", 0), 1, c)

    def test_04_python_held_before_its_next_request_leaves(self):
        self.hold_case(lambda sim, tag, go: py_ollama(sim, tag, "--lib", "httpclient", "-n", 2, "--wait-file", go),
                       "plainthr-py")

    def test_05_go_held_before_its_next_request_leaves(self):
        self.hold_case(lambda sim, tag, go: go_ollama(sim, tag, "-n", 2, "-wait-file", go), "plainthr-go")


if __name__ == "__main__":
    unittest.main()
