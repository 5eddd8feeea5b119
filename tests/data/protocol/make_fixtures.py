#!/usr/bin/env python3
"""Writes the protocol test fixtures: for each exchange NAME, NAME.req holds the exact bytes the
client wrote (SSL_write plaintext) and NAME.resp the exact bytes it read (SSL_read plaintext).

The JSON bodies follow the shapes of the providers' public API references and SDK types (field
order as the official SDKs send it: messages before model). The secrets in them are fake and
exist so the tests can prove they never come out. Brotli responses (*_br.resp) are written by
brotli_fixture.c (needs libbrotlienc, not linked into the project); rerun both when changing.
Usage: python3 make_fixtures.py [outdir]
"""
import gzip, json, os, sys, zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

def dumps(o):
    return json.dumps(o, separators=(",", ":"))

def req(path, host, headers, body, method="POST", chunked=False):
    b = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head + chunk(b, 1000)
    if b or method == "POST":
        lines.append(f"Content-Length: {len(b)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b

def chunk(b, size, ext=False, trailer=None):
    out = b""
    for i in range(0, len(b), size):
        part = b[i:i + size]
        out += f"{len(part):x}".encode() + (b";name=value" if ext else b"") + b"\r\n" + part + b"\r\n"
    out += b"0\r\n"
    if trailer:
        out += trailer.encode() + b"\r\n"
    return out + b"\r\n"

def resp(status, headers, body, chunked=False, chunk_size=97, ext=False, trailer=None, reason="OK"):
    lines = [f"HTTP/1.1 {status} {reason}", "Date: Sat, 29 Nov 2025 10:00:00 GMT"]
    lines += [f"{k}: {v}" for k, v in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + chunk(body, chunk_size, ext, trailer)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

def sse(events):
    out = ""
    for ev in events:
        if isinstance(ev, tuple):
            out += f"event: {ev[0]}\ndata: {dumps(ev[1])}\n\n"
        elif ev == "[DONE]":
            out += "data: [DONE]\n\n"
        else:
            out += f"data: {dumps(ev)}\n\n"
    return out.encode()

def write(name, rq, rs):
    with open(os.path.join(OUT, name + ".req"), "wb") as f:
        f.write(rq)
    with open(os.path.join(OUT, name + ".resp"), "wb") as f:
        f.write(rs)

OPENAI_H = [("Authorization", "Bearer sk-proj-FAKESECRET0123456789"), ("Content-Type", "application/json"),
            ("User-Agent", "OpenAI/Python 1.55.0"), ("Accept", "application/json"),
            ("Cookie", "__cf_bm=FAKECOOKIE")]
ANTH_H = [("x-api-key", "sk-ant-api03-FAKESECRET"), ("anthropic-version", "2023-06-01"),
          ("Content-Type", "application/json")]
MSGS = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in three languages."}]
RL_OPENAI = [("x-ratelimit-limit-requests", "10000"), ("x-ratelimit-remaining-requests", "9999"),
             ("x-ratelimit-reset-requests", "6ms"), ("x-ratelimit-limit-tokens", "30000000"),
             ("x-ratelimit-remaining-tokens", "29999990"), ("x-ratelimit-reset-tokens", "0s"),
             ("openai-processing-ms", "412"), ("Set-Cookie", "__cf_bm=FAKESETCOOKIE; path=/")]

def chat_completion(content, usage, model="gpt-4o-mini-2024-07-18"):
    return {"id": "chatcmpl-AB12", "object": "chat.completion", "created": 1732874400, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_0ba0d124f1"}

OA_USAGE = {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 6, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

# 1. OpenAI chat, JSON
body = dumps({"messages": MSGS, "model": "gpt-4o-mini", "max_completion_tokens": 256})
cc = dumps(chat_completion("Hello! Bonjour! Hola!", OA_USAGE)).encode()
write("openai_chat_json", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body),
      resp(200, [("Content-Type", "application/json")] + RL_OPENAI, cc))

# 2. OpenAI chat, gzip and deflate (zlib and raw) bodies
write("openai_chat_gzip", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body),
      resp(200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], gzip.compress(cc, mtime=0)))
write("openai_chat_deflate", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body),
      resp(200, [("Content-Type", "application/json"), ("Content-Encoding", "deflate")], zlib.compress(cc)))
