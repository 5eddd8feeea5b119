#!/usr/bin/env python3
"""HTTP/2 over TLS, on the real kernel path, against an HTTP/2-only simulator (h2sim: libnghttp2's
server session over OpenSSL with ALPN "h2" only, built under tests/e2e/h2sim; a client that
cannot speak HTTP/2 fails there).

  * Debian's curl --http2 (libssl.so.3 through SSL_write/SSL_read), streaming with
    stream_options.include_usage: each call recorded once, attributed to its curl pid, tokens
    exact, the key nowhere;
  * Node's http2 module, two calls on ONE session (the second's headers HPACK-indexed against
    the first's), OpenAI streaming and Anthropic Messages: each recorded once, tokens exact;
  * a Go net/http client (h2 by ALPN, Go crypto/tls probes), several goroutines whose requests
    interleave on one connection: each recorded once with its own tokens;
  * a tokens budget with action throttle holds the Node h2 client when its next HEADERS frame is
    written: the simulator has not received that request while the client is held, and it is
    released (and served, and recorded) when room returns;
  * a daemon started while an h2 connection is open sees it mid-way: counted in
    h2_hpack_desync, nothing misattributed, and a new connection of the same process is exact.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
import simulator  # noqa: E402  (make_cert)
from abtest import Cgroup, Daemon, detail  # noqa: E402

KEY = abtest.SECRETS["openai"]
ANT_KEY = abtest.SECRETS["anthropic"]
GO_BIN = {}


class H2Simulator(abtest.Simulator):
    """tests/e2e/h2sim as a subprocess, with the Python simulator's interface (records, port…)."""

    def __enter__(self):
        abtest.require_tools("openssl")
        exe = os.path.join(abtest.build_dir(), "tests", "ab_h2sim")
        abtest.require_or_skip(os.access(exe, os.X_OK), "ab_h2sim not built (%s)" % exe)
        self.tmp = tempfile.mkdtemp(prefix="ab-e2e-h2sim-")
        self.log = os.path.join(self.tmp, "served.jsonl")
        self.control = os.path.join(self.tmp, "control.json")
        os.makedirs(os.path.join(self.tmp, "tls"))
        cert, key = simulator.make_cert(os.path.join(self.tmp, "tls"))
        self.errlog = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen([exe, "--cert", cert, "--key", key, "--log", self.log],
                                     stdout=subprocess.PIPE, stderr=self.errlog, stdin=subprocess.DEVNULL,
                                     preexec_fn=lambda: abtest._die_with_parent(signal.SIGTERM))
        try:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("h2sim did not start: " + abtest.tail(self.errlog.name))
            info = json.loads(line)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.port, self.cafile, self.tls = info["port"], info["cafile"], True
        self._listen_fds = self._socket_fds()
        return self


def short(evs):
    return json.dumps([{k: e.get(k) for k in ("kind", "pid", "cgroup", "comm")} | {"detail": detail(e)}
                       for e in evs])[:3000]


def start_client(cg, argv, sim, tag, env=None):
    errfile = tempfile.NamedTemporaryFile(prefix="h2-client-", suffix=".err", delete=False, dir=abtest.scratch_dir())
    p = cg.run(argv, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL,
               env=sim.client_env(env), cwd=abtest.HERE)
    a = abtest.Agent(p, tag)
    a.errfile = errfile
    return a


