#!/usr/bin/env python3
"""End-to-end: the wire shapes of the built-in OpenAI-compatible hosts, through a real
agentbraked and the TLS simulator (issue 13, item 5).

- Azure OpenAI: a deployment path with `?api-version=`, the key in the `api-key` header and
  `Host: myres.openai.azure.com`: the call is recorded once with that host as its provider,
  tokens and cost exact, and the key is nowhere (database, log, CLI output);
- DeepSeek usage (`prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`, no `cached_tokens`):
  the hits are the call's cache_read_tokens and priced at deepseek-chat's cache-hit price;
- Anthropic `cache_creation` with 1-hour writes: cost_usd prices them at 2x input.

The simulator is declared as an endpoint on 127.0.0.1 (the built-in hosts cannot be reached on
loopback); what is tested is what the daemon reads from these wires. Needs root and BPF.
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, Daemon, detail  # noqa: E402

AZURE_KEY = "azkey-e2e-" + "7" * 24 + "-azuresecret"
DS_KEY = "sk-ds-e2e-" + "5" * 24 + "-deepseeksecret"
ANT_KEY = "sk-ant-e2e-" + "3" * 24 + "-ttlsecret"

# A client that makes one POST over TLS to the simulator with the given path, headers and body
# (http.client on OpenSSL) and prints the status. Run inside a test cgroup.
CLIENT = r'''
import http.client, json, ssl, sys
port, cafile, path, hdrs, body = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
hdrs.setdefault("Content-Type", "application/json")
c.request("POST", path, body=body.encode(), headers=hdrs)
r = c.getresponse()
r.read()
print(r.status, flush=True)
c.close()
'''


def cost(rows, model, inp, out, cr=0, cw=0, cw1h=0, anthropic=False):
    """USD of one call at `rows[model]` = (input, output, cache_read, cache_write) per 1M."""
    p_in, p_out, p_cr, p_cw = (x / 1e6 for x in rows[model])
    if anthropic:
        return (inp - cr - cw) * p_in + (cw - cw1h) * p_cw + cw1h * 2 * p_in + cr * p_cr + out * p_out
    return (inp - cr) * p_in + cr * p_cr + out * p_out


# The policies/prices.yaml rows these tests use (a test fails if the table changes under it).
PRICES = {
    "gpt-4o": (2.50, 10.00, 1.25, 2.50),
    "deepseek-chat": (0.28, 0.42, 0.028, 0.28),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30, 3.75),
}


class Providers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        abtest.require_daemon()
        cls.sim = abtest.Simulator().__enter__()
        cls.daemon = Daemon(abtest.policy_for(cls.sim)).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.__exit__(None, None, None)
        cls.sim.__exit__(None, None, None)

    def post(self, cg, path, headers, body, tag):
        headers = dict(headers, **{"x-test-client": tag})
        p = cg.run([abtest.PYTHON, "-c", CLIENT, str(self.sim.port), self.sim.cafile, path,
                    json.dumps(headers), body],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err.decode(errors="replace")[-2000:])
        self.assertEqual(out.decode().strip(), "200", err.decode(errors="replace")[-2000:])
        served = self.sim.records(tag)
        self.assertEqual(len(served), 1, served)
        d = self.daemon
        calls = d.wait_for(lambda: d.calls(cg.path) or None, abtest.VISIBLE_WITHIN_S + 5, what="the llm_call of " + tag)
        abtest.assert_stays(lambda: len(d.calls(cg.path)) == 1, 0.5, "recorded once",
                            on_fail=lambda: str(d.calls(cg.path)))
        return calls[0], served[0]

    def assert_cost(self, ev, want):
        got = detail(ev).get("cost_usd")
        self.assertIsNotNone(got, ev)
        self.assertAlmostEqual(got, want, delta=1e-9 + 1e-6 * want, msg=str(ev))

    def test_azure_deployment_api_key(self):
        path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
        body = '{"model":"gpt-4o-2024-08-06","messages":[{"role":"user","content":"hi there"}],"max_tokens":9}'
        with Cgroup("azure") as cg:
            ev, s = self.post(cg, path, {"Host": "myres.openai.azure.com", "api-key": AZURE_KEY,
                                         "x-sim-input-tokens": "1000", "x-sim-cache-read": "400"}, body, "azure")
        dd = detail(ev)
        self.assertEqual(dd.get("path"), path, ev)
        self.assertEqual(dd.get("host"), "myres.openai.azure.com", ev)
        self.assertEqual(dd.get("provider"), "myres.openai.azure.com", ev)
        self.assertEqual(dd.get("api"), "openai", ev)
        self.assertEqual(dd.get("model"), "gpt-4o-2024-08-06", ev)
        self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens"), dd.get("cache_read_tokens")),
                         (1000, 9, 400), ev)
        self.assertEqual(s["input_tokens"], 1000)
        self.assert_cost(ev, cost(PRICES, "gpt-4o", 1000, 9, cr=400))
        self.daemon.cli("usage", "--by", "provider", "--json")
        self.daemon.cli("events", "--json")
        self.assertEqual(self.daemon.secret_hits([AZURE_KEY]), [], "the Azure api-key was kept somewhere")

    def test_deepseek_cache_hits(self):
        body = '{"model":"deepseek-chat","messages":[{"role":"user","content":"hello"}],"max_tokens":20}'
        with Cgroup("deepseek") as cg:
            ev, s = self.post(cg, "/chat/completions",
                              {"Host": "api.deepseek.com", "Authorization": "Bearer " + DS_KEY,
                               "x-sim-usage-style": "deepseek", "x-sim-input-tokens": "10000",
                               "x-sim-cache-read": "9000"}, body, "deepseek")
        dd = detail(ev)
        self.assertEqual(dd.get("provider"), "api.deepseek.com", ev)
        self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens"), dd.get("cache_read_tokens")),
                         (10000, 20, 9000), ev)
        self.assert_cost(ev, cost(PRICES, "deepseek-chat", 10000, 20, cr=9000))
        self.assertEqual(self.daemon.secret_hits([DS_KEY]), [])

    def test_anthropic_one_hour_cache_writes(self):
        body = ('{"model":"claude-sonnet-4-5-20250929","max_tokens":30,"stream":true,'
                '"messages":[{"role":"user","content":"hi"}]}')
        with Cgroup("ttl") as cg:
            ev, s = self.post(cg, "/v1/messages",
                              {"Host": "api.anthropic.com", "x-api-key": ANT_KEY, "anthropic-version": "2023-06-01",
                               "x-sim-input-tokens": "1000", "x-sim-cache-write": "30000",
                               "x-sim-cache-write-1h": "20000", "x-sim-cache-read": "60000"}, body, "ttl")
        dd = detail(ev)
        self.assertEqual(dd.get("api"), "anthropic", ev)
        self.assertEqual((dd.get("input_tokens"), dd.get("cache_write_tokens"), dd.get("cache_read_tokens"),
                          dd.get("output_tokens")), (91000, 30000, 60000, 30), ev)
        self.assertEqual(s["input_tokens"], 91000)
        want = cost(PRICES, "claude-sonnet-4-5", 91000, 30, cr=60000, cw=30000, cw1h=20000, anthropic=True)
        self.assert_cost(ev, want)
        # ... and not the all-5-minute price
        self.assertGreater(want - cost(PRICES, "claude-sonnet-4-5", 91000, 30, cr=60000, cw=30000, anthropic=True), 0.04)
        self.assertEqual(self.daemon.secret_hits([ANT_KEY]), [])


if __name__ == "__main__":
    unittest.main()
