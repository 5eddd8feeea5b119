// policy `otlp:` (docs/interface.md, "Policy keys"): endpoint, headers_file, metrics_interval.
#include <gtest/gtest.h>

#include "policy/policy.h"

using namespace ab::policy;

namespace {

std::vector<std::string> errors_of(const std::string& yaml) { return load_text(yaml, "p.yaml").errors; }

}  // namespace

TEST(OtlpPolicy, CompilesAndShowsNoSecret) {
  auto r = load_text("otlp: {endpoint: \"http://127.0.0.1:4318/\", headers_file: /etc/agentbrake/otlp.headers,"
                     " metrics_interval: 5s}\n",
                     "p.yaml");
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0]);
  ASSERT_TRUE(r.policy->otlp);
  EXPECT_EQ(r.policy->otlp->endpoint, "http://127.0.0.1:4318");  // trailing '/' dropped: paths are appended
  EXPECT_EQ(r.policy->otlp->headers_file, "/etc/agentbrake/otlp.headers");
  EXPECT_EQ(r.policy->otlp->metrics_interval, Millis(5000));
  auto j = to_json(*r.policy);
  EXPECT_EQ(j["otlp"]["endpoint"], "http://127.0.0.1:4318");
  EXPECT_EQ(j["otlp"]["metrics_interval"], "5s");
}

TEST(OtlpPolicy, DefaultsAndAbsent) {
  auto r = load_text("otlp: {endpoint: \"https://collector:4318\"}\n", "p.yaml");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.policy->otlp->metrics_interval, Millis(30000));
  EXPECT_TRUE(r.policy->otlp->headers_file.empty());
  EXPECT_FALSE(load_text("mode: enforce\n", "p.yaml").policy->otlp);
}

TEST(OtlpPolicy, BadInputNamesFileLineAndKey) {
  auto e = errors_of("otlp: {headers_file: /x}\n");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("p.yaml:1:"), std::string::npos) << e[0];
  EXPECT_NE(e[0].find("needs 'endpoint'"), std::string::npos) << e[0];
  e = errors_of("otlp:\n  endpoint: ftp://x\n");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("p.yaml:2:"), std::string::npos) << e[0];
  e = errors_of("otlp: {endpoint: \"http://user:secret@c:4318\"}\n");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].find("secret"), std::string::npos) << "the error repeats the password: " << e[0];
  EXPECT_EQ(errors_of("otlp: {endpoint: \"http://c:4318\", headers_file: rel/path}\n").size(), 1u);
  EXPECT_EQ(errors_of("otlp: {endpoint: \"http://c:4318\", metrics_interval: 100ms}\n").size(), 1u);
  EXPECT_EQ(errors_of("otlp: {endpoint: \"http://c:4318\", colour: red}\n").size(), 1u);
}
