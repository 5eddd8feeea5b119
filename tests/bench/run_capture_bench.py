#!/usr/bin/env python3
"""run_capture_bench.py — what watching TLS costs (issue 2). Python stdlib only; run as root.

Builds its helpers into a temporary directory (tests/bench/capture/: tls_load.c, the OpenSSL
workloads; empty_uprobe.bpf.c + probe_tool.cpp, an empty-uprobe baseline and a direct timer of
the loader's TlsAttacher), starts and stops agentbraked itself, and prints one table:

  1. unwatched process, daemon running vs not (A/B/A/B...): SSL_write/SSL_read pairs over an
     in-memory BIO pair and over loopback TCP to a TLS echo server
  2. watched process: cost per SSL call with 1, 10, 100 watched processes, beside empty
     uprobes (entry only, entry+return; uprobe_multi and classic) on the same functions
  3. attach and detach time per process (daemon log; loader API direct; empty probes)
  4. ring-buffer loss under a watched writer at its maximum rate
  5. daemon RSS idle and with 100 watched processes
  6. bench_protocol headline figures

Usage: run_capture_bench.py [--quick] [--build-dir DIR] [--json FILE] [--table-from FILE]
  --build-dir: a CMake build of this tree (agentbraked, agentbrake, libab_loader.a,
  tests/bench_protocol); default $AB_BUILD_DIR or /work/build-bench, built with cmake if the
  daemon is missing there. Everything started is stopped, and every temporary directory
  removed, on success, failure or ^C. Only loopback traffic.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
CAPTURE = os.path.join(HERE, "capture")

PROCS = []        # every Popen we started, stopped in cleanup()
TMPDIRS = []
PIN_DIRS = []     # bpffs directories our daemons and probe_tool runs pinned maps in


def remove_pin_dir(d):
    """Removes a bpffs pin directory of ours (only under /sys/fs/bpf/agentbrake*)."""
    if not d or not re.match(r"^/sys/fs/bpf/agentbrake(/s-[0-9a-f]+|-bench-\d+)$", d) or not os.path.isdir(d):
        return
    for n in os.listdir(d):
        try:
            os.unlink(os.path.join(d, n))
        except OSError:
            pass
    try:
        os.rmdir(d)
    except OSError:
        pass


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def _pdeathsig():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(argv, stdin=None, stdout=subprocess.PIPE, stderr=None, **kw):
    p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, text=True,
                         preexec_fn=_pdeathsig, **kw)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, grace=10.0):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        except ProcessLookupError:
            pass
    if p in PROCS:
        PROCS.remove(p)
    return p.returncode


def cleanup():
    for p in list(reversed(PROCS)):
        try:
            stop(p, grace=5)
        except Exception:
            pass
    for d in TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)
    for d in PIN_DIRS:
        remove_pin_dir(d)


def run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr[-2000:]))
    return r.stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def median(v):
    return statistics.median(v) if v else float("nan")


def med(results, key="cpu_ns_per_call"):
    """Median of one figure over tls_load results (default: CPU ns per SSL call)."""
    return median([r[key] for r in results])


def ssl_version():
    try:
        return run(["openssl", "version"]).strip()
    except Exception:
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- build ------------------------------------------------------------------------------------
def build_helpers(work, bdir):
    tools = {}
    tools["tls_load"] = os.path.join(work, "tls_load")
    run(["cc", "-O2", "-Wall", "-o", tools["tls_load"], os.path.join(CAPTURE, "tls_load.c"),
         "-lssl", "-lcrypto", "-lpthread"])
    tools["bpf_obj"] = os.path.join(work, "empty_uprobe.bpf.o")
    arch_inc = "/usr/include/%s-linux-gnu" % os.uname().machine
    run(["clang", "-O2", "-g", "-target", "bpf", "-I" + arch_inc, "-c",
         os.path.join(CAPTURE, "empty_uprobe.bpf.c"), "-o", tools["bpf_obj"]])
    tools["probe_tool"] = os.path.join(work, "probe_tool")
    run(["c++", "-std=c++20", "-O2", "-o", tools["probe_tool"], os.path.join(CAPTURE, "probe_tool.cpp"),
         "-I" + SOURCE, "-I" + os.path.join(SOURCE, "daemon"), "-I" + os.path.join(SOURCE, "bpf"),
         "-I" + os.path.join(bdir, "bpf"), os.path.join(bdir, "libab_loader.a"),
         os.path.join(bdir, "libab_util.a"), "-lbpf", "-lelf", "-lz", "-lspdlog", "-lfmt", "-lpthread"])
    tools["cert"], tools["key"] = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", tools["key"], "-out", tools["cert"], "-days", "2", "-subj", "/CN=localhost"])
    out = run(["ldd", tools["tls_load"]])
    m = re.search(r"libssl\.so\S*\s+=>\s+(\S+)", out)
    tools["libssl"] = os.path.realpath(m.group(1))
    return tools


def ensure_build(bdir):
    need = [os.path.join(bdir, n) for n in ("agentbraked", "agentbrake", "libab_loader.a", "libab_util.a")]
    if all(os.path.exists(p) for p in need):
        return
    log("building %s (agentbraked, agentbrake, bench_protocol)" % bdir)
    run(["cmake", "-S", SOURCE, "-B", bdir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run(["cmake", "--build", bdir, "-j%d" % max(2, os.cpu_count() or 2), "--target", "agentbraked",
         "agentbrake", "bench_protocol"])


# ---- daemon -----------------------------------------------------------------------------------
class Daemon:
    def __init__(self, bdir, endpoint_ports):
        self.bdir = bdir
        self.dir = tempfile.mkdtemp(prefix="ab-bench-daemon-")
        TMPDIRS.append(self.dir)
        self.socket = os.path.join(self.dir, "control.sock")
        self.log = os.path.join(self.dir, "daemon.log")
        pol = os.path.join(self.dir, "policy.yaml")
        with open(pol, "w") as f:
            f.write("endpoints:\n")
            for p in endpoint_ports:
                f.write("  - {host: 127.0.0.1, port: %d, api: openai, tls: true}\n" % p)
        os.chown(pol, 0, 0)
        os.chmod(pol, 0o644)
        t0 = time.monotonic()
        logf = open(self.log, "w")
        self.p = spawn([os.path.join(bdir, "agentbraked"), "--state-dir", self.dir, "--db",
                        os.path.join(self.dir, "ab.db"), "--socket", self.socket, "--policy", pol],
                       stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        while self.status() is None:
            if self.p.poll() is not None:
                raise RuntimeError("agentbraked exited %s:\n%s" % (self.p.returncode, self.log_text()[-3000:]))
            if time.monotonic() - t0 > 60:
                raise RuntimeError("agentbraked not ready after 60 s")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - t0
        # the daemon pins its holds map under bpffs per state dir and leaves it after exit
        # (by design: a crashed daemon's holds must survive); ours is removed in stop()
        self.pin_dir = self.status().get("pin_dir") or ""
        PIN_DIRS.append(self.pin_dir)

    def status(self):
        r = subprocess.run([os.path.join(self.bdir, "agentbrake"), "--socket", self.socket, "status", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def wait_watched(self, n, timeout=120):
        t0 = time.monotonic()
        while True:
            st = self.status()
            if st and st["watched_processes"] >= n:
                return st
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("daemon watches %s processes, want %d" % (st and st["watched_processes"], n))
            time.sleep(0.05)

    def wait_attached(self, pids, timeout=120):
        """Waits for the daemon's "probes attached to pid N" line of every pid."""
        want = set(int(x) for x in pids)
        t0 = time.monotonic()
        while True:
            got = set(int(m) for m in re.findall(r"probes attached to pid (\d+) ", self.log_text()))
            if want <= got:
                return
            if self.p.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError("daemon did not attach to %s" % sorted(want - got))
            time.sleep(0.05)

    def rss_kb(self):
        out = {}
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
        # BPF maps mapped into the daemon (the 64 MiB ring buffer, its data pages mapped twice):
        # kernel memory, shown as RssFile
        name, bpf = "", 0
        with open("/proc/%d/smaps" % self.p.pid) as f:
            for line in f:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                    name = parts[5] if len(parts) > 5 else ""
                elif parts[0] == "Rss:" and name.startswith("anon_inode:bpf"):
                    bpf += int(parts[1])
        out["bpf_maps"] = bpf
        return out

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        rc = stop(self.p, grace=180)
        shutil.rmtree(self.dir, ignore_errors=True)
        remove_pin_dir(self.pin_dir)
        return rc