def curl_call(cg, sim, tag, prompt, max_tokens):
    """One curl --http2 process, one streaming call with include_usage; returns (pid, output)."""
    work = tempfile.mkdtemp(prefix="ab-curl-h2-", dir=abtest.scratch_dir())
    hdr = os.path.join(work, "headers")
    with open(hdr, "w") as f:   # the key in a header file, never on the command line
        f.write("Content-Type: application/json\nAuthorization: Bearer %s\nx-test-client: %s\n" % (KEY, tag))
    body = json.dumps({"model": "e2e-gpt", "max_tokens": max_tokens, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": prompt}]})
    errfile = open(os.path.join(work, "err"), "wb")
    p = cg.run(["curl", "--http2", "-sS", "-N", "--max-time", "30", "--cacert", sim.cafile, "-H", "@" + hdr,
                "-w", "\n#proto=%{http_version} status=%{http_code}\n", "-d", body,
                "https://localhost:%d/v1/chat/completions" % sim.port],
               stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL, env=sim.client_env())
    out, _ = p.communicate(timeout=60)
    errfile.close()
    with open(os.path.join(work, "err")) as f:
        err = f.read()
    assert p.returncode == 0, "curl exited %d: %s" % (p.returncode, err)
    return p.pid, out.decode()


def sse_usage(text):
    u = None
    for line in text.splitlines():
        if line.startswith("data: {"):
            ev = json.loads(line[6:])
            if ev.get("usage"):
                u = ev["usage"]
    return u


def h2_status(d):
    return d.status().get("counters", {})


class H2Capture(abtest.SimulatorCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        cls.sim = H2Simulator().__enter__()
        try:
            cls.daemon = Daemon(abtest.policy_for(cls.sim)).__enter__()
        except BaseException:
            cls.sim.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.daemon.__exit__(None, None, None)
        finally:
            cls.sim.__exit__(None, None, None)

    def check_calls(self, cg, pids, served, n, what):
        """n llm_call events for cgroup `cg`: each once, by one of `pids`, tokens as served."""
        ev = abtest.wait_visible(self.daemon, cg.path, n, time.time(), what=what)
        abtest.assert_stays(lambda: len(self.daemon.calls(cg.path)) == n, 0.5, "no %s recorded twice" % what)
        ev = self.daemon.calls(cg.path)
        self.assertEqual(len(ev), n, short(ev))
        for e in ev:
            d = detail(e)
            self.assertIn(e.get("pid"), pids, short([e]))
            self.assertEqual(e.get("cgroup"), cg.path, short([e]))
            self.assertEqual(d.get("status"), 200, short([e]))
            self.assertIs(d.get("complete"), True, short([e]))
            self.assertIs(d.get("estimated"), False, short([e]))
        self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in ev),
                         sorted((s["input_tokens"], s["output_tokens"]) for s in served), "tokens per call")
        return ev

    def test_01_curl_http2_streaming_include_usage(self):
        """Two curl --http2 processes, one streaming call each: recorded once each, by its pid."""
        tag = "curl-h2"
        with Cgroup("h2-curl") as cg:
            pids = []
            for i, mt in enumerate((7, 23)):
                pid, out = curl_call(cg, self.sim, tag, "curl over h2 call %d " % i + "word " * 20, mt)
                self.assertIn("#proto=2 status=200", out, "curl did not speak HTTP/2: " + out[-300:])
                self.assertEqual(sse_usage(out)["completion_tokens"], mt)
                pids.append(pid)
            self.sim.wait_quiet(tag)
            served = self.sim.records(tag)
            self.assertEqual(len(served), 2)
            self.assertTrue(all(s["proto"] == "h2" for s in served))
            ev = self.check_calls(cg, pids, served, 2, "curl --http2 calls")
            self.assertEqual(sorted(e.get("pid") for e in ev), sorted(pids))
            for e in ev:
                d = detail(e)
                self.assertEqual(d.get("path"), "/v1/chat/completions", short([e]))
                self.assertEqual(d.get("model"), "e2e-gpt", short([e]))
                self.assertIs(d.get("stream"), True, short([e]))
        c = h2_status(self.daemon)
        self.assertGreaterEqual(c.get("h2_streams", 0), 2, c)
        self.assertEqual(c.get("h2_hpack_desync"), 0, c)

    def test_02_node_two_calls_on_one_session(self):
        """Node http2: 2 OpenAI streaming calls on one session (HPACK-indexed headers), then 2
        Anthropic streaming calls on another: 4 calls, each once, tokens exact."""
        with Cgroup("h2-node") as cg:
            a = start_client(cg, ["node", os.path.join(abtest.NODE_DIR, "h2_agent.mjs"), "--port", str(self.sim.port),
                                  "-n", "2", "--stream", "--include-usage", "--max-tokens", "9", "--tag", "node-h2"],
                             self.sim, "node-h2")
            a.wait(timeout=60)
            b = start_client(cg, ["node", os.path.join(abtest.NODE_DIR, "h2_agent.mjs"), "--port", str(self.sim.port),
                                  "-n", "2", "--stream", "--api", "anthropic", "--key", ANT_KEY,
                                  "--max-tokens", "5", "--tag", "node-h2"],
                             self.sim, "node-h2-ant")
            b.wait(timeout=60)
            calls = a.calls() + b.calls()
            self.assertEqual(len(calls), 4, a.stderr_text() + b.stderr_text())
            self.sim.wait_quiet("node-h2")
            served = self.sim.records("node-h2")
            self.assertEqual(len(served), 4)
            # one session each: stream ids 1 and 3
            self.assertEqual(sorted(s["stream_id"] for s in served), [1, 1, 3, 3])
            self.assertEqual(sorted((c["usage"]["input_tokens"], c["usage"]["output_tokens"]) for c in calls),
                             sorted((s["input_tokens"], s["output_tokens"]) for s in served))
            ev = self.check_calls(cg, [a.pid, b.pid], served, 4, "Node http2 calls")
            self.assertEqual(sorted(detail(e).get("api") or detail(e).get("provider") for e in ev).count("anthropic"), 2,
                             short(ev))

    def test_03_go_net_http_h2_interleaved(self):
        """A Go net/http client, h2 by ALPN: 8 calls from 4 goroutines multiplexed on one
        connection (their streams interleave): each recorded once with its own tokens."""
        abtest.require_tools("go")
        exe = go_build()
        with Cgroup("h2-go") as cg:
            a = start_client(cg, [exe, "-h2", "-port", str(self.sim.port), "-cafile", self.sim.cafile,
                                  "-tag", "go-h2", "-n", "8", "-parallel", "4"], self.sim, "go-h2")
            a.wait(timeout=90)
            calls = a.calls()
            self.assertEqual(len(calls), 8, a.stderr_text())
            self.assertTrue(all(c["proto"] == "HTTP/2.0" for c in calls), calls)
            self.sim.wait_quiet("go-h2")
            served = self.sim.records("go-h2")
            self.assertEqual(len(served), 8)
            self.check_calls(cg, [a.pid], served, 8, "Go h2 calls")
            att = [e for e in self.daemon.events("probe_attached") if e.get("pid") == a.pid]
            self.assertEqual(len(att), 1, short(att))


def go_build():
    if "h2" in GO_BIN:
        return GO_BIN["h2"]
    tmp = tempfile.mkdtemp(prefix="ab-e2e-go-h2-", dir=abtest.scratch_dir())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GOPROXY": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": os.path.join(tmp, "cache"), "GOPATH": os.path.join(tmp, "gopath"), "HOME": tmp,
           "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    out = os.path.join(tmp, "go_agent")
    r = subprocess.run(["go", "build", "-o", out, "."], cwd=os.path.join(abtest.CLIENTS, "go_agent"), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    abtest.require_or_skip(r.returncode == 0, "go build failed: " + r.stdout[-2000:])
    GO_BIN["h2"] = out
    return out


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


class H2Brake(unittest.TestCase):
    def test_04_throttle_holds_the_next_headers_frame(self):
        """{tokens: 150, window: 4s}, throttle; calls of 10 + 100 tokens on one h2 session. The
        first passes; the second HEADERS frame is held in the kernel (the process stopped, a paused
        event with reason budget) and the simulator has not received that request while held;
        when the window has room again it is released, served and recorded."""
        abtest.require_daemon()
        with H2Simulator() as sim, Cgroup("h2-thr") as cg:
            pol = abtest.policy_for(sim, "max_hold: 60s\ncooldown: 1s\nbudgets:\n"
                                    "  - name: h2thr\n    match: {cgroup: \"%s\"}\n    per: cgroup\n"
                                    "    limits:\n      - {tokens: 150, window: 4s}\n    action: throttle\n" % cg.path)
            with Daemon(pol) as d:
                go = os.path.join(abtest.scratch_dir(), "h2-go-%d" % os.getpid())
                a = start_client(cg, ["node", os.path.join(abtest.NODE_DIR, "h2_agent.mjs"), "--port", str(sim.port),
                                      "-n", "2", "--stream", "--include-usage", "--prompt-chars", "40",
                                      "--max-tokens", "100", "--tag", "h2thr", "--wait-file", go],
                                 sim, "h2thr")
                try:
                    first = a.wait_line(lambda x: x.get("call") == 0, timeout=30)
                    self.assertEqual(first["status"], 200)
                    abtest.wait_visible(d, cg.path, 1, first["t_end"], what="the first h2 call")
                    with open(go, "w"):
                        pass   # the client makes its second call now: over budget

                    def held():
                        p = [e for e in d.events("paused") if detail(e).get("reason") == "budget"
                             and e.get("pid") == a.pid]
                        return p if p and proc_state(a.pid) == "T" else None
                    abtest.wait_for(held, 20, what="the h2 client held (paused, reason budget, stopped)",
                                    on_fail=lambda: d.log_tail(40))
                    t_held = time.time()
                    # held before the request left: the simulator has only the first
                    self.assertEqual(len(sim.records("h2thr", started=True)), 1, sim.records("h2thr", started=True))
                    self.assertEqual(proc_state(a.pid), "T")
                    abtest.wait_for(lambda: [e for e in d.events("resumed") if detail(e).get("reason") == "budget"
                                             and e.get("pid") == a.pid], 30, what="the h2 client released")
                    second = a.wait_line(lambda x: x.get("call") == 1, timeout=30)
                    a.wait(timeout=30)
                finally:
                    if a.p.poll() is None:
                        a.p.kill()
                        a.p.wait(timeout=10)
                self.assertEqual(second["status"], 200)
                sim.wait_quiet("h2thr")
                recs = sim.records("h2thr")
                self.assertEqual(len(recs), 2)
                started = sorted(r["ts_start"] for r in sim.records("h2thr", started=True))
                self.assertGreater(started[1], t_held, "the second request reached the simulator after the hold")
                ev = abtest.wait_visible(d, cg.path, 2, second["t_end"], what="the throttled h2 calls")
                self.assertEqual(len(ev), 2, short(ev))
                self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in ev),
                                 sorted((r["input_tokens"], r["output_tokens"]) for r in recs))
                c = d.status().get("counters", {})
                self.assertGreaterEqual(c.get("gate_requests_held", 0), 1, c)
                self.assertEqual(c.get("gate_h2_unsynced"), 0, c)

    def test_05_midway_connection_counted_never_misattributed(self):
        """A daemon started while a Node h2 session is open sees its next call mid-way: counted
        (h2_hpack_desync), no call attributed from it; a new session of a new client is exact."""
        abtest.require_daemon()
        with H2Simulator() as sim, Cgroup("h2-mid") as cg:
            go = os.path.join(abtest.scratch_dir(), "h2-mid-%d" % os.getpid())
            a = start_client(cg, ["node", os.path.join(abtest.NODE_DIR, "h2_agent.mjs"), "--port", str(sim.port),
                                  "-n", "2", "--stream", "--include-usage", "--tag", "h2mid", "--wait-file", go],
                             sim, "h2mid")
            try:
                a.wait_line(lambda x: x.get("call") == 0, timeout=30)   # no daemon yet
                with Daemon(abtest.policy_for(sim)) as d:
                    abtest.wait_for(lambda: [e for e in d.events("probe_attached") if e.get("pid") == a.pid], 30,
                                    what="the running h2 client attached at daemon start",
                                    on_fail=lambda: d.log_tail(40))
                    with open(go, "w"):
                        pass
                    second = a.wait_line(lambda x: x.get("call") == 1, timeout=30)
                    a.wait(timeout=30)
                    abtest.wait_for(lambda: h2_status(d).get("h2_hpack_desync", 0) >= 1, 10,
                                    what="h2_hpack_desync counted", on_fail=lambda: json.dumps(h2_status(d)))
                    self.assertEqual(d.calls(cg.path), [], "a call read from a connection seen mid-way")
                    # a new client (new connection) is exact
                    b = start_client(cg, ["node", os.path.join(abtest.NODE_DIR, "h2_agent.mjs"), "--port",
                                          str(sim.port), "-n", "1", "--stream", "--include-usage", "--tag", "h2mid2"],
                                     sim, "h2mid2")
                    b.wait(timeout=60)
                    sim.wait_quiet("h2mid2")
                    ev = abtest.wait_visible(d, cg.path, 1, b.calls()[0]["t_end"], what="the new h2 session")
                    self.assertEqual([e.get("pid") for e in ev], [b.pid], short(ev))
                    r = sim.records("h2mid2")[0]
                    self.assertEqual((detail(ev[0]).get("input_tokens"), detail(ev[0]).get("output_tokens")),
                                     (r["input_tokens"], r["output_tokens"]))
                    self.assertEqual(second["status"], 200)
            finally:
                if a.p.poll() is None:
                    a.p.kill()
                    a.p.wait(timeout=10)

    def test_06_throttle_holds_go_h2_streams(self):
        """A Go net/http h2 client (Go crypto/tls probes: the write is gated at its entry), 8
        calls of 110 tokens from 2 goroutines on one connection under {tokens: 300, window: 3s},
        throttle: held at new streams' HEADERS (paused/resumed for its pid, counted in the
        kernel), every call succeeds over HTTP/2 and is recorded once with its tokens."""
        abtest.require_daemon()
        abtest.require_tools("go")
        exe = go_build()
        N, P, L, W = 8, 2, 300, 3
        with H2Simulator() as sim, Cgroup("h2-gothr") as cg:
            pol = abtest.policy_for(sim, "max_hold: 60s\ncooldown: 1s\nbudgets:\n"
                                    "  - name: h2gothr\n    match: {cgroup: \"%s\"}\n    per: cgroup\n"
                                    "    limits:\n      - {tokens: %d, window: %ds}\n    action: throttle\n"
                                    % (cg.path, L, W))
            with Daemon(pol) as d:
                a = start_client(cg, [exe, "-h2", "-port", str(sim.port), "-cafile", sim.cafile, "-tag", "h2gothr",
                                      "-n", str(N), "-parallel", str(P), "-prompt-chars", "40", "-max-tokens", "100"],
                                 sim, "h2gothr")
                a.wait(timeout=90)
                calls = a.calls()
                self.assertEqual(len(calls), N, a.stderr_text())
                self.assertTrue(all(c["status"] == 200 and c["proto"] == "HTTP/2.0" for c in calls), calls)

                def holds():
                    p = [e for e in d.events("paused") if detail(e).get("reason") == "budget" and e.get("pid") == a.pid]
                    r = [e for e in d.events("resumed") if detail(e).get("reason") == "budget" and e.get("pid") == a.pid]
                    return (p, r) if p and len(r) == len(p) else None
                d.wait_for(holds, 10, what="paused/resumed (budget) events of the Go h2 client")
                c = d.status().get("counters", {})
                self.assertGreaterEqual(c.get("gate_requests_held", 0), 1, c)
                self.assertEqual(c.get("gate_h2_unsynced"), 0, c)
                sim.wait_quiet("h2gothr")
                recs = sim.records("h2gothr")
                self.assertEqual(len(recs), N)
                ev = abtest.wait_visible(d, cg.path, N, max(x["t_end"] for x in calls), what="throttled Go h2 calls")
                self.assertEqual(len(ev), N, short(ev))
                self.assertTrue(all(e.get("pid") == a.pid for e in ev), short(ev))
                self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in ev),
                                 sorted((r["input_tokens"], r["output_tokens"]) for r in recs))


if __name__ == "__main__":
    unittest.main()
