#!/usr/bin/env python3
"""End-to-end proofs for operating agentbraked (issue 6, "Operate").

  Unit       the INSTALLED unit (cmake --install into a temp prefix) passes `systemd-analyze
             verify`; the daemon started with the unit's ExecStart, only the unit's capabilities
             (setpriv: bounding/inheritable/ambient sets parsed from the unit, NoNewPrivileges)
             and the unit's limits sends READY=1 from its main pid to a notify socket the test
             binds, answers `status --json` with probes attached by then, captures calls, feeds
             the watchdog, survives the unit's ExecReload and runs the unit's ExecStopPost.
  Alerts     a webhook receiver on loopback gets one alert per rule and entity per
             `min_interval` during a runaway (alert budget, short window); the body is JSON
             with `text` and structured numbers; a receiver that is down yields `alert_failed`
             and no stall; the webhook path (a secret) never shows in the DB, log or CLI output.
  Metrics    `promtool check metrics` accepts /metrics; per-cgroup calls/tokens/cost are right;
             `promtool check rules policies/prometheus-rules.yaml` passes, and every metric
             the rules use is exported; `promtool test rules` on series made from two scrapes
             around real traffic: no shipped alert fires on normal traffic, and
             AgentbrakeCaptureLoss fires once a loss counter grows; holds are counted by reason.
  Top        `agentbrake top` in tmux shows a paused runaway as held, then ok, within 2 s.
  Retention  `retention:` prunes old calls and events while new calls keep being recorded.
  Lifecycle  SIGHUP reloads (valid: applied; invalid: policy_rejected with file:line, old kept),
             the daemon keeps running; `--release-all` exits 0 and leaves nothing held, also
             after the daemon was SIGKILLed while holding an agent.

Needs root, BPF, cgroup v2, tmux, promtool, systemd-analyze, setpriv, cmake. Under
AGENTBRAKE_REQUIRE_BPF=1 a missing requirement is a failure. Everything started here (daemons,
receivers, cgroups, tmux servers, temp prefixes) is removed on the way out, also on failure;
only pids this file started are ever signalled. Loopback only.
"""
import contextlib
import datetime
import http.server
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

PRICES = """prices:
  e2e-gpt: {input: 1.0, output: 2.0, cache_read: 0.5}
"""
PRICE_IN, PRICE_OUT = 1.0, 2.0   # USD per million tokens (the simulator serves no cache tokens by default)

VISIBLE = abtest.VISIBLE_WITHIN_S + abtest.POLL_SLACK_S
MIN_INTERVAL_S = 5.0
PRUNE_SLACK_S = 10.0   # assumption (contract silent): rows older than `retention` are gone within 10 s
CRASH_WINDOW_S = 0.5   # observation window: a hold outlives a SIGKILLed daemon

SIM = None


def setUpModule():
    global SIM
    SIM = abtest.module_simulator()


# ---- small helpers ---------------------------------------------------------------------------
def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_ts(ts):
    """'2026-11-29T10:00:01.250Z' → epoch seconds."""
    s = str(ts)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return datetime.datetime.fromisoformat(s).timestamp()


def cli_argv(d, *args):
    return [d.cli_bin, "--db", d.db, "--socket", d.socket] + list(args)


def budget_yaml(name, cg, limits, action):
    return ("  - name: %s\n"
            "    match: {cgroup: \"%s\"}\n"
            "    per: cgroup\n"
            "    limits:\n%s"
            "    action: %s\n") % (name, cg.path, "".join("      - %s\n" % l for l in limits), action)


def start_bursts(cg, sim, tag, bursts, per_burst=4, gap=1.3, label=None):
    """A runaway in `cg`: `bursts` times, a fresh py_httpclient making `per_burst` calls back to
    back, then `gap` s of quiet (longer than the test budgets' 1 s window, so each burst opens a
    new budget episode). Its stdout (one JSON line per call) is collected like start_agent's."""
    inner = " ".join(shlex.quote(x) for x in abtest.agent_cmd(
        "py_httpclient", sim, "--tag", tag, "-n", str(per_burst), "--interval", "0.05"))
    script = "for i in $(seq 1 %d); do %s || exit 1; sleep %s; done" % (bursts, inner, gap)
    errfile = tempfile.NamedTemporaryFile(prefix="burst-", suffix=".err", delete=False, dir=abtest.scratch_dir())
    p = cg.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL,
               env=sim.client_env(), cwd=abtest.HERE)
    a = abtest.Agent(p, label or tag)
    a.errfile = errfile
    a.kind = "bursts"
    return a


def greedy_alert_count(times, min_interval):
    """How many alerts a limiter of one per `min_interval` sends for events at `times`."""
    n, last = 0, None
    for t in sorted(times):
        if last is None or t >= last + min_interval:
            n, last = n + 1, t
    return n


def walk_json(v, key=None):
    """Yield (key, value) for every scalar in a JSON value (key = the nearest dict key)."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield from walk_json(x, k)
    elif isinstance(v, list):
        for x in v:
            yield from walk_json(x, key)
    else:
        yield key, v


def numbers_under(v, name):
    """Every number found below (or at) any key called `name`."""
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            if k == name:
                out += [n for _k, n in walk_json(x) if isinstance(n, (int, float)) and not isinstance(n, bool)]
            out += numbers_under(x, name)
    elif isinstance(v, list):
        for x in v:
            out += numbers_under(x, name)
    return out


def is_frozen_or_stopped(cg, pid):
    try:
        with open(os.path.join(cg.fs, "cgroup.events")) as f:
            if any(ln.strip() == "frozen 1" for ln in f):
                return "cgroup frozen"
    except OSError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return "process stopped (state %s)" % state
    except (OSError, IndexError):
        pass
    return None


def wait_alerts_settled(d, rx, kind, timeout=15.0):
    """Wait until the daemon has dealt with every `kind` event for its one alert rule on `kind`:
    each one suppressed (min_interval) or dropped, or delivered and recorded (alert_sent /
    alert_failed), and the receiver got every one sent. Uses the status --json counters
    alerts_sent/failed/suppressed/dropped (an alert is counted once its delivery is over). Call
    it once no more `kind` events can come (the agents are done and their calls visible: the
    daemon records and offers an event in the same pass as the call it belongs to, before the
    call reaches the database)."""
    def settled():
        n = len(d.events(kind))
        c = d.status().get("counters", {})
        sent, failed = c.get("alerts_sent", 0), c.get("alerts_failed", 0)
        done = sent + failed + c.get("alerts_suppressed", 0) + c.get("alerts_dropped", 0)
        return (done == n and len(d.events("alert_sent")) == sent and len(d.events("alert_failed")) == failed
                and len(rx.received()) >= sent)
    d.wait_for(settled, timeout, what="every %s alert delivered or suppressed (status counters vs events)" % kind,
               interval=0.3)


# ---- a webhook receiver on loopback -----------------------------------------------------------
class WebhookReceiver:
    """http.server on 127.0.0.1:<free port> in a thread; records every POST (time, path, body)."""

    def __init__(self, status=200):
        self.status = status
        self.hits = []
        self.lock = threading.Lock()
        self.server = None
        self.thread = None

    def __enter__(self):
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    body = None
                with rx.lock:
                    rx.hits.append({"t": time.time(), "path": self.path, "raw": raw, "body": body,
                                    "content_type": self.headers.get("Content-Type")})
                out = b'{"ok":true}'
                self.send_response(rx.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        return False

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def received(self):
        with self.lock:
            return list(self.hits)


class RefusingPort:
    """A loopback port bound but never listening: connections to it are refused. Holding the
    bound socket keeps anyone else from taking the port during the test."""

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False


# ---- Prometheus text format -------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text):
    """(samples [(name, {labels}, value)], family names from # HELP / # TYPE lines)."""
    samples, families = [], set()
    for ln in text.splitlines():
        if ln.startswith("#"):
            parts = ln.split()
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                families.add(parts[2])
            continue
        if not ln.strip():
            continue
        m = _SAMPLE.match(ln)
        if not m:
            continue
        labels = {}
        if m.group(2):
            for lm in _LABEL.finditer(m.group(2)[1:-1]):
                labels[lm.group(1)] = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)),
                                             lm.group(2))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        samples.append((m.group(1), labels, value))
    return samples, families


def prometheus_types(text):
    """family name → type, from the # TYPE lines."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)\s*$", text, re.M)}


def promql_number(v):
    """A float as a plain decimal (no exponent) for promtool's series notation."""
    t = ("%.17f" % v).rstrip("0").rstrip(".")
    return t if t not in ("", "-", "-0") else "0"


