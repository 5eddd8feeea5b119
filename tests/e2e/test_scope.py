#!/usr/bin/env python3
"""End-to-end proof of `agentbraked --cgroup-scope PATH` (issue 15 item 5), to the contract of
docs/interface.md ("Flags") and docs/enforcement.md ("Cgroup scope"):

  * two daemons with disjoint scopes A and B and their own state dirs run at once on this
    machine, probes of both loaded, as two hosts;
  * both load the SAME policy, whose budget selects `/agents/*`: a greedy TLS agent in
    A/agents/a and one in B/agents/a are each throttled by their own daemon only (some calls
    held, tokens per sliding window within the limit give or take one call);
  * each daemon records only its own agent's calls, events and agents, with the cgroup named
    relative to its scope ("/agents/a"), never the other scope's or the host path;
  * an agent in a third cgroup outside both scopes, calling the same endpoint, is never
    attached, held, slowed or shown by either;
  * `status` shows the scope; manual `pause /agents/a` freezes A/agents/a (not a host cgroup
    /agents/a), `pause /../x` is refused;
  * a scope that is not a cgroup v2 directory is a start-up error naming it.

Scopes are cgroups this test creates (agentbrake-test-<pid>-abscope-A / -B) and removes.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, SubCgroup, detail  # noqa: E402

CALL_ARGS = ["--prompt-chars", "40", "--max-tokens", "100"]   # 110 tokens per call
CALL_TOKENS = 110
TOL_S = 0.25     # the simulator's clock vs the moment of admission
HELD_S = 1.0     # a call this much slower than an unheld one was held
FAST_S = 1.0     # an unheld call takes far less than this
FIRST_CALL_S = 3.0
W, L, K = 3, 330, 9   # window s, token limit per window, calls per scoped agent (3 windows' worth)
N_OUT = 20            # calls of the agent outside both scopes


def tokens(rec):
    return int(rec["input_tokens"]) + int(rec["output_tokens"])


def window_max(recs, window_s):
    best = 0
    for t in [r["ts_start"] for r in recs]:
        best = max(best, sum(tokens(r) for r in recs if t <= r["ts_start"] < t + window_s - TOL_S))
    return best


def latencies(calls):
    return [round(c["t_end"] - c["t_start"], 3) for c in sorted(calls, key=lambda c: c["t_start"])]


def read(path):
    with open(path) as f:
        return f.read().strip()


def policy(sim):
    return abtest.policy_for(sim, (
        "max_hold: 60s\ncooldown: 1s\n"
        "budgets:\n"
        "  - name: scoped\n"
        "    match: {cgroup: \"/agents/*\"}\n"
        "    per: cgroup\n"
        "    limits:\n"
        "      - {tokens: %d, window: %ds}\n"
        "    action: throttle\n") % (L, W))


class Scope(abtest.SimulatorCase):
    def agent(self, cg, tag, n):
        return abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", tag, "-n", str(n), *CALL_ARGS, label=tag)

    def test_01_two_daemons_disjoint_scopes(self):
        ra, rb, out = Cgroup("abscope-A"), Cgroup("abscope-B"), Cgroup("abscope-out")
        with ra, rb, out:
            ra_agents, rb_agents = SubCgroup(ra, "agents"), SubCgroup(rb, "agents")
            with ra_agents, rb_agents:
                ca, cb = SubCgroup(ra_agents, "a"), SubCgroup(rb_agents, "a")
                with ca, cb:
                    pol = policy(self.sim)
                    with Daemon(pol, extra_args=["--cgroup-scope", ra.path]) as da, \
                            Daemon(pol, extra_args=["--cgroup-scope", rb.path]) as db:
                        self.check_two_hosts(da, db, ra, rb, out, ca, cb)

    def check_two_hosts(self, da, db, ra, rb, out, ca, cb):
        for d, r in ((da, ra), (db, rb)):
            st = d.status()
            self.assertEqual(st.get("cgroup_scope"), r.path, "status shows the scope: %s" % json.dumps(st)[:600])
            self.assertGreater(st.get("host_probes", 0), 0, "the daemon's host-wide probes are attached")
        self.assertIn("cgroup scope", da.cli("status").stdout, "the text status names the scope")

        a = self.agent(ca, "A", K)
        b = self.agent(cb, "B", K)
        abtest.wait_for(lambda: len(self.sim.records("A")) >= 2 and len(self.sim.records("B")) >= 2, 20,
                        what="both scoped agents' first calls")
        o = self.agent(out, "OUT", N_OUT)
        o.wait(timeout=60)
        a.wait(timeout=60)
        b.wait(timeout=60)

        # each scoped agent throttled (by its own daemon: the other one ignores it, below)
        for ag, tag in ((a, "A"), (b, "B")):
            calls = ag.calls()
            self.assertEqual(len(calls), K, calls)
            self.assertTrue(all(c["status"] == 200 for c in calls), "a throttled agent never sees an error")
            lat = latencies(calls)
            self.assertTrue([x for x in lat if x >= HELD_S], "agent %s was never held: %s" % (tag, lat))
            got = window_max(self.sim.records(tag), W)
            self.assertLessEqual(got, L + CALL_TOKENS, "agent %s: %d tokens in one %d s window" % (tag, got, W))

        # the agent outside both scopes: full speed, never held
        ol = latencies(o.calls())
        self.assertEqual(len(ol), N_OUT)
        self.assertLess(ol[0], FIRST_CALL_S, "first call of the outside agent: %s" % ol)
        self.assertEqual([x for x in ol[1:] if x >= FAST_S], [], "the outside agent was slowed: %s" % ol)

        # each daemon records its own agent's calls, named relative to its scope, and nothing else
        t_end = max(c["t_end"] for c in a.calls() + b.calls())
        for d, ag, other, r in ((da, a, b, ra), (db, b, a, rb)):
            abtest.wait_visible(d, "/agents/a", K, t_end, what="scoped calls")
            calls = d.calls()
            self.assertEqual(len(calls), K, "only the scope's own agent's calls: %s"
                             % [(c.get("pid"), c.get("cgroup")) for c in calls])
            self.assertEqual({c.get("cgroup") for c in calls}, {"/agents/a"})
            self.assertEqual({c.get("pid") for c in calls}, {ag.pid})
            everything = json.dumps(d.events("llm_call") + d.events("budget_exceeded") + d.events("paused"))
            for p in (other.pid, o.pid):
                self.assertFalse(any(e.get("pid") == p for e in d.events("paused") + d.events("resumed")),
                                 "daemon of %s held pid %d of another scope" % (r.path, p))
            for host_name in (ra.path, rb.path, out.path):
                self.assertNotIn(host_name, everything, "a host cgroup path in the events of %s" % r.path)
            ex = [e for e in d.events("budget_exceeded") if detail(e).get("budget") == "scoped"]
            self.assertTrue(ex, "no budget_exceeded in %s" % r.path)
            self.assertTrue(all(abtest.names_bucket(detail(e).get("bucket"), "/agents/a") for e in ex),
                            "buckets named relative to the scope: %s" % [detail(e).get("bucket") for e in ex])
            ags = d.agents()
            pids = {p for x in ags for p in (x.get("pids") or [])} | {x.get("tree_root_pid") for x in ags}
            self.assertNotIn(other.pid, pids, "agents of %s shows the other scope's agent: %s" % (r.path, ags))
            self.assertNotIn(o.pid, pids, "agents of %s shows the outside agent: %s" % (r.path, ags))
            for x in ags:
                self.assertTrue(str(x.get("cgroup", "/")).startswith("/"), ags)
                self.assertNotIn("agentbrake-test-", str(x.get("cgroup")), "a host path in agents: %s" % ags)
            log = d.log_text()   # --log-level debug: every attach request is logged
            for p in (other.pid, o.pid):
                self.assertNotIn("attach pid %d:" % p, log, "daemon of %s asked to attach pid %d of another scope"
                                 % (r.path, p))
            self.assertIn("attach pid %d:" % ag.pid, log, "the daemon of %s attached its own agent" % r.path)
            counters = d.status().get("counters", {})
            self.assertEqual(counters.get("attach_refused_out_of_scope", 0), 0, counters)

        # manual brake: a path is relative to the scope; one leaving it is refused
        freeze_a = os.path.join(ca.fs, "cgroup.freeze")
        da.cli("pause", "/agents/a")
        self.assertEqual(read(freeze_a), "1", "pause /agents/a froze A/agents/a")
        self.assertEqual(read(os.path.join(cb.fs, "cgroup.freeze")), "0",
                         "the other scope's /agents/a is untouched")
        da.cli("resume", "/agents/a")
        self.assertEqual(read(freeze_a), "0")
        r = da._run_cli(["pause", "/../%s" % rb.name.split("/")[0]])
        self.assertNotEqual(r.returncode, 0, "pause of a path leaving the scope must fail: %s" % r.stdout)
        self.assertEqual(read(os.path.join(rb.fs, "cgroup.freeze")), "0")

    def test_02_bad_scope_is_a_startup_error(self):
        bin_daemon, _ = abtest.binaries()
        for scope, want_rc, want in (("/agentbrake-test-no-such-scope", 1, "No such file"),
                                     ("relative/path", 2, "cgroup path"),
                                     ("/a/../b", 2, "cgroup path")):
            with tempfile.TemporaryDirectory(prefix="ab-e2e-scope-") as d:
                pol = os.path.join(d, "p.yaml")
                with open(pol, "w") as f:
                    f.write(abtest.policy_for(self.sim))
                os.chmod(pol, 0o644)
                r = subprocess.run([bin_daemon, "--state-dir", d, "--db", os.path.join(d, "ab.db"),
                                    "--socket", os.path.join(d, "c.sock"), "--policy", pol,
                                    "--cgroup-scope", scope], capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, want_rc, "--cgroup-scope %s: %s" % (scope, r.stderr[-800:]))
                self.assertIn(want, r.stderr + r.stdout, "--cgroup-scope %s: %s" % (scope, r.stderr[-800:]))


if __name__ == "__main__":
    unittest.main()
