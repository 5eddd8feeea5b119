// protocol_bench — Google Benchmark for the protocol module. Link with ab_protocol and
// benchmark::benchmark_main; AB_TEST_DATA may point at tests/data (defaults to the source tree).
//   BM_Request1MiB      one 1 MiB chat request (model at the end) through Connection, 16 KiB writes
//   BM_JsonScan1MiB     the streaming scanner alone over the same body
//   BM_KeepAliveReplay  a recorded keep-alive stream of many small calls (JSON + SSE), as the
//                       daemon sees it: one record per SSL_write/SSL_read (≤ 16 KiB pieces)
//   BM_H2Replay         the same calls over ONE HTTP/2 connection (HPACK by nghttp2's deflater,
//                       headers and body in separate writes, responses read in 300-byte records)
#include <benchmark/benchmark.h>

#include <algorithm>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "protocol/adapter.h"
#include "protocol/connection.h"
#include "protocol/json_scan.h"
#include "../unit/protocol/h2_test_util.h"

using namespace ab::protocol;

namespace {

// Fixtures: AB_TEST_DATA when the build defines it, else tests/data next to this file.
std::string data_dir() {
#if defined(AB_TEST_DATA)
  return AB_TEST_DATA;
#elif defined(AB_SOURCE_DIR)
  return std::string(AB_SOURCE_DIR) + "/tests/data";
#else
  std::string f = __FILE__;
  return f.substr(0, f.rfind('/')) + "/../data";
#endif
}

std::string slurp(const std::string& name) {
  std::ifstream f(data_dir() + "/protocol/" + name, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string big_body() {
  std::string body = R"({"messages":[)";
  int n = 0;
  while (body.size() < (1u << 20)) {
    if (n) body += ',';
    body += R"({"role":"user","content":"message )" + std::to_string(n++) + " " + std::string(700, 'w') +
            R"( with \"quotes\" and \n newlines"})";
  }
  body += R"(],"stream":true,"max_tokens":4096,"model":"gpt-4o"})";
  return body;
}

struct Record {
  Dir d;
  std::string bytes;
};

std::vector<Record> keepalive_stream(size_t* calls) {
  std::vector<Record> recs;
  const char* names[] = {"openai_chat_json", "openai_chat_sse", "anthropic_sse", "anthropic_json",
                         "gemini_sse", "openai_responses_sse", "openai_chat_gzip"};
  *calls = 0;
  for (int round = 0; round < 100; ++round) {
    for (const char* n : names) {
      std::string rq = slurp(std::string(n) + ".req"), rs = slurp(std::string(n) + ".resp");
      // headers and body in separate writes, as Python does
      size_t he = rq.find("\r\n\r\n") + 4;
      recs.push_back({Dir::Request, rq.substr(0, he)});
      recs.push_back({Dir::Request, rq.substr(he)});
      // responses read in small records (SSE events arrive one by one)
      for (size_t i = 0; i < rs.size(); i += 300) recs.push_back({Dir::Response, rs.substr(i, 300)});
      ++*calls;
    }
  }
  return recs;
}

void BM_Request1MiB(benchmark::State& state) {
  std::string body = big_body();
  std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n";
  for (auto _ : state) {
    Connection c;
    c.feed(Dir::Request, head, 1);
    for (size_t i = 0; i < body.size(); i += 16384) c.feed(Dir::Request, std::string_view(body).substr(i, 16384), 2);
    auto r = c.take_requests();
    if (r.size() != 1 || r[0].model != "gpt-4o") state.SkipWithError("model not found");
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(body.size() + head.size()));
}
BENCHMARK(BM_Request1MiB)->Unit(benchmark::kMillisecond);

void BM_JsonScan1MiB(benchmark::State& state) {
  std::string body = big_body();
  for (auto _ : state) {
    JsonScanner sc(&Adapter::request_spec());
    sc.feed(body);
    benchmark::DoNotOptimize(sc.string_bytes());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(body.size()));
}
BENCHMARK(BM_JsonScan1MiB)->Unit(benchmark::kMillisecond);

