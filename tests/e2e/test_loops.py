#!/usr/bin/env python3
"""End-to-end loop detection (docs/interface.md `loops:`, event `loop_detected`, actions; issue 5).

A real agentbraked, real agent processes in their own cgroups, the provider simulator on
loopback. Every test starts its own daemon whose policy enables only the rules it is about,
with short windows, `cooldown: 1s`, and `match:` on the exact cgroup the test created (a parent
cgroup when the test has several agents; a rule selects a process when its cgroup or an
ancestor matches).

Loops that must be caught:
  ping_pong     two agents over loopback TCP, a parent and its child over pipes, a ring of
                three: an LLM call every turn; every member killed after at most
                max_round_trips + 1 round trips; the event names every member and cgroup
  repetition    the same prompt again and again (new ids and timestamps each time): killed,
                or throttled, once it passed max_repeats; a long prompt where only a step
                counter changes: throttled at max_repeats
  retry_storm   the simulator answers 429 + retry-after and the agent retries at once:
                loop_detected, then the agent's requests are spaced by the retry-after
  fan_out       a parent spawning 40 workers that all call at once is held to max_concurrent
                while another tree keeps full speed
Honest work that must not fire (all four rules on, action kill, so a false positive also
kills): a long single-agent session whose context grows; a batch of 50 distinct prompts
under the fan-out limit; agents using local tool servers that make no LLM calls (shared TCP
server, stdio child); a human chatting at human pace, "continue" included.

Needs root, BPF, cgroup v2 (AGENTBRAKE_REQUIRE_BPF=1: a missing requirement is a failure).
Each test removes everything it started (cgroups killed and removed, daemon stopped) even
when it fails.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

# The loop agents (tests/e2e/clients/*.py), startable with abtest.start_agent(cg, KIND, sim, ...).
for _kind in ("pingpong_agent", "repeat_agent", "retry_agent", "chat_agent", "batch_agent", "tool_agent"):
    abtest.AGENTS.setdefault(_kind, lambda k=_kind: [abtest.PYTHON, os.path.join(abtest.CLIENTS, k + ".py")])

WINDOW = "30s"
MAX_ROUND_TRIPS = 3
MAX_REPEATS = 3
MAX_ERRORS = 4
MAX_CONCURRENT = 4          # the fan-out test
WIDE_WORKERS = 40           # the fan-out test: worker processes of the wide tree, one call each
FAN_LATENCY_S = 1.0         # the fan-out test: per call (held to 4 at once: 40 calls take >= 10 s)
HONEST_MAX_CONCURRENT = 8   # the honest-work policy
RETRY_AFTER_S = 2
THROTTLE_WINDOW_S = 5.0     # observation window: a throttled repeat stays held at least this long
HONEST_WINDOW_S = 1.0       # observation window: nothing fires after honest work is done

PINGPONG_TURNS = 10         # initiator's LLM calls if nobody stops the ring (9 round trips)
PINGPONG_LATENCY_MS = 300   # per LLM call: time enough for a kill to land before the next turn
PINGPONG_THINK_S = 0.05

BRAKE_KINDS = ("killed", "paused", "denied")

PRICES = """prices:
  e2e-gpt: {input: 1.0, output: 2.0}
"""


def rule(name, match, **fields):
    """One `loops:` entry in YAML flow style, matching the exact cgroup path `match`."""
    items = ["%s: %s" % (k, v) for k, v in fields.items()]
    items.append('match: {cgroup: "%s"}' % match)
    return "  %s: {%s}\n" % (name, ", ".join(items))


def flatten(obj, prefix=""):
    """{"a": {"b": 1}} → {"a.b": 1} (lists kept as values)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = prefix + "." + k if prefix else k
            if isinstance(v, dict):
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def evidence(ev, *names):
    """(key, value) of the first field of the event's detail (nested objects included) whose
    own name contains one of `names` — the contract names the evidence ("round trips",
    "repeats", "tokens and cost spent in the loop", "since", "rate") but not its keys."""
    flat = flatten(detail(ev))
    for n in names:
        for k, v in flat.items():
            if n in k.rsplit(".", 1)[-1].lower():
                return k, v
    return None, None


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def max_overlap(records, eps=0.0):
    """Most requests the simulator was serving at once: [ts_start, ts - eps] intervals. eps
    allows for the simulator logging a call's end a little after it sent the response (its
    thread may wait for the interpreter while the next request is already being read)."""
    pts = []
    for r in records:
        pts.append((r["ts_start"], 1))
        pts.append((max(r["ts_start"], r["ts"] - eps), -1))
    pts.sort(key=lambda p: (p[0], p[1]))   # an end before a start at the same instant
    cur = best = 0
    for _t, d in pts:
        cur += d
        best = max(best, cur)
    return best


