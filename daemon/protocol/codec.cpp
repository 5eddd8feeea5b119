#include "protocol/codec.h"

#include <brotli/decode.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstring>

#include "protocol/strutil.h"

namespace ab::protocol {

// ---- ContentDecoder ---------------------------------------------------------------------

struct ContentDecoder::Impl {
  z_stream z{};
  bool z_init = false;
  bool z_started = false;  // deflate: zlib-or-raw decided
  bool z_end = false;      // stream end seen (gzip may have more members)
  BrotliDecoderState* br = nullptr;
  unsigned char out[16384];
  ~Impl() {
    if (z_init) inflateEnd(&z);
    if (br) BrotliDecoderDestroyInstance(br);
  }
};

ContentDecoder::Kind ContentDecoder::kind_from_header(std::string_view ce) {
  ce = detail::trim(ce);
  if (ce.empty() || detail::iequals(ce, "identity")) return Kind::Identity;
  if (detail::iequals(ce, "gzip") || detail::iequals(ce, "x-gzip")) return Kind::Gzip;
  if (detail::iequals(ce, "deflate")) return Kind::Deflate;
  if (detail::iequals(ce, "br")) return Kind::Brotli;
  return Kind::Unsupported;
}

ContentDecoder::ContentDecoder(Kind k) : kind_(k), impl_(std::make_unique<Impl>()) {
  if (k == Kind::Gzip) {
    impl_->z_init = inflateInit2(&impl_->z, 15 + 16) == Z_OK;
    failed_ = !impl_->z_init;
  } else if (k == Kind::Brotli) {
    impl_->br = BrotliDecoderCreateInstance(nullptr, nullptr, nullptr);
    failed_ = impl_->br == nullptr;
  } else if (k == Kind::Unsupported) {
    failed_ = true;
  }
}

ContentDecoder::~ContentDecoder() = default;

bool ContentDecoder::feed(std::string_view in, const Out& out) {
  if (failed_) return false;
  if (in.empty()) return true;
  auto emit = [&](const unsigned char* p, size_t n) {
    if (!n) return true;
    produced_ += n;
    if (produced_ > max_output) { failed_ = too_large_ = true; return false; }
    out(std::string_view(reinterpret_cast<const char*>(p), n));
    return true;
  };
  switch (kind_) {
    case Kind::Identity:
      produced_ += in.size();
      out(in);
      return true;
    case Kind::Unsupported:
      failed_ = true;
      return false;
    case Kind::Deflate:
      if (!impl_->z_started) {
        // RFC 9110 "deflate" is zlib-wrapped, but servers also send raw deflate: a zlib header
        // has CM=8 in the low nibble and (CMF*256+FLG) % 31 == 0.
        unsigned char b0 = static_cast<unsigned char>(in[0]);
        bool zlib_hdr = (b0 & 0x0f) == 8 && (b0 >> 4) <= 7;
        if (zlib_hdr && in.size() >= 2)
          zlib_hdr = ((unsigned(b0) << 8) | static_cast<unsigned char>(in[1])) % 31 == 0;
        impl_->z_init = inflateInit2(&impl_->z, zlib_hdr ? 15 : -15) == Z_OK;
        impl_->z_started = true;
        if (!impl_->z_init) { failed_ = true; return false; }
      }
      [[fallthrough]];
    case Kind::Gzip: {
      z_stream& z = impl_->z;
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
      z.avail_in = static_cast<uInt>(in.size());
      while (z.avail_in > 0) {
        if (impl_->z_end) {
          // gzip: another member may follow; anything else after the end is ignored
          if (kind_ != Kind::Gzip) return true;
          if (z.next_in[0] != 0x1f) return true;
          inflateReset(&z);
          impl_->z_end = false;
        }
        z.next_out = impl_->out;
        z.avail_out = sizeof(impl_->out);
        int rc = inflate(&z, Z_NO_FLUSH);
        size_t n = sizeof(impl_->out) - z.avail_out;
        if (!emit(impl_->out, n)) return false;
        if (rc == Z_STREAM_END) {
          impl_->z_end = true;
        } else if (rc == Z_BUF_ERROR) {
          if (n == 0 && z.avail_in > 0) { failed_ = true; return false; }
        } else if (rc != Z_OK) {
          failed_ = true;
          return false;
        }
      }
      // drain output still buffered inside zlib
      while (!impl_->z_end) {
        z.next_out = impl_->out;
        z.avail_out = sizeof(impl_->out);
        int rc = inflate(&z, Z_NO_FLUSH);
        size_t n = sizeof(impl_->out) - z.avail_out;
        if (!emit(impl_->out, n)) return false;
        if (rc == Z_STREAM_END) impl_->z_end = true;
        if (n == 0 || (rc != Z_OK && rc != Z_STREAM_END)) break;
      }
      return true;
    }
    case Kind::Brotli: {
      size_t avail_in = in.size();
      const uint8_t* next_in = reinterpret_cast<const uint8_t*>(in.data());
      for (;;) {
        size_t avail_out = sizeof(impl_->out);
        uint8_t* next_out = impl_->out;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(impl_->br, &avail_in, &next_in, &avail_out, &next_out, nullptr);
        if (!emit(impl_->out, sizeof(impl_->out) - avail_out)) return false;
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) continue;
        if (r == BROTLI_DECODER_RESULT_ERROR) { failed_ = true; return false; }
        return true;  // NEEDS_MORE_INPUT or SUCCESS (trailing bytes ignored)
      }
    }
  }
  return true;
}

