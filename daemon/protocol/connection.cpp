#include "protocol/connection.h"

#include <cctype>
#include <chrono>
#include <cstring>

#include "protocol/adapter.h"
#include "protocol/codec.h"
#include "protocol/http_util.h"
#include "protocol/json_scan.h"
#include "protocol/strutil.h"
#include "util/redact.h"

namespace ab::protocol {

namespace {

constexpr size_t kLineCap = 8192;          // longest request/status line looked at
constexpr size_t kTailKeep = 64 * 1024;    // request body tail kept for the model fallback

// Looks for the next line accepted by a predicate; every byte of a rejected line is garbage.
class LineSeeker {
 public:
  // Returns the offset just past the accepted line (`line()` then holds it without CRLF), or
  // npos when the input ran out (then everything was consumed). `accept` returns the offset
  // of the start line inside the line (a new message may follow the end of a body we could
  // not frame without a newline between), or npos to reject it.
  template <class Pred>
  size_t feed(std::string_view in, Pred&& accept, uint64_t& garbage) {
    size_t i = 0;
    while (i < in.size()) {
      const char* nl = static_cast<const char*>(std::memchr(in.data() + i, '\n', in.size() - i));
      size_t end = nl ? size_t(nl - in.data()) : in.size();
      if (!discard_) {
        if (line_.size() + (end - i) > kLineCap) {
          garbage += line_.size();
          line_.clear();
          discard_ = true;
        } else {
          line_.append(in.data() + i, end - i);
        }
      }
      if (discard_) garbage += end - i;
      if (!nl) return std::string_view::npos;
      i = end + 1;
      if (!discard_) {
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        size_t off = accept(std::string_view(line_));
        if (off != std::string_view::npos) {
          garbage += off;
          line_.erase(0, off);
          return i;
        }
        garbage += line_.size() + 1;
      } else {
        garbage += 1;
      }
      line_.clear();
      discard_ = false;
    }
    return std::string_view::npos;
  }
  const std::string& line() const { return line_; }
  void clear() { line_.clear(); discard_ = false; }
  // The current line is unusable (bytes were lost inside it): skip to the next newline.
  void lose_line() { line_.clear(); discard_ = true; }
  bool mid_line() const { return !line_.empty(); }
  // The partial line could still become a request line ("POS", "POST /v1/ch…").
  bool maybe_request_start() const {
    if (line_.empty() || discard_) return false;
    static constexpr std::string_view kMethods[] = {"GET ", "POST ", "PUT ", "DELETE ", "PATCH ",
                                                    "HEAD ", "OPTIONS ", "CONNECT ", "TRACE "};
    for (auto m : kMethods) {
      size_t n = std::min(m.size(), line_.size());
      if (std::string_view(line_).substr(0, n) == m.substr(0, n)) return true;
    }
    return false;
  }