def wait_all(agents, timeout):
    """Wait for every agent (never raises); {label: exit status or "timeout" (then SIGKILLed)}."""
    deadline = time.monotonic() + timeout
    rcs = {}
    for a in agents:
        try:
            rcs[a.label] = a.p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            a.p.kill()   # our own Popen child
            a.p.wait(timeout=10)
            rcs[a.label] = "timeout"
    for a in agents:
        a._t.join(timeout=1)
    return rcs


def exits(agents):
    """Normal-exit lines {"exit": rc, "pid": ...} the agents (and their children) printed."""
    return [x for a in agents for x in a.lines if "exit" in x]


def gone(cg, timeout=5.0):
    """True when no process is left in the cgroup (within `timeout`)."""
    deadline = time.monotonic() + timeout
    while cg.pids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class LoopsBase(abtest.SimulatorCase):
    def setUp(self):
        self.stack = contextlib.ExitStack()
        self.addCleanup(self.stack.close)   # daemon stopped, then cgroups killed and removed

    # ---- pieces -----------------------------------------------------------------------------
    def cgroup(self, name):
        return self.stack.enter_context(Cgroup(name))

    def child(self, parent, name):
        return self.stack.enter_context(abtest.SubCgroup(parent, name))

    def daemon(self, loops_yaml):
        policy = abtest.policy_for(self.sim, PRICES + "cooldown: 1s\nloops:\n" + loops_yaml)
        return self.stack.enter_context(Daemon(policy))

    def start(self, cg, kind, *args, label=None):
        return abtest.start_agent(cg, kind, self.sim, *[str(a) for a in args], label=label or kind)

    def served(self, tags, ok_only=True):
        tags = {tags} if isinstance(tags, str) else set(tags)
        recs = [r for r in self.sim.records() if r.get("client_tag") in tags]
        if ok_only:
            recs = [r for r in recs if r["status"] == 200 and not r["aborted"]]
        return sorted(recs, key=lambda r: r["ts_start"])

    @staticmethod
    def brief(events):
        return json.dumps([{"kind": e.get("kind"), "cgroup": e.get("cgroup"), "pid": e.get("pid"),
                            "detail": detail(e)} for e in events])[:3000]

    def loop_events(self, d, detector=None):
        ev = d.events("loop_detected")
        if detector:
            ev = [e for e in ev if detail(e).get("detector") == detector]
        return ev

    def wait_events(self, d, kind, pred=lambda e: True, timeout=4.0):
        """Events of `kind` satisfying pred, waiting up to `timeout` s for the first; [] if none."""
        deadline = time.monotonic() + timeout
        while True:
            ev = [e for e in d.events(kind) if pred(e)]
            if ev or time.monotonic() > deadline:
                return ev
            time.sleep(0.2)

    def wait_loop(self, d, detector, timeout=4.0):
        return self.wait_events(d, "loop_detected", lambda e: detail(e).get("detector") == detector, timeout)

    # ---- what every loop_detected event carries -----------------------------------------------
    def check_loop_event(self, d, detector, action, pids, cgroups, count_names=(), count_min=None):
        """The `detector` event naming every pid in `pids` and every cgroup in `cgroups` among its
        members, with `action` and the evidence; returns it."""
        evs = self.wait_loop(d, detector)
        self.assertTrue(evs, "no loop_detected event with detector %r; all loop_detected: %s\ndaemon log:\n%s"
                        % (detector, self.brief(self.loop_events(d)), d.log_tail(30)))
        mine = [e for e in evs
                if set(pids) <= {m.get("pid") for m in (detail(e).get("members") or []) if isinstance(m, dict)}]
        self.assertTrue(mine, "no %s event names all of the pids %s among its members: %s"
                        % (detector, sorted(pids), self.brief(evs)))
        e = mine[0]
        dd = detail(e)
        where = self.brief([e])
        members = dd.get("members")
        self.assertIsInstance(members, list, where)
        for m in members:
            for k in ("pid", "tree_root_pid", "cgroup", "comm"):
                self.assertIn(k, m, "member lacks %r: %s" % (k, where))
        self.assertLessEqual(set(cgroups), {m.get("cgroup") for m in members},
                             "the event must name every cgroup of the loop: %s" % where)
        self.assertIn(e.get("cgroup"), {m.get("cgroup") for m in members}, "cgroup = the first member's: " + where)
        self.assertIn(e.get("pid"), {m.get("pid") for m in members}, "pid = the first member's: " + where)
        self.assertIn(action, json.dumps(dd.get("action")), "action: " + where)
        if count_names:
            k, v = evidence(e, *count_names)
            self.assertTrue(is_number(v), "no numeric evidence field like %s: %s" % (count_names, where))
            if count_min is not None:
                self.assertGreaterEqual(v, count_min, "evidence %s: %s" % (k, where))
        for names in (("token",), ("cost", "usd"), ("since",), ("rate",)):
            k, v = evidence(e, *names)
            self.assertIsNotNone(k, "the evidence lacks %s: %s" % (names[0], where))
        return e

    def check_killed_for_loop(self, d):
        ev = self.wait_events(d, "killed", lambda e: detail(e).get("reason") == "loop")
        self.assertTrue(ev, "no `killed` event with reason loop; killed events: %s" % self.brief(d.events("killed")))
        for e in ev:
            self.assertIs(detail(e).get("dry_run", False), False, self.brief([e]))
        return ev