// ---- DocStream ----------------------------------------------------------------------------

namespace {
constexpr size_t kHead = 16;
inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
}  // namespace

DocStream::DocStream(Framing f, const ScanSpec* spec, DocSink* sink)
    : f_(f), sink_(sink), sc_(spec), spec_(spec) {}

void DocStream::scan(std::string_view in) {
  if (head_.size() < kHead) head_.append(in.substr(0, kHead - head_.size()));
  sc_.feed(in);
}

void DocStream::dispatch(std::string_view event) {
  if (sc_.failed() || !sc_.done()) ++bad_;
  else ok_since_resync_ = true;
  ++docs_;
  sink_->on_doc(event, head_, sc_);
  sc_.reset();
  head_.clear();
}

void DocStream::feed(std::string_view in) {
  switch (f_) {
    case Framing::Json: feed_json(in); break;
    case Framing::JsonArray: feed_array(in); break;
    case Framing::Sse: feed_sse(in); break;
    case Framing::EventStream: feed_eventstream(in); break;
  }
}

uint64_t DocStream::frames() const { return es_ ? es_->messages() : 0; }
uint64_t DocStream::bad_frames() const { return (es_ ? es_->bad_frames() : 0) + es_bad_payloads_; }

void DocStream::feed_eventstream(std::string_view in) {
  if (!es_) es_ = std::make_unique<EventStreamDecoder>([this](const EventStreamMessage& m) { eventstream_message(m); });
  es_->feed(in);
}

void DocStream::eventstream_message(const EventStreamMessage& m) {
  std::string event = m.event_type;
  if (m.message_type == "exception") event = "exception:" + m.exception_type;
  else if (m.message_type == "error") event = "error:" + m.error_code;
  std::string_view doc = m.payload;
  std::string inner;
  if (m.message_type == "event" && m.event_type == "chunk") {
    // InvokeModelWithResponseStream: {"bytes":"<base64 of the model's own JSON chunk>"}
    nlohmann::json j = nlohmann::json::parse(m.payload, nullptr, false);
    const nlohmann::json* b = j.is_object() ? &j["bytes"] : nullptr;
    if (!b || !b->is_string() || !base64_decode(b->get_ref<const std::string&>(), inner)) {
      ++es_bad_payloads_;
      return;
    }
    doc = inner;
  }
  sc_.reset();
  head_.clear();
  scan(doc);
  sc_.finish();
  dispatch(event);
}

void DocStream::feed_json(std::string_view in) {
  if (rescue_) {
    constexpr size_t kTail = 64 * 1024;
    if (in.size() >= kTail) {
      tail_.assign(in.substr(in.size() - kTail));
    } else {
      if (tail_.size() + in.size() > 2 * kTail) tail_.erase(0, tail_.size() + in.size() - kTail);
      tail_.append(in);
    }
  }
  while (!in.empty()) {
    if (skip_to_nl_) {
      auto nl = in.find('\n');
      if (nl == std::string_view::npos) return;
      in.remove_prefix(nl + 1);
      skip_to_nl_ = false;
      continue;
    }
    if (!sc_.started()) {
      size_t i = 0;
      while (i < in.size() && is_ws(in[i])) ++i;
      in.remove_prefix(i);
      if (in.empty()) return;
    }
    size_t before = in.size();
    if (head_.size() < kHead) head_.append(in.substr(0, kHead - head_.size()));
    size_t n = sc_.feed(in);
    in.remove_prefix(n);
    if (sc_.done()) {
      dispatch({});
    } else if (sc_.failed()) {
      dispatch({});
      skip_to_nl_ = true;
    } else if (n == before) {
      return;  // everything consumed, document continues
    }
  }
}

