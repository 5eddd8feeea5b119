#!/usr/bin/env python3
"""run_plain_bench.py — what plain-HTTP capture (`tls: false` endpoints) costs. Python stdlib
only; run as root, under the e2e lock (it starts agentbraked):

    flock /tmp/agentbrake-e2e.lock python3 tests/bench/run_plain_bench.py [--build-dir DIR]

Three states, in rounds (order rotated each round), median of each:
  off   no daemon
  tls   agentbraked with the loopback echo port declared `tls: true` (no plain probes
        anywhere; the daemon's own CPU use on this small VM is in this state too)
  on    the same port declared `tls: false`, and one process kept connected to it (watched:
        the plain probes sit on the C library's write/send/sendto, read/recv/recvfrom and
        close for that pid) while the workloads run

Workloads, each in a fresh child process (Python -S, which calls the C library's send/recv/write):
  unwatched connect    connect+close to a loopback port that is not an endpoint
  unwatched pingpong   200-byte send + echo round trips on a loopback connection to a non-endpoint
  unwatched write      64-byte write() to /dev/null (the C library function the probes are on)
  watched pingpong     the same round trips to the plain endpoint: the child is watched, every
                       send and recv is copied to the ring buffer (its own cost, not a goal)

Prints the ratios on/off and on/tls per workload (on/tls isolates the plain probes). Everything started is stopped; temporary directories are
removed.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))

CHILD = r'''
import os, socket, sys, time
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "connect":
    t = time.perf_counter()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port)); s.close()
    print((time.perf_counter() - t) / n * 1e6)
elif mode == "write":
    fd = os.open("/dev/null", os.O_WRONLY)
    b = b"w" * 64
    t = time.perf_counter()
    for _ in range(n):
        os.write(fd, b)
    print((time.perf_counter() - t) / n * 1e6)
elif mode == "keep":
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"hello"); s.recv(16)
    print("ready", flush=True)
    sys.stdin.readline()
else:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"x" * 200); s.recv(4096)  # warm up (the first connect to an endpoint is held)
    msg = b"GET / HTTP/1.1\r\n" + b"r" * 184
    t = time.perf_counter()
    for _ in range(n):
        s.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(s.recv(4096))
    print((time.perf_counter() - t) / n * 1e6)
'''


def echo_server():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(512)

    def serve(c):
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return ls, ls.getsockname()[1]


def run_child(mode, port, n):
    r = subprocess.run([sys.executable, "-S", "-c", CHILD, mode, str(port), str(n)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("child failed: " + r.stderr[-500:])
    return float(r.stdout.strip())


class Daemon:
    """agentbraked with the endpoint port declared plain, and one watched process kept on it."""

    def __init__(self, build, endpoint_port, plain=True):
        self.dir = tempfile.mkdtemp(prefix="ab-bench-plain-")
        self.keeper = None
        with open(os.path.join(self.dir, "policy.yaml"), "w") as f:
            f.write("endpoints:\n  - {host: 127.0.0.1, port: %d, api: openai, tls: %s}\n"
                    % (endpoint_port, "false" if plain else "true"))
        self.logpath = os.path.join(self.dir, "log")
        self.log = open(self.logpath, "wb")
        self.p = subprocess.Popen([os.path.join(build, "agentbraked"), "--state-dir", self.dir,
                                   "--policy", os.path.join(self.dir, "policy.yaml"),
                                   "--socket", os.path.join(self.dir, "control.sock"),
                                   "--db", os.path.join(self.dir, "ab.db")],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(self.dir, "control.sock")):
            if self.p.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("daemon did not start")
            time.sleep(0.05)
        if not plain:
            return
        self.keeper = subprocess.Popen([sys.executable, "-S", "-c", CHILD, "keep", str(endpoint_port), "0"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.keeper.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("keeper did not connect")
        want = "plain:libc"
        while True:  # its plain probes are attached (the daemon logs the attach)
            with open(self.logpath, errors="replace") as f:
                if any(("pid %d " % self.keeper.pid) in ln and want in ln for ln in f):
                    break
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("keeper's plain probes not attached")
            time.sleep(0.05)

    def stop(self):
        if self.keeper and self.keeper.poll() is None:
            self.keeper.stdin.close()
            self.keeper.wait(timeout=30)
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.environ.get("AB_BUILD_DIR", os.path.join(SOURCE, "build")))
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    other_ls, other_port = echo_server()
    ep_ls, ep_port = echo_server()
    res = {}  # (state, workload) -> [us]
    work = [("unwatched connect", "connect", other_port, 1000),
            ("unwatched pingpong", "pingpong", other_port, 20000),
            ("unwatched write", "write", 0, 200000),
            ("watched pingpong", "pingpong", ep_port, 5000)]
    try:
        for r in range(a.rounds):
            states = ("off", "tls", "on")
            for state in states[r % 3:] + states[:r % 3]:  # rotated: no state always first
                d = Daemon(a.build_dir, ep_port, plain=state == "on") if state != "off" else None
                try:
                    for name, mode, port, n in work:
                        res.setdefault((state, name), []).append(run_child(mode, port, n))
                finally:
                    if d:
                        d.stop()
            print("round %d done" % (r + 1), file=sys.stderr)
    finally:
        other_ls.close()
        ep_ls.close()
    med = {k: statistics.median(v) for k, v in res.items()}
    mins = {k: min(v) for k, v in res.items()}
    print("| workload | off (µs) | tls (µs) | on (µs) | ratio on/off | **ratio on/tls** | on/tls (minimums) |")
    print("|---|---|---|---|---|---|---|")
    for name, *_ in work:
        off, tls, on = med[("off", name)], med[("tls", name)], med[("on", name)]
        print("| %s | %.2f | %.2f | %.2f | %.3f | **%.3f** | %.3f |" % (
            name, off, tls, on, on / off, on / tls, mins[("on", name)] / mins[("tls", name)]))


if __name__ == "__main__":
    main()
