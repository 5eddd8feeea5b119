// message_reader.h — the framing of ONE direction of an HTTP/1.x stream, shared by requests
// and responses (internal to the protocol module; connection.cpp is its user).
//
// A MessageReader looks for a start line (the owner says which lines are one), counts the
// bytes skipped on the way (garbage) and the restarts after skipped or lost bytes (resyncs),
// remembers when the message started, gathers the head up to a size bound, then frames the
// body (Content-Length, chunked, or until close) and hands its data to the owner. Lost bytes
// (gap) are skipped exactly inside a body whose framing allows it; elsewhere the reader
// resynchronizes at the next start line.
//
// What differs between the directions stays with the owner, a handler passed to feed() and
// gap() (its member functions are called inline):
//   size_t find_start(std::string_view line)   offset of a start line in `line`, or npos
//   bool on_start(std::string_view line, uint64_t t)   a start line was accepted; false stops
//       parsing (feed() then returns the line's and the rest's size as unparsed)
//   void on_head(std::string_view head, uint64_t t)    the whole head (start line, headers,
//       blank line); the owner picks the body: expect_length/expect_chunked/
//       expect_until_close, or end_message() when there is none
//   void on_head_overflow(uint64_t t)   head over the bound (counted as a parse error and
//       garbage, head dropped); the owner calls lose() (or its own equivalent)
//   void on_body_bytes(uint64_t n)      bytes of the body as framed on the wire
//   void on_body(std::string_view data) body data (chunk framing removed)
//   void on_body_end(uint64_t t)        the body ended; the reader is back at Seek
//   void on_framing_lost(uint64_t t)    bad chunk framing (counted) or lost bytes the body's
//       framing cannot absorb; the owner ends the message and resynchronizes (lose(),
//       enter_lost(), ...)
//   bool stopped() const                nothing more is parsed (HTTP/2, upgrade)
//   size_t feed_lost(std::string_view in, uint64_t t)   state Lost: the owner consumes at
//       least one byte and may resume_chunked()
//   gaps: void on_seek_gap(uint64_t t), on_head_gap(uint64_t t) (garbage counted, head
//       dropped; the owner calls lose()), on_body_gap(uint64_t lost) (before the framing
//       decides), on_lost_gap(uint64_t lost, uint64_t t)
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "protocol/connection.h"
#include "protocol/header_budget.h"

namespace ab::protocol {

// Looks for the next line accepted by a predicate; every byte of a rejected line is garbage.
class LineSeeker {
 public:
  static constexpr size_t kLineCap = 8192;  // longest request/status line looked at

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
  bool maybe_request_start() const;

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

// Offset just past the blank line that ends a message head, searching from `from`; npos if
// the head is not complete yet.
size_t find_head_end(const std::string& s, size_t from);

class MessageReader {
 public:
  enum class State { Seek, Head, Body, Lost };
  enum class BodyKind { Length, Chunked, UntilClose };

  // `budget` (may be null): the cap shared by every stream's heads (header_budget.h).
  MessageReader(ConnectionStats& st, size_t max_header_bytes, HeaderBudget* budget = nullptr)
      : st_(st), max_head_(max_header_bytes), head_(budget, max_header_bytes + 1) {}

  // Parses `in` (received at `t`); returns how many bytes were left unparsed because the
  // handler stopped the stream.
  template <class H>
  uint64_t feed(std::string_view in, uint64_t t, H& h) {
    while (!in.empty()) {
      if (h.stopped()) return in.size();
      switch (state_) {
        case State::Seek: {
          const uint64_t garbage_before = st_.garbage_bytes;
          size_t n = seek_.feed(in, [&](std::string_view l) { return h.find_start(l); },
                                st_.garbage_bytes);
          if (st_.garbage_bytes != garbage_before) resync_ = true;
          if (n == std::string_view::npos) {
            if (seek_.mid_line() && !start_ns_) start_ns_ = t;
            if (!seek_.mid_line()) start_ns_ = 0;
            return 0;
          }
          in.remove_prefix(n);
          if (!h.on_start(std::string_view(seek_.line()), t)) return seek_.line().size() + in.size();
          if (resync_) {
            ++st_.resyncs;
            resync_ = false;
          }
          if (!start_ns_) start_ns_ = t;
          state_ = State::Head;
          if (!head_.append(seek_.line()) || !head_.append("\r\n")) {
            seek_.clear();
            budget_refused(t, h);
            break;
          }
          seek_.clear();
          break;
        }
        case State::Head: {
          size_t old = head_.size();
          size_t from = old >= 3 ? old - 3 : 0;
          size_t take = std::min(in.size(), max_head_ + 1 - std::min(old, max_head_));
          if (!head_.append(in.substr(0, take))) {
            st_.garbage_bytes += take;
            in.remove_prefix(take);
            budget_refused(t, h);
            break;
          }
          size_t end = find_head_end(head_.str(), from);
          if (end == std::string::npos) {
            in.remove_prefix(take);
            if (head_.size() > max_head_) {
              ++st_.parse_errors;
              st_.garbage_bytes += head_.size();
              head_.release();
              h.on_head_overflow(t);
              break;
            }
            return 0;
          }
          head_.resize(end);
          in.remove_prefix(end - old);
          h.on_head(std::string_view(head_.str()), t);
          head_.release();
          start_ns_ = 0;
          break;
        }
        case State::Body:
          if (kind_ == BodyKind::Length) {
            size_t n = std::min<uint64_t>(remaining_, in.size());
            h.on_body_bytes(n);
            h.on_body(in.substr(0, n));
            remaining_ -= n;
            in.remove_prefix(n);
            if (remaining_ == 0) end_body(h, t);
          } else if (kind_ == BodyKind::Chunked) {
            size_t consumed = 0;
            auto r = chunked_.feed(in, consumed, [&](std::string_view d) { h.on_body(d); });
            h.on_body_bytes(consumed);
            in.remove_prefix(consumed);
            if (r == Chunked::R::Done) {
              end_body(h, t);
            } else if (r == Chunked::R::Error) {
              ++st_.parse_errors;
              h.on_framing_lost(t);
            }
          } else {
            h.on_body_bytes(in.size());
            h.on_body(in);
            in = {};
          }
          break;
        case State::Lost:
          in.remove_prefix(h.feed_lost(in, t));
          break;
      }
    }
    return 0;
  }

