#include "capture/opaque_calls.h"

namespace ab::capture {

OpaqueEstimate estimate_tokens(uint64_t request_bytes, uint64_t response_bytes) {
  OpaqueEstimate e;
  auto quarter = [](uint64_t bytes, uint64_t overhead) -> int64_t {
    return bytes > overhead ? static_cast<int64_t>((bytes - overhead + 3) / 4) : 0;
  };
  e.input_tokens = quarter(request_bytes, kOpaqueRequestOverhead);
  e.output_tokens = quarter(response_bytes, kOpaqueResponseOverhead);
  return e;
}

void fill_opaque_call(const OpaqueCall& c, const std::string& api, const std::string& host, LlmCall* out) {
  out->api = api;
  out->provider = api.empty() ? host : api == "gemini" ? "google" : api;
  out->host = host;
  out->method = "POST";
  out->request_bytes = c.request_bytes;
  out->response_bytes = c.response_bytes;
  out->complete = c.complete;
  auto est = estimate_tokens(c.request_bytes, c.response_bytes);
  out->input_tokens = est.input_tokens;
  out->output_tokens = est.output_tokens;
  out->estimated = true;
  out->estimate_reason = "opaque_tls";
}

OpaqueCall OpaqueTracker::Open::ended(uint32_t pid, uint64_t conn, uint64_t bytes_out, uint64_t bytes_in,
                                      uint64_t ts_ns) const {
  OpaqueCall c;
  c.pid = pid;
  c.conn = conn;
  c.request_bytes = bytes_out > out_at_start ? bytes_out - out_at_start : 0;
  c.response_bytes = bytes_in > in_at_start ? bytes_in - in_at_start : 0;
  c.start_ns = start_ns;
  c.end_ns = ts_ns;
  c.complete = true;
  return c;
}

std::optional<OpaqueCall> OpaqueTracker::on_request(uint32_t pid, uint64_t conn, uint64_t bytes_out,
                                                    uint64_t bytes_in, uint64_t ts_ns) {
  std::optional<OpaqueCall> ended;
  auto key = std::make_pair(pid, conn);
  auto it = open_.find(key);
  if (it != open_.end()) {
    const Open& o = it->second;
    ended = o.ended(pid, conn, bytes_out, bytes_in, ts_ns);
  }
  open_[key] = Open{bytes_out, bytes_in, ts_ns, ts_ns};
  return ended;
}

std::optional<OpaqueCall> OpaqueTracker::on_close(uint32_t pid, uint64_t conn, uint64_t bytes_out,
                                                  uint64_t bytes_in, uint64_t ts_ns) {
  auto it = open_.find({pid, conn});
  if (it == open_.end()) return std::nullopt;
  const Open& o = it->second;
  OpaqueCall c = o.ended(pid, conn, bytes_out, bytes_in, ts_ns);
  open_.erase(it);
  return c;
}

std::vector<OpaqueCall> OpaqueTracker::on_exit(uint32_t pid, uint64_t ts_ns) {
  std::vector<OpaqueCall> out;
  for (auto it = open_.lower_bound({pid, 0}); it != open_.end() && it->first.first == pid;) {
    OpaqueCall c;
    c.pid = pid;
    c.conn = it->first.second;
    c.start_ns = it->second.start_ns;
    c.end_ns = ts_ns;
    out.push_back(c);
    it = open_.erase(it);
  }
  return out;
}

std::vector<OpaqueCall> OpaqueTracker::expire(uint64_t now_ns, uint64_t idle_ns) {
  std::vector<OpaqueCall> out;
  for (auto it = open_.begin(); it != open_.end();) {
    if (now_ns > it->second.last_ns && now_ns - it->second.last_ns >= idle_ns) {
      OpaqueCall c;
      c.pid = it->first.first;
      c.conn = it->first.second;
      c.start_ns = it->second.start_ns;
      c.end_ns = now_ns;
      out.push_back(c);
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

size_t OpaqueTracker::open_requests(uint32_t pid) const {
  size_t n = 0;
  for (auto it = open_.lower_bound({pid, 0}); it != open_.end() && it->first.first == pid; ++it) n++;
  return n;
}

}  // namespace ab::capture