void BM_KeepAliveReplay(benchmark::State& state) {
  size_t calls = 0;
  std::vector<Record> recs = keepalive_stream(&calls);
  uint64_t bytes = 0;
  for (auto& r : recs) bytes += r.bytes.size();
  for (auto _ : state) {
    Connection c;
    uint64_t t = 0;
    size_t got = 0;
    for (const auto& r : recs) {
      c.feed(r.d, r.bytes, ++t);
      if ((t & 63) == 0) got += c.take_exchanges().size();
    }
    c.close(++t);
    got += c.take_exchanges().size();
    if (got != calls) state.SkipWithError("lost calls");
  }
  state.counters["records/s"] = benchmark::Counter(double(recs.size()) * double(state.iterations()),
                                                   benchmark::Counter::kIsRate);
  state.counters["calls/s"] = benchmark::Counter(double(calls) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
}
BENCHMARK(BM_KeepAliveReplay)->Unit(benchmark::kMillisecond);

// HTTP/1 message → (head lines, body with chunked framing removed).
struct Msg {
  std::string start;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

Msg parse_h1(const std::string& m) {
  Msg out;
  size_t he = m.find("\r\n\r\n");
  std::string head = m.substr(0, he);
  std::string body = m.substr(he + 4);
  size_t pos = head.find("\r\n");
  out.start = head.substr(0, pos);
  bool chunked = false;
  while (pos != std::string::npos) {
    size_t next = head.find("\r\n", pos + 2);
    std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    pos = next;
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon), v = line.substr(colon + 1);
    std::transform(k.begin(), k.end(), k.begin(), ::tolower);
    while (!v.empty() && v[0] == ' ') v.erase(0, 1);
    if (k == "transfer-encoding") {
      chunked = true;
      continue;
    }
    if (k == "connection" || k == "keep-alive" || k == "content-length") continue;
    out.headers.emplace_back(k, v);
  }
  if (!chunked) {
    out.body = body;
    return out;
  }
  size_t i = 0;
  while (i < body.size()) {
    size_t eol = body.find("\r\n", i);
    if (eol == std::string::npos) break;
    size_t n = std::stoul(body.substr(i, eol - i), nullptr, 16);
    if (n == 0) break;
    out.body += body.substr(eol + 2, n);
    i = eol + 2 + n + 2;
  }
  return out;
}

std::vector<Record> h2_stream(size_t* calls) {
  using ab::protocol::test::H2Writer;
  std::vector<Record> recs;
  H2Writer client, server;
  const char* names[] = {"openai_chat_json", "openai_chat_sse", "anthropic_sse", "anthropic_json",
                         "gemini_sse", "openai_responses_sse", "openai_chat_gzip"};
  *calls = 0;
  recs.push_back({Dir::Request, H2Writer::preface() + H2Writer::settings({{0x3, 100}})});
  recs.push_back({Dir::Response, H2Writer::settings({{0x3, 100}}) + H2Writer::settings_ack()});
  uint32_t sid = 1;
  for (int round = 0; round < 100; ++round) {
    for (const char* n : names) {
      Msg rq = parse_h1(slurp(std::string(n) + ".req")), rs = parse_h1(slurp(std::string(n) + ".resp"));
      std::vector<std::pair<std::string, std::string>> hs;
      std::string method = rq.start.substr(0, rq.start.find(' '));
      std::string target = rq.start.substr(method.size() + 1, rq.start.rfind(' ') - method.size() - 1);
      std::string host;
      for (auto& [k, v] : rq.headers)
        if (k == "host") host = v;
      hs.push_back({":method", method});
      hs.push_back({":scheme", "https"});
      hs.push_back({":authority", host});
      hs.push_back({":path", target});
      for (auto& h : rq.headers)
        if (h.first != "host") hs.push_back(h);
      recs.push_back({Dir::Request, client.headers(sid, hs, rq.body.empty())});
      if (!rq.body.empty()) recs.push_back({Dir::Request, H2Writer::data(sid, rq.body, true)});
      std::vector<std::pair<std::string, std::string>> rh{{":status", rs.start.substr(9, 3)}};
      for (auto& h : rs.headers) rh.push_back(h);
      std::string wire = server.headers(sid, rh, false);
      for (size_t i = 0; i < rs.body.size(); i += 1000)
        wire += H2Writer::data(sid, rs.body.substr(i, 1000), i + 1000 >= rs.body.size());
      if (rs.body.empty()) wire += H2Writer::data(sid, "", true);
      for (size_t i = 0; i < wire.size(); i += 300) recs.push_back({Dir::Response, wire.substr(i, 300)});
      sid += 2;
      ++*calls;
    }
  }
  return recs;
}

void BM_H2Replay(benchmark::State& state) {
  size_t calls = 0;
  std::vector<Record> recs = h2_stream(&calls);
  uint64_t bytes = 0;
  for (auto& r : recs) bytes += r.bytes.size();
  for (auto _ : state) {
    Connection c;
    uint64_t t = 0;
    size_t got = 0, llm_ok = 0;
    for (const auto& r : recs) {
      c.feed(r.d, r.bytes, ++t);
      if ((t & 63) == 0)
        for (auto& x : c.take_exchanges()) got++, llm_ok += x.is_llm && x.call.complete;
    }
    c.close(++t);
    for (auto& x : c.take_exchanges()) got++, llm_ok += x.is_llm && x.call.complete;
    if (got != calls || llm_ok != calls) state.SkipWithError("lost calls");
  }
  state.counters["records/s"] = benchmark::Counter(double(recs.size()) * double(state.iterations()),
                                                   benchmark::Counter::kIsRate);
  state.counters["calls/s"] = benchmark::Counter(double(calls) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
}
BENCHMARK(BM_H2Replay)->Unit(benchmark::kMillisecond);

}  // namespace
