// The `fleet:` block and `scope:` of a budget (docs/interface.md, docs/fleet.md).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "policy/policy.h"

using namespace ab::policy;

namespace {

std::string joined(const LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e + "\n";
  return s;
}

const char* kBudget = R"(
budgets:
  - name: shared
    match: {cgroup: "/agents/*"}
    requests_per_minute: 10
    scope: fleet
)";

}  // namespace

TEST(FleetPolicy, ParsesTheBlockAndTheScope) {
  auto r = load_text(std::string(R"(
fleet:
  redis: redis://10.0.0.5:6380/3
  host_id: runner-17
  fail: closed
)") + kBudget,
                     "p.yaml");
  ASSERT_TRUE(r.ok()) << joined(r);
  ASSERT_TRUE(r.policy->fleet);
  const Fleet& f = *r.policy->fleet;
  EXPECT_EQ(f.host, "10.0.0.5");
  EXPECT_EQ(f.port, 6380);
  EXPECT_EQ(f.db, 3);
  EXPECT_FALSE(f.tls);
  EXPECT_EQ(f.host_id, "runner-17");
  EXPECT_EQ(f.fail, FleetFail::Closed);
  ASSERT_EQ(r.policy->budgets.size(), 1u);
  EXPECT_TRUE(r.policy->budgets[0].fleet());
  // The compiled policy names it, and feeding it back gives the same policy.
  auto j = to_json(*r.policy);
  EXPECT_EQ(j["fleet"]["fail"], "closed");
  EXPECT_EQ(j["budgets"][0]["scope"], "fleet");
  auto again = load_text(j.dump(), "again.yaml");
  ASSERT_TRUE(again.ok()) << joined(again);
  EXPECT_EQ(again.policy->digest, r.policy->digest);
}

TEST(FleetPolicy, DefaultsAreLocalFailPort6379AndTheHostname) {
  auto r = load_text(std::string("fleet: {redis: \"redis://localhost\"}\n") + kBudget, "p.yaml");
  ASSERT_TRUE(r.ok()) << joined(r);
  const Fleet& f = *r.policy->fleet;
  EXPECT_EQ(f.port, 6379);
  EXPECT_EQ(f.db, 0);
  EXPECT_EQ(f.fail, FleetFail::Local);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_EQ(f.host_id, host);
  EXPECT_EQ(r.policy->budgets[0].scope, Budget::Scope::Fleet);
}

TEST(FleetPolicy, HostScopeIsTheDefaultAndNeedsNoFleet) {
  auto r = load_text("budgets: [{name: a, requests_per_minute: 3, scope: host}, {name: b, requests_per_minute: 3}]",
                     "p.yaml");
  ASSERT_TRUE(r.ok()) << joined(r);
  EXPECT_FALSE(r.policy->budgets[0].fleet());
  EXPECT_FALSE(r.policy->budgets[1].fleet());
  EXPECT_FALSE(r.policy->fleet);
}

TEST(FleetPolicy, AFleetBudgetWithoutAFleetBlockIsAnErrorAtItsScope) {
  auto r = load_text(kBudget, "p.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(joined(r).find("p.yaml:6: 'scope: fleet' needs a 'fleet:' block"), std::string::npos) << joined(r);
}

TEST(FleetPolicy, BadValuesNameFileAndLine) {
  struct Case {
    const char* yaml;
    const char* error;
  } cases[] = {
      {"fleet: {redis: \"http://x:1\"}", "p.yaml:1: 'redis' in fleet: 'http://x:1' is not a redis:// or rediss:// URL"},
      {"fleet: {redis: \"redis://:pw@x:1\"}", "a password or user in the URL is refused"},
      {"fleet: {redis: \"redis://x:99999\"}", "bad port '99999'"},
      {"fleet: {redis: \"redis://x/16\"}", "bad database number '16'"},
      {"fleet: {redis: \"redis://x\", fail: maybe}", "'fail' in fleet must be one of local, open, closed"},
      {"fleet: {redis: \"redis://x\", password_file: rel.pass}", "'password_file' in fleet must be an absolute path"},
      {"fleet: {redis: \"redis://x\", host_id: \"a b\"}", "'host_id' in fleet may only use"},
      {"fleet: {redis: \"redis://x\", pasword_file: /x}", "unknown key 'pasword_file' in fleet; did you mean 'password_file'?"},
      {"fleet: {host_id: a}", "'fleet' needs 'redis'"},
      {"budgets: [{name: a, requests_per_minute: 3, scope: world}]", "'scope' in budget 'a' must be one of host, fleet"},
  };
  for (const Case& c : cases) {
    auto r = load_text(c.yaml, "p.yaml");
    EXPECT_FALSE(r.ok()) << c.yaml;
    EXPECT_NE(joined(r).find(c.error), std::string::npos) << c.yaml << "\n" << joined(r);
  }
}

TEST(FleetPolicy, ThePasswordIsReadFromItsFileAndNeverShown) {
  char path[] = "/tmp/ab-fleet-pass-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "s3cret-pw\n", 10), 10);
  ::close(fd);
  auto r = load_text(std::string("fleet: {redis: \"redis://127.0.0.1:6379\", password_file: ") + path + "}\n" + kBudget,
                     "p.yaml");
  ASSERT_TRUE(r.ok()) << joined(r);
  EXPECT_EQ(r.policy->fleet->password, "s3cret-pw");
  EXPECT_EQ(to_json(*r.policy).dump().find("s3cret"), std::string::npos);
  ::unlink(path);

  auto missing = load_text(std::string("fleet: {redis: \"redis://x\", password_file: /nonexistent/pw}\n") + kBudget,
                           "p.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(joined(missing).find("p.yaml:1: password_file: cannot read /nonexistent/pw"), std::string::npos)
      << joined(missing);
}