# ==== ping-pong ===================================================================================
class PingPong(LoopsBase):
    def run_ring(self, name, size, transport):
        parent = self.cgroup(name)
        d = self.daemon(rule("ping_pong", parent.path, max_round_trips=MAX_ROUND_TRIPS, window=WINDOW,
                             action="kill"))
        common = ["--turns", PINGPONG_TURNS, "--think", PINGPONG_THINK_S, "--max-tokens", 12,
                  "--header", "x-sim-latency-ms: %d" % PINGPONG_LATENCY_MS, "--timeout", 60]
        if transport == "tcp":
            cgs = [self.child(parent, "agent%d" % i) for i in range(size)]
            ring = tempfile.mkdtemp(prefix="ring-", dir=abtest.scratch_dir())
            tags = ["%s-%d" % (name, i) for i in range(size)]
            agents = [self.start(cgs[i], "pingpong_agent", "--ring-dir", ring, "--index", i, "--size", size,
                                 "--tag", tags[i], *common, label="agent%d" % i) for i in range(size)]
        else:
            cgs = [self.child(parent, "pair")]
            tags = [name]
            agents = [self.start(cgs[0], "pingpong_agent", "--pipe-child", "--tag", name, *common,
                                 label="parent")]
        budget = PINGPONG_TURNS * size * (PINGPONG_LATENCY_MS / 1000 + PINGPONG_THINK_S + 0.3) + 30
        rcs = wait_all(agents, budget)
        # calls in flight at the kill reach the simulator's log (once every member is gone;
        # otherwise the test fails on "processes left" below)
        if all(gone(cg) for cg in cgs):
            self.sim.wait_idle()
        pids = [a.pid for a in agents]
        if transport == "pipe":
            child = next((x["pipe_child"] for x in agents[0].lines if "pipe_child" in x), None)
            self.assertIsNotNone(child, "the pipe child never started: %s %s"
                                 % (agents[0].lines, agents[0].stderr_text()))
            pids.append(child)
        calls = [c for a in agents for c in a.calls()]
        served = self.served(tags)
        round_trips = (len(served) - 1) // size if served else 0
        normal = exits(agents)
        state = ("exit statuses %s; normal exits %s; %d LLM calls served -> %d complete round trips "
                 "(max_round_trips %d); loop_detected: %s\ndaemon log tail:\n%s"
                 % (rcs, [(x["pid"], x["exit"]) for x in normal], len(served), round_trips, MAX_ROUND_TRIPS,
                    self.brief(self.loop_events(d)), d.log_tail(25)))
        for c in calls:
            self.assertEqual(c["status"], 200, c)

        # every member killed, none finished or gave up on its own
        if normal:
            self.fail("ping-pong %s ring of %d not killed: members ended normally; %s" % (transport, size, state))
        for a in agents:
            self.assertTrue(isinstance(rcs[a.label], int) and rcs[a.label] < 0,
                            "%s (pid %d) was not killed by a signal: %s" % (a.label, a.pid, state))
        for cg in cgs:
            self.assertTrue(gone(cg), "processes left in %s after the kill: %s" % (cg.path, cg.pids()))
        # ... after exactly max_round_trips + 1 round trips (one more = killed late, one less = early)
        self.assertLessEqual(round_trips, MAX_ROUND_TRIPS + 1, "killed too late: " + state)
        self.assertGreaterEqual(round_trips, MAX_ROUND_TRIPS + 1,
                                "killed before the ring passed max_round_trips: " + state)

        e = self.check_loop_event(d, "ping_pong", "kill", pids, [cg.path for cg in cgs],
                                  count_names=("round_trip", "round"), count_min=MAX_ROUND_TRIPS + 1)
        dd = detail(e)
        k, tokens = evidence(e, "token")
        self.assertTrue(is_number(tokens) and tokens > 0, "tokens spent in the loop: %s" % self.brief([e]))
        k, cost = evidence(e, "cost", "usd")
        self.assertTrue(is_number(cost) and cost > 0, "cost of the loop (e2e-gpt is priced): %s" % self.brief([e]))
        k, rate = evidence(e, "rate")
        self.assertTrue(is_number(rate) and rate > 0, "turn rate: %s" % self.brief([e]))
        if transport == "pipe":
            for m in dd["members"]:
                if m.get("pid") in pids:
                    self.assertEqual(m.get("tree_root_pid"), agents[0].pid,
                                     "parent and child are one tree rooted at the parent: %s" % self.brief([e]))
                    self.assertEqual(m.get("cgroup"), cgs[0].path, self.brief([e]))
        else:
            for m in dd["members"]:
                if m.get("pid") in pids:
                    self.assertEqual(m.get("tree_root_pid"), m.get("pid"), self.brief([e]))
        self.check_killed_for_loop(d)

    def test_two_agents_over_loopback_tcp(self):
        self.run_ring("pp2", 2, "tcp")

    def test_parent_and_child_over_pipes(self):
        self.run_ring("pppipe", 2, "pipe")

    def test_three_agent_ring(self):
        self.run_ring("pp3", 3, "tcp")


