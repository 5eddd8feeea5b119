#!/usr/bin/env python3
"""End-to-end capture proofs: a real agentbraked sees every LLM call of real clients.

Each client runs in its own cgroup and talks HTTPS to the provider simulator on loopback.
Every call must arrive exactly once as an `llm_call` event within 2 s of its completion, with
the client's pid, the test cgroup, the tree root, host, path, model, status, stream and the
tokens the simulator served. Needs root, BPF, cgroup v2; node for the SDK tests; tmux for the
terminal test. Under AGENTBRAKE_REQUIRE_BPF=1 a missing requirement is a failure.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
import unittest
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, detail, host_of  # noqa: E402

DUP_WINDOW_S = 0.5   # observation window: a call seen once is not recorded a second time

API_OF_PATH = {"/v1/chat/completions": "openai", "/v1/responses": "openai", "/v1/messages": "anthropic"}

PRICES = """prices:
  e2e-gpt: {input: 1.0, output: 2.0, cache_read: 0.5}
  e2e-claude: {input: 3.0, output: 15.0, cache_read: 0.3, cache_write: 3.75}
"""


def expected_roots(agent):
    """The tree root of the agent's calls (daemon/process/lineage.h): the oldest process of the
    walk up the parents, inside the cgroup, that is not transparent (shells, tmux, ...). An
    agent the test started in its own cgroup roots its tree; curl_agent.sh's bash is a shell,
    walked through, so each curl roots its own tree."""
    if agent.kind == "curl":
        return lambda call: {call["pid"]}
    return {agent.pid}


class CaptureBase(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return abtest.policy_for(cls.sim, PRICES)

    # ---- helpers ----------------------------------------------------------------------------
    def describe(self, events):
        return json.dumps([{"pid": e.get("pid"), "cgroup": e.get("cgroup"), "comm": e.get("comm"),
                            **{k: detail(e).get(k) for k in ("path", "model", "status", "stream", "complete",
                                                             "input_tokens", "output_tokens", "tree_root_pid",
                                                             "estimated")}}
                           for e in events], indent=None)[:3000]

    def assert_calls_captured(self, cg, agents, calls_expected, roots, served_tag=None, host="localhost",
                              check_tokens=True):
        """Observe the cgroup until all calls are visible, then check every field."""
        agents = agents if isinstance(agents, (list, tuple)) else [agents]
        events, timeline, calls = abtest.observe_calls(self.daemon, cg.path, agents, calls_expected)
        self.assertEqual(len(calls), calls_expected, "the agents did not make the expected calls: %s" % calls)
        for c in calls:
            self.assertEqual(c["status"], 200, c)
        self.assertEqual(len(events), calls_expected,
                         "want each of %d calls exactly once as llm_call in %s, got %d: %s"
                         % (calls_expected, cg.path, len(events), self.describe(events)))
        late = abtest.visibility_violations(timeline, calls)
        self.assertEqual(late, [], "calls not visible within %.1f s (+%.1f s poll slack) of completion: "
                         "(j, t_end, seen_after_s) %s" % (abtest.VISIBLE_WITHIN_S, abtest.POLL_SLACK_S, late))
        # per pid, as many events as calls
        self.assertEqual(Counter(e.get("pid") for e in events), Counter(c["pid"] for c in calls),
                         "pids of events vs pids that made the calls: %s" % self.describe(events))
        by_pid = {c["pid"]: c for c in calls}
        for e in events:
            d = detail(e)
            c = by_pid[e["pid"]]
            where = "event %s" % self.describe([e])
            self.assertEqual(e.get("kind"), "llm_call", where)
            self.assertEqual(e.get("cgroup"), cg.path, where)
            self.assertEqual(e.get("comm"), c["comm"], where)
            self.assertIn(d.get("tree_root_pid"), roots(c) if callable(roots) else roots, where)
            self.assertEqual(host_of(d.get("host")), host, where)
            self.assertEqual(d.get("path"), c["path"], where)
            self.assertEqual(d.get("api"), API_OF_PATH[c["path"]], where)
            self.assertEqual(d.get("model"), c["model"], where)
            self.assertEqual(d.get("status"), 200, where)
            self.assertIs(d.get("stream"), c["stream"], where)
            self.assertIs(d.get("complete"), True, where)
            self.assertTrue(isinstance(e.get("ts"), str) and e["ts"].endswith("Z"), where)
        if check_tokens:
            tag = served_tag
            if tag:
                self.sim.wait_quiet(tag)   # the simulator logs a call after answering it
            served = self.sim.records(tag) if tag else None
            if served is not None:
                self.assertEqual(len(served), calls_expected, served)
                want = Counter((s["input_tokens"], s["output_tokens"], s["cache_read"], s["cache_write"])
                               for s in served)
                got = Counter((detail(e).get("input_tokens"), detail(e).get("output_tokens"),
                               detail(e).get("cache_read_tokens"), detail(e).get("cache_write_tokens"))
                              for e in events)
                self.assertEqual(got, want, "tokens (input, output, cache_read, cache_write) per call")
                if all(s["usage_sent"] for s in served):
                    for e in events:
                        self.assertIs(detail(e).get("estimated"), False, self.describe([e]))
        return events, calls

    def capture_one_client(self, kind, tag, n, *args, model="e2e-gpt"):
        with Cgroup(tag) as cg:
            a = abtest.start_agent(cg, kind, self.sim, "--tag", tag, "--model", model, "-n", str(n), *args)
            return self.assert_calls_captured(cg, a, n, roots=expected_roots(a), served_tag=tag)


class Capture(CaptureBase):
    # ---- every client, stream and not -----------------------------------------------------------
    def test_py_httpclient(self):
        self.capture_one_client("py_httpclient", "hc", 2)

    def test_py_httpclient_stream(self):
        self.capture_one_client("py_httpclient", "hcs", 2, "--stream", "--include-usage")

    def test_py_urllib(self):
        self.capture_one_client("py_urllib", "ul", 2)

    def test_py_asyncio(self):
        self.capture_one_client("py_asyncio", "as", 2)

    def test_py_asyncio_anthropic_stream(self):
        self.capture_one_client("py_asyncio", "asas", 2, "--api", "anthropic", "--stream", model="e2e-claude")

    def test_py_responses_api(self):
        self.capture_one_client("py_httpclient", "resp", 1, "--api", "responses")
        self.capture_one_client("py_httpclient", "resps", 1, "--api", "responses", "--stream")

    def test_curl(self):
        abtest.require_tools("curl")
        with Cgroup("curl") as cg:
            a = abtest.start_agent(cg, "curl", self.sim, "--tag", "curl", "-n", "2")
            events, calls = self.assert_calls_captured(cg, a, 2, roots=expected_roots(a), served_tag="curl")
            self.assertEqual(len({c["pid"] for c in calls}), 2, "one curl process per call")
            self.assertNotIn(a.pid, {e["pid"] for e in events}, "the curl pid, not the shell's")

    def test_curl_stream(self):
        abtest.require_tools("curl")
        with Cgroup("curls") as cg:
            a = abtest.start_agent(cg, "curl", self.sim, "--tag", "curls", "-n", "2", "--stream", "--include-usage")
            self.assert_calls_captured(cg, a, 2, roots=expected_roots(a), served_tag="curls")

    def test_curl_several_urls_one_connection(self):
        abtest.require_tools("curl")
        with Cgroup("curlm") as cg:
            a = abtest.start_agent(cg, "curl", self.sim, "--tag", "curlm", "-n", "3", "--multi")
            self.assert_calls_captured(cg, a, 3, roots=expected_roots(a), served_tag="curlm")
        self.assertEqual(len({s["peer_port"] for s in self.sim.records("curlm")}), 1)

    def test_node_openai(self):
        abtest.ensure_node_modules()
        self.capture_one_client("node_openai", "no", 2)

    def test_node_openai_stream(self):
        abtest.ensure_node_modules()
        self.capture_one_client("node_openai", "nos", 2, "--stream", "--include-usage")

    def test_node_anthropic(self):
        abtest.ensure_node_modules()
        self.capture_one_client("node_anthropic", "na", 2, model="e2e-claude")

    def test_node_anthropic_stream(self):
        abtest.ensure_node_modules()
        self.capture_one_client("node_anthropic", "nas", 2, "--stream", model="e2e-claude")

    # ---- connections and bodies ---------------------------------------------------------------
    def test_keepalive_several_calls_one_connection(self):
        self.capture_one_client("py_httpclient", "ka", 5)
        self.assertEqual(len({s["peer_port"] for s in self.sim.records("ka")}), 1, "one TCP connection")
        self.capture_one_client("py_asyncio", "kaa", 4, "--api", "anthropic", "--stream", model="e2e-claude")
        self.assertEqual(len({s["peer_port"] for s in self.sim.records("kaa")}), 1, "one TCP connection")

    def test_one_mib_request_body(self):
        """1 MiB of prompt before the model name (the Python SDK's field order), Expect: 100-continue."""
        self.capture_one_client("py_httpclient", "big", 1, "--body-size", str(1 << 20), "--expect-continue")
        self.assertGreaterEqual(self.sim.records("big")[0]["request_bytes"], 1 << 20)
        # and a big body followed by a small call on the same connection
        self.capture_one_client("py_httpclient", "big2", 2, "--body-size", str(1 << 20))
        if shutil.which("curl"):
            # curl sends bodies over 1 MiB with its own Expect: 100-continue
            self.capture_one_client("curl", "bigcurl", 1, "--body-size", str((1 << 20) + 4096))
        # the Node SDK path (memory BIO) with a large body
        if shutil.which("node"):
            abtest.ensure_node_modules()
            self.capture_one_client("node_openai", "bignode", 1, "--prompt-chars", str(1 << 20))

    def test_eight_agents_in_parallel(self):
        kinds = ["py_httpclient", "py_asyncio", "py_urllib", "curl"] * 2
        if shutil.which("curl") is None:
            kinds = ["py_httpclient", "py_asyncio", "py_urllib", "py_httpclient"] * 2
        with contextlib.ExitStack() as st:
            cgs = [st.enter_context(Cgroup("par%d" % i)) for i in range(8)]
            agents = [abtest.start_agent(cg, k, self.sim, "--tag", "par%d" % i, "-n", "3", "--interval", "0.05")
                      for i, (cg, k) in enumerate(zip(cgs, kinds))]
            events, timeline, calls = abtest.observe_calls(self.daemon, [cg.path for cg in cgs], agents, 24)
            self.assertEqual(len(calls), 24)
            self.assertEqual(abtest.visibility_violations(timeline, calls), [])
            for i, (cg, a) in enumerate(zip(cgs, agents)):
                mine = [e for e in events if e["cgroup"] == cg.path]
                pids = {c["pid"] for c in a.calls()}
                self.assertEqual(len(mine), 3, "agent %d (%s) in %s: %s" % (i, a.kind, cg.path, self.describe(mine)))
                self.assertEqual({e["pid"] for e in mine} - pids, set(), "events attributed to the wrong pid")
                roots = expected_roots(a)
                for e in mine:
                    want = roots({"pid": e["pid"]}) if callable(roots) else roots
                    self.assertIn(detail(e).get("tree_root_pid"), want, self.describe([e]))
                self.sim.wait_quiet("par%d" % i)
                served = self.sim.records("par%d" % i)
                self.assertEqual(sorted(detail(e).get("input_tokens") for e in mine),
                                 sorted(s["input_tokens"] for s in served))

    def test_fresh_process_first_call(self):
        """A process whose very first action is the LLM call: nothing to warm up, still captured."""
        kinds = ["py_httpclient", "py_urllib", "py_asyncio"]
        if shutil.which("curl"):
            kinds.append("curl")
        for i, k in enumerate(kinds):
            with self.subTest(kind=k):
                self.capture_one_client(k, "fresh%d" % i, 1)

    def test_client_killed_mid_response(self):
        """SIGKILL while the simulator is slow-dripping a stream: recorded once, complete=false."""
        with Cgroup("killed") as cg:
            a = abtest.start_agent(cg, "py_httpclient", self.sim, "--tag", "killed", "--stream",
                                   "--include-usage", "--max-tokens", "60", "--progress",
                                   "--header", "x-sim-chunk-ms: 400", "--header", "x-sim-chunks: 30")
            # mid-response: the first data is in, 29 more chunks 400 ms apart to come (what the
            # client read, the daemon's probes put in its ring before the exit event)
            a.wait_line(lambda x: x.get("progress") == "first_data", timeout=20)
            os.kill(a.pid, signal.SIGKILL)
            t_kill = time.time()
            a.wait(timeout=10, check=False)
            # the call ends when the process dies: visible within 2 s of that (+ poll slack)
            abtest.wait_visible(self.daemon, cg.path, 1, t_kill, what="the cut-off call of the killed client")
            abtest.assert_stays(lambda: len(self.daemon.calls(cg.path)) == 1, DUP_WINDOW_S,
                                "the cut-off call recorded once", on_fail=lambda: self.describe(self.daemon.calls(cg.path)))
            ev = self.daemon.calls(cg.path)
        self.assertEqual(len(ev), 1, self.describe(ev))
        e = ev[0]
        d = detail(e)
        self.assertEqual(e["pid"], a.pid)
        self.assertIs(d.get("complete"), False, self.describe(ev))
        self.assertIs(d.get("stream"), True)
        self.assertEqual(d.get("status"), 200)
        self.assertEqual(d.get("path"), "/v1/chat/completions")
        self.assertEqual(d.get("model"), "e2e-gpt")
        rec = abtest.wait_for(lambda: self.sim.records("killed"), 30, what="simulator noticed the abort")
        self.assertTrue(rec[0]["aborted"])

    def test_interactive_foreground_job_in_tmux(self):
        """The agent is the foreground job of `bash -i` in tmux: it finishes, is captured, and the
        shell never reports it Stopped (a SIGSTOP hold would move it to the background)."""
        abtest.require_tools("tmux")
        with Cgroup("tmux") as cg, abtest.Tmux("cap", cgroup=cg) as tm:
            out = os.path.join(abtest.scratch_dir(), "tmux-agent.jsonl")
            shell = tm.shell_pid()
            server = int(tm.tmux("display-message", "-p", "#{pid}").stdout.strip())
            cmd = " ".join(abtest.agent_cmd("py_httpclient", self.sim, "--tag", "tmux", "-n", "2",
                                            "--interval", "0.2"))
            tm.send("%s > %s; echo AB-RC=$?" % (cmd, out))
            t0 = time.time()
            screen = abtest.wait_for(lambda: (lambda s: s if re.search(r"AB-RC=\d+", s) else None)(tm.screen()),
                                     60, interval=0.2, what="the foreground job to finish")
            self.assertNotIn("Stopped", screen)
            self.assertRegex(screen, r"AB-RC=0\b")
            with open(out) as f:
                calls = [json.loads(x) for x in f if x.strip()]
            self.assertEqual(len(calls), 2)
            pid = calls[0]["pid"]
            self.assertEqual(calls[0]["ppid"], shell)
            abtest.wait_visible(self.daemon, cg.path, 2, max(c["t_end"] for c in calls), what="tmux agent's calls")
            tm.send("jobs; echo AB-JOBS=$((6*7))")
            screen = abtest.wait_for(lambda: (lambda s: s if "AB-JOBS=42" in s else None)(tm.screen()),
                                     10, interval=0.2, what="jobs output")
            self.assertNotIn("Stopped", screen)
            abtest.assert_stays(lambda: len(self.daemon.calls(cg.path)) == 2, DUP_WINDOW_S,
                                "each call recorded once", on_fail=lambda: self.describe(self.daemon.calls(cg.path)))
            ev = self.daemon.calls(cg.path)
            self.assertEqual(len(ev), 2, self.describe(ev))
            for e in ev:
                self.assertEqual(e["pid"], pid)
                # bash -i and the tmux server are transparent: the agent roots its own tree
                self.assertEqual(detail(e).get("tree_root_pid"), pid, "shell %d, tmux server %d" % (shell, server))
                self.assertIs(detail(e).get("complete"), True)
            self.assertLess(time.time() - t0, 60)

    def test_spawner_tree_root(self):
        """A parent agent, two sub-agents and a curl tool (via a shell): one tree, rooted at the parent."""
        with Cgroup("tree") as cg:
            args = ["--tag", "tree", "--children", "2", "-n", "2"]
            if shutil.which("curl") is None:
                args.append("--no-curl")
            a = abtest.start_agent(cg, "spawner", self.sim, *args)
            n = 1 + 2 * 2 + (0 if "--no-curl" in args else 2)
            events, calls = self.assert_calls_captured(cg, a, n, roots={a.pid}, served_tag="tree")
            self.assertGreaterEqual(len({e["pid"] for e in events}), 3 if "--no-curl" in args else 5)

    def test_daemon_restart_keeps_capturing_open_connection(self):
        """An agent keeps its keep-alive connection open while the daemon restarts; its later
        calls on that connection are still captured (scan at start, resync at the next request)."""
        with Cgroup("restart") as cg:
            a = abtest.start_agent(cg, "sleepy", self.sim, "--tag", "restart", "-n", "3")
            a.wait_line(lambda x: x.get("progress") == "waiting" and x.get("round") == 0, timeout=30)
            abtest.wait_visible(self.daemon, cg.path, 1, a.calls()[0]["t_end"], what="round 0")
            self.daemon.restart()
            for rnd in (1, 2):
                os.kill(a.pid, signal.SIGUSR1)
                a.wait_line(lambda x, r=rnd: x.get("progress") == "waiting" and x.get("round") == r, timeout=30)
                abtest.wait_visible(self.daemon, cg.path, rnd + 1, a.calls()[rnd]["t_end"],
                                    what="round %d (after the daemon restart)" % rnd)
            a.wait(timeout=30)
            abtest.assert_stays(lambda: len(self.daemon.calls(cg.path)) == 3, DUP_WINDOW_S,
                                "3 calls, each recorded once, also after the agent's exit",
                                on_fail=lambda: self.describe(self.daemon.calls(cg.path)))
            ev = self.daemon.calls(cg.path)
        self.assertEqual(len(ev), 3, self.describe(ev))
        self.sim.wait_quiet("restart")
        self.assertEqual(len({s["peer_port"] for s in self.sim.records("restart")}), 1, "one connection")
        for e in ev:
            self.assertEqual(e["pid"], a.pid)
            self.assertEqual(detail(e).get("path"), "/v1/chat/completions")
            self.assertEqual(detail(e).get("status"), 200)
            self.assertEqual(detail(e).get("tree_root_pid"), a.pid)
        served = self.sim.records("restart")
        self.assertEqual(sorted(detail(e).get("output_tokens") for e in ev), sorted(s["output_tokens"] for s in served))

    # ---- status and agents ---------------------------------------------------------------------
    def test_status_json(self):
        st = self.daemon.status()
        for k in ("version", "uptime_s", "policy", "probes_attached", "watched_processes", "held", "denied",
                  "counters"):
            self.assertIn(k, st, "status --json lacks %r: %s" % (k, st))
        self.assertIsInstance(st["version"], str)
        self.assertTrue(st["version"])
        self.assertIsInstance(st["uptime_s"], (int, float))
        self.assertGreaterEqual(st["uptime_s"], 0)
        self.assertLess(st["uptime_s"], time.time() - self.daemon.started_at + 5)
        self.assertIsInstance(st["counters"], dict)
        flat = {}

        def walk(prefix, v):
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(prefix + "." + k if prefix else k, x)
            else:
                flat[prefix] = v
        walk("", st["counters"])
        for k, v in flat.items():
            self.assertIsInstance(v, (int, float), "counter %s is not a number: %r" % (k, v))
            self.assertNotIsInstance(v, bool, k)
        names = " ".join(flat).lower()
        for concept in (("ring", "lost", "loss"), ("trunc",), ("unparsed", "parse"), ("alert",)):
            self.assertTrue(any(c in names for c in concept), "no %s counter in %s" % (concept, sorted(flat)))
        for k in ("probes_attached", "watched_processes", "held", "denied"):
            self.assertIsInstance(st[k], (int, list, dict), k)
        self.assertEqual(self.count(st["held"]), 0)
        self.assertEqual(self.count(st["denied"]), 0)
        self.assertGreater(self.count(st["probes_attached"]), 0, "probes attached: %s" % st["probes_attached"])
        # text form too
        r = self.daemon.cli("status")
        self.assertTrue(r.stdout.strip())

    @staticmethod
    def count(v):
        return v if isinstance(v, int) else len(v)

    def test_agents_json(self):
        with Cgroup("agents") as cg:
            a = abtest.start_agent(cg, "sleepy", self.sim, "--tag", "agents", "-n", "3", "--max-tokens", "9")
            try:
                a.wait_line(lambda x: x.get("progress") == "waiting" and x.get("round") == 0, timeout=30)
                os.kill(a.pid, signal.SIGUSR1)
                line = a.wait_line(lambda x: x.get("progress") == "waiting" and x.get("round") == 1, timeout=30)
                comm = a.calls()[0]["comm"]

                def mine():
                    for row in self.daemon.agents():
                        if row.get("cgroup") == cg.path and a.pid in (row.get("pids") or []) \
                                and row.get("calls", 0) >= 2:
                            return row
                    return None
                row = self.daemon.wait_for(mine, abtest.VISIBLE_WITHIN_S + 1, what="the agent in agents --json")
                listing = self.daemon.agents()
                self.assertIsInstance(listing, list)
                for k in ("cgroup", "tree_root_pid", "pids", "comm", "provider", "model", "calls", "input_tokens",
                          "output_tokens", "cost_usd", "tokens_per_min", "state", "reason"):
                    self.assertIn(k, row, "agents --json row lacks %r: %s" % (k, row))
                self.assertEqual(row["tree_root_pid"], a.pid)
                self.assertEqual(row["comm"], comm)
                self.assertEqual(row["calls"], 2)
                self.assertEqual(row["state"], "ok")
                self.assertEqual(row["model"], "e2e-gpt")
                self.sim.wait_quiet("agents")
                served = self.sim.records("agents")
                self.assertEqual(row["input_tokens"], sum(s["input_tokens"] for s in served))
                self.assertEqual(row["output_tokens"], sum(s["output_tokens"] for s in served))
                self.assertGreater(row["cost_usd"], 0)
                self.assertGreaterEqual(row["tokens_per_min"], 0)
                del line
            finally:
                if a.p.poll() is None:
                    os.kill(a.pid, signal.SIGUSR1)   # let it finish its last round normally
                    a.wait(timeout=30, check=False)

    # ---- secrets (runs last: scans everything the other tests produced) -----------------------
    def test_zz_secrets_never_stored_logged_or_printed(self):
        with Cgroup("secrets") as cg:
            runs = [("py_httpclient", ["--key", abtest.SECRETS["openai2"]]),
                    ("py_asyncio", ["--api", "anthropic", "--stream", "--key", abtest.SECRETS["anthropic"]])]
            if shutil.which("curl"):
                runs.append(("curl", ["--key", abtest.SECRETS["openai2"]]))
                runs.append(("curl", ["--api", "anthropic", "--key", abtest.SECRETS["anthropic"]]))
            for kind, args in runs:
                abtest.run_agent(cg, kind, self.sim, "--tag", "secrets", *args)
            self.daemon.wait_for(lambda: len(self.daemon.calls(cg.path)) >= len(runs), abtest.VISIBLE_WITHIN_S + 2,
                                 what="the secret-carrying calls captured")
        for by in ("cgroup", "process", "model", "provider"):
            self.daemon.cli("usage", "--by", by, "--json")
            self.daemon.cli("usage", "--by", by)
        self.daemon.cli("events", "--json")
        self.daemon.cli("events")
        self.daemon.cli("agents", "--json")
        self.daemon.cli("agents")
        self.daemon.cli("status", "--json")
        self.daemon.cli("status")
        self.daemon.cli("policy", "show", check=False)
        self.assertEqual(self.daemon.secret_hits(), [], "a fake API key leaked")


if __name__ == "__main__":
    unittest.main()
