#!/usr/bin/env python3
"""DEV AID ONLY — a stand-in for agentbraked + agentbrake that validates the e2e tests' own
logic while the real daemon does not exist yet. It captures nothing: it reads what the
simulator served (run with AB_SIM_PEER_INFO=1 so each served request names its client
process) and answers the CLI commands the tests use in the contract's formats. Never used by
CTest. Usage:  AB_BUILD_DIR=tests/e2e/tools/fakebin AB_SIM_PEER_INFO=1 python3 tests/e2e/test_capture.py
"""
import argparse
import glob
import json
import os
import signal
import socket
import sys
import time

TRANSPARENT = {"bash", "sh", "dash", "zsh", "fish", "sudo", "env", "timeout", "nohup", "setsid", "init", "systemd"}
PRICES_DEFAULT = {}


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % int((ts % 1) * 1000)


def daemon_main(argv):
    p = argparse.ArgumentParser()
    for k in ("--state-dir", "--db", "--socket", "--policy", "--log-level"):
        p.add_argument(k)
    a = p.parse_args(argv)
    started = os.path.join(a.state_dir, "fake-first-start")
    if not os.path.exists(started):
        with open(started, "w") as f:
            f.write(str(time.time()))
    with open(os.path.join(a.state_dir, "fake-start"), "w") as f:
        f.write(str(time.time()))
    with open(a.db, "a"):
        pass
    if os.path.exists(a.socket):
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(16)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("fake agentbraked: ready (a dev aid, captures nothing)", flush=True)
    srv.settimeout(0.2)
    while not stop:
        try:
            c, _ = srv.accept()
            c.sendall(b'{"ok":true}\n')
            c.close()
        except socket.timeout:
            pass
        except InterruptedError:
            pass
    srv.close()
    os.unlink(a.socket)
    return 0


def prices(state):
    out = {}
    try:
        with open(os.path.join(state, "policy.yaml")) as f:
            in_prices = False
            for line in f:
                if line.startswith("prices:"):
                    in_prices = True
                    continue
                if in_prices and line.startswith("  ") and ":" in line:
                    name, _, rest = line.strip().partition(":")
                    kv = rest.strip().strip("{}")
                    out[name.strip()] = {k.strip(): float(v) for k, v in (x.split(":") for x in kv.split(","))}
                elif in_prices and not line.startswith(" "):
                    in_prices = False
    except OSError:
        pass
    return out


def root_of(chain):
    cg = chain[0]["cgroup"]
    root = chain[0]["pid"]
    for pr in chain:
        if pr["cgroup"] != cg:
            break
        if pr["comm"] in TRANSPARENT or pr["comm"].startswith("tmux"):
            continue
        root = pr["pid"]
    return root


def events(state):
    try:
        with open(os.path.join(state, "fake-first-start")) as f:
            t0 = float(f.read())
    except OSError:
        return []
    pr = prices(state)
    out = []
    for log in glob.glob("/tmp/ab-e2e-sim-*/served.jsonl"):
        with open(log) as f:
            for line in f:
                r = json.loads(line)
                if r["ts_start"] < t0 or not r.get("peer"):
                    continue
                ch = r["peer"]
                est = r["status"] == 200 and not r["usage_sent"]
                inp = r["request_bytes"] // 4 if est else r["input_tokens"]
                out_t = int(r["output_tokens"] * 1.1) if est else r["output_tokens"]
                p = pr.get(r["model"], {"input": 0, "output": 0})
                cr, cw = r["cache_read"], r["cache_write"]
                cost = ((inp - cr - cw) * p["input"] + cr * p.get("cache_read", p["input"])
                        + cw * p.get("cache_write", p["input"]) + out_t * p["output"]) / 1e6
                api = "anthropic" if r["path"].endswith("/messages") else "openai"
                d = {"provider": "localhost", "api": api, "host": "localhost", "path": r["path"],
                     "model": r["model"], "stream": r["stream"], "status": r["status"], "input_tokens": inp,
                     "output_tokens": out_t, "cache_read_tokens": cr, "cache_write_tokens": cw,
                     "cost_usd": cost, "latency_ms": 1, "tree_root_pid": root_of(ch), "complete": not r["aborted"],
                     "estimated": est, "estimate_reason": "stream_without_usage" if est else "",
                     "error_type": {429: "rate_limit_exceeded", 529: "overloaded_error", 500: "server_error"}.get(
                         r["status"], ""), "retry_after_s": r.get("retry_after") if r.get("retry_after") else -1}
                out.append({"ts": iso(r["ts"]), "_ts": r["ts"], "kind": "llm_call", "cgroup": ch[0]["cgroup"],
                            "pid": ch[0]["pid"], "comm": ch[0]["comm"], "detail": d})
    bug = os.environ.get("AB_FAKE_BUG", "")
    if bug == "dup" and out:
        out.append(dict(out[-1]))
    if bug == "root":
        for e in out:
            e["detail"]["tree_root_pid"] = e["pid"]
    if bug == "late":
        out = [e for e in out if time.time() - e["_ts"] > 3.0]
    if bug == "secret" and out:
        out[0]["detail"]["auth"] = "Bearer sk-test-AGENTBRAKE-SECRET-0001"
    if bug == "tokens":
        for e in out:
            e["detail"]["input_tokens"] += 1
    out.sort(key=lambda e: e["_ts"])
    for e in out:
        del e["_ts"]
    return out


