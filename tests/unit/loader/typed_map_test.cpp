#include "loader/typed_map.h"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "agentbrake_events.h"

namespace {

// A real kernel hash map (needs CAP_BPF): the wrapper is only as good as what the kernel says.
class TypedMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = bpf_map_create(BPF_MAP_TYPE_HASH, "ab_test_map", sizeof(uint32_t), sizeof(ab_hold_value), 64, nullptr);
    if (fd_ < 0) {
      const char* req = std::getenv("AGENTBRAKE_REQUIRE_BPF");
      if (req && std::string(req) == "1") FAIL() << "AGENTBRAKE_REQUIRE_BPF=1 and bpf_map_create failed: " << strerror(errno);
      GTEST_SKIP() << "cannot create a BPF map here (" << strerror(errno) << "): needs root / CAP_BPF";
    }
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
  }
  int fd_ = -1;
};

TEST_F(TypedMapTest, LookupUpdateEraseSayWhatTheKernelSaid) {
  ab::loader::TypedMap<uint32_t, ab_hold_value> m(fd_);
  EXPECT_FALSE(m.lookup(7).has_value());
  ab_hold_value v{};
  v.reason = AB_HOLD_CAPTURE;
  v.since_ns = 42;
  EXPECT_EQ(m.update(7, v), 0);
  auto got = m.lookup(7);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->reason, AB_HOLD_CAPTURE);
  EXPECT_EQ(got->since_ns, 42u);
  EXPECT_EQ(m.update(7, v, ab::loader::MapUpdate::NoExist), -EEXIST);
  EXPECT_EQ(m.update(8, v, ab::loader::MapUpdate::Exist), -ENOENT);
  EXPECT_EQ(m.erase(7), 0);
  EXPECT_EQ(m.erase(7), -ENOENT);
}

TEST_F(TypedMapTest, KeysListsEveryEntryAndStopsAtTheLimit) {
  ab::loader::TypedMap<uint32_t, ab_hold_value> m(fd_);
  for (uint32_t k = 1; k <= 10; k++) ASSERT_EQ(m.update(k, ab_hold_value{}), 0);
  auto keys = m.keys();
  std::sort(keys.begin(), keys.end());
  ASSERT_EQ(keys.size(), 10u);
  for (uint32_t k = 1; k <= 10; k++) EXPECT_EQ(keys[k - 1], k);
  EXPECT_EQ(m.keys(3).size(), 3u);
}

}  // namespace