def rules_test_series(before, after, labels, steps, raise_loss=None):
    """promtool `input_series` from two scrapes of a real daemon: every sample of `after`, with
    `labels` added (instance, job: what a scrape adds), one value a minute for `steps` minutes.
    A counter grows each minute by what it grew between the two scrapes (the traffic run in
    between, once a minute), a gauge keeps its value. raise_loss: the `counter` label of one
    agentbrake_losses_total series that grows by one more each minute (a real loss)."""
    types = prometheus_types(after)
    first = {(n, tuple(sorted(l.items()))): v for n, l, v in parse_prometheus(before)[0]}
    out = []
    for name, lab, v in parse_prometheus(after)[0]:
        grow = 0.0
        if types.get(name) == "counter":
            grow = max(0.0, v - first.get((name, tuple(sorted(lab.items()))), 0.0))
        if raise_loss is not None and name == "agentbrake_losses_total" and lab.get("counter") == raise_loss:
            grow += 1
        full = dict(lab, **labels)
        sel = name + "{" + ",".join("%s=%s" % (k, json.dumps(full[k])) for k in sorted(full)) + "}"
        out.append({"series": sel, "values": "%s+%sx%d" % (promql_number(v), promql_number(grow), steps)})
    return out


@contextlib.contextmanager
def env_var(name, value):
    """`name`=`value` in this process's environment (so in the daemons and CLIs it starts) for the
    block's duration."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def fetch(url, timeout=5):
    """(status, content_type, text) or (None, None, error text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as e:
        return None, None, str(e)


# ---- the systemd unit -------------------------------------------------------------------------
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}


def unit_keys(path, section="[Service]"):
    """key → [values] of one section of a unit file (comments and other sections dropped)."""
    keys, cur = {}, None
    with open(path) as f:
        for ln in f:
            ln = ln.strip()
            if not ln or ln[0] in "#;":
                continue
            if ln.startswith("["):
                cur = ln
                continue
            if cur == section and "=" in ln:
                k, v = ln.split("=", 1)
                keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def exec_argv(value):
    """An Exec*= value → argv (systemd's special prefixes @-:+! stripped)."""
    v = value.lstrip("@-:+!")
    return shlex.split(v)


def cap_set(value):
    """'CAP_BPF CAP_KILL' → {'CAP_BPF', 'CAP_KILL'}; a leading ~ (deny list) is not supported here."""
    words = value.split()
    if words and words[0].startswith("~"):
        raise AssertionError("the test cannot model an inverted capability list: %r" % value)
    return {w.upper() for w in words}


def setpriv_argv(bounding, ambient, no_new_privs):
    def spec(caps):
        return ",".join(["-all"] + ["+" + c[4:].lower() for c in sorted(caps)])
    argv = ["setpriv", "--inh-caps=" + spec(bounding | ambient), "--bounding-set=" + spec(bounding)]
    if ambient:
        argv.append("--ambient-caps=" + spec(ambient))
    if no_new_privs:
        argv.append("--no-new-privs")
    return argv + ["--"]


def proc_caps(pid):
    """{'CapBnd': set of numbers, 'CapEff': ..., 'NoNewPrivs': '1'}"""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            v = v.strip()
            if k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
                bits = int(v, 16)
                out[k] = {i for i in range(64) if bits >> i & 1}
            elif k == "NoNewPrivs":
                out[k] = v
    return out