def usage(evs, by):
    rows = {}
    for e in evs:
        d = e["detail"]
        key = {"cgroup": e["cgroup"], "process": "%d %s" % (e["pid"], e["comm"]), "model": d["model"],
               "provider": d["provider"]}[by]
        r = rows.setdefault(key, {"key": key, "calls": 0, "input_tokens": 0, "output_tokens": 0,
                                  "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0,
                                  "estimated_calls": 0})
        r["calls"] += 1
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"):
            r[k] += d[k]
        r["estimated_calls"] += 1 if d["estimated"] else 0
    return list(rows.values())


def cli_main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--db")
    p.add_argument("--socket")
    p.add_argument("cmd")
    p.add_argument("--json", action="store_true")
    p.add_argument("--since")
    p.add_argument("--kind", action="append")
    p.add_argument("--by", default="cgroup")
    p.add_argument("rest", nargs="*")
    a = p.parse_args(argv)
    state = os.path.dirname(a.db)
    if a.cmd == "status":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(a.socket)
            s.recv(100)
        except OSError as e:
            print("agentbrake: daemon unreachable: %s" % e, file=sys.stderr)
            return 1
        with open(os.path.join(state, "fake-start")) as f:
            t = float(f.read())
        st = {"version": "0.0.0-fake", "uptime_s": time.time() - t, "policy": {"source": "fake"},
              "probes_attached": 4, "watched_processes": 0, "held": 0, "denied": 0,
              "counters": {"ringbuf_lost": 0, "captures_truncated": 0, "responses_unparsed": 0,
                           "alerts_dropped": 0}}
        print(json.dumps(st) if a.json else "fake status")
        return 0
    evs = events(state)
    if a.cmd == "events":
        for e in evs:
            if a.kind and e["kind"] not in a.kind:
                continue
            print(json.dumps(e) if a.json else "%s %s %s" % (e["ts"], e["kind"], e["cgroup"]))
        return 0
    if a.cmd == "usage":
        u = {"by": a.by, "since": iso(time.time() - 3600), "until": iso(time.time()), "rows": usage(evs, a.by)}
        print(json.dumps(u) if a.json else "fake usage")
        return 0
    if a.cmd == "agents":
        trees = {}
        for e in evs:
            d = e["detail"]
            t = trees.setdefault((e["cgroup"], d["tree_root_pid"]), {
                "cgroup": e["cgroup"], "tree_root_pid": d["tree_root_pid"], "pids": [], "comm": e["comm"],
                "provider": d["provider"], "model": d["model"], "calls": 0, "input_tokens": 0, "output_tokens": 0,
                "cost_usd": 0.0, "tokens_per_min": 0, "state": "ok", "reason": ""})
            t["calls"] += 1
            t["input_tokens"] += d["input_tokens"]
            t["output_tokens"] += d["output_tokens"]
            t["cost_usd"] += d["cost_usd"]
            if os.path.exists("/proc/%d" % e["pid"]) and e["pid"] not in t["pids"]:
                t["pids"].append(e["pid"])
        live = [t for t in trees.values() if t["pids"]]
        print(json.dumps(live) if a.json else "fake agents")
        return 0
    if a.cmd == "policy":
        print("fake policy")
        return 0
    return 2


if __name__ == "__main__":
    if os.path.basename(sys.argv[0]) == "agentbraked" or (len(sys.argv) > 1 and sys.argv[1] == "daemon"):
        args = sys.argv[2:] if sys.argv[1:2] == ["daemon"] else sys.argv[1:]
        sys.exit(daemon_main(args))
    sys.exit(cli_main(sys.argv[1:]))
