#!/usr/bin/env python3
"""End-to-end accounting: `agentbrake usage --json` equals, token for token, what the provider
simulator served (its JSONL log), per cgroup, model and process; cost_usd is price × tokens
with the prices this test's policy sets; streams without usage are estimated (flagged,
within 25 %); error responses bill nothing and keep their error facts.

Cost of one call (USD per million tokens, `input_tokens` being billed input, cache included):
  ((input - cache_read - cache_write) × input_price + cache_read × cache_read_price
   + cache_write × cache_write_price + output × output_price) / 1e6
"""
import contextlib
import json
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, detail  # noqa: E402

DUP_WINDOW_S = 0.5   # observation window: a call seen once is not counted again

PRICES = {
    "acct-gpt": {"input": 2.5, "output": 10.0, "cache_read": 1.25},
    "acct-mini": {"input": 0.15, "output": 0.6, "cache_read": 0.075},
    "acct-claude": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "acct-est": {"input": 1.0, "output": 4.0},
    "acct-mx1": {"input": 5.0, "output": 20.0},
    "acct-mx2": {"input": 0.5, "output": 1.5},
}


def prices_yaml():
    out = ["prices:"]
    for m, p in PRICES.items():
        out.append("  %s: {%s}" % (m, ", ".join("%s: %s" % kv for kv in p.items())))
    return "\n".join(out) + "\n"


def call_cost(model, inp, out, cr, cw):
    p = PRICES[model]
    return ((inp - cr - cw) * p["input"] + cr * p.get("cache_read", p["input"])
            + cw * p.get("cache_write", p["input"]) + out * p["output"]) / 1e6


def expected(records):
    """The usage row the simulator's log implies."""
    row = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
           "cost_usd": 0.0, "estimated_calls": 0}
    for r in records:
        row["calls"] += 1
        row["input_tokens"] += r["input_tokens"]
        row["output_tokens"] += r["output_tokens"]
        row["cache_read_tokens"] += r["cache_read"]
        row["cache_write_tokens"] += r["cache_write"]
        row["cost_usd"] += call_cost(r["model"], r["input_tokens"], r["output_tokens"], r["cache_read"],
                                     r["cache_write"]) if r["status"] == 200 else 0.0
        row["estimated_calls"] += 0 if (r["usage_sent"] or r["status"] != 200) else 1
    return row


def close(a, b, rel=1e-6, abs_=1e-6):
    return abs(a - b) <= max(abs_, rel * abs(b))


