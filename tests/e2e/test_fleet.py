#!/usr/bin/env python3
"""End-to-end proof of fleet budgets (issue 15 items 1-4; docs/fleet.md, docs/interface.md):

  * a real redis-server (the Debian package) that the test starts on a free loopback port
    (no persistence, its own directory) and kills by its pid;
  * two daemons as two hosts: disjoint `--cgroup-scope` and their own state dirs, one policy
    whose budget `shared` (requests per window, throttle) has `scope: fleet`;
  * a greedy agent on each host, in <scope>/agents/a — the bucket `cgroup:/agents/a` on both,
    i.e. one fleet bucket: in every window the calls served to BOTH together stay within the
    limit (docs/fleet.md: for requests the bound is the limit itself while Redis answers), and
    each is held at times (neither has the whole limit);
  * `agentbrake fleet status --json` on each shows the state, 2 hosts seen, the bucket;
  * Redis killed mid-run: each daemon records `fleet_degraded`; with `fail: local` each host
    goes on within its share (limit / 2 per window of its own calls); with `fail: closed`
    fleet calls hold;
  * Redis started again on the same port: `fleet_restored` on each, with what it reconciled;
    every call the simulator served is in the daemon's records (nothing lost).

Needs `--cgroup-scope` (branch scope, issue 15 item 5): skipped without it.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, SubCgroup, detail  # noqa: E402

CALL_ARGS = ["--prompt-chars", "40", "--max-tokens", "20"]
W = 3            # window, s
R = 8            # requests per window for the whole fleet
TOL_S = 0.25     # the simulator's clock vs the moment of admission
HELD_S = 0.8     # a call this much slower than an unheld one was held


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    """redis-server on 127.0.0.1:port, no persistence, own dir; stop() kills it by pid."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="ab-e2e-redis-")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: abtest._die_with_parent(signal.SIGKILL))

        def up():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        abtest.wait_for(up, 15, what="redis-server to answer on port %d" % self.port)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def policy(sim, redis_port, host_id, fail):
    return abtest.policy_for(sim, (
        "max_hold: 120s\ncooldown: 1s\n"
        "fleet: {redis: \"redis://127.0.0.1:%d/0\", host_id: %s, fail: %s}\n"
        "budgets:\n"
        "  - name: shared\n"
        "    match: {cgroup: \"/agents/*\"}\n"
        "    per: cgroup\n"
        "    limits:\n"
        "      - {requests: %d, window: %ds}\n"
        "    action: throttle\n"
        "    scope: fleet\n") % (redis_port, host_id, fail, R, W))


def window_max(recs, window_s, t_from=None, t_to=None):
    """The most calls whose start falls in one window (sliding over every call's start)."""
    starts = sorted(r["ts_start"] for r in recs
                    if (t_from is None or r["ts_start"] >= t_from) and (t_to is None or r["ts_start"] < t_to))
    best = 0
    for t in starts:
        best = max(best, sum(1 for s in starts if t <= s < t + window_s - TOL_S))
    return best