# ---- workloads --------------------------------------------------------------------------------
def start_server(tools, port, kind):
    p = spawn([tools["tls_load"], "server", str(port), tools["cert"], tools["key"], kind])
    if p.stdout.readline().strip() != "LISTENING":
        raise RuntimeError("TLS %s server did not start" % kind)
    return p


def load_once(tools, args):
    """Runs tls_load to completion and returns its JSON result."""
    out = run([tools["tls_load"]] + args, timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def load_waiting(tools, args):
    """Starts tls_load --wait; returns (Popen, pid) once it is set up and waiting."""
    p = spawn([tools["tls_load"]] + args + ["--wait"], stdin=subprocess.PIPE)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError("tls_load %s did not get ready: %r" % (args, line))
    return p, int(line.split()[1])


def load_go(p):
    p.stdin.write("go\n")
    p.stdin.flush()
    res = json.loads(p.stdout.readline())
    p.wait(timeout=600)
    PROCS.remove(p)
    return res


def start_idle(tools, n, connect_port):
    procs = []
    for _ in range(n):
        args = [tools["tls_load"], "idle"] + (["--connect", str(connect_port)] if connect_port else [])
        p = spawn(args)
        procs.append(p)
    pids = []
    for p in procs:
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("idle process did not start")
        pids.append(int(line.split()[1]))
    return procs, pids


class EmptyProbes:
    """probe_tool empty: do-nothing uprobes on the SSL functions of libssl for one pid."""

    def __init__(self, tools, pid, kind, which):
        self.p = spawn([tools["probe_tool"], "empty", tools["bpf_obj"], str(pid), tools["libssl"], kind, which],
                       stdin=subprocess.PIPE)
        line = self.p.stdout.readline()
        if not line.startswith("{"):
            raise RuntimeError("probe_tool empty failed: %r" % line)
        self.attach_ms = json.loads(line)["attach_ms"]

    def close(self):
        self.p.stdin.write("done\n")
        self.p.stdin.flush()
        self.detach_ms = json.loads(self.p.stdout.readline())["detach_ms"]
        stop(self.p)
        return self.detach_ms


# ---- the benchmark ------------------------------------------------------------------------------
def memory_bench(tools, bdir, n, R, json_path):
    """Daemon RSS with n watched processes and the ring buffer's loss under a maximum-rate
    writer: the figures behind the ring-buffer size (--ring-buffer-mb)."""
    ep_echo, ep_sink = free_port(), free_port()
    servers = [start_server(tools, ep_echo, "echo"), start_server(tools, ep_sink, "sink")]
    d = Daemon(bdir, [ep_echo, ep_sink])
    idle = []
    try:
        R["rss_idle_kb"] = d.rss_kb()
        t0 = time.monotonic()
        for k in range(0, n, 100):
            more, pids = start_idle(tools, min(100, n - k), ep_echo)
            idle += more
            d.wait_attached(pids, timeout=600)
            log("memory: %d watched (%.0f s)" % (len(idle), time.monotonic() - t0))
        st = d.status()
        R["watched_processes"] = st.get("watched_processes")
        R["rss_n_kb"] = d.rss_kb()
        rb = {}
        for size in (65536, 1 << 20):
            c0 = d.status()["counters"]
            p, pid = load_waiting(tools, ["writer", "--port", str(ep_sink), "--size", str(size), "--seconds", "3"])
            d.wait_attached([pid])
            res = load_go(p)
            deadline = time.monotonic() + 30   # the daemon has drained the ring when tls_records stops moving
            last = -1
            while time.monotonic() < deadline:
                cur = d.status()["counters"].get("tls_records", 0)
                if cur == last:
                    break
                last = cur
                time.sleep(0.5)
            c1 = d.status()["counters"]
            rb[size] = {"mb_per_s": res["bytes_per_s"] / 1e6,
                        "ring_buffer_lost": c1.get("ring_buffer_lost", 0) - c0.get("ring_buffer_lost", 0),
                        "tls_records": c1.get("tls_records", 0) - c0.get("tls_records", 0)}
        R["ringbuf"] = rb
        R["rss_after_writer_kb"] = d.rss_kb()
        # the watched processes exit first (their links are closed as they go), then the daemon
        t0 = time.monotonic()
        for p in idle:
            stop(p, sig=signal.SIGKILL)
        idle = []
        R["watched_exit_s"] = time.monotonic() - t0
        deadline = time.monotonic() + 600
        while (d.status() or {}).get("watched_processes", 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        R["unwatched_after_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        d.p.send_signal(signal.SIGTERM)
        d.p.wait(timeout=600)
        R["daemon_stop_s"] = time.monotonic() - t0
    finally:
        for p in idle:
            stop(p, sig=signal.SIGKILL)
        d.stop()
        for s in servers:
            stop(s)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(R, f, indent=1)
    print("| moment | VmRSS kB | RssAnon | RssFile |")
    print("|---|---|---|---|")
    for k, label in (("rss_idle_kb", "idle"), ("rss_n_kb", "%d watched (status: %s)" % (n, R["watched_processes"])),
                     ("rss_after_writer_kb", "after the maximum-rate writers")):
        v = R[k]
        print("| %s | %s | %s | %s |" % (label, v.get("VmRSS"), v.get("RssAnon"), v.get("RssFile")))
    print()
    print("%d watched processes SIGKILLed in %.1f s; the daemon watched none %.1f s after; then SIGTERM to exit: %.1f s"
          % (n, R["watched_exit_s"], R["unwatched_after_s"], R["daemon_stop_s"]))
    print()
    print("| writer record size | MB/s written | tls_records | ring_buffer_lost |")
    print("|---|---|---|---|")
    for size, v in sorted(R["ringbuf"].items()):
        print("| %d | %.0f | %d | %d |" % (size, v["mb_per_s"], v["tls_records"], v["ring_buffer_lost"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples (< 2 min)")
    ap.add_argument("--build-dir", default=os.environ.get("AB_BUILD_DIR") or "/work/build-bench")
    ap.add_argument("--json", help="also write every raw figure to this file")
    ap.add_argument("--table-from", metavar="JSON", help="only print the table of an earlier --json file")
    ap.add_argument("--memory", type=int, metavar="N",
                    help="only the memory figures: daemon RSS idle, with N watched processes, and after "
                         "a watched writer at its maximum rate (ring-buffer loss); prints its own table")
    a = ap.parse_args()
    if a.table_from:
        with open(a.table_from) as f:
            print_table(json.load(f))
        return
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon and the probes load BPF programs)")
    q = a.quick
    cfg = {
        "ab_rounds": 2 if q else 6,          # A/B alternations for figure 1
        "ab_seconds": 0.4 if q else 0.5,     # per sample
        "ab_samples": 2 if q else 4,         # samples of each workload per A or B phase
        "watched_iters": 300 if q else 1500, # BIO round trips (4 SSL calls each) per watched sample
        "watched_reps": 1 if q else 3,
        "ns": [1, 10, 100],
        "attach_procs": 10 if q else 30,
        "exit_detach": 10 if q else 30,      # watched processes that exit before the daemon stops
        "writer_seconds": 1.5 if q else 3.0,
        "writer_sizes": [65536, 1 << 20],
    }
    R = {"config": cfg, "quick": q, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        R["git"] = run(["git", "-C", SOURCE, "rev-parse", "--short", "HEAD"]).strip()
    except Exception:
        R["git"] = "?"
    R["openssl"] = ssl_version()
    R["cpu"] = cpu_model()
    t_start = time.monotonic()
    bdir = os.path.abspath(a.build_dir)
    R["build_dir"] = bdir
    ensure_build(bdir)
    work = tempfile.mkdtemp(prefix="ab-bench-")
    TMPDIRS.append(work)
    log("building helpers in %s" % work)
    tools = build_helpers(work, bdir)

    if a.memory:
        memory_bench(tools, bdir, a.memory, R, a.json)
        return

    plain_port, plain_sink, ep_echo, ep_sink = free_port(), free_port(), free_port(), free_port()
    servers = [start_server(tools, plain_port, "echo"), start_server(tools, plain_sink, "sink"),
               start_server(tools, ep_echo, "echo"), start_server(tools, ep_sink, "sink")]
    endpoints = [ep_echo, ep_sink]
    bio = ["bio", "--cert", tools["cert"], "--key", tools["key"]]

    # ---- 1. unwatched process, no daemon (A) vs daemon (B), alternating ----
    log("1. unwatched cost, %d A/B rounds" % cfg["ab_rounds"])
    u = {"A": {"bio": [], "tcp": []}, "B": {"bio": [], "tcp": []}, "daemon_ready_s": []}
    # order A B B A A B B A ...: a drift in the machine's load hits both sides alike
    order = []
    for rnd in range(cfg["ab_rounds"]):
        order += ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
    u["order"] = order
    for side in order:
        time.sleep(0.5)   # settle: the previous daemon's teardown, the previous run's exit
        d = Daemon(bdir, endpoints) if side == "B" else None
        other = []
        if d:
            u["daemon_ready_s"].append(d.ready_s)
            # one OTHER process watched meanwhile: libssl carries live pid-filtered probes
            other, opids = start_idle(tools, 1, ep_echo)
            d.wait_attached(opids)
            time.sleep(0.5)
        try:
            for _ in range(cfg["ab_samples"]):
                u[side]["bio"].append(load_once(tools, bio + ["--seconds", str(cfg["ab_seconds"])]))
                u[side]["tcp"].append(load_once(tools, ["tcp", "--port", str(plain_port), "--seconds",
                                                        str(cfg["ab_seconds"])]))
            if d:
                st = d.status()
                if st["watched_processes"] != 1:
                    raise RuntimeError("the measured process got watched: %s" % st)
        finally:
            for p in other:
                stop(p)
            if d:
                d.stop()
    R["unwatched"] = u

    # ---- 2a. baselines without the daemon: no probe, empty probes (multi/classic, entry/entry+ret)
    log("2a. baselines: empty uprobes")
    it = str(cfg["watched_iters"])
    base = {}
    for kind in ("none", "multi", "classic"):
        for which in (("entry", "entryret") if kind != "none" else ("-",)):
            key = kind if kind == "none" else "%s_%s" % (kind, which)
            base[key] = {"bio": [], "tcp": [], "attach_ms": [], "detach_ms": []}
            for _ in range(cfg["watched_reps"]):
                for mode, args in (("bio", bio), ("tcp", ["tcp", "--port", str(plain_port)])):
                    p, pid = load_waiting(tools, args + ["--iters", it if mode == "bio" else str(2 * int(it))])
                    ep = EmptyProbes(tools, pid, kind, which) if kind != "none" else None
                    res = load_go(p)
                    base[key][mode].append(res)
                    if ep:
                        base[key]["attach_ms"].append(ep.attach_ms)
                        base[key]["detach_ms"].append(ep.close())
    # kernel-side scaling: an empty uprobe_multi entry+return with 99 other pids probed too
    idle, idle_pids = start_idle(tools, 99, None)
    others = [EmptyProbes(tools, pid, "multi", "entryret") for pid in idle_pids]
    base["multi_entryret_100pids"] = {"bio": [], "tcp": []}
    for _ in range(cfg["watched_reps"]):
        p, pid = load_waiting(tools, bio + ["--iters", it])
        ep = EmptyProbes(tools, pid, "multi", "entryret")
        base["multi_entryret_100pids"]["bio"].append(load_go(p))
        ep.close()
    t0 = time.monotonic()
    for o in others:
        o.close()
    base["multi_entryret_detach_99_s"] = time.monotonic() - t0
    for p in idle:
        stop(p)
    R["baseline"] = base

    # ---- 3a. attach/detach through the loader API (no daemon running)
    log("3a. TlsAttacher attach/detach of %d processes" % cfg["attach_procs"])
    idle, idle_pids = start_idle(tools, cfg["attach_procs"], None)
    pt = spawn([tools["probe_tool"], "attach", ",".join(map(str, idle_pids))])
    PIN_DIRS.append("/sys/fs/bpf/agentbrake-bench-%d" % pt.pid)   # removed by probe_tool itself unless killed
    out, _ = pt.communicate(timeout=600)
    PROCS.remove(pt)
    if pt.returncode != 0:
        raise RuntimeError("probe_tool attach failed (%d)" % pt.returncode)
    R["loader_attach"] = json.loads(out.strip().splitlines()[-1])
    for p in idle:
        stop(p)

    # ---- 2b/3b/4/5 with the daemon
    d = Daemon(bdir, endpoints)
    try:
        time.sleep(1.0)
        R["rss_idle_kb"] = d.rss_kb()
        fds_idle = fd_count(d.p.pid)
        R["daemon_ready_s"] = d.ready_s
        watched = {}
        idle = []
        calls_made = 0
        for n in cfg["ns"]:
            need = n - 1 - len(idle)
            if need > 0:
                log("2b. starting %d idle watched processes (total %d)" % (need, n - 1))
                more, pids = start_idle(tools, need, ep_echo)
                idle += more
                d.wait_attached(pids)
            w = {"bio": [], "tcp": []}
            for _ in range(cfg["watched_reps"]):
                for mode, args in (("bio", bio + ["--connect", str(ep_echo), "--iters", it]),
                                   ("tcp", ["tcp", "--port", str(ep_echo), "--iters", str(2 * int(it))])):
                    p, pid = load_waiting(tools, args)
                    d.wait_attached([pid])
                    res = load_go(p)
                    calls_made += res["ssl_calls"]
                    w[mode].append(res)
            watched[n] = w
            log("   N=%d: bio %.1f us/call, tcp %.1f us/call (CPU time)" % (n, med(w["bio"]) / 1e3, med(w["tcp"]) / 1e3))
        R["watched"] = watched
        st = d.status()
        R["status_at_100"] = {k: st[k] for k in ("watched_processes", "tls_probes", "uprobe_multi")}
        R["rss_100_kb"] = d.rss_kb()
        R["calls_at_100"] = calls_made

        # ---- 4. ring-buffer loss: a watched writer at its maximum rate
        rb = {}
        for size in cfg["writer_sizes"]:
            # the same writer unwatched (to a port outside the policy), for comparison
            plain = load_once(tools, ["writer", "--port", str(plain_sink), "--size", str(size),
                                      "--seconds", str(cfg["writer_seconds"])])
            c0 = d.status()["counters"]
            cpu0 = cpu_seconds(d.p.pid)
            p, pid = load_waiting(tools, ["writer", "--port", str(ep_sink), "--size", str(size),
                                          "--seconds", str(cfg["writer_seconds"])])
            d.wait_attached([pid])
            res = load_go(p)
            time.sleep(1.0)  # let the daemon drain the ring
            c1 = d.status()["counters"]
            daemon_cpu = cpu_seconds(d.p.pid) - cpu0
            delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if isinstance(c1.get(k), (int, float))}
            calls = res["rounds"]
            cap = 256 * 1024
            kept_per_call = min(size, cap)
            chunks_per_call = (kept_per_call + 16383) // 16384 + (1 if size > cap else 0)   # + the gap record
            expected_records = calls * chunks_per_call
            rb[size] = {"writer": res, "delta": delta, "expected_records": expected_records,
                        "records_missing": max(0, expected_records - delta.get("tls_records", 0)),
                        "bytes_written": calls * size,
                        "bytes_after_cap": calls * kept_per_call, "daemon_cpu_s": daemon_cpu,
                        "unwatched": plain}
            log("4. writer %d B: %.1f MB/s written, ring_buffer_lost +%d, tls_records +%d of %d expected"
                % (size, res["bytes_per_s"] / 1e6, delta.get("ring_buffer_lost", 0), delta.get("tls_records", 0),
                   expected_records))
        R["ringbuf"] = rb
        R["rss_after_writer_kb"] = d.rss_kb()

        # ---- 3b. attach times from the daemon log; detach time of the idle watched processes
        ms = [float(m) for m in re.findall(r"probes attached to pid \d+ .*? in ([0-9.]+) ms", d.log_text())]
        R["daemon_attach_ms"] = ms
        # The links are file descriptors of the daemon: a detach is over when the daemon's fd
        # count is back down (status tls_probes drops as soon as the links are queued for the
        # detach thread, not when they are closed). First some watched processes exit; then
        # the daemon is stopped with the others still watched (it detaches them all on the way out).
        fds_before = fd_count(d.p.pid)
        before = d.status()["tls_probes"]
        k = cfg["exit_detach"]
        victims, idle = idle[:k], idle[k:]
        t0 = time.monotonic()
        for p in victims:
            stop(p, sig=signal.SIGKILL)
        t_status = None
        target = fds_before - before * len(victims) // max(1, len(victims) + len(idle))
        while time.monotonic() - t0 < 180:
            if t_status is None and d.status()["tls_probes"] <= before - before * len(victims) // (len(victims) + len(idle)):
                t_status = time.monotonic() - t0
            if t_status is not None and fd_count(d.p.pid) <= target:
                break
            time.sleep(0.05)
        R["daemon_detach"] = {"processes": len(victims), "links": before, "seconds": time.monotonic() - t0,
                              "status_zero_s": t_status, "fds_left": fd_count(d.p.pid) - target}
        R["rss_end_kb"] = d.rss_kb()
        n_left = len(idle)
        t0 = time.monotonic()
        R["daemon_rc"] = d.stop()
        R["daemon_stop"] = {"watched": n_left, "seconds": time.monotonic() - t0}
        for p in idle:
            stop(p)
    finally:
        if d.p.poll() is None:
            d.stop()
    for s in servers:
        stop(s)

    # ---- 6. bench_protocol
    bp = os.path.join(bdir, "tests", "bench_protocol")
    if not os.path.exists(bp):
        bp = os.path.join(SOURCE, "build", "tests", "bench_protocol")
    if os.path.exists(bp):
        log("6. bench_protocol")
        out = run([bp, "--benchmark_format=json", "--benchmark_min_time=%s" % ("0.1" if q else "0.5")], timeout=300)
        R["bench_protocol"] = [{"name": b["name"], "real_time": b["real_time"], "time_unit": b["time_unit"],
                                "bytes_per_second": b.get("bytes_per_second"),
                                "items_per_second": b.get("items_per_second")}
                               for b in json.loads(out)["benchmarks"]]
    R["runtime_s"] = time.monotonic() - t_start
    if a.json:
        with open(a.json, "w") as f:
            json.dump(R, f, indent=1, default=str)
    print_table(R)


def print_table(R):
    R["watched"] = {int(k): v for k, v in R["watched"].items()}   # JSON keys are strings
    out = []
    w = out.append
    load = os.getloadavg()
    w("## agentbrake capture benchmark — %s (kernel %s, %d CPUs, load %.1f at the end, %.0f s%s)"
      % (R["date"], os.uname().release, os.cpu_count(), load[0], R["runtime_s"],
         ", --quick" if R.get("quick") else ""))
    w("Tree %s, %s, %s; build %s." % (R.get("git", "?"), R.get("openssl", "?"), R.get("cpu", "?"), R.get("build_dir", "?")))
    w("Figures are medians. \"CPU\" = CPU time of the measuring process per SSL call (user+system; a")
    w("uprobe hit is system time of the probed task), \"wall\" = elapsed time per SSL call.")
    w("")
    u = R["unwatched"]
    notes = []
    w("### 1. Unwatched process: daemon running with one other process watched (B) vs no daemon (A), %d rounds (%s)"
      % (R["config"]["ab_rounds"], "".join(u.get("order", []))))
    w("| workload (64 B writes) | A CPU ns/call | B CPU ns/call | **ratio B/A (CPU, medians)** | ratio B/A (CPU, minimums) | A wall ns | B wall ns | ratio B/A (wall) |")
    w("|---|---|---|---|---|---|---|---|")
    for m, label in (("bio", "SSL_write/SSL_read over a BIO pair"), ("tcp", "SSL_write/SSL_read over loopback TCP")):
        ac, bc = med(u["A"][m]), med(u["B"][m])
        aw, bw = med(u["A"][m], "ns_per_call"), med(u["B"][m], "ns_per_call")
        amin = min(r["cpu_ns_per_call"] for r in u["A"][m])
        bmin = min(r["cpu_ns_per_call"] for r in u["B"][m])
        w("| %s | %.0f | %.0f | **%.3f** | %.3f | %.0f | %.0f | %.3f |" % (label, ac, bc, bc / ac, bmin / amin, aw, bw, bw / aw))
    for m in ("bio", "tcp"):
        a_s = sorted(r["cpu_ns_per_call"] for r in u["A"][m])
        b_s = sorted(r["cpu_ns_per_call"] for r in u["B"][m])
        q = lambda v, f: v[min(len(v) - 1, int(f * len(v)))]
        notes.append("- %s CPU ns/call, A: %s; B: %s (interquartile B/A %.3f-%.3f)" % (
            m, " ".join("%.0f" % x for x in a_s), " ".join("%.0f" % x for x in b_s),
            q(b_s, 0.25) / q(a_s, 0.75), q(b_s, 0.75) / q(a_s, 0.25)))
    out.extend(notes)
    w("")
    base = R["baseline"]
    nb, nt = med(base["none"]["bio"]), med(base["none"]["tcp"])
    w("### 2. Watched process: µs per SSL call (CPU), and the cost over the unprobed call")
    w("| configuration | BIO µs/call | BIO +µs/call | TCP µs/call | TCP +µs/call | BIO wall µs/call |")
    w("|---|---|---|---|---|---|")
    rows = [("no probe (baseline)", base["none"])]
    for k, label in (("multi_entry", "empty uprobe_multi, entry only"),
                     ("multi_entryret", "empty uprobe_multi, entry+return"),
                     ("classic_entry", "empty classic uprobe, entry only"),
                     ("classic_entryret", "empty classic uprobe, entry+return"),
                     ("multi_entryret_100pids", "empty uprobe_multi entry+return, 99 other pids probed")):
        rows.append((label, base[k]))
    for n in sorted(R["watched"], key=int):
        rows.append(("agentbraked, %s watched process%s" % (n, "" if int(n) == 1 else "es"), R["watched"][n]))
    for label, v in rows:
        b = med(v["bio"])
        t = med(v["tcp"]) if v.get("tcp") else None
        first = label.startswith("no probe")
        w("| %s | %.2f | %s | %s | %s | %.2f |" % (
            label, b / 1e3, "—" if first else "%.2f" % ((b - nb) / 1e3),
            "%.2f" % (t / 1e3) if t else "—", "%.2f" % ((t - nt) / 1e3) if t and not first else "—",
            med(v["bio"], "ns_per_call") / 1e3))
    w1 = med(R["watched"][1]["bio"]) - nb
    e = med(base["multi_entryret"]["bio"]) - nb
    w("")
    w("- agentbraked at 1 watched process / empty uprobe_multi entry+return: %.2f× (BIO)" % (w1 / e))
    for n in sorted(R["watched"], key=int):
        if int(n) > 1:
            w("- agentbraked added cost at %s watched / at 1 watched: %.2f× (BIO), %.2f× (TCP)" % (
                n, (med(R["watched"][n]["bio"]) - nb) / w1,
                (med(R["watched"][n]["tcp"]) - nt) / (med(R["watched"][1]["tcp"]) - nt)))
    w("")
    w("### 3. Attach / detach per process")
    la = R["loader_attach"]
    w("| path | attach ms median / max | detach ms median / max |")
    w("|---|---|---|")
    w("| TlsAttacher, the daemon's programs (%s, %d links per process, %d processes) | %.2f / %.2f | %.1f / %.1f |"
      % ("uprobe_multi" if la["uprobe_multi"] else "classic", la["links"] // max(1, la["processes"]), la["processes"],
         median(la["attach_ms"]), max(la["attach_ms"]), median(la["detach_ms"]), max(la["detach_ms"])))
    for k, label in (("multi_entryret", "empty uprobe_multi entry+return: 2 links of 4 offsets"),
                     ("classic_entryret", "empty classic uprobes entry+return: 8 perf links")):
        v = base[k]
        w("| %s | %.2f / %.2f | %.1f / %.1f |" % (label, median(v["attach_ms"]), max(v["attach_ms"]),
                                                 median(v["detach_ms"]), max(v["detach_ms"])))
    am = R["daemon_attach_ms"]
    if am:
        w("| agentbraked log \"probes attached ... in X ms\" (%d processes) | %.2f / %.2f | — |" % (len(am), median(am), max(am)))
    dd = R["daemon_detach"]
    w("| agentbraked: SIGKILL %d watched processes, until their link fds are closed | — | %.1f per process (%.1f s in all; status tls_probes dropped after %.2f s; %d fds left) |"
      % (dd["processes"], dd["seconds"] * 1e3 / max(1, dd["processes"]), dd["seconds"],
         dd["status_zero_s"] if dd["status_zero_s"] is not None else float("nan"), dd["fds_left"]))
    w("| empty uprobe_multi entry+return, 99 processes detached one after another | — | %.1f per process |"
      % (base["multi_entryret_detach_99_s"] * 1e3 / 99))
    if la.get("detach_links_parallel_ms"):
        w("| TlsAttacher detach, the %d links of a process closed by %d threads at once | — | %.1f / %.1f |"
          % (la["links"] // max(1, la["processes"]), la["links"] // max(1, la["processes"]),
             median(la["detach_links_parallel_ms"]), max(la["detach_links_parallel_ms"])))
        w("| TlsAttacher detach, %d processes by %d threads at once | — | %.1f per process (%.0f ms in all) |"
          % (la["processes"], la["processes"], la["detach_all_parallel_ms"] / la["processes"], la["detach_all_parallel_ms"]))
    ds = R.get("daemon_stop")
    if ds:
        w("| agentbraked SIGTERM → exit with %d processes still watched | — | %.1f per process (%.1f s in all) |"
          % (ds["watched"], ds["seconds"] * 1e3 / max(1, ds["watched"]), ds["seconds"]))
    w("")
    w("### 4. Ring buffer (64 MiB) under one watched writer at its maximum rate")
    w("| SSL_write size | MB/s written (unwatched) | CPU µs per call watched / unwatched | calls | records got / expected | ring_buffer_lost | tls_truncated_calls | cut by the cap | MB/s captured | daemon CPU |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for size, v in sorted(R["ringbuf"].items(), key=lambda kv: int(kv[0])):
        wr, dl = v["writer"], v["delta"]
        got = dl.get("tls_records", 0)
        frac = min(1.0, got / v["expected_records"]) if v["expected_records"] else 0
        uw = v.get("unwatched") or {}
        w("| %d KiB | %.0f (%s) | %.1f / %s | %d | %d / %d | %d | %d | %.0f MB | %.0f | %.0f%% |" % (
            int(size) // 1024, wr["bytes_per_s"] / 1e6, "%.0f" % (uw["bytes_per_s"] / 1e6) if uw else "—",
            wr["cpu_ns_per_call"] / 1e3, "%.1f" % (uw["cpu_ns_per_call"] / 1e3) if uw else "—",
            wr["rounds"], got, v["expected_records"],
            dl.get("ring_buffer_lost", 0), dl.get("tls_truncated_calls", 0), dl.get("tls_truncated_lost_bytes", 0) / 1e6,
            v["bytes_after_cap"] * frac / wr["seconds"] / 1e6, 100 * v["daemon_cpu_s"] / (wr["seconds"] + 1.0)))
    w("")
    w("### 5. Daemon RSS (kB, /proc/<pid>/status)")
    w("| moment | VmRSS | RssAnon | RssFile | RssShmem | of which BPF maps (ring buffer) |")
    w("|---|---|---|---|---|---|")
    for k, label in (("rss_idle_kb", "idle, no watched process"),
                     ("rss_100_kb", "100 watched, after %d SSL calls captured" % R["calls_at_100"]),
                     ("rss_after_writer_kb", "after the ring-buffer writers"),
                     ("rss_end_kb", "after %d watched processes exited" % R["config"]["exit_detach"])):
        v = R.get(k) or {}
        w("| %s | %s | %s | %s | %s | %s |" % (label, v.get("VmRSS"), v.get("RssAnon"), v.get("RssFile"), v.get("RssShmem"),
                                             v.get("bpf_maps", "—")))
    if R.get("bench_protocol"):
        w("")
        w("### 6. bench_protocol")
        w("| benchmark | time | throughput |")
        w("|---|---|---|")
        for b in R["bench_protocol"]:
            thr = ("%.0f MB/s" % (b["bytes_per_second"] / 1e6)) if b.get("bytes_per_second") else (
                "%.0f items/s" % b["items_per_second"] if b.get("items_per_second") else "")
            w("| %s | %.2f %s | %s |" % (b["name"], b["real_time"], b["time_unit"], thr))
    print("\n".join(out))


if __name__ == "__main__":
    def _term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, _term)
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        cleanup()
