#include "protocol/connection.h"

#include <cctype>
#include <chrono>
#include <cstring>
#include <map>

#include "protocol/adapter.h"
#include "protocol/codec.h"
#include "protocol/h2_reader.h"
#include "protocol/http_util.h"
#include "protocol/json_scan.h"
#include "protocol/message_reader.h"
#include "protocol/strutil.h"
#include "util/redact.h"

namespace ab::protocol {

namespace {

constexpr size_t kTailKeep = 64 * 1024;    // request body tail kept for the model fallback

// Offset of a request line that ends `line` (usually 0), npos if none.
size_t find_request_line(std::string_view line) {
  if (looks_like_request_line(line)) return 0;
  if (line.size() < 14 || line.find(" HTTP/1.") == std::string_view::npos) return std::string_view::npos;
  for (size_t i = 1; i + 14 <= line.size(); ++i) {
    char c = line[i];
    if (c < 'A' || c > 'Z') continue;
    if (looks_like_request_line(line.substr(i))) return i;
  }
  return std::string_view::npos;
}

size_t find_status_line(std::string_view line) {
  size_t pos = 0;
  while ((pos = line.find("HTTP/1.", pos)) != std::string_view::npos) {
    if (looks_like_status_line(line.substr(pos))) return pos;
    ++pos;
  }
  return std::string_view::npos;
}

// Endpoints that are never generation calls, even on an endpoint declared with an api hint
// (model management, embeddings, token counting, files, batches, media).
bool known_non_call(std::string_view target) {
  std::string_view p = target.substr(0, target.find('?'));
  static constexpr std::string_view kNeedles[] = {
      "/models",     "/embeddings", "/embed",  "count_tokens", ":countTokens", ":embedContent",
      ":batchEmbed", "/files",      "/batches", "/audio/",     "/images/",     "/moderations",
      "/api/pull",   "/api/push",   "/api/tags", "/api/show",  "/api/create",  "/api/copy",
      "/api/delete", "/api/ps",     "/api/version", "/api/blobs"};
  for (auto n : kNeedles) {
    size_t pos = p.find(n);
    if (pos == std::string_view::npos) continue;
    size_t end = pos + n.size();
    if (n.back() == '/' || n.front() == ':' || end == p.size() || p[end] == '/') return true;
  }
  return false;
}


struct Pending {
  Exchange ex;
  std::unique_ptr<Adapter> adapter;
  std::string target;  // redacted
  bool head_method = false;
  // request side
  JsonScanner req_scan{&Adapter::request_spec()};
  bool req_scan_broken = false;
  uint64_t req_body_bytes = 0;
  std::string req_tail;  // last bytes of the body, for the model fallback after a gap
  bool req_done = false;
  // response side
  bool resp_started = false;  // final status line seen
  bool resp_lost = false;     // response framing lost (gap); ends at the next request/close
  bool truncated = false;
  bool body_unparsed = false;
  bool body_too_large = false;
  std::unique_ptr<ContentDecoder> dec;
  std::unique_ptr<DocStream> docs;
  // Bedrock usage headers (x-amzn-bedrock-*-token-count), for FinishInfo
  std::string hdr_in, hdr_out, hdr_cache_read, hdr_cache_write;
};

// Looks for `"model"` : "…" in a JSON fragment (after a gap the scanner cannot be trusted).
std::string find_model_in(std::string_view s) {
  std::string found;
  size_t pos = 0;
  while ((pos = s.find("\"model\"", pos)) != std::string_view::npos) {
    size_t i = pos + 7;
    pos = i;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
    if (i >= s.size() || s[i] != ':') continue;
    ++i;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
    if (i >= s.size() || s[i] != '"') continue;
    size_t e = s.find('"', i + 1);
    if (e == std::string_view::npos || e - i - 1 > 200) continue;
    std::string_view v = s.substr(i + 1, e - i - 1);
    if (v.find('\\') != std::string_view::npos) continue;
    found = std::string(v);  // keep the last one: top-level model comes last in SDK bodies
  }
  return found;
}

}  // namespace

struct Connection::Impl final : H2Reader::Events {
  Options opt;
  ConnectionStats& st;
  std::deque<std::unique_ptr<Pending>> q;
  std::vector<Exchange> out;
  std::vector<RequestInfo> reqs;
  bool dead = false;  // HTTP/2 or upgraded: nothing more is parsed

  // ---- which protocol: decided by the first bytes of the stream ----
  enum class Mode { Probe, H1, H2, H2Blind };
  Mode mode = Mode::Probe;
  std::string probe_req, probe_resp;  // first bytes, until the protocol is known

  // ---- HTTP/2 (Mode::H2): one Pending per client stream ----
  H2Stats h2st;
  uint64_t h2_budget_drops_seen = 0;  // h2st.header_budget_drops already in st
  std::unique_ptr<H2Reader> h2;
  std::map<uint32_t, std::unique_ptr<Pending>> h2_streams;
  uint32_t h2_max_stream = 0;  // highest client stream id opened
  static constexpr size_t kMaxH2Streams = 256;

