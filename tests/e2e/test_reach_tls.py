#!/usr/bin/env python3
"""End-to-end: TLS stacks beyond exported OpenSSL. The real Claude Code (a stripped Bun executable with BoringSSL linked in) under a
real agentbraked, against the TLS simulator (issue 12, item 1).

- its one streaming /v1/messages call is recorded once, attributed to the claude process and
  its cgroup, with the tokens the simulator served, and no key anywhere;
- the probes were found by the build-id table, and a copy of the binary with another build id
  is found by the xref scan, the result cached in the state dir (a second daemon reads it);
- a copy whose SSL_write cannot be singled out gives one `capture_blind` naming the executable,
  and its call is still counted at the socket (estimated, `opaque_tls`);
- under a tiny tokens budget with action deny, the next claude is held before its request leaves;
  with throttle it is held until the window has room, then finishes normally (slow, no error);
  with kill it is killed before its request leaves;
- opencode (the same kind of Bun executable), given the simulator as an OpenAI-compatible
  provider: each of its calls (a title, then the answer) is recorded once, attributed to its pid
  and cgroup, with the tokens the simulator served, and no key anywhere;
- Debian's wget (GnuTLS, issue 12 item 3): its call is recorded with its tokens.

The binaries are installed at pinned versions by `npm install` in tests/e2e/agents (gitignored
node_modules). Needs root, BPF, cgroup v2, node/npm. Under AGENTBRAKE_REQUIRE_BPF=1 a missing
requirement is a failure.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
AGENTS_DIR = os.path.join(HERE, "agents")
CLAUDE = os.path.join(AGENTS_DIR, "node_modules", "@anthropic-ai", "claude-code-linux-x64", "claude")
CLAUDE_BUILD_ID = "d72a729b5627657c0649e49ae9d771fec0783039"
OPENCODE = os.path.join(AGENTS_DIR, "node_modules", "opencode-linux-x64", "bin", "opencode")
KEY = "sk-ant-e2e-" + "9" * 24 + "-bunsecret"
OC_KEY = "sk-oc-e2e-" + "7" * 24 + "-bunsecret"


def ensure_agents():
    """The pinned agents (exact versions in tests/e2e/agents/package.json), installed on first
    use. Not `npm ci`: npm 11 leaves the other platforms' optional binaries out of the lock file
    it writes and then refuses that lock as out of sync."""
    abtest.require_tools("node", "npm")
    if not (os.access(CLAUDE, os.X_OK) and os.access(OPENCODE, os.X_OK)):
        r = subprocess.run(["npm", "install", "--no-package-lock", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AGENTS_DIR,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        abtest.require_or_skip(r.returncode == 0 and os.access(CLAUDE, os.X_OK) and os.access(OPENCODE, os.X_OK),
                               "npm install failed in %s: %s" % (AGENTS_DIR, r.stdout[-2000:]))


def patched_copy(src, dst_dir, build_id_byte=None, code_patch=None):
    """A copy of the binary with its GNU build id changed (so no table entry matches) and,
    optionally, bytes replaced at a file offset (an error path only)."""
    dst = os.path.join(dst_dir, "claude")
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    with open(dst, "r+b") as f:
        data = f.read(1 << 16)
        i = data.find(b"GNU\0" + bytes.fromhex(CLAUDE_BUILD_ID)[:4])
        assert i > 0, "build-id note not found in the first 64 KiB"
        f.seek(i + 4)
        f.write(bytes([build_id_byte]))
        if code_patch:
            off, old, new = code_patch
            f.seek(off)
            assert f.read(len(old)) == old, "unexpected bytes at %#x" % off
            f.seek(off)
            f.write(new)
    return dst


class BunClaude(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        ensure_agents()
        cls.sim = abtest.Simulator(peer_info=True).__enter__()
        cls.sim.set(stop_reason="end_turn")   # max_tokens would make claude go on
        cls.tmp = tempfile.mkdtemp(prefix="ab-e2e-bun-")

    @classmethod
    def tearDownClass(cls):
        cls.sim.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start_claude(self, cg, binary=CLAUDE):
        home = tempfile.mkdtemp(prefix="home-", dir=self.tmp)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "ANTHROPIC_BASE_URL": "https://127.0.0.1:%d" % self.sim.port, "ANTHROPIC_API_KEY": KEY,
               "NODE_TLS_REJECT_UNAUTHORIZED": "0", "DISABLE_TELEMETRY": "1",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64"}
        return cg.run([binary, "-p", "hi", "--max-turns", "1"], env=env, cwd=home, stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run_claude(self, cg, binary=CLAUDE, timeout=90):
        p = self.start_claude(cg, binary)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def served_to(self, pid):
        return [r for r in self.sim.records() if (r.get("peer") or [{}])[0].get("pid") == pid]

    def policy(self, extra=""):
        # the simulator is an Anthropic endpoint here
        return abtest.policy_for(self.sim, extra).replace("api: openai", "api: anthropic")

    def check_captured(self, d, cg, run, stack):
        p, out, err = run
        self.assertEqual(p.returncode, 0, "claude failed: %s %s\n%s" % (out[-1500:], err[-1500:], d.log_tail(30)))
        served = self.served_to(p.pid)
        self.assertEqual(len(served), 1, "claude -p makes one call: %s" % self.sim.records()[-5:])
        calls = d.wait_for(lambda: [e for e in d.events("llm_call") if e.get("cgroup") == cg.path] or None,
                           15, what="claude's llm_call")
        abtest.assert_stays(lambda: len([e for e in d.events("llm_call") if e.get("cgroup") == cg.path]) == 1,
                            0.5, "claude's call recorded once")
        e = calls[0]
        dd = detail(e)
        self.assertEqual(e.get("pid"), p.pid, e)
        self.assertTrue(dd.get("path", "").startswith("/v1/messages"), e)
        self.assertEqual(dd.get("api"), "anthropic", e)
        self.assertIs(dd.get("stream"), True, e)
        self.assertIs(dd.get("complete"), True, e)
        self.assertEqual(dd.get("status"), 200, e)
        s = served[0]
        self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens")),
                         (s["input_tokens"], s["output_tokens"]), "tokens: event %s, served %s" % (dd, s))
        att = [x for x in d.events("probe_attached") if x.get("pid") == p.pid]
        self.assertEqual(len(att), 1, att)
        self.assertIn(stack, detail(att[0]).get("tls", ""), att)
        self.assertEqual(d.secret_hits([KEY]), [])

    def test_01_claude_captured_by_table(self):
        with Daemon(self.policy()) as d, Cgroup("claude") as cg:
            self.check_captured(d, cg, self.run_claude(cg), "boringssl:table")

    def test_02_unknown_build_found_by_xref_and_cached(self):
        copy_dir = tempfile.mkdtemp(prefix="xref-", dir=self.tmp)
        binary = patched_copy(CLAUDE, copy_dir, build_id_byte=0x00)
        with Daemon(self.policy()) as d, Cgroup("claude-xref") as cg:
            run = self.run_claude(cg, binary)
            self.check_captured(d, cg, run, "boringssl:xref")
            with open(os.path.join(d.dir, "tls-locations")) as f:
                lines = [line for line in f if " found " in line]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(" xref found 311d660 311d810 ", lines[0])
            # a second daemon on the same state dir reads the result instead of scanning again
            d.restart()
            with Cgroup("claude-xref2") as cg2:
                self.check_captured(d, cg2, self.run_claude(cg2, binary), "boringssl:cache:xref")
        os.unlink(binary)

    def test_03_unrecognised_build_is_capture_blind(self):
        copy_dir = tempfile.mkdtemp(prefix="blind-", dir=self.tmp)
        # SSL_write's BAD_LENGTH error site: reason 0x6f → 0x70 (a path never taken here), so no
        # function raises exactly SSL_write's reasons any more
        binary = patched_copy(CLAUDE, copy_dir, build_id_byte=0x01,
                              code_patch=(0x311d7d1 + 12, b"\xba\x6f\x00\x00\x00", b"\xba\x70\x00\x00\x00"))
        with Daemon(self.policy()) as d, Cgroup("claude-blind") as cg:
            p, out, err = self.run_claude(cg, binary)
            self.assertEqual(p.returncode, 0, err[-2000:])
            blind = d.wait_for(lambda: [e for e in d.events("capture_blind") if e.get("pid") == p.pid] or None,
                               15, what="capture_blind for the unrecognised build")
            self.assertEqual(len(blind), 1, blind)
            dd = detail(blind[0])
            self.assertEqual(dd.get("exe"), binary, blind)
            self.assertIn("SSL_write/SSL_read not singled out", dd.get("why", ""), blind)
            self.assertEqual(dd.get("capture"), "opaque", blind)
            # not invisible: its call is counted at the socket, estimated
            calls = d.wait_for(lambda: [e for e in d.events("llm_call") if e.get("cgroup") == cg.path] or None,
                               15, what="the blind claude's estimated call")
            self.assertTrue(all(detail(e).get("estimate_reason") == "opaque_tls" for e in calls), calls)
        os.unlink(binary)

    def test_04_deny_budget_holds_the_next_claude(self):
        """action deny, {tokens: 1}: claude's first call spends the budget; the next claude's
        request is held at SSL_write (before a byte of it is encrypted: `paused` for its pid),
        `denied` names the cgroup, and nothing of it reaches the provider while held."""
        cg = Cgroup("claude-deny")
        budget = ("max_hold: 600s\nbudgets:\n  - name: bun-deny\n    match: {cgroup: \"%s\"}\n"
                  "    per: cgroup\n    limits:\n      - {tokens: 1, window: 600s}\n    action: deny\n") % cg.path
        with Daemon(self.policy(budget)) as d, cg:
            self.check_captured(d, cg, self.run_claude(cg), "boringssl:table")
            p2 = self.start_claude(cg)
            ev = d.wait_for(lambda: d.events("denied") or None, 30, what="a denied event")
            self.assertEqual(detail(ev[0]).get("target"), cg.path, ev)
            d.wait_for(lambda: [e for e in d.events("paused") if e.get("pid") == p2.pid
                                and detail(e).get("reason") == "budget"] or None, 30,
                       what="the second claude held (paused, reason budget)")
            self.assertIsNone(p2.poll(), "the held claude exited")
            self.assertEqual(self.served_to(p2.pid), [], "a call of the denied cgroup reached the provider")
            self.assertEqual(self.sim.in_flight(), 0, "a request of the held claude is being answered")


    def budget_policy(self, cg, name, limit, action):
        return self.policy(("max_hold: 60s\ncooldown: 1s\nbudgets:\n  - name: %s\n    match: {cgroup: \"%s\"}\n"
                            "    per: cgroup\n    limits:\n      - {%s}\n    action: %s\n") % (name, cg.path, limit, action))

    def test_05_throttle_budget_holds_the_next_claude_then_lets_it_go(self):
        """action throttle, {tokens: 1, window: 4s}: claude's first call spends the budget (an
        empty window admits one call of any size); the next claude's request is held at SSL_write
        (`paused`, reason budget, for its pid) until the window has slid past the first call, then
        released (`resumed`, released room, with held_ms), and it finishes normally: exit 0, its
        answer printed, one call served, recorded with the tokens served. Slow, never an error."""
        W = 4.0
        cg = Cgroup("claude-thr")
        with Daemon(self.budget_policy(cg, "bun-thr", "tokens: 1, window: %ds" % W, "throttle")) as d, cg:
            self.check_captured(d, cg, self.run_claude(cg), "boringssl:table")
            first = self.served_to(cg.procs_started[0].pid)[0]
            p2 = self.start_claude(cg)
            paused = d.wait_for(lambda: [e for e in d.events("paused") if e.get("pid") == p2.pid
                                         and detail(e).get("reason") == "budget"] or None, 30,
                                what="the second claude held (paused, reason budget)")
            self.assertEqual(len(paused), 1, paused)
            self.assertEqual(detail(paused[0]).get("target"), str(p2.pid), paused)
            self.assertIs(detail(paused[0]).get("dry_run"), False, paused)
            try:
                out, err = p2.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p2.kill()
                out, err = p2.communicate()
                self.fail("the throttled claude never finished\n" + d.log_tail(40))
            out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
            self.assertEqual(p2.returncode, 0, "the throttled claude failed: %s %s" % (out[-1500:], err[-1500:]))
            self.assertNotIn("error", (out + err).lower(), "a throttled claude never sees an error")
            self.assertTrue(out.strip(), "the throttled claude printed no answer")
            served = self.served_to(p2.pid)
            self.assertEqual(len(served), 1, self.sim.records()[-5:])
            # held until the window no longer holds the first call (give or take the admission clock)
            self.assertGreaterEqual(served[0]["ts_start"] - first["ts_start"], W - 0.25,
                                    "the second call went out %.2f s after the first, inside the %ds window"
                                    % (served[0]["ts_start"] - first["ts_start"], W))
            resumed = d.wait_for(lambda: [e for e in d.events("resumed") if e.get("pid") == p2.pid
                                          and detail(e).get("reason") == "budget"] or None, 10,
                                 what="the second claude's hold ended (resumed, reason budget)")
            self.assertEqual(len(resumed), 1, resumed)
            rd = detail(resumed[0])
            self.assertEqual(rd.get("released"), "room", resumed)
            self.assertIsInstance(rd.get("held_ms"), (int, float), resumed)
            self.assertGreater(rd["held_ms"], 0, resumed)
            calls = d.wait_for(lambda: [e for e in d.events("llm_call") if e.get("pid") == p2.pid] or None,
                               15, what="the throttled claude's llm_call")
            dd = detail(calls[0])
            self.assertEqual(len(calls), 1, calls)
            self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens")),
                             (served[0]["input_tokens"], served[0]["output_tokens"]), calls)
            self.assertEqual(d.events("killed"), [])
            self.assertEqual(d.secret_hits([KEY]), [])

    def test_06_kill_budget_kills_the_next_claude(self):
        """action kill, {tokens: 1, window: 60s}: claude's first call spends the budget; the next
        claude's request finds no room and the cgroup is killed: the claude dies by SIGKILL
        before its request reaches the provider, `killed` names the cgroup and it is empty."""
        cg = Cgroup("claude-kill")
        with Daemon(self.budget_policy(cg, "bun-kill", "tokens: 1, window: 60s", "kill")) as d, cg:
            self.check_captured(d, cg, self.run_claude(cg), "boringssl:table")
            p2 = self.start_claude(cg)
            try:
                rc = p2.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.fail("the second claude was not killed\n" + d.log_tail(40))
            self.assertEqual(rc, -signal.SIGKILL, "the second claude's exit status")
            ev = d.wait_for(lambda: d.events("killed") or None, 10, what="a killed event")
            self.assertEqual(len(ev), 1, ev)
            kd = detail(ev[0])
            self.assertEqual(kd.get("target"), cg.path, ev)
            self.assertEqual(kd.get("reason"), "budget", ev)
            self.assertEqual(kd.get("budget"), "bun-kill", ev)
            self.assertIs(kd.get("dry_run"), False, ev)
            self.assertIn(p2.pid, kd.get("pids") or [], ev)
            abtest.wait_for(lambda: not cg._populated(), 10, what="the killed cgroup to be empty")
            self.assertEqual(self.served_to(p2.pid), [], "a call of the killed claude reached the provider")
            self.sim.wait_idle()
            self.assertEqual(self.served_to(p2.pid), [], "a call of the killed claude reached the provider")
            self.assertEqual(d.secret_hits([KEY]), [])


class BunOpencode(unittest.TestCase):
    """opencode 1.18.33 (`opencode-linux-x64/bin/opencode`, Bun with BoringSSL, stripped): its
    probes come from the build-id table like claude's. It is pointed at the simulator by an
    opencode.json giving an OpenAI-compatible provider (`options.baseURL`), with HOME and the
    XDG dirs in a temp dir; `opencode run "hi"` makes a title call (small model) and the answer.
    It also tries a background `npm install` of its plugin package: the registry is pointed at a
    closed loopback port (npm_config_registry) so that the test never leaves the host."""

    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        ensure_agents()
        cls.sim = abtest.Simulator(peer_info=True).__enter__()
        cls.tmp = tempfile.mkdtemp(prefix="ab-e2e-opencode-")

    @classmethod
    def tearDownClass(cls):
        cls.sim.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_opencode(self, cg, timeout=120):
        home = tempfile.mkdtemp(prefix="home-", dir=self.tmp)
        work = os.path.join(home, "work")
        os.mkdir(work)
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {"sim": {
                "npm": "@ai-sdk/openai-compatible", "name": "agentbrake simulator",
                "options": {"baseURL": "https://127.0.0.1:%d/v1" % self.sim.port, "apiKey": OC_KEY},
                "models": {"e2e-model": {"name": "e2e model", "limit": {"context": 100000, "output": 64}}}}},
            "model": "sim/e2e-model", "small_model": "sim/e2e-model",
            "autoupdate": False, "share": "disabled",
        }
        with open(os.path.join(work, "opencode.json"), "w") as f:
            json.dump(config, f)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "XDG_CONFIG_HOME": os.path.join(home, ".config"), "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
               "XDG_CACHE_HOME": os.path.join(home, ".cache"), "XDG_STATE_HOME": os.path.join(home, ".local", "state"),
               "NODE_TLS_REJECT_UNAUTHORIZED": "0", "OPENCODE_DISABLE_MODELS_FETCH": "1",
               "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
               "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "OPENCODE_DISABLE_SHARE": "1",
               "npm_config_registry": "http://127.0.0.1:9/"}
        p = cg.run([OPENCODE, "run", "--pure", "hi"], env=env, cwd=work, stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def test_opencode_calls_recorded(self):
        with Daemon(abtest.policy_for(self.sim)) as d, Cgroup("opencode") as cg:
            p, out, err = self.run_opencode(cg)
            self.assertEqual(p.returncode, 0, "opencode failed: %s %s\n%s" % (out[-1500:], err[-1500:], d.log_tail(30)))
            self.assertIn("tok tok", out, "opencode printed no answer: %s" % out[-500:])
            served = [r for r in self.sim.records() if (r.get("peer") or [{}])[0].get("pid") == p.pid]
            self.assertEqual(len(served), 2, "opencode run makes a title call and the answer: %s" % self.sim.records()[-5:])
            self.assertEqual(len(served), len(self.sim.records()), "a call of another process: %s" % self.sim.records())
            calls = d.wait_for(lambda: (lambda ev: ev if len(ev) >= len(served) else None)(
                [e for e in d.events("llm_call") if e.get("cgroup") == cg.path]), 15, what="opencode's %d calls" % len(served))
            abtest.assert_stays(lambda: len([e for e in d.events("llm_call") if e.get("cgroup") == cg.path]) == len(served),
                                0.5, "each of opencode's calls recorded once")
            for e in calls:
                dd = detail(e)
                self.assertEqual(e.get("pid"), p.pid, e)
                self.assertEqual(e.get("comm"), "opencode", e)
                self.assertEqual(dd.get("path"), "/v1/chat/completions", e)
                self.assertEqual(dd.get("api"), "openai", e)
                self.assertEqual(dd.get("model"), "e2e-model", e)
                self.assertIs(dd.get("stream"), True, e)
                self.assertIs(dd.get("complete"), True, e)
                self.assertEqual(dd.get("status"), 200, e)
                self.assertFalse(dd.get("estimated"), e)
            got = sorted((detail(e).get("input_tokens"), detail(e).get("output_tokens")) for e in calls)
            want = sorted((r["input_tokens"], r["output_tokens"]) for r in served)
            self.assertEqual(got, want, "tokens recorded vs served")
            att = [x for x in d.events("probe_attached") if x.get("pid") == p.pid]
            self.assertEqual(len(att), 1, att)
            self.assertIn("boringssl:table", detail(att[0]).get("tls", ""), att)
            self.assertEqual([e for e in d.events("capture_blind") if e.get("pid") == p.pid], [])
            self.assertEqual(d.secret_hits([OC_KEY]), [])


class GnuTlsWget(unittest.TestCase):
    """Debian's wget links libgnutls.so.30: gnutls_record_send/recv carry its plaintext."""

    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        abtest.require_tools("wget")
        cls.sim = abtest.Simulator(peer_info=True).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.sim.__exit__(None, None, None)

    def test_wget_call_recorded(self):
        pol = abtest.policy_for(self.sim).replace("api: openai", "api: anthropic")
        body = json.dumps({"model": "e2e-claude", "max_tokens": 21,
                           "messages": [{"role": "user", "content": "hello from wget"}]})
        with Daemon(pol) as d, Cgroup("wget") as cg:
            p = cg.run(["wget", "-q", "-O", "-", "--no-check-certificate", "--header", "content-type: application/json",
                        "--header", "x-api-key: " + KEY, "--header", "anthropic-version: 2023-06-01",
                        "--header", "x-test-client: wget", "--post-data", body,
                        "https://127.0.0.1:%d/v1/messages" % self.sim.port],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err.decode("utf-8", "replace")[-1000:])
            served = self.sim.records("wget")
            self.assertEqual(len(served), 1, served)
            calls = d.wait_for(lambda: [e for e in d.events("llm_call") if e.get("cgroup") == cg.path] or None,
                               15, what="wget's llm_call")
            abtest.assert_stays(lambda: len([e for e in d.events("llm_call") if e.get("cgroup") == cg.path]) == 1,
                                0.5, "wget's call recorded once")
            e, dd = calls[0], detail(calls[0])
            self.assertEqual(e.get("pid"), p.pid, e)
            self.assertEqual(e.get("comm"), "wget", e)
            self.assertEqual(dd.get("path"), "/v1/messages", e)
            self.assertEqual(dd.get("model"), "e2e-claude", e)
            self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens")),
                             (served[0]["input_tokens"], served[0]["output_tokens"]), e)
            att = [x for x in d.events("probe_attached") if x.get("pid") == p.pid]
            self.assertEqual(len(att), 1, att)
            self.assertIn("gnutls:symbols", detail(att[0]).get("tls", ""), att)
            self.assertEqual(d.secret_hits([KEY]), [])


if __name__ == "__main__":
    unittest.main()