 private:
  std::string line_;
  bool discard_ = false;
};

// RFC 9112 chunked transfer coding; hands chunk data to a sink, stops after the last CRLF.
class Chunked {
 public:
  enum class R { More, Done, Error };
  template <class Sink>
  R feed(std::string_view in, size_t& consumed, Sink&& sink) {
    size_t i = 0;
    while (i < in.size()) {
      char c = in[i];
      switch (s_) {
        case S::Size: {
          int v = hex(c);
          if (v >= 0) {
            if (++digits_ > 15) return err(consumed, i);
            size_ = size_ * 16 + uint64_t(v);
            ++i;
          } else if (c == ';' || c == ' ' || c == '\t') {
            s_ = S::Ext;
            ++i;
          } else if (c == '\r') {
            s_ = S::SizeLF;
            ++i;
          } else if (c == '\n') {
            ++i;
            if (!size_line_end()) return err(consumed, i);
          } else {
            return err(consumed, i);
          }
          break;
        }
        case S::Ext: {
          const char* nl = static_cast<const char*>(std::memchr(in.data() + i, '\n', in.size() - i));
          size_t end = nl ? size_t(nl - in.data()) : in.size();
          ext_ += end - i;
          if (ext_ > 4096) return err(consumed, end);
          i = end;
          if (nl) {
            ++i;
            if (!size_line_end()) return err(consumed, i);
          }
          break;
        }
        case S::SizeLF:
          if (c != '\n') return err(consumed, i);
          ++i;
          if (!size_line_end()) return err(consumed, i);
          break;
        case S::Data: {
          size_t n = std::min<uint64_t>(remaining_, in.size() - i);
          sink(in.substr(i, n));
          remaining_ -= n;
          i += n;
          if (remaining_ == 0) s_ = S::DataCR;
          break;
        }
        case S::DataCR:
          if (c == '\r') { s_ = S::DataLF; ++i; }
          else if (c == '\n') { s_ = S::Size; reset_size(); ++i; }
          else return err(consumed, i);
          break;
        case S::DataLF:
          if (c != '\n') return err(consumed, i);
          s_ = S::Size;
          reset_size();
          ++i;
          break;
        case S::Trailer: {
          ++i;
          if (++trailer_ > 64 * 1024) return err(consumed, i);
          if (c == '\n') {
            if (line_len_ == 0) {
              s_ = S::Done;
              consumed = i;
              return R::Done;
            }
            line_len_ = 0;
          } else if (c != '\r') {
            ++line_len_;
          }
          break;
        }
        case S::Done:
          consumed = i;
          return R::Done;
      }
    }
    consumed = i;
    return R::More;
  }
  // Lost bytes: true when they fell inside one chunk's data (framing kept).
  bool gap(uint64_t lost) {
    if (s_ != S::Data || lost > remaining_) return false;
    remaining_ -= lost;
    if (remaining_ == 0) s_ = S::DataCR;
    return true;
  }
  bool in_data() const { return s_ == S::Data; }

 private:
  enum class S { Size, Ext, SizeLF, Data, DataCR, DataLF, Trailer, Done };
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  void reset_size() { size_ = 0; digits_ = 0; ext_ = 0; }
  bool size_line_end() {
    if (digits_ == 0) return false;
    if (size_ == 0) {
      s_ = S::Trailer;
      line_len_ = 0;
      trailer_ = 0;
    } else {
      remaining_ = size_;
      s_ = S::Data;
    }
    return true;
  }
  R err(size_t& consumed, size_t i) {
    consumed = i;
    return R::Error;
  }
  S s_ = S::Size;
  uint64_t size_ = 0, remaining_ = 0;
  int digits_ = 0;
  size_t ext_ = 0, line_len_ = 0, trailer_ = 0;
};

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

enum class BodyKind { None, Length, Chunked, UntilClose };

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
  std::unique_ptr<ContentDecoder> dec;
  std::unique_ptr<DocStream> docs;
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

struct Connection::Impl {
  Options opt;
  ConnectionStats& st;
  std::deque<std::unique_ptr<Pending>> q;
  std::vector<Exchange> out;
  std::vector<RequestInfo> reqs;
  bool dead = false;  // HTTP/2 or upgraded: nothing more is parsed

  // ---- request side ----
  enum class RS { Seek, Head, Body } rs = RS::Seek;
  bool r_resync = false;  // bytes were skipped or lost: the next request line is a resync
  LineSeeker r_seek;
  std::string r_head;
  BodyKind r_kind = BodyKind::None;
  uint64_t r_remaining = 0;
  Chunked r_chunked;
  Pending* r_cur = nullptr;
  uint64_t r_start_ns = 0;

  // ---- response side ----
  enum class PS { Seek, Head, Body, Lost } ps = PS::Seek;
  bool p_resync = false;
  LineSeeker p_seek;
  std::string p_head;
  BodyKind p_kind = BodyKind::None;
  uint64_t p_remaining = 0;
  Chunked p_chunked;
  Pending* p_cur = nullptr;  // front of q, or orphan
  std::unique_ptr<Pending> orphan;
  uint64_t p_start_ns = 0;
  int lost_state = 0;  // Lost: chunk-size line matcher
  std::string lost_hex, lost_cand;
  size_t lost_ext = 0;

