// json_scan.h — a streaming, allocation-light JSON scanner that never builds a DOM.
//
// Fed a JSON text in arbitrary pieces, it keeps only what a ScanSpec asks for:
//  - the raw text of values at chosen object paths ("model", "usage", "response.usage"), each
//    capped (a value larger than the cap is dropped, never truncated);
//  - the element count of every top-level array ("messages": 12);
//  - byte counts of string values: all of them, and those directly under "text keys"
//    ("content", "text", …) — the basis of token estimates;
//  - a hash of the last element of chosen top-level arrays (loop detection fingerprints).
// Memory is O(depth + captures), whatever the document size. It stops at the end of the first
// top-level value (feed() returns how much it consumed), so it also walks JSON sequences.
// Syntax errors stop it (failed()); it never throws.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ab::protocol {

struct ScanSpec {
  std::vector<std::string> capture;      // dotted object paths, e.g. "usage", "message.usage"
  std::vector<std::string> text_keys;    // string values whose nearest key is one of these
  std::vector<std::string> hash_arrays;  // top-level arrays whose last element is hashed
  size_t capture_cap = 64 * 1024;        // per captured value
};

// Streaming 64-bit hash (fingerprints, not cryptographic); the result does not depend on how
// the input was split.
class Hasher {
 public:
  void reset() { h_ = 0x9e3779b97f4a7c15ULL; n_ = 0; total_ = 0; }
  void update(std::string_view s);
  uint64_t final() const;

 private:
  uint64_t h_ = 0x9e3779b97f4a7c15ULL, total_ = 0;
  unsigned char buf_[8]{};
  size_t n_ = 0;
};

class JsonScanner {
 public:
  explicit JsonScanner(const ScanSpec* spec = nullptr);
  void set_spec(const ScanSpec* spec) { spec_ = spec; }
  void reset();

  // Consumes bytes up to the end of the top-level value; returns the count consumed.
  // After done() or failed() it consumes nothing.
  size_t feed(std::string_view in);
  // The input ended: completes a pending top-level number/literal.
  void finish();

  bool started() const { return started_; }   // a non-blank byte was seen
  bool done() const { return state_ == St::Done; }
  bool failed() const { return state_ == St::Failed; }
  uint64_t bytes() const { return bytes_; }

  // Raw JSON text of a captured, complete value (quotes included for strings).
  std::optional<std::string_view> raw(std::string_view path) const;
  // Typed helpers over raw(): a JSON string (unescaped), an integer, a bool.
  std::optional<std::string> str(std::string_view path) const;
  std::optional<int64_t> integer(std::string_view path) const;
  std::optional<bool> boolean(std::string_view path) const;
  bool has(std::string_view path) const { return raw(path).has_value(); }

  // Element count of a top-level array value (root must be an object); -1 if none.
  int64_t array_len(std::string_view top_key) const;
  // Whether a top-level key holds a string (as opposed to an array/object/number).
  bool top_is_string(std::string_view top_key) const;
  uint64_t string_bytes() const { return string_bytes_; }  // all string values (not keys)
  uint64_t text_bytes() const { return text_bytes_; }      // string values under text keys
  uint64_t last_element_hash() const { return elem_hash_done_; }  // 0 when none
  // Raw JSON of the last and the second-to-last element of a hashed array (first
  // kElemTextCap bytes each): the loop detectors fingerprint them; never stored.
  static constexpr size_t kElemTextCap = 4096;
  const std::string& last_element_text() const { return last_elem_text_; }
  const std::string& previous_element_text() const { return prev_elem_text_; }

 private:
  enum class St : uint8_t { Value, ValueOrEnd, KeyOrEnd, Key, Colon, After, Str, Lit, Done, Failed };
  struct Top { std::string key; int64_t len = -1; bool is_string = false; };

  void value_start(const char* p);
  void value_end(const char* p_after);
  void flush_marks(const char* end);
  bool key_is_text() const;
  void close_container(const char* p_after);

  const ScanSpec* spec_;
  St state_ = St::Value;
  bool started_ = false;
  bool str_is_key_ = false, str_text_ = false, escape_ = false;
  std::vector<char> stack_;          // '{' or '['
  std::vector<std::string> keys_;    // key per object depth (capped)
  std::string key_buf_;
  uint64_t bytes_ = 0, string_bytes_ = 0, text_bytes_ = 0;

  // capture in progress
  bool capturing_ = false, cap_overflow_ = false;
  size_t cap_depth_ = 0;
  const char* cap_mark_ = nullptr;
  std::string cap_path_, cap_buf_;
  std::vector<std::pair<std::string, std::string>> captures_;

  // last-element hash in progress
  bool hashing_ = false;
  const char* hash_mark_ = nullptr;
  Hasher hasher_;
  uint64_t elem_hash_done_ = 0;
  std::string elem_text_cur_, last_elem_text_, prev_elem_text_;
  void keep_elem_text(std::string_view piece);

  std::vector<Top> tops_;
};

// One-shot Hasher.
uint64_t hash_bytes(std::string_view s);

}  // namespace ab::protocol
