// redact_url.cpp — webhook URL redaction (see redact.h), parsed with libcurl's URL API.
#include <curl/curl.h>

#include <cctype>
#include <memory>

#include "util/redact.h"

namespace ab::util {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The part of a URL after scheme://authority: the path, query and fragment (the secret of
// most webhooks). Empty when there is none worth hiding.
std::string secret_tail(const std::string& url) {
  size_t start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  size_t p = url.find_first_of("/?#", start);
  if (p == std::string::npos) return {};
  std::string tail = url.substr(p);
  return tail.size() > 1 ? tail : std::string{};
}

}  // namespace

std::string redact_webhook_url(std::string_view url) {
  const std::string kInvalid = "(invalid url)";
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), &curl_url_cleanup);
  if (!u) return kInvalid;
  std::string copy(url);
  if (curl_url_set(u.get(), CURLUPART_URL, copy.c_str(), 0) != CURLUE_OK) return kInvalid;
  auto part = [&](CURLUPart which) -> std::string {
    char* p = nullptr;
    if (curl_url_get(u.get(), which, &p, 0) != CURLUE_OK || p == nullptr) return {};
    std::string s(p);
    curl_free(p);
    return s;
  };
  std::string scheme = lower(part(CURLUPART_SCHEME));
  std::string host = lower(part(CURLUPART_HOST));
  if (scheme.empty() || host.empty()) return kInvalid;
  std::string port = part(CURLUPART_PORT);  // only when written in the URL
  std::string out = scheme + "://" + host;
  if (!port.empty()) out += ":" + port;
  return out;
}

std::string redact_url_in(std::string text, const std::string& url) {
  auto replace_all = [&](const std::string& needle, const std::string& with) {
    if (needle.empty()) return;
    for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + with.size()))
      text.replace(p, needle.size(), with);
  };
  replace_all(url, redact_webhook_url(url));
  replace_all(secret_tail(url), "/<redacted>");
  return text;
}

}  // namespace ab::util