void DocStream::feed_array(std::string_view in) {
  while (!in.empty()) {
    switch (arr_) {
      case Arr::Before: {
        char c = in[0];
        in.remove_prefix(1);
        if (is_ws(c)) break;
        if (c == '[') {
          arr_ = Arr::BetweenElems;
        } else if (c == '{') {
          // not an array after all: treat the body as a single JSON document
          f_ = Framing::Json;
          sc_.reset();
          head_.clear();
          feed_json("{");
          feed_json(in);
          return;
        } else {
          arr_ = Arr::Lost;
        }
        break;
      }
      case Arr::BetweenElems: {
        char c = in[0];
        if (is_ws(c) || c == ',') { in.remove_prefix(1); break; }
        if (c == ']') { arr_ = Arr::End; in.remove_prefix(1); break; }
        arr_ = Arr::InElem;
        break;
      }
      case Arr::InElem: {
        size_t before = in.size();
        if (head_.size() < kHead) head_.append(in.substr(0, kHead - head_.size()));
        size_t n = sc_.feed(in);
        in.remove_prefix(n);
        if (sc_.done()) {
          dispatch({});
          arr_ = Arr::BetweenElems;
        } else if (sc_.failed()) {
          dispatch({});
          arr_ = Arr::Lost;
          arr_last_ = 0;
        } else if (n == before) {
          return;
        }
        break;
      }
      case Arr::End:
        return;
      case Arr::Lost: {
        // resume at an element start: '{' after ',' (only whitespace between)
        while (!in.empty()) {
          char c = in[0];
          if (c == '{' && arr_last_ == ',') {
            arr_ = Arr::InElem;
            break;
          }
          if (!is_ws(c)) arr_last_ = c;
          in.remove_prefix(1);
        }
        break;
      }
    }
  }
}

void DocStream::sse_dispatch() {
  if (have_data_) {
    sc_.finish();
    dispatch(event_);
  }
  have_data_ = false;
  event_.clear();
  sc_.reset();
  head_.clear();
}

void DocStream::sse_line_end() {
  if (sse_ == Sse::LineStart) {
    if (sse_lost_) {
      sse_lost_ = false;  // a blank line: the next event starts clean
      have_data_ = false;
      event_.clear();
      sc_.reset();
      head_.clear();
    } else {
      sse_dispatch();
    }
  } else if (sse_ == Sse::Field) {
    // a line with no colon: the whole line is a field name with an empty value
    if (field_ == "data" && !sse_lost_) {
      if (have_data_) scan("\n");
      have_data_ = true;
    }
  }
  sse_ = Sse::LineStart;
  field_.clear();
}

void DocStream::feed_sse(std::string_view in) {
  size_t i = 0;
  const size_t n = in.size();
  while (i < n) {
    char c = in[i];
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') { ++i; continue; }
    }
    switch (sse_) {
      case Sse::LineStart:
      case Sse::Field: {
        if (c == '\r' || c == '\n') {
          after_cr_ = c == '\r';
          ++i;
          sse_line_end();
          break;
        }
        if (c == ':') {
          ++i;
          if (sse_ == Sse::LineStart) {
            sse_ = Sse::Ignore;  // comment
          } else if (field_ == "data" && !sse_lost_) {
            if (have_data_) scan("\n");
            have_data_ = true;
            sse_ = Sse::SpaceAfterColon;
          } else if (field_ == "event") {
            event_.clear();
            sse_ = Sse::SpaceAfterColon;
          } else {
            sse_ = Sse::Ignore;
          }
          break;
        }
        if (field_.size() >= 16) {
          sse_ = Sse::Ignore;
        } else {
          field_ += c;
          sse_ = Sse::Field;
        }
        ++i;
        break;
      }
      case Sse::SpaceAfterColon:
        sse_ = field_ == "data" ? Sse::Data : Sse::Event;
        if (c == ' ') ++i;
        break;
      case Sse::Data: {
        size_t j = i;
        while (j < n && in[j] != '\n' && in[j] != '\r') ++j;
        if (j > i) scan(in.substr(i, j - i));
        i = j;
        if (i < n) {
          after_cr_ = in[i] == '\r';
          ++i;
          sse_ = Sse::LineStart;
          field_.clear();
        }
        break;
      }
      case Sse::Event:
      case Sse::Ignore: {
        size_t j = i;
        while (j < n && in[j] != '\n' && in[j] != '\r') ++j;
        if (sse_ == Sse::Event && event_.size() < 64)
          event_.append(in.substr(i, std::min(j - i, size_t(64) - event_.size())));
        i = j;
        if (i < n) {
          after_cr_ = in[i] == '\r';
          ++i;
          sse_ = Sse::LineStart;
          field_.clear();
        }
        break;
      }
    }
  }
}

