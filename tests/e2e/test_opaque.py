#!/usr/bin/env python3
"""Opaque processes: a watched process whose TLS cannot be read is still seen and braked at
the socket (bpf/sock.bpf.c), and is judged once.

The client is the Go net/http agent (clients/go_agent) built here with the name of its
.gopclntab section damaged: the Go runtime does not need the section name, agentbrake does,
so the binary runs fine and agentbrake cannot find crypto/tls in it.

  * its calls are recorded, once per request, `estimated` with estimate_reason `opaque_tls`,
    tokens estimated from bytes, attributed to its pid and cgroup; one capture_blind event
    names the executable and why; `agents` shows capture: opaque;
  * Reach I item 7: only its first connect is held (capture_holds counts 1 for two
    connections); a second process of the same executable is not held at all (the verdict is
    cached per executable) and is still counted at the socket;
  * requests_per_minute with action throttle: past the limit, request starts are refused at
    the socket (an sk_msg program can neither sleep nor stop the process), so the simulator
    serves no more than the limit.

The real Codex CLI (@openai/codex 0.169.0, pinned in tests/e2e/agents/codex, installed on
first use: a static-pie stripped Rust binary using rustls) is opaque the same way: capture
blind, an estimated call per `codex exec`, and a requests_per_minute brake that refuses its
next request.
"""
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

GO_SRC = os.path.join(abtest.CLIENTS, "go_agent")
CODEX_DIR = os.path.join(abtest.HERE, "agents", "codex")
CODEX = os.path.join(CODEX_DIR, "node_modules", "@openai", "codex-linux-x64", "vendor",
                     "x86_64-unknown-linux-musl", "bin", "codex")
CODEX_KEY = "sk-test-codex-" + "7" * 20 + "-rustsecret"
BINARY = {}


def damage_gopclntab_name(path):
    """Renames the .gopclntab section (in the section-name string table only)."""
    with open(path, "r+b") as f:
        data = f.read(64)
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        f.seek(shoff + shstrndx * shentsize)
        sh = f.read(shentsize)
        stroff, strsize = struct.unpack_from("<QQ", sh, 0x18)
        f.seek(stroff)
        tab = f.read(strsize)
        i = tab.find(b".gopclntab\0")
        assert i >= 0, "no .gopclntab name in the section string table"
        f.seek(stroff + i)
        f.write(b".gopclnXXX\0")


