#!/usr/bin/env python3
"""Self-test of the e2e harness, without a daemon: the simulator with every client, the
Cgroup helper, and the Daemon helper's failure path. If these fail, the capture/accounting
tests' failures mean nothing."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Simulator, require_or_skip  # noqa: E402


class _NoCgroup:
    """Stands in for Cgroup when none is available (plain Popen)."""
    path = None

    def run(self, argv, **kw):
        return subprocess.Popen(argv, **kw)


class SimulatorWithClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = Simulator().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.sim.__exit__(None, None, None)

    def run_client(self, kind, *args, tag):
        a = abtest.run_agent(_NoCgroup(), kind, self.sim, "--tag", tag, *args, timeout=60)
        calls = a.calls()
        self.sim.wait_quiet(tag)   # the simulator logs a call after answering it: records() complete
        served = self.sim.records(tag)
        return calls, served

    def check(self, calls, served, n, stream=False, path="/v1/chat/completions"):
        self.assertEqual(len(calls), n, calls)
        self.assertEqual(len(served), n, served)
        for c in calls:
            self.assertEqual(c["status"], 200)
            self.assertEqual(c["stream"], stream)
        for s in served:
            self.assertEqual(s["path"], path)
            self.assertEqual(s["stream"], stream)
            self.assertFalse(s["aborted"])
        # what the client got equals what the simulator says it served
        if all(s["usage_sent"] for s in served):
            self.assertEqual(sorted((c["input_tokens"], c["output_tokens"]) for c in calls),
                             sorted((s["input_tokens"], s["output_tokens"]) for s in served))

    def test_py_httpclient_keepalive(self):
        calls, served = self.run_client("py_httpclient", "-n", "3", tag="hc")
        self.check(calls, served, 3)
        self.assertEqual(len({s["peer_port"] for s in served}), 1, "3 calls on one connection")

    def test_py_httpclient_stream_usage_and_1mib(self):
        calls, served = self.run_client("py_httpclient", "--stream", "--include-usage", tag="hcs")
        self.check(calls, served, 1, stream=True)
        calls, served = self.run_client("py_httpclient", "--body-size", str(1 << 20), "--expect-continue",
                                        tag="big")
        self.check(calls, served, 1)
        self.assertGreaterEqual(served[0]["request_bytes"], 1 << 20)

    def test_stream_without_usage(self):
        calls, served = self.run_client("py_httpclient", "--stream", tag="nousage")
        self.assertEqual(calls[0]["input_tokens"], None)
        self.assertFalse(served[0]["usage_sent"])
        self.assertEqual(calls[0]["text_chars"], 4 * served[0]["output_tokens"])

    def test_urllib_gzip(self):
        self.sim.set(gzip=True)
        try:
            calls, served = self.run_client("py_urllib", "-n", "2", "--gzip", tag="ul")
        finally:
            self.sim.set()
        self.check(calls, served, 2)
        self.assertTrue(all(s["gzip"] for s in served))

    def test_asyncio_anthropic_stream_cache(self):
        self.sim.set(cache_read=30, cache_write=7)
        try:
            calls, served = self.run_client("py_asyncio", "--api", "anthropic", "--stream", "-n", "2", tag="as")
        finally:
            self.sim.set()
        self.check(calls, served, 2, stream=True, path="/v1/messages")
        for c in calls:
            self.assertEqual((c["cache_read"], c["cache_write"]), (30, 7))

    def test_responses_api(self):
        calls, served = self.run_client("py_httpclient", "--api", "responses", tag="resp")
        self.check(calls, served, 1, path="/v1/responses")
        calls, served = self.run_client("py_httpclient", "--api", "responses", "--stream", tag="resps")
        self.check(calls, served, 1, stream=True, path="/v1/responses")

    def test_curl(self):
        abtest.require_tools("curl")
        calls, served = self.run_client("curl", "-n", "2", tag="curl")
        self.check(calls, served, 2)
        self.assertEqual(len({c["pid"] for c in calls}), 2, "one curl process per call")
        calls, served = self.run_client("curl", "-n", "3", "--multi", tag="curlm")
        self.check(calls, served, 3)
        self.assertEqual(len({s["peer_port"] for s in served}), 1, "curl with 3 URLs reuses its connection")

    def test_node_sdks(self):
        abtest.ensure_node_modules()
        calls, served = self.run_client("node_openai", "-n", "2", tag="no")
        self.check(calls, served, 2)
        calls, served = self.run_client("node_openai", "--stream", "--include-usage", tag="nos")
        self.check(calls, served, 1, stream=True)
        calls, served = self.run_client("node_anthropic", "--stream", tag="nas")
        self.check(calls, served, 1, stream=True, path="/v1/messages")

    def test_forced_status(self):
        self.sim.set(status=429, retry_after=3)
        try:
            calls, served = self.run_client("py_httpclient", tag="s429")
        finally:
            self.sim.set()
        self.assertEqual(calls[0]["status"], 429)
        self.assertEqual(served[0]["status"], 429)

    def test_no_secret_in_simulator_log(self):
        self.run_client("py_httpclient", tag="sec")
        with open(self.sim.log, "rb") as f:
            self.assertNotIn(abtest.SECRET_MARKER.encode(), f.read())

    def test_killed_mid_stream_is_logged_aborted(self):
        self.sim.set(chunk_ms=300, chunks=20)
        try:
            a = abtest.start_agent(_NoCgroup(), "py_httpclient", self.sim, "--stream", "--max-tokens", "40",
                                   "--progress", "--tag", "kill")
            try:
                a.wait_line(lambda x: x.get("progress") == "first_data", timeout=20)
                os.kill(a.pid, signal.SIGKILL)
                a.wait(timeout=10, check=False)
            finally:
                if a.p.poll() is None:
                    a.p.kill()
            rec = abtest.wait_for(lambda: self.sim.records("kill"), 15, what="aborted record")
        finally:
            self.sim.set()
        self.assertTrue(rec[0]["aborted"])


class PlainSimulator(unittest.TestCase):
    def test_plain_http(self):
        with Simulator(plain=True) as sim:
            a = abtest.run_agent(_NoCgroup(), "py_httpclient", sim, "--tag", "p", "-n", "2")
            self.assertEqual([c["status"] for c in a.calls()], [200, 200])
            sim.wait_quiet("p")
            self.assertEqual(len(sim.records("p")), 2)


class CgroupHelper(unittest.TestCase):
    def setUp(self):
        require_or_skip(os.geteuid() == 0, "not root")
        require_or_skip(abtest.cgroup2_mount() is not None, "no cgroup2 mount")

    def test_run_inside_kill_and_remove(self):
        with Cgroup("selftest") as cg:
            self.assertTrue(cg.path.startswith("/agentbrake-test-"))
            p = cg.run(["sleep", "300"])
            with open("/proc/%d/cgroup" % p.pid) as f:
                self.assertIn("0::%s\n" % cg.path, f.read())
            child = cg.run(["bash", "-c", "sleep 300 & sleep 300 & wait"])
            abtest.wait_for(lambda: len(cg.pids()) >= 4, 10, interval=0.05,
                            what="the shell's two children in the cgroup",
                            on_fail=lambda: "pids in it: %s" % cg.pids())
            fs = cg.fs
        self.assertFalse(os.path.exists(fs))
        self.assertIsNotNone(p.poll())
        self.assertIsNotNone(child.poll())

    def test_cleanup_on_exception(self):
        fs = None
        with self.assertRaises(ZeroDivisionError):
            with Cgroup("selftest2") as cg:
                fs = cg.fs
                cg.run(["sleep", "300"])
                1 / 0
        self.assertFalse(os.path.exists(fs))


class TmuxHelper(unittest.TestCase):
    def test_foreground_agent_in_tmux_inside_cgroup(self):
        require_or_skip(os.geteuid() == 0, "not root")
        abtest.require_tools("tmux")
        with Simulator() as sim, Cgroup("tmux") as cg, abtest.Tmux("self", cgroup=cg) as tm:
            shell = tm.shell_pid()
            with open("/proc/%d/cgroup" % shell) as f:
                self.assertIn(cg.path, f.read())
            out = os.path.join(abtest.scratch_dir(), "tmux.jsonl")
            cmd = " ".join(abtest.agent_cmd("py_httpclient", sim, "--tag", "t", "-n", "2"))
            tm.send("%s > %s; echo AB-RC=$?" % (cmd, out))
            screen = abtest.wait_for(lambda: (lambda s: s if re.search(r"AB-RC=\d+", s) else None)(tm.screen()),
                                     30, interval=0.2, what="agent in tmux")
            self.assertRegex(screen, r"AB-RC=0\b")
            self.assertNotIn("Stopped", screen)
            with open(out) as f:
                lines = [json.loads(x) for x in f if x.strip()]
            self.assertEqual(len(lines), 2)
            self.assertEqual(lines[0]["ppid"], shell)
            sock = tm.sock
        r = subprocess.run(["tmux", "-L", sock, "list-sessions"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertNotEqual(r.returncode, 0, "tmux server gone")


class DaemonHelperFailurePath(unittest.TestCase):
    def test_clear_error_with_log_tail(self):
        """A daemon that exits at once: the helper fails fast with its log tail and cleans up."""
        d = tempfile.mkdtemp(prefix="ab-e2e-fake-")
        try:
            fake = os.path.join(d, "agentbraked")
            with open(fake, "w") as f:
                f.write("#!/bin/sh\necho 'fake daemon: cannot attach probes (for the test)' >&2\nexit 3\n")
            os.chmod(fake, 0o755)
            cli = os.path.join(d, "agentbrake")
            with open(cli, "w") as f:
                f.write("#!/bin/sh\nexit 1\n")
            os.chmod(cli, 0o755)
            old = os.environ.get("AB_BUILD_DIR")
            os.environ["AB_BUILD_DIR"] = d
            try:
                t0 = time.monotonic()
                dm = abtest.Daemon("endpoints: []\n", ready_timeout=20)
                with self.assertRaises(AssertionError) as ctx:
                    with dm:
                        pass
                msg = str(ctx.exception)
                self.assertIn("exited with 3", msg)
                self.assertIn("cannot attach probes", msg)
                self.assertLess(time.monotonic() - t0, 10)
                self.assertFalse(os.path.exists(dm.dir), "state dir removed")
            finally:
                if old is None:
                    os.environ.pop("AB_BUILD_DIR", None)
                else:
                    os.environ["AB_BUILD_DIR"] = old
        finally:
            import shutil
            shutil.rmtree(d, ignore_errors=True)

    def test_not_ready_times_out_with_log_tail(self):
        """A daemon that runs but never answers: timeout, log tail, process stopped."""
        d = tempfile.mkdtemp(prefix="ab-e2e-fake-")
        try:
            fake = os.path.join(d, "agentbraked")
            with open(fake, "w") as f:
                f.write("#!/bin/sh\necho 'fake daemon: stuck'\nexec sleep 300\n")
            os.chmod(fake, 0o755)
            cli = os.path.join(d, "agentbrake")
            with open(cli, "w") as f:
                f.write("#!/bin/sh\necho 'cannot connect' >&2\nexit 1\n")
            os.chmod(cli, 0o755)
            old = os.environ.get("AB_BUILD_DIR")
            os.environ["AB_BUILD_DIR"] = d
            try:
                holder = {}
                with self.assertRaises(AssertionError) as ctx:
                    dm = abtest.Daemon("endpoints: []\n", ready_timeout=2)
                    holder["dm"] = dm
                    with dm:
                        pass
                msg = str(ctx.exception)
                self.assertIn("not ready", msg)
                self.assertIn("fake daemon: stuck", msg)
                self.assertIsNone(holder["dm"].proc)
                self.assertFalse(os.path.exists(holder["dm"].dir))
            finally:
                if old is None:
                    os.environ.pop("AB_BUILD_DIR", None)
                else:
                    os.environ["AB_BUILD_DIR"] = old
        finally:
            import shutil
            shutil.rmtree(d, ignore_errors=True)


class RequireOrSkip(unittest.TestCase):
    def test_skip_becomes_failure_under_require_bpf(self):
        code = ("import sys; sys.path.insert(0, %r); import abtest, unittest\n"
                "try:\n    abtest.require_or_skip(False, 'x')\n"
                "except unittest.SkipTest:\n    print('skip')\n"
                "except AssertionError:\n    print('fail')\n") % os.path.dirname(os.path.abspath(__file__))
        for val, want in (("1", "fail"), ("", "skip")):
            env = dict(os.environ, AGENTBRAKE_REQUIRE_BPF=val)
            out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True).stdout
            self.assertEqual(out.strip(), want)


if __name__ == "__main__":
    unittest.main()
