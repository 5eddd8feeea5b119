"""The stress run of the Harden issue: a real agentbraked under three loads, watched from outside.

While each load runs, a monitor asks the daemon for `status` over its control socket every
0.1 s (and through the CLI, `agentbrake status --json`, every 0.5 s), reads its RSS from
/proc/PID/status, and listens on a NOTIFY_SOCKET as systemd would (WATCHDOG_USEC = 3 s, ten
times tighter than the unit's WatchdogSec=30). Every load must leave:
  * every status answered, each within STATUS_LIMIT_S (1 s), over the socket and by the CLI;
  * no watchdog gap: WATCHDOG=1 never more than WATCHDOG_S apart (the watchdog never fires);
  * every drop counted: the daemon's own tallies plus its loss counters add up to what the
    load did (below, per load);
  * RSS bounded: RssAnon (the daemon's heap, what a leak or an unbounded table grows) below
    RSS_ANON_LIMIT_MB, VmRSS below RSS_LIMIT_MB (VmRSS also counts the pages of the 64 MiB
    kernel ring buffer the daemon has mapped, up to 2 x 64 MiB once a flood touched them all).

The loads (tests/e2e/clients/stress_load.c, compiled here):
  1. forks: 10,000 short-lived processes (forked by one C process, 32 alive at once, linked with
     libssl), each making one TCP connect to an endpoint of the policy and exiting. Every one
     is seen (a capture hold, an opaque verdict, or an attach) or counted lost; none stays held.
  2. conns: one process holding 1,000 TLS connections to the simulator, a call on each, then a
     second call on each: every call recorded (2,000), 1,000 streams open at once.
  3. flood: one watched process writing a request body in 64-byte SSL_writes as fast as it can
     for FLOOD_S seconds: every write is a ring record the daemon read or one it counts lost.
  4. the flood again (16 KiB writes) on a daemon slowed by the test fault record_cost_us (200 µs
     of CPU per ring record): the ring fills and stays full, drops happen and must all be
     counted (ring_buffer_lost), and the event loop must still answer (the ring drain is
     bounded per pass; unbounded, status went unanswered and the watchdog stopped).
The figures are printed (one JSON line per load, "STRESS {...}") for the bench notes
(tests/bench/RESULTS.md). Sizes can be lowered for a quick look: AB_STRESS_FORKS,
AB_STRESS_CONNS, AB_STRESS_FLOOD_S.
"""
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon  # noqa: E402

FORKS = int(os.environ.get("AB_STRESS_FORKS", "10000"))
CONNS = int(os.environ.get("AB_STRESS_CONNS", "1000"))
FLOOD_S = float(os.environ.get("AB_STRESS_FLOOD_S", "20"))
FLOOD_SIZE = int(os.environ.get("AB_STRESS_FLOOD_SIZE", "64"))
FLOOD_THREADS = int(os.environ.get("AB_STRESS_FLOOD_THREADS", "4"))
SLOW_FLOOD_S = float(os.environ.get("AB_STRESS_SLOW_FLOOD_S", "15"))
RECORD_COST_US = int(os.environ.get("AB_STRESS_RECORD_COST_US", "200"))
STATUS_LIMIT_S = 1.0
WATCHDOG_S = 3.0
RSS_ANON_LIMIT_MB = 150
RSS_LIMIT_MB = RSS_ANON_LIMIT_MB + 128

SOURCE = os.path.join(abtest.CLIENTS, "stress_load.c")


def proc_status(pid):
    """VmRSS, RssAnon, VmHWM of pid in MiB (a dict; empty when it is gone)."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "VmHWM"):
                    out[k] = int(v.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def socket_status(path, timeout=10.0):
    """One `status` request over a new connection to the control socket (what the CLI does)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b'{"cmd":"status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("the daemon closed the connection")
            buf += chunk
    finally:
        s.close()
    answer = json.loads(buf)
    if not answer.get("ok"):
        raise OSError("status answered %s" % answer)
    return answer["result"]