class NotifySocket:
    """An AF_UNIX datagram socket (the test's NOTIFY_SOCKET) with SO_PASSCRED: messages come
    with the sender's pid."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")

    def __enter__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.messages = []   # (t, pid, {field: value})
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False

    def poll(self, timeout):
        """Collect datagrams for up to `timeout` s (returns after the first batch)."""
        self.sock.settimeout(timeout)
        got = []
        try:
            while True:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
                pid = None
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS and len(cdata) >= 12:
                        pid = struct.unpack("iII", cdata[:12])[0]
                fields = {}
                for ln in data.decode("utf-8", "replace").split("\n"):
                    k, sep, v = ln.partition("=")
                    if sep:
                        fields[k] = v
                got.append((time.time(), pid, fields))
                self.sock.settimeout(0.01)
        except (socket.timeout, BlockingIOError):
            pass
        self.messages += got
        return got


class UnitDaemon(Daemon):
    """The daemon as the unit starts it: the unit's ExecStart argv (+ the harness's own
    --state-dir/--db/--socket/--policy), run through setpriv with the unit's capability sets and
    NoNewPrivileges, the unit's LimitMEMLOCK/LimitNOFILE/UMask, NOTIFY_SOCKET and WATCHDOG_USEC
    in the environment. Ready = READY=1 on the notify socket."""

    def __init__(self, policy_yaml, unit_path, watchdog_usec, ready_timeout=abtest.DAEMON_READY_TIMEOUT_S):
        super().__init__(policy_yaml, ready_timeout=ready_timeout)
        self.unit = unit_keys(unit_path)
        self.watchdog_usec = watchdog_usec
        self.notify = None
        self.ready_msg = None
        self.status_at_ready = None

    def one(self, key):
        v = self.unit.get(key) or []
        if len(v) != 1:
            raise AssertionError("unit: want exactly one %s=, got %r" % (key, v))
        return v[0]

    def caps(self):
        bnd = cap_set(self.one("CapabilityBoundingSet"))
        amb = cap_set(" ".join(self.unit.get("AmbientCapabilities") or []))
        unknown = sorted((bnd | amb) - set(CAP_NUMBERS))
        if unknown:
            raise AssertionError("unit names capabilities unknown to the test: %s" % unknown)
        return bnd, amb

    def own_args(self):
        return ["--state-dir", self.dir, "--db", self.db, "--socket", self.socket, "--policy", self.policy_path,
                "--log-level", "debug"]

    def privileged(self, argv):
        bnd, amb = self.caps()
        nnp = self.one("NoNewPrivileges").lower() in ("yes", "true", "1", "on")
        return setpriv_argv(bnd, amb, nnp) + argv

    def argv(self):
        return self.privileged(exec_argv(self.one("ExecStart")) + self.own_args())

    def limits(self):
        lims = []
        for key, res in (("LimitMEMLOCK", resource.RLIMIT_MEMLOCK), ("LimitNOFILE", resource.RLIMIT_NOFILE)):
            v = (self.unit.get(key) or [None])[0]
            if v is None:
                continue
            n = resource.RLIM_INFINITY if v == "infinity" else int(v)
            lims.append((res, n, key))
        umask = int((self.unit.get("UMask") or ["0022"])[0], 8)
        return lims, umask

    def start(self):
        lims, umask = self.limits()

        # Best effort: without CAP_SYS_RESOURCE (some containers) a hard limit cannot be raised;
        # then the soft limit goes as high as the hard one allows (noted in the log).
        notes = []
        for res, n, key in lims:
            _soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY and (n == resource.RLIM_INFINITY or n > hard):
                notes.append("test environment cannot raise hard limits: %s capped at %d (unit: %s)"
                             % (key, hard, "infinity" if n == resource.RLIM_INFINITY else n))
        self.limit_notes = notes

        def pre():
            for res, n, _key in lims:
                try:
                    resource.setrlimit(res, (n, n))
                except (ValueError, OSError):
                    _soft, hard = resource.getrlimit(res)
                    resource.setrlimit(res, (hard, hard))
            os.umask(umask)
            abtest._die_with_parent(signal.SIGTERM)

        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = self.notify.path
        env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        env.pop("WATCHDOG_PID", None)
        logf = open(self.log_path, "ab")
        try:
            for n in notes:
                logf.write(("[test] %s\n" % n).encode())
            logf.flush()
            self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env, preexec_fn=pre)
        finally:
            logf.close()
        self.started_at = time.time()
        deadline = time.monotonic() + self.ready_timeout
        while self.ready_msg is None:
            for t, pid, fields in self.notify.poll(0.2):
                if fields.get("READY") == "1" and self.ready_msg is None:
                    self.ready_msg = (t, pid, fields)
                    # the contract: the control socket answers by the time READY=1 is sent
                    self.status_at_ready = self._run_cli(["status", "--json"], timeout=10)
            if self.ready_msg is not None:
                break
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise AssertionError("agentbraked (unit's command line and capabilities) exited %d before READY=1; "
                                     "cmd: %s\nlog tail:\n%s" % (rc, " ".join(self.argv()), self.log_tail()))
            if time.monotonic() >= deadline:
                st = self._run_cli(["status", "--json"], timeout=10)
                self.stop(grace=5)
                raise AssertionError("no READY=1 on NOTIFY_SOCKET within %.0fs of starting the daemon with the unit's "
                                     "command line (status --json: rc=%d %s); messages: %s\nlog tail:\n%s"
                                     % (self.ready_timeout, st.returncode, st.stdout[:300], self.notify.messages,
                                        self.log_tail()))
        self.ready_at = time.time()


# ---- the tests -------------------------------------------------------------------------------
class Unit(unittest.TestCase):
    """The unit as `cmake --install` puts it on disk, and the daemon as that unit runs it."""
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        abtest.require_tools("cmake", "systemd-analyze", "setpriv")
        build = abtest.build_dir()
        abtest.require_or_skip(os.path.exists(os.path.join(build, "cmake_install.cmake")),
                               "no cmake_install.cmake in %s (AB_BUILD_DIR must be a CMake build dir)" % build)
        cls.prefix = tempfile.mkdtemp(prefix="ab-e2e-prefix-")
        cls.addClassCleanup(shutil.rmtree, cls.prefix, True)
        # `cmake --install` (re)writes <build>/install_manifest.txt: put back what was there
        manifest = os.path.join(build, "install_manifest.txt")
        try:
            with open(manifest, "rb") as f:
                saved = f.read()
        except FileNotFoundError:
            saved = None

        def restore():
            if saved is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(manifest)
            else:
                with open(manifest, "wb") as f:
                    f.write(saved)
        cls.addClassCleanup(restore)
        r = subprocess.run(["cmake", "--install", build, "--prefix", cls.prefix], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError("cmake --install %s --prefix %s failed (%d):\n%s"
                                 % (build, cls.prefix, r.returncode, r.stdout[-3000:]))
        cls.install_log = r.stdout
        found = []
        for root, _d, files in os.walk(cls.prefix):
            if "agentbraked.service" in files:
                found.append(os.path.join(root, "agentbraked.service"))
        if len(found) != 1:
            raise AssertionError("want one installed agentbraked.service under %s, found %s; install log:\n%s"
                                 % (cls.prefix, found, r.stdout[-2000:]))
        cls.unit_path = found[0]

    def test_installed_unit_verifies(self):
        with open(self.unit_path) as f:
            text = f.read()
        keys = unit_keys(self.unit_path)
        for key in ("ExecStart", "ExecStartPre", "ExecStopPost"):
            for v in keys.get(key, []):
                prog = exec_argv(v)[0]
                self.assertTrue(prog.startswith(self.prefix + "/"),
                                "installed unit: %s=%s does not point into the install prefix %s" % (key, v, self.prefix))
                self.assertTrue(os.access(prog, os.X_OK), "installed unit: %s=%s is not an executable" % (key, v))
        self.assertNotIn("/usr/sbin/", text, "installed unit still names /usr/sbin")
        self.assertNotIn("/usr/libexec/", text, "installed unit still names /usr/libexec")
        r = subprocess.run(["systemd-analyze", "verify", self.unit_path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, "systemd-analyze verify %s failed:\n%s" % (self.unit_path, r.stdout))
        self.assertEqual(r.stdout.strip(), "", "systemd-analyze verify %s warned:\n%s" % (self.unit_path, r.stdout))

    def test_daemon_with_unit_command_line_and_capabilities(self):
        keys = unit_keys(self.unit_path)
        self.assertEqual(keys.get("Type"), ["notify"], "the unit is Type=notify")
        wd = (keys.get("WatchdogSec") or [None])[0]
        # systemd passes WATCHDOG_USEC = WatchdogSec; a shorter one here makes the test quick (the
        # daemon must ping at the period it is given, as sd_watchdog_enabled() reports it).
        watchdog_usec = 3_000_000 if wd else 0
        work = tempfile.mkdtemp(prefix="ab-e2e-notify-")
        self.addCleanup(shutil.rmtree, work, True)
        with NotifySocket(work) as ns, Cgroup("unitcap") as cg:
            d = UnitDaemon(abtest.policy_for(SIM, PRICES), self.unit_path, watchdog_usec)
            d.notify = ns
            with d:
                t_ready, pid, fields = d.ready_msg
                self.assertEqual(pid, d.pid(), "READY=1 must come from the main pid (NotifyAccess=main): sender "
                                 "pid %s, daemon pid %s" % (pid, d.pid()))
                st = d.status_at_ready
                self.assertEqual(st.returncode, 0, "status --json right after READY=1 failed (rc=%d): %s"
                                 % (st.returncode, st.stderr[-500:]))
                status = json.loads(st.stdout)
                n = status.get("probes_attached")
                self.assertGreater(n if isinstance(n, int) else len(n or []), 0,
                                   "READY=1 sent before probes were attached: status %s" % st.stdout[:500])
                # the test really ran it with the unit's set only (a check of the test's own setup)
                bnd, amb = d.caps()
                pc = proc_caps(d.pid())
                want = {CAP_NUMBERS[c] for c in bnd}
                self.assertEqual(pc["CapBnd"], want, "test setup: bounding set of the daemon")
                self.assertLessEqual(pc["CapEff"], want)
                if d.one("NoNewPrivileges") == "yes":
                    self.assertEqual(pc["NoNewPrivs"], "1", "test setup: no_new_privs")
                # with only these capabilities the probes work: calls are captured
                a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "unitcap", "-n", "2")
                abtest.wait_visible(d, cg.path, 2, max(c["t_end"] for c in a.calls()),
                                    what="calls under the unit's capability set")
                # watchdog: fed at least every WATCHDOG_USEC once READY
                if watchdog_usec:
                    period = watchdog_usec / 1e6
                    t_end = time.time() + 2.2 * period
                    while time.time() < t_end:
                        ns.poll(0.2)
                    pings = [t for t, p, f in ns.messages if f.get("WATCHDOG") == "1" and p == d.pid()]
                    self.assertTrue(pings, "no WATCHDOG=1 from the daemon within %.1fs of READY=1 although "
                                    "WATCHDOG_USEC=%d (the unit sets WatchdogSec=%s: systemd would kill it)"
                                    % (time.time() - t_ready, watchdog_usec, wd))
                    marks = [t_ready] + sorted(pings) + [time.time()]
                    gap = max(b - a for a, b in zip(marks, marks[1:]))
                    self.assertLess(gap, period, "watchdog pings more than WATCHDOG_USEC apart (max gap %.2fs)" % gap)
                # the unit's ExecReload (kill -HUP $MAINPID): reloads and keeps running
                reload_argv = [x.replace("$MAINPID", str(d.pid())).replace("${MAINPID}", str(d.pid()))
                               for x in exec_argv(d.one("ExecReload"))]
                loaded_before = len(d.events("policy_loaded"))
                self.assertEqual(subprocess.run(reload_argv, timeout=10).returncode, 0, reload_argv)
                d.wait_for(lambda: len(d.events("policy_loaded")) > loaded_before or not d.alive(), 10,
                           what="policy_loaded after the unit's ExecReload")
                self.assertTrue(d.alive(), "daemon died on the unit's ExecReload; log:\n" + d.log_tail(30))
                self.assertEqual(d.cli("status", "--json").returncode, 0)
                # stop as systemd does: SIGTERM (exit 0), then the unit's ExecStopPost with the same set
                rc = d.stop()
                self.assertEqual(rc, 0, "SIGTERM: exit status; log:\n" + d.log_tail(30))
                post = d.privileged(exec_argv(d.one("ExecStopPost")) + d.own_args())
                r = subprocess.run(post, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 0, "the unit's ExecStopPost (%s) exited %d:\n%s"
                                 % (" ".join(post), r.returncode, r.stdout[-2000:]))


class Alerts(unittest.TestCase):
    maxDiff = 4000

    def alert_policy(self, url, cgs, min_interval="5s"):
        budgets = "".join(budget_yaml("runaway-%d" % i, cg, ["{requests: 2, window: 1s}"], "alert")
                          for i, cg in enumerate(cgs))
        return abtest.policy_for(SIM, PRICES + "budgets:\n" + budgets +
                                 "alerts:\n  - name: hook\n    webhook: \"%s\"\n    on: [budget_exceeded]\n"
                                 "    min_interval: %s\n" % (url, min_interval))

    def touch_cli(self, d):
        """Everything an operator would look at (all of it checked for the secret)."""
        for args in (["events"], ["events", "--json"], ["status"], ["status", "--json"], ["agents", "--json"],
                     ["policy", "show"], ["usage", "--json"]):
            d.cli(*args, check=False)

    def test_webhook_one_alert_per_rule_and_entity_per_min_interval(self):
        secret = "ab-hook-" + uuid.uuid4().hex
        bursts = 7
        with WebhookReceiver() as rx, Cgroup("rwa") as ca, Cgroup("rwb") as cb:
            hook = rx.url("/hook/" + secret)
            with Daemon(self.alert_policy(hook, [ca, cb])) as d:
                agents = [start_bursts(ca, SIM, "rwa", bursts), start_bursts(cb, SIM, "rwb", bursts)]
                events, timeline, calls = abtest.observe_calls(d, [ca.path, cb.path], agents, bursts * 4 * 2)
                self.assertEqual(len(calls), bursts * 4 * 2)
                self.assertEqual(abtest.visibility_violations(timeline, calls), [],
                                 "calls of the runaways not visible within 2 s")
                # deliveries settle: every budget_exceeded alerted or suppressed, alert_sent recorded
                wait_alerts_settled(d, rx, "budget_exceeded")
                exceeded = d.events("budget_exceeded")
                sent = d.events("alert_sent")
                failed = d.events("alert_failed")
                hits = rx.received()
                self.touch_cli(d)
                rc = d.stop()
                self.assertEqual(rc, 0, "SIGTERM: exit status")
                leaks = d.secret_hits([secret])

            for cg in (ca, cb):
                mine = [e for e in exceeded if e.get("cgroup") == cg.path]
                self.assertGreaterEqual(len(mine), 2, "budget_exceeded events of %s (budget requests: 2 per 1s, "
                                        "%d bursts of 4 calls 1.3 s apart): %s" % (cg.path, bursts, mine))
            self.assertEqual(failed, [], "alert_failed although the receiver answered 200")
            self.assertTrue(hits, "the webhook receiver got no alert (budget_exceeded events: %d)" % len(exceeded))
            for h in hits:
                self.assertEqual(h["path"], "/hook/" + secret, "the webhook was called on the wrong path")
                self.assertIsInstance(h["body"], dict, "webhook body is not a JSON object: %r" % h["raw"][:300])
                self.assertIn("json", (h["content_type"] or "").lower(), "Content-Type of the webhook POST")
            # one alert per rule and entity per min_interval; the entity is each cgroup's bucket
            for cg in (ca, cb):
                mine = [h for h in hits if cg.path in json.dumps(h["body"])]
                other = ca if cg is cb else cb
                both = [h for h in mine if other.path in json.dumps(h["body"])]
                self.assertEqual(both, [], "an alert names both cgroups")
                ts = [parse_ts(e["ts"]) for e in exceeded if e.get("cgroup") == cg.path]
                want = greedy_alert_count(ts, MIN_INTERVAL_S)
                times = sorted(h["t"] for h in mine)
                sys.stderr.write("\n  %s: %d budget_exceeded over %.1fs, %d alerts (a limiter of one per %.0fs: %d) "
                                 % (cg.path, len(ts), max(ts) - min(ts) if ts else 0, len(mine), MIN_INTERVAL_S, want))
                close = sum(1 for a, b in zip(times, times[1:]) if b - a < MIN_INTERVAL_S - 0.5)
                self.assertTrue(want - 1 <= len(mine) <= want + 1,
                                "%s: %d alerts for %d budget_exceeded events over %.1fs; with min_interval %.0fs want "
                                "%d (±1)" % (cg.path, len(mine), len(ts), max(ts) - min(ts) if ts else 0,
                                             MIN_INTERVAL_S, want))
                self.assertLessEqual(close, 1, "%s: alerts less than min_interval apart: %s"
                                     % (cg.path, [round(t - times[0], 2) for t in times]))
            self.assertEqual(sum(1 for h in hits if ca.path in json.dumps(h["body"]) or cb.path in
                                 json.dumps(h["body"])), len(hits), "alerts that name neither cgroup")
            # the body: Slack-compatible text plus structured numbers
            for h in hits:
                b = h["body"]
                self.assertIsInstance(b.get("text"), str, "no \"text\" field: %s" % b)
                self.assertTrue(b["text"].strip(), b)
                self.assertTrue("runaway-" in b["text"] or "/agentbrake-test-" in b["text"],
                                "text names neither the budget nor the cgroup: %r" % b["text"])
                rest = {k: v for k, v in b.items() if k != "text"}
                self.assertIn(2, numbers_under(rest, "limit"), "structured numeric `limit` (2) missing: %s" % b)
                self.assertTrue(numbers_under(rest, "level"), "structured numeric `level` missing: %s" % b)
            # alert_sent events: one per delivery, the channel redacted to scheme://host:port
            self.assertEqual(len(sent), len(hits), "alert_sent events vs deliveries received")
            for e in sent:
                self.assertEqual(detail(e).get("channel"), "http://127.0.0.1:%d" % rx.port, e)
                self.assertEqual(detail(e).get("rule"), "hook", e)
            self.assertEqual(leaks, [], "the webhook URL's path (a secret) leaked")

    def test_webhook_down_alert_failed_and_no_stall(self):
        secret = "ab-hook-" + uuid.uuid4().hex
        bursts = 5
        with RefusingPort() as down, Cgroup("rwdown") as cg:
            hook = "http://127.0.0.1:%d/hook/%s" % (down.port, secret)
            with Daemon(self.alert_policy(hook, [cg])) as d:
                a = start_bursts(cg, SIM, "rwdown", bursts)
                events, timeline, calls = abtest.observe_calls(d, cg.path, [a], bursts * 4)
                self.assertEqual(len(calls), bursts * 4)
                self.assertEqual(abtest.visibility_violations(timeline, calls), [],
                                 "calls not visible within 2 s while the receiver is down (a stall)")
                slow = [round(c["t_end"] - c["t_start"], 2) for c in calls if c["t_end"] - c["t_start"] > 1.0]
                self.assertEqual(slow, [], "calls slowed down while alerts failed (an alert budget never holds)")
                t0 = time.monotonic()
                st = d.cli("status", "--json")
                self.assertLess(time.monotonic() - t0, 2.0, "status answered slowly while alerts failed")
                exceeded = d.events("budget_exceeded")
                self.assertTrue([e for e in exceeded if e.get("cgroup") == cg.path],
                                "no budget_exceeded for %s: %s" % (cg.path, exceeded))
                # retries end in alert_failed (a refused connection; give the retries time)
                failed = d.wait_for(lambda: d.events("alert_failed"), 10, what="alert_failed events",
                                    interval=0.5)
                self.assertTrue(d.alive(), "the daemon died")
                # still recording after the failures
                b = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "rwdown2", "-n", "1")
                abtest.wait_visible(d, cg.path, bursts * 4 + 1, b.calls()[0]["t_end"],
                                    what="a call after the alert failures")
                self.assertEqual(d.events("alert_sent"), [], "alert_sent although nothing listens")
                self.alert_failed_details(failed, down.port, secret)
                ts = [parse_ts(e["ts"]) for e in exceeded if e.get("cgroup") == cg.path]
                self.assertLessEqual(len(failed), greedy_alert_count(ts, MIN_INTERVAL_S) + 1,
                                     "more alerts attempted than min_interval allows: %s" % failed)
                self.touch_cli(d)
                self.assertIn("counters", json.loads(st.stdout))
                rc = d.stop()
                self.assertEqual(rc, 0, "SIGTERM: exit status")
                leaks = d.secret_hits([secret])
            self.assertEqual(leaks, [], "the webhook URL's path (a secret) leaked")

    def alert_failed_details(self, failed, port, secret):
        for e in failed:
            dt = detail(e)
            self.assertEqual(dt.get("rule"), "hook", e)
            self.assertEqual(dt.get("channel"), "http://127.0.0.1:%d" % port, e)
            self.assertIsInstance(dt.get("error"), str, e)
            self.assertTrue(dt["error"].strip(), "alert_failed without an error: %s" % e)
            self.assertNotIn(secret, json.dumps(e))


class Metrics(unittest.TestCase):
    maxDiff = 4000

    def test_metrics_promtool_and_per_cgroup_values(self):
        abtest.require_tools("promtool")
        port = free_port()
        url = "http://127.0.0.1:%d/metrics" % port
        policy = abtest.policy_for(SIM, PRICES + "metrics: {listen: \"127.0.0.1:%d\"}\n" % port)
        with Cgroup("met") as cg, Daemon(policy) as d:
            before = d.wait_for(lambda: (lambda r: r[2] if r[0] == 200 else None)(fetch(url)), 5,
                                what="/metrics before the traffic")
            a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "met", "-n", "3")
            abtest.wait_visible(d, cg.path, 3, max(c["t_end"] for c in a.calls()), what="the calls")
            SIM.wait_quiet("met")   # the simulator logs a call after answering it
            served = SIM.records("met")
            self.assertEqual(len(served), 3)
            want = {"calls": 3, "input": sum(s["input_tokens"] for s in served),
                    "output": sum(s["output_tokens"] for s in served)}
            want["cost"] = (want["input"] * PRICE_IN + want["output"] * PRICE_OUT) / 1e6
            row = [r for r in d.usage()["rows"] if r.get("key") == cg.path]
            self.assertEqual(len(row), 1, "usage --by cgroup lacks %s" % cg.path)

            last = {}

            def current():
                status, ctype, text = fetch(url)
                last.update(status=status, ctype=ctype, text=text)
                if status != 200:
                    return None
                got = self.cgroup_values(text, cg.path)
                last["got"] = got
                ok = (got.get("calls") == want["calls"] and got.get("input") == want["input"]
                      and got.get("output") == want["output"] and got.get("cost") is not None
                      and abs(got["cost"] - want["cost"]) <= 1e-9 + 1e-6 * want["cost"])
                return text if ok else None
            deadline = time.time() + 5
            text = None
            while time.time() < deadline and text is None:
                text = current()
                if text is None:
                    time.sleep(0.25)
            self.assertEqual(last.get("status"), 200, "GET %s: %s %s" % (url, last.get("status"),
                                                                         (last.get("text") or "")[:300]))
            self.assertIsNotNone(text, "per-cgroup metrics of %s after 3 calls: want %s, got %s\nsamples:\n%s"
                                 % (cg.path, want, last.get("got"), self.samples_of(last.get("text") or "", cg.path)))
            self.assertTrue((last.get("ctype") or "").startswith("text/plain"), "Content-Type %r" % last.get("ctype"))
            r = subprocess.run(["promtool", "check", "metrics"], input=text, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "promtool check metrics rejected /metrics:\n%s" % r.stdout[-3000:])
            # the shipped alerting rules use only metrics the daemon exports
            _samples, families = parse_prometheus(text)
            names = families | {s[0] for s in _samples}
            with open(os.path.join(abtest.SOURCE_DIR, "policies", "prometheus-rules.yaml")) as f:
                rules = "\n".join(ln for ln in f.read().splitlines() if not ln.lstrip().startswith("#"))
            used = set(re.findall(r"\bagentbrake_[a-zA-Z0-9_]+", rules))
            self.assertEqual(sorted(used - names), [], "prometheus-rules.yaml uses metrics /metrics does not export")
            # every hold is counted, by reason: the agent's first connect was a capture hold
            holds = [v for n, lab, v in _samples if n == "agentbrake_holds_total" and lab.get("cgroup") == cg.path
                     and lab.get("reason") == "capture"]
            self.assertTrue(holds and holds[0] >= 1, "agentbrake_holds_total{reason=\"capture\"} of %s: %s\n%s"
                            % (cg.path, holds, self.samples_of(text, cg.path)))
            self.check_shipped_rules_on(before, text, "127.0.0.1:%d" % port)

    def check_shipped_rules_on(self, before, after, instance):
        """`promtool test rules` runs the shipped rules over series made from two real scrapes
        (the traffic between them repeated every minute): no alert fires on normal traffic (a
        counter of normal work among the loss counters would fire AgentbrakeCaptureLoss); the
        same series with one loss counter growing by one a minute fire AgentbrakeCaptureLoss."""
        rules = os.path.join(abtest.SOURCE_DIR, "policies", "prometheus-rules.yaml")
        with open(rules) as f:
            alerts = re.findall(r"^\s*-\s*alert:\s*(\w+)", f.read(), re.M)
        self.assertIn("AgentbrakeCaptureLoss", alerts)
        losses = [lab.get("counter") for n, lab, _v in parse_prometheus(after)[0] if n == "agentbrake_losses_total"]
        self.assertIn("capture_gaps", losses, "the capture gap counter is exported")
        labels = {"instance": instance, "job": "agentbrake"}
        steps = 25
        normal = rules_test_series(before, after, labels, steps)
        lossy = rules_test_series(before, after, labels, steps, raise_loss="capture_gaps")
        growing = [x for x in normal if x["series"].startswith("agentbrake_losses_total")
                   and not re.search(r"\+0x\d+$", x["values"])]
        spec = {"rule_files": [rules], "evaluation_interval": "1m", "tests": [
            {"name": "normal traffic", "interval": "1m", "input_series": normal,
             "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": []}
                                 for a in alerts for t in ("5m", "16m", "24m")]},
            {"name": "a capture loss", "interval": "1m", "input_series": lossy,
             "alert_rule_test": [{"eval_time": "16m", "alertname": "AgentbrakeCaptureLoss", "exp_alerts": [
                 {"exp_labels": {"counter": "capture_gaps", "severity": "info", **labels},
                  "exp_annotations": {"summary": "agentbrake loss counter capture_gaps grew by 15 in 15 minutes on %s"
                                                 % instance}}]}]},
        ]}
        with tempfile.TemporaryDirectory(prefix="ab-e2e-promtool-") as tmp:
            path = os.path.join(tmp, "rules_test.yaml")   # JSON is YAML
            with open(path, "w") as f:
                json.dump(spec, f, indent=1)
            r = subprocess.run(["promtool", "test", "rules", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, "promtool test rules on series from the scrapes:\n%s\nloss series that grew "
                         "under normal traffic: %s" % (r.stdout[-4000:], json.dumps(growing)[:2000]))

    @staticmethod
    def samples_of(text, path):
        samples, _f = parse_prometheus(text)
        return "\n".join("%s %s %s" % s for s in samples if path in s[1].values())[:3000] or "(none for the cgroup)"

    @staticmethod
    def cgroup_values(text, path):
        """calls, input/output tokens and cost of the cgroup, by what each family's name says
        (the contract names no metric: any family labelled with the cgroup path counts)."""
        samples, _f = parse_prometheus(text)
        sums = {}
        for name, labels, value in samples:
            if path not in labels.values():
                continue
            low = name.lower()
            extra = " ".join(v.lower() for k, v in labels.items() if v != path)
            if "token" in low:
                kind = "input" if "input" in low or "input" in extra else "output" if "output" in low or \
                    "output" in extra else None
                if kind and "cache" not in low:
                    sums[kind] = sums.get(kind, 0) + value
            elif "cost" in low or "usd" in low or "spend" in low:
                sums["cost"] = sums.get("cost", 0) + value
            elif "call" in low and "inflight" not in low and "in_flight" not in low:
                sums["calls"] = sums.get("calls", 0) + value
        return sums

    def test_prometheus_rules_check(self):
        abtest.require_tools("promtool")
        path = os.path.join(abtest.SOURCE_DIR, "policies", "prometheus-rules.yaml")
        self.assertTrue(os.path.exists(path), path)
        r = subprocess.run(["promtool", "check", "rules", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "promtool check rules:\n" + r.stdout)
        self.assertIn("SUCCESS", r.stdout)


class Top(unittest.TestCase):
    def test_top_shows_pause_and_resume_within_2s(self):
        abtest.require_tools("tmux")
        with Cgroup("topag") as cg, Cgroup("topterm") as term, Daemon(abtest.policy_for(SIM, PRICES)) as d:
            a = abtest.start_agent(cg, "py_httpclient", SIM, "--tag", "top", "-n", "600", "--interval", "0.1")
            a.wait_line(lambda x: "status" in x, timeout=30)
            abtest.wait_visible(d, cg.path, 1, a.calls()[0]["t_end"], what="the runaway's first call")
            with abtest.Tmux("top", cgroup=term, width=220, height=40) as tm:
                tm.send(" ".join(shlex.quote(x) for x in cli_argv(d, "top")) + "; echo AB-RC=$?")

                def row(state):
                    def pred():
                        rows = [ln for ln in tm.screen().splitlines() if cg.path in ln]
                        hit = [r for r in rows if re.search(r"\b%s\b" % state, r)]
                        return (time.time(), hit) if hit else None
                    return pred

                def screen():
                    return "screen:\n" + tm.screen()
                abtest.wait_for(row("ok"), 10, interval=0.1, what="top to show %s as ok" % cg.path, on_fail=screen)
                d.cli("pause", cg.path)
                t_cmd = time.time()
                seen, rows = abtest.wait_for(row("held"), 10, interval=0.1, what="top to show %s held" % cg.path,
                                             on_fail=screen)
                self.assertLessEqual(seen - t_cmd, VISIBLE, "top showed the hold %.2fs after `agentbrake pause` "
                                     "(contract: 2 s)" % (seen - t_cmd))
                self.assertTrue(is_frozen_or_stopped(cg, a.pid), "the paused agent still runs")
                d.cli("resume", cg.path)
                t_cmd = time.time()

                def ok_again():
                    got = row("ok")()
                    if got and not row("held")():
                        return got
                    return None
                seen, rows = abtest.wait_for(ok_again, 10, interval=0.1, what="top to show %s ok again" % cg.path,
                                             on_fail=screen)
                self.assertLessEqual(seen - t_cmd, VISIBLE, "top showed the resume %.2fs after `agentbrake resume`"
                                     % (seen - t_cmd))
                tm.tmux("send-keys", "-t", tm.session, "q")
                scr = abtest.wait_for(lambda: (lambda s: s if re.search(r"AB-RC=\d+", s) else None)(tm.screen()),
                                      10, interval=0.2, what="top to quit on q", on_fail=screen)
                self.assertRegex(scr, r"AB-RC=0\b")


class Retention(unittest.TestCase):
    RETENTION_S = 4

    def test_retention_prunes_old_calls_and_events_keeps_recording(self):
        ret = self.RETENTION_S
        policy = abtest.policy_for(SIM, PRICES + "retention: %ds\n" % ret)
        with Cgroup("retold") as old, Cgroup("retnew") as new, Daemon(policy) as d:
            a = abtest.run_agent(old, "py_httpclient", SIM, "--tag", "retold", "-n", "3")
            first_start = min(c["t_start"] for c in a.calls())
            last_end = max(c["t_end"] for c in a.calls())
            abtest.wait_visible(d, old.path, 3, last_end, what="the old calls")
            # other kinds of events, old too: a manual pause and resume of the (finished) cgroup
            d.cli("pause", old.path, check=False)
            d.cli("resume", old.path, check=False)
            t_marks = time.time()
            # run until everything recorded so far (start-up events, old calls, pause/resume) is
            # older than retention + slack, so all of it must have been pruned by then
            t_until = max(d.ready_at, t_marks) + ret + PRUNE_SLACK_S + 1.0
            # kept for `retention`: looked at shortly before it runs out (a point in time the check
            # is about, not a hope); every call's ts is >= first_start, so only a look that ended
            # before first_start + ret and missed one proves it pruned early (a stalled look that
            # ended later proves nothing either way)
            time.sleep(max(0.0, first_start + ret - 1.5 - time.time()))
            kept = len(d.calls(old.path))
            t_looked = time.time()
            if t_looked < first_start + ret:
                self.assertEqual(kept, 3, "calls pruned before their retention (%ds) ran out" % ret)
            else:
                sys.stderr.write("\n  (the look before retention ran out ended %.2fs late: not conclusive) "
                                 % (t_looked - first_start - ret))
            # fresh calls stay visible within 2 s while old ones are pruned
            deadline = max(last_end + ret + PRUNE_SLACK_S, t_until)
            pruned_at = None
            fresh = 0
            while True:
                b = abtest.run_agent(new, "py_httpclient", SIM, "--tag", "retnew", "-n", "1")
                c = b.calls()[0]
                fresh += 1
                self.wait_pid_visible(d, new.path, c["pid"], c["t_end"])
                if pruned_at is None and not d.calls(old.path):
                    pruned_at = time.time()
                if pruned_at is not None and time.time() >= t_until:
                    break
                if time.time() > deadline:
                    break
                time.sleep(1.0)
            self.assertIsNotNone(pruned_at, "calls of %s still in the database %.1fs after they ended (retention "
                                 "%ds): %d calls, ts %s" % (old.path, time.time() - last_end, ret, len(d.calls(old.path)),
                                                     [e.get("ts") for e in d.calls(old.path)]))
            now = time.time()
            stale = [e for e in d.events(since="1h") if parse_ts(e["ts"]) < now - ret - PRUNE_SLACK_S]
            self.assertEqual([(e.get("ts"), e.get("kind")) for e in stale], [],
                             "events older than retention + %.0fs still in the database" % PRUNE_SLACK_S)
            rows = [r for r in d.usage(since="1h")["rows"] if r.get("key") == old.path]
            self.assertTrue(rows == [] or rows[0].get("calls") == 0, "usage still counts pruned calls: %s" % rows)
            # and recording goes on after pruning
            b = abtest.run_agent(new, "py_httpclient", SIM, "--tag", "retnew", "-n", "1")
            self.wait_pid_visible(d, new.path, b.calls()[0]["pid"], b.calls()[0]["t_end"])
            self.assertTrue(d.alive())

    def wait_pid_visible(self, d, path, pid, t_end):
        deadline = t_end + VISIBLE
        while True:
            t_q = time.time()
            if any(e.get("pid") == pid for e in d.calls(path, since="1h")):
                return
            if t_q > deadline:
                raise AssertionError("the call of pid %d (in %s) not visible %.2fs after it ended (contract: 2 s); "
                                     "log tail:\n%s" % (pid, path, t_q - t_end, d.log_tail(30)))
            time.sleep(0.1)


class Lifecycle(unittest.TestCase):
    maxDiff = 4000

    def test_sighup_reload_then_release_all_with_nothing_held(self):
        base = abtest.policy_for(SIM, PRICES)
        with Cgroup("hup") as cg, Daemon(base) as d:
            a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "hup", "-n", "1")
            abtest.wait_visible(d, cg.path, 1, a.calls()[0]["t_end"], what="a call before reload")
            pid = d.pid()
            # a valid policy: applied
            loaded_before = len(d.events("policy_loaded"))
            d.write_policy(base + "budgets:\n" + budget_yaml("reloaded-marker", cg, ["{requests: 1000, window: 1m}"],
                                                             "alert"))
            t_hup = time.time()
            d.signal(signal.SIGHUP)
            d.wait_for(lambda: len(d.events("policy_loaded")) > loaded_before, 5, what="policy_loaded after SIGHUP")
            self.assertTrue(d.alive(), "the daemon exited on SIGHUP")
            self.assertEqual(d.pid(), pid)
            self.assertIn("reloaded-marker", d.cli("policy", "show").stdout, "the reloaded policy is not in force")
            ev = d.events("policy_loaded")[-1]
            self.assertGreaterEqual(parse_ts(ev["ts"]), t_hup - 1)
            self.assertIn("source", detail(ev), ev)
            a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "hup", "-n", "1")
            abtest.wait_visible(d, cg.path, 2, a.calls()[0]["t_end"], what="a call after reload")
            # an invalid policy: rejected with file:line, the old one stays
            bad = base + "budgets:\n" + budget_yaml("reloaded-marker", cg, ["{requests: 1000, window: 1m}"], "alert")
            bad_line = bad.count("\n") + 1
            bad += "no_such_key_ab: 1\n"
            d.write_policy(bad)
            d.signal(signal.SIGHUP)
            rej = d.wait_for(lambda: d.events("policy_rejected"), 5, what="policy_rejected after SIGHUP of an "
                             "invalid policy")
            self.assertTrue(d.alive(), "the daemon exited on SIGHUP with an invalid policy")
            errors = json.dumps(detail(rej[-1]).get("errors"))
            self.assertIn("policy.yaml:%d" % bad_line, errors, "errors must name file:line: %s" % rej[-1])
            self.assertIn("reloaded-marker", d.cli("policy", "show").stdout, "the old policy is no longer in force")
            held = d.status().get("held")
            self.assertEqual(held if isinstance(held, int) else len(held or []), 0, "held after reloads")
            a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "hup", "-n", "1")
            abtest.wait_visible(d, cg.path, 3, a.calls()[0]["t_end"], what="a call after a rejected reload")
            d.write_policy(base)

            # --release-all after a clean stop: nothing held, exit 0
            rc = d.stop()
            self.assertEqual(rc, 0, "SIGTERM: exit status")
            r = self.release_all(d)
            self.assertEqual(r.returncode, 0, "--release-all with nothing held exited %d:\n%s" % (r.returncode,
                                                                                                  r.stdout[-2000:]))

    def test_reload_with_an_unresolvable_endpoint_name_does_not_block(self):
        """Endpoint names are resolved off the event loop (CI has no DNS). The daemon's look-ups
        are held pending (test hook AGENTBRAKE_TEST_RESOLVE_GATE: each waits until a file
        exists): `policy reload` of a policy naming an endpoint under .invalid returns, the new
        policy is in force, and while the look-up is still pending `status` answers (saying so)
        and a call is captured. Once the look-up may go it ends (a failure: .invalid) and the
        daemon carries on."""
        gate_dir = tempfile.mkdtemp(prefix="ab-e2e-resolve-gate-")
        gate = os.path.join(gate_dir, "open")
        endpoints = abtest.policy_for(SIM)
        named = endpoints + "  - {host: slow-endpoint.invalid, port: 443, api: openai, tls: true}\n" + PRICES
        try:
            with env_var("AGENTBRAKE_TEST_RESOLVE_GATE", gate), Cgroup("resolve") as cg, \
                    Daemon(endpoints + PRICES) as d:
                try:
                    loaded_before = len(d.events("policy_loaded"))
                    d.write_policy(named)
                    r = d.cli("policy", "reload", check=False, timeout=20)
                    self.assertEqual(r.returncode, 0, "`policy reload` while slow-endpoint.invalid is being resolved "
                                     "(124: no answer in 20 s, the look-up blocks the event loop): %s\n%s"
                                     % (r.stderr[-500:], d.log_tail(20)))
                    st = d.status()
                    self.assertEqual(st["policy"]["endpoints"], 3, "the reloaded policy is in force: %s" % st["policy"])
                    d.wait_for(lambda: len(d.events("policy_loaded")) > loaded_before, 5,
                               what="policy_loaded after the reload")
                    self.assertGreaterEqual(st.get("endpoints_resolving", 0), 1,
                                            "status while the look-up is held pending: %s" % st)
                    # the loop goes on with its work meanwhile
                    a = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "resolve", "-n", "1")
                    abtest.wait_visible(d, cg.path, 1, a.calls()[0]["t_end"], what="a call while a look-up is pending")
                    self.assertGreaterEqual(d.status().get("endpoints_resolving", 0), 1, "the look-up still pending")
                finally:
                    open(gate, "w").close()
                d.wait_for(lambda: d.status().get("endpoints_resolving") == 0, 60,
                           what="the look-up of slow-endpoint.invalid to end once allowed")
                self.assertTrue(d.alive())
                failed = [ln for ln in d.log_text().splitlines() if "slow-endpoint.invalid" in ln and "not resolved" in ln]
                self.assertTrue(failed, "the failed look-up is logged:\n" + d.log_tail(20))
                self.assertEqual(d.status()["policy"]["endpoints"], 3)
        finally:
            shutil.rmtree(gate_dir, ignore_errors=True)

    def crash(self, d):
        """SIGKILL the daemon we started (a crash: no release on the way out)."""
        p = d.proc
        d.proc = None
        p.kill()
        p.wait(timeout=10)

    def assert_released(self, d, cg, agent):
        r = self.release_all(d)
        self.assertEqual(r.returncode, 0, "--release-all exited %d:\n%s" % (r.returncode, r.stdout[-2000:]))
        self.assertIsNone(is_frozen_or_stopped(cg, agent.pid), "agent still held after --release-all")
        resumed = [e for e in d.events("resumed") if detail(e).get("reason") == "release_all"]
        return resumed

    def test_release_all_after_crash_with_manual_pause(self):
        """`agentbrake pause` froze an agent, the daemon is SIGKILLed: the unit's ExecStopPost
        (--release-all) must leave no agent stopped or frozen."""
        with Cgroup("hold") as hold, Daemon(abtest.policy_for(SIM, PRICES)) as d:
            h = abtest.start_agent(hold, "py_httpclient", SIM, "--tag", "hold", "-n", "600", "--interval", "0.1")
            h.wait_line(lambda x: "status" in x, timeout=30)
            d.cli("pause", hold.path)
            d.wait_for(lambda: is_frozen_or_stopped(hold, h.pid), 3, what="the paused agent to stop")
            self.crash(d)   # returns once the daemon is reaped
            abtest.assert_stays(lambda: is_frozen_or_stopped(hold, h.pid), CRASH_WINDOW_S,
                                "test setup: the pause did not outlive the daemon")
            n_before = len(h.calls())
            resumed = self.assert_released(d, hold, h)
            abtest.wait_for(lambda: len(h.calls()) > n_before + 2, 5, what="the released agent to make calls again")
            self.assertTrue(resumed, "no resumed event with reason release_all recorded")
            r = self.release_all(d)
            self.assertEqual(r.returncode, 0, "a second --release-all (nothing held) exited %d" % r.returncode)

    def test_release_all_after_crash_with_budget_hold(self):
        """A throttle budget holds an agent's second call, the daemon is SIGKILLed: after
        --release-all the agent is not held and finishes its calls."""
        with Cgroup("bhold") as cg:
            policy = abtest.policy_for(SIM, PRICES + "budgets:\n" +
                                       budget_yaml("hold-me", cg, ["{requests: 1, window: 60s}"], "throttle"))
            with Daemon(policy) as d:
                a = abtest.start_agent(cg, "py_httpclient", SIM, "--tag", "bhold", "-n", "3", "--interval", "0.1")

                def held():
                    rows = [r for r in d.agents() if r.get("cgroup") == cg.path and r.get("state") == "held"]
                    return rows or None
                d.wait_for(held, 5, what="the throttled agent to be held (agents --json state held)")
                self.assertEqual(len(a.calls()), 1, "calls the agent completed while held")
                d.wait_for(lambda: is_frozen_or_stopped(cg, a.pid), 3, what="the held agent to stop")
                self.crash(d)   # returns once the daemon is reaped
                abtest.assert_stays(lambda: is_frozen_or_stopped(cg, a.pid), CRASH_WINDOW_S,
                                    "test setup: the hold did not outlive the daemon")
                resumed = self.assert_released(d, cg, a)
                a.wait(timeout=15)   # finishes its calls: nothing holds it any more
                self.assertEqual(len(a.calls()), 3)
                self.assertTrue(resumed or not d.events("paused"), "a recorded hold was not resumed (release_all)")
                r = self.release_all(d)
                self.assertEqual(r.returncode, 0, "a second --release-all (nothing held) exited %d" % r.returncode)

    @staticmethod
    def release_all(d):
        argv = [d.daemon_bin, "--release-all", "--state-dir", d.dir, "--db", d.db, "--socket", d.socket,
                "--policy", d.policy_path]
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, 124, (e.stdout or b"").decode("utf-8", "replace")
                                               if isinstance(e.stdout, bytes) else (e.stdout or "") + " (timeout)")



# ---- projected spend (issue 6): an early warning before a spend limit is crossed --------------
PROJ_PRICE = 4.0            # USD per million tokens, input and output alike
PROJ_LIMIT_USD = 0.01
PROJ_WINDOW_S = 60
# fast agent: 200-char prompt (50 input tokens) + max_tokens 12 = 62 tokens = $0.000248 a call,
# a call every ~0.5 s: ~$0.0005/s, so $0.01 is crossed after ~20 s, well within the 60 s window.
FAST_CALLS, FAST_INTERVAL_S, FAST_ARGS = 50, 0.5, ("--prompt-chars", "200", "--max-tokens", "12")
# slow agent: 40-char prompt (10) + 8 = 18 tokens = $0.000072 a call every 2 s: ~$0.000036/s,
# ~$0.0022 in a whole window (even twice that stays far below $0.01): never projected to cross.
SLOW_CALLS, SLOW_INTERVAL_S, SLOW_ARGS = 11, 2.0, ("--prompt-chars", "40", "--max-tokens", "8")
PROJ_MIN_LEAD_S = 2.0       # assumption: the warning comes at least this long before the crossing


def served_cost(rec):
    return (int(rec["input_tokens"]) + int(rec["output_tokens"])) * PROJ_PRICE / 1e6


def brief(evs):
    return json.dumps([{k: e.get(k) for k in ("ts", "kind", "cgroup", "detail")} for e in evs])[:3000]


class SpendProjection(unittest.TestCase):
    """`spend_projected`: recorded when a bucket's current spend rate would cross one of its
    `spend_usd` limits before the window ends, before it is actually exceeded; once per
    episode; an alert rule `on: [spend_projected]` delivers it to a webhook. A steady agent
    on course to cross $0.01/60s in ~20 s gets it (before its budget_exceeded); a slow agent
    that would not cross within the window does not."""
    maxDiff = 4000

    def projection_policy(self, url, fast, slow):
        budgets = "".join(budget_yaml(name, cg, ["{spend_usd: %s, window: %ds}" % (PROJ_LIMIT_USD, PROJ_WINDOW_S)],
                                      "alert") for name, cg in (("proj-fast", fast), ("proj-slow", slow)))
        return abtest.policy_for(SIM, "cooldown: 1s\nprices:\n  e2e-gpt: {input: %s, output: %s}\n"
                                      "budgets:\n%s"
                                      "alerts:\n  - name: projected\n    webhook: \"%s\"\n"
                                      "    on: [spend_projected]\n    min_interval: 1s\n"
                                 % (PROJ_PRICE, PROJ_PRICE, budgets, url))

    def test_spend_projected_before_exceeded_and_alerted_slow_agent_quiet(self):
        secret = "ab-hook-" + uuid.uuid4().hex
        with WebhookReceiver() as rx, Cgroup("projfast") as cf, Cgroup("projslow") as cs:
            with Daemon(self.projection_policy(rx.url("/hook/" + secret), cf, cs)) as d:
                t_start = time.time()
                fast = abtest.start_agent(cf, "py_httpclient", SIM, "--tag", "projfast", "-n", str(FAST_CALLS),
                                          "--interval", str(FAST_INTERVAL_S), *FAST_ARGS, label="projfast")
                slow = abtest.start_agent(cs, "py_httpclient", SIM, "--tag", "projslow", "-n", str(SLOW_CALLS),
                                          "--interval", str(SLOW_INTERVAL_S), *SLOW_ARGS, label="projslow")
                fast.wait(timeout=90)
                slow.wait(timeout=90)
                t_agents = time.time()
                # the last calls visible, deliveries settled
                abtest.wait_visible(d, [cf.path, cs.path], FAST_CALLS + SLOW_CALLS, t_agents,
                                    what="the projection test's calls")
                wait_alerts_settled(d, rx, "spend_projected")
                projected = d.events("spend_projected")
                exceeded = d.events("budget_exceeded")
                sent = d.events("alert_sent")
                failed = d.events("alert_failed")
                calls = d.calls([cf.path, cs.path])
                hits = rx.received()
                rc = d.stop()
                self.assertEqual(rc, 0, "SIGTERM: exit status")
                leaks = d.secret_hits([secret])

            SIM.wait_quiet("projfast")
            SIM.wait_quiet("projslow")
            served_fast = sorted(SIM.records("projfast"), key=lambda r: r["ts_start"])
            served_slow = sorted(SIM.records("projslow"), key=lambda r: r["ts_start"])
            # ---- harness sanity: the fast agent really crossed $0.01 within 60 s, the slow one never came close
            self.assertEqual(len(served_fast), FAST_CALLS)
            self.assertEqual(len(served_slow), SLOW_CALLS)
            fast_cost = sum(served_cost(r) for r in served_fast)
            span = served_fast[-1]["ts_start"] - served_fast[0]["ts_start"]
            self.assertLess(span, PROJ_WINDOW_S, "harness: the fast agent took longer than one window")
            self.assertGreater(fast_cost, PROJ_LIMIT_USD * 1.1, "harness: the fast agent spent only $%.5f" % fast_cost)
            rate = sum(served_cost(r) for r in served_fast[1:]) / span
            slow_cost = sum(served_cost(r) for r in served_slow)
            self.assertLess(slow_cost, PROJ_LIMIT_USD / 3, "harness: the slow agent spent $%.5f" % slow_cost)
            cost_seen = [detail(e).get("cost_usd") for e in calls if e.get("cgroup") == cf.path]
            self.assertTrue(cost_seen and all(isinstance(c, (int, float)) and c > 0 for c in cost_seen),
                            "the fast agent's calls should cost something with the policy's prices: %s" % cost_seen[:5])
            t_cross = None
            acc = 0.0
            for r in served_fast:
                acc += served_cost(r)
                if acc > PROJ_LIMIT_USD:
                    t_cross = r["ts_start"]
                    break
            sys.stderr.write("\n  fast: $%.5f in %.1f s ($%.6f/s, crosses $%s at +%.1f s); slow: $%.5f "
                             % (fast_cost, span, rate, PROJ_LIMIT_USD, t_cross - served_fast[0]["ts_start"],
                                slow_cost))

            # ---- the fast bucket: budget_exceeded (existing behaviour), then spend_projected before it
            fast_exc = sorted((e for e in exceeded if detail(e).get("budget") == "proj-fast"), key=lambda e: e["ts"])
            self.assertTrue(fast_exc, "no budget_exceeded for proj-fast although it spent $%.5f of $%s in %.1f s: %s"
                            % (fast_cost, PROJ_LIMIT_USD, span, brief(exceeded)))
            mine = [e for e in projected if detail(e).get("budget") == "proj-fast"
                    or e.get("cgroup") == cf.path or abtest.names_bucket(detail(e).get("bucket"), cf.path)]
            self.assertTrue(mine, "no spend_projected for the fast agent (a steady $%.6f/s towards $%s per %ds, "
                            "crossing at +%.1f s); spend_projected events: %s; budget_exceeded: %s\ndaemon log:\n%s"
                            % (rate, PROJ_LIMIT_USD, PROJ_WINDOW_S, t_cross - served_fast[0]["ts_start"],
                               brief(projected), brief(fast_exc[:2]), d.log_tail(25)))
            self.assertEqual(len(mine), 1, "spend_projected is once per episode: %s" % brief(mine))
            ev = mine[0]
            t_proj, t_exc = parse_ts(ev["ts"]), parse_ts(fast_exc[0]["ts"])
            sys.stderr.write("spend_projected at +%.1f s, budget_exceeded at +%.1f s "
                             % (t_proj - served_fast[0]["ts_start"], t_exc - served_fast[0]["ts_start"]))
            self.assertLess(t_proj, t_exc, "spend_projected (%s) must come before the bucket's budget_exceeded (%s)"
                            % (ev["ts"], fast_exc[0]["ts"]))
            self.assertLess(t_proj, t_cross, "spend_projected (+%.2f s) must come before the spend actually passed "
                            "the limit (the request that crossed it reached the provider at +%.2f s)"
                            % (t_proj - t_start, t_cross - t_start))
            self.assertGreaterEqual(t_cross - t_proj, PROJ_MIN_LEAD_S,
                                    "an early warning: spend_projected came only %.2f s before the crossing"
                                    % (t_cross - t_proj))
            self.assertEqual(ev.get("cgroup"), cf.path, brief([ev]))
            dt = detail(ev)
            for k in ("budget", "bucket", "limit", "spent", "rate_usd_per_s", "window", "projected_crossing_s"):
                self.assertIn(k, dt, "spend_projected lacks detail.%s: %s" % (k, brief([ev])))
            self.assertEqual(dt["budget"], "proj-fast", brief([ev]))
            self.assertTrue(abtest.names_bucket(dt["bucket"], cf.path), "bucket should name %s: %s" % (cf.path, brief([ev])))
            for k in ("limit", "spent", "rate_usd_per_s", "projected_crossing_s"):
                self.assertIsInstance(dt[k], (int, float), "detail.%s is a number: %s" % (k, brief([ev])))
            self.assertAlmostEqual(float(dt["limit"]), PROJ_LIMIT_USD, places=9, msg=brief([ev]))
            self.assertEqual(abtest.duration_s(dt["window"]), float(PROJ_WINDOW_S), "window: " + brief([ev]))
            self.assertTrue(0 < dt["spent"] < PROJ_LIMIT_USD, "spent is below the limit (not yet exceeded): %s"
                            % brief([ev]))
            self.assertTrue(rate / 2.5 <= dt["rate_usd_per_s"] <= rate * 2.5,
                            "rate_usd_per_s %s vs the agent's actual $%.6f/s: %s" % (dt["rate_usd_per_s"], rate,
                                                                                     brief([ev])))
            self.assertTrue(0 < dt["projected_crossing_s"] <= PROJ_WINDOW_S,
                            "projected_crossing_s within the window: %s" % brief([ev]))
            at_cross = dt["spent"] + dt["rate_usd_per_s"] * dt["projected_crossing_s"]
            self.assertTrue(abs(at_cross - PROJ_LIMIT_USD) <= 0.25 * PROJ_LIMIT_USD,
                            "spent + rate × projected_crossing_s = $%.5f, should be about the limit $%s: %s"
                            % (at_cross, PROJ_LIMIT_USD, brief([ev])))
            # ---- the slow bucket: nothing
            slow_proj = [e for e in projected if e not in mine]
            self.assertEqual(slow_proj, [], "spend_projected for an agent that would not cross $%s within %ds "
                             "(it spends ~$%.6f/s): %s" % (PROJ_LIMIT_USD, PROJ_WINDOW_S, slow_cost / max(
                                 served_slow[-1]["ts_start"] - served_slow[0]["ts_start"], 1), brief(slow_proj)))
            self.assertEqual([e for e in exceeded if detail(e).get("budget") == "proj-slow"], [],
                             "budget_exceeded for the slow agent")
            # ---- the alert: one delivery (one event), to the webhook, nothing else
            self.assertEqual(failed, [], "alert_failed although the receiver answered 200: %s" % brief(failed))
            self.assertTrue(hits, "the webhook (on: [spend_projected]) got nothing; alert_sent: %s" % brief(sent))
            self.assertEqual(len(hits), len(mine), "one delivery per spend_projected event (budget_exceeded is not "
                             "in the rule's `on`): %s" % [h["raw"][:300] for h in hits])
            h = hits[0]
            self.assertEqual(h["path"], "/hook/" + secret, "the webhook was called on the wrong path")
            self.assertIsInstance(h["body"], dict, "webhook body is not a JSON object: %r" % h["raw"][:300])
            text = json.dumps(h["body"])
            self.assertTrue(cf.path in text or "proj-fast" in text,
                            "the alert names neither the budget nor the cgroup: %s" % text[:500])
            self.assertNotIn(cs.path, text, "the alert names the slow agent's cgroup")
            self.assertGreaterEqual(h["t"], t_proj - 1.0, "alert delivered before the event?")
            self.assertLess(h["t"], t_exc + 5.0, "the alert came late (after budget_exceeded + 5 s)")
            rules = [detail(e).get("rule") for e in sent]
            self.assertIn("projected", rules, "alert_sent names the rule: %s" % brief(sent))
            self.assertEqual(leaks, [], "the webhook URL's path (a secret) leaked")


if __name__ == "__main__":
    unittest.main()
