#!/usr/bin/env python3
"""End-to-end: endpoints found without trusting the agent (issue 13, item 6).

A process's own getaddrinfo answer is its word only: another user's /etc/hosts must not make
an address an LLM endpoint for everyone (docs/enforcement.md, "What is trusted to find
endpoints"). Set-up, loopback only:

- the simulator serves HTTPS on 127.0.0.1:PORT; the policy has the pattern endpoint
  `*.spoof.test` on PORT (a pattern is never resolved at start: its addresses are learned);
- the daemon runs in a private mount namespace whose /etc/hosts (bind-mounted) says
  `good.spoof.test` is 127.0.0.1 and `evil.spoof.test` is 127.0.0.9: the daemon's own
  resolution is what the test controls;
- "teachers" run as uid 65534 in their own private mount namespace (unshare -m, a bind-mounted
  /etc/hosts) that says the name they resolve is 127.0.0.1.

test_spoofed_answer_stays_with_its_uid: a teacher resolves evil.spoof.test to 127.0.0.1.
The daemon keeps that as a hint for uid 65534 (status endpoint_hints), resolves the name
itself (127.0.0.9), and does not confirm it. A root process that then calls 127.0.0.1:PORT is
neither held nor probed (no llm_call, no event of its cgroup, the capture-hold counter does
not move for it), while the teacher's own call through that name is held, probed and recorded.

test_confirmed_answer_is_host_wide: a teacher resolves good.spoof.test to 127.0.0.1; the
daemon's own answer agrees, so 127.0.0.1:PORT becomes an endpoint host-wide, and a root
process calling it by IP is recorded.

test_own_resolver_found_by_sni: a client that resolves nothing (it connects to 127.0.0.1 by
IP, the way an agent with its own resolver does) but sends the server name sni.spoof.test in
its ClientHello, in a cgroup a budget selects (a candidate: its sockets' first writes are
read). The daemon learns the address from the server name, confirms it by its own look-up
(its /etc/hosts says sni.spoof.test is 127.0.0.1), and from then on another process, which
no budget selects, calling 127.0.0.1:PORT by IP is recorded.

Needs root, BPF, unshare, mount, setpriv and /usr/bin/python3 (dynamically linked on glibc:
its getaddrinfo is the one the daemon's probe sees).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon  # noqa: E402

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # dynamically linked: its getaddrinfo is libc's (probed)
KEY = "sk-test-AGENTBRAKE-SECRET-0001"

# Resolves NAME (libc getaddrinfo), prints the addresses, waits for a line on stdin, then makes
# one chat call to NAME:PORT over TLS (the simulator's certificate is not checked: the teacher
# runs as a uid that cannot read the test's CA file) and prints the status.
TEACHER = r'''
import http.client, json, socket, ssl, sys
name, port, tag, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)})
print(json.dumps(addrs), flush=True)
if sys.stdin.readline().strip() != "call":
    sys.exit(0)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection(name, port, context=ctx, timeout=30)
body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
c.request("POST", "/v1/chat/completions", body=body.encode(),
          headers={"Content-Type": "application/json", "Authorization": "Bearer " + key, "x-test-client": tag})
r = c.getresponse()
r.read()
print(r.status, flush=True)
'''

# One chat call to 127.0.0.1:PORT by IP (no name resolved), as root, with the given Host.
BY_IP = r'''
import http.client, ssl, sys
port, cafile, host, tag, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
c.request("POST", "/v1/chat/completions", body=body.encode(),
          headers={"Content-Type": "application/json", "Host": host, "Authorization": "Bearer " + key,
                   "x-test-client": tag})
r = c.getresponse()
r.read()
print(r.status, flush=True)
'''

# The same by IP, with a server name in the ClientHello: what an agent with its own resolver
# sends (it never calls libc's getaddrinfo for the name).
BY_IP_WITH_SNI = r'''
import http.client, socket, ssl, sys
port, cafile, name, tag, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
class ByIp(http.client.HTTPSConnection):
    def connect(self):
        raw = socket.create_connection(("127.0.0.1", port), 30)
        self.sock = ctx.wrap_socket(raw, server_hostname=name)
c = ByIp(name, port, context=ctx, timeout=30)
body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
c.request("POST", "/v1/chat/completions", body=body.encode(),
          headers={"Content-Type": "application/json", "Authorization": "Bearer " + key, "x-test-client": tag})
r = c.getresponse()
r.read()
print(r.status, flush=True)
'''


def hosts_file(dirpath, name, lines):
    p = os.path.join(dirpath, name)
    with open(p, "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost\n" + "".join("%s\n" % ln for ln in lines))
    os.chmod(p, 0o644)
    return p


def in_private_hosts(hosts, argv):
    """argv in a new mount namespace whose /etc/hosts is `hosts`."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', hosts] + list(argv)


