// Fuzzes the Content-Encoding decoders with arbitrary bytes in data-chosen pieces.
#include <cstdint>
#include <string_view>

#include "protocol/codec.h"

using namespace ab::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto kind = static_cast<ContentDecoder::Kind>(data[0] % 4);
  ContentDecoder d(kind);
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t step = 1 + (data[0] >> 2);
  uint64_t total = 0;
  for (size_t i = 0; i < in.size(); i += step)
    if (!d.feed(in.substr(i, step), [&](std::string_view o) { total += o.size(); })) break;
  if (total != d.produced()) __builtin_trap();
  return 0;
}
