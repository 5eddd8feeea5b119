#!/usr/bin/env python3
"""End-to-end pacing (docs/interface.md `pacing: {enabled: true}`; issue 5).

When a response carries the provider's quota headers and the quota is used up (remaining
requests 0, or remaining tokens below the tokens of the agent's last call), the agent's next
request is held (a slow call, never an error) until the reset time the headers give, then
released. With pacing off (the default) nothing is held.

The provider simulator sends the quota headers when asked per request (the agent passes
`--header`), see simulator.py:
  x-sim-ratelimit-remaining-requests: N   remaining requests reported on every response
  x-sim-ratelimit-remaining-tokens: N     remaining tokens reported on every response
  x-sim-ratelimit-reset-ms: MS            reset MS after the response
On /v1/chat/completions that gives the OpenAI form (x-ratelimit-remaining-requests: 0,
x-ratelimit-reset-requests: 2s, ...); on /v1/messages the Anthropic form
(anthropic-ratelimit-requests-remaining: 0, anthropic-ratelimit-requests-reset:
<RFC 3339, whole seconds, rounded up>, also -tokens-, -input-tokens-, -output-tokens-).

Every response says "quota used up, reset in 2 s", so each request after the first must reach
the simulator at least ~1.6 s after the previous response ended (measured on the simulator's
log: ts_start of call i minus ts of call i-1), and at most a few seconds after (released).
The agent waits 0.2 s between calls (a real agent does some work between calls; it also lets
the daemon read the response before the next request is written).

Every hold is a `paused` event (docs/interface.md): a paced agent has `paused` events, with reason
`pacing`. Nothing else (budget_exceeded, loop_detected, killed, denied) may
happen: the policies have no budgets and no loop rules.

Each test has its own daemon (quota state may be kept per provider or key, so one test's
"quota used up" must not reach the next) and its own cgroup. Needs root, BPF, cgroup v2
(AGENTBRAKE_REQUIRE_BPF=1: a missing requirement is a failure). Everything started here is
removed on the way out, also on failure. Loopback only.
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

RESET_MS = 2000
CALLS = 3
INTERVAL_S = 0.2
MIN_HOLD_S = 1.6            # a held request reaches the provider >= this long after the previous response
RELEASE_SLACK_S = 2.5       # ... and at most reset + this (released, not stuck)
NO_HOLD_MAX_S = 1.0         # pacing off / quota left: every gap (interval included) stays below this
AGENT_TIMEOUT_S = 30

SIM = None


def setUpModule():
    global SIM
    SIM = abtest.module_simulator()


def policy(pacing):
    """The simulator as an endpoint, no budgets, no loop rules; `pacing` None = key absent."""
    extra = "cooldown: 1s\nmax_hold: 60s\n"
    if pacing is not None:
        extra += "pacing: {enabled: %s}\n" % ("true" if pacing else "false")
    return abtest.policy_for(SIM, extra)


def quota_headers(remaining_requests=None, remaining_tokens=None, reset_ms=RESET_MS):
    args = []
    if remaining_requests is not None:
        args += ["--header", "x-sim-ratelimit-remaining-requests: %d" % remaining_requests]
    if remaining_tokens is not None:
        args += ["--header", "x-sim-ratelimit-remaining-tokens: %d" % remaining_tokens]
    args += ["--header", "x-sim-ratelimit-reset-ms: %d" % reset_ms]
    return args


def short(evs):
    return json.dumps([{k: e.get(k) for k in ("ts", "kind", "cgroup", "pid", "detail")} for e in evs])[:3000]


class Pacing(unittest.TestCase):
    maxDiff = 4000

    # ---- running one agent ------------------------------------------------------------------
    def run_agent(self, d, cg, tag, *args):
        """py_httpclient in `cg`: CALLS calls, INTERVAL_S apart, on one keep-alive connection.
        Returns (agent's call lines, simulator records, gaps): gaps[i-1] = s between the end of
        response i-1 and the arrival of request i at the simulator."""
        a = abtest.start_agent(cg, "py_httpclient", SIM, "--tag", tag, "-n", str(CALLS),
                               "--interval", str(INTERVAL_S), *args)
        t0 = time.monotonic()
        try:
            a.wait(timeout=AGENT_TIMEOUT_S, check=False)
        except AssertionError as e:
            served = SIM.records(tag)
            raise AssertionError("the agent did not finish within %ds (held and never released?); served so "
                                 "far: %s\n%s\ndaemon log (pacing lines):\n%s"
                                 % (AGENT_TIMEOUT_S, [(r["ts_start"], r["status"]) for r in served], e,
                                    self.pacing_log(d))) from None
        elapsed = time.monotonic() - t0
        rc = a.p.returncode
        calls = sorted(a.calls(), key=lambda c: c["call"])
        if rc == 0:
            SIM.wait_quiet(tag)   # the simulator logs a call after answering it: records() complete
        served = sorted(SIM.records(tag), key=lambda r: r["ts_start"])
        self.assertEqual(rc, 0, "the agent exited %s (a paced call must be slow, never an error); stderr:\n%s"
                         % (rc, a.stderr_text()))
        self.assertEqual(len(calls), CALLS, "the agent's calls: %s" % calls)
        self.assertEqual([c["status"] for c in calls], [200] * CALLS,
                         "every call must succeed (pacing makes calls slow, never errors): %s" % calls)
        self.assertEqual([c.get("error") for c in calls], [None] * CALLS, calls)
        self.assertEqual(len(served), CALLS, "requests the simulator served: %s" % served)
        self.assertTrue(all(r.get("ratelimit") for r in served),
                        "harness: the simulator sent no quota headers: %s" % served)
        gaps = [round(b["ts_start"] - a_["ts"], 3) for a_, b in zip(served, served[1:])]
        sys.stderr.write("\n  %s: gaps between a response and the next request %s s (agent ran %.1f s) "
                         % (tag, gaps, elapsed))
        return calls, served, gaps

    def pacing_log(self, d):
        lines = [ln for ln in d.log_text().splitlines() if "pacing" in ln.lower() or "ratelimit" in ln.lower()
                 or "quota" in ln.lower()]
        return "\n".join(lines[-20:]) or "<none>\n" + d.log_tail(20)

    def check_seen(self, d, cg, served):
        """The daemon saw every call (so holding or not holding was its decision)."""
        abtest.wait_visible(d, cg.path, CALLS, served[-1]["ts"], what="paced agent's calls")

    def check_brake_events(self, d, cg, held):
        evs = [e for e in d.events() if e.get("cgroup") == cg.path or cg.path in json.dumps(detail(e))]
        for kind in ("budget_exceeded", "loop_detected", "killed", "denied"):
            self.assertEqual([e for e in evs if e["kind"] == kind], [],
                             "no budgets and no loop rules in this policy, yet %s: %s"
                             % (kind, short([e for e in evs if e["kind"] == kind])))
        # (a capture hold at the first connect, until the probes attach, is a paused too: not pacing)
        paused = [e for e in evs if e["kind"] == "paused" and detail(e).get("reason") != "capture"]
        if held:
            self.assertTrue(paused, "held by pacing, yet no paused event (every hold is one)")
            bad = [e for e in paused if detail(e).get("reason") != "pacing"]
            self.assertEqual(bad, [], "a paused event while pacing must have reason \"pacing\": %s" % short(bad))
            sys.stderr.write("(%d paused/pacing events) " % len(paused))
        else:
            self.assertEqual(paused, [], "nothing may be paused here: %s" % short(paused))

    def assert_held(self, d, gaps, reset_max_s, what):
        msg = ("%s: with the quota used up (reset %.1f s after each response), each next request must "
               "reach the provider >= %.1f s after the previous response; gaps: %s s\ndaemon log (pacing lines):\n%s")
        short_gaps = [g for g in gaps if g < MIN_HOLD_S]
        if short_gaps:
            raise AssertionError(msg % (what, RESET_MS / 1000.0, MIN_HOLD_S, gaps, self.pacing_log(d)))
        late = [g for g in gaps if g > reset_max_s + RELEASE_SLACK_S]
        self.assertEqual(late, [], "%s: held too long (reset at most %.1f s after the response, released "
                         "within %.1f s of it); gaps %s s" % (what, reset_max_s, RELEASE_SLACK_S, gaps))

    def assert_not_held(self, gaps, calls, what):
        slow = [g for g in gaps if g >= NO_HOLD_MAX_S]
        self.assertEqual(slow, [], "%s: requests were delayed (gaps %s s; want < %.1f s each)"
                         % (what, gaps, NO_HOLD_MAX_S))
        lat = [round(c["t_end"] - c["t_start"], 3) for c in calls]
        self.assertTrue(all(x < NO_HOLD_MAX_S for x in lat), "%s: slow calls %s s" % (what, lat))

    # ---- the tests ----------------------------------------------------------------------------
    def test_openai_remaining_requests_zero_holds_until_reset(self):
        """(a) x-ratelimit-remaining-requests: 0, x-ratelimit-reset-requests: 2s → the next
        request is held ~2 s, then released; no errors."""
        with Cgroup("pace-oai") as cg:
            with Daemon(policy(True)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-oai", *quota_headers(remaining_requests=0))
                self.assertEqual(served[0]["ratelimit"].get("x-ratelimit-remaining-requests"), "0")
                self.assertEqual(served[0]["ratelimit"].get("x-ratelimit-reset-requests"), "2s")
                self.check_seen(d, cg, served)
                self.assert_held(d, gaps, RESET_MS / 1000.0, "OpenAI remaining-requests 0")
                slow = [round(c["t_end"] - c["t_start"], 3) for c in calls[1:]]
                self.assertTrue(all(x >= MIN_HOLD_S - INTERVAL_S for x in slow),
                                "the agent should see its held calls as slow calls: latencies %s s" % slow)
                self.check_brake_events(d, cg, held=True)

    def test_pacing_off_by_default_nothing_held(self):
        """(b) the same responses, no `pacing:` key in the policy (default off): no delay."""
        with Cgroup("pace-off") as cg:
            with Daemon(policy(None)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-off", *quota_headers(remaining_requests=0))
                self.check_seen(d, cg, served)
                self.assert_not_held(gaps, calls, "pacing off (default)")
                self.check_brake_events(d, cg, held=False)

    def test_pacing_disabled_explicitly_nothing_held(self):
        """(b') `pacing: {enabled: false}`, remaining requests 0 and remaining tokens 0: no delay."""
        with Cgroup("pace-no") as cg:
            with Daemon(policy(False)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-no",
                                                     *quota_headers(remaining_requests=0, remaining_tokens=0))
                self.check_seen(d, cg, served)
                self.assert_not_held(gaps, calls, "pacing: {enabled: false}")
                self.check_brake_events(d, cg, held=False)

    def test_anthropic_remaining_requests_zero_holds_until_reset(self):
        """(c) anthropic-ratelimit-requests-remaining: 0 with an RFC 3339 reset ~2 s ahead
        (whole seconds, rounded up: 2..3 s) on /v1/messages → held until then."""
        with Cgroup("pace-ant") as cg:
            with Daemon(policy(True)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-ant", "--api", "anthropic",
                                                     "--model", "e2e-claude", *quota_headers(remaining_requests=0))
                rl = served[0]["ratelimit"]
                self.assertEqual(rl.get("anthropic-ratelimit-requests-remaining"), "0", rl)
                self.assertRegex(rl.get("anthropic-ratelimit-requests-reset") or "",
                                 r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", rl)
                self.check_seen(d, cg, served)
                self.assert_held(d, gaps, RESET_MS / 1000.0 + 1.0, "Anthropic requests-remaining 0")
                self.check_brake_events(d, cg, held=True)

    def test_openai_remaining_tokens_below_last_call_holds(self):
        """(d) requests left (the full limit) but x-ratelimit-remaining-tokens: 10 while each
        call uses 62 tokens (50 in + 12 out) → held until x-ratelimit-reset-tokens (2s)."""
        with Cgroup("pace-tok") as cg:
            with Daemon(policy(True)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-tok", "--prompt-chars", "200", "--max-tokens", "12",
                                                     *quota_headers(remaining_tokens=10))
                rl = served[0]["ratelimit"]
                self.assertEqual(rl.get("x-ratelimit-remaining-tokens"), "10", rl)
                self.assertNotEqual(rl.get("x-ratelimit-remaining-requests"), "0", rl)
                self.assertGreater(served[0]["input_tokens"] + served[0]["output_tokens"], 10, served[0])
                self.check_seen(d, cg, served)
                self.assert_held(d, gaps, RESET_MS / 1000.0, "OpenAI remaining-tokens 10 < 62 of the last call")
                self.check_brake_events(d, cg, held=True)

    def test_quota_left_nothing_held(self):
        """(e) pacing on, but the quota is far from used up (50 requests, 150000 tokens left):
        nothing is held."""
        with Cgroup("pace-left") as cg:
            with Daemon(policy(True)) as d:
                calls, served, gaps = self.run_agent(d, cg, "pace-left",
                                                     *quota_headers(remaining_requests=50, remaining_tokens=150000))
                self.check_seen(d, cg, served)
                self.assert_not_held(gaps, calls, "pacing on, quota left")
                self.check_brake_events(d, cg, held=False)


if __name__ == "__main__":
    unittest.main()
