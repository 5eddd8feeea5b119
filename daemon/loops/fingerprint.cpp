#include "loops/fingerprint.h"

#include <array>
#include <bit>
#include <cstring>

namespace ab::loops {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_alnum(char c) { return is_digit(c) || is_upper(c) || is_lower(c); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_token_byte(char c) {
  if (static_cast<unsigned char>(c) >= 0x80) return true;  // UTF-8: keep non-Latin words whole
  return is_alnum(c) || (c != '\0' && std::strchr("_-.:/+=<>", c) != nullptr);
}

size_t digits_at(std::string_view s, size_t i) {
  size_t n = 0;
  while (i + n < s.size() && is_digit(s[i + n])) ++n;
  return n;
}

// yyyy-mm-dd, yyyy/mm/dd, dd-mm-yyyy, mm/dd/yyyy anywhere in the token.
bool has_date(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (!is_digit(s[i]) || (i > 0 && is_digit(s[i - 1]))) continue;
    const size_t a = digits_at(s, i);
    size_t j = i + a;
    if (j >= s.size() || (s[j] != '-' && s[j] != '/')) continue;
    const char sep = s[j];
    const size_t b = digits_at(s, j + 1);
    size_t k = j + 1 + b;
    if (b < 1 || b > 2 || k >= s.size() || s[k] != sep) continue;
    const size_t c = digits_at(s, k + 1);
    if ((a == 4 && (c == 1 || c == 2)) || ((a == 1 || a == 2) && c == 4)) return true;
  }
  return false;
}

// h:mm or hh:mm[:ss] with hour <= 23 and minutes <= 59, not part of a longer number and not
// after a '.' (so "127.0.0.1:80" is an address, not a time).
bool has_clock(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (!is_digit(s[i]) || (i > 0 && (is_digit(s[i - 1]) || s[i - 1] == '.'))) continue;
    const size_t h = digits_at(s, i);
    const size_t colon = i + h;
    if (h < 1 || h > 2 || colon >= s.size() || s[colon] != ':') continue;
    const size_t m = digits_at(s, colon + 1);
    if (m != 2) continue;
    const int hour = std::atoi(std::string(s.substr(i, h)).c_str());
    const int minute = (s[colon + 1] - '0') * 10 + (s[colon + 2] - '0');
    if (hour <= 23 && minute <= 59) return true;
  }
  return false;
}

bool looks_like_base64(std::string_view s) {
  if (s.size() < 20) return false;
  bool upper = false, low = false, digit = false;
  for (char c : s) {
    if (is_upper(c)) upper = true;
    else if (is_lower(c)) low = true;
    else if (is_digit(c)) digit = true;
    else if (!std::strchr("+/=_-", c)) return false;
  }
  return upper && low && digit;
}

bool has_id_prefix(std::string_view s) {
  static constexpr std::array<std::string_view, 12> kPrefixes = {
      "call_", "toolu_", "chatcmpl-", "msg_", "resp_", "req_", "run_", "thread_", "asst_", "file-", "fc_", "item_"};
  for (auto p : kPrefixes) {
    if (s.size() < p.size() + 6) continue;
    bool same = true;
    for (size_t i = 0; i < p.size(); ++i) same = same && lower(s[i]) == p[i];
    if (same) return true;
  }
  return false;
}

bool looks_like_hex_id(std::string_view s) {
  size_t run = 0;
  bool digit = false;
  for (char c : s) {
    if (c == '-') continue;  // uuid groups
    if (is_hex(c)) {
      ++run;
      digit = digit || is_digit(c);
      if (run >= 16 && digit) return true;
    } else {
      run = 0;
      digit = false;
    }
  }
  return false;
}

bool looks_random(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i, letters = 0, digits = 0;
    while (j < s.size() && is_alnum(s[j])) {
      (is_digit(s[j]) ? digits : letters)++;
      ++j;
    }
    if (j - i >= 16 && letters >= 2 && digits >= 2) return true;
    i = j + 1;
  }
  return false;
}

bool has_long_number(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i)
    if (is_digit(s[i]) && (i == 0 || !is_digit(s[i - 1])) && digits_at(s, i) >= 9) return true;
  return false;
}

void append_part(std::string& out, std::string_view part) {
  if (has_id_prefix(part) || looks_like_hex_id(part) || looks_random(part)) {
    out += "<id>";
  } else if (has_long_number(part)) {
    out += "<num>";
  } else {
    for (char c : part) out += lower(c);
  }
}

void append_token(std::string& out, std::string_view token) {
  while (!token.empty() && std::strchr(".:-", token.front())) token.remove_prefix(1);
  while (!token.empty() && std::strchr(".:-", token.back())) token.remove_suffix(1);
  if (token.empty()) return;
  if (!out.empty()) out += ' ';
  if (has_date(token) || has_clock(token)) {
    out += "<time>";
    return;
  }
  if (looks_like_base64(token)) {
    out += "<id>";
    return;
  }
  size_t start = 0;
  for (size_t i = 0; i <= token.size(); ++i) {
    if (i == token.size() || token[i] == '/' || token[i] == '=' || token[i] == ':') {
      append_part(out, token.substr(start, i - start));
      if (i < token.size()) out += token[i];
      start = i + 1;
    }
  }
}

uint64_t splitmix64_finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kEvenBits = 0x5555555555555555ULL;
constexpr uint64_t kOddBits = ~kEvenBits;

}  // namespace

std::string normalize_for_fingerprint(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !is_token_byte(text[i])) ++i;
    size_t j = i;
    while (j < text.size() && is_token_byte(text[j])) ++j;
    if (j > i) append_token(out, text.substr(i, j - i));
    i = j;
  }
  return out;
}

uint64_t hash64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a offset basis and prime
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return splitmix64_finalize(h);
}

uint64_t simhash64(std::string_view normalized) {
  struct Span {
    size_t begin, end;
  };
  std::vector<Span> words;
  size_t i = 0;
  while (i < normalized.size()) {
    while (i < normalized.size() && normalized[i] == ' ') ++i;
    size_t j = i;
    while (j < normalized.size() && normalized[j] != ' ') ++j;
    if (j > i) words.push_back({i, j});
    i = j;
  }
  if (words.empty()) return 0;
  constexpr size_t kShingle = 3;
  const size_t width = std::min(kShingle, words.size());
  std::array<int64_t, 64> votes{};
  for (size_t w = 0; w + width <= words.size(); ++w) {
    const size_t begin = words[w].begin, end = words[w + width - 1].end;
    const uint64_t h = hash64(normalized.substr(begin, end - begin));
    for (int bit = 0; bit < 64; ++bit) votes[bit] += ((h >> bit) & 1) ? 1 : -1;
  }
  uint64_t result = 0;
  for (int bit = 0; bit < 64; ++bit)
    if (votes[bit] > 0) result |= uint64_t{1} << bit;
  return result;
}

int hamming(uint64_t a, uint64_t b) { return std::popcount(a ^ b); }

uint64_t turn_fingerprint(std::string_view assistant_turn_text) {
  return simhash64(normalize_for_fingerprint(assistant_turn_text));
}

uint64_t request_fingerprint(const std::vector<std::string_view>& new_content, uint64_t previous_turn) {
  std::string joined;
  for (auto piece : new_content) {
    std::string normalized = normalize_for_fingerprint(piece);
    if (normalized.empty()) continue;
    if (!joined.empty()) joined += ' ';
    joined += normalized;
  }
  if (joined.empty() && previous_turn == 0) return 0;
  return (simhash64(joined) & kEvenBits) | (previous_turn & kOddBits);
}

}  // namespace ab::loops