# ==== repetition ==================================================================================
class Repetition(LoopsBase):
    def test_same_prompt_with_new_ids_is_killed(self):
        cg = self.cgroup("repkill")
        d = self.daemon(rule("repetition", cg.path, max_repeats=MAX_REPEATS, window=WINDOW, action="kill"))
        a = self.start(cg, "repeat_agent", "-n", 12, "--interval", 0.3, "--tag", "repkill")
        rcs = wait_all([a], 60)
        if gone(cg):
            self.sim.wait_idle()   # a call in flight at the kill reaches the simulator's log
        served = self.served("repkill")
        state = ("exit status %s; %d requests served (max_repeats %d); loop_detected: %s\ndaemon log tail:\n%s"
                 % (rcs[a.label], len(served), MAX_REPEATS, self.brief(self.loop_events(d)), d.log_tail(25)))
        self.assertTrue(isinstance(rcs[a.label], int) and rcs[a.label] < 0,
                        "an agent repeating one prompt (only ids/timestamps changing) was not killed: " + state)
        self.assertLessEqual(len(served), MAX_REPEATS + 1, "killed too late: " + state)
        self.assertGreaterEqual(len(served), MAX_REPEATS, "killed before max_repeats: " + state)
        self.check_loop_event(d, "repetition", "kill", [a.pid], [cg.path], count_names=("repeat",),
                              count_min=MAX_REPEATS + 1)
        self.check_killed_for_loop(d)
        self.assertTrue(gone(cg))

    def check_throttled(self, name, *agent_args):
        """throttle = backpressure: past max_repeats the next repeat is held (a slow call, never an
        error, never a kill). The agent: repeat_agent with `agent_args`, 10 calls 0.2 s apart."""
        cg = self.cgroup(name)
        d = self.daemon(rule("repetition", cg.path, max_repeats=MAX_REPEATS, window=WINDOW, action="throttle"))
        n = 10
        a = self.start(cg, "repeat_agent", "-n", n, "--interval", 0.2, "--timeout", 120, "--tag", name, *agent_args)
        # unthrottled the agent sends its 10 requests in ~2 s; a shortfall is reported below
        deadline = time.monotonic() + 15
        while len(self.served(name)) < MAX_REPEATS + 1 and time.monotonic() < deadline \
                and a.p.poll() is None:
            time.sleep(0.05)
        # observation window: past max_repeats at most the request already on its way gets
        # through while the next one is held for THROTTLE_WINDOW_S
        abtest.assert_stays(lambda: len(self.served(name)) <= MAX_REPEATS + 2, THROTTLE_WINDOW_S,
                            "not throttled: repeats kept flowing after passing max_repeats",
                            on_fail=lambda: "served: %d; daemon log tail:\n%s" % (len(self.served(name)),
                                                                                d.log_tail(25)))
        served = self.served(name)
        ev = self.loop_events(d, "repetition")
        gaps = [round(served[j]["ts_start"] - served[j - 1]["ts"], 2) for j in range(1, len(served))]
        state = ("%d of %d requests served (gaps %s s), agent %s; loop_detected: %s\ndaemon log tail:\n%s"
                 % (len(served), n, gaps, "running" if a.p.poll() is None else "exited %s" % a.p.returncode,
                    self.brief(ev), d.log_tail(25)))
        self.assertGreaterEqual(len(served), MAX_REPEATS, "held before max_repeats: " + state)
        self.assertLessEqual(len(served), MAX_REPEATS + 2,
                             "not throttled: repeats kept flowing %.0f s after passing max_repeats: %s"
                             % (THROTTLE_WINDOW_S, state))
        self.assertIn(a.p.poll(), (None, 0), "throttle must not kill: " + state)
        for c in a.calls():
            self.assertEqual(c["status"], 200, "a throttled call must be slow, not an error: %s" % c)
        self.check_loop_event(d, "repetition", "throttle", [a.pid], [cg.path], count_names=("repeat",),
                              count_min=MAX_REPEATS + 1)
        self.assertEqual(d.events("killed"), [], "throttle never kills")
        # every hold is a `paused`: the held repeat names its reason (loop) and detector
        held = self.wait_events(d, "paused", lambda e: e.get("pid") == a.pid and detail(e).get("reason") == "loop")
        self.assertTrue(held, "no paused event with reason loop for the held repeat: %s"
                        % self.brief(d.events("paused")))
        self.assertEqual(detail(held[0]).get("detector"), "repetition", self.brief(held))
        self.assertIs(detail(held[0]).get("dry_run"), False, self.brief(held))

    def test_same_prompt_with_new_ids_is_throttled(self):
        self.check_throttled("repthr")

    def test_counter_only_prompt_is_throttled(self):
        """Near-identical prompts: a ~2 KB runbook in which only "step N" changes (step 1, step 2,
        ...) is the same request again: throttled at max_repeats."""
        self.check_throttled("repctr", "--vary", "counter")