def setUpModule():
    abtest.require_daemon()
    abtest.require_tools("go")
    tmp = tempfile.mkdtemp(prefix="ab-e2e-opaque-")
    unittest.addModuleCleanup(shutil.rmtree, tmp, True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GOPROXY": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": os.path.join(tmp, "cache"), "GOPATH": os.path.join(tmp, "gopath"), "HOME": tmp,
           "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    out = os.path.join(tmp, "go_opaque")
    r = subprocess.run(["go", "build", "-ldflags=-s -w", "-o", out, "."], cwd=GO_SRC, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    abtest.require_or_skip(r.returncode == 0, "go build failed: %s" % r.stdout[-2000:])
    damage_gopclntab_name(out)
    BINARY["path"] = out


def start_go(cg, sim, tag, *args):
    return abtest.start_go_agent(cg, sim, BINARY["path"], tag, *args)


def counters(d):
    return d.status().get("counters", {})


class OpaqueGo(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return abtest.policy_for(cls.sim)

    def test_01_seen_estimated_and_judged_once(self):
        d = self.daemon
        N, P = 6, 2
        holds_before = counters(d).get("capture_holds", 0)
        with Cgroup("opaque-go") as cg:
            a = start_go(cg, self.sim, "opq1", "-n", N, "-parallel", P)
            a.wait(timeout=60)
            self.assertEqual(len(a.calls()), N, a.stderr_text())
            self.sim.wait_quiet("opq1")
            self.assertEqual(len(self.sim.records("opq1")), N)
            calls = d.wait_for(lambda: (lambda c: c if len(c) >= N else None)(d.calls(cg.path)), 15,
                               what="%d estimated calls of the opaque Go client" % N)
            self.assertEqual(len(calls), N, calls)
            for e in calls:
                dd = detail(e)
                self.assertEqual(e.get("pid"), a.pid, e)
                self.assertIs(dd.get("estimated"), True, e)
                self.assertEqual(dd.get("estimate_reason"), "opaque_tls", e)
                self.assertGreater(dd.get("input_tokens", 0) + dd.get("output_tokens", 0), 0, e)
            blind = [e for e in d.events("capture_blind") if e.get("pid") == a.pid]
            self.assertEqual(len(blind), 1, blind)
            self.assertEqual(detail(blind[0]).get("exe"), BINARY["path"], blind)
            self.assertIn("gopclntab", detail(blind[0]).get("why", ""), blind)
            self.assertEqual(detail(blind[0]).get("capture"), "opaque", blind)
            ag = [x for x in d.agents() if x.get("cgroup") == cg.path]
            self.assertTrue(ag and ag[0].get("capture") == "opaque", ag)
            # two connections (two goroutines): held at the first connect only
            c = counters(d)
            self.assertEqual(c.get("capture_holds", 0) - holds_before, 1, c)
            self.assertGreaterEqual(c.get("opaque_sockets", 0) + c.get("opaque_sockets_added", 0), 2, c)

        # a second process of the same executable: not held at all, still counted
        with Cgroup("opaque-go2") as cg2:
            skips = counters(d).get("opaque_exe_holds_skipped", 0)
            a2 = start_go(cg2, self.sim, "opq2", "-n", 3)
            a2.wait(timeout=60)
            calls2 = d.wait_for(lambda: (lambda c: c if len(c) >= 3 else None)(d.calls(cg2.path)), 15,
                                what="3 estimated calls of the second opaque Go process")
            self.assertEqual(len(calls2), 3, calls2)
            self.assertTrue(all(detail(e).get("estimate_reason") == "opaque_tls" for e in calls2), calls2)
            c = counters(d)
            self.assertEqual(c.get("capture_holds", 0) - holds_before, 1, "the second process was held: %s" % c)
            self.assertEqual(c.get("opaque_exe_holds_skipped", 0) - skips, 1, c)
            blind2 = [e for e in d.events("capture_blind") if e.get("pid") == a2.pid]
            self.assertEqual(len(blind2), 1, blind2)
            self.assertIs(detail(blind2[0]).get("cached"), True, blind2)
        self.assertEqual(d.secret_hits(), [], "a key reached the DB, log or CLI")


class OpaqueBrake(abtest.SimulatorCase):
    def test_02_requests_per_minute_refuses_at_the_socket(self):
        LIMIT, N = 3, 8
        cg = Cgroup("opaque-rpm")
        pol = abtest.policy_for(self.sim, "budgets:\n  - name: opq-rpm\n    match: {cgroup: \"%s\"}\n"
                                "    per: cgroup\n    limits:\n      - {requests: %d, window: 60s}\n"
                                "    action: throttle\n" % (cg.path, LIMIT))
        with Daemon(pol) as d, cg:
            a = start_go(cg, self.sim, "opq-rpm", "-n", N)
            a.wait(timeout=90, check=False)
            self.sim.wait_quiet("opq-rpm")
            served = self.sim.records("opq-rpm")
            self.assertLessEqual(len(served), LIMIT, "served past the limit: %d" % len(served))
            self.assertGreaterEqual(len(served), 1, a.stderr_text())
            c = d.wait_for(lambda: (lambda c: c if c.get("opaque_requests_refused", 0) >= 1 else None)(counters(d)),
                           10, what="a refused opaque request")
            self.assertGreaterEqual(c.get("opaque_requests_refused_kernel", 0), 1, c)
            calls = d.wait_for(lambda: (lambda x: x if len(x) >= len(served) else None)(d.calls(cg.path)), 15,
                               what="the served opaque calls recorded")
            self.assertEqual(len(calls), len(served), calls)
            self.assertTrue(d.events("budget_exceeded"), "no budget_exceeded event")


GARBAGE = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
s.sendall(b"NOT-HTTP " * 100 + b"\r\n\r\n")
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
print(len(got), flush=True)
sys.stdin.read()  # stays until the test has seen what it waits for
"""


class AttachHealth(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return abtest.policy_for(cls.sim)

    def test_04_bytes_without_a_parsed_call_raise_capture_blind(self):
        """Reach I item 6: a hooked (OpenSSL) process exchanges bytes with an endpoint that no
        parser makes a call of: one capture_blind (capture: unparsed) and a counter, not silence."""
        d = self.daemon
        with Cgroup("opaque-health") as cg:
            p = cg.run([sys.executable, "-c", GARBAGE, str(self.sim.port), self.sim.cafile],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                line = p.stdout.readline().decode().strip()
                self.assertTrue(line.isdigit() and int(line) > 0, "the simulator answered nothing: %r" % line)
                ev = d.wait_for(lambda: [e for e in d.events("capture_blind") if e.get("pid") == p.pid] or None,
                                20, what="capture_blind for bytes without a parsed call")
                self.assertEqual(len(ev), 1, ev)
                self.assertEqual(detail(ev[0]).get("capture"), "unparsed", ev)
                self.assertIn("no HTTP exchange parsed", detail(ev[0]).get("why", ""), ev)
                self.assertGreaterEqual(counters(d).get("capture_blind_unparsed", 0), 1)
                att = [e for e in d.events("probe_attached") if e.get("pid") == p.pid]
                self.assertEqual(len(att), 1, "its TLS was hooked (else this proves nothing): %s" % att)
            finally:
                p.stdin.close()
                p.wait(timeout=30)
                p.stdout.close()
                p.stderr.close()


def ensure_codex():
    abtest.require_tools("node", "npm")
    if not os.access(CODEX, os.X_OK):
        r = subprocess.run(["npm", "install", "--no-package-lock", "--no-save", "--no-audit", "--no-fund",
                            "--loglevel=error"], cwd=CODEX_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600)
        abtest.require_or_skip(r.returncode == 0 and os.access(CODEX, os.X_OK),
                               "npm install failed in %s: %s" % (CODEX_DIR, r.stdout[-2000:]))


class OpaqueCodex(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        ensure_codex()
        cls.stack = contextlib.ExitStack()
        try:
            cls.sim = cls.stack.enter_context(abtest.Simulator(ca_chain=True))
            cls.home = tempfile.mkdtemp(prefix="ab-e2e-codex-")
            cls.stack.callback(shutil.rmtree, cls.home, True)
            os.makedirs(os.path.join(cls.home, ".codex"))
            with open(os.path.join(cls.home, ".codex", "config.toml"), "w") as f:
                f.write('model = "gpt-5"\nmodel_provider = "sim"\n[model_providers.sim]\nname = "sim"\n'
                        'base_url = "https://127.0.0.1:%d/v1"\nenv_key = "OPENAI_API_KEY"\n'
                        'wire_api = "responses"\nsupports_websockets = false\n' % cls.sim.port)
        except BaseException:
            cls.stack.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()

    def run_codex(self, cg, timeout=60):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home, "OPENAI_API_KEY": CODEX_KEY,
               "SSL_CERT_FILE": self.sim.cafile, "NO_COLOR": "1"}
        p = cg.run([CODEX, "exec", "--skip-git-repo-check", "--disable", "unbounded_connection_retries", "hi"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=self.home)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=10)
        return p, out.decode(errors="replace"), err.decode(errors="replace")

    def test_03_codex_is_opaque_estimated_and_braked(self):
        cg = Cgroup("opaque-codex")
        pol = abtest.policy_for(self.sim, "budgets:\n  - name: codex-rpm\n    match: {cgroup: \"%s\"}\n"
                                "    per: cgroup\n    limits:\n      - {requests: 1, window: 60s}\n"
                                "    action: throttle\n" % cg.path)
        with Daemon(pol) as d, cg:
            before = len(self.sim.records())
            p, out, err = self.run_codex(cg)
            self.assertEqual(p.returncode, 0, err[-2000:])
            self.sim.wait_quiet()
            self.assertEqual(len(self.sim.records()) - before, 1, "one /v1/responses call per codex exec")
            calls = d.wait_for(lambda: d.calls(cg.path) or None, 15, what="the estimated Codex call")
            self.assertEqual(len(calls), 1, calls)
            dd = detail(calls[0])
            self.assertEqual(calls[0].get("pid"), p.pid, calls)
            self.assertEqual((dd.get("estimated"), dd.get("estimate_reason")), (True, "opaque_tls"), calls)
            self.assertGreater(dd.get("input_tokens", 0), 1000, "a ~39 kB request is thousands of tokens: %s" % dd)
            blind = [e for e in d.events("capture_blind") if e.get("pid") == p.pid]
            self.assertEqual(len(blind), 1, blind)
            self.assertEqual(detail(blind[0]).get("exe"), os.path.realpath(CODEX), blind)
            ag = [x for x in d.agents() if x.get("cgroup") == cg.path]
            self.assertTrue(ag and ag[0].get("capture") == "opaque", ag)
            # the next codex is over requests_per_minute: its request is refused at the socket
            p2, out2, err2 = self.run_codex(cg)
            self.assertEqual(len(self.sim.records()) - before, 1, "a request past the limit reached the provider")
            c = d.wait_for(lambda: (lambda c: c if c.get("opaque_requests_refused", 0) >= 1 else None)(counters(d)),
                           10, what="the second codex's request refused")
            # The codex executable, judged once, is never scanned again: the second process's
            # verdict is the cached one. Its budget still gates it, so it is held at its first
            # connect until gated (milliseconds; without that its first request would pass
            # before its gate existed: CI, "a request past the limit reached the provider").
            # Codex's own helpers (git-remote-http, measured) are other executables, held at
            # their first connect in this budget-matched cgroup until judged.
            blind2 = [e for e in d.events("capture_blind") if e.get("pid") == p2.pid]
            self.assertEqual(len(blind2), 1, blind2)
            self.assertIs(detail(blind2[0]).get("cached"), True, "the second codex was scanned again: %s" % blind2)
            self.assertGreaterEqual(c.get("opaque_exe_holds_skipped", 0), 1, "the cached verdict was not used: %s" % c)
            self.assertGreaterEqual(c.get("opaque_gate_holds", 0), 1, "the second codex was not held until gated: %s" % c)
            resumed = [e for e in d.events("resumed") if e.get("pid") == p2.pid]
            for e in resumed:
                self.assertLess(detail(e).get("held_ms", 0), 1000,
                                "the second codex was held like a first scan: %s\ndaemon log tail:\n%s"
                                % (resumed, d.log_tail(40)))
            self.assertTrue(d.events("budget_exceeded"), "no budget_exceeded event")
            self.assertEqual(d.secret_hits([CODEX_KEY]), [], "the Codex key reached the DB, log or CLI")


if __name__ == "__main__":
    unittest.main()
