"""abtest — the harness of agentbrake's end-to-end tests (Python stdlib only).

Pieces (every one is a context manager that removes what it started, even on failure):
  Simulator(...)   the provider simulator (simulator.py) on 127.0.0.1, HTTPS or plain
  Daemon(policy)   a real agentbraked with its own state dir, DB, socket and policy file
  Cgroup(name)     a cgroup v2 under the host's cgroup2 mount; .run() starts processes in it
  Tmux(...)        a private tmux server (own socket) for interactive-terminal tests
Helpers: require_or_skip(), agent_cmd(), run_agent()/Agent, observe_calls(), policy_for(),
SECRETS. Environment: AB_BUILD_DIR (dir with agentbraked and agentbrake; default
<source>/build), AB_SOURCE_DIR, AGENTBRAKE_REQUIRE_BPF=1 (every skip becomes a failure),
AB_E2E_KEEP=1 (keep the daemon's state dir for debugging).

Kill only what we started: processes by the pid we got from Popen, cgroups we created.
"""
import contextlib
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import atexit
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("AB_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
CLIENTS = os.path.join(HERE, "clients")
NODE_DIR = os.path.join(HERE, "node")
PYTHON = sys.executable or "python3"

REQUIRE_BPF = os.environ.get("AGENTBRAKE_REQUIRE_BPF") == "1"

# Fake credentials: they must never show up in the DB, the daemon's log or the CLI's output.
SECRETS = {
    "openai": "sk-test-AGENTBRAKE-SECRET-0001",
    "openai2": "sk-test-AGENTBRAKE-SECRET-0002",
    "anthropic": "sk-ant-test-AGENTBRAKE-SECRET-0003",
}
SECRET_MARKER = "AGENTBRAKE-SECRET"

VISIBLE_WITHIN_S = 2.0    # contract: a completed call is visible through the CLI within 2 s
POLL_SLACK_S = 0.6        # poll period + CLI start-up, allowed on top of that
DAEMON_READY_TIMEOUT_S = 60.0


# ---- skipping -------------------------------------------------------------------------------
def require_or_skip(cond, reason):
    """Skip (unittest.SkipTest) when `cond` is false; under AGENTBRAKE_REQUIRE_BPF=1 fail instead."""
    if cond:
        return
    if REQUIRE_BPF:
        raise AssertionError("AGENTBRAKE_REQUIRE_BPF=1 and a requirement is missing: " + reason)
    raise unittest.SkipTest(reason)


def build_dir():
    return os.environ.get("AB_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")


def binaries():
    d = build_dir()
    return os.path.join(d, "agentbraked"), os.path.join(d, "agentbrake")


def bpf_capable():
    """(ok, reason): root, BTF, cgroup v2 — what a real daemon needs here."""
    if os.geteuid() != 0:
        return False, "not root (the daemon loads BPF programs)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return False, "no /sys/kernel/btf/vmlinux (no BTF)"
    if cgroup2_mount() is None:
        return False, "no cgroup v2 mount"
    return True, ""


def require_daemon():
    ok, why = bpf_capable()
    require_or_skip(ok, why)
    daemon, cli = binaries()
    for b in (daemon, cli):
        require_or_skip(os.access(b, os.X_OK), "binary missing: %s (set AB_BUILD_DIR)" % b)


def require_tools(*names):
    for n in names:
        require_or_skip(shutil.which(n) is not None, "tool missing: " + n)


def ensure_node_modules():
    """node + the pinned SDKs (npm ci from package-lock.json on first use)."""
    require_tools("node", "npm")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "openai")) or \
            not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@anthropic-ai", "sdk")):
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        require_or_skip(r.returncode == 0, "npm ci failed in %s: %s" % (NODE_DIR, r.stdout[-2000:]))


