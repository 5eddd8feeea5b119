#include "capture/stream_table.h"

#include <cstring>
#include <string_view>

namespace ab::capture {

StreamTable::StreamTable(OptionsFn options, size_t max_streams, size_t header_budget_bytes)
    : options_(std::move(options)), max_streams_(max_streams ? max_streams : 1), budget_(header_budget_bytes) {}

StreamTable::~StreamTable() = default;

StreamTable::Stream& StreamTable::stream(const Key& key) {
  auto it = streams_.find(key);
  if (it == streams_.end()) {
    if (streams_.size() >= max_streams_) evict_oldest(0);
    Stream s;
    auto opt = options_ ? options_(key.first) : protocol::Connection::Options{};
    opt.header_budget = &budget_;
    s.conn = std::make_unique<protocol::Connection>(std::move(opt));
    it = streams_.emplace(key, std::move(s)).first;
    stats_.streams_opened++;
  }
  it->second.touched = ++clock_;
  return it->second;
}

void StreamTable::count_h2(Stream& s) {
  const auto& st = s.conn->stats();
  auto add = [](uint64_t& total, uint64_t& seen, uint64_t now) {
    if (now > seen) total += now - seen;
    seen = now;
  };
  add(stats_.h2_connections, s.counted.http2_detected, st.http2_detected);
  add(stats_.h2_streams, s.counted.h2_streams, st.h2_streams);
  add(stats_.h2_hpack_desync, s.counted.h2_hpack_desync, st.h2_hpack_desync);
  add(stats_.h2_protocol_errors, s.counted.h2_protocol_errors, st.h2_protocol_errors);
  add(stats_.eventstream_frames, s.counted.eventstream_frames, st.eventstream_frames);
  add(stats_.eventstream_bad_frames, s.counted.eventstream_bad_frames, st.eventstream_bad_frames);
}

void StreamTable::drain(const Key& key, Stream& s) {
  count_h2(s);
  for (auto& r : s.conn->take_requests()) requests_.push_back({key.first, key.second, std::move(r)});
  for (auto& ex : s.conn->take_exchanges()) {
    CapturedExchange c;
    c.pid = key.first;
    c.tid = s.last_writer_tid;
    c.ssl = key.second;
    c.exchange = std::move(ex);
    done_.push_back(std::move(c));
  }
}

void StreamTable::close_stream(std::map<Key, Stream>::iterator it, uint64_t mono_ns) {
  Stream& s = it->second;
  s.conn->close(mono_ns);
  drain(it->first, s);
  const auto& st = s.conn->stats();
  stats_.parse_errors += st.parse_errors;
  stats_.unparsed_bytes += st.unparsed_bytes;
  stats_.streams_closed++;
  streams_.erase(it);
}

void StreamTable::evict_oldest(uint64_t mono_ns) {
  auto oldest = streams_.end();
  for (auto it = streams_.begin(); it != streams_.end(); ++it)
    if (oldest == streams_.end() || it->second.touched < oldest->second.touched) oldest = it;
  if (oldest == streams_.end()) return;
  stats_.streams_evicted++;
  close_stream(oldest, mono_ns);
}

bool StreamTable::on_record(const void* record, size_t size) {
  if (size < sizeof(ab_tls_event)) {
    stats_.malformed++;
    return false;
  }
  ab_tls_event ev;
  std::memcpy(&ev, record, sizeof ev);
  const Key key{ev.hdr.pid, ev.ssl};
  const uint64_t now = ev.hdr.ts_ns;
  stats_.records++;
  switch (ev.hdr.type) {
    case AB_EV_SSL_NEW:
    case AB_EV_SSL_FREE: {
      auto it = streams_.find(key);
      if (it != streams_.end()) close_stream(it, now);
      return true;
    }
    case AB_EV_TLS_GAP: {
      Stream& s = stream(key);
      stats_.gaps++;
      stats_.lost_bytes += ev.lost;
      s.conn->gap(ev.dir == AB_DIR_WRITE ? protocol::Dir::Request : protocol::Dir::Response, ev.lost, now);
      drain(key, s);
      return true;
    }
    case AB_EV_TLS_DATA: {
      if (ev.len > AB_CHUNK_MAX || size < sizeof(ab_tls_event) + ev.len) {
        stats_.malformed++;
        return false;
      }
      Stream& s = stream(key);
      const auto dir = ev.dir == AB_DIR_WRITE ? protocol::Dir::Request : protocol::Dir::Response;
      if (dir == protocol::Dir::Request) s.last_writer_tid = ev.hdr.tid;
      std::string_view bytes(static_cast<const char*>(record) + sizeof(ab_tls_event), ev.len);
      stats_.bytes += ev.len;
      s.conn->feed(dir, bytes, now);
      drain(key, s);
      return true;
    }
    default:
      stats_.malformed++;
      return false;
  }
}

void StreamTable::on_process_exit(uint32_t pid, uint64_t mono_ns) {
  auto it = streams_.lower_bound(Key{pid, 0});
  while (it != streams_.end() && it->first.first == pid) {
    auto next = std::next(it);
    close_stream(it, mono_ns);
    it = next;
  }
}

std::vector<CapturedExchange> StreamTable::take_exchanges() {
  std::vector<CapturedExchange> out;
  out.swap(done_);
  return out;
}

std::vector<CapturedRequest> StreamTable::take_requests() {
  std::vector<CapturedRequest> out;
  out.swap(requests_);
  return out;
}

size_t StreamTable::in_flight(uint32_t pid) const {
  size_t n = 0;
  for (auto it = streams_.lower_bound(Key{pid, 0}); it != streams_.end() && it->first.first == pid; ++it)
    if (it->second.conn->request_in_progress() || it->second.conn->awaiting_response() > 0) n++;
  return n;
}

}  // namespace ab::capture
