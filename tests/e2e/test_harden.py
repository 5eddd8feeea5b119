"""End-to-end proofs of the Harden issue's findings that a hostile server or local user could
use against the daemon, one test per finding, on a real agentbraked and the real kernel.

  * M3: token counts the server sends are not trusted. A server that reports a negative
    (or absurd) token count does not give a `deny` budget room back: the call is estimated
    (`estimate_reason: malformed_usage`), counted in `malformed_usage`, and its reservation
    stays counted, so the agent is denied as soon as its real calls exceed the budget.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

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


if __name__ == "__main__":
    unittest.main()
