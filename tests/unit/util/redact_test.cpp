// The redaction rules: secret headers, query parameters (dropped on the wire side, masked in
// the database), event details sent by alerts, webhook URLs.
#include "util/redact.h"

#include <gtest/gtest.h>

using namespace ab::util;

TEST(Redact, SecretHeaders) {
  for (const char* h : {"Authorization", "authorization", "Proxy-Authorization", "X-Api-Key", "api-key",
                        "x-goog-api-key", "Cookie", "Set-Cookie"})
    EXPECT_TRUE(is_secret_header(h)) << h;
  for (const char* h : {"content-type", "anthropic-version", "x-ratelimit-remaining-requests", "host"})
    EXPECT_FALSE(is_secret_header(h)) << h;
}

TEST(Redact, Target) {
  EXPECT_EQ(redact_target("/v1beta/models/g:generateContent?key=AIzaSECRET"), "/v1beta/models/g:generateContent");
  EXPECT_EQ(redact_target("/x?alt=sse&key=AIzaSECRET"), "/x?alt=sse");
  EXPECT_EQ(redact_target("/x?key=S&alt=sse"), "/x?alt=sse");
  EXPECT_EQ(redact_target("/x?KEY=S&api_key=T&apikey=U&api-key=V&access_token=W&a=1"), "/x?a=1");
  EXPECT_EQ(redact_target("/x?monkey=1"), "/x?monkey=1");
  EXPECT_EQ(redact_target("/x"), "/x");
  EXPECT_EQ(redact_target("/x?"), "/x");
  EXPECT_EQ(redact_target("/x?alt=sse?key=S"), "/x?alt=sse");
  EXPECT_EQ(redact_target("/x?a=1;key=S;b=2"), "/x?a=1;b=2");
  EXPECT_EQ(redact_target("/x&key=S"), "/x");          // malformed: no '?'
  EXPECT_EQ(redact_target("/x;v=1&key=S"), "/x;v=1");
  EXPECT_EQ(redact_target("/x?a=1#key=S"), "/x?a=1");  // fragments dropped
  // malformed: a key before the first '?' (found by fuzz_connection: a cut Gemini path)
  EXPECT_EQ(redact_target("/m/g:streamGenerateC&key=AIzaS?alt=sse&key=AIzaT"), "/m/g:streamGenerateC?alt=sse");
  static constexpr char kCut[] = "/m/g\0\0qlt=sse&key=AIzaS?e&key=T";
  static constexpr char kCutRedacted[] = "/m/g\0\0qlt=sse?e";
  EXPECT_EQ(redact_target(std::string_view(kCut, sizeof kCut - 1)), std::string(kCutRedacted, sizeof kCutRedacted - 1));
}

TEST(Redact, Path) {
  EXPECT_EQ(redact_path("/v1/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(redact_path("/x?api-version=2024-02-01"), "/x?api-version=2024-02-01");
  EXPECT_EQ(redact_path("/x?API_KEY=1&b=2&apikey=3"), "/x?API_KEY=REDACTED&b=2&apikey=REDACTED");
  EXPECT_EQ(redact_path("/x?"), "/x?");
  EXPECT_EQ(redact_path("/x?sig"), "/x?sig");
  EXPECT_EQ(redact_path("/x?monkey=1&session_id=2"), "/x?monkey=REDACTED&session_id=REDACTED");  // substrings
}

TEST(Redact, ScrubDetailRemovesCredentialsAndQueryStrings) {
  nlohmann::json d = {{"path", "/v1beta/models/gemini:generateContent?key=AIzaSECRET"},
                      {"Authorization", "Bearer sk-SECRET"},
                      {"input_tokens", 10},
                      {"members", nlohmann::json::array({{{"api_key", "sk-2"}, {"pid", 1}}})}};
  nlohmann::json s = scrub_detail(d);
  std::string dumped = s.dump();
  EXPECT_EQ(dumped.find("SECRET"), std::string::npos) << dumped;
  EXPECT_EQ(dumped.find("sk-2"), std::string::npos) << dumped;
  EXPECT_EQ(s["path"], "/v1beta/models/gemini:generateContent");
  EXPECT_EQ(s["input_tokens"], 10);
  EXPECT_EQ(s["members"][0]["pid"], 1);
}

TEST(Redact, WebhookUrlKeepsSchemeHostAndPortOnly) {
  EXPECT_EQ(redact_webhook_url("https://hooks.example.com/T000/B000/XXXXSECRET"), "https://hooks.example.com");
  EXPECT_EQ(redact_webhook_url("https://hooks.example.com/services/T0/B0?token=abc#frag"), "https://hooks.example.com");
  EXPECT_EQ(redact_webhook_url("http://127.0.0.1:8080/hook/secret"), "http://127.0.0.1:8080");
  EXPECT_EQ(redact_webhook_url("HTTPS://Hooks.Example.COM/Path"), "https://hooks.example.com");
  EXPECT_EQ(redact_webhook_url("http://[::1]:9000/x"), "http://[::1]:9000");
  EXPECT_EQ(redact_webhook_url("https://example.com"), "https://example.com");
}

TEST(Redact, WebhookUrlDropsUserInfo) {
  std::string r = redact_webhook_url("https://user:hunter2@hooks.example.com:8443/p?q=1");
  EXPECT_EQ(r, "https://hooks.example.com:8443");
  EXPECT_EQ(r.find("hunter2"), std::string::npos);
}

TEST(Redact, WebhookUrlInvalidNeverEchoesTheInput) {
  EXPECT_EQ(redact_webhook_url("not a url /secret"), "(invalid url)");
  EXPECT_EQ(redact_webhook_url(""), "(invalid url)");
}

TEST(Redact, UrlInErrorText) {
  const std::string url = "https://hooks.example.com/services/T0/B0/SECRET";
  EXPECT_EQ(redact_url_in("Could not resolve: " + url, url), "Could not resolve: https://hooks.example.com");
  EXPECT_EQ(redact_url_in("failed at /services/T0/B0/SECRET", url), "failed at /<redacted>");
  EXPECT_EQ(redact_url_in("timeout", url), "timeout");
}
