// Directory policies: *.yaml merged in name order — maps merge, a later scalar wins, lists
// concatenate; errors cite the file each piece came from.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "policy/policy.h"

namespace fs = std::filesystem;
using namespace ab::policy;
using namespace std::chrono_literals;

namespace {

std::string data(const std::string& rel) { return (fs::path(AB_TEST_DATA) / "policy" / rel).string(); }

// A fresh temporary directory, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ab-policy-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    fs::path p = path / name;
    std::ofstream(p) << text;
    return p.string();
  }
};

}  // namespace

TEST(Merge, DirectoryFixtureMergesInNameOrder) {
  std::string dir = data("merge");
  auto r = load_path(dir, false);
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(r.ok());
  const Policy& p = *r.policy;

  // Only *.yaml files not starting with '.', sorted.
  EXPECT_EQ(p.files, (std::vector<std::string>{dir + "/10-base.yaml", dir + "/20-team.yaml"}));
  EXPECT_EQ(p.source, dir);
  EXPECT_EQ(r.source, dir);

  // A later scalar wins; untouched scalars stay.
  EXPECT_EQ(p.mode, Mode::Observe);
  EXPECT_EQ(p.cooldown, Millis(30s));
  // `metrics:` with nothing in a later file changes nothing.
  ASSERT_TRUE(p.metrics);
  EXPECT_EQ(p.metrics->port, 9464);

  // Lists concatenate, in file order.
  ASSERT_EQ(p.endpoints.size(), 2u);
  EXPECT_EQ(p.endpoints[0].host, "vllm.internal");
  EXPECT_EQ(p.endpoints[1].host, "ollama.internal");
  EXPECT_EQ(p.endpoints[1].where.file, dir + "/20-team.yaml");
  ASSERT_EQ(p.budgets.size(), 2u);
  EXPECT_EQ(p.budgets[0].name, "everyone");
  EXPECT_EQ(p.budgets[0].where.file, dir + "/10-base.yaml");
  EXPECT_EQ(p.budgets[1].name, "research");
  EXPECT_EQ(p.budgets[1].where.file, dir + "/20-team.yaml");
  ASSERT_EQ(p.alerts.size(), 2u);
  EXPECT_EQ(p.alerts[0].name, "chat");
  EXPECT_EQ(p.alerts[1].name, "pager");

  // Maps merge key by key, down to single fields.
  EXPECT_DOUBLE_EQ(p.prices.at("my-model").input, 1.0);   // from 10-base
  EXPECT_DOUBLE_EQ(p.prices.at("my-model").output, 3.0);  // overridden by 20-team
  EXPECT_DOUBLE_EQ(p.prices.at("other-model").input, 0.5);
  EXPECT_EQ(p.loops.ping_pong.max_round_trips, 10);        // 10-base
  EXPECT_EQ(p.loops.ping_pong.window, Millis(10min));     // 10-base
  EXPECT_EQ(p.loops.ping_pong.action, Action::Kill);       // 20-team
  EXPECT_TRUE(p.loops.retry_storm.enabled);                // only in 10-base
  EXPECT_TRUE(p.loops.fan_out.enabled);                    // only in 20-team
  EXPECT_EQ(p.loops.fan_out.max_concurrent, 8);
  EXPECT_FALSE(p.loops.repetition.enabled);                // nowhere
}

TEST(Merge, NameOrderNotCreationOrder) {
  TempDir d;
  d.write("b.yaml", "mode: observe\nbudgets: [{name: from-b, tokens_per_minute: 1}]\n");
  d.write("a.yaml", "mode: enforce\nbudgets: [{name: from-a, tokens_per_minute: 1}]\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.policy->mode, Mode::Observe);  // b.yaml comes later
  ASSERT_EQ(r.policy->budgets.size(), 2u);
  EXPECT_EQ(r.policy->budgets[0].name, "from-a");
  EXPECT_EQ(r.policy->budgets[1].name, "from-b");
}

TEST(Merge, ErrorsAfterMergingCiteTheFileOfEachPiece) {
  TempDir d;
  std::string a = d.write("10-a.yaml", "budgets:\n  - name: x\n    tokens_per_minute: 100\n");
  std::string b = d.write("20-b.yaml", "\nloops:\n  fan_out: {max_concurrent: -2}\nbudgets:\n  - name: x\n    tokens_per_minute: 5\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_EQ(r.errors.size(), 2u);
  // In file order, then line order.
  EXPECT_EQ(r.errors[0], b + ":3: 'max_concurrent' in loops.fan_out must be positive, got -2");
  EXPECT_EQ(r.errors[1], b + ":5: duplicate budget name 'x' (first defined at " + a + ":2)");
  EXPECT_EQ(r.policy, nullptr);
}

TEST(Merge, ErrorsAreSortedByFileThenLine) {
  TempDir d;
  std::string a = d.write("1.yaml", "budgets:\n  - name: x\n    action: stop\n    tokens_per_minute: 0\n");
  std::string b = d.write("2.yaml", "mode: nope\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_EQ(r.errors.size(), 3u);
  // The compiler checks `mode` first and `action` before the limits; the report follows the files.
  EXPECT_EQ(r.errors[0].rfind(a + ":3: 'action'", 0), 0u) << r.errors[0];
  EXPECT_EQ(r.errors[1].rfind(a + ":4: 'tokens_per_minute'", 0), 0u) << r.errors[1];
  EXPECT_EQ(r.errors[2].rfind(b + ":1: 'mode'", 0), 0u) << r.errors[2];
}

TEST(Merge, AScalarCannotMergeWithAMapping) {
  TempDir d;
  std::string a = d.write("1.yaml", "metrics: {listen: \"127.0.0.1:1\"}\n");
  std::string b = d.write("2.yaml", "metrics: off\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], b + ":1: 'metrics' is a scalar here but a mapping at " + a + ":1; cannot merge");
}

TEST(Merge, SyntaxErrorInOneFileNamesThatFile) {
  TempDir d;
  d.write("1.yaml", "mode: enforce\n");
  std::string b = d.write("2.yaml", "mode: observe\nbudgets: [\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].rfind(b + ":2: YAML syntax error: ", 0), 0u) << r.errors[0];
}

TEST(Merge, EmptyDirectoryIsAnError) {
  TempDir d;
  d.write("notes.txt", "nothing here\n");
  auto r = load_path(d.path.string(), false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], d.path.string() + ": no *.yaml files in this directory");
}

TEST(Merge, LoadTextsMergesLikeADirectory) {
  auto r = load_texts({{"one.yaml", "budgets: [{name: a, tokens_per_minute: 1}]\nmode: observe\n"},
                       {"two.yaml", "budgets: [{name: b, tokens_per_minute: 2}]\nmode: enforce\n"}},
                      "mem");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.policy->mode, Mode::Enforce);
  EXPECT_EQ(r.policy->budgets.size(), 2u);
  EXPECT_EQ(r.policy->files, (std::vector<std::string>{"one.yaml", "two.yaml"}));
}

TEST(Parse, AliasExpansionIsBounded) {
  // Ten levels of ten aliases each would expand to 10^10 nodes.
  std::string y = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 9; ++i) {
    std::string prev = "*a" + std::to_string(i - 1);
    y += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + prev;
    for (int k = 1; k < 10; ++k) y += ", " + prev;
    y += "]\n";
  }
  auto r = load_text(y, "bomb.yaml");
  ASSERT_FALSE(r.errors.empty());
  EXPECT_NE(r.errors[0].find("too many YAML nodes"), std::string::npos) << r.errors[0];
}
