#include "protocol/json_scan.h"

#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

namespace ab::protocol {

namespace {
constexpr size_t kMaxDepth = 512;
constexpr size_t kMaxKey = 64;
constexpr size_t kMaxCaptureDepth = 4;
constexpr size_t kMaxTops = 128;

inline uint64_t mix(uint64_t h, uint64_t w) {
  h ^= w * 0xff51afd7ed558ccdULL;
  h = (h << 31) | (h >> 33);
  return h * 0xc4ceb9fe1a85ec53ULL + 0x165667b19e3779f9ULL;
}
inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline bool is_lit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
         c == 'E';
}
}  // namespace

void Hasher::update(std::string_view s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t len = s.size();
  total_ += len;
  if (n_) {
    while (len && n_ < 8) { buf_[n_++] = *p++; --len; }
    if (n_ < 8) return;
    uint64_t w;
    std::memcpy(&w, buf_, 8);
    h_ = mix(h_, w);
    n_ = 0;
  }
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h_ = mix(h_, w);
    p += 8;
    len -= 8;
  }
  while (len) { buf_[n_++] = *p++; --len; }
}

uint64_t Hasher::final() const {
  uint64_t w = 0;
  std::memcpy(&w, buf_, n_);
  uint64_t h = mix(h_, w ^ (uint64_t(n_) << 56));
  h = mix(h, total_);
  h ^= h >> 29;
  return h ? h : 1;
}

uint64_t hash_bytes(std::string_view s) {
  Hasher h;
  h.update(s);
  return h.final();
}

JsonScanner::JsonScanner(const ScanSpec* spec) : spec_(spec) { reset(); }

void JsonScanner::reset() {
  state_ = St::Value;
  started_ = str_is_key_ = str_text_ = escape_ = false;
  stack_.clear();
  keys_.clear();
  key_buf_.clear();
  bytes_ = string_bytes_ = text_bytes_ = 0;
  capturing_ = cap_overflow_ = false;
  cap_depth_ = 0;
  cap_buf_.clear();
  captures_.clear();
  hashing_ = false;
  elem_hash_done_ = 0;
  elem_text_cur_.clear();
  last_elem_text_.clear();
  prev_elem_text_.clear();
  tops_.clear();
}

bool JsonScanner::key_is_text() const {
  if (!spec_ || spec_->text_keys.empty() || keys_.empty()) return false;
  const std::string& k = keys_.back();
  for (const auto& t : spec_->text_keys)
    if (t == k) return true;
  return false;
}

void JsonScanner::value_start(const char* p) {
  started_ = true;
  const size_t d = stack_.size();
  if (d == 1 && stack_[0] == '{') {
    if (tops_.size() < kMaxTops)
      tops_.push_back(Top{keys_[0], *p == '[' ? 0 : -1, *p == '"'});
  } else if (d == 2 && stack_[0] == '{' && stack_[1] == '[' && !tops_.empty() &&
             tops_.back().len >= 0) {
    tops_.back().len++;
    if (spec_ && !hashing_) {
      for (const auto& k : spec_->hash_arrays)
        if (k == tops_.back().key) {
          hashing_ = true;
          hasher_.reset();
          elem_text_cur_.clear();
          hash_mark_ = p;
          break;
        }
    }
  }
  if (!capturing_ && spec_ && !spec_->capture.empty() && d >= 1 && d <= kMaxCaptureDepth) {
    for (char c : stack_)
      if (c != '{') return;
    size_t plen = d - 1;
    for (size_t i = 0; i < d; ++i) plen += keys_[i].size();
    for (const auto& want : spec_->capture) {
      if (want.size() != plen) continue;
      size_t off = 0;
      bool ok = true;
      for (size_t i = 0; i < d && ok; ++i) {
        if (i) ok = want[off++] == '.';
        ok = ok && want.compare(off, keys_[i].size(), keys_[i]) == 0;
        off += keys_[i].size();
      }
      if (ok) {
        capturing_ = true;
        cap_overflow_ = false;
        cap_depth_ = d;
        cap_mark_ = p;
        cap_path_ = want;
        cap_buf_.clear();
        return;
      }
    }
  }
}