  // ---- request side ----
  MessageReader req;
  Pending* r_cur = nullptr;
  bool r_preface = false;  // the start line just accepted is the HTTP/2 preface

  // ---- response side ----
  MessageReader resp;
  Pending* p_cur = nullptr;  // front of q, or orphan
  std::unique_ptr<Pending> orphan;
  int lost_state = 0;  // MessageReader::State::Lost: chunk-size line matcher
  std::string lost_hex, lost_cand;
  size_t lost_ext = 0;

  Impl(Options o, ConnectionStats& s)
      : opt(std::move(o)), st(s), req(s, opt.max_header_bytes, opt.header_budget),
        resp(s, opt.max_header_bytes, opt.header_budget) {}

  // ------------------------------------------------------------------------------------------
  // ------------------------------------------------------------------------------------------
  void finalize(Pending* p, bool complete, uint64_t t) {
    Exchange& ex = p->ex;
    LlmCall& c = ex.call;
    if (!ex.response_end_ns) ex.response_end_ns = t;
    c.complete = complete && p->resp_started;
    c.capture_truncated = p->truncated;
    if (p->adapter) {
      if (!p->req_done) request_facts(p);
      if (p->docs && complete) p->docs->finish();
      FinishInfo fi;
      fi.have_response = p->resp_started;
      fi.complete = c.complete;
      fi.body_unparsed = p->body_unparsed;
      fi.body_too_large = p->body_too_large;
      fi.request_body_bytes = p->req_body_bytes;
      fi.request_scan_ok = !p->req_scan_broken && !p->req_scan.failed() && p->req_scan.started();
      fi.request_string_bytes = p->req_scan.string_bytes();
      fi.header_input_tokens = p->hdr_in;
      fi.header_output_tokens = p->hdr_out;
      fi.header_cache_read_tokens = p->hdr_cache_read;
      fi.header_cache_write_tokens = p->hdr_cache_write;
      p->adapter->finish(fi);
      if (p->docs) {
        st.eventstream_frames += p->docs->frames();
        st.eventstream_bad_frames += p->docs->bad_frames();
      }
      ex.output_text_bytes = p->adapter->output_text_bytes();
    }
    if (ex.request_start_ns && ex.response_end_ns >= ex.request_start_ns)
      c.latency_ms = double(ex.response_end_ns - ex.request_start_ns) / 1e6;
    ++st.exchanges;
    if (!ex.is_llm) ++st.non_llm_exchanges;
    if (!c.complete) ++st.incomplete;
    if (c.capture_truncated) ++st.truncated;
    p->adapter.reset();
    p->docs.reset();
    p->dec.reset();
    out.push_back(std::move(ex));
  }

  // Removes p (which must be q.front() or the orphan) after finalizing.
  // Removes p (which must be q.front() or the orphan) after finalizing.
  void finish_front(Pending* p, bool complete, uint64_t t) {
    if (orphan && p == orphan.get()) {
      orphan.reset();
    } else {
      finalize(p, complete, t);
      if (r_cur == p) {
        r_cur = nullptr;
        req.end_message();
      }
      for (auto it = q.begin(); it != q.end(); ++it)
        if (it->get() == p) {
          q.erase(it);
          break;
        }
    }
    if (p_cur == p) p_cur = nullptr;
  }

  void request_facts(Pending* p) {
    if (!p->adapter) return;
    p->adapter->on_request(p->req_scan, p->target);
    if ((p->req_scan_broken || p->req_scan.failed()) && !p->req_scan.has("model")) {
      std::string m = find_model_in(p->req_tail);
      if (!m.empty()) p->ex.call.model = m;
    }
    p->ex.last_message_hash = p->req_scan.last_element_hash();
    p->ex.last_message_text = p->req_scan.last_element_text();
    p->ex.previous_message_text = p->req_scan.previous_element_text();
  }

  // ---- request side ------------------------------------------------------------------------
  void request_bytes(Pending* p, uint64_t n) {
    if (p) p->ex.call.request_bytes += n;
  }

  void req_body_data(std::string_view d) { req_body_data_to(r_cur, d); }

  void req_body_data_to(Pending* p, std::string_view d) {
    if (!p) return;
    p->req_body_bytes += d.size();
    if (!p->adapter) return;
    if (!p->req_scan_broken) p->req_scan.feed(d);
    if (d.size() >= kTailKeep) {
      p->req_tail.assign(d.substr(d.size() - kTailKeep));
    } else {
      if (p->req_tail.size() + d.size() > 2 * kTailKeep)
        p->req_tail.erase(0, p->req_tail.size() + d.size() - kTailKeep);
      p->req_tail.append(d);
    }
  }

  void request_done(uint64_t t) {
    Pending* p = r_cur;
    req.end_message();
    r_cur = nullptr;
    request_done_for(p, t);
  }