# ==== retry storm ================================================================================
class RetryStorm(LoopsBase):
    def test_fast_retries_on_429_are_paced_by_retry_after(self):
        cg = self.cgroup("retry")
        d = self.daemon(rule("retry_storm", cg.path, max_errors=MAX_ERRORS, window=WINDOW, action="throttle"))
        attempts = 10
        a = self.start(cg, "retry_agent", "--attempts", attempts, "--retry-delay", 0.05, "--timeout", 60,
                       "--header", "x-sim-status: 429", "--header", "x-sim-retry-after: %d" % RETRY_AFTER_S,
                       "--tag", "retry")
        rcs = wait_all([a], 90)
        self.sim.wait_quiet("retry")   # the last 429 logged (the simulator logs after answering)
        recs = self.served("retry", ok_only=False)
        gaps = [round(recs[j]["ts_start"] - recs[j - 1]["ts"], 2) for j in range(1, len(recs))]
        state = ("exit %s; %d requests; gaps between a 429 (retry-after %d s) and the next request: %s; "
                 "loop_detected: %s\ndaemon log tail:\n%s"
                 % (rcs[a.label], len(recs), RETRY_AFTER_S, gaps, self.brief(self.loop_events(d)), d.log_tail(25)))
        self.assertEqual(rcs[a.label], 0, "throttle must not kill the agent: " + state)
        self.assertEqual(len(recs), attempts, state)
        self.assertEqual([c["status"] for c in a.calls()], [429] * attempts,
                         "every attempt must reach the provider and get its 429 (pacing is a delay, not an error): "
                         + state)
        self.check_loop_event(d, "retry_storm", "throttle", [a.pid], [cg.path], count_names=("error",),
                              count_min=MAX_ERRORS + 1)
        # the error that takes the count past max_errors is recs[MAX_ERRORS]; the request right after
        # it may already be on its way; every later one must wait out the retry-after
        paced = gaps[MAX_ERRORS + 1:]
        self.assertTrue(paced, state)
        self.assertTrue(all(g >= 0.8 * RETRY_AFTER_S for g in paced),
                        "not paced after the storm was detected (want every gap >= %.1f s): %s"
                        % (0.8 * RETRY_AFTER_S, state))
        self.assertTrue(all(g < 0.8 * RETRY_AFTER_S for g in gaps[:MAX_ERRORS]),
                        "paced before max_errors was passed: " + state)


