// redact.cpp — the redaction rules without libcurl (the protocol fuzz build compiles this file
// alone); redact_webhook_url and redact_url_in are in redact_url.cpp.
#include "util/redact.h"

#include <array>
#include <cctype>

namespace ab::util {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; }

std::string to_lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = lower(c);
  return r;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// Query parameters that redact_target drops (exact names, any case).
bool is_secret_target_param(std::string_view name) {
  static constexpr std::array<std::string_view, 5> k{"key", "api_key", "apikey", "api-key", "access_token"};
  for (auto s : k)
    if (iequals(name, s)) return true;
  return false;
}

// Query parameters whose values redact_path masks (any name containing one of the words).
bool looks_like_secret_param(std::string_view name) {
  const std::string n = to_lower(name);
  static const char* const kWords[] = {"key", "token", "secret", "auth", "sig", "password",
                                       "passwd", "credential", "session", "cookie"};
  for (const char* w : kWords)
    if (n.find(w) != std::string::npos) return true;
  return false;
}

// Event detail keys that scrub_detail drops (exact names, any case).
bool is_secret_key(const std::string& key) {
  static const char* const kSecretKeys[] = {"authorization", "proxy-authorization", "cookie", "set-cookie",
                                            "api_key", "apikey", "api-key", "x-api-key", "x-goog-api-key",
                                            "password", "secret", "access_token", "token"};
  const std::string k = to_lower(key);
  for (const char* s : kSecretKeys)
    if (k == s) return true;
  return false;
}

std::string cut_query(const std::string& s) {
  size_t q = s.find_first_of("?#");
  return q == std::string::npos ? s : s.substr(0, q);
}

}  // namespace

bool is_secret_header(std::string_view name) {
  static constexpr std::array<std::string_view, 7> k{"authorization", "proxy-authorization",
                                                      "x-api-key",     "api-key",
                                                      "x-goog-api-key", "cookie",
                                                      "set-cookie"};
  for (auto s : k)
    if (iequals(name, s)) return true;
  return false;
}

std::string redact_target(std::string_view target) {
  // The query starts at '?'; a malformed target may carry "&key=…" before its first '?' (or
  // have none), so parameters start at the first of '?', '&' and ';'.
  auto q = target.find_first_of("?&;");
  if (q == std::string_view::npos) return std::string(target);
  const char lead = target[q];
  std::string out(target.substr(0, q));
  std::string_view rest = target.substr(q + 1);
  std::string_view frag;
  if (auto h = rest.find('#'); h != std::string_view::npos) {
    frag = rest.substr(h);
    rest = rest.substr(0, h);
  }
  // Parameters are split on '&' and also on ';' and a stray '?', so "?alt=sse?key=…" cannot
  // smuggle a key through inside another parameter's value.
  bool first = true;
  char before = lead;  // separator that preceded the current parameter
  while (!rest.empty()) {
    auto sep = rest.find_first_of("&;?");
    std::string_view param = rest.substr(0, sep);
    char next = sep == std::string_view::npos ? '&' : rest[sep];
    rest = sep == std::string_view::npos ? std::string_view{} : rest.substr(sep + 1);
    char mine = before;
    before = next;
    if (param.empty()) continue;
    std::string_view name = param.substr(0, param.find('='));
    if (is_secret_target_param(name)) continue;
    out += first ? (lead == '?' ? '?' : mine) : (mine == ';' ? ';' : '&');
    out += param;
    first = false;
  }
  (void)frag;  // fragments never reach a server; drop them
  return out;
}

std::string redact_path(std::string_view path) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::string(path);
  std::string out(path.substr(0, q + 1));
  std::string_view rest = path.substr(q + 1);
  bool first = true;
  while (true) {
    size_t amp = rest.find('&');
    std::string_view param = rest.substr(0, amp);
    size_t eq = param.find('=');
    std::string_view name = param.substr(0, eq);
    if (!first) out += '&';
    first = false;
    if (eq != std::string_view::npos && looks_like_secret_param(name)) {
      out += name;
      out += "=REDACTED";
    } else {
      out += param;
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return out;
}

nlohmann::json scrub_detail(const nlohmann::json& detail) {
  if (detail.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = detail.begin(); it != detail.end(); ++it) {
      if (is_secret_key(it.key())) continue;
      std::string k = to_lower(it.key());
      if ((k == "path" || k == "url") && it->is_string())
        out[it.key()] = cut_query(it->get<std::string>());
      else
        out[it.key()] = scrub_detail(*it);
    }
    return out;
  }
  if (detail.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : detail) out.push_back(scrub_detail(v));
    return out;
  }
  return detail;
}

}  // namespace ab::util