  void request_done_for(Pending* p, uint64_t t) {
    if (!p || p->req_done) return;
    p->req_done = true;
    p->ex.request_end_ns = t;
    if (p->adapter) {
      p->req_scan.finish();
      request_facts(p);
    }
    p->req_tail.clear();
    p->req_tail.shrink_to_fit();
    RequestInfo ri;
    const LlmCall& c = p->ex.call;
    ri.method = c.method;
    ri.host = c.host;
    ri.path = c.path;
    ri.provider = c.provider;
    ri.api = c.api;
    ri.model = c.model;
    ri.is_llm = p->ex.is_llm;
    ri.stream = c.stream;
    ri.max_tokens = c.max_tokens;
    ri.message_count = c.message_count;
    ri.request_bytes = c.request_bytes;
    ri.request_start_ns = p->ex.request_start_ns;
    ri.request_end_ns = t;
    ri.last_message_hash = p->ex.last_message_hash;
    ri.last_message_text = p->ex.last_message_text;
    ri.previous_message_text = p->ex.previous_message_text;
    reqs.push_back(std::move(ri));
  }


  // Which call a request is (method, target and Host decide), and its adapter.
  void classify_request(Pending* p, std::string_view method, std::string_view target,
                        std::string host_hdr) {
    Exchange& ex = p->ex;
    LlmCall& c = ex.call;
    if (host_hdr.empty()) host_hdr = opt.host_hint;
    c.host = normalize_host(host_hdr);
    std::optional<ApiKind> kind = classify_path(method, target);
    if (!kind && opt.api_hint && method == "POST" && !known_non_call(target)) kind = opt.api_hint;
    ex.kind = kind;
    ex.is_llm = kind.has_value();
    if (kind) {
      c.api = api_name(*kind);
      c.provider = provider_for_host(host_hdr, *kind);
      p->adapter = make_adapter(*kind, c);
    }
  }

  void request_head_done(std::string_view head, uint64_t t) {
    auto nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    HeaderList hs;
    if (!parse_header_lines(head.substr(nl + 1), hs)) ++st.parse_errors;

    // A new request means every earlier response whose framing was lost has ended.
    while (!q.empty() && q.front()->resp_lost) {
      Pending* f = q.front().get();
      finish_front(f, false, t);
    }
    if (resp.state() == MessageReader::State::Lost) resp.end_message();

    auto p = std::make_unique<Pending>();
    Exchange& ex = p->ex;
    LlmCall& c = ex.call;
    auto sp1 = line.find(' ');
    auto sp2 = line.rfind(' ');
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    c.method = std::string(method);
    p->target = util::redact_target(target);
    c.path = p->target;
    p->head_method = method == "HEAD";

    std::string host_hdr;
    std::optional<uint64_t> clen;
    bool chunked = false, bad_len = false;
    for (auto& [k, v] : hs) {
      if (k == "host") host_hdr = v;
      else if (k == "content-length") {
        uint64_t n;
        if (!detail::parse_u64(v, n) || (clen && *clen != n)) bad_len = true;
        else clen = n;
      } else if (k == "transfer-encoding") {
        chunked = detail::icontains(v, "chunked");
      }
    }
    classify_request(p.get(), method, target, host_hdr);
    for (auto& h : hs)
      if (!util::is_secret_header(h.first)) ex.request_headers.push_back(std::move(h));
    ex.request_start_ns = req.start_ns() ? req.start_ns() : t;
    c.request_bytes = head.size();

    Pending* raw = p.get();
    q.push_back(std::move(p));
    r_cur = raw;
    while (q.size() > opt.max_pipelined) {
      Pending* f = q.front().get();
      if (f == r_cur) break;
      if (p_cur == f) { p_cur = nullptr; resp.end_message(); }
      finish_front(f, false, t);
    }

    if (bad_len) {
      ++st.parse_errors;
      // cannot frame the body: give up on this request's body and resync
      request_done(t);
      req.mark_resync();
      return;
    }
    if (chunked) {
      req.expect_chunked();
    } else if (clen && *clen > 0) {
      req.expect_length(*clen);
    } else {
      request_done(t);
    }
  }

  // What the request reader asks of this connection.
  struct RequestHooks {
    Impl& c;
    bool stopped() const { return c.dead; }
    size_t find_start(std::string_view line) {
      if (line == "PRI * HTTP/2.0") {
        c.r_preface = true;
        return 0;
      }
      return find_request_line(line);
    }
    bool on_start(std::string_view, uint64_t t) {
      if (!c.r_preface) return true;
      c.r_preface = false;
      c.dead = true;  // HTTP/2: the rest of the stream is left unparsed
      c.st.http2_detected = 1;
      c.drop_all(t);
      return false;
    }
    void on_head(std::string_view head, uint64_t t) { c.request_head_done(head, t); }
    void on_head_overflow(uint64_t) { c.req.lose(); }
    void on_body_bytes(uint64_t n) { c.request_bytes(c.r_cur, n); }
    void on_body(std::string_view d) { c.req_body_data(d); }
    void on_body_end(uint64_t t) { c.request_done(t); }
    void on_framing_lost(uint64_t t) {
      if (Pending* p = c.r_cur) {
        p->truncated = true;
        p->req_scan_broken = true;
      }
      c.request_done(t);
      c.req.lose();
    }
    size_t feed_lost(std::string_view in, uint64_t) { return in.size(); }  // never Lost
    // Unlike the response side, a request keeps the start time of a line cut by a gap.
    void on_seek_gap(uint64_t) {}
    void on_head_gap(uint64_t) { c.req.lose(); }
    void on_body_gap(uint64_t lost) {
      if (Pending* p = c.r_cur) {
        p->truncated = true;
        p->req_scan_broken = true;
        p->req_body_bytes += lost;
        p->ex.call.request_bytes += lost;
      }
    }
    void on_lost_gap(uint64_t, uint64_t) {}
  };