# ==== fan-out ====================================================================================
class FanOut(LoopsBase):
    def test_wide_tree_held_to_max_concurrent_other_tree_full_speed(self):
        """A parent spawning WIDE_WORKERS worker processes that all call at once: at most
        max_concurrent in flight, while another tenant's agent keeps its rate."""
        parent = self.cgroup("fan")
        wide = self.child(parent, "wide")
        other = self.child(parent, "other")
        d = self.daemon(rule("fan_out", parent.path, max_concurrent=MAX_CONCURRENT, action="throttle"))
        lat = FAN_LATENCY_S
        n = WIDE_WORKERS
        aw = self.start(wide, "batch_agent", "--prompts", n, "--parallel", n, "--all-at-once", "--timeout", 120,
                        "--header", "x-sim-latency-ms: %d" % (lat * 1000), "--tag", "fan-wide", label="wide")
        # The other tenant starts once the wide tree is in its held steady state (nearly every
        # worker beyond max_concurrent held; a late one may be dealt a freed place instead): what
        # is measured is the brake's effect on it, not 40 interpreters booting on a 2-core host.
        d.wait_for(lambda: d.status().get("counters", {}).get("loop_holds", 0) >= n - 2 * MAX_CONCURRENT, 60,
                   what="the wide tree's workers beyond max_concurrent held")
        ao = self.start(other, "batch_agent", "--prompts", 6, "--parallel", 3, "--timeout", 120,
                        "--header", "x-sim-latency-ms: %d" % (lat * 1000), "--tag", "fan-other", label="other")
        rcs = wait_all([aw, ao], 120)
        if gone(parent):
            self.sim.wait_idle()   # every worker's call logged (the simulator logs after answering)
        rw, ro = self.served("fan-wide"), self.served("fan-other")
        t0 = min((r["ts_start"] for r in rw), default=0)
        counters = d.status().get("counters", {})
        holds = {k: counters.get(k, 0) for k in ("loop_holds", "budget_holds_joined", "budget_hold_records_restored")}
        state = ("exit %s; hold counters %s; wide tree: %d calls, at most %d at once (served [start, end] s: %s); other tree: %d "
                 "calls, at most %d at once, call times %s; loop_detected: %s\ndaemon log tail:\n%s"
                 % (rcs, holds, len(rw), max_overlap(rw, eps=0.1),
                    [(round(r["ts_start"] - t0, 2), round(r["ts"] - t0, 2)) for r in rw[:16]],
                    len(ro), max_overlap(ro),
                    [round(c["t_end"] - c["t_start"], 2) for c in ao.calls()], self.brief(self.loop_events(d)),
                    d.log_tail(25)))
        self.assertEqual(rcs, {"wide": 0, "other": 0}, "throttle never kills nor fails a call: " + state)
        self.assertEqual(sorted(c["status"] for c in aw.calls()), [200] * n, state)
        self.assertEqual(len(rw), n, state)
        self.assertEqual(len(set(c["pid"] for c in aw.calls())), n, "one call per worker process: " + state)
        starts = [c["t_start"] for c in aw.calls()]
        self.assertLess(max(starts) - min(starts), 2.0,
                        "the workers did not all call at once (first calls %.2f s apart): %s"
                        % (max(starts) - min(starts), state))
        # every worker is one thread: each hold stopped its process (none let a request out)
        self.assertEqual(holds["budget_holds_joined"], 0, "a request start was not held: " + state)
        self.assertGreater(holds["loop_holds"], 0, state)
        # held to max_concurrent: a place is dealt only once, even to 40 starts at once
        self.assertLessEqual(max_overlap(rw, eps=0.1), MAX_CONCURRENT,
                             "the wide tree was not held to max_concurrent %d: %s" % (MAX_CONCURRENT, state))
        # the other tree, under the limit, ran at full speed
        self.assertEqual(sorted(c["status"] for c in ao.calls()), [200] * 6, state)
        self.assertEqual(max_overlap(ro), 3, "the other tree's 3 workers must run in parallel: " + state)
        self.assertLess(max(c["t_end"] - c["t_start"] for c in ao.calls()), lat + 0.7,
                        "the other tree's calls were slowed: " + state)
        pw = {aw.pid} | set(c["pid"] for c in aw.calls())
        evs = self.loop_events(d, "fan_out") or self.wait_loop(d, "fan_out")
        self.assertTrue(evs, "no fan_out loop_detected: " + state)
        e = evs[0]
        members = detail(e).get("members") or []
        self.assertTrue(members and {m.get("cgroup") for m in members} == {wide.path},
                        "the fan_out event must name the wide tree only: %s" % self.brief(evs))
        self.assertLessEqual({m.get("pid") for m in members}, pw, self.brief(evs))
        for m in members:
            self.assertEqual(m.get("tree_root_pid"), aw.pid,
                             "one tree, rooted at the batch root: %s" % self.brief(evs))
        self.assertIn("throttle", json.dumps(detail(e).get("action")), self.brief(evs))
        for ev in self.loop_events(d):
            self.assertNotIn(other.path, json.dumps(ev), "the other tree was named in a loop: %s" % self.brief([ev]))
        # every hold a `paused` (reason fan_out), every release a `resumed` with held_ms; all ended
        def paired():
            p = [e for e in d.events("paused") if detail(e).get("reason") == "fan_out"]
            r = [e for e in d.events("resumed") if detail(e).get("reason") == "fan_out"]
            return (p, r) if p and len(r) == len(p) else None
        try:
            paused, resumed = d.wait_for(paired, 5, what="paired paused/resumed events with reason fan_out")
        except AssertionError as e:
            raise AssertionError("%s\npaused: %s\nresumed: %s\n%s" % (e, self.brief(d.events("paused")),
                                 self.brief(d.events("resumed")), state)) from None
        self.assertLessEqual({e.get("pid") for e in paused}, pw, "fan_out holds outside the wide tree: %s"
                             % self.brief(paused))
        self.assertEqual({e.get("cgroup") for e in paused}, {wide.path}, self.brief(paused))
        self.assertEqual(len(paused), holds["loop_holds"], "one paused per hold: " + state)
        for e in resumed:
            self.assertIsInstance(detail(e).get("held_ms"), (int, float), self.brief([e]))
            self.assertGreaterEqual(detail(e)["held_ms"], 0, self.brief([e]))


