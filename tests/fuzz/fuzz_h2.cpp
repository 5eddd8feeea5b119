// Fuzzes the HTTP/2 frame reader and its HPACK decoding (h2_reader.h), alone and inside
// Connection: the input is an operation script (as fuzz_connection's) played after the client
// preface, so the bytes are read as frames of an exact HTTP/2 connection. Checks invariants
// that must hold for any input: no credential header ever leaves the decoder, token counts are
// never negative, every exchange produced is counted once.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "protocol/connection.h"
#include "protocol/h2_reader.h"
#include "util/redact.h"

using namespace ab::protocol;
using ab::util::is_secret_header;

namespace {

struct Checker final : H2Reader::Events {
  void h2_headers(H2Reader::Side, uint32_t, H2Headers&& hs, bool, uint64_t, uint64_t) override {
    for (const auto& [k, v] : hs)
      if (is_secret_header(k)) abort();
  }
  void h2_data(H2Reader::Side, uint32_t, std::string_view, uint64_t) override {}
  void h2_wire_bytes(H2Reader::Side, uint32_t, uint64_t) override {}
  void h2_end_stream(H2Reader::Side, uint32_t, uint64_t) override {}
  void h2_data_gap(H2Reader::Side, uint32_t, uint64_t, uint64_t) override {}
  void h2_reset(uint32_t, uint64_t) override {}
  void h2_goaway(H2Reader::Side, uint32_t, uint64_t) override {}
  void h2_desync(uint64_t) override { ++desyncs; }
  int desyncs = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Connection::Options opt;
  opt.max_header_bytes = 2048;
  Connection c(opt);
  H2Stats hst;
  Checker ck;
  H2Reader r(ck, hst);
  uint64_t t = 0;
  c.feed(Dir::Request, H2Reader::kPreface, ++t);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t produced = 0;
  while (!in.empty()) {
    uint8_t op = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    const bool resp = op & 1;
    const Dir d = resp ? Dir::Response : Dir::Request;
    const auto side = resp ? H2Reader::Side::Server : H2Reader::Side::Client;
    size_t len = (op >> 2) & 0x3f;
    if (len == 0x3f && !in.empty()) {
      len = size_t(static_cast<uint8_t>(in[0])) * 16 + 1;
      in.remove_prefix(1);
    }
    if ((op & 2) && (op >> 2) < 4) {
      c.gap(d, (op >> 2) * 37 + 1, ++t);
      r.gap(side, (op >> 2) * 37 + 1, ++t);
      continue;
    }
    len = std::min(len + 1, in.size());
    c.feed(d, in.substr(0, len), ++t);
    r.feed(side, in.substr(0, len), ++t);
    in.remove_prefix(len);
    if (op == 0xff) produced += c.take_exchanges().size();
  }
  if (ck.desyncs > 1) abort();  // reported once
  c.close(++t);
  for (const auto& x : c.take_exchanges()) {
    if (x.call.input_tokens < 0 || x.call.output_tokens < 0) abort();
    for (const auto& [k, v] : x.request_headers)
      if (is_secret_header(k)) abort();
    for (const auto& [k, v] : x.response_headers)
      if (is_secret_header(k)) abort();
    ++produced;
  }
  (void)c.take_requests();
  if (c.stats().exchanges != produced) abort();
  if (c.stats().h2_hpack_desync > 1) abort();
  return 0;
}