  // ---- protocol choice ---------------------------------------------------------------------
  // The client preface starts an exact HTTP/2 connection. A stream first seen mid-way (the
  // daemon started after the handshake) whose first bytes are an HTTP/2 frame cannot be decoded
  // (the HPACK tables are lost with its past): it is counted (h2_hpack_desync) and left alone.
  // Anything else is HTTP/1.x (which resynchronizes at a request/status line on its own).
  static bool letter(char c) { return c >= 'A' && c <= 'Z'; }

  void probe_request(std::string_view in, uint64_t t) {
    probe_req.append(in);
    const std::string_view pre = H2Reader::kPreface;
    const size_t m = std::min(probe_req.size(), pre.size());
    if (probe_req.compare(0, m, pre.substr(0, m)) == 0) {
      if (probe_req.size() < pre.size()) return;
      start_h2(t);
      std::string rest = probe_req.substr(pre.size());
      std::string resp_bytes;
      resp_bytes.swap(probe_resp);
      probe_req.clear();
      if (!rest.empty()) h2_feed(H2Reader::Side::Client, rest, t);
      if (!resp_bytes.empty()) h2_feed(H2Reader::Side::Server, resp_bytes, t);
      return;
    }
    if (!letter(probe_req[0]) && probe_req.size() < 9) return;
    if (!letter(probe_req[0]) && H2Reader::plausible_frame(H2Reader::Side::Client, probe_req)) {
      start_blind(t);
      return;
    }
    start_h1(t);
  }

  void probe_response(std::string_view in, uint64_t t) {
    probe_resp.append(in);
    if (!probe_req.empty()) {  // the request side decides; keep a bounded head meanwhile
      if (probe_resp.size() > opt.max_header_bytes) start_h1(t);
      return;
    }
    if (!letter(probe_resp[0]) && probe_resp.size() < 9) return;
    if (!letter(probe_resp[0]) && H2Reader::plausible_frame(H2Reader::Side::Server, probe_resp)) {
      start_blind(t);
      return;
    }
    start_h1(t);
  }

  void start_h1(uint64_t t) {
    mode = Mode::H1;
    std::string a, b;
    a.swap(probe_req);
    b.swap(probe_resp);
    if (!a.empty()) feed_request(a, t);
    if (!b.empty()) feed_response(b, t);
  }

  void start_blind(uint64_t) {
    mode = Mode::H2Blind;
    st.http2_detected = 1;
    st.h2_hpack_desync = 1;
    st.unparsed_bytes += probe_req.size() + probe_resp.size();
    probe_req.clear();
    probe_resp.clear();
  }

  void start_h2(uint64_t) {
    mode = Mode::H2;
    st.http2_detected = 1;
    h2 = std::make_unique<H2Reader>(*this, h2st, opt.header_budget);
  }

  void h2_feed(H2Reader::Side s, std::string_view in, uint64_t t) {
    const uint64_t before = h2st.unparsed_bytes;
    h2->feed(s, in, t);
    st.unparsed_bytes += h2st.unparsed_bytes - before;
    st.h2_protocol_errors = h2st.protocol_errors;
    st.header_budget_drops += h2st.header_budget_drops - std::exchange(h2_budget_drops_seen, h2st.header_budget_drops);
  }

  void h2_gap(H2Reader::Side s, uint64_t lost, uint64_t t) {
    const uint64_t before = h2st.unparsed_bytes;
    h2->gap(s, lost, t);
    st.unparsed_bytes += h2st.unparsed_bytes - before;
    st.h2_protocol_errors = h2st.protocol_errors;
    st.header_budget_drops += h2st.header_budget_drops - std::exchange(h2_budget_drops_seen, h2st.header_budget_drops);
  }

  // ---- HTTP/2 streams ----------------------------------------------------------------------
  Pending* h2_find(uint32_t sid) {
    auto it = h2_streams.find(sid);
    return it == h2_streams.end() ? nullptr : it->second.get();
  }

  void h2_finish(uint32_t sid, bool complete, uint64_t t) {
    auto it = h2_streams.find(sid);
    if (it == h2_streams.end()) return;
    finalize(it->second.get(), complete, t);
    h2_streams.erase(it);
  }