void JsonScanner::value_end(const char* p_after) {
  const size_t d = stack_.size();
  if (capturing_ && d == cap_depth_) {
    size_t n = size_t(p_after - cap_mark_);
    if (!cap_overflow_ && cap_buf_.size() + n <= (spec_ ? spec_->capture_cap : 0)) {
      cap_buf_.append(cap_mark_, n);
      bool replaced = false;
      for (auto& [k, v] : captures_)
        if (k == cap_path_) { v = cap_buf_; replaced = true; }
      if (!replaced) captures_.emplace_back(cap_path_, cap_buf_);
    }
    capturing_ = false;
  }
  if (hashing_ && d == 2) {
    keep_elem_text(std::string_view(hash_mark_, size_t(p_after - hash_mark_)));
    hasher_.update(std::string_view(hash_mark_, size_t(p_after - hash_mark_)));
    elem_hash_done_ = hasher_.final();
    hashing_ = false;
    prev_elem_text_ = std::move(last_elem_text_);
    last_elem_text_ = std::move(elem_text_cur_);
    elem_text_cur_.clear();
  }
  state_ = d == 0 ? St::Done : St::After;
}

void JsonScanner::flush_marks(const char* end) {
  if (capturing_) {
    size_t n = size_t(end - cap_mark_);
    if (!cap_overflow_) {
      if (cap_buf_.size() + n > (spec_ ? spec_->capture_cap : 0)) {
        cap_overflow_ = true;
        cap_buf_.clear();
        cap_buf_.shrink_to_fit();
      } else {
        cap_buf_.append(cap_mark_, n);
      }
    }
  }
  if (hashing_) {
    keep_elem_text(std::string_view(hash_mark_, size_t(end - hash_mark_)));
    hasher_.update(std::string_view(hash_mark_, size_t(end - hash_mark_)));
  }
}

void JsonScanner::keep_elem_text(std::string_view piece) {
  if (elem_text_cur_.size() >= kElemTextCap) return;
  elem_text_cur_.append(piece.substr(0, kElemTextCap - elem_text_cur_.size()));
}

void JsonScanner::close_container(const char* p_after) {
  if (stack_.back() == '{') keys_.pop_back();
  stack_.pop_back();
  value_end(p_after);
}

