#!/usr/bin/env bash
# Builds the protocol fuzz targets into BUILD_DIR and runs each for SECONDS (default 30),
# seeded with the recorded fixtures. Exits non-zero when a target crashes or fails to build.
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]
set -euo pipefail
BUILD_DIR=${1:?usage: run.sh BUILD_DIR [SECONDS]}
SECONDS_PER_TARGET=${2:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

if ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 &&
   ! ls /usr/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
  echo "libFuzzer runtime missing: apt-get install -y libclang-rt-14-dev" >&2
  exit 2
fi

CXX=${CXX:-clang++}
command -v "$CXX" >/dev/null || CXX=clang++-14
cmake -S "$HERE" -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Debug >/dev/null
make -C "$BUILD_DIR" -j"$(nproc)" >/dev/null

# Seed corpora: fixtures (with an op-script header for fuzz_connection).
mkdir -p "$BUILD_DIR/corpus"
for t in fuzz_connection fuzz_json_scan fuzz_docstream fuzz_decoder fuzz_h2 fuzz_eventstream; do
  mkdir -p "$BUILD_DIR/corpus/$t"
done
for f in "$ROOT"/tests/data/protocol/*.req "$ROOT"/tests/data/protocol/*.resp; do
  b=$(basename "$f")
  cp "$f" "$BUILD_DIR/corpus/fuzz_decoder/$b"
  { printf '\x00'; cat "$f"; } > "$BUILD_DIR/corpus/fuzz_json_scan/$b"
  { printf '\x02\x00'; cat "$f"; } > "$BUILD_DIR/corpus/fuzz_docstream/$b"
done
for r in "$ROOT"/tests/data/protocol/*.req; do
  n=${r%.req}
  # one long request op then one long response op (0xfc = long piece, direction by low bit)
  python3 - "$r" "$n.resp" "$BUILD_DIR/corpus/fuzz_connection/$(basename "$n")" <<'PY'
import sys
req = open(sys.argv[1], 'rb').read(); resp = open(sys.argv[2], 'rb').read()
out = b''
for data, d in ((req, 0), (resp, 1)):
    i = 0
    while i < len(data):
        n = min(len(data) - i, 200 * 16 + 1)
        k = (n - 1) // 16
        n = k * 16 + 1
        out += bytes([0xfc | d, k]) + data[i:i + n]
        i += n
open(sys.argv[3], 'wb').write(out)
PY
done

# fuzz_h2: HTTP/2 frames after the preface (HPACK literals without indexing, then indexed
# names), request and response, in the same op-script form.
python3 - "$BUILD_DIR/corpus/fuzz_h2" <<'PY'
import json, os, sys
def frame(t, fl, sid, p):
    return len(p).to_bytes(3, 'big') + bytes([t, fl]) + sid.to_bytes(4, 'big') + p
def lit(k, v, idx=False):  # literal with incremental indexing (0x40) or without (0x00)
    return bytes([0x40 if idx else 0x00, len(k)]) + k + bytes([len(v)]) + v
def ops(data, d):
    out = b''; i = 0
    while i < len(data):
        n = min(len(data) - i, 200 * 16 + 1); k = (n - 1) // 16; n = k * 16 + 1
        out += bytes([0xfc | d, k]) + data[i:i + n]; i += n
    return out
body = json.dumps({"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
sse = (b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
       b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n')
hb = (bytes([0x83, 0x87]) + lit(b':authority', b'api.openai.com', True) + lit(b':path', b'/v1/chat/completions', True)
      + lit(b'authorization', b'Bearer sk-x') + lit(b'content-type', b'application/json', True))
req = frame(4, 0, 0, b'\x00\x03\x00\x00\x00\x64') + frame(1, 4, 1, hb) + frame(0, 1, 1, body)
req += frame(1, 5 | 0x08, 3, b'\x02' + bytes([0x83, 0x87, 0xbf, 0xbe]) + b'\x00\x00') + frame(9, 4, 3, b'')
resp = frame(4, 0, 0, b'\x00\x01\x00\x00\x10\x00') + frame(4, 1, 0, b'') + frame(1, 4, 1, bytes([0x88]) +
       lit(b'content-type', b'text/event-stream')) + frame(0, 8, 1, b'\x05' + sse[:40] + b'\x00' * 5) + frame(0, 1, 1, sse[40:])
resp += frame(3, 0, 3, b'\x00\x00\x00\x08') + frame(7, 0, 0, b'\x00\x00\x00\x01\x00\x00\x00\x00')
open(os.path.join(sys.argv[1], 'chat_stream'), 'wb').write(ops(req, 0) + ops(resp, 1))
open(os.path.join(sys.argv[1], 'chat_stream_bytewise'), 'wb').write(
    b''.join(bytes([0x00 | (i % 2), ]) + bytes([b]) for i, b in enumerate(req[:200])))
PY

# fuzz_eventstream: a ConverseStream and an InvokeModelWithResponseStream body.
python3 - "$BUILD_DIR/corpus/fuzz_eventstream" <<'PY'
import base64, json, os, sys, zlib
def msg(headers, payload):
    h = b''.join(bytes([len(k)]) + k + b'\x07' + len(v).to_bytes(2, 'big') + v for k, v in headers)
    pre = (12 + len(h) + len(payload) + 4).to_bytes(4, 'big') + len(h).to_bytes(4, 'big')
    m = pre + zlib.crc32(pre).to_bytes(4, 'big') + h + payload
    return m + zlib.crc32(m).to_bytes(4, 'big')
def ev(t, p):
    return msg([(b':event-type', t), (b':content-type', b'application/json'), (b':message-type', b'event')],
               json.dumps(p).encode())
conv = (ev(b'messageStart', {"role": "assistant"}) + ev(b'contentBlockDelta', {"delta": {"text": "hi"}}) +
        ev(b'metadata', {"usage": {"inputTokens": 5, "outputTokens": 2, "cacheReadInputTokens": 1}}))
inner = [{"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}},
         {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3, "outputTokenCount": 4}}]
inv = b''.join(ev(b'chunk', {"bytes": base64.b64encode(json.dumps(x).encode()).decode()}) for x in inner)
exc = msg([(b':exception-type', b'throttlingException'), (b':message-type', b'exception')], b'{"message":"x"}')
open(os.path.join(sys.argv[1], 'converse'), 'wb').write(b'\x10\x05' + conv)
open(os.path.join(sys.argv[1], 'invoke'), 'wb').write(b'\x11\x85' + inv + exc)
PY

status=0
for t in fuzz_connection fuzz_json_scan fuzz_docstream fuzz_decoder fuzz_h2 fuzz_eventstream; do
  echo "== $t for ${SECONDS_PER_TARGET}s"
  mkdir -p "$BUILD_DIR/artifacts/$t"
  if ! "$BUILD_DIR/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$BUILD_DIR/artifacts/$t/" -print_final_stats=1 \
       "$BUILD_DIR/corpus/$t" 2>"$BUILD_DIR/$t.log"; then
    echo "FAILED: $t (see $BUILD_DIR/$t.log and $BUILD_DIR/artifacts/$t/)" >&2
    tail -30 "$BUILD_DIR/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$BUILD_DIR/$t.log" | tail -2
  fi
done
exit $status