  void h2_request_headers(uint32_t sid, H2Headers&& hs, bool end_stream, uint64_t wire, uint64_t t) {
    if (Pending* p = h2_find(sid)) {  // trailers
      p->ex.call.request_bytes += wire;
      if (end_stream) request_done_for(p, t);
      return;
    }
    if (sid <= h2_max_stream) return;  // a stream already ended (or never seen): not a request
    h2_max_stream = sid;
    std::string method, path, authority, host;
    auto p = std::make_unique<Pending>();
    for (auto& h : hs) {
      const std::string& k = h.first;
      if (k == ":method") method = h.second;
      else if (k == ":path") path = h.second;
      else if (k == ":authority") authority = h.second;
      else if (!k.empty() && k[0] == ':') continue;
      else {
        if (k == "host") host = h.second;
        p->ex.request_headers.push_back(std::move(h));
      }
    }
    Exchange& ex = p->ex;
    ex.call.method = method;
    p->target = util::redact_target(path);
    ex.call.path = p->target;
    p->head_method = method == "HEAD";
    classify_request(p.get(), method, path, authority.empty() ? host : authority);
    ex.request_start_ns = t;
    ex.call.request_bytes = wire;
    Pending* raw = p.get();
    h2_streams.emplace(sid, std::move(p));
    ++st.h2_streams;
    while (h2_streams.size() > kMaxH2Streams) h2_finish(h2_streams.begin()->first, false, t);
    if (end_stream) request_done_for(raw, t);
  }

  void h2_response_headers(uint32_t sid, H2Headers&& hs, bool end_stream, uint64_t wire, uint64_t t) {
    Pending* p = h2_find(sid);
    if (!p) return;  // a stream not seen opening (pushed, or dropped): nothing to attribute
    p->ex.call.response_bytes += wire;
    if (!p->resp_started) {
      int status = -1;
      HeaderList rest;
      std::string ce, ct, date, retry, retry_ms;
      for (auto& h : hs) {
        const std::string& k = h.first;
        const std::string& v = h.second;
        if (k == ":status") {
          uint64_t n;
          if (detail::parse_u64(v, n) && n >= 100 && n <= 999) status = int(n);
          continue;
        }
        if (!k.empty() && k[0] == ':') continue;
        if (k == "content-encoding") ce = v;
        else if (k == "content-type") ct = v;
        else if (k == "date") date = v;
        else if (k == "retry-after") retry = v;
        else if (k == "retry-after-ms") retry_ms = v;
        rest.push_back(std::move(h));
      }
      if (status < 0) {
        ++st.parse_errors;
        status = 0;
      }
      if (status >= 100 && status < 200 && !end_stream) return;  // informational: the final follows
      apply_response_head(p, status, rest, t, retry, date, retry_ms, ce, ct);
    }
    if (end_stream) {
      p->ex.response_end_ns = t;
      h2_finish(sid, true, t);
    }
  }

  // H2Reader::Events
  void h2_headers(H2Reader::Side s, uint32_t sid, H2Headers&& hs, bool end_stream, uint64_t wire,
                  uint64_t t) override {
    if (s == H2Reader::Side::Client) h2_request_headers(sid, std::move(hs), end_stream, wire, t);
    else h2_response_headers(sid, std::move(hs), end_stream, wire, t);
  }
  void h2_data(H2Reader::Side s, uint32_t sid, std::string_view d, uint64_t) override {
    Pending* p = h2_find(sid);
    if (!p) return;
    if (s == H2Reader::Side::Client) {
      if (!p->req_done) req_body_data_to(p, d);
    } else if (p->resp_started) {
      resp_body_data_to(p, d);
    }
  }
  void h2_wire_bytes(H2Reader::Side s, uint32_t sid, uint64_t n) override {
    Pending* p = h2_find(sid);
    if (!p) return;
    if (s == H2Reader::Side::Client) p->ex.call.request_bytes += n;
    else p->ex.call.response_bytes += n;
  }
  void h2_end_stream(H2Reader::Side s, uint32_t sid, uint64_t t) override {
    Pending* p = h2_find(sid);
    if (!p) return;
    if (s == H2Reader::Side::Client) {
      request_done_for(p, t);
    } else {
      p->ex.response_end_ns = t;
      h2_finish(sid, p->resp_started, t);
    }
  }
  void h2_data_gap(H2Reader::Side s, uint32_t sid, uint64_t lost, uint64_t) override {
    Pending* p = h2_find(sid);
    if (!p) return;
    p->truncated = true;
    if (s == H2Reader::Side::Client) {
      p->req_scan_broken = true;
      p->req_body_bytes += lost;
    } else {
      if (p->docs) p->docs->resync();
      if (p->dec && p->dec->kind() != ContentDecoder::Kind::Identity) p->body_unparsed = true;
    }
  }
  void h2_reset(uint32_t sid, uint64_t t) override { h2_finish(sid, false, t); }
  void h2_goaway(H2Reader::Side s, uint32_t last, uint64_t t) override {
    if (s != H2Reader::Side::Server) return;  // the client's GOAWAY concerns pushed streams
    while (!h2_streams.empty() && h2_streams.rbegin()->first > last)
      h2_finish(h2_streams.rbegin()->first, false, t);
  }
  void h2_desync(uint64_t t) override {
    st.h2_hpack_desync = 1;
    while (!h2_streams.empty()) {
      h2_streams.begin()->second->truncated = true;
      h2_finish(h2_streams.begin()->first, false, t);
    }
  }