class HostsDaemon(Daemon):
    """A daemon whose own resolution reads `hosts` (its private mount namespace's /etc/hosts).
    unshare and sh exec: the daemon keeps the pid Popen returned."""

    def __init__(self, hosts, *a, **kw):
        self.hosts = hosts
        super().__init__(*a, **kw)

    def argv(self):
        return in_private_hosts(self.hosts, super().argv())


class EndpointTrust(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        abtest.require_tools("unshare", "mount", "setpriv")
        abtest.require_or_skip(os.access(SYSTEM_PYTHON, os.X_OK), "no " + SYSTEM_PYTHON)
        cls.tmp = tempfile.mkdtemp(prefix="ab-e2e-endpoints-")
        os.chmod(cls.tmp, 0o755)
        cls.daemon_hosts = hosts_file(cls.tmp, "daemon-hosts", ["127.0.0.1 good.spoof.test",
                                                                 "127.0.0.9 evil.spoof.test",
                                                                 "127.0.0.1 sni.spoof.test"])
        cls.evil_hosts = hosts_file(cls.tmp, "evil-hosts", ["127.0.0.1 evil.spoof.test"])
        cls.good_hosts = hosts_file(cls.tmp, "good-hosts", ["127.0.0.1 good.spoof.test"])
        cls.sim = abtest.Simulator().__enter__()
        cls.policy = "endpoints:\n  - {host: \"*.spoof.test\", port: %d, api: openai, tls: true}\n" % cls.sim.port

    @classmethod
    def tearDownClass(cls):
        cls.sim.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        # a daemon per test: what one test confirms host-wide must not carry over
        self.daemon = None

    def start_daemon(self, extra=""):
        self.daemon = HostsDaemon(self.daemon_hosts, self.policy + extra).__enter__()
        return self.daemon

    def tearDown(self):
        if self.daemon is not None:
            self.daemon.__exit__(None, None, None)

    # ---- helpers
    def status(self):
        return self.daemon.status()

    def counter(self, name):
        return self.status().get("counters", {}).get(name, 0)

    def start_teacher(self, cg, hosts, name, tag):
        argv = in_private_hosts(hosts, ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                                        SYSTEM_PYTHON, "-c", TEACHER, name, str(self.sim.port), tag, KEY])
        p = cg.run(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   env=self.sim.client_env())
        line = p.stdout.readline()
        if not line:
            p.kill()
            self.fail("teacher did not resolve %s: %s" % (name, p.stderr.read()[-2000:]))
        self.assertEqual(json.loads(line), ["127.0.0.1"], "the teacher's own /etc/hosts is used")
        return p

    def teacher_call(self, p):
        out, err = p.communicate("call\n", timeout=60)
        self.assertEqual(p.returncode, 0, err[-2000:])
        self.assertEqual(out.strip(), "200", err[-2000:])

    def call_by_ip(self, cg, host, tag):
        p = cg.run([abtest.PYTHON, "-c", BY_IP, str(self.sim.port), self.sim.cafile, host, tag, KEY],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.sim.client_env())
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err[-2000:])
        self.assertEqual(out.strip(), "200", err[-2000:])
        self.assertEqual(len(self.sim.records(tag)), 1, "the simulator served it")

    def wait_resolved(self, what):
        d = self.daemon
        d.wait_for(lambda: self.status().get("endpoints_resolving", 1) == 0, 30,
                   what="the daemon's own look-up of " + what)

    # ---- tests
    def test_spoofed_answer_stays_with_its_uid(self):
        d = self.start_daemon()
        with Cgroup("teacher-evil") as tcg, Cgroup("victim") as vcg:
            teacher = self.start_teacher(tcg, self.evil_hosts, "evil.spoof.test", "evil-teacher")
            try:
                d.wait_for(lambda: self.status().get("endpoint_hints", 0) >= 1, 15,
                           what="the teacher's answer kept as a hint")
                self.wait_resolved("evil.spoof.test")
                self.assertGreaterEqual(self.status()["endpoint_hints"], 1, "the daemon's own answer does not confirm it")
                holds_before = self.counter("capture_holds")
                # another uid (root) calls the spoofed address by IP: not an endpoint for it
                self.call_by_ip(vcg, "api.openai.com", "victim")
                self.assertEqual(self.counter("capture_holds"), holds_before, "the victim was held")
                # the teacher's own call is seen: held at its connect, probed, recorded
                self.teacher_call(teacher)
            finally:
                if teacher.poll() is None:
                    teacher.kill()
                    teacher.wait()
            calls = d.wait_for(lambda: d.calls(tcg.path) or None, abtest.VISIBLE_WITHIN_S + 10,
                               what="the teacher's llm_call")
            self.assertEqual(len(calls), 1, calls)
            self.assertEqual(abtest.detail(calls[0]).get("host"), "evil.spoof.test:%d" % self.sim.port, calls)
            self.assertGreater(self.counter("capture_holds"), holds_before, "the teacher was held at its connect")
            # the victim's call ended before the teacher's began: were it seen, it would be there
            self.assertEqual(d.calls(vcg.path), [], "a call of another uid to the spoofed address was recorded")
            self.assertEqual([e for e in d.events() if e.get("cgroup") == vcg.path], [],
                             "the victim's process was acted on")
        self.assertEqual(d.secret_hits([KEY]), [])

    def test_confirmed_answer_is_host_wide(self):
        d = self.start_daemon()
        confirmed_before = self.counter("endpoints_confirmed_by_resolution")
        with Cgroup("teacher-good") as tcg, Cgroup("other") as ocg:
            teacher = self.start_teacher(tcg, self.good_hosts, "good.spoof.test", "good-teacher")
            try:
                d.wait_for(lambda: self.counter("endpoints_confirmed_by_resolution") > confirmed_before, 30,
                           what="the teacher's answer confirmed by the daemon's own look-up")
                teacher.stdin.write("skip\n")
                teacher.stdin.flush()
                teacher.wait(timeout=30)
            finally:
                if teacher.poll() is None:
                    teacher.kill()
                    teacher.wait()
            # now 127.0.0.1:PORT is an endpoint for everyone: a root process calling it by IP is seen
            self.call_by_ip(ocg, "good.spoof.test", "other")
            calls = d.wait_for(lambda: d.calls(ocg.path) or None, abtest.VISIBLE_WITHIN_S + 10,
                               what="the llm_call of another uid's process")
            self.assertEqual(len(calls), 1, calls)
        self.assertEqual(d.secret_hits([KEY]), [])

    def test_own_resolver_found_by_sni(self):
        with Cgroup("own-resolver") as scg, Cgroup("other") as ocg:
            d = self.start_daemon("budgets:\n  - name: candidates\n    match: {cgroup: \"%s\"}\n"
                                  "    per: cgroup\n    limits:\n      - {requests: 1000, window: 60s}\n"
                                  "    action: throttle\n" % scg.path)
            # only the built-in plain-HTTP Ollama addresses (localhost:11434) are known before
            known_before = self.status().get("endpoints_known")
            p = scg.run([abtest.PYTHON, "-c", BY_IP_WITH_SNI, str(self.sim.port), self.sim.cafile, "sni.spoof.test",
                         "own-resolver", KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=self.sim.client_env())
            out, err = p.communicate(timeout=60)
            self.assertEqual((p.returncode, out.strip()), (0, "200"), err[-2000:])
            d.wait_for(lambda: self.counter("endpoints_named_by_sni") >= 1, 15,
                       what="the server name of the ClientHello read")
            d.wait_for(lambda: self.counter("endpoints_confirmed_by_resolution") >= 1, 30,
                       what="the address confirmed by the daemon's own look-up")
            self.assertGreater(self.status().get("endpoints_known"), known_before, "host-wide once confirmed")
            self.assertGreaterEqual(self.status()["counters"].get("sni_first_writes", 0), 1)
            # its own call is recorded (a budget selects it)
            d.wait_for(lambda: d.calls(scg.path) or None, abtest.VISIBLE_WITHIN_S + 10, what="its llm_call")
            # another process, that no rule selects, calling the address by IP: seen now
            self.call_by_ip(ocg, "sni.spoof.test", "other-after-sni")
            calls = d.wait_for(lambda: d.calls(ocg.path) or None, abtest.VISIBLE_WITHIN_S + 10,
                               what="the llm_call of a process calling the learned address")
            self.assertEqual(len(calls), 1, calls)
            self.assertEqual(abtest.detail(calls[0]).get("host"), "sni.spoof.test", calls)
        self.assertEqual(d.secret_hits([KEY]), [])


if __name__ == "__main__":
    unittest.main()
