// Fuzzes Connection with an operation script: each op is a header byte (direction, op kind,
// length) followed by data. Checks invariants that must hold for any input.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "protocol/connection.h"
#include "util/redact.h"

using namespace ab::protocol;
using ab::util::is_secret_header;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Connection::Options opt;
  opt.max_header_bytes = 2048;  // reach the limits quickly
  Connection c(opt);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  uint64_t t = 0;
  size_t produced = 0;
  while (!in.empty()) {
    uint8_t op = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    Dir d = (op & 1) ? Dir::Response : Dir::Request;
    size_t len = (op >> 2) & 0x3f;
    if (len == 0x3f && !in.empty()) {  // long piece: next byte * 16
      len = size_t(static_cast<uint8_t>(in[0])) * 16 + 1;
      in.remove_prefix(1);
    }
    if ((op & 2) && (op >> 2) < 4) {
      c.gap(d, (op >> 2) * 37 + 1, ++t);
      continue;
    }
    len = std::min(len + 1, in.size());
    c.feed(d, in.substr(0, len), ++t);
    in.remove_prefix(len);
    if (op == 0xff) produced += c.take_exchanges().size();
  }
  c.close(++t);
  for (const auto& x : c.take_exchanges()) {
    if (x.call.input_tokens < 0 || x.call.output_tokens < 0) abort();
    for (const auto& [k, v] : x.request_headers)
      if (is_secret_header(k)) abort();
    for (const auto& [k, v] : x.response_headers)
      if (is_secret_header(k)) abort();
    if (x.call.path.find("?key=") != std::string::npos || x.call.path.find("&key=") != std::string::npos) {
      fprintf(stderr, "secret query kept: %s\n", x.call.path.c_str());
      abort();
    }
    ++produced;
  }
  (void)c.take_requests();
  if (c.stats().exchanges != produced) abort();
  return 0;
}
