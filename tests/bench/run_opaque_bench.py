#!/usr/bin/env python3
"""run_opaque_bench.py — what the socket capture of opaque processes (bpf/sock.bpf.c) costs.
Python stdlib only; run as root, under the e2e lock (it starts agentbraked):

    flock /tmp/agentbrake-e2e.lock python3 tests/bench/run_opaque_bench.py [--build-dir DIR]

Three daemon states, in rounds (order rotated each round), median of each:
  off      no daemon
  nosock   agentbraked with AGENTBRAKE_TEST_FAULTS=no_socket_capture=1 (connect tracepoints,
           deny programs; no sock_ops / sk_msg)
  sock     agentbraked as shipped (sock_ops at the cgroup root, sk_msg on opaque sockets)

Workloads, each in a fresh child process:
  unwatched connect   connect+close to a loopback port that is NOT an endpoint (every process
                      on the host pays this: the sock_ops program runs at each TCP connect)
  unwatched pingpong  64-byte send/recv round trips on a loopback connection to a non-endpoint
  opaque pingpong     the same to a port declared as an endpoint: the child (Python, no TLS
                      library loaded) is judged opaque; every send runs the sk_msg program and
                      every round trip is a request start (the worst case: a ring record each)

Prints ratios against `off` (unwatched) and `nosock` (opaque) side by side. Everything started
is stopped; temporary directories are removed.
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
import socket, sys, time
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "connect":
    t = time.perf_counter()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port)); s.close()
    print((time.perf_counter() - t) / n * 1e6)
else:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\x17" + b"x" * 199); s.recv(4096)  # warm up (the first connect may be held)
    msg = b"\x17" + b"r" * 199
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
    def __init__(self, build, endpoint_port, faults=None):
        self.dir = tempfile.mkdtemp(prefix="ab-bench-opq-")
        with open(os.path.join(self.dir, "policy.yaml"), "w") as f:
            f.write("endpoints:\n  - {host: 127.0.0.1, port: %d, api: openai, tls: true}\n" % endpoint_port)
        env = dict(os.environ)
        if faults:
            env["AGENTBRAKE_TEST_FAULTS"] = faults
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.p = subprocess.Popen([os.path.join(build, "agentbraked"), "--state-dir", self.dir,
                                   "--policy", os.path.join(self.dir, "policy.yaml"),
                                   "--socket", os.path.join(self.dir, "control.sock"),
                                   "--db", os.path.join(self.dir, "ab.db")],
                                  stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(self.dir, "control.sock")):
            if self.p.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("daemon did not start")
            time.sleep(0.05)

    def stop(self):
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
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    plain_ls, plain_port = echo_server()
    ep_ls, ep_port = echo_server()
    res = {}  # (state, workload) -> [us]
    work = [("unwatched connect", "connect", plain_port, 1000),
            ("unwatched pingpong", "pingpong", plain_port, 20000),
            ("opaque pingpong", "pingpong", ep_port, 20000)]
    try:
        for r in range(a.rounds):
            states = ("off", "nosock", "sock")
            for state in states[r % 3:] + states[:r % 3]:  # rotated: no state always first
                d = None
                if state != "off":
                    d = Daemon(a.build_dir, ep_port, "no_socket_capture=1" if state == "nosock" else None)
                try:
                    for name, mode, port, n in work:
                        if state == "off" and name.startswith("opaque"):
                            continue
                        res.setdefault((state, name), []).append(run_child(mode, port, n))
                finally:
                    if d:
                        d.stop()
            print("round %d done" % (r + 1), file=sys.stderr)
    finally:
        plain_ls.close()
        ep_ls.close()
    med = {k: statistics.median(v) for k, v in res.items()}
    print("| workload | off (µs) | daemon, no socket capture (µs) | daemon with socket capture (µs) | ratio sock/off | ratio sock/nosock |")
    print("|---|---|---|---|---|---|")
    for name, *_ in work:
        off = med.get(("off", name))
        ns, so = med[("nosock", name)], med[("sock", name)]
        print("| %s | %s | %.2f | %.2f | %s | %.3f |" % (name, "%.2f" % off if off else "–", ns, so,
                                                      "%.3f" % (so / off) if off else "–", so / ns))


if __name__ == "__main__":
    main()