def tail(path, n=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "<%s unreadable: %s>" % (path, e)


def wait_for(pred, timeout, interval=0.1, what="condition", on_fail=None):
    """Poll pred() until it returns something truthy (returned) or `timeout` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if on_fail:
                msg += "\n" + on_fail()
            raise AssertionError(msg)
        time.sleep(interval)


def assert_stays(pred, seconds, what, interval=0.1, on_fail=None):
    """An observation window: pred() must stay truthy for `seconds` s (fails at the first poll
    where it is not). Absence needs a window, so this is not a hope that something happened by
    then; start it from a well-defined state (nothing in flight, the daemon has seen everything
    it should: e.g. after wait_visible), so that only what the window is about can change."""
    deadline = time.monotonic() + seconds
    while True:
        last = time.monotonic() >= deadline   # the last look starts after the window's end
        if not pred():
            msg = "during a %.1fs observation window: %s" % (seconds, what)
            if on_fail:
                msg += "\n" + on_fail()
            raise AssertionError(msg)
        if last:
            return
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def _die_with_parent(sig):
    """preexec_fn part: the child gets `sig` when this test process dies (even by SIGKILL)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop_process(p, grace=5.0):
    """SIGTERM then SIGKILL one process we started (by its Popen object)."""
    if p.poll() is not None:
        return p.returncode
    try:
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(timeout=10)
    except ProcessLookupError:
        return p.wait(timeout=10)


# ---- cgroup v2 ----------------------------------------------------------------------------
def cgroup2_mount():
    """The cgroup2 mount point from /proc/self/mountinfo (never hard-coded)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4].replace("\\040", " ")
    except OSError:
        pass
    return None


def reap_stale_cgroups(mount):
    """Remove EMPTY agentbrake-test-<pid>-* cgroups left by test processes that no longer exist."""
    import re
    try:
        names = os.listdir(mount)
    except OSError:
        return
    for n in names:
        m = re.match(r"agentbrake-test-(\d+)-", n)
        if not m or os.path.exists("/proc/%s" % m.group(1)):
            continue
        path = os.path.join(mount, n)
        for root, _dirs, _f in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(root)   # fails (and is left alone) while processes live in it
            except OSError:
                pass


class Cgroup:
    """A cgroup v2 <mount>/agentbrake-test-<pid>-<name>. .path is relative to the mount ("/...").

    .run(argv, **popen_kw) starts a process inside it (the child writes its own pid to
    cgroup.procs before exec). On exit every process in it is killed (cgroup.kill, or SIGKILL
    of the pids in cgroup.procs — all of them ours) and the directory is removed."""

    def __init__(self, name):
        self.mount = cgroup2_mount()
        if self.mount is None:
            raise RuntimeError("no cgroup2 mount")
        self.name = "agentbrake-test-%d-%s" % (os.getpid(), name)
        self.fs = os.path.join(self.mount, self.name)
        self.path = "/" + self.name
        self.procs_started = []

    def __enter__(self):
        reap_stale_cgroups(self.mount)
        if os.path.isdir(self.fs):
            self._cleanup()
        os.mkdir(self.fs)
        return self

    def __exit__(self, *exc):
        self._cleanup()
        return False

    def run(self, argv, **kw):
        procs_file = os.path.join(self.fs, "cgroup.procs")

        def enter():
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))
            _die_with_parent(signal.SIGKILL)
            if user_pre:
                user_pre()

        user_pre = kw.pop("preexec_fn", None)
        p = subprocess.Popen(argv, preexec_fn=enter, **kw)
        self.procs_started.append(p)
        return p

    def pids(self):
        out = []
        for root, _dirs, files in os.walk(self.fs):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        out += [int(x) for x in f.read().split()]
                except OSError:
                    pass
        return out

    def _populated(self):
        try:
            with open(os.path.join(self.fs, "cgroup.events")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "populated":
                        return v.strip() == "1"
        except OSError:
            pass
        return bool(self.pids())

    def kill_all(self):
        if not os.path.isdir(self.fs):
            return
        killed = False
        kf = os.path.join(self.fs, "cgroup.kill")
        if os.path.exists(kf):
            try:
                with open(kf, "w") as f:
                    f.write("1")
                killed = True
            except OSError:
                pass
        if not killed:
            for pid in self.pids():   # processes in a cgroup that we created: ours
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _cleanup(self):
        if not os.path.isdir(self.fs):
            return
        # thaw first in case a test (or the daemon) froze it
        try:
            with open(os.path.join(self.fs, "cgroup.freeze"), "w") as f:
                f.write("0")
        except OSError:
            pass
        self.kill_all()
        for p in self.procs_started:
            for s in (p.stdin, p.stdout, p.stderr):
                if s:
                    try:
                        s.close()
                    except OSError:
                        pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self._populated() and time.monotonic() < deadline:
            self.kill_all()
            time.sleep(0.05)
        # remove children first (deepest first)
        for root, dirs, _files in sorted(os.walk(self.fs), key=lambda t: -t[0].count("/")):
            for d in dirs:
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
        for _ in range(50):
            try:
                os.rmdir(self.fs)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("could not remove cgroup %s (pids %s)" % (self.fs, self.pids()))


# ---- the provider simulator -------------------------------------------------------------------
class Simulator:
    """simulator.py as a subprocess. .port, .cafile, .tls, .records(), .set(**control)."""

    def __init__(self, plain=False, **flags):
        self.plain = plain
        self.flags = flags
        self.tmp = None
        self.proc = None

    def __enter__(self):
        if not self.plain:
            require_tools("openssl")
        self.tmp = tempfile.mkdtemp(prefix="ab-e2e-sim-")
        self.log = os.path.join(self.tmp, "served.jsonl")
        self.control = os.path.join(self.tmp, "control.json")
        argv = [PYTHON, os.path.join(HERE, "simulator.py"), "--log", self.log, "--control", self.control,
                "--cert-dir", os.path.join(self.tmp, "tls")]
        if self.plain:
            argv.append("--plain")
        for k, v in self.flags.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                argv.append(flag)
            elif v is not None and v is not False:
                argv += [flag, str(v)]
        self.errlog = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.errlog, stdin=subprocess.DEVNULL,
                                     preexec_fn=lambda: _die_with_parent(signal.SIGTERM))
        try:
            r, _, _ = select.select([self.proc.stdout], [], [], 60)
            line = self.proc.stdout.readline() if r else b""
            if not line:
                raise RuntimeError("simulator did not start: " + tail(self.errlog.name))
            info = json.loads(line)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.port = info["port"]
        self.cafile = info["cafile"]
        self.tls = info["tls"]
        self._listen_fds = self._socket_fds()   # ready, no client yet: its listening socket
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            _stop_process(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()
        if getattr(self, "errlog", None):
            self.errlog.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def set(self, **control):
        """Change the simulator's behaviour for the following requests (control file)."""
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            json.dump(control, f)
        os.replace(tmp, self.control)
        time.sleep(0.01)

    def records(self, tag=None, started=False):
        """Requests served (logged at their end), oldest first; `started`: requests whose body
        the simulator has read (logged at their start, with client_tag and ts_start only)."""
        out = []
        try:
            with open(self.log + (".started" if started else "")) as f:
                for line in f:
                    # a line still being written (no newline yet) is read next time
                    if line.strip() and line.endswith("\n"):
                        rec = json.loads(line)
                        if tag is None or rec.get("client_tag") == tag:
                            out.append(rec)
        except FileNotFoundError:
            pass
        return out

    def in_flight(self, tag=None):
        """Requests started and not yet served (the simulator is still answering them)."""
        return len(self.records(tag, started=True)) - len(self.records(tag))

    def wait_quiet(self, tag=None, timeout=10.0):
        """Waits until no request of `tag` is being answered; fails after `timeout` s."""
        wait_for(lambda: self.in_flight(tag) == 0, timeout,
                 what="the simulator to finish the requests in flight (%s)" % (tag or "any client"))

    def _socket_fds(self):
        n = 0
        fd_dir = "/proc/%d/fd" % self.proc.pid
        for fd in os.listdir(fd_dir):
            try:
                n += os.readlink(os.path.join(fd_dir, fd)).startswith("socket:")
            except OSError:
                pass   # closed meanwhile
        return n

    def open_connections(self):
        """Client connections the simulator has not closed yet (0 = none): the sockets it
        accepted and still holds (its socket fds besides the listener; a connection the client
        reset still counts while a handler holds it), plus those still waiting in its accept
        queue (ESTABLISHED, SYN_RECV or CLOSE_WAIT on its port in /proc/net/tcp; some of them
        are counted twice). A request sent on one of them may not have reached records() yet."""
        n = self._socket_fds() - self._listen_fds
        port = ":%04X" % self.port
        with open("/proc/net/tcp") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(port) and fields[3] in ("01", "03", "08"):
                    n += 1
        return n

    def wait_idle(self, timeout=10.0):
        """Once every client is gone (exited or killed): waits until the simulator has answered and
        logged every request it was sent — none in flight, no client connection left open on its
        side (a killed client's last request may still be unread in its socket). Fails after
        `timeout` s."""
        wait_for(lambda: self.in_flight() == 0 and self.open_connections() == 0, timeout,
                 what="the simulator to answer every request it was sent",
                 on_fail=lambda: "requests in flight: %d, connections open: %d"
                                 % (self.in_flight(), self.open_connections()))

    def client_args(self):
        a = ["--port", str(self.port)]
        if self.tls:
            a += ["--cafile", self.cafile]
        else:
            a += ["--plain"]
        return a

    def client_env(self, base=None):
        env = dict(os.environ if base is None else base)
        if self.tls:
            env["NODE_EXTRA_CA_CERTS"] = self.cafile
        env["AB_PYTHON"] = PYTHON
        env.pop("http_proxy", None)
        env.pop("https_proxy", None)
        env.pop("HTTP_PROXY", None)
        env.pop("HTTPS_PROXY", None)
        return env


def policy_for(sim, extra=""):
    """A policy that declares the simulator as an LLM endpoint (127.0.0.1 and localhost)."""
    tls = "true" if sim.tls else "false"
    y = ("endpoints:\n"
         "  - {host: 127.0.0.1, port: %d, api: openai, tls: %s}\n"
         "  - {host: localhost, port: %d, api: openai, tls: %s}\n") % (sim.port, tls, sim.port, tls)
    return y + extra


# ---- agents -----------------------------------------------------------------------------------
AGENTS = {
    "py_httpclient": lambda: [PYTHON, os.path.join(CLIENTS, "py_httpclient.py")],
    "py_urllib": lambda: [PYTHON, os.path.join(CLIENTS, "py_urllib.py")],
    "py_asyncio": lambda: [PYTHON, os.path.join(CLIENTS, "py_asyncio.py")],
    "sleepy": lambda: [PYTHON, os.path.join(CLIENTS, "sleepy_agent.py")],
    "spawner": lambda: [PYTHON, os.path.join(CLIENTS, "spawner.py")],
    "curl": lambda: ["bash", os.path.join(CLIENTS, "curl_agent.sh")],
    "node_openai": lambda: ["node", os.path.join(NODE_DIR, "openai_agent.mjs")],
    "node_anthropic": lambda: ["node", os.path.join(NODE_DIR, "anthropic_agent.mjs")],
}


def agent_cmd(kind, sim, *args):
    return AGENTS[kind]() + sim.client_args() + [str(a) for a in args]


class Agent:
    """A running agent: its JSON stdout lines are collected (with arrival times) by a thread."""

    def __init__(self, popen, label=""):
        self.p = popen
        self.pid = popen.pid
        self.label = label
        self.lines = []
        self.other = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.p.stdout:
            s = raw.decode("utf-8", "replace").strip()
            if not s:
                continue
            try:
                obj = json.loads(s)
            except ValueError:
                obj = None
            with self._cv:
                if isinstance(obj, dict):
                    obj["_seen"] = time.time()
                    self.lines.append(obj)
                else:
                    self.other.append(s)
                self._cv.notify_all()

    def calls(self):
        with self._cv:
            return [dict(x) for x in self.lines if "call" in x and "status" in x]

    def wait_line(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for x in self.lines:
                    if pred(x):
                        return x
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self._t.is_alive()):
                    raise AssertionError("agent %s (pid %d) never printed the expected line; lines=%s stderr=%s"
                                         % (self.label, self.pid, self.lines, self.stderr_text()))
                self._cv.wait(min(left, 0.2))

    def stderr_text(self):
        f = getattr(self, "errfile", None)
        if f is None:
            return ""
        return tail(f.name, 30)

    def wait(self, timeout=60, check=True):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)
            raise AssertionError("agent %s (pid %d) did not finish in %ss; stderr:\n%s"
                                 % (self.label, self.pid, timeout, self.stderr_text()))
        self._t.join(timeout=5)
        if not self._t.is_alive() and self.p.stdout:
            self.p.stdout.close()
        f = getattr(self, "errfile", None)
        if f is not None and not f.closed:
            f.close()
        if check and rc != 0:
            raise AssertionError("agent %s (pid %d) exited %d; stderr:\n%s; stdout:%s"
                                 % (self.label, self.pid, rc, self.stderr_text(), self.other[-5:]))
        return rc


