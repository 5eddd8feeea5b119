// The corpus of broken policies in tests/data/policy/broken/: each case (a file, or a directory
// merged like /etc/agentbrake/policy.d) states the errors it must produce in comments:
//     # expect: LINE: MESSAGE FRAGMENT
// meaning: an error "<that file>:LINE: ..." containing the fragment. `{dir}` in a fragment
// stands for the case directory. A case must produce exactly the expected errors: no more.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

#include "policy/policy.h"

namespace fs = std::filesystem;
using namespace ab::policy;

namespace {

struct Expect {
  std::string file;
  int line;
  std::string fragment;
};

std::vector<Expect> expectations(const fs::path& file, const std::string& dir) {
  std::vector<Expect> out;
  std::ifstream in(file);
  std::string l;
  static const std::regex re(R"(^\s*# expect: (\d+): (.*)$)");
  while (std::getline(in, l)) {
    std::smatch m;
    if (!std::regex_match(l, m, re)) continue;
    std::string frag = m[2];
    for (size_t p; (p = frag.find("{dir}")) != std::string::npos;) frag.replace(p, 5, dir);
    out.push_back({file.string(), std::stoi(m[1]), frag});
  }
  return out;
}

fs::path broken_dir() { return fs::path(AB_TEST_DATA) / "policy" / "broken"; }

std::vector<fs::path> cases() {
  std::vector<fs::path> out;
  for (const auto& de : fs::directory_iterator(broken_dir())) out.push_back(de.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(BrokenCorpus, HasEnoughCases) { EXPECT_GE(cases().size(), 40u); }

TEST(BrokenCorpus, EveryCaseReportsExactlyItsErrorsWithFileAndLine) {
  for (const fs::path& c : cases()) {
    SCOPED_TRACE(c.string());
    std::vector<Expect> want;
    if (fs::is_directory(c)) {
      for (const auto& de : fs::directory_iterator(c)) {
        auto e = expectations(de.path(), c.string());
        want.insert(want.end(), e.begin(), e.end());
      }
    } else {
      want = expectations(c, c.parent_path().string());
    }
    ASSERT_FALSE(want.empty()) << "case has no '# expect:' line";

    LoadResult r = load_path(c.string(), /*check_ownership=*/false);
    EXPECT_EQ(r.policy, nullptr);
    EXPECT_EQ(r.errors.size(), want.size()) << [&] {
      std::string all;
      for (auto& e : r.errors) all += "\n  got: " + e;
      return all;
    }();
    for (const Expect& w : want) {
      std::string prefix = w.file + ":" + std::to_string(w.line) + ": ";
      bool found = std::any_of(r.errors.begin(), r.errors.end(), [&](const std::string& e) {
        return e.rfind(prefix, 0) == 0 && e.find(w.fragment) != std::string::npos;
      });
      EXPECT_TRUE(found) << "missing: " << prefix << w.fragment << [&] {
        std::string all;
        for (auto& e : r.errors) all += "\n  got: " + e;
        return all;
      }();
    }
    // validate_path (the CLI's `policy validate`) reports the very same errors.
    EXPECT_EQ(validate_path(c.string(), false), r.errors);
  }
}

// A few spelled out in full, so the format itself is pinned down.
TEST(BrokenCorpus, ExactMessages) {
  std::string f = (broken_dir() / "negative_limit.yaml").string();
  auto r = load_path(f, false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], f + ":5: 'spend_per_hour_usd' in budget 'x' must be positive, got -5");

  std::string d = (broken_dir() / "dup_across_files").string();
  r = load_path(d, false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], d + "/20-team.yaml:5: duplicate budget name 'research' (first defined at " + d +
                             "/10-base.yaml:3)");

  f = (broken_dir() / "syntax_error.yaml").string();
  r = load_path(f, false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], f + ":6: YAML syntax error: illegal flow end");
}

TEST(BrokenCorpus, LoadTextCitesTheSourceName) {
  auto r = load_text("mode: enforce\nbudgets:\n  - name: a\n    action: throttle\n    tokens_per_minute: 0\n",
                     "inline.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "inline.yaml:5: 'tokens_per_minute' in budget 'a' must be positive, got 0");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.source, "inline.yaml");
}

TEST(BrokenCorpus, MissingPathIsAnErrorNamingIt) {
  auto r = load_path("/nonexistent/agentbrake/policy.yaml", false);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "/nonexistent/agentbrake/policy.yaml: cannot open: No such file or directory");
}
