#!/usr/bin/env python3
"""End-to-end proofs for the fleet's view (issue 15, items 6 and 7): OTLP export and
metrics people can slice.

  OTLP       a receiver this test owns on loopback (http.server taking POSTs to /v1/traces and
             /v1/metrics; its first /v1/traces answer is a 503, so the exporter's retry is
             exercised) gets exactly one span per llm_call, with the OpenTelemetry GenAI
             attributes, the exact tokens the simulator served, the agent's pid, comm and cgroup,
             start/end around the served request, resource service.name/host.name; the headers
             of `headers_file` on every POST; no API key and no headers_file secret in any body,
             and the secret nowhere in the daemon's DB, log or CLI output. OTLP metrics carry the
             same call and token totals. A SIGHUP with a new endpoint sends the next span there.
  Metrics    /metrics passes `promtool check metrics`; agentbrake_model_* by provider and model
             are exact; the latency histogram places a slow call above 0.25 s; budget gauges show
             the requests level (exactly the calls) against the limit.
  Dashboard  docs/grafana/agentbrake.json is a well-formed dashboard (unique panel ids, grid
             positions, targets with refId and expr, templating); every PromQL expression parses
             (`promtool check rules` on the expressions as recording rules) and names only
             metrics this daemon exported in the run above.

Needs root, BPF, cgroup v2, promtool. Under AGENTBRAKE_REQUIRE_BPF=1 a missing requirement is a
failure. The receivers, daemon, cgroups and temp files are removed on the way out, also on
failure; only pids this file started are signalled. Loopback only.
"""
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon  # noqa: E402

PRICES = """prices:
  e2e-gpt: {input: 1.0, output: 2.0, cache_read: 0.5}
  e2e-mini: {input: 0.1, output: 0.2}
"""
REQUESTS_LIMIT = 1000

SIM = None