_SCRATCH = []


def scratch_dir():
    """A temp dir for this test process (agents' stderr files), removed at exit."""
    if not _SCRATCH:
        d = tempfile.mkdtemp(prefix="ab-e2e-scratch-")
        _SCRATCH.append(d)
        atexit.register(shutil.rmtree, d, True)
    return _SCRATCH[0]


def start_agent(cg, kind, sim, *args, env=None, label=None):
    """Start an agent inside cgroup `cg` (stdout collected, stderr to a temp file)."""
    errfile = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".err", delete=False, dir=scratch_dir())
    p = cg.run(agent_cmd(kind, sim, *args), stdout=subprocess.PIPE, stderr=errfile,
               stdin=subprocess.DEVNULL, env=sim.client_env(env), cwd=HERE)
    a = Agent(p, label or kind)
    a.errfile = errfile
    a.kind = kind
    return a


def start_go_agent(cg, sim, binary, tag, *args):
    """Start a Go client built by a test (tests/e2e/clients/go_agent) inside `cg`."""
    errfile = tempfile.NamedTemporaryFile(prefix="go-agent-", suffix=".err", delete=False, dir=scratch_dir())
    argv = [binary, "-port", str(sim.port), "-cafile", sim.cafile, "-tag", tag] + [str(a) for a in args]
    p = cg.run(argv, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL, env=sim.client_env(),
               cwd=HERE)
    a = Agent(p, tag)
    a.errfile = errfile
    a.kind = "go_agent"
    return a