  // `lost` bytes of this direction were not captured here (the caller counted the gap).
  template <class H>
  void gap(uint64_t lost, uint64_t t, H& h) {
    switch (state_) {
      case State::Seek:
        seek_.lose_line();
        resync_ = true;
        st_.garbage_bytes += lost;
        h.on_seek_gap(t);
        return;
      case State::Head:
        st_.garbage_bytes += head_.size() + lost;
        head_.release();
        h.on_head_gap(t);
        return;
      case State::Lost:
        h.on_lost_gap(lost, t);
        return;
      case State::Body: {
        h.on_body_gap(lost);
        bool kept = true;
        if (kind_ == BodyKind::Length) {
          if (lost > remaining_) {
            end_body(h, t);  // the body is over; the rest belongs to what follows
            seek_.lose_line();
            resync_ = true;
            return;
          }
          remaining_ -= lost;
          if (remaining_ == 0) end_body(h, t);
        } else if (kind_ == BodyKind::Chunked) {
          kept = chunked_.gap(lost);
        }
        if (!kept) h.on_framing_lost(t);
        return;
      }
    }
  }

  // Owner-driven transitions.
  void expect_length(uint64_t n) { state_ = State::Body; kind_ = BodyKind::Length; remaining_ = n; }
  void expect_chunked() { state_ = State::Body; kind_ = BodyKind::Chunked; chunked_ = Chunked{}; }
  void expect_until_close() { state_ = State::Body; kind_ = BodyKind::UntilClose; }
  // The message is over (or abandoned cleanly): look for the next start line.
  void end_message() { state_ = State::Seek; seek_.clear(); }
  // Framing lost: skip to the next newline, then look for a start line (counted as a resync).
  void lose() {
    state_ = State::Seek;
    seek_.lose_line();
    resync_ = true;
    start_ns_ = 0;
  }
  // The owner hunts for the body's next chunk-size line itself (see feed_lost).
  void enter_lost() { state_ = State::Lost; }
  // Back to chunked framing right after a chunk-size line ("<hex>\r\n").
  void resume_chunked(std::string_view size_line) {
    chunked_ = Chunked{};
    size_t consumed = 0;
    chunked_.feed(size_line, consumed, [](std::string_view) {});
    state_ = State::Body;
    kind_ = BodyKind::Chunked;
  }
  // The next start line counts as a resync.
  void mark_resync() { resync_ = true; }
  void clear_start() { start_ns_ = 0; }
  // The stream closed: back to the initial state.
  void reset() {
    state_ = State::Seek;
    seek_.clear();
    head_.release();
    resync_ = false;
    start_ns_ = 0;
  }

  State state() const { return state_; }
  BodyKind body_kind() const { return kind_; }
  // When the current message's first byte arrived (0 when unknown).
  uint64_t start_ns() const { return start_ns_; }
  const LineSeeker& seeker() const { return seek_; }

 private:
  // The shared header budget has no room for this head: it is dropped (counted) and parsing
  // goes on as after an oversized head.
  template <class H>
  void budget_refused(uint64_t t, H& h) {
    ++st_.header_budget_drops;
    st_.garbage_bytes += head_.size();
    head_.release();
    h.on_head_overflow(t);
  }

  template <class H>
  void end_body(H& h, uint64_t t) {
    end_message();
    h.on_body_end(t);
  }

  ConnectionStats& st_;
  size_t max_head_;
  State state_ = State::Seek;
  bool resync_ = false;  // bytes were skipped or lost: the next start line is a resync
  uint64_t start_ns_ = 0;
  LineSeeker seek_;
  BudgetedString head_;
  BodyKind kind_ = BodyKind::Length;
  uint64_t remaining_ = 0;
  Chunked chunked_;
};

}  // namespace ab::protocol