size_t JsonScanner::feed(std::string_view in) {
  if (state_ == St::Done || state_ == St::Failed || in.empty()) return 0;
  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;
  cap_mark_ = hash_mark_ = begin;
  auto fail = [&]() {
    state_ = St::Failed;
    capturing_ = hashing_ = false;
  };
  while (p < end) {
    switch (state_) {
      case St::Str: {
        if (escape_) {
          escape_ = false;
          if (str_is_key_) {
            if (key_buf_.size() < kMaxKey) key_buf_ += *p;
          } else {
            ++string_bytes_;
            if (str_text_) ++text_bytes_;
          }
          ++p;
          break;
        }
        const char* q = static_cast<const char*>(std::memchr(p, '"', size_t(end - p)));
        const char* lim = q ? q : end;
        const char* b = static_cast<const char*>(std::memchr(p, '\\', size_t(lim - p)));
        const char* stop = b ? b : lim;
        size_t n = size_t(stop - p);
        if (str_is_key_) {
          size_t room = key_buf_.size() < kMaxKey ? kMaxKey - key_buf_.size() : 0;
          key_buf_.append(p, n < room ? n : room);
        } else {
          string_bytes_ += n;
          if (str_text_) text_bytes_ += n;
        }
        p = stop;
        if (b) {
          escape_ = true;
          ++p;
        } else if (q) {
          ++p;  // closing quote
          if (str_is_key_) {
            keys_.back() = key_buf_;
            state_ = St::Colon;
          } else {
            value_end(p);
            if (state_ == St::Done) {
              bytes_ += size_t(p - begin);
              return size_t(p - begin);
            }
          }
        }
        break;
      }
      case St::Lit: {
        while (p < end && is_lit(*p)) ++p;
        if (p < end) {
          value_end(p);
          if (state_ == St::Done) {
            bytes_ += size_t(p - begin);
            return size_t(p - begin);
          }
        }
        break;
      }
      case St::Value:
      case St::ValueOrEnd: {
        char c = *p;
        if (is_ws(c)) { ++p; break; }
        if (c == ']' && state_ == St::ValueOrEnd) {
          ++p;
          close_container(p);
          if (state_ == St::Done) {
            bytes_ += size_t(p - begin);
            return size_t(p - begin);
          }
          break;
        }
        if (c == '"') {
          value_start(p);
          str_is_key_ = false;
          str_text_ = key_is_text();
          state_ = St::Str;
          ++p;
        } else if (c == '{' || c == '[') {
          if (stack_.size() >= kMaxDepth) { fail(); break; }
          value_start(p);
          stack_.push_back(c);
          if (c == '{') {
            keys_.emplace_back();
            state_ = St::KeyOrEnd;
          } else {
            state_ = St::ValueOrEnd;
          }
          ++p;
        } else if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
          value_start(p);
          state_ = St::Lit;
          ++p;
        } else {
          fail();
        }
        break;
      }
      case St::KeyOrEnd:
      case St::Key: {
        char c = *p;
        if (is_ws(c)) { ++p; break; }
        if (c == '"') {
          key_buf_.clear();
          str_is_key_ = true;
          state_ = St::Str;
          ++p;
        } else if (c == '}' && state_ == St::KeyOrEnd) {
          ++p;
          close_container(p);
          if (state_ == St::Done) {
            bytes_ += size_t(p - begin);
            return size_t(p - begin);
          }
        } else {
          fail();
        }
        break;
      }
      case St::Colon: {
        char c = *p;
        if (is_ws(c)) { ++p; break; }
        if (c != ':') { fail(); break; }
        state_ = St::Value;
        ++p;
        break;
      }
      case St::After: {
        char c = *p;
        if (is_ws(c)) { ++p; break; }
        char top = stack_.empty() ? 0 : stack_.back();
        if (c == ',' && top) {
          state_ = top == '{' ? St::Key : St::Value;
          ++p;
        } else if ((c == '}' && top == '{') || (c == ']' && top == '[')) {
          ++p;
          close_container(p);
          if (state_ == St::Done) {
            bytes_ += size_t(p - begin);
            return size_t(p - begin);
          }
        } else {
          fail();
        }
        break;
      }
      case St::Done:
      case St::Failed:
        bytes_ += size_t(p - begin);
        return size_t(p - begin);
    }
    if (state_ == St::Failed) {
      bytes_ += size_t(p - begin);
      return size_t(p - begin);
    }
  }
  flush_marks(end);
  bytes_ += in.size();
  return in.size();
}

void JsonScanner::finish() {
  if (state_ == St::Lit && stack_.empty()) {
    static const char kNothing = 0;
    cap_mark_ = hash_mark_ = &kNothing;
    value_end(&kNothing);
  }
}

std::optional<std::string_view> JsonScanner::raw(std::string_view path) const {
  for (const auto& [k, v] : captures_)
    if (k == path) return std::string_view(v);
  return std::nullopt;
}

std::optional<std::string> JsonScanner::str(std::string_view path) const {
  auto r = raw(path);
  if (!r || r->size() < 2 || r->front() != '"') return std::nullopt;
  if (r->find('\\') == std::string_view::npos) return std::string(r->substr(1, r->size() - 2));
  auto j = nlohmann::json::parse(*r, nullptr, false);
  if (j.is_discarded() || !j.is_string()) return std::nullopt;
  return j.get<std::string>();
}

std::optional<int64_t> JsonScanner::integer(std::string_view path) const {
  auto r = raw(path);
  if (!r || r->empty()) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(r->data(), r->data() + r->size(), v);
  if (ec == std::errc() && ptr != r->data()) return v;
  return std::nullopt;
}

std::optional<bool> JsonScanner::boolean(std::string_view path) const {
  auto r = raw(path);
  if (!r) return std::nullopt;
  if (*r == "true") return true;
  if (*r == "false") return false;
  return std::nullopt;
}

int64_t JsonScanner::array_len(std::string_view top_key) const {
  for (auto it = tops_.rbegin(); it != tops_.rend(); ++it)
    if (it->key == top_key) return it->len;
  return -1;
}

bool JsonScanner::top_is_string(std::string_view top_key) const {
  for (auto it = tops_.rbegin(); it != tops_.rend(); ++it)
    if (it->key == top_key) return it->is_string;
  return false;
}

}  // namespace ab::protocol