  void feed_request(std::string_view in, uint64_t t) {
    if (mode != Mode::H1) {
      if (mode == Mode::Probe) probe_request(in, t);
      else if (mode == Mode::H2) h2_feed(H2Reader::Side::Client, in, t);
      else st.unparsed_bytes += in.size();
      return;
    }
    RequestHooks h{*this};
    st.unparsed_bytes += req.feed(in, t, h);
  }

  void gap_request(uint64_t lost, uint64_t t) {
    if (mode == Mode::Probe) start_h1(t);  // a gap before the protocol is known: HTTP/1 resyncs
    if (mode == Mode::H2) return h2_gap(H2Reader::Side::Client, lost, t);
    if (dead || mode == Mode::H2Blind) {
      st.unparsed_bytes += lost;
      return;
    }
    RequestHooks h{*this};
    req.gap(lost, t, h);
  }

  // ---- response side -----------------------------------------------------------------------
  void response_head_done(std::string_view head, uint64_t t) {
    auto nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    HeaderList hs;
    if (!parse_header_lines(head.substr(nl + 1), hs)) ++st.parse_errors;
    Pending* p = p_cur;
    size_t head_bytes = head.size();
    if (p) p->ex.call.response_bytes += head_bytes;

    if (status == 101) {
      dead = true;
      st.upgraded = 1;
      if (p) finish_front(p, false, t);
      drop_all(t);
      return;
    }
    if (status >= 100 && status < 200) {  // 100 Continue, 103 Early Hints: the real one follows
      resp.end_message();
      return;
    }
    std::optional<uint64_t> clen;
    bool chunked = false, bad_len = false;
    std::string ce, ct, date, retry, retry_ms;
    for (auto& [k, v] : hs) {
      if (k == "content-length") {
        uint64_t n;
        if (!detail::parse_u64(v, n) || (clen && *clen != n)) bad_len = true;
        else clen = n;
      } else if (k == "transfer-encoding") {
        chunked = detail::icontains(v, "chunked");
      } else if (k == "content-encoding") {
        ce = v;
      } else if (k == "content-type") {
        ct = v;
      } else if (k == "date") {
        date = v;
      } else if (k == "retry-after") {
        retry = v;
      } else if (k == "retry-after-ms") {
        retry_ms = v;
      }
    }
    if (p) apply_response_head(p, status, hs, resp.start_ns() ? resp.start_ns() : t, retry, date,
                               retry_ms, ce, ct);
    bool no_body = (p && p->head_method) || status == 204 || status == 304;
    if (no_body) {
      if (p) p->ex.response_end_ns = t;
      if (p) finish_front(p, true, t);
      resp.end_message();
      return;
    }
    if (bad_len) ++st.parse_errors;
    if (chunked) {
      resp.expect_chunked();
    } else if (clen && !bad_len) {
      resp.expect_length(*clen);
      if (*clen == 0) response_done(t);
    } else {
      resp.expect_until_close();
    }
  }

  // The final response head of `p`: status, rate-limit headers, retry hints, body decoders.
  void apply_response_head(Pending* p, int status, HeaderList& hs, uint64_t start_ns,
                           const std::string& retry, const std::string& date,
                           const std::string& retry_ms, const std::string& ce,
                           const std::string& ct) {
    {
      Exchange& ex = p->ex;
      LlmCall& c = ex.call;
      p->resp_started = true;
      ex.response_start_ns = start_ns;
      c.status = status;
      for (auto& [k, v] : hs) {
        if (k.starts_with("x-ratelimit-") || k.starts_with("anthropic-ratelimit-"))
          c.ratelimit[k] = v;
        else if (k == "x-amzn-bedrock-input-token-count") p->hdr_in = v.substr(0, 32);
        else if (k == "x-amzn-bedrock-output-token-count") p->hdr_out = v.substr(0, 32);
        else if (k == "x-amzn-bedrock-cache-read-input-token-count") p->hdr_cache_read = v.substr(0, 32);
        else if (k == "x-amzn-bedrock-cache-write-input-token-count") p->hdr_cache_write = v.substr(0, 32);
      }
      if (!retry.empty()) {
        int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
        if (auto r = parse_retry_after(retry, date, now)) c.retry_after_s = *r;
      }
      if (c.retry_after_s < 0 && !retry_ms.empty()) {
        if (auto r = parse_retry_after(retry_ms, {}, 0)) c.retry_after_s = *r / 1000.0;
      }
      for (auto& h : hs)
        if (!util::is_secret_header(h.first)) ex.response_headers.push_back(std::move(h));
      if (p->adapter) {
        p->dec = std::make_unique<ContentDecoder>(ContentDecoder::kind_from_header(ce));
        if (p->dec->failed()) p->body_unparsed = true;
        p->docs = std::make_unique<DocStream>(p->adapter->framing(ct, p->target),
                                              &p->adapter->response_spec(), p->adapter.get());
      }
    }
  }

  void resp_body_data(std::string_view d) { resp_body_data_to(p_cur, d); }