def run_agent(cg, kind, sim, *args, timeout=60, env=None):
    a = start_agent(cg, kind, sim, *args, env=env)
    a.wait(timeout=timeout)
    return a


# ---- the daemon ------------------------------------------------------------------------------
class Daemon:
    """A real agentbraked: own state dir D, DB D/ab.db, socket D/control.sock, policy
    D/policy.yaml (root-owned, 0644), log D/daemon.log. Ready = `status --json` answers."""

    def __init__(self, policy_yaml="", extra_args=(), ready_timeout=DAEMON_READY_TIMEOUT_S, faults=None, env=None):
        """`faults`: test-only fault injection for the daemon (AGENTBRAKE_TEST_FAULTS, see
        daemon/util/faults.h), e.g. {"attach_delay_ms": 3000}. `env`: more environment for the
        daemon (e.g. NOTIFY_SOCKET and WATCHDOG_USEC, to watch its systemd notifications)."""
        self.env = dict(env or {})
        self.policy_yaml = policy_yaml
        self.extra_args = list(extra_args)
        self.faults = dict(faults or {})
        self.ready_timeout = ready_timeout
        self.daemon_bin, self.cli_bin = binaries()
        self.dir = None
        self.proc = None
        self.cli_outputs = []   # every CLI stdout/stderr, for the secrets check
        self.exit_codes = []

    # paths
    @property
    def db(self):
        return os.path.join(self.dir, "ab.db")

    @property
    def socket(self):
        return os.path.join(self.dir, "control.sock")

    @property
    def policy_path(self):
        return os.path.join(self.dir, "policy.yaml")

    @property
    def log_path(self):
        return os.path.join(self.dir, "daemon.log")

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="ab-e2e-daemon-")
        try:
            self.write_policy(self.policy_yaml)
            self.start()
        except BaseException:
            self._remove_state()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        rc = None
        leaks = []
        try:
            rc = self.stop()
        finally:
            log = self.log_tail()
            if self.dir and os.path.isdir(self.dir):
                leaks = self.secret_hits()   # after the final flush too
            if not (os.environ.get("AB_E2E_KEEP") == "1"):
                self._remove_state()
            else:
                sys.stderr.write("kept daemon state in %s\n" % self.dir)
        if exc_type is None and rc not in (0, None):
            raise AssertionError("agentbraked exited %s on SIGTERM (want 0); log tail:\n%s" % (rc, log))
        if exc_type is None and leaks:
            raise AssertionError("a fake API key leaked (found after the daemon stopped): %s" % leaks)
        return False

    def write_policy(self, text):
        tmp = self.policy_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.policy_path)

    def argv(self):
        return [self.daemon_bin, "--state-dir", self.dir, "--db", self.db, "--socket", self.socket,
                "--policy", self.policy_path, "--log-level", "debug"] + self.extra_args

    def start(self):
        logf = open(self.log_path, "ab")
        try:
            # own process group (a terminal's ^C reaches the test only), SIGTERM if the test dies
            env = dict(os.environ)
            env.pop("AGENTBRAKE_TEST_FAULTS", None)
            if self.faults:
                env["AGENTBRAKE_TEST_FAULTS"] = ",".join("%s=%s" % kv for kv in sorted(self.faults.items()))
            env.update(self.env)
            self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=lambda: _die_with_parent(signal.SIGTERM))
        finally:
            logf.close()
        self.started_at = time.time()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise AssertionError("agentbraked exited with %d before it was ready; cmd: %s\nlog tail:\n%s"
                                     % (rc, " ".join(self.argv()), self.log_tail()))
            r = self._run_cli(["status", "--json"], timeout=10)
            if r.returncode == 0:
                try:
                    json.loads(r.stdout)
                    break
                except ValueError:
                    pass
            if time.monotonic() >= deadline:
                self.stop(grace=5)
                raise AssertionError("agentbraked not ready after %.0fs (status --json never answered: rc=%d %s)"
                                     "\nlog tail:\n%s" % (self.ready_timeout, r.returncode,
                                                          (r.stderr or "")[-300:], self.log_tail()))
            time.sleep(0.25)
        self.ready_at = time.time()

    def stop(self, grace=30.0):
        """SIGTERM; returns the exit status (SIGKILL after `grace` s: reported as -9)."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                rc = "timeout (killed after %.0fs)" % grace
        else:
            rc = p.returncode
        self.exit_codes.append(rc)
        return rc

    def restart(self):
        rc = self.stop()
        if rc != 0:
            raise AssertionError("agentbraked exited %s on SIGTERM (want 0); log tail:\n%s" % (rc, self.log_tail()))
        self.start()

    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.proc is not None:
            self.proc.send_signal(sig)

    def crash(self):
        """SIGKILL the daemon (a crash: no release, no flush). Returns its exit status (-9);
        the harness then treats it as stopped (no SIGTERM check on exit)."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.kill()
        rc = p.wait(timeout=10)
        self.exit_codes.append(rc)
        return rc

    def release_all(self, timeout=60):
        """Run `agentbraked --release-all` on this daemon's state dir, DB, socket and policy (the
        unit's stop path); its output goes to the daemon's log. Returns the exit status."""
        argv = [self.daemon_bin, "--release-all", "--state-dir", self.dir, "--db", self.db,
                "--socket", self.socket, "--policy", self.policy_path, "--log-level", "debug"]
        with open(self.log_path, "ab") as logf:
            try:
                r = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   timeout=timeout)
            except subprocess.TimeoutExpired:
                return "timeout (%ss)" % timeout
        return r.returncode

    def _remove_state(self):
        if not self.dir or not os.path.isdir(self.dir):
            return
        # unmount anything the daemon mounted inside its state dir (e.g. a bpffs for pins)
        try:
            with open("/proc/self/mountinfo") as f:
                mounts = [ln.split()[4] for ln in f]
        except OSError:
            mounts = []
        for m in sorted((m for m in mounts if m.startswith(self.dir + "/") or m == self.dir), reverse=True):
            subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=80):
        return tail(self.log_path, n) if self.dir else ""

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # CLI
    def _run_cli(self, args, timeout=30):
        argv = [self.cli_bin, "--db", self.db, "--socket", self.socket] + list(args)
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            r = subprocess.CompletedProcess(argv, 124, e.stdout or "", "CLI timed out after %ss" % timeout)
        self.cli_outputs.append((list(args), r.stdout or "", r.stderr or ""))
        return r

    def cli(self, *args, check=True, timeout=30):
        r = self._run_cli(args, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("agentbrake %s exited %d\nstderr: %s\nstdout: %s\ndaemon log tail:\n%s"
                                 % (" ".join(args), r.returncode, r.stderr[-1000:], r.stdout[-1000:],
                                    self.log_tail(30)))
        return r

    def cli_json(self, *args):
        r = self.cli(*args)
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError("agentbrake %s: not JSON (%s): %r" % (" ".join(args), e, r.stdout[:500]))

    def events(self, kind=None, since="2h"):
        args = ["events", "--json", "--since", since]
        if kind:
            args += ["--kind", kind]
        r = self.cli(*args)
        out = []
        for ln in r.stdout.splitlines():
            ln = ln.strip()
            if not ln:
                continue
            try:
                out.append(json.loads(ln))
            except ValueError as e:
                raise AssertionError("events --json printed a line that is not JSON (%s): %r" % (e, ln[:300]))
        return out

    def calls(self, cgroup=None, since="2h"):
        """llm_call events, optionally only those of one cgroup path (or a collection of them)."""
        ev = self.events("llm_call", since=since)
        if cgroup is None:
            return ev
        wanted = {cgroup} if isinstance(cgroup, str) else set(cgroup)
        return [e for e in ev if e.get("cgroup") in wanted]

    def status(self):
        return self.cli_json("status", "--json")

    def agents(self):
        return self.cli_json("agents", "--json")

    def usage(self, by="cgroup", since="2h"):
        return self.cli_json("usage", "--by", by, "--since", since, "--json")

    def wait_for(self, pred, timeout, what="condition", interval=0.1):
        return wait_for(pred, timeout, interval=interval, what=what,
                        on_fail=lambda: "daemon log tail:\n" + self.log_tail(40))

    def secret_hits(self, secrets=None):
        """Where any of the fake keys appears: DB (+ -wal/-shm/-journal), daemon log, CLI output."""
        secrets = list(secrets or SECRETS.values()) + [SECRET_MARKER]
        hits = []
        files = [self.db, self.db + "-wal", self.db + "-shm", self.db + "-journal", self.log_path]
        for root, _d, fs in os.walk(self.dir):
            for f in fs:
                p = os.path.join(root, f)
                if p not in files and f != "policy.yaml":
                    files.append(p)
        for p in files:
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue   # sockets, FIFOs, pinned BPF objects
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for s in secrets:
                if s.encode() in data:
                    hits.append("%s contains %s…" % (os.path.basename(p), s[:8]))
        for args, out, err in self.cli_outputs:
            for s in secrets:
                if s in out or s in err:
                    hits.append("output of `agentbrake %s` contains %s…" % (" ".join(args), s[:8]))
        return sorted(set(hits))


# ---- observing calls ------------------------------------------------------------------------
def observe_calls(daemon, cgroup, agents, expected, settle=0.5, timeout=None):
    """Poll `events --json` while `agents` run and until `expected` llm_call events for `cgroup`
    are visible (or the visibility deadline passed), then `settle` s more to catch duplicates.

    Returns (events, timeline, calls): events for the cgroup, [(t_query_start, count)], and the
    agents' per-call JSON lines. Asserts the agents exit 0 and that for every j the j-th event
    showed up in a poll started at most VISIBLE_WITHIN_S + POLL_SLACK_S after the j-th call
    (in order of completion) ended."""
    agents = list(agents)
    timeline = []
    hard_deadline = time.monotonic() + (timeout or 120)
    events = []
    while True:
        t_q = time.time()
        events = daemon.calls(cgroup)
        timeline.append((t_q, len(events)))
        running = any(a.p.poll() is None for a in agents)
        if not running:
            calls = [c for a in agents for c in a.calls()]
            last_end = max([c["t_end"] for c in calls], default=time.time())
            if len(events) >= expected and t_q > last_end:
                break
            if t_q > last_end + VISIBLE_WITHIN_S + POLL_SLACK_S + 1.0:
                break
        if time.monotonic() > hard_deadline:
            break
        time.sleep(0.15)
    for a in agents:
        a.wait(timeout=60)
    time.sleep(settle)
    events = daemon.calls(cgroup)
    timeline.append((time.time(), len(events)))
    calls = [c for a in agents for c in a.calls()]
    return events, timeline, calls


def wait_visible(daemon, cgroup, n, t_end, what="calls"):
    """Wait until `cgroup` has >= n llm_call events; fail unless a poll that started at most
    VISIBLE_WITHIN_S + POLL_SLACK_S after `t_end` (epoch s, when the last call ended) saw them."""
    deadline = t_end + VISIBLE_WITHIN_S + POLL_SLACK_S
    while True:
        t_q = time.time()
        ev = daemon.calls(cgroup)
        if len(ev) >= n:
            return ev
        if t_q > deadline:
            raise AssertionError("%s: %d of %d llm_call events in %s visible %.2f s after the call ended "
                                 "(contract: %.1f s)\ndaemon log tail:\n%s"
                                 % (what, len(ev), n, cgroup, t_q - t_end, VISIBLE_WITHIN_S, daemon.log_tail(40)))
        time.sleep(0.1)


def visibility_violations(timeline, calls):
    """[(j, t_end, first_seen_query_start)] where the j-th event came later than allowed."""
    ends = sorted(c["t_end"] for c in calls)
    bad = []
    for j, t_end in enumerate(ends, start=1):
        first = next((t for t, n in timeline if n >= j), None)
        if first is None or first - t_end > VISIBLE_WITHIN_S + POLL_SLACK_S:
            bad.append((j, round(t_end, 3), None if first is None else round(first - t_end, 3)))
    return bad


def detail(ev):
    return ev.get("detail") or {}


def duration_s(v):
    """A window as an event carries it: '4s', '10m', '250ms' or a number of seconds (None if
    it is neither)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", str(v))
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def names_bucket(bucket, path):
    """Whether an event's `bucket` names the cgroup `path` ("/a", "cgroup:/a", or an object
    with the path as a value)."""
    if isinstance(bucket, dict):
        return any(str(v) == path or str(v).endswith(":" + path) for v in bucket.values())
    s = str(bucket)
    return s == path or s.endswith(":" + path) or s.endswith(" " + path)


def host_of(h):
    """'localhost:8443' → 'localhost'; '[::1]:8443' → '::1'."""
    if h is None:
        return None
    h = str(h)
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


# ---- test scaffolding ----------------------------------------------------------------------
class SimulatorCase(unittest.TestCase):
    """A test class sharing one simulator (cls.sim) across its tests; a class that returns a
    policy from class_policy() also shares one daemon on it (cls.daemon). Both are stopped
    after the class, also when setting up fails half way."""
    maxDiff = 4000

    @classmethod
    def class_policy(cls):
        return None

    @classmethod
    def setUpClass(cls):
        require_daemon()
        cls.stack = contextlib.ExitStack()
        try:
            cls.sim = cls.stack.enter_context(Simulator())
            policy = cls.class_policy()
            if policy is not None:
                cls.daemon = cls.stack.enter_context(Daemon(policy))
        except BaseException:
            cls.stack.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()


def module_simulator():
    """For setUpModule: a simulator shared by the module's tests, stopped by the module cleanup."""
    stack = contextlib.ExitStack()
    unittest.addModuleCleanup(stack.close)
    require_daemon()
    return stack.enter_context(Simulator())