# ==== honest work: nothing fires =================================================================
class HonestWork(LoopsBase):
    """All four rules on, action kill (a false positive would also kill), same thresholds."""

    def honest_daemon(self, match):
        return self.daemon(
            rule("ping_pong", match, max_round_trips=MAX_ROUND_TRIPS, window=WINDOW, action="kill")
            + rule("repetition", match, max_repeats=MAX_REPEATS, window=WINDOW, action="kill")
            + rule("fan_out", match, max_concurrent=HONEST_MAX_CONCURRENT, action="kill")
            + rule("retry_storm", match, max_errors=MAX_ERRORS, window=WINDOW, action="kill"))

    def assert_nothing_fired(self, d, agents, cgroup_paths, expected_calls, timeout=120):
        rcs = wait_all(agents, timeout)
        calls = [c for a in agents for c in a.calls()]
        state = lambda: ("exit %s; loop_detected: %s; brake events: %s\ndaemon log tail:\n%s"   # noqa: E731
                         % (rcs, self.brief(self.loop_events(d)),
                            self.brief([e for k in BRAKE_KINDS for e in d.events(k)]), d.log_tail(25)))
        self.assertEqual(set(rcs.values()), {0}, "honest agents must end normally: " + state())
        self.assertEqual(len(calls), expected_calls, state())
        self.assertEqual({c["status"] for c in calls}, {200}, state())
        # the daemon did watch them (otherwise "nothing fired" proves nothing)
        t_end = max(c["t_end"] for c in calls)
        abtest.wait_visible(d, list(cgroup_paths), expected_calls, t_end, what="the honest agents' calls")
        # observation window: from here (all calls done and seen, and with them what the
        # daemon decided on them) nothing may fire for HONEST_WINDOW_S either; a capture hold
        # (first connect, until probes attach) is no brake
        def braked():
            return [e for k in BRAKE_KINDS for e in d.events(k) if detail(e).get("reason") != "capture"]
        abtest.assert_stays(lambda: not self.loop_events(d) and not braked(),
                            HONEST_WINDOW_S, "a loop was detected or honest work was braked", interval=0.3,
                            on_fail=state)

    def test_long_session_with_growing_context(self):
        cg = self.cgroup("session")
        d = self.honest_daemon(cg.path)
        a = self.start(cg, "chat_agent", "--mode", "session", "--turns", 25, "--tag", "session")
        self.assert_nothing_fired(d, [a], [cg.path], 25)
        ins = [c["input_tokens"] for c in a.calls()]
        self.assertEqual(ins, sorted(ins), "the context grows call after call")

    def test_batch_of_50_distinct_prompts_under_fan_out_limit(self):
        cg = self.cgroup("batch")
        d = self.honest_daemon(cg.path)
        a = self.start(cg, "batch_agent", "--prompts", 50, "--parallel", HONEST_MAX_CONCURRENT - 2,
                       "--header", "x-sim-latency-ms: 200", "--tag", "batch")
        self.assert_nothing_fired(d, [a], [cg.path], 50)
        self.sim.wait_quiet("batch")
        self.assertEqual(max_overlap(self.served("batch")), HONEST_MAX_CONCURRENT - 2, "ran in parallel")

    def test_agents_calling_local_tool_servers_without_llm(self):
        parent = self.cgroup("tools")
        srv_cg = self.child(parent, "server")
        port_file = os.path.join(tempfile.mkdtemp(prefix="tools-", dir=abtest.scratch_dir()), "port")
        d = self.honest_daemon(parent.path)
        server = self.start(srv_cg, "tool_agent", "--serve", "--port-file", port_file, label="tool-server")
        server.wait_line(lambda x: "listening" in x, timeout=30)
        agents = []
        for i in (1, 2):   # two agents sharing one TCP tool server
            cg = self.child(parent, "tcp%d" % i)
            agents.append(self.start(cg, "tool_agent", "--transport", "tcp", "--server-port-file", port_file,
                                     "--turns", 12, "--tag", "tools-tcp%d" % i, label="tcp%d" % i))
        stdio_cg = self.child(parent, "stdio")   # MCP-style: the server is the agent's child on pipes
        agents.append(self.start(stdio_cg, "tool_agent", "--transport", "stdio", "--turns", 12,
                                 "--tag", "tools-stdio", label="stdio"))
        paths = [parent.path + "/" + n for n in ("tcp1", "tcp2", "stdio")]
        self.assert_nothing_fired(d, agents, paths, 36)
        self.assertIsNone(server.p.poll(), "the tool server is still serving")
        self.assertEqual(d.calls(srv_cg.path), [], "the tool server makes no LLM calls")

    def test_human_chat_with_continue(self):
        cg = self.cgroup("chat")
        d = self.honest_daemon(cg.path)
        # 9 messages ~1.2 s apart; "continue" at turns 2, 4, 6, 8: more than max_repeats times
        a = self.start(cg, "chat_agent", "--mode", "chat", "--turns", 9, "--pace", 1.2, "--jitter", 0.3,
                       "--continue-every", 2, "--tag", "chat")
        self.assert_nothing_fired(d, [a], [cg.path], 9)
        kinds = [c.get("kind") for c in a.calls()]
        self.assertGreater(kinds.count("continue"), MAX_REPEATS, kinds)


if __name__ == "__main__":
    unittest.main()