  void resp_body_data_to(Pending* p, std::string_view d) {
    if (!p || !p->adapter || p->body_unparsed || !p->dec) return;
    if (!p->dec->feed(d, [&](std::string_view x) { p->docs->feed(x); })) {
      p->body_unparsed = true;
      p->body_too_large = p->dec->too_large();
    }
  }

  void response_done(uint64_t t) {
    Pending* p = p_cur;
    resp.end_message();
    if (!p) return;
    p->ex.response_end_ns = t;
    finish_front(p, true, t);
  }

  Pending* response_target() {
    for (auto& p : q)
      if (!p->resp_started && !p->resp_lost) return p.get();
    return nullptr;
  }

  // A status line was accepted: pick the exchange it answers (or an orphan).
  void response_start(uint64_t t) {
    // responses whose framing was lost end when a new status line shows up
    while (!q.empty() && q.front()->resp_lost) finish_front(q.front().get(), false, t);
    p_cur = response_target();
    if (!p_cur) {
      orphan = std::make_unique<Pending>();
      p_cur = orphan.get();
    }
  }

  // Chunked framing lost inside a response (MessageReader::State::Lost). Identity-coded bytes
  // still go to the document parser (SSE/NDJSON resynchronize on their own boundaries) while
  // we look for the next chunk-size line ("\r\n<hex>[;ext]\r\n"); there the chunked parser
  // restarts, so the final usage event and the last chunk are still read. Bytes of a candidate
  // size line are held back until it is known to be one (then dropped). Returns the bytes used.
  size_t feed_lost(std::string_view in) {
    Pending* p = p_cur;
    std::string emit;
    size_t i = 0;
    bool found = false;
    for (; i < in.size() && !found; ++i) {
      char c = in[i];
      if (lost_state == 0) {
        if (c == '\r') {
          lost_state = 1;
          lost_cand.assign(1, c);
        } else {
          emit += c;
        }
        continue;
      }
      lost_cand += c;
      bool fail = false;
      switch (lost_state) {
        case 1:
          if (c == '\n') { lost_state = 2; lost_hex.clear(); }
          else fail = true;
          break;
        case 2:
          if (std::isxdigit(static_cast<unsigned char>(c)) && lost_hex.size() < 8) lost_hex += c;
          else if (c == '\r' && !lost_hex.empty()) lost_state = 3;
          else if (c == ';' && !lost_hex.empty()) { lost_state = 4; lost_ext = 0; }
          else fail = true;
          break;
        case 4:
          if (c == '\r') lost_state = 3;
          else if (c == '\n' || ++lost_ext > 256) fail = true;
          break;
        case 3:
          if (c == '\n') found = true;
          else fail = true;
          break;
      }
      if (fail) {
        // release the held bytes; a trailing '\r' may start the next candidate
        bool restart = c == '\r';
        emit.append(lost_cand, 0, lost_cand.size() - (restart ? 1 : 0));
        lost_cand.assign(restart ? 1 : 0, '\r');
        lost_state = restart ? 1 : 0;
      }
    }
    if (p) {
      p->ex.call.response_bytes += i;
      if (p->adapter && !p->body_unparsed && p->dec &&
          p->dec->kind() == ContentDecoder::Kind::Identity && !emit.empty())
        p->docs->feed(emit);
    }
    if (found) {
      lost_state = 0;
      lost_cand.clear();
      resp.resume_chunked(lost_hex + "\r\n");
      if (p) p->resp_lost = false;
    }
    return i;
  }

  // Response framing lost: identity-coded chunked bodies go on in State::Lost, the rest waits
  // for the next status line; the exchange ends at the next request, status line or close.
  void lose_response(uint64_t) {
    Pending* p = p_cur;
    resp.mark_resync();
    if (p && p == orphan.get()) {
      orphan.reset();
      p_cur = nullptr;
      p = nullptr;
    }
    if (p) {
      p->truncated = true;
      p->resp_lost = true;
      if (p->docs) p->docs->resync();
      if (p->dec && p->dec->kind() != ContentDecoder::Kind::Identity) p->body_unparsed = true;
    }
    if (p && p->resp_started && resp.state() == MessageReader::State::Body &&
        resp.body_kind() == MessageReader::BodyKind::Chunked) {
      resp.enter_lost();
      lost_state = 0;
      lost_cand.clear();
      return;
    }
    resp.lose();
  }