co = zlib.compressobj(6, zlib.DEFLATED, -15)
raw_deflate = co.compress(cc) + co.flush()
write("openai_chat_rawdeflate", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body),
      resp(200, [("Content-Type", "application/json"), ("Content-Encoding", "deflate")], raw_deflate, chunked=True))

# 3. OpenAI chat, stream with include_usage (chunked SSE)
def chat_chunks(words, usage, model="gpt-4o-mini-2024-07-18", usage_each=False):
    evs = []
    base = {"id": "chatcmpl-AB13", "object": "chat.completion.chunk", "created": 1732874401, "model": model,
            "system_fingerprint": "fp_0ba0d124f1"}
    first = dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                 "logprobs": None, "finish_reason": None}])
    if usage is not None and not usage_each:
        first["usage"] = None
    evs.append(first)
    for i, w in enumerate(words):
        e = dict(base, choices=[{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}])
        if usage_each:
            e["usage"] = {"prompt_tokens": 19, "completion_tokens": i + 1, "total_tokens": 20 + i}
        elif usage is not None:
            e["usage"] = None
        evs.append(e)
    last = dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
    if usage_each:
        last["usage"] = {"prompt_tokens": 19, "completion_tokens": len(words), "total_tokens": 19 + len(words)}
    elif usage is not None:
        last["usage"] = None
    evs.append(last)
    if usage is not None and not usage_each:
        evs.append(dict(base, choices=[], usage=usage))
    evs.append("[DONE]")
    return sse(evs)

WORDS = ["Hello", "!", " Bonjour", "!", " Hola", "!"]
sbody = dumps({"messages": MSGS, "model": "gpt-4o-mini", "stream": True,
               "stream_options": {"include_usage": True}, "max_tokens": 100})
write("openai_chat_sse", req("/v1/chat/completions", "api.openai.com", OPENAI_H, sbody),
      resp(200, [("Content-Type", "text/event-stream; charset=utf-8")] + RL_OPENAI,
           chat_chunks(WORDS, OA_USAGE), chunked=True, chunk_size=61))
nbody = dumps({"messages": MSGS, "model": "gpt-4o-mini", "stream": True})
write("openai_chat_sse_nousage", req("/v1/chat/completions", "api.openai.com", OPENAI_H, nbody),
      resp(200, [("Content-Type", "text/event-stream; charset=utf-8")], chat_chunks(WORDS, None), chunked=True))
# OpenAI-compatible server (vLLM style, continuous usage stats), custom host and port, no TLS default port
vbody = dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": MSGS, "stream": True,
               "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
write("compat_chat_sse_continuous", req("/v1/chat/completions", "127.0.0.1:8000",
      [("Content-Type", "application/json")], vbody),
      resp(200, [("Content-Type", "text/event-stream")],
           chat_chunks(WORDS, {}, model="meta-llama/Llama-3.1-8B-Instruct", usage_each=True), chunked=True))

