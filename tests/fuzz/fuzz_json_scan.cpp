// Fuzzes JsonScanner: any input, split at a data-chosen point, must give the same result as
// fed whole (the scanner is split-invariant) and never read out of bounds.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/json_scan.h"

using namespace ab::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const ScanSpec spec = [] {
    ScanSpec s;
    s.capture = {"model", "usage", "a.b", "message.usage", "x"};
    s.text_keys = {"content", "text"};
    s.hash_arrays = {"messages"};
    s.capture_cap = 128;
    return s;
  }();
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t cut = in.empty() ? 0 : data[0] % (in.size() + 1);
  JsonScanner whole(&spec), split(&spec);
  size_t a = whole.feed(in);
  size_t b = split.feed(in.substr(0, cut));
  if (!split.done() && !split.failed()) b += split.feed(in.substr(cut));
  whole.finish();
  split.finish();
  if (whole.done() != split.done() || whole.failed() != split.failed()) abort();
  if (whole.done() && a != b) abort();
  if (whole.done()) {
    if (whole.raw("usage") != split.raw("usage")) abort();
    if (whole.string_bytes() != split.string_bytes()) abort();
    if (whole.last_element_hash() != split.last_element_hash()) abort();
    (void)whole.str("model");
    (void)whole.integer("x");
  }
  return 0;
}