class Accounting(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return abtest.policy_for(cls.sim, prices_yaml())

    # ---- helpers ----------------------------------------------------------------------------
    def run_in(self, cg, kind, tag, *args):
        a = abtest.run_agent(cg, kind, self.sim, "--tag", tag, *args, timeout=90)
        self.sim.wait_quiet(tag)   # the simulator logs a call after answering it: records() complete
        self.last_end = max([c["t_end"] for c in a.calls()] + [getattr(self, "last_end", 0)])
        return a

    def rows(self, by):
        u = self.daemon.usage(by=by, since="1h")
        self.assertEqual(u.get("by"), by, u)
        for k in ("since", "until", "rows"):
            self.assertIn(k, u, "usage --json lacks %r" % k)
        self.assertIsInstance(u["rows"], list)
        return {r["key"]: r for r in u["rows"]}

    def wait_rows(self, by, want_calls):
        """usage rows once every key in want_calls has at least that many calls; they must be
        there within 2 s (+ poll slack) of the end of the last call (contract)."""
        deadline = self.last_end + abtest.VISIBLE_WITHIN_S + abtest.POLL_SLACK_S
        while True:
            t_q = time.time()
            rows = self.rows(by)
            if all(rows.get(k, {}).get("calls", 0) >= n for k, n in want_calls.items()):
                return rows
            if t_q > deadline:
                self.fail("usage --by %s: want calls %s, %.2f s after the last call ended: %s\n%s"
                          % (by, want_calls, t_q - self.last_end, {k: rows.get(k) for k in want_calls},
                             self.daemon.log_tail(30)))
            time.sleep(0.1)

    def no_more_calls(self, by, want_calls):
        """Observation window: once the rows have every call (all of them served and seen), none
        gets more (a call counted twice) for DUP_WINDOW_S."""
        abtest.assert_stays(lambda: all(self.rows(by).get(k, {}).get("calls", 0) <= n for k, n in want_calls.items()),
                            DUP_WINDOW_S, "usage --by %s: more calls than served %s" % (by, want_calls),
                            on_fail=lambda: str({k: self.rows(by).get(k) for k in want_calls}))

    def assert_row_exact(self, row, want, key):
        for k in ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                  "estimated_calls"):
            self.assertEqual(row.get(k), want[k], "%s: %s (row %s, want %s)" % (key, k, row, want))
        self.assertTrue(close(row.get("cost_usd", -1), want["cost_usd"]),
                        "%s: cost_usd %s, want %.9f" % (key, row.get("cost_usd"), want["cost_usd"]))

    def assert_event_costs(self, cgroup):
        for e in self.daemon.calls(cgroup):
            d = detail(e)
            if d.get("status") != 200 or d.get("estimated"):
                continue
            want = call_cost(d["model"], d["input_tokens"], d["output_tokens"], d.get("cache_read_tokens", 0),
                             d.get("cache_write_tokens", 0))
            self.assertTrue(close(d.get("cost_usd", -1), want), "event cost %s want %.9f: %s"
                            % (d.get("cost_usd"), want, json.dumps(e)[:600]))

    # ---- tests --------------------------------------------------------------------------------
    def test_usage_by_cgroup_equals_what_was_served(self):
        node = shutil.which("node") is not None and shutil.which("npm") is not None
        if node:
            abtest.ensure_node_modules()
        with contextlib.ExitStack() as st:
            cg = {n: st.enter_context(Cgroup("acct-" + n)) for n in ("chat", "claude", "mixed")}
            # OpenAI chat, non-stream, with cached prompt tokens, keep-alive
            self.run_in(cg["chat"], "py_httpclient", "a-chat", "-n", "3", "--model", "acct-gpt",
                        "--prompt-chars", "1200", "--max-tokens", "40", "--header", "x-sim-cache-read: 20")
            # Anthropic streams with cache reads and writes (asyncio), non-stream (Node SDK)
            self.run_in(cg["claude"], "py_asyncio", "a-claude", "-n", "2", "--api", "anthropic", "--stream",
                        "--model", "acct-claude", "--max-tokens", "33", "--header", "x-sim-cache-read: 100",
                        "--header", "x-sim-cache-write: 50")
            if node:
                self.run_in(cg["claude"], "node_anthropic", "a-claude", "-n", "2", "--model", "acct-claude",
                            "--max-tokens", "21", "--header", "x-sim-cache-read: 7")
            # several models and wire formats in one cgroup
            self.run_in(cg["mixed"], "py_httpclient", "a-mixed", "-n", "2", "--api", "responses", "--stream",
                        "--model", "acct-mini", "--max-tokens", "50")
            self.run_in(cg["mixed"], "py_urllib", "a-mixed", "-n", "2", "--model", "acct-gpt", "--max-tokens", "8")
            # a gzip-encoded JSON body (Accept-Encoding: gzip and the simulator compresses)
            self.run_in(cg["mixed"], "py_urllib", "a-mixed", "-n", "1", "--model", "acct-gpt", "--max-tokens", "9",
                        "--gzip", "--header", "x-sim-gzip: 1")
            if shutil.which("curl"):
                self.run_in(cg["mixed"], "curl", "a-mixed", "-n", "2", "--stream", "--include-usage",
                            "--model", "acct-mini", "--max-tokens", "17")
            if node:
                self.run_in(cg["mixed"], "node_openai", "a-mixed", "-n", "1", "--stream", "--include-usage",
                            "--model", "acct-gpt", "--max-tokens", "19")
            want = {cg["chat"].path: expected(self.sim.records("a-chat")),
                    cg["claude"].path: expected(self.sim.records("a-claude")),
                    cg["mixed"].path: expected(self.sim.records("a-mixed"))}
            rows = self.wait_rows("cgroup", {k: v["calls"] for k, v in want.items()})
            self.no_more_calls("cgroup", {k: v["calls"] for k, v in want.items()})
            rows = self.rows("cgroup")
            for key, w in want.items():
                self.assertIn(key, rows, "no usage row for %s: %s" % (key, list(rows)))
                self.assertEqual(w["estimated_calls"], 0)
                if key != cg["mixed"].path:
                    self.assertGreater(w["cache_read_tokens"], 0, "the test meant to exercise cache tokens")
                self.assert_row_exact(rows[key], w, key)
                self.assert_event_costs(key)

    def test_streams_without_usage_are_estimated_within_25_percent(self):
        with Cgroup("acct-est") as cg:
            # OpenAI chat streams without stream_options.include_usage: the response carries no usage
            self.run_in(cg, "py_httpclient", "a-est", "-n", "3", "--stream", "--model", "acct-est",
                        "--prompt-chars", "6000", "--max-tokens", "300")
            if shutil.which("curl"):
                self.run_in(cg, "curl", "a-est", "-n", "1", "--stream", "--model", "acct-est",
                            "--prompt-chars", "4000", "--max-tokens", "200")
            served = self.sim.records("a-est")
            self.assertTrue(served and not any(r["usage_sent"] for r in served))
            truth = expected([dict(r, usage_sent=True) for r in served])
            rows = self.wait_rows("cgroup", {cg.path: len(served)})
            self.no_more_calls("cgroup", {cg.path: len(served)})
            row = self.rows("cgroup")[cg.path]
            self.assertEqual(row["calls"], len(served))
            self.assertEqual(row["estimated_calls"], len(served), row)
            for k in ("input_tokens", "output_tokens", "cost_usd"):
                self.assertGreater(row[k], 0, row)
                self.assertLessEqual(abs(row[k] - truth[k]), 0.25 * truth[k],
                                     "%s estimated %s, served %s (more than 25%% off)" % (k, row[k], truth[k]))
            ev = self.daemon.calls(cg.path)
            self.assertEqual(len(ev), len(served))
            for e in ev:
                d = detail(e)
                self.assertIs(d.get("estimated"), True, json.dumps(e)[:500])
                self.assertTrue(d.get("estimate_reason"), json.dumps(e)[:500])
                self.assertIs(d.get("complete"), True)
            del rows

    def test_usage_by_model_process_provider(self):
        with Cgroup("acct-dims") as cg:
            a1 = self.run_in(cg, "py_httpclient", "a-dims", "-n", "3", "--model", "acct-mx1", "--max-tokens", "11")
            a2 = self.run_in(cg, "py_asyncio", "a-dims", "-n", "2", "--model", "acct-mx2", "--max-tokens", "13",
                             "--stream", "--include-usage")
            served = self.sim.records("a-dims")
            by_model = {m: expected([r for r in served if r["model"] == m]) for m in ("acct-mx1", "acct-mx2")}
            rows = self.wait_rows("model", {m: w["calls"] for m, w in by_model.items()})
            self.no_more_calls("model", {m: w["calls"] for m, w in by_model.items()})
            rows = self.rows("model")
            for m, w in by_model.items():
                self.assertIn(m, rows)
                self.assert_row_exact(rows[m], w, m)
            # per process: key "<pid> <comm>"
            prow = self.rows("process")
            for a, m in ((a1, "acct-mx1"), (a2, "acct-mx2")):
                c = a.calls()[0]
                key = "%d %s" % (c["pid"], c["comm"])
                self.assertIn(key, prow, "no usage row %r: %s" % (key, list(prow)[:20]))
                self.assert_row_exact(prow[key], by_model[m], key)
            # per provider: every call of this daemon's DB is to the simulator; the totals add up
            all_served = self.sim.records()
            total = sum(r["calls"] for r in self.rows("provider").values())
            self.assertEqual(total, len(all_served), "provider rows' calls vs calls served by the simulator")
            crow = self.rows("cgroup")[cg.path]
            self.assert_row_exact(crow, expected(served), cg.path)

    def test_errors_bill_nothing_and_keep_error_facts(self):
        with Cgroup("acct-err") as cg:
            self.run_in(cg, "py_httpclient", "a-err", "--model", "acct-gpt", "--header", "x-sim-status: 429",
                        "--header", "x-sim-retry-after: 3")
            self.run_in(cg, "py_httpclient", "a-err", "--model", "acct-claude", "--api", "anthropic",
                        "--header", "x-sim-status: 529", "--header", "x-sim-retry-after: 5")
            self.run_in(cg, "py_httpclient", "a-err", "--model", "acct-gpt", "--header", "x-sim-status: 500")
            ev = abtest.wait_visible(self.daemon, cg.path, 3, self.last_end, what="3 error calls")
            by_status = {detail(e).get("status"): detail(e) for e in ev}
            self.assertEqual(sorted(by_status), [429, 500, 529])
            for st, d in by_status.items():
                self.assertEqual(d.get("input_tokens"), 0, d)
                self.assertEqual(d.get("output_tokens"), 0, d)
                self.assertEqual(d.get("cost_usd"), 0, d)
                self.assertTrue(d.get("error_type"), "status %d without error_type: %s" % (st, d))
            self.assertEqual(by_status[429].get("retry_after_s"), 3)
            self.assertEqual(by_status[529].get("retry_after_s"), 5)
            self.assertEqual(by_status[429].get("error_type"), "rate_limit_exceeded")
            self.assertEqual(by_status[529].get("error_type"), "overloaded_error")
            row = self.rows("cgroup").get(cg.path)
            if row is not None:
                self.assertEqual(row["input_tokens"], 0)
                self.assertEqual(row["output_tokens"], 0)
                self.assertEqual(row["cost_usd"], 0)


if __name__ == "__main__":
    unittest.main()
