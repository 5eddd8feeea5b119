#!/usr/bin/env python3
"""Wires (issue Reach II, item 4): AWS Bedrock's four operations, read from a real client's TLS
writes and reads by the probes, against the simulator on loopback: Converse (JSON),
ConverseStream (the binary application/vnd.amazon.eventstream framing), InvokeModel (Claude's
body, the X-Amzn-Bedrock-*-Token-Count headers) and InvokeModelWithResponseStream (base64
chunks). Each call recorded once, api bedrock, provider aws, model from the path, tokens exact,
the SigV4 Authorization header nowhere."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abtest  # noqa: E402
from abtest import Cgroup, detail  # noqa: E402

SIGNATURE = "5ec12e7b0d1ab5a7e0f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

# One Bedrock call over TLS with http.client (OpenSSL), the body read to its end.
CLIENT = r"""
import http.client, json, ssl, sys, urllib.parse
port, cafile, op, model, sig, tag = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=30)
if op.startswith("converse"):
    body = {"messages": [{"role": "user", "content": [{"text": "Say hello to the brake tests, please."}]}],
            "inferenceConfig": {"maxTokens": 12}}
else:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 12,
            "messages": [{"role": "user", "content": "Say hello to the brake tests, please."}]}
data = json.dumps(body).encode()
path = "/model/%s/%s" % (urllib.parse.quote(model, safe=""), op)
c.request("POST", path, body=data, headers={
    "Content-Type": "application/json", "x-test-client": tag,
    "X-Amz-Date": "20261207T120000Z",
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/bedrock/aws4_request, "
                     "SignedHeaders=host;x-amz-date, Signature=" + sig})
r = c.getresponse()
raw = r.read()
print(json.dumps({"status": r.status, "bytes": len(raw), "type": r.getheader("Content-Type")}), flush=True)
"""


class Bedrock(abtest.SimulatorCase):
    @classmethod
    def class_policy(cls):
        return ("endpoints:\n"
                "  - {host: 127.0.0.1, port: %d, api: bedrock, tls: true}\n" % cls.sim.port)

    def call(self, op, tag):
        with Cgroup("wires-" + tag) as cg:
            p = cg.run([sys.executable, "-c", CLIENT, str(self.sim.port), self.sim.cafile, op, MODEL, SIGNATURE, tag],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate(timeout=10)
            self.assertEqual(p.returncode, 0, err.decode(errors="replace")[-2000:])
            res = json.loads(out.decode().strip().splitlines()[-1])
            self.assertEqual(res["status"], 200, res)
            self.sim.wait_quiet(tag)
            served = self.sim.records(tag)
            self.assertEqual(len(served), 1, served)
            d = self.daemon
            calls = d.wait_for(lambda: d.calls(cg.path) or None, 15, what="the %s call recorded" % op)
            self.assertEqual(len(calls), 1, calls)
            c = calls[0]
            dd = detail(c)
            s = served[0]
            self.assertEqual(c.get("pid"), p.pid, c)
            self.assertEqual(dd.get("api"), "bedrock", dd)
            self.assertEqual(dd.get("provider"), "aws", dd)
            self.assertEqual(dd.get("model"), MODEL, dd)
            self.assertEqual(dd.get("stream"), op.endswith("stream"), dd)
            self.assertFalse(dd.get("estimated"), dd)
            self.assertEqual((dd.get("input_tokens"), dd.get("output_tokens")),
                             (s["input_tokens"], s["output_tokens"]), "tokens differ from what was served: %s" % dd)
            self.assertEqual(d.secret_hits([SIGNATURE]), [], "the SigV4 signature reached the DB, log or CLI")
            return d

    def test_converse(self):
        self.call("converse", "br-converse")

    def test_converse_stream_eventstream(self):
        d = self.call("converse-stream", "br-cstream")
        c = d.status().get("counters", {})
        self.assertGreaterEqual(c.get("eventstream_frames", 0), 5, c)  # start, deltas, stops, metadata
        self.assertEqual(c.get("eventstream_bad_frames", 0), 0, c)

    def test_invoke_model_headers(self):
        self.call("invoke", "br-invoke")

    def test_invoke_with_response_stream_chunks(self):
        self.call("invoke-with-response-stream", "br-istream")


if __name__ == "__main__":
    unittest.main()