void DocStream::finish() {
  switch (f_) {
    case Framing::Json:
      if (sc_.started() && !skip_to_nl_) {
        sc_.finish();
        dispatch({});
      }
      if (rescue_ && !ok_since_resync_) rescue();
      break;
    case Framing::JsonArray:
      if (arr_ == Arr::InElem && sc_.started()) dispatch({});
      break;
    case Framing::Sse:
      if (!sse_lost_) sse_dispatch();
      break;
    case Framing::EventStream: break;  // a message cut off is no document
  }
}

namespace {
// The JSON value that follows `"key"` + ':' at `pos` in `s`, when it is complete in `s`.
std::string_view value_after_key(std::string_view s, size_t pos) {
  size_t i = pos;
  while (i < s.size() && is_ws(s[i])) ++i;
  if (i >= s.size() || s[i] != ':') return {};
  ++i;
  while (i < s.size() && is_ws(s[i])) ++i;
  if (i >= s.size()) return {};
  size_t start = i;
  char c = s[i];
  if (c == '{' || c == '[') {
    int depth = 0;
    bool in_str = false, esc = false;
    for (; i < s.size(); ++i) {
      char ch = s[i];
      if (in_str) {
        if (esc) esc = false;
        else if (ch == '\\') esc = true;
        else if (ch == '"') in_str = false;
        continue;
      }
      if (ch == '"') in_str = true;
      else if (ch == '{' || ch == '[') ++depth;
      else if ((ch == '}' || ch == ']') && --depth == 0) return s.substr(start, i + 1 - start);
    }
    return {};
  }
  if (c == '"') {
    for (++i; i < s.size(); ++i) {
      if (s[i] == '\\') { ++i; continue; }
      if (s[i] == '"') return s.substr(start, i + 1 - start);
    }
    return {};
  }
  while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '-' ||
                          s[i] == '.' || s[i] == '+'))
    ++i;
  return i > start && i < s.size() ? s.substr(start, i - start) : std::string_view{};
}
}  // namespace

void DocStream::rescue() {
  rescue_ = false;
  if (!spec_ || tail_.empty()) return;
  std::string doc = "{";
  for (const auto& key : spec_->capture) {
    if (key.find('.') != std::string::npos) continue;
    std::string needle = "\"" + key + "\"";
    size_t pos = tail_.rfind(needle);
    while (pos != std::string::npos) {
      std::string_view v = value_after_key(tail_, pos + needle.size());
      if (!v.empty()) {
        if (doc.size() > 1) doc += ',';
        doc += needle;
        doc += ':';
        doc += v;
        break;
      }
      if (pos == 0) break;
      pos = tail_.rfind(needle, pos - 1);
    }
  }
  tail_.clear();
  if (doc.size() == 1) return;
  doc += '}';
  sc_.reset();
  head_.clear();
  sc_.feed(doc);
  if (sc_.done()) dispatch({});
  sc_.reset();
}

void DocStream::resync() {
  sc_.reset();
  head_.clear();
  switch (f_) {
    case Framing::Json:
      skip_to_nl_ = true;
      rescue_ = true;
      ok_since_resync_ = false;
      tail_.clear();
      break;
    case Framing::JsonArray: arr_ = Arr::Lost; arr_last_ = 0; break;
    case Framing::EventStream:
      if (es_) es_->lose_sync();
      break;
    case Framing::Sse:
      // the rest of the current line is unknown; the next line starts a fresh event (the
      // JSON APIs send one data line per event, so nothing of value is skipped)
      have_data_ = false;
      event_.clear();
      sse_ = Sse::Ignore;  // the rest of the current line is unknown
      field_.clear();
      break;
  }
}

}  // namespace ab::protocol