def has_scope_flag():
    daemon_bin, _ = abtest.binaries()
    try:
        r = subprocess.run([daemon_bin, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--cgroup-scope" in r.stdout


class Fleet(abtest.SimulatorCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_tools("redis-server")
        abtest.require_daemon()
        abtest.require_or_skip(has_scope_flag(), "agentbraked has no --cgroup-scope yet (issue 15 item 5)")
        super().setUpClass()

    def agent(self, cg, tag, n):
        return abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", tag, "-n", str(n), *CALL_ARGS, label=tag)

    def two_hosts(self, fail, body):
        ra, rb = Cgroup("abfleet-A"), Cgroup("abfleet-B")
        with Redis() as redis, ra, rb:
            ra_agents, rb_agents = SubCgroup(ra, "agents"), SubCgroup(rb, "agents")
            with ra_agents, rb_agents:
                ca, cb = SubCgroup(ra_agents, "a"), SubCgroup(rb_agents, "a")
                with ca, cb:
                    with Daemon(policy(self.sim, redis.port, "hostA", fail), extra_args=["--cgroup-scope", ra.path]) as da, \
                            Daemon(policy(self.sim, redis.port, "hostB", fail), extra_args=["--cgroup-scope", rb.path]) as db:
                        for d in (da, db):
                            d.wait_for(lambda d=d: d.cli_json("fleet", "status", "--json").get("state") == "connected",
                                       20, what="the fleet connected")
                        body(redis, da, db, ca, cb)

    def fleet_status(self, d):
        return d.cli_json("fleet", "status", "--json")

    def event_of(self, d, kind):
        evs = d.events(kind)
        return evs[0] if evs else None

    def served(self, tag):
        return self.sim.records(tag)

    # -- fail: local ------------------------------------------------------------------------------
    def test_01_shared_limit_then_redis_lost_local_share_then_restored(self):
        self.two_hosts("local", self.check_local)

    def check_local(self, redis, da, db, ca, cb):
        n = 3 * R + 6      # per agent: several windows' worth at the fleet rate
        t0 = time.time()
        a = self.agent(ca, "A", n)
        b = self.agent(cb, "B", n)
        # Phase 1: Redis answers. Both hosts share the bucket.
        abtest.wait_for(lambda: len(self.served("A")) + len(self.served("B")) >= 2 * R, 60,
                        what="both agents' first %d calls" % (2 * R))
        fs = self.fleet_status(da)
        self.assertEqual(fs.get("state"), "connected", json.dumps(fs))
        self.assertEqual(fs.get("hosts_seen"), 2, json.dumps(fs))
        self.assertEqual(fs.get("fail"), "local")
        buckets = {(l["budget"], l["bucket"]) for l in fs.get("limits", [])}
        self.assertIn(("shared", "cgroup:/agents/a"), buckets, json.dumps(fs))
        self.assertIn("hostA", da.cli("fleet", "status").stdout, "the text output names the host")

        t_kill = time.time()
        both = self.served("A") + self.served("B")
        got = window_max(both, W, t_to=t_kill)
        self.assertLessEqual(got, R, "fleet: %d calls of both hosts in one %d s window (limit %d)" % (got, W, R))
        self.assertGreater(len(self.served("A")), 0)
        self.assertGreater(len(self.served("B")), 0)

        # Phase 2: Redis killed. Each host goes on within its share (R / 2 hosts per window).
        redis.stop()
        for d in (da, db):
            d.wait_for(lambda d=d: self.event_of(d, "fleet_degraded") is not None, 20, what="fleet_degraded recorded")
        t_degraded = time.time()
        for d in (da, db):
            ev = self.event_of(d, "fleet_degraded")
            self.assertEqual(detail(ev).get("fail"), "local", ev)
            self.assertEqual(detail(ev).get("hosts_seen"), 2, ev)
            self.assertTrue(detail(ev).get("error"), ev)
            self.assertEqual(self.fleet_status(d).get("state"), "degraded")
        served_at_degraded = {t: len(self.served(t)) for t in ("A", "B")}
        abtest.wait_for(lambda: all(len(self.served(t)) >= served_at_degraded[t] + R // 2 + 1 for t in ("A", "B")),
                        60, what="both hosts to go on admitting within their share while Redis is away")
        t_apart_end = time.time()
        for tag in ("A", "B"):
            # calls admitted after the degradation was recorded: this host's window only
            got = window_max(self.served(tag), W, t_from=t_degraded + W, t_to=t_apart_end)
            self.assertLessEqual(got, R // 2, "host %s: %d calls in one window while apart (share %d)"
                                 % (tag, got, R // 2))

        # Phase 3: Redis back on the same port (empty: no persistence). Both restore and report.
        redis.start()
        for d in (da, db):
            d.wait_for(lambda d=d: self.event_of(d, "fleet_restored") is not None, 20, what="fleet_restored recorded")
            ev = self.event_of(d, "fleet_restored")
            self.assertEqual(detail(ev).get("fail"), "local", ev)
            rec = detail(ev).get("reconciled") or {}
            self.assertTrue(rec, "usage settled while apart is reported on return: %s" % ev)
            self.assertTrue(all(k.startswith("shared|cgroup:/agents/a|requests|") for k in rec), rec)
            self.assertGreaterEqual(sum(rec.values()), R // 2, rec)
        t_restored = time.time()
        a.wait(timeout=120)
        b.wait(timeout=120)
        for ag in (a, b):
            calls = ag.calls()
            self.assertEqual(len(calls), n)
            self.assertTrue(all(c["status"] == 200 for c in calls), "a throttled agent never sees an error")
            self.assertTrue([c for c in calls if c["t_end"] - c["t_start"] >= HELD_S],
                            "agent %s was never held" % ag.label)
        # After the return, the fleet shares the limit again (the first window after the
        # restore also counts what was reported, so it is if anything stricter).
        both = self.served("A") + self.served("B")
        got = window_max(both, W, t_from=t_restored + 1.0)
        self.assertLessEqual(got, R, "after the restore: %d calls of both hosts in one window" % got)
        # Nothing lost: every call served is in its host's records.
        t_end = max(c["t_end"] for c in a.calls() + b.calls())
        for d, tag in ((da, "A"), (db, "B")):
            ev = abtest.wait_visible(d, "/agents/a", n, t_end, what="host %s's calls" % tag)
            self.assertEqual(len(ev), len(self.served(tag)), "host %s: records vs served" % tag)
        self.assertGreater(t_restored, t0)

    # -- fail: closed -----------------------------------------------------------------------------
    def test_02_closed_holds_fleet_calls_until_redis_is_back(self):
        self.two_hosts("closed", self.check_closed)

    def check_closed(self, redis, da, db, ca, cb):
        n = R + 4
        a = self.agent(ca, "CA", n)
        b = self.agent(cb, "CB", n)
        abtest.wait_for(lambda: len(self.served("CA")) >= 2 and len(self.served("CB")) >= 2, 60,
                        what="both agents' first calls")
        redis.stop()
        for d in (da, db):
            d.wait_for(lambda d=d: self.event_of(d, "fleet_degraded") is not None, 20, what="fleet_degraded recorded")
            self.assertEqual(detail(self.event_of(d, "fleet_degraded")).get("fail"), "closed")
        # From a settled state (nothing in flight), no fleet call goes out while Redis is away.
        self.sim.wait_quiet(timeout=20)
        count = len(self.served("CA")) + len(self.served("CB"))
        self.assertLess(count, 2 * n, "the agents were not done before Redis went away")
        abtest.assert_stays(lambda: len(self.served("CA")) + len(self.served("CB")) == count
                            and self.sim.in_flight() == 0, 2.0,
                            "fail: closed lets no fleet call out while Redis is unreachable")
        redis.start()
        for d in (da, db):
            d.wait_for(lambda d=d: self.event_of(d, "fleet_restored") is not None, 20, what="fleet_restored recorded")
        a.wait(timeout=120)
        b.wait(timeout=120)
        for ag in (a, b):
            self.assertEqual(len(ag.calls()), n)
            self.assertTrue(all(c["status"] == 200 for c in ag.calls()))


if __name__ == "__main__":
    unittest.main()