  // What the response reader asks of this connection.
  struct ResponseHooks {
    Impl& c;
    bool stopped() const { return c.dead; }
    size_t find_start(std::string_view line) { return find_status_line(line); }
    bool on_start(std::string_view, uint64_t t) {
      c.response_start(t);
      return true;
    }
    void on_head(std::string_view head, uint64_t t) { c.response_head_done(head, t); }
    void on_head_overflow(uint64_t t) { c.lose_response(t); }
    void on_body_bytes(uint64_t n) {
      if (Pending* p = c.p_cur) p->ex.call.response_bytes += n;
    }
    void on_body(std::string_view d) { c.resp_body_data(d); }
    void on_body_end(uint64_t t) { c.response_done(t); }
    void on_framing_lost(uint64_t t) { c.lose_response(t); }
    size_t feed_lost(std::string_view in, uint64_t) { return c.feed_lost(in); }
    void on_seek_gap(uint64_t) {
      c.resp.clear_start();
      // Nothing pipelines: when a written request awaits its response, the lost bytes are
      // that response's start. It ends at the next request, status line or close.
      if (Pending* f = c.response_target(); f && f->req_done) {
        f->resp_lost = true;
        f->truncated = true;
      }
    }
    void on_head_gap(uint64_t t) {
      Pending* p = c.p_cur;
      if (p && p != c.orphan.get()) {
        p->resp_started = true;  // it was answered; the status is unknown
        p->ex.response_start_ns = c.resp.start_ns() ? c.resp.start_ns() : t;
      }
      c.lose_response(t);
    }
    void on_body_gap(uint64_t lost) {
      if (Pending* p = c.p_cur) {
        p->ex.call.response_bytes += lost;
        p->truncated = true;
        if (p->docs) p->docs->resync();
        if (p->dec && p->dec->kind() != ContentDecoder::Kind::Identity) p->body_unparsed = true;
      }
    }
    void on_lost_gap(uint64_t lost, uint64_t) {
      Pending* p = c.p_cur;
      if (p) p->ex.call.response_bytes += lost;
      c.lost_state = 0;
      if (p && p->docs) p->docs->resync();
    }
  };

  void feed_response(std::string_view in, uint64_t t) {
    if (mode != Mode::H1) {
      if (mode == Mode::Probe) probe_response(in, t);
      else if (mode == Mode::H2) h2_feed(H2Reader::Side::Server, in, t);
      else st.unparsed_bytes += in.size();
      return;
    }
    ResponseHooks h{*this};
    st.unparsed_bytes += resp.feed(in, t, h);
  }

  void gap_response(uint64_t lost, uint64_t t) {
    if (mode == Mode::Probe) start_h1(t);
    if (mode == Mode::H2) return h2_gap(H2Reader::Side::Server, lost, t);
    if (dead || mode == Mode::H2Blind) {
      st.unparsed_bytes += lost;
      return;
    }
    ResponseHooks h{*this};
    resp.gap(lost, t, h);
  }

  void drop_all(uint64_t t) {
    orphan.reset();
    p_cur = nullptr;
    r_cur = nullptr;
    while (!q.empty()) {
      finalize(q.front().get(), false, t);
      q.pop_front();
    }
  }

  void close(uint64_t t) {
    // A close-delimited body ends here; anything else in flight is cut off (documents
    // completed so far were dispatched, a partial one is not).
    if (!dead && resp.state() == MessageReader::State::Body && p_cur &&
        resp.body_kind() == MessageReader::BodyKind::UntilClose)
      response_done(t);
    orphan.reset();
    p_cur = nullptr;
    r_cur = nullptr;
    while (!q.empty()) {
      finalize(q.front().get(), false, t);
      q.pop_front();
    }
    while (!h2_streams.empty()) h2_finish(h2_streams.begin()->first, false, t);
    req.reset();
    resp.reset();
  }
};

Connection::Connection() : Connection(Options{}) {}
Connection::Connection(Options opt) : impl_(std::make_unique<Impl>(std::move(opt), stats_)) {}
Connection::~Connection() = default;

void Connection::feed(Dir d, std::string_view bytes, uint64_t mono_ns) {
  if (bytes.empty()) return;
  if (d == Dir::Request)
    impl_->feed_request(bytes, mono_ns);
  else
    impl_->feed_response(bytes, mono_ns);
}

void Connection::gap(Dir d, uint64_t lost_bytes, uint64_t mono_ns) {
  if (lost_bytes == 0) return;
  ++stats_.gaps;
  stats_.lost_bytes += lost_bytes;
  if (d == Dir::Request)
    impl_->gap_request(lost_bytes, mono_ns);
  else
    impl_->gap_response(lost_bytes, mono_ns);
}

void Connection::close(uint64_t mono_ns) { impl_->close(mono_ns); }

std::vector<Exchange> Connection::take_exchanges() {
  std::vector<Exchange> r;
  r.swap(impl_->out);
  return r;
}

std::vector<RequestInfo> Connection::take_requests() {
  std::vector<RequestInfo> r;
  r.swap(impl_->reqs);
  return r;
}

bool Connection::request_in_progress() const {
  if (impl_->mode == Impl::Mode::H2) {
    for (auto& [sid, p] : impl_->h2_streams)
      if (!p->req_done) return true;
    return false;
  }
  if (impl_->mode == Impl::Mode::H2Blind) return false;
  if (impl_->mode == Impl::Mode::Probe && !impl_->probe_req.empty()) return true;
  return !impl_->dead && (impl_->req.state() != MessageReader::State::Seek ||
                           impl_->req.seeker().maybe_request_start());
}

size_t Connection::awaiting_response() const {
  size_t n = 0;
  for (auto& [sid, p] : impl_->h2_streams)
    if (p->req_done) ++n;
  for (auto& p : impl_->q)
    if (p->req_done || p->resp_started) ++n;
  return n;
}

}  // namespace ab::protocol
