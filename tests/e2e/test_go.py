#!/usr/bin/env python3
"""Go crypto/tls: a Go net/http client (clients/go_agent, built here with the machine's Go
toolchain, offline) is seen and braked like an OpenSSL one — built normally and stripped
(`-ldflags="-s -w"`: no symbol table, the functions are found through .gopclntab).

  * every call recorded once, attributed to the Go process and its cgroup, tokens exact,
    from several goroutines at once on keep-alive connections (HTTP/1.1), and the Go
    program neither crashes nor errs under the probes;
  * a tokens budget with action throttle holds the Go client at a request start (a paused
    event with reason budget for its pid), lets it go when room returns (resumed), every call
    still succeeds and is recorded.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

GO_SRC = os.path.join(abtest.CLIENTS, "go_agent")
CALL_ARGS = ["-prompt-chars", "40", "-max-tokens", "100"]   # 110 tokens per call (as test_brake)
HELD_S = 1.0      # an unheld call here takes ~10-50 ms: a call this slow was held
BINARIES = {}     # variant -> path


def setUpModule():
    abtest.require_daemon()
    abtest.require_tools("go")
    tmp = tempfile.mkdtemp(prefix="ab-e2e-go-")
    unittest.addModuleCleanup(shutil.rmtree, tmp, True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GOPROXY": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": os.path.join(tmp, "cache"), "GOPATH": os.path.join(tmp, "gopath"), "HOME": tmp,
           "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    for variant, flags in (("plain", []), ("stripped", ["-ldflags=-s -w"])):
        out = os.path.join(tmp, "go_agent_" + variant)
        r = subprocess.run(["go", "build"] + flags + ["-o", out, "."], cwd=GO_SRC, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        abtest.require_or_skip(r.returncode == 0, "go build (%s) failed: %s" % (variant, r.stdout[-2000:]))
        BINARIES[variant] = out
    # the stripped one really has no symbol table (else this test proves nothing about it)
    r = subprocess.run(["readelf", "-S", BINARIES["stripped"]], stdout=subprocess.PIPE, text=True)
    if r.returncode == 0:
        assert ".symtab" not in r.stdout and ".gopclntab" in r.stdout, r.stdout


def start_go(cg, sim, variant, tag, *args):
    return abtest.start_go_agent(cg, sim, BINARIES[variant], tag, *args)


def short(evs):
    return json.dumps([{k: e.get(k) for k in ("kind", "pid", "cgroup", "comm")} | {"detail": detail(e)}
                              for e in evs])[:3000]


class GoCapture(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return abtest.policy_for(cls.sim)

    def test_01_plain_and_stripped_calls_recorded(self):
        """12 calls from 4 goroutines (keep-alive, HTTP/1.1) per binary: each recorded once with
        the simulator's tokens, the Go process's pid, comm and cgroup; probes attached to it."""
        N, P = 12, 4
        for variant in ("plain", "stripped"):
            with self.subTest(variant=variant), Cgroup("go-" + variant) as cg:
                tag = "go-" + variant
                a = start_go(cg, self.sim, variant, tag, "-n", N, "-parallel", P)
                events, _timeline, calls = abtest.observe_calls(self.daemon, cg.path, [a], N)
                self.assertEqual(len(calls), N, "the Go agent made %d of %d calls; stderr: %s"
                                 % (len(calls), N, a.stderr_text()))
                for c in calls:
                    self.assertEqual(c["status"], 200, c)
                    self.assertEqual(c["proto"], "HTTP/1.1", c)
                self.assertEqual(len(events), N, "want each of %d calls once as llm_call in %s: %s\nlog:\n%s"
                                 % (N, cg.path, short(events), self.daemon.log_tail(30)))
                comm = calls[0]["comm"]
                for e in events:
                    d = detail(e)
                    self.assertEqual(e.get("pid"), a.pid, short([e]))
                    self.assertEqual(e.get("cgroup"), cg.path, short([e]))
                    self.assertEqual(e.get("comm"), comm, short([e]))
                    self.assertEqual(d.get("path"), "/v1/chat/completions", short([e]))
                    self.assertEqual(d.get("model"), "e2e-gpt", short([e]))
                    self.assertEqual(d.get("status"), 200, short([e]))
                    self.assertIs(d.get("complete"), True, short([e]))
                    self.assertIs(d.get("estimated"), False, short([e]))
                self.sim.wait_quiet(tag)
                served = self.sim.records(tag)
                self.assertEqual(len(served), N)
                self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in events),
                                 sorted((s["input_tokens"], s["output_tokens"]) for s in served),
                                 "tokens (input, output) per call")
                att = [e for e in self.daemon.events("probe_attached") if e.get("pid") == a.pid]
                self.assertEqual(len(att), 1, short(att))
                self.assertIn(BINARIES[variant], str(detail(att[0]).get("object")), short(att))


class GoThrottle(abtest.SimulatorCase):
    def test_02_throttle_holds_the_go_client_at_a_request_start(self):
        """8 calls of 110 tokens from 2 goroutines under {tokens: 300, window: 3s}, throttle:
        some calls are held (paused, reason budget, for the Go pid) and let go (resumed), all
        succeed, all are recorded, and no sliding window carries far more than the limit."""
        N, P, L, W = 8, 2, 300, 3
        cg = Cgroup("go-thr")
        pol = abtest.policy_for(self.sim, "max_hold: 60s\ncooldown: 1s\nbudgets:\n"
                                "  - name: gothr\n    match: {cgroup: \"%s\"}\n    per: cgroup\n"
                                "    limits:\n      - {tokens: %d, window: %ds}\n    action: throttle\n"
                                % (cg.path, L, W))
        with Daemon(pol) as d, cg:
            a = start_go(cg, self.sim, "stripped", "go-thr", "-n", N, "-parallel", P, *CALL_ARGS)
            a.wait(timeout=90)
            calls = a.calls()
            self.assertEqual(len(calls), N, "stderr: %s" % a.stderr_text())
            self.assertTrue(all(c["status"] == 200 for c in calls), "a throttled Go client never sees an error")
            lat = sorted(round(c["t_end"] - c["t_start"], 3) for c in calls)
            self.assertTrue([x for x in lat if x >= HELD_S], "no call was held: latencies %s" % lat)

            def holds():
                p = [e for e in d.events("paused") if detail(e).get("reason") == "budget" and e.get("pid") == a.pid]
                r = [e for e in d.events("resumed") if detail(e).get("reason") == "budget" and e.get("pid") == a.pid]
                return (p, r) if p and len(r) == len(p) else None
            paused, resumed = d.wait_for(holds, 10, what="paused/resumed (budget) events of the Go client")
            for e in resumed:
                self.assertGreater(detail(e).get("held_ms", 0), 0, short([e]))
            self.assertTrue(d.events("budget_exceeded"), "no budget_exceeded event")
            self.sim.wait_quiet("go-thr")
            recs = sorted(self.sim.records("go-thr"), key=lambda r: r["ts_start"])
            self.assertEqual(len(recs), N)
            worst = max(sum(int(o["input_tokens"]) + int(o["output_tokens"]) for o in recs
                            if r["ts_start"] <= o["ts_start"] < r["ts_start"] + W - 0.25) for r in recs)
            # one call per goroutine may already be admitted when the window fills
            self.assertLessEqual(worst, L + P * 110, "tokens started within one %d s window: %d" % (W, worst))
            abtest.wait_visible(d, cg.path, N, max(c["t_end"] for c in calls), what="throttled Go calls")
            ev = d.calls(cg.path)
            self.assertEqual(len(ev), N, "every throttled Go call recorded once: " + short(ev))
            for e in ev:
                self.assertEqual(e.get("pid"), a.pid, short([e]))
                self.assertEqual(detail(e).get("status"), 200, short([e]))
                self.assertIs(detail(e).get("complete"), True, short([e]))
            self.assertEqual(sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in ev),
                             sorted((r["input_tokens"], r["output_tokens"]) for r in recs),
                             "tokens (input, output) per throttled call")


if __name__ == "__main__":
    unittest.main()