# 4. OpenAI legacy completions
lbody = dumps({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7})
lresp = dumps({"id": "cmpl-1", "object": "text_completion", "created": 1732874400, "model": "gpt-3.5-turbo-instruct",
               "choices": [{"text": "\n\nThis is a test.", "index": 0, "logprobs": None, "finish_reason": "length"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).encode()
write("openai_completions_json", req("/v1/completions", "api.openai.com", OPENAI_H, lbody),
      resp(200, [("Content-Type", "application/json")], lresp))

# 5. OpenAI Responses
rbody = dumps({"input": [{"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}],
               "model": "o4-mini", "max_output_tokens": 500, "stream": True})
RUSAGE = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 87,
          "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 123}
robj = {"id": "resp_67cb", "object": "response", "created_at": 1741290958, "status": "in_progress",
        "model": "o4-mini-2025-04-16", "output": [], "usage": None, "text": {"format": {"type": "text"}},
        "instructions": None, "max_output_tokens": 500}
story = ["Once", " upon", " a time", ", a unicorn", " slept", "."]
revs = [("response.created", {"type": "response.created", "sequence_number": 0, "response": robj}),
        ("response.in_progress", {"type": "response.in_progress", "sequence_number": 1, "response": robj})]
for i, d in enumerate(story):
    revs.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1",
                 "output_index": 0, "content_index": 0, "delta": d, "sequence_number": 2 + i}))
full = "".join(story)
revs.append(("response.output_text.done", {"type": "response.output_text.done", "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "text": full, "sequence_number": 9}))
done = dict(robj, status="completed", usage=RUSAGE,
            output=[{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": full, "annotations": []}]}])
revs.append(("response.completed", {"type": "response.completed", "sequence_number": 10, "response": done}))
write("openai_responses_sse", req("/v1/responses", "api.openai.com", OPENAI_H, rbody),
      resp(200, [("Content-Type", "text/event-stream; charset=utf-8")], sse(revs), chunked=True))
rjbody = dumps({"model": "o4-mini", "input": "Tell me a joke.", "max_output_tokens": 300})
write("openai_responses_json", req("/v1/responses", "api.openai.com", OPENAI_H, rjbody),
      resp(200, [("Content-Type", "application/json")], dumps(done).encode()))

# 6. Anthropic Messages
abody = dumps({"max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}],
               "model": "claude-sonnet-4-5"})
AUSAGE = {"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 15,
          "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0},
          "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"}
amsg = {"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": AUSAGE}
RL_ANTH = [("anthropic-ratelimit-requests-limit", "4000"), ("anthropic-ratelimit-requests-remaining", "3999"),
           ("anthropic-ratelimit-requests-reset", "2025-11-29T10:00:01Z"),
           ("anthropic-ratelimit-tokens-limit", "400000"), ("anthropic-ratelimit-tokens-remaining", "399000"),
           ("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG")]
write("anthropic_json", req("/v1/messages", "api.anthropic.com", ANTH_H, abody),
      resp(200, [("Content-Type", "application/json")] + RL_ANTH, dumps(amsg).encode()))
sabody = dumps({"max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}],
                "model": "claude-sonnet-4-5", "stream": True})
start_msg = dict(amsg, content=[], stop_reason=None,
                 usage={"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5,
                        "output_tokens": 1})
aevs = [("message_start", {"type": "message_start", "message": start_msg}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"})]
for t in ["Hi", "! My name", " is Claude."]:
    aevs.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": t}}))
aevs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
         ("message_delta", {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                            "usage": {"output_tokens": 10}}),
         ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 15}}),
         ("message_stop", {"type": "message_stop"})]
write("anthropic_sse", req("/v1/messages", "api.anthropic.com", ANTH_H, sabody),
      resp(200, [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")] + RL_ANTH,
           sse(aevs), chunked=True, chunk_size=113, ext=True, trailer="x-trailer: done"))
# a stream that is cut after message_start and one delta (no message_delta): estimated output
acut = sse(aevs[:4])
write("anthropic_sse_cut", req("/v1/messages", "api.anthropic.com", ANTH_H, sabody),
      resp(200, [("Content-Type", "text/event-stream; charset=utf-8")], acut, chunked=True)[:-5])
# 529 overloaded and 429 rate limited
err = dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
write("anthropic_529", req("/v1/messages", "api.anthropic.com", ANTH_H, abody),
      resp(529, [("Content-Type", "application/json")], err, reason="Overloaded"))
err = dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}).encode()
write("anthropic_429", req("/v1/messages", "api.anthropic.com", ANTH_H, abody),
      resp(429, [("Content-Type", "application/json"), ("retry-after", "17")] + RL_ANTH, err, reason="Too Many Requests"))
oerr = dumps({"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "param": None,
                        "code": "rate_limit_exceeded"}}).encode()
write("openai_429", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body),
      resp(429, [("Content-Type", "application/json"), ("retry-after", "Sat, 29 Nov 2025 10:00:20 GMT"),
                 ("x-ratelimit-remaining-requests", "0")], oerr, reason="Too Many Requests"))

# 7. Gemini
gbody = dumps({"contents": [{"role": "user", "parts": [{"text": "Explain how AI works in a few words"}]}],
               "generationConfig": {"maxOutputTokens": 200, "temperature": 0.2}})
GU = {"promptTokenCount": 11, "candidatesTokenCount": 27, "totalTokenCount": 50, "cachedContentTokenCount": 3,
      "thoughtsTokenCount": 12, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}]}
gresp = {"candidates": [{"content": {"parts": [{"text": "AI learns patterns from data to make predictions."}],
                                     "role": "model"}, "finishReason": "STOP", "index": 0}],
         "usageMetadata": GU, "modelVersion": "gemini-2.5-flash", "responseId": "abc123"}
GH = [("x-goog-api-key", "AIzaFAKESECRET"), ("Content-Type", "application/json")]
write("gemini_json", req("/v1beta/models/gemini-2.5-flash:generateContent", "generativelanguage.googleapis.com", GH, gbody),
      resp(200, [("Content-Type", "application/json; charset=UTF-8"), ("Vary", "Origin")], dumps(gresp).encode(), chunked=True))
gchunks = []
parts = ["AI learns", " patterns from data", " to make predictions."]
for i, p in enumerate(parts):
    c = {"candidates": [{"content": {"parts": [{"text": p}], "role": "model"}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 9 * (i + 1), "totalTokenCount": 11 + 9 * (i + 1) + 12,
                           "thoughtsTokenCount": 12, "cachedContentTokenCount": 3},
         "modelVersion": "gemini-2.5-flash", "responseId": "abc124"}
    if i == len(parts) - 1:
        c["candidates"][0]["finishReason"] = "STOP"
    gchunks.append(c)
write("gemini_sse", req("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=AIzaFAKESECRETQUERY",
                         "generativelanguage.googleapis.com", [("Content-Type", "application/json")], gbody),
      resp(200, [("Content-Type", "text/event-stream")],
           "".join(f"data: {dumps(c)}\r\n\r\n" for c in gchunks).encode(), chunked=True))
arr = ("[" + "\n,\r\n".join(json.dumps(c, indent=2) for c in gchunks) + "]").encode()
write("gemini_array", req("/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=AIzaFAKESECRETQUERY",
                           "generativelanguage.googleapis.com", [("Content-Type", "application/json")], gbody),
      resp(200, [("Content-Type", "application/json; charset=UTF-8")], arr, chunked=True, chunk_size=50))
write("vertex_json", req("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
                          "us-central1-aiplatform.googleapis.com", [("Authorization", "Bearer ya29.FAKE"),
                                                                   ("Content-Type", "application/json")], gbody),
      resp(200, [("Content-Type", "application/json; charset=UTF-8")], dumps(dict(gresp, modelVersion="gemini-2.0-flash-001")).encode()))

# 8. Ollama (plain HTTP, NDJSON stream by default)
obody = dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]})
olines = []
for w in ["The", " sky", " is", " blue", "."]:
    olines.append({"model": "llama3.2", "created_at": "2025-11-29T10:00:00.1Z",
                   "message": {"role": "assistant", "content": w}, "done": False})