  Impl(Options o, ConnectionStats& s) : opt(std::move(o)), st(s) {}

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
      fi.request_body_bytes = p->req_body_bytes;
      fi.request_scan_ok = !p->req_scan_broken && !p->req_scan.failed() && p->req_scan.started();
      fi.request_string_bytes = p->req_scan.string_bytes();
      p->adapter->finish(fi);
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
  void finish_front(Pending* p, bool complete, uint64_t t) {
    if (orphan && p == orphan.get()) {
      orphan.reset();
    } else {
      finalize(p, complete, t);
      if (r_cur == p) {
        r_cur = nullptr;
        rs = RS::Seek;
        r_seek.clear();
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

  void req_body_data(std::string_view d) {
    Pending* p = r_cur;
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
    rs = RS::Seek;
    r_seek.clear();
    r_cur = nullptr;
    if (!p) return;
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

  void request_head_done(uint64_t t) {
    std::string_view head(r_head);
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
    if (ps == PS::Lost) {
      ps = PS::Seek;
      p_seek.clear();
    }

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
    for (auto& h : hs)
      if (!util::is_secret_header(h.first)) ex.request_headers.push_back(std::move(h));
    ex.request_start_ns = r_start_ns ? r_start_ns : t;
    c.request_bytes = r_head.size();

    Pending* raw = p.get();
    q.push_back(std::move(p));
    r_cur = raw;
    r_head.clear();
    r_resync = false;
    while (q.size() > opt.max_pipelined) {
      Pending* f = q.front().get();
      if (f == r_cur) break;
      if (p_cur == f) { p_cur = nullptr; ps = PS::Seek; p_seek.clear(); }
      finish_front(f, false, t);
    }

    if (bad_len) {
      ++st.parse_errors;
      // cannot frame the body: give up on this request's body and resync
      request_done(t);
      r_resync = true;
      return;
    }
    if (chunked) {
      r_kind = BodyKind::Chunked;
      r_chunked = Chunked{};
      rs = RS::Body;
    } else if (clen && *clen > 0) {
      r_kind = BodyKind::Length;
      r_remaining = *clen;
      rs = RS::Body;
    } else {
      request_done(t);
    }
  }

  void feed_request(std::string_view in, uint64_t t) {
    while (!in.empty()) {
      if (dead) {
        st.unparsed_bytes += in.size();
        return;
      }
      switch (rs) {
        case RS::Seek: {
          bool preface = false;
          const uint64_t garbage_before = st.garbage_bytes;
          size_t n = r_seek.feed(
              in,
              [&](std::string_view line) -> size_t {
                if (line == "PRI * HTTP/2.0") {
                  preface = true;
                  return 0;
                }
                return find_request_line(line);
              },
              st.garbage_bytes);
          if (st.garbage_bytes != garbage_before) r_resync = true;
          if (n == std::string_view::npos) {
            if (r_seek.mid_line() && !r_start_ns) r_start_ns = t;
            if (!r_seek.mid_line()) r_start_ns = 0;
            return;
          }
          if (preface) {
            dead = true;
            st.http2_detected = 1;
            st.unparsed_bytes += r_seek.line().size() + in.size() - n;
            in = {};
            drop_all(t);
            return;
          }
          if (r_resync) ++st.resyncs;
          if (!r_start_ns) r_start_ns = t;
          r_head = r_seek.line();
          r_head += "\r\n";
          r_seek.clear();
          in.remove_prefix(n);
          rs = RS::Head;
          break;
        }
        case RS::Head: {
          size_t old = r_head.size();
          size_t from = old >= 3 ? old - 3 : 0;
          size_t take = std::min(in.size(), opt.max_header_bytes + 1 - std::min(old, opt.max_header_bytes));
          r_head.append(in.substr(0, take));
          size_t end = find_head_end(r_head, from);
          if (end == std::string::npos) {
            if (r_head.size() > opt.max_header_bytes) {
              ++st.parse_errors;
              st.garbage_bytes += r_head.size();
              r_head.clear();
              rs = RS::Seek;
              r_seek.lose_line();
              r_resync = true;
              r_start_ns = 0;
              in.remove_prefix(take);
              break;
            }
            in.remove_prefix(take);
            return;
          }
          size_t used = end - old;
          r_head.resize(end);
          in.remove_prefix(used);
          request_head_done(t);
          r_start_ns = 0;
          break;
        }
        case RS::Body: {
          Pending* p = r_cur;
          if (r_kind == BodyKind::Length) {
            size_t n = std::min<uint64_t>(r_remaining, in.size());
            request_bytes(p, n);
            req_body_data(in.substr(0, n));
            r_remaining -= n;
            in.remove_prefix(n);
            if (r_remaining == 0) request_done(t);
          } else {
            size_t consumed = 0;
            auto r = r_chunked.feed(in, consumed, [&](std::string_view d) { req_body_data(d); });
            request_bytes(p, consumed);
            in.remove_prefix(consumed);
            if (r == Chunked::R::Done) {
              request_done(t);
            } else if (r == Chunked::R::Error) {
              ++st.parse_errors;
              if (p) { p->truncated = true; p->req_scan_broken = true; }
              request_done(t);
              r_seek.lose_line();
              r_resync = true;
            }
          }
          break;
        }
      }
    }
  }

  static size_t find_head_end(const std::string& s, size_t from) {
    for (size_t i = from; i < s.size(); ++i) {
      if (s[i] != '\n') continue;
      if (i + 1 < s.size() && s[i + 1] == '\n') return i + 2;
      if (i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
    }
    return std::string::npos;
  }

  void gap_request(uint64_t lost, uint64_t t) {
    if (dead) {
      st.unparsed_bytes += lost;
      return;
    }
    switch (rs) {
      case RS::Seek:
        r_seek.lose_line();
        r_resync = true;
        st.garbage_bytes += lost;
        return;
      case RS::Head:
        st.garbage_bytes += r_head.size() + lost;
        r_head.clear();
        rs = RS::Seek;
        r_seek.lose_line();
        r_resync = true;
        r_start_ns = 0;
        return;
      case RS::Body: {
        Pending* p = r_cur;
        if (p) {
          p->truncated = true;
          p->req_scan_broken = true;
          p->req_body_bytes += lost;
          p->ex.call.request_bytes += lost;
        }
        bool kept = false;
        if (r_kind == BodyKind::Length) {
          if (lost <= r_remaining) {
            r_remaining -= lost;
            kept = true;
            if (r_remaining == 0) request_done(t);
          }
        } else {
          kept = r_chunked.gap(lost);
        }
        if (!kept) {
          request_done(t);
          r_seek.lose_line();
          r_resync = true;
        }
        return;
      }
    }
  }

  // ---- response side -----------------------------------------------------------------------
  void response_head_done(uint64_t t) {
    std::string_view head(p_head);
    auto nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    HeaderList hs;
    if (!parse_header_lines(head.substr(nl + 1), hs)) ++st.parse_errors;
    Pending* p = p_cur;
    size_t head_bytes = p_head.size();
    p_head.clear();
    if (p) p->ex.call.response_bytes += head_bytes;

    if (status == 101) {
      dead = true;
      st.upgraded = 1;
      if (p) finish_front(p, false, t);
      drop_all(t);
      return;
    }
    if (status >= 100 && status < 200) {  // 100 Continue, 103 Early Hints: the real one follows
      ps = PS::Seek;
      p_seek.clear();
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
    if (p) {
      Exchange& ex = p->ex;
      LlmCall& c = ex.call;
      p->resp_started = true;
      ex.response_start_ns = p_start_ns ? p_start_ns : t;
      c.status = status;
      for (auto& [k, v] : hs) {
        if (k.starts_with("x-ratelimit-") || k.starts_with("anthropic-ratelimit-"))
          c.ratelimit[k] = v;
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
    bool no_body = (p && p->head_method) || status == 204 || status == 304;
    if (no_body) {
      if (p) p->ex.response_end_ns = t;
      if (p) finish_front(p, true, t);
      ps = PS::Seek;
      p_seek.clear();
      return;
    }
    if (bad_len) ++st.parse_errors;
    if (chunked) {
      p_kind = BodyKind::Chunked;
      p_chunked = Chunked{};
    } else if (clen && !bad_len) {
      p_kind = BodyKind::Length;
      p_remaining = *clen;
    } else {
      p_kind = BodyKind::UntilClose;
    }
    ps = PS::Body;
    if (p_kind == BodyKind::Length && p_remaining == 0) response_done(t);
  }

  void resp_body_data(std::string_view d) {
    Pending* p = p_cur;
    if (!p || !p->adapter || p->body_unparsed || !p->dec) return;
    if (!p->dec->feed(d, [&](std::string_view x) { p->docs->feed(x); })) p->body_unparsed = true;
  }

  void response_done(uint64_t t) {
    Pending* p = p_cur;
    ps = PS::Seek;
    p_seek.clear();
    if (!p) return;
    p->ex.response_end_ns = t;
    finish_front(p, true, t);
  }

  Pending* response_target() {
    for (auto& p : q)
      if (!p->resp_started && !p->resp_lost) return p.get();
    return nullptr;
  }

  void feed_response(std::string_view in, uint64_t t) {
    while (!in.empty()) {
      if (dead) {
        st.unparsed_bytes += in.size();
        return;
      }
      switch (ps) {
        case PS::Seek: {
          const uint64_t garbage_before = st.garbage_bytes;
          size_t n = p_seek.feed(in, [](std::string_view l) { return find_status_line(l); },
                                 st.garbage_bytes);
          if (st.garbage_bytes != garbage_before) p_resync = true;
          if (n == std::string_view::npos) {
            if (p_seek.mid_line() && !p_start_ns) p_start_ns = t;
            if (!p_seek.mid_line()) p_start_ns = 0;
            return;
          }
          if (p_resync) {
            ++st.resyncs;
            p_resync = false;
          }
          // responses whose framing was lost end when a new status line shows up
          while (!q.empty() && q.front()->resp_lost) finish_front(q.front().get(), false, t);
          p_cur = response_target();
          if (!p_cur) {
            orphan = std::make_unique<Pending>();
            p_cur = orphan.get();
          }
          if (!p_start_ns) p_start_ns = t;
          p_head = p_seek.line();
          p_head += "\r\n";
          p_seek.clear();
          in.remove_prefix(n);
          ps = PS::Head;
          break;
        }
        case PS::Head: {
          size_t old = p_head.size();
          size_t from = old >= 3 ? old - 3 : 0;
          size_t take = std::min(in.size(), opt.max_header_bytes + 1 - std::min(old, opt.max_header_bytes));
          p_head.append(in.substr(0, take));
          size_t end = find_head_end(p_head, from);
          if (end == std::string::npos) {
            if (p_head.size() > opt.max_header_bytes) {
              ++st.parse_errors;
              st.garbage_bytes += p_head.size();
              p_head.clear();
              lose_response(t);
              in.remove_prefix(take);
              break;
            }
            in.remove_prefix(take);
            return;
          }
          size_t used = end - old;
          p_head.resize(end);
          in.remove_prefix(used);
          response_head_done(t);
          p_start_ns = 0;
          break;
        }
        case PS::Body: {
          Pending* p = p_cur;
          if (p_kind == BodyKind::Length) {
            size_t n = std::min<uint64_t>(p_remaining, in.size());
            if (p) p->ex.call.response_bytes += n;
            resp_body_data(in.substr(0, n));
            p_remaining -= n;
            in.remove_prefix(n);
            if (p_remaining == 0) response_done(t);
          } else if (p_kind == BodyKind::Chunked) {
            size_t consumed = 0;
            auto r = p_chunked.feed(in, consumed, [&](std::string_view d) { resp_body_data(d); });
            if (p) p->ex.call.response_bytes += consumed;
            in.remove_prefix(consumed);
            if (r == Chunked::R::Done) {
              response_done(t);
            } else if (r == Chunked::R::Error) {
              ++st.parse_errors;
              lose_response(t);
            }
          } else {
            if (p) p->ex.call.response_bytes += in.size();
            resp_body_data(in);
            in = {};
          }
          break;
        }
        case PS::Lost: {
          // Chunked framing lost inside a response. Identity-coded bytes still go to the
          // document parser (SSE/NDJSON resynchronize on their own boundaries) while we look
          // for the next chunk-size line ("\r\n<hex>[;ext]\r\n"); there the chunked parser
          // restarts, so the final usage event and the last chunk are still read. Bytes of a
          // candidate size line are held back until it is known to be one (then dropped).
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
          in.remove_prefix(i);
          if (found) {
            lost_state = 0;
            lost_cand.clear();
            p_chunked = Chunked{};
            std::string line = lost_hex + "\r\n";
            size_t consumed = 0;
            p_chunked.feed(line, consumed, [](std::string_view) {});
            if (p) p->resp_lost = false;
            ps = PS::Body;
            p_kind = BodyKind::Chunked;
          }
          break;
        }
      }
    }
  }


  // Response framing lost: identity-coded chunked bodies go on in PS::Lost, the rest waits for
  // the next status line; the exchange ends at the next request, status line or close.
  void lose_response(uint64_t t) {
    Pending* p = p_cur;
    p_resync = true;
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
    if (p && p->resp_started && ps == PS::Body && p_kind == BodyKind::Chunked) {
      ps = PS::Lost;
      lost_state = 0;
      lost_cand.clear();
      return;
    }
    ps = PS::Seek;
    p_seek.lose_line();
    p_start_ns = 0;
  }

  void gap_response(uint64_t lost, uint64_t t) {
    if (dead) {
      st.unparsed_bytes += lost;
      return;
    }
    Pending* p = p_cur;
    switch (ps) {
      case PS::Seek:
        p_seek.lose_line();
        p_resync = true;
        st.garbage_bytes += lost;
        p_start_ns = 0;
        // Nothing pipelines: when a written request awaits its response, the lost bytes are
        // that response's start. It ends at the next request, status line or close.
        if (Pending* f = response_target(); f && f->req_done) {
          f->resp_lost = true;
          f->truncated = true;
        }
        return;
      case PS::Head:
        st.garbage_bytes += p_head.size() + lost;
        p_head.clear();
        if (p && p != orphan.get()) {
          p->resp_started = true;  // it was answered; the status is unknown
          p->ex.response_start_ns = p_start_ns ? p_start_ns : t;
        }
        lose_response(t);
        return;
      case PS::Lost:
        if (p) p->ex.call.response_bytes += lost;
        lost_state = 0;
        if (p && p->docs) p->docs->resync();
        return;
      case PS::Body: {
        if (p) {
          p->ex.call.response_bytes += lost;
          p->truncated = true;
          if (p->docs) p->docs->resync();
          if (p->dec && p->dec->kind() != ContentDecoder::Kind::Identity) p->body_unparsed = true;
        }
        bool kept = false;
        if (p_kind == BodyKind::Length) {
          if (lost <= p_remaining) {
            p_remaining -= lost;
            kept = true;
            if (p_remaining == 0) response_done(t);
          } else {
            response_done(t);  // the body is over; the rest belongs to what follows
            p_seek.lose_line();
            p_resync = true;
            return;
          }
        } else if (p_kind == BodyKind::Chunked) {
          kept = p_chunked.gap(lost);
        } else {
          kept = true;
        }
        if (!kept) lose_response(t);
        return;
      }
    }
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
    if (!dead && ps == PS::Body && p_cur && p_kind == BodyKind::UntilClose) response_done(t);
    orphan.reset();
    p_cur = nullptr;
    r_cur = nullptr;
    while (!q.empty()) {
      finalize(q.front().get(), false, t);
      q.pop_front();
    }
    rs = RS::Seek;
    ps = PS::Seek;
    r_seek.clear();
    p_seek.clear();
    r_head.clear();
    p_head.clear();
    r_resync = p_resync = false;
    r_start_ns = p_start_ns = 0;
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
  return !impl_->dead && (impl_->rs != Impl::RS::Seek || impl_->r_seek.maybe_request_start());
}

size_t Connection::awaiting_response() const {
  size_t n = 0;
  for (auto& p : impl_->q)
    if (p->req_done || p->resp_started) ++n;
  return n;
}

}  // namespace ab::protocol
