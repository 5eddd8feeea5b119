"""End-to-end proofs of the Harden issue's findings that a hostile server or local user could
use against the daemon, one test per finding, on a real agentbraked and the real kernel.

  * M3: token counts the server sends are not trusted. A server that reports a negative
    (or absurd) token count does not give a `deny` budget room back: the call is estimated
    (`estimate_reason: malformed_usage`), counted in `malformed_usage`, and its reservation
    stays counted, so the agent is denied as soon as its real calls exceed the budget.
  * H1: every hold ends by max_hold. A server answering 429 with `retry-after: 86400` under a
    `retry_storm: throttle` rule holds the agent's retries for max_hold at most (with a
    `resumed` of reason max_hold), never for the day the server asked for.
  * M6: a kill the policy asks for on the daemon's own cgroup is refused: the daemon and its
    cgroup live on, the `killed` event carries `error`, `actions_refused` counts it.
  * C1: the attach worker never opens a path a local user controls. An unprivileged process
    (uid 65534 in a user + mount namespace) maps a file executable, binds a FIFO over its path
    and connects once to the endpoint: an honest agent in another cgroup is still attached
    promptly and every one of its calls recorded, and the daemon stops on SIGTERM within 5 s.
"""
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

abtest.AGENTS.setdefault("retry_agent", lambda: [abtest.PYTHON, os.path.join(abtest.CLIENTS, "retry_agent.py")])

HOSTILE_INPUT = -999_997_440   # what the server says the first call cost (tokens)
LIMIT = 1500                   # tokens per window of the deny budget
WINDOW_S = 60
REAL_CALL = ["--prompt-chars", "40", "--max-tokens", "100", "--header", "x-sim-input-tokens: 700"]  # 800 tokens


def deny_policy(sim, cg):
    return abtest.policy_for(sim, "cooldown: 1s\nbudgets:\n"
                                  "  - name: hostile\n"
                                  "    match: {cgroup: \"%s\"}\n"
                                  "    per: cgroup\n"
                                  "    limits: [{tokens: %d, window: %ds}]\n"
                                  "    action: deny\n" % (cg.path, LIMIT, WINDOW_S))


class HostileServer(abtest.SimulatorCase):
    def test_negative_token_counts_do_not_open_a_deny_budget(self):
        cg = Cgroup("negtok")
        with Daemon(deny_policy(self.sim, cg)) as d, cg:
            first = abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", "negtok-first", "-n", "1",
                                       "--prompt-chars", "40", "--max-tokens", "100",
                                       "--header", "x-sim-input-tokens: %d" % HOSTILE_INPUT, label="first")
            first.wait(timeout=30)
            served = self.sim.records("negtok-first")
            self.assertEqual(len(served), 1, "the hostile call was not served: %s" % served)
            self.assertLess(served[0]["input_tokens"], 0, "the simulator did not send a negative count: %s" % served)

            def stored():
                return [detail(c) for c in d.calls(cgroup=cg.path) if detail(c).get("estimate_reason") == "malformed_usage"]
            try:
                calls = d.wait_for(stored, 10, what="the hostile call stored as estimated (malformed_usage)")
            except AssertionError as e:
                raise AssertionError("%s\ncalls stored: %s" % (e, [detail(c) for c in d.calls()])) from None
            c = calls[0]
            self.assertIs(c.get("estimated"), True, c)
            for k in ("input_tokens", "output_tokens"):
                self.assertGreaterEqual(c.get(k, -1), 0, "a negative count reached the database: %s" % c)
                self.assertLess(c.get(k, 0), 10_000, "the estimate is not the wire's number: %s" % c)
            self.assertGreaterEqual(d.status().get("counters", {}).get("malformed_usage", 0), 1,
                                    "malformed_usage not counted: %s" % d.status().get("counters"))

            # Four real 800-token calls: the budget (1500) lets at most two of them out (the
            # reservation of the hostile call stays counted, and one call may pass the limit),
            # then the cgroup is denied. Before the fix all four went out.
            rest = abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", "negtok-rest", "-n", "4",
                                      "--conn-per-call", *REAL_CALL, label="rest")
            # denied: new connects fail, a request start already on its way is held (the agent
            # does not finish by itself: the cgroup's processes are killed when the test ends)
            denied = d.wait_for(lambda: [e for e in d.events("denied") if e.get("cgroup") == cg.path
                                         or detail(e).get("target") == cg.path], 30, what="a denied event")
            self.sim.wait_quiet("negtok-rest")
            got = self.sim.records("negtok-rest")
            self.assertLessEqual(len(got), 2, "the hostile count opened the budget: %d of 4 real calls went out: %s\n%s"
                                 % (len(got), got, d.log_tail(20)))
            self.assertEqual(detail(denied[0]).get("reason"), "budget", denied)
            ex = [e for e in d.events("budget_exceeded") if detail(e).get("budget") == "hostile"]
            self.assertTrue(ex, "no budget_exceeded for the hostile budget")
            self.assertGreater(detail(ex[0]).get("level", 0), 0, "the level went negative: %s" % ex)


