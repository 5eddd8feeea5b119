// Fuzzes the body framers (SSE, NDJSON/JSON, JSON array) fed in data-chosen pieces, with
// resyncs, through a real adapter (usage parsing of captured values).
#include <cstdint>
#include <string_view>

#include "protocol/adapter.h"
#include "protocol/codec.h"

using namespace ab::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Framing f = static_cast<Framing>(data[0] % 4);
  ApiKind k = static_cast<ApiKind>(data[1] % 11);
  ab::LlmCall call;
  auto ad = make_adapter(k, call);
  DocStream ds(f, &ad->response_spec(), ad.get());
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  size_t step = 1 + data[1] / 11;
  for (size_t i = 0; i < in.size(); i += step) {
    ds.feed(in.substr(i, step));
    if (in[i] == '\x01') ds.resync();
  }
  ds.finish();
  FinishInfo fi;
  fi.have_response = true;
  fi.complete = true;
  fi.request_body_bytes = 10;
  ad->finish(fi);
  return 0;
}
