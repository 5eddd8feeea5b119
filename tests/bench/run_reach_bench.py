#!/usr/bin/env python3
"""run_reach_bench.py — what reading the TLS stacks of issue 12 costs. Python stdlib only; run as
root, under the e2e lock (it starts agentbraked):

    flock /tmp/agentbrake-e2e.lock python3 tests/bench/run_reach_bench.py [--build-dir DIR] [--rounds N]

1. Per-call cost of the TLS write/read probes on each library, against an empty uprobe at the
   same places. One workload per library makes ITERS round trips (a 64-byte write, then reads
   until the echo is back) to a TLS echo server on loopback (capture/tls_load.c server):
     bun      the pinned Claude Code binary itself (Bun 1.4, BoringSSL linked in, stripped),
              running reach/bun_tls_load.js through Bun's preload hook
     openssl  capture/tls_load.c tcp (libssl.so.3)
     go       reach/go_tls_load.go, built here with the host's go (crypto/tls)
     gnutls   reach/gnutls_load.c (libgnutls.so.30)
   in three states, a fresh process each time, the order rotated every round:
     none     no probe
     empty    do-nothing programs (capture/empty_uprobe.bpf.c) attached by reach/offset_probe
              at exactly the offsets the daemon uses (found by the daemon's own locators:
              entry + return of the write/read functions; for Go, entries and every RET)
     daemon   agentbraked watching the process (the echo port is a declared endpoint)
   The figure is CPU time (user+system) of the workload per round trip, median over the rounds.
   Printed side by side: daemon / empty (the whole call), and the cost the probes add over the
   unprobed call, daemon vs empty.
2. Discovery on the Claude Code binary (build/tests/bench_tls_locator): the xref scan, a first
   locate (build-id table), the on-disk cache (next daemon), memory (next process).
3. The first connect of a fresh `claude -p` under a running daemon (TLS simulator): how long
   the process is held (the capture hold's held_ms) and the attach time the daemon logs, for
   the first claude after the daemon started and for the next ones; and the wall time of
   `claude -p` with and without the daemon.

Everything started is stopped and every temporary directory removed. Only loopback traffic.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import run_capture_bench as cb  # noqa: E402  (spawn/stop/cleanup, Daemon, helpers)

REACH = os.path.join(HERE, "reach")
AGENTS = os.path.join(SOURCE, "tests", "e2e", "agents", "node_modules")
CLAUDE = os.path.join(AGENTS, "@anthropic-ai", "claude-code-linux-x64", "claude")
log, median = cb.log, cb.median


def build(work, bdir):
    tools = {"tls_load": os.path.join(work, "tls_load"), "bpf_obj": os.path.join(work, "empty_uprobe.bpf.o"),
             "cert": os.path.join(work, "cert.pem"), "key": os.path.join(work, "key.pem")}
    cb.run(["cc", "-O2", "-Wall", "-o", tools["tls_load"], os.path.join(cb.CAPTURE, "tls_load.c"),
            "-lssl", "-lcrypto", "-lpthread"])
    cb.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/%s-linux-gnu" % os.uname().machine, "-c",
            os.path.join(cb.CAPTURE, "empty_uprobe.bpf.c"), "-o", tools["bpf_obj"]])
    cb.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", tools["key"], "-out", tools["cert"], "-days", "2", "-subj", "/CN=localhost"])
    m = re.search(r"libssl\.so\S*\s+=>\s+(\S+)", cb.run(["ldd", tools["tls_load"]]))
    tools["libssl"] = os.path.realpath(m.group(1))
    tools["offset_probe"] = os.path.join(work, "offset_probe")
    cb.run(["c++", "-std=c++20", "-O2", "-o", tools["offset_probe"], os.path.join(REACH, "offset_probe.cpp"),
            "-I" + SOURCE, "-I" + os.path.join(SOURCE, "daemon"), "-I" + os.path.join(SOURCE, "bpf"),
            "-I" + os.path.join(bdir, "bpf"), os.path.join(bdir, "libab_loader.a"), os.path.join(bdir, "libab_util.a"),
            "-lbpf", "-lelf", "-lz", "-lspdlog", "-lfmt", "-lcapstone", "-lpthread"])
    tools["gnutls_load"] = os.path.join(work, "gnutls_load")
    cb.run(["cc", "-O2", "-Wall", "-o", tools["gnutls_load"], os.path.join(REACH, "gnutls_load.c"), "-lgnutls"])
    m = re.search(r"libgnutls\.so\S*\s+=>\s+(\S+)", cb.run(["ldd", tools["gnutls_load"]]))
    tools["libgnutls"] = os.path.realpath(m.group(1))
    gowork = os.path.join(work, "go")
    os.mkdir(gowork)
    shutil.copy(os.path.join(REACH, "go_tls_load.go"), gowork)
    tools["go_tls_load"] = os.path.join(work, "go_tls_load")
    env = dict(os.environ, GOCACHE=os.path.join(work, "gocache"), GOPATH=os.path.join(work, "gopath"),
               GOFLAGS="-mod=mod", GOPROXY="off", CGO_ENABLED="0")
    cb.run(["go", "build", "-o", tools["go_tls_load"], "go_tls_load.go"], cwd=gowork, env=env)
    return tools


# ---- workloads: start one (set up, connected, waiting); go() runs it and returns its result ----
class Workload:
    def __init__(self, lib, tools, port, iters):
        self.lib = lib
        env = None
        if lib == "bun":
            self.path, kind = CLAUDE, "boringssl"
            home = tempfile.mkdtemp(prefix="ab-bench-bun-")
            cb.TMPDIRS.append(home)
            env = {"PATH": "/usr/bin:/bin", "HOME": home, "AB_PORT": str(port), "AB_ITERS": str(iters),
                   "BUN_OPTIONS": "--preload " + os.path.join(REACH, "bun_tls_load.js")}
            argv, stdin = [CLAUDE, "-p"], subprocess.DEVNULL
        elif lib == "openssl":
            self.path, kind = tools["libssl"], "openssl"
            argv, stdin = [tools["tls_load"], "tcp", "--port", str(port), "--iters", str(iters), "--wait"], subprocess.PIPE
        elif lib == "go":
            self.path, kind = tools["go_tls_load"], "go"
            argv, stdin = [tools["go_tls_load"], str(port), str(iters), "64"], subprocess.PIPE
        else:
            self.path, kind = tools["libgnutls"], "gnutls"
            argv, stdin = [tools["gnutls_load"], str(port), str(iters), "64"], subprocess.PIPE
        self.kind = kind
        self.p = cb.spawn(argv, stdin=stdin, env=env, stderr=subprocess.DEVNULL)
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("%s workload exited before READY" % lib)
            if line.startswith("READY"):
                self.pid = int(line.split()[1])
                break

    def go(self):
        if self.lib == "bun":
            os.kill(self.pid, signal.SIGUSR2)
        else:
            self.p.stdin.write("go\n")
            self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith("{"):
                res = json.loads(line)
                break
        else:
            raise RuntimeError("%s workload gave no result" % self.lib)
        if self.lib == "openssl":   # tls_load counts SSL calls (2 per round trip)
            res["cpu_ns_per_call"] *= 2
            res["ns_per_call"] *= 2
        cb.stop(self.p)
        return res


def empty_probes(tools, w):
    p = cb.spawn([tools["offset_probe"], "empty", tools["bpf_obj"], str(w.pid), w.path, w.kind], stdin=subprocess.PIPE)
    line = p.stdout.readline()
    if not line.startswith("{"):
        raise RuntimeError("offset_probe empty failed on %s" % w.path)
    return p, json.loads(line)


def per_call(tools, a, libs):
    ep = cb.free_port()
    server = cb.start_server(tools, ep, "echo")
    res = {}   # (lib, state) -> [result]
    probes = {}
    states = ("none", "empty", "daemon")
    try:
        for r in range(a.rounds):
            order = states[r % 3:] + states[:r % 3]
            for state in order:
                d = cb.Daemon(a.build_dir, [ep]) if state == "daemon" else None
                try:
                    for lib in (libs if r % 2 == 0 else list(reversed(libs))):
                        w = Workload(lib, tools, ep, a.iters)
                        pr = None
                        if state == "empty":
                            pr, info = empty_probes(tools, w)
                            probes[lib] = info["probes"]
                        elif state == "daemon":
                            d.wait_attached([w.pid])
                        out = w.go()
                        if pr:
                            pr.stdin.write("done\n")
                            pr.stdin.flush()
                            cb.stop(pr)
                        res.setdefault((lib, state), []).append(out)
                finally:
                    if d:
                        if state == "daemon":
                            res.setdefault(("_daemon", "attach"), []).extend(
                                re.findall(r"probes attached to pid \d+ \((\S+)\) in [0-9.]+ ms: .*\((\S+)\)", d.log_text()))
                        d.stop()
            log("1. round %d/%d: %s" % (r + 1, a.rounds, ", ".join(
                "%s %s" % (lib, "/".join("%.1f" % (res[(lib, s)][-1]["cpu_ns_per_call"] / 1e3) for s in states))
                for lib in libs)))
    finally:
        cb.stop(server)
    return res, probes


def discovery(bdir):
    exe = os.path.join(bdir, "tests", "bench_tls_locator")
    if not os.path.exists(exe):
        return None
    out = cb.run([exe, "--benchmark_format=json", "--benchmark_min_time=0.2"], timeout=600,
                 env=dict(os.environ, AB_BUN_BINARIES=CLAUDE))
    got = {}
    for b in json.loads(out)["benchmarks"]:
        name = b["name"].split("/")[0].replace("BM_", "")
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0}[b["time_unit"]]
        got[name] = {"ms": b["real_time"] * scale, "label": b.get("label", "")}
    return got


def first_connect(a):
    import abtest
    res = {"held_ms": [], "attach": [], "wall_with": [], "wall_without": []}
    sim = abtest.Simulator(peer_info=True).__enter__()
    sim.set(stop_reason="end_turn")
    home = tempfile.mkdtemp(prefix="ab-bench-claude-")
    cb.TMPDIRS.append(home)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "ANTHROPIC_BASE_URL": "https://127.0.0.1:%d" % sim.port,
           "ANTHROPIC_API_KEY": "sk-ant-bench-" + "0" * 24, "NODE_TLS_REJECT_UNAUTHORIZED": "0",
           "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64"}

    def one():
        t0 = time.monotonic()
        r = subprocess.run([CLAUDE, "-p", "hi", "--max-turns", "1"], env=env, cwd=home, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("claude failed: %s" % r.stderr[-500:])
        return time.monotonic() - t0

    try:
        for _ in range(a.claude_runs):
            res["wall_without"].append(one())
        d = cb.Daemon(a.build_dir, [sim.port])
        try:
            for _ in range(a.claude_runs):
                res["wall_with"].append(one())
            res["attach"] = [(float(ms), how) for ms, how in re.findall(
                r"probes attached to pid \d+ \(claude\) in ([0-9.]+) ms: .*\((\S+)\)", d.log_text())]
            r = subprocess.run([os.path.join(a.build_dir, "agentbrake"), "--db", os.path.join(d.dir, "ab.db"),
                                "--socket", d.socket, "events", "--json", "--kind", "resumed", "--since", "1h"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
            for line in r.stdout.splitlines():
                e = json.loads(line)
                dd = e.get("detail") or {}
                if dd.get("reason") == "capture" and e.get("comm", "claude") == "claude":
                    res["held_ms"].append((e.get("ts"), dd.get("held_ms")))
        finally:
            d.stop()
    finally:
        sim.__exit__(None, None, None)
    res["held_ms"] = [ms for _ts, ms in sorted(res["held_ms"], key=lambda t: t[0] or "")]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.environ.get("AB_BUILD_DIR", os.path.join(SOURCE, "build")))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--claude-runs", type=int, default=5)
    ap.add_argument("--libs", default="bun,openssl,go,gnutls")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not os.access(CLAUDE, os.X_OK):
        sys.exit("the pinned Claude Code is not installed: npm install --no-package-lock --no-save in tests/e2e/agents")
    work = tempfile.mkdtemp(prefix="ab-bench-reach-")
    cb.TMPDIRS.append(work)
    t_start = time.monotonic()
    log("building helpers")
    tools = build(work, a.build_dir)
    libs = a.libs.split(",")
    R = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cb.cpu_model(), "rounds": a.rounds,
         "iters": a.iters}
    try:
        R["git"] = cb.run(["git", "-C", SOURCE, "rev-parse", "--short", "HEAD"]).strip()
    except Exception:
        R["git"] = "?"
    res, probes = per_call(tools, a, libs)
    log("2. discovery (bench_tls_locator)")
    disc = discovery(a.build_dir)
    log("3. first connect of a fresh claude")
    fc = first_connect(a)
    R.update({"per_call": {"%s/%s" % k: v for k, v in res.items()}, "probes": probes, "discovery": disc,
              "first_connect": fc, "runtime_s": time.monotonic() - t_start})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(R, f, indent=1)

    out = []
    w = out.append
    w("## agentbrake reach benchmark — %s (kernel %s, %d CPUs, load %.1f at the end, %.0f s)"
      % (R["date"], os.uname().release, os.cpu_count(), os.getloadavg()[0], R["runtime_s"]))
    w("Tree %s, %s; %d rounds × %d round trips of 64 B per library and state; medians." % (R["git"], R["cpu"], a.rounds, a.iters))
    w("")
    w("### 1. CPU µs per round trip (one write + the reads of its echo), probes as the daemon places them")
    w("| library (workload) | probes | none | empty uprobes | agentbraked | **daemon / empty** | added: empty | added: daemon | **added daemon / added empty** |")
    w("|---|---|---|---|---|---|---|---|---|")
    names = {"bun": "Bun/BoringSSL (claude 2.1.328 binary, Bun.connect)", "openssl": "OpenSSL 3 (tls_load tcp)",
             "go": "Go 1.19 crypto/tls", "gnutls": "GnuTLS (libgnutls.so.30)"}
    for lib in libs:
        n, e, dm = (median([x["cpu_ns_per_call"] for x in res[(lib, s)]]) / 1e3 for s in ("none", "empty", "daemon"))
        w("| %s | %s | %.2f | %.2f | %.2f | **%.2f×** | %.2f | %.2f | **%s** |"
          % (names.get(lib, lib), probes.get(lib, "?"), n, e, dm, dm / e, e - n, dm - n,
             "%.2f×" % ((dm - n) / (e - n)) if e > n else "— (empty adds nothing measurable)"))
    w("")
    for lib in libs:
        w("- %s samples (µs, none / empty / daemon): %s / %s / %s" % (lib, *(
            " ".join("%.1f" % (x["cpu_ns_per_call"] / 1e3) for x in res[(lib, s)]) for s in ("none", "empty", "daemon"))))
    methods = sorted(set("%s: %s" % t for t in res.get(("_daemon", "attach"), [])))
    w("- how the daemon found them: %s" % "; ".join(methods))
    if disc:
        w("")
        w("### 2. Discovery on the Claude Code 2.1.328 binary (373 MB; bench_tls_locator, page cache warm)")
        w("| step | ms |")
        w("|---|---|")
        for k, label in (("XrefScan", "xref scan of the whole file (a build not in the table)"),
                         ("LocateCold", "first locate, fresh daemon, empty cache dir (build-id table hit)"),
                         ("LocateDiskCache", "locate from the on-disk cache (next daemon start)"),
                         ("LocateMemory", "locate from memory (next process of the same file)")):
            if k in disc:
                w("| %s | %.3f |" % (label, disc[k]["ms"]))
    w("")
    w("### 3. First connect of a fresh `claude -p` (%d runs with the daemon, %d without)" % (len(fc["wall_with"]), len(fc["wall_without"])))
    held = [x for x in fc["held_ms"] if isinstance(x, (int, float))]
    att = fc["attach"]
    w("| | first claude after the daemon started | the next ones (median) |")
    w("|---|---|---|")
    if held:
        w("| held at its first connect (capture hold, held_ms) | %.1f ms | %.1f ms |" % (held[0], median(held[1:])))
    if att:
        w("| probes attached (daemon log) | %.1f ms (%s) | %.1f ms (%s) |" % (att[0][0], att[0][1], median([x[0] for x in att[1:]]),
                                                                     ",".join(sorted(set(x[1] for x in att[1:])))))
    w("| `claude -p` wall time, without / with the daemon (median) | %.2f s / %.2f s | |" % (median(fc["wall_without"]), median(fc["wall_with"])))
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
        cb.cleanup()