MAX_HOLD_S = 2


class EveryHoldEndsByMaxHold(abtest.SimulatorCase):
    def test_retry_after_of_a_day_holds_for_max_hold_only(self):
        cg = Cgroup("h1day")
        policy = abtest.policy_for(self.sim, "max_hold: %ds\ncooldown: 1s\nloops:\n"
                                             "  retry_storm: {max_errors: 2, window: 60s, action: throttle, "
                                             "match: {cgroup: \"%s\"}}\n" % (MAX_HOLD_S, cg.path))
        with Daemon(policy) as d, cg:
            attempts = 6
            a = abtest.start_agent(cg, "retry_agent", self.sim, "--attempts", attempts, "--retry-delay", 0.05,
                                   "--timeout", 60, "--header", "x-sim-status: 429",
                                   "--header", "x-sim-retry-after: 86400", "--tag", "h1day", label="retry")
            # held a day before the fix; with max_hold each later retry waits at most ~max_hold
            a.wait(timeout=attempts * (MAX_HOLD_S + 3) + 10)
            self.sim.wait_quiet("h1day")
            recs = self.sim.records("h1day")
            gaps = [round(recs[j]["ts_start"] - recs[j - 1]["ts"], 2) for j in range(1, len(recs))]
            state = "%d requests, gaps %s\n%s" % (len(recs), gaps, d.log_tail(20))
            self.assertEqual(len(recs), attempts, state)
            self.assertTrue(gaps and max(gaps) < MAX_HOLD_S + 2.5, "a retry was held past max_hold: " + state)
            storms = d.wait_for(lambda: [e for e in d.events("loop_detected") if detail(e).get("detector") == "retry_storm"],
                                10, what="the retry storm found")
            self.assertTrue(storms, state)
            ended = d.wait_for(lambda: [e for e in d.events("resumed") if detail(e).get("reason") == "max_hold"
                                        and detail(e).get("hold_reason") == "loop"], 10,
                               what="a loop hold ended by max_hold")
            self.assertEqual(detail(ended[0]).get("escalation"), "throttle", ended)
            self.assertLess(detail(ended[0]).get("held_ms", 1e9), (MAX_HOLD_S + 2) * 1000, ended)


class NeverTheDaemonItself(abtest.SimulatorCase):
    def test_kill_of_the_daemons_own_cgroup_is_refused(self):
        cg = Cgroup("m6self")
        policy = abtest.policy_for(self.sim, "cooldown: 1s\nbudgets:\n"
                                             "  - name: selfkill\n"
                                             "    match: {cgroup: \"%s\"}\n"
                                             "    per: cgroup\n"
                                             "    requests_per_minute: 1\n"
                                             "    action: kill\n" % cg.path)
        with cg, Daemon(policy) as d:
            with open(os.path.join(cg.fs, "cgroup.procs"), "w") as f:  # the daemon joins the agent's cgroup
                f.write(str(d.pid()))
            a = abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", "m6self", "-n", "3", "--conn-per-call",
                                   label="agent")
            killed = d.wait_for(lambda: [e for e in d.events("killed") if detail(e).get("target") == cg.path],
                                30, what="the kill the policy asked for")
            self.assertIn("refused", str(detail(killed[0]).get("error")), killed)
            counters = d.wait_for(lambda: (lambda c: c if c.get("actions_refused", 0) >= 1 else None)(
                d.status()["counters"]), 10, what="actions_refused counted")
            self.assertGreaterEqual(counters["actions_refused"], 1)
            self.assertIsNone(d.proc.poll(), "the daemon was killed")
            a.wait(timeout=60)  # exits 0: the agent sharing the daemon's cgroup was not killed
            self.assertTrue(os.path.exists(os.path.join(cg.fs, "cgroup.procs")))
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"   # the test's own interpreter may live where uid 65534 cannot read