# ---- tmux ---------------------------------------------------------------------------------
class Tmux:
    """A private tmux server (socket name agentbrake-test-<pid>-<name>), started inside `cgroup`
    when given. Cleanup: kill-server on our socket; the cgroup cleanup kills what remains."""

    def __init__(self, name, cgroup=None, width=200, height=50):
        self.sock = "agentbrake-test-%d-%s" % (os.getpid(), name)
        self.session = "ab"
        self.cgroup = cgroup
        self.size = (width, height)

    def tmux(self, *args, check=True, timeout=10):
        r = subprocess.run(["tmux", "-L", self.sock] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError("tmux %s: rc=%d %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def __enter__(self, ):
        argv = ["tmux", "-L", self.sock, "-f", "/dev/null", "new-session", "-d", "-s", self.session,
                "-x", str(self.size[0]), "-y", str(self.size[1]), "bash --norc --noprofile -i"]
        env = dict(os.environ)
        env.pop("TMUX", None)
        env["PS1"] = "ab$ "
        if self.cgroup is not None:
            p = self.cgroup.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        else:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        _out, err = p.communicate(timeout=20)
        if p.returncode != 0:
            raise AssertionError("tmux new-session failed: %s" % err)
        return self

    def __exit__(self, *exc):
        self.tmux("kill-server", check=False)
        return False

    def send(self, line):
        self.tmux("send-keys", "-t", self.session, "-l", line)
        self.tmux("send-keys", "-t", self.session, "Enter")

    def screen(self):
        return self.tmux("capture-pane", "-p", "-J", "-t", self.session, "-S", "-200").stdout

    def shell_pid(self):
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout.strip())


class SubCgroup(Cgroup):
    """A child cgroup <parent>/<name> of a Cgroup (or SubCgroup) this test created; .path is
    parent.path + "/" + name. Same .run()/.pids()/cleanup; enter it after its parent (exit
    before), the parent's cleanup removes it too."""

    def __init__(self, parent, name):
        self.mount = parent.mount
        self.name = parent.name + "/" + name
        self.fs = os.path.join(parent.fs, name)
        self.path = parent.path + "/" + name
        self.procs_started = []

    def __enter__(self):
        if os.path.isdir(self.fs):
            self._cleanup()
        os.mkdir(self.fs)
        return self