class Notify:
    """A NOTIFY_SOCKET (datagrams, as systemd's): the times of every WATCHDOG=1 received."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.pings = []
        self.ready = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                msg = self.sock.recv(4096).decode("utf-8", "replace")
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in msg.splitlines():
                if line == "WATCHDOG=1":
                    self.pings.append(now)
                elif line == "READY=1":
                    self.ready = True

    def max_gap(self, since, until):
        """The longest time without a WATCHDOG=1 in [since, until] (edges included)."""
        marks = [since] + [t for t in self.pings if since < t < until] + [until]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def close(self):
        self._stop = True
        self._t.join(timeout=5)
        self.sock.close()


class Monitor:
    """While a load runs: status over the socket every 0.1 s, through the CLI every 0.5 s, RSS."""

    def __init__(self, daemon, notify, name):
        self.d = daemon
        self.notify = notify
        self.name = name
        self.socket_lat = []
        self.cli_lat = []
        self.errors = []
        self.rss = []   # (VmRSS, RssAnon)
        self.last_status = None
        self._stop = threading.Event()

    def __enter__(self):
        self.t0 = time.monotonic()
        self.before = socket_status(self.d.socket)
        self._threads = [threading.Thread(target=self._socket_loop, daemon=True),
                         threading.Thread(target=self._cli_loop, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.t1 = time.monotonic()
        self.after = socket_status(self.d.socket)
        return False

    def _socket_loop(self):
        pid = self.d.pid()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.last_status = socket_status(self.d.socket)
            except (OSError, ValueError) as e:
                self.errors.append("socket status: %s" % e)
            self.socket_lat.append(time.monotonic() - t)
            st = proc_status(pid)
            if st:
                self.rss.append((st.get("VmRSS", 0), st.get("RssAnon", 0)))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))

    def _cli_loop(self):
        while not self._stop.is_set():
            t = time.monotonic()
            r = self.d._run_cli(["status", "--json"], timeout=10)
            self.cli_lat.append(time.monotonic() - t)
            if r.returncode != 0:
                self.errors.append("CLI status exited %d: %s" % (r.returncode, (r.stderr or "")[-200:]))
            else:
                try:
                    json.loads(r.stdout)
                except ValueError as e:
                    self.errors.append("CLI status not JSON: %s" % e)
            self._stop.wait(max(0.0, 0.5 - (time.monotonic() - t)))

    def delta(self, counter):
        return self.after["counters"].get(counter, 0) - self.before["counters"].get(counter, 0)

    @staticmethod
    def _p99(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else 0.0

    def figures(self, **extra):
        final = proc_status(self.d.pid())
        f = {"load": self.name, "seconds": round(self.t1 - self.t0, 1),
             "status_polls": len(self.socket_lat),
             "status_max_ms": round(1000 * max(self.socket_lat, default=0), 1),
             "status_p99_ms": round(1000 * self._p99(self.socket_lat), 1),
             "cli_polls": len(self.cli_lat),
             "cli_max_ms": round(1000 * max(self.cli_lat, default=0), 1),
             "cli_p99_ms": round(1000 * self._p99(self.cli_lat), 1),
             "watchdog_pings": len([t for t in self.notify.pings if self.t0 <= t <= self.t1]),
             "watchdog_max_gap_s": round(self.notify.max_gap(self.t0, self.t1), 2),
             "rss_max_mb": round(max((r[0] for r in self.rss), default=0), 1),
             "rss_anon_max_mb": round(max((r[1] for r in self.rss), default=0), 1),
             "rss_hwm_mb": round(final.get("VmHWM", 0), 1)}
        losses = {}
        for k in ("ring_buffer_lost", "holds_skipped_ring_full", "capture_gaps", "streams_evicted",
                  "unparsed_http_errors", "store_dropped_writes", "header_budget_drops",
                  "attach_failures", "attach_deadline_exceeded", "connects_recovered_from_map"):
            v = self.delta(k)
            if v:
                losses[k] = v
        f["losses"] = losses
        f.update(extra)
        return f

    def check(self, test, **extra):
        """Prints the figures, then asserts the bounds every load shares."""
        f = self.figures(**extra)
        print("\nSTRESS " + json.dumps(f, sort_keys=True), flush=True)
        test.assertTrue(self.d.alive(), "the daemon died under the %s load:\n%s" % (self.name, self.d.log_tail(40)))
        test.assertEqual(self.errors, [], "status failed under the %s load" % self.name)
        test.assertGreater(len(self.socket_lat), 5, "too few status polls: %s" % f)
        test.assertLess(max(self.socket_lat), STATUS_LIMIT_S, "a status answer took too long: %s" % f)
        test.assertLess(max(self.cli_lat), STATUS_LIMIT_S, "a CLI status took too long: %s" % f)
        test.assertLess(f["watchdog_max_gap_s"], WATCHDOG_S, "the watchdog would have fired: %s" % f)
        test.assertLess(f["rss_anon_max_mb"], RSS_ANON_LIMIT_MB, "the daemon's heap grew: %s" % f)
        test.assertLess(f["rss_max_mb"], RSS_LIMIT_MB, "the daemon's RSS grew: %s" % f)
        return f


class Acceptor:
    """A plain TCP listener on loopback that accepts and closes (load 1's endpoint)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            c.close()

    def close(self):
        self._stop = True
        self._t.join(timeout=5)
        self.sock.close()


class Tools:
    """What every class shares (set up once, by setUpModule): stress_load built, the
    simulator, the TLS sink, the plain acceptor."""
    bin = sim = sink_port = acceptor = tmp = None


def setUpModule():
    abtest.require_daemon()
    abtest.require_tools("cc", "openssl")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:   # the simulator and the conns load hold 1,000+ sockets each
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    stack = contextlib.ExitStack()
    unittest.addModuleCleanup(stack.close)
    Tools.tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ab-e2e-stress-"))
    Tools.bin = os.path.join(Tools.tmp, "stress_load")
    r = subprocess.run(["cc", "-O2", "-Wall", "-o", Tools.bin, SOURCE, "-lssl", "-lcrypto", "-lpthread"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    abtest.require_or_skip(r.returncode == 0, "cannot build stress_load (libssl-dev?): " + r.stdout[-1000:])
    Tools.sim = stack.enter_context(abtest.Simulator())
    tls_dir = os.path.join(Tools.sim.tmp, "tls")
    sink = subprocess.Popen([Tools.bin, "sink", "--cert", os.path.join(tls_dir, "cert.pem"),
                             "--key", os.path.join(tls_dir, "key.pem")],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: abtest._die_with_parent(signal.SIGKILL))
    stack.callback(lambda: (abtest._stop_process(sink), sink.stdout.close()))
    Tools.sink_port = json.loads(sink.stdout.readline())["port"]
    Tools.acceptor = Acceptor()
    stack.callback(Tools.acceptor.close)


class DaemonCase(unittest.TestCase):
    """One daemon per class, its systemd notifications watched (NOTIFY_SOCKET, WATCHDOG_USEC)."""
    maxDiff = 4000
    faults = None

    @classmethod
    def setUpClass(cls):
        cls.bin, cls.sim, cls.sink_port, cls.acceptor = Tools.bin, Tools.sim, Tools.sink_port, Tools.acceptor
        cls.stack = contextlib.ExitStack()
        try:
            cls.notify = Notify(tempfile.mkdtemp(prefix="notify-", dir=Tools.tmp))
            cls.stack.callback(cls.notify.close)
            policy = abtest.policy_for(cls.sim) + (
                "  - {host: 127.0.0.1, port: %d, api: openai, tls: true}\n"
                "  - {host: 127.0.0.1, port: %d, api: openai, tls: false}\n" % (cls.sink_port, cls.acceptor.port))
            cls.daemon = cls.stack.enter_context(
                Daemon(policy, faults=cls.faults,
                       env={"NOTIFY_SOCKET": cls.notify.path, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}))
            abtest.wait_for(lambda: cls.notify.ready and cls.notify.pings, 10,
                            what="READY=1 and a first WATCHDOG=1 on the notify socket")
        except BaseException:
            cls.stack.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()

    def flood(self, name, seconds, size, threads):
        """`threads` connections of one watched process write `size`-byte SSL_writes for
        `seconds`: every write is a record the daemon read or one the kernel counted lost."""
        d = self.daemon
        with Cgroup("stress-" + name.replace("_", "-")) as cg, Monitor(d, self.notify, name) as m:
            p = cg.run([self.bin, "flood", "--port", str(self.sink_port), "--seconds", str(seconds),
                        "--size", str(size), "--threads", str(threads)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            out, err = p.communicate(timeout=seconds + 120)
            self.assertEqual(p.returncode, 0, "flood failed: %s %s" % (out, err[-500:]))
            res = json.loads(out)

            def drained():   # the daemon has read what the ring still held
                a = socket_status(d.socket)["counters"]
                time.sleep(0.3)
                b = socket_status(d.socket)["counters"]
                return a.get("tls_records") == b.get("tls_records")
            d.wait_for(drained, 120, what="the ring drained after the flood")
        seen = m.delta("tls_records")
        lost = m.delta("ring_buffer_lost")
        f = m.check(self, writes=res["writes"], writes_per_s=round(res["writes"] / res["seconds"]),
                    write_size=size, threads=threads, mb_written=round(res["bytes"] / 1e6, 1),
                    tls_records=seen, records_per_s=round(seen / (m.t1 - m.t0)))
        # each write of <= 16 KiB is one record (plus SSL_NEW/SSL_FREE per connection)
        self.assertGreaterEqual(seen + lost, res["writes"], "writes neither read nor counted lost: %s" % f)
        self.assertLessEqual(seen, res["writes"] + 4 * threads, "more records than writes: %s" % f)
        return f

    def tearDown(self):
        # the watchdog is watched from the daemon's start to the end of every test, between loads too
        gap = self.notify.max_gap(self.notify.pings[0], time.monotonic())
        self.assertLess(gap, WATCHDOG_S, "WATCHDOG=1 stopped for %.2f s" % gap)


class Stress(DaemonCase):

    # ---- 1. a fork storm ----------------------------------------------------------------------
    def test_1_forks(self):
        d = self.daemon
        with Cgroup("stress-forks") as cg, Monitor(d, self.notify, "forks") as m:
            p = cg.run([self.bin, "forks", "--port", str(self.acceptor.port), "--count", str(FORKS),
                        "--parallel", "32", "--tls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL)
            out, err = p.communicate(timeout=400)
            self.assertEqual(p.returncode, 0, "forks failed: %s %s" % (out, err[-500:]))
            res = json.loads(out)
            self.assertEqual(res["exited_ok"], FORKS, res)
            # the daemon has read the ring up to now: every connect is seen or counted lost
            def settled():
                st = socket_status(d.socket)
                return st if st["held"] == 0 else None
            d.wait_for(settled, 30, what="no process held after the fork storm")
        c = lambda k: m.delta(k)
        seen = c("capture_holds") + c("opaque_exe_holds_skipped")
        f = m.check(self, processes=FORKS, fork_seconds=res["seconds"],
                    forks_per_s=round(FORKS / res["seconds"]), capture_holds=c("capture_holds"),
                    opaque_exe_holds_skipped=c("opaque_exe_holds_skipped"), attaches=c("attaches"),
                    processes_without_openssl=c("processes_without_openssl"),
                    holds_taken=c("holds_taken"), accepted=self.acceptor.accepted)
        self.assertGreaterEqual(seen + c("ring_buffer_lost"), FORKS, "connects neither seen nor counted lost: %s" % f)

    # ---- 2. 1,000 TLS connections in one process --------------------------------------------
    def test_2_conns(self):
        d = self.daemon
        with Cgroup("stress-conns") as cg, Monitor(d, self.notify, "conns") as m:
            p = cg.run([self.bin, "conns", "--port", str(self.sim.port), "--cafile", self.sim.cafile,
                        "--count", str(CONNS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.PIPE, text=True)
            try:
                ready = json.loads(p.stdout.readline() or "{}")
                self.assertEqual(ready.get("failed"), 0, "conns: %s %s" % (ready, p.stderr.read()[-500:] if p.poll() is not None else ""))
                d.wait_for(lambda: socket_status(d.socket)["open_streams"] >= CONNS, 20,
                           what="%d streams open" % CONNS)
                open_streams = socket_status(d.socket)["open_streams"]
                p.stdin.write("round\n")
                p.stdin.flush()
                rnd = json.loads(p.stdout.readline() or "{}")
                self.assertEqual(rnd.get("ok"), CONNS, rnd)
                d.wait_for(lambda: socket_status(d.socket)["counters"].get("calls", 0)
                           - m.before["counters"].get("calls", 0) >= 2 * CONNS, 30,
                           what="%d calls recorded" % (2 * CONNS))
            finally:
                if p.poll() is None:
                    p.stdin.close()
                    p.wait(timeout=60)
        f = m.check(self, connections=CONNS, connect_seconds=ready["seconds"], round_seconds=rnd["seconds"],
                    open_streams=open_streams, calls=m.delta("calls"))
        self.assertEqual(m.delta("calls"), 2 * CONNS, f)

    # ---- 3. a ring flood ----------------------------------------------------------------------
    def test_3_flood(self):
        self.flood("flood", FLOOD_S, FLOOD_SIZE, FLOOD_THREADS)


class SlowConsumer(DaemonCase):
    """The flood again, on a daemon that spends RECORD_COST_US of CPU on every ring record
    (test fault record_cost_us): the producer outruns it, the 64 MiB ring fills and stays
    full. Drops now happen, and each must be counted; the event loop must still answer."""
    faults = {"record_cost_us": RECORD_COST_US}

    def test_flood_outruns_the_daemon(self):
        f = self.flood("flood_slow_consumer", SLOW_FLOOD_S, 16384, FLOOD_THREADS)
        self.assertGreater(f["losses"].get("ring_buffer_lost", 0), 0,
                           "the ring never filled: the fault did not slow the daemon enough: %s" % f)

if __name__ == "__main__":
    unittest.main()