class HostileLocalUser(abtest.SimulatorCase):
    def test_fifo_at_a_mapped_path_does_not_stall_attaching(self):
        abtest.require_tools("setpriv", "unshare", "mount")
        abtest.require_or_skip(os.access(SYSTEM_PYTHON, os.X_OK), "no %s (run as uid %d)" % (SYSTEM_PYTHON, NOBODY))
        d_host = tempfile.mkdtemp(prefix="ab-e2e-hostile-")
        self.addCleanup(shutil.rmtree, d_host, True)
        os.chown(d_host, NOBODY, NOBODY)
        probe = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                                "unshare", "-Urm", "true"], capture_output=True, text=True)
        abtest.require_or_skip(probe.returncode == 0,
                               "no unprivileged user namespaces here: %s" % probe.stderr.strip())
        bad_cg, good_cg = Cgroup("c1-hostile"), Cgroup("c1-honest")
        d = Daemon(abtest.policy_for(self.sim))
        with d, bad_cg, good_cg:
            hostile = bad_cg.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                                  "unshare", "-Urm", SYSTEM_PYTHON,
                                  os.path.join(abtest.CLIENTS, "hostile_mapper.py"), d_host, "127.0.0.1",
                                  str(self.sim.port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            # its connect is seen (a capture hold, an attach request) before the honest agent starts
            try:
                d.wait_for(lambda: ("attach pid %d:" % hostile.pid) in d.log_text(), 15,
                           what="an attach of the hostile process requested (its connect seen)")
            except AssertionError:
                if hostile.poll() is not None:
                    raise AssertionError("the hostile process failed (%s): %s" % (
                        hostile.returncode, hostile.stderr.read().decode(errors="replace"))) from None
                raise
            t0 = time.monotonic()
            honest = abtest.start_agent(good_cg, "py_httpclient", self.sim, "--tag", "c1-honest", "-n", "3",
                                        label="honest")
            honest.wait(timeout=30)
            first_call_s = time.monotonic() - t0
            try:
                calls = d.wait_for(lambda: (lambda c: c if len(c) >= 3 else None)(d.calls(cgroup=good_cg.path)),
                                   10, what="the honest agent's 3 calls recorded")
            except AssertionError as e:
                raise AssertionError("%s: %d recorded; the honest agent took %.1f s\nlog:\n%s"
                                     % (e, len(d.calls(cgroup=good_cg.path)), first_call_s, d.log_tail(30))) from None
            self.assertEqual(len(calls), 3, calls)
            attached = [e for e in d.events("probe_attached") if detail(e).get("pid") == honest.pid
                        or e.get("pid") == honest.pid]
            self.assertTrue(attached, "no probe_attached for the honest agent")
            self.assertLess(first_call_s, 4.0, "the honest agent was held %.1f s" % first_call_s)
            sys.stderr.write("C1: honest agent (3 calls) done in %.2f s beside the hostile mapper\n" % first_call_s)
            t_stop = time.monotonic()
            rc = d.stop(grace=5)
            stop_s = time.monotonic() - t_stop
            self.assertEqual(rc, 0, "the daemon did not stop on SIGTERM within 5 s (%s)\n%s" % (rc, d.log_tail(20)))
            sys.stderr.write("C1: daemon stopped in %.2f s\n" % stop_s)
            self.assertIsNone(hostile.poll(), "the hostile process did not stay: %s"
                              % (hostile.stderr.read().decode(errors="replace") if hostile.poll() is not None else ""))


if __name__ == "__main__":
    unittest.main()
