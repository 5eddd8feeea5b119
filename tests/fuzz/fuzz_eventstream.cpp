// Fuzzes the Bedrock event-stream decoder (CRC checks, resynchronisation, header parsing) and
// the documents it yields through the Bedrock adapter, fed in data-chosen pieces with losses.
#include <cstdint>
#include <string_view>

#include "protocol/adapter.h"
#include "protocol/codec.h"
#include "protocol/eventstream.h"

using namespace ab::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const ApiKind kinds[] = {ApiKind::BedrockConverseStream, ApiKind::BedrockInvokeStream,
                                  ApiKind::BedrockConverse, ApiKind::BedrockInvoke};
  ab::LlmCall call;
  auto ad = make_adapter(kinds[data[0] % 4], call);
  DocStream ds(Framing::EventStream, &ad->response_spec(), ad.get());
  uint64_t n = 0;
  EventStreamDecoder raw([&](const EventStreamMessage& m) { n += m.payload.size() + m.event_type.size(); });
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  const size_t step = 1 + data[1] % 64;
  for (size_t i = 0; i < in.size(); i += step) {
    std::string_view piece = in.substr(i, step);
    raw.feed(piece);
    ds.feed(piece);
    if ((data[1] & 0x80) && in[i] == '\x01') ds.resync();
  }
  ds.finish();
  FinishInfo fi;
  fi.have_response = true;
  fi.complete = (data[0] & 0x10) != 0;
  fi.request_body_bytes = 10;
  ad->finish(fi);
  return n == 0xffffffffffffffffull;  // keep n observable
}