def setUpModule():
    global SIM
    SIM = abtest.module_simulator()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An OTLP/HTTP JSON receiver on 127.0.0.1: every POST is kept (path, headers, body). The
    first `fail_traces` POSTs to /v1/traces are answered 503 (and not kept as accepted)."""

    def __init__(self, fail_traces=0):
        self.lock = threading.Lock()
        self.posts = []       # accepted: (path, {header: value}, body bytes)
        self.refused = []     # answered 503
        self.fail_traces = fail_traces
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with rec.lock:
                    refuse = self.path == "/v1/traces" and rec.fail_traces > 0
                    if refuse:
                        rec.fail_traces -= 1
                        rec.refused.append((self.path, headers, body))
                    else:
                        rec.posts.append((self.path, headers, body))
                code = 503 if refuse else 200
                out = b"{}"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def bodies(self, path):
        with self.lock:
            return [json.loads(b) for p, _h, b in self.posts if p == path]

    def spans(self):
        """[(resource attributes, span)] of every accepted /v1/traces POST."""
        out = []
        for b in self.bodies("/v1/traces"):
            for rs in b.get("resourceSpans", []):
                res = attrs(rs.get("resource", {}).get("attributes", []))
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        out.append((res, sp))
        return out

    def all_posts(self):
        with self.lock:
            return list(self.posts) + list(self.refused)


def attrs(lst):
    out = {}
    for a in lst:
        v = a["value"]
        (kind, val), = v.items()
        out[a["key"]] = int(val) if kind == "intValue" else val
    return out


def fetch(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except OSError as e:
        return None, str(e)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    samples, families = [], set()
    for ln in text.splitlines():
        if ln.startswith("#"):
            parts = ln.split()
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                families.add(parts[2])
            continue
        m = _SAMPLE.match(ln.strip())
        if not m:
            continue
        labels = {lm.group(1): lm.group(2) for lm in _LABEL.finditer((m.group(2) or "{}")[1:-1])}
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples, families


def value(samples, name, **labels):
    vs = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    return sum(vs) if vs else None


def metric_points(bodies, name):
    """The data points of metric `name` in the newest metrics body that has it."""
    for b in reversed(bodies):
        for rm in b.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    if m.get("name") == name:
                        data = m.get("sum") or m.get("histogram") or m.get("gauge")
                        return [dict(p, attrs=attrs(p.get("attributes", []))) for p in data["dataPoints"]]
    return None


class Otlp(unittest.TestCase):
    maxDiff = 6000

    def test_spans_metrics_and_dashboard(self):
        abtest.require_tools("promtool")
        secret = "OTLP-HDR-SECRET-" + uuid.uuid4().hex
        scratch = tempfile.mkdtemp(prefix="ab-e2e-otlp-", dir=abtest.scratch_dir())
        headers_file = os.path.join(scratch, "otlp.headers")
        with open(headers_file, "w") as f:
            f.write("# the collector's credentials\nAuthorization: Bearer %s\nX-Tenant: e2e\n" % secret)
        os.chmod(headers_file, 0o600)
        mport = free_port()
        murl = "http://127.0.0.1:%d/metrics" % mport

        def policy(endpoint, cgroup):
            return abtest.policy_for(SIM, PRICES + (
                "metrics: {listen: \"127.0.0.1:%d\"}\n"
                "otlp: {endpoint: \"%s/\", headers_file: %s, metrics_interval: 1s}\n"
                "budgets:\n"
                "  - name: otlp-team\n"
                "    match: {cgroup: \"%s\"}\n"
                "    per: cgroup\n"
                "    requests_per_minute: %d\n"
                "    tokens_per_minute: 10000000\n"
                "    action: alert\n") % (mport, endpoint, headers_file, cgroup, REQUESTS_LIMIT))

        with Receiver(fail_traces=1) as rx, Receiver() as rx2, Cgroup("otlp") as cg, \
                Daemon(policy(rx.url, cg.path)) as d:
            a1 = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "otlp-a", "-n", "2", "--model", "e2e-gpt",
                                  "--header", "x-sim-cache-read: 5")
            a2 = abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "otlp-b", "-n", "1", "--model", "e2e-mini",
                                  "--header", "x-sim-latency-ms: 300")
            abtest.wait_visible(d, cg.path, 3, max(c["t_end"] for c in a1.calls() + a2.calls()), what="the calls")
            SIM.wait_quiet("otlp-a")
            SIM.wait_quiet("otlp-b")
            served = SIM.records("otlp-a") + SIM.records("otlp-b")
            self.assertEqual(len(served), 3)

            # ---- spans: exactly one per call, after a refused first POST was retried
            d.wait_for(lambda: len(rx.spans()) >= 3, 20, what="3 spans at the receiver")
            d.wait_for(lambda: d.status()["counters"].get("otlp_spans_exported", 0) >= 3, 10,
                       what="otlp_spans_exported == 3")
            st = d.status()["counters"]
            self.assertEqual(st.get("otlp_dropped"), 0, st)
            self.assertGreaterEqual(st.get("otlp_retries", 0), 1, "the 503 was not retried: %s" % st)
            self.assertEqual(len(rx.refused), 1)
            spans = rx.spans()
            self.assertEqual(len(spans), 3, "one span per call: %s" % [s for _r, s in spans])
            self.check_spans(spans, served, cg, {a1.pid, a2.pid})

            # ---- OTLP metrics: the same totals
            def otlp_calls():
                pts = metric_points(rx.bodies("/v1/metrics"), "agentbrake.llm.calls")
                return pts and sum(int(p["asInt"]) for p in pts) == 3
            d.wait_for(otlp_calls, 10, what="OTLP metrics with 3 calls")
            mb = rx.bodies("/v1/metrics")
            toks = metric_points(mb, "agentbrake.llm.tokens")
            for typ, key in (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read")):
                self.assertEqual(sum(int(p["asInt"]) for p in toks if p["attrs"]["gen_ai.token.type"] == typ),
                                 sum(s[key] for s in served), typ)
            dur = metric_points(mb, "gen_ai.client.operation.duration")
            self.assertEqual(sum(int(p["count"]) for p in dur), 3)
            self.assertTrue(metric_points(mb, "agentbrake.budget.level"), "no budget gauge in OTLP metrics")

            # ---- headers on every POST; no secret in any body
            posts = rx.all_posts()
            for path, hdrs, body in posts:
                self.assertEqual(hdrs.get("authorization"), "Bearer " + secret, path)
                self.assertEqual(hdrs.get("x-tenant"), "e2e", path)
                self.assertEqual(hdrs.get("content-type"), "application/json", path)
                for s in list(abtest.SECRETS.values()) + [abtest.SECRET_MARKER, secret]:
                    self.assertNotIn(s.encode(), body, "%s body carries a secret" % path)

            # ---- /metrics: provider/model labels, histogram, budget gauges
            text = d.wait_for(lambda: (lambda r: r[1] if r[0] == 200 and
                                       value(parse_prometheus(r[1])[0], "agentbrake_model_calls_total") == 3
                                       else None)(fetch(murl)), 10, what="/metrics with 3 calls by model")
            samples, families = parse_prometheus(text)
            self.check_metrics(samples, served, cg, spans)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "promtool check metrics:\n%s" % r.stdout[-3000:])
            self.check_dashboard(families | {n for n, _l, _v in samples}, scratch)

            # ---- a reload re-points the exporter
            digest = d.status()["policy"]["digest"]
            d.write_policy(policy(rx2.url, cg.path))
            d.signal(signal.SIGHUP)
            d.wait_for(lambda: d.status()["policy"]["digest"] != digest, 10, what="the reloaded policy")
            before = len(rx.spans())
            abtest.run_agent(cg, "py_httpclient", SIM, "--tag", "otlp-c", "-n", "1", "--model", "e2e-gpt")
            d.wait_for(lambda: len(rx2.spans()) >= 1, 20, what="a span at the new endpoint")
            self.assertEqual(len(rx.spans()), before, "a span went to the old endpoint after the reload")
            self.assertEqual(len(rx2.spans()), 1)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.secret_hits([secret]), [], "the headers_file secret leaked")
            self.assertNotIn(secret, d.log_text())

    def check_spans(self, spans, served, cg, pids):
        host = socket.gethostname()
        got, want = [], []
        for res, sp in spans:
            a = attrs(sp["attributes"])
            self.assertEqual(res.get("service.name"), "agentbraked")
            self.assertEqual(res.get("host.name"), host)
            self.assertEqual(sp["kind"], 3)
            self.assertRegex(sp["traceId"], r"^[0-9a-f]{32}$")
            self.assertRegex(sp["spanId"], r"^[0-9a-f]{16}$")
            self.assertEqual(a.get("gen_ai.system"), "openai", a)
            self.assertEqual(a.get("gen_ai.operation.name"), "chat", a)
            self.assertEqual(a.get("gen_ai.response.model"), a.get("gen_ai.request.model"))
            self.assertEqual(sp["name"], "chat " + a["gen_ai.request.model"])
            self.assertEqual(a.get("agentbrake.cgroup"), cg.path, a)
            self.assertIn(a.get("process.pid"), pids, a)
            self.assertTrue(a.get("process.executable.name"), a)
            self.assertEqual(a.get("server.address") in ("localhost", "127.0.0.1"), True, a)
            self.assertEqual(a.get("http.response.status_code"), 200)
            self.assertIn("agentbrake.cost_usd", a)
            self.assertNotIn("status", sp)
            got.append((a["gen_ai.request.model"], a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"],
                        a.get("gen_ai.usage.cache_read.input_tokens", 0)))
            start, end = int(sp["startTimeUnixNano"]) / 1e9, int(sp["endTimeUnixNano"]) / 1e9
            self.assertLessEqual(start, end)
            # the simulator read the request after the client began writing it, and answered before the end
            self.assertTrue(any(start - 0.5 <= s["ts_start"] <= end + 0.5 for s in served),
                            "span %.3f..%.3f brackets no served request: %s" % (start, end, [s["ts_start"] for s in served]))
        for s in served:
            want.append((s["model"], s["input_tokens"], s["output_tokens"], s["cache_read"]))
        self.assertEqual(sorted(got), sorted(want), "span tokens vs what the simulator served")
        slow = [sp for _r, sp in spans if attrs(sp["attributes"])["gen_ai.request.model"] == "e2e-mini"]
        self.assertGreaterEqual((int(slow[0]["endTimeUnixNano"]) - int(slow[0]["startTimeUnixNano"])) / 1e9, 0.3)

    def check_metrics(self, samples, served, cg, spans):
        for model in ("e2e-gpt", "e2e-mini"):
            mine = [s for s in served if s["model"] == model]
            self.assertEqual(value(samples, "agentbrake_model_calls_total", model=model), len(mine), model)
            for typ, key in (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read")):
                self.assertEqual(value(samples, "agentbrake_model_tokens_total", model=model, type=typ),
                                 sum(s[key] for s in mine), (model, typ))
            provs = {lab.get("provider") for n, lab, _v in samples if n == "agentbrake_model_calls_total"
                     and lab.get("model") == model}
            self.assertEqual(len(provs), 1, provs)
            self.assertTrue(provs.pop(), "empty provider label")
        for model in ("e2e-gpt", "e2e-mini"):
            # the spans' costs are the calls' (priced once, by the daemon): /metrics sums the same
            want = sum(attrs(sp["attributes"])["agentbrake.cost_usd"] for _r, sp in spans
                       if attrs(sp["attributes"])["gen_ai.request.model"] == model)
            self.assertGreater(want, 0, model)
            self.assertAlmostEqual(value(samples, "agentbrake_model_cost_usd_total", model=model), want,
                                   delta=1e-12 + 1e-9 * want)
        self.assertEqual(value(samples, "agentbrake_call_duration_seconds_count"), 3)
        self.assertEqual(value(samples, "agentbrake_call_duration_seconds_bucket", model="e2e-mini", le="0.25"), 0)
        self.assertEqual(value(samples, "agentbrake_call_duration_seconds_bucket", model="e2e-mini", le="+Inf"), 1)
        self.assertGreaterEqual(value(samples, "agentbrake_call_duration_seconds_sum", model="e2e-mini"), 0.3)
        bucket = "cgroup:" + cg.path
        self.assertEqual(value(samples, "agentbrake_budget_level", budget="otlp-team", bucket=bucket,
                               kind="requests"), 3, [x for x in samples if x[0].startswith("agentbrake_budget")])
        self.assertEqual(value(samples, "agentbrake_budget_limit", budget="otlp-team", bucket=bucket,
                               kind="requests"), REQUESTS_LIMIT)
        self.assertGreater(value(samples, "agentbrake_budget_level", budget="otlp-team", bucket=bucket,
                                 kind="tokens"), 0)

    def check_dashboard(self, exported, scratch):
        path = os.path.join(abtest.SOURCE_DIR, "docs", "grafana", "agentbrake.json")
        with open(path) as f:
            dash = json.load(f)
        for k in ("title", "uid", "schemaVersion", "panels", "templating"):
            self.assertIn(k, dash, "dashboard lacks %s" % k)
        self.assertIsInstance(dash["schemaVersion"], int)
        names = {v["name"] for v in dash["templating"]["list"]}
        self.assertTrue({"datasource", "instance"} <= names, names)
        ids, exprs = set(), []
        for p in dash["panels"]:
            self.assertNotIn(p["id"], ids, "duplicate panel id %s" % p["id"])
            ids.add(p["id"])
            self.assertTrue(p.get("title") and p.get("type"), p)
            g = p["gridPos"]
            self.assertTrue(all(isinstance(g[k], int) for k in ("h", "w", "x", "y")) and g["x"] + g["w"] <= 24, p)
            if p["type"] == "row":
                continue
            self.assertTrue(p.get("targets"), "panel %r has no query" % p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])
            for t in p["targets"]:
                self.assertTrue(t.get("expr"), p["title"])
                exprs.append((p["title"], t["expr"]))
        used = set()
        rules = ["groups:", "  - name: dashboard", "    rules:"]
        for i, (title, e) in enumerate(exprs):
            used |= set(re.findall(r"\bagentbrake_[a-zA-Z0-9_]+", e))
            concrete = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
            rules.append("      - record: dashboard:expr%d" % i)
            rules.append("        expr: %s" % json.dumps(concrete))
        self.assertEqual(sorted(used - exported), [], "the dashboard names metrics the daemon does not export")
        rf = os.path.join(scratch, "dashboard-rules.yaml")
        with open(rf, "w") as f:
            f.write("\n".join(rules) + "\n")
        r = subprocess.run(["promtool", "check", "rules", rf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "a dashboard expression does not parse:\n%s" % r.stdout[-3000:])


if __name__ == "__main__":
    unittest.main()
