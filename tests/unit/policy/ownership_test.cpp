// Policy files must be owned by root and not writable by group or others: a policy can name a
// program that the daemon runs as root (alerts: exec).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "policy/policy.h"

namespace fs = std::filesystem;
using namespace ab::policy;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ab-owner-XXXXXX").string();
    path = mkdtemp(tmpl.data());
    ::chmod(path.c_str(), 0755);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A copy of the docs/interface.md example policy (interface_example.yaml), mode 0644.
std::string copy_fixture(const TempDir& d, const std::string& name = "policy.yaml") {
  fs::path dst = d.path / name;
  fs::copy_file(fs::path(AB_TEST_DATA) / "policy" / "good" / "interface_example.yaml", dst,
                fs::copy_options::overwrite_existing);
  ::chmod(dst.c_str(), 0644);
  return dst.string();
}

bool root() { return ::geteuid() == 0; }

}  // namespace

TEST(Ownership, RootOwnedAndNotGroupWritableIsAccepted) {
  if (!root()) GTEST_SKIP() << "needs root: the fixture copy must be owned by uid 0";
  TempDir d;
  std::string f = copy_fixture(d);
  auto r = load_path(f);  // check_ownership defaults to true
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(validate_path(f).empty());
}

TEST(Ownership, GroupWritableFileIsRefusedWithTheReason) {
  TempDir d;
  std::string f = copy_fixture(d);
  ASSERT_EQ(::chmod(f.c_str(), 0664), 0);  // chmod g+w
  auto r = load_path(f, true);
  ASSERT_EQ(r.errors.size(), 1u);
  if (root()) {
    EXPECT_EQ(r.errors[0], f + ": refused: writable by group (mode 0664); run chmod go-w " + f);
  } else {
    EXPECT_NE(r.errors[0].find(": refused: owned by uid"), std::string::npos) << r.errors[0];
  }
  EXPECT_EQ(r.policy, nullptr);
  EXPECT_EQ(validate_path(f), r.errors);
  // Tests (fixtures in a temporary directory) may skip the check.
  EXPECT_TRUE(load_path(f, false).ok());
}

TEST(Ownership, WorldWritableFileIsRefused) {
  if (!root()) GTEST_SKIP() << "needs root";
  TempDir d;
  std::string f = copy_fixture(d);
  ASSERT_EQ(::chmod(f.c_str(), 0646), 0);
  auto r = load_path(f, true);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], f + ": refused: writable by others (mode 0646); run chmod go-w " + f);
}

TEST(Ownership, FileNotOwnedByRootIsRefused) {
  if (!root()) GTEST_SKIP() << "needs root to chown";
  TempDir d;
  std::string f = copy_fixture(d);
  ASSERT_EQ(::chown(f.c_str(), 1000, 1000), 0);
  auto r = load_path(f, true);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0],
            f + ": refused: owned by uid 1000, not root (a policy can name a program that runs as root)");
}

TEST(Ownership, DirectoryAndEachFileAreChecked) {
  if (!root()) GTEST_SKIP() << "needs root";
  TempDir d;
  copy_fixture(d, "10-a.yaml");
  std::string bad = copy_fixture(d, "20-b.yaml");
  // 20-b defines the same budget: never reached, the refusal comes first.
  ASSERT_EQ(::chmod(bad.c_str(), 0666), 0);
  auto r = load_path(d.path.string(), true);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], bad + ": refused: writable by group and others (mode 0666); run chmod go-w " + bad);

  ASSERT_EQ(::chmod(bad.c_str(), 0644), 0);
  ASSERT_EQ(::chmod(d.path.c_str(), 0775), 0);  // a group-writable directory lets others add files
  r = load_path(d.path.string(), true);
  ASSERT_GE(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], d.path.string() + ": refused: writable by group (mode 0775); run chmod go-w " +
                             d.path.string());
}