olines.append({"model": "llama3.2", "created_at": "2025-11-29T10:00:00.5Z", "message": {"role": "assistant", "content": ""},
               "done_reason": "stop", "done": True, "total_duration": 4883583458, "load_duration": 1334875,
               "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": 282,
               "eval_duration": 4535599000})
write("ollama_chat_ndjson", req("/api/chat", "localhost:11434", [("Content-Type", "application/json")], obody),
      resp(200, [("Content-Type", "application/x-ndjson")], "".join(dumps(l) + "\n" for l in olines).encode(), chunked=True))
ogbody = dumps({"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False,
                "options": {"num_predict": 128, "temperature": 0}})
ogresp = dumps({"model": "llama3.2", "created_at": "2025-11-29T10:00:00Z", "response": "Rayleigh scattering.",
                "done": True, "done_reason": "stop", "context": [1, 2, 3], "total_duration": 5043500667,
                "prompt_eval_count": 26, "prompt_eval_duration": 325953000, "eval_count": 290,
                "eval_duration": 4709213000}).encode()
write("ollama_generate_json", req("/api/generate", "127.0.0.1:11434", [("Content-Type", "application/json")], ogbody),
      resp(200, [("Content-Type", "application/json; charset=utf-8")], ogresp))

# 9. brotli inputs (compressed by brotli_fixture.c into *.br.resp)
write("anthropic_sse_br", req("/v1/messages", "api.anthropic.com", ANTH_H, sabody), b"")
write("openai_chat_br", req("/v1/chat/completions", "api.openai.com", OPENAI_H, body), b"")
os.remove(os.path.join(OUT, "anthropic_sse_br.resp"))
os.remove(os.path.join(OUT, "openai_chat_br.resp"))
with open(os.path.join(OUT, "anthropic_sse.br.plain"), "wb") as f:
    f.write(sse(aevs))
with open(os.path.join(OUT, "openai_chat_json.br.plain"), "wb") as f:
    f.write(cc)
print("fixtures written to", OUT)
