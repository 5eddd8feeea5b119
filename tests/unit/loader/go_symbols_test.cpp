#include "loader/go_symbols.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loader/elf_symbols.h"

namespace {

using ab::loader::find_go_probe_sites;
using ab::loader::GoFunc;
using ab::loader::GoProbeSites;
using ab::loader::parse_go_buildinfo;
using ab::loader::parse_pclntab;
using ab::loader::PclntabInfo;

void put32(std::vector<uint8_t>& v, size_t at, uint32_t x) { memcpy(v.data() + at, &x, 4); }
void put64(std::vector<uint8_t>& v, size_t at, uint64_t x) { memcpy(v.data() + at, &x, 8); }

// A Go 1.18+ pclntab with three functions laid out as the linker lays them out:
// header | funcnametab | functab (nfunc+1 pairs of u32) | _func records.
std::vector<uint8_t> crafted_pclntab(uint32_t magic, uint64_t text) {
  const std::vector<std::string> names = {"main.main", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"};
  const uint32_t entries[] = {0x0, 0x100, 0x380, 0x500};  // last: end of text
  std::vector<uint8_t> v(0x200, 0);
  put32(v, 0, magic);
  v[6] = 1;  // quantum
  v[7] = 8;  // pointer size
  put64(v, 8, names.size());
  put64(v, 24, text);     // textStart
  put64(v, 32, 0x60);     // funcnametab
  put64(v, 64, 0x100);    // functab (pclnOffset)
  std::vector<uint32_t> name_off;
  size_t at = 0x60;
  for (const auto& n : names) {
    name_off.push_back((uint32_t)(at - 0x60));
    memcpy(v.data() + at, n.c_str(), n.size() + 1);
    at += n.size() + 1;
  }
  for (size_t i = 0; i <= names.size(); i++) {
    put32(v, 0x100 + i * 8, entries[i]);
    put32(v, 0x100 + i * 8 + 4, (uint32_t)(0x40 + i * 0x10));  // _func at functab + funcoff
  }
  for (size_t i = 0; i < names.size(); i++) {
    put32(v, 0x140 + i * 0x10, entries[i]);
    put32(v, 0x140 + i * 0x10 + 4, name_off[i]);
  }
  return v;
}

TEST(GoPclntab, FindsWantedFunctionsAndTheirExtent) {
  for (uint32_t magic : {0xfffffff0u, 0xfffffff1u}) {
    auto t = crafted_pclntab(magic, 0x401000);
    std::vector<GoFunc> out;
    PclntabInfo info;
    std::string err;
    ASSERT_TRUE(parse_pclntab(t.data(), t.size(), 0, {"crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"},
                              &out, &info, &err)) << err;
    EXPECT_EQ(info.nfunc, 3u);
    EXPECT_EQ(info.magic, magic);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].name, "crypto/tls.(*Conn).Write");
    EXPECT_EQ(out[0].entry, 0x401100u);
    EXPECT_EQ(out[0].end, 0x401380u);
    EXPECT_EQ(out[1].name, "crypto/tls.(*Conn).Read");
    EXPECT_EQ(out[1].entry, 0x401380u);
    EXPECT_EQ(out[1].end, 0x401500u);
  }
}

TEST(GoPclntab, TextStartZeroUsesTheFallback) {
  auto t = crafted_pclntab(0xfffffff0u, 0);
  std::vector<GoFunc> out;
  std::string err;
  ASSERT_TRUE(parse_pclntab(t.data(), t.size(), 0x800000, {"main.main"}, &out, nullptr, &err)) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].entry, 0x800000u);
}

TEST(GoPclntab, BadOrDamagedTablesAreRefusedWithAReason) {
  std::vector<GoFunc> out;
  std::string err;
  auto t = crafted_pclntab(0xfffffffbu, 0x401000);  // Go 1.2-1.15
  EXPECT_FALSE(parse_pclntab(t.data(), t.size(), 0, {}, &out, nullptr, &err));
  EXPECT_NE(err.find("magic"), std::string::npos) << err;

  t = crafted_pclntab(0xfffffff1u, 0x401000);
  for (size_t cut = 0; cut < t.size(); cut += 7) {  // every truncation: an error, never a crash
    out.clear();
    bool ok = parse_pclntab(t.data(), cut, 0, {}, &out, nullptr, &err);
    if (cut < 0x168) {  // the last _func record ends at 0x168
      EXPECT_FALSE(ok) << cut;
    }
  }
  t = crafted_pclntab(0xfffffff1u, 0x401000);
  put64(t, 8, 1u << 30);  // absurd function count
  EXPECT_FALSE(parse_pclntab(t.data(), t.size(), 0, {}, &out, nullptr, &err));
  t = crafted_pclntab(0xfffffff1u, 0x401000);
  put32(t, 0x140 + 4, 0xffff0000);  // name offset outside the table
  EXPECT_FALSE(parse_pclntab(t.data(), t.size(), 0, {}, &out, nullptr, &err));
  t = crafted_pclntab(0xfffffff1u, 0x401000);
  t[7] = 4;  // 32-bit
  EXPECT_FALSE(parse_pclntab(t.data(), t.size(), 0, {}, &out, nullptr, &err));
}

TEST(GoBuildinfo, VersionOfTheInlineLayout) {
  std::vector<uint8_t> b(32, 0);
  memcpy(b.data(), "\xff Go buildinf:", 14);
  b[14] = 8;
  b[15] = 2;
  const std::string v = "go1.19.8";
  b.push_back((uint8_t)v.size());
  b.insert(b.end(), v.begin(), v.end());
  EXPECT_EQ(parse_go_buildinfo(b.data(), b.size(), nullptr), "go1.19.8");
  b[0] = 0;
  EXPECT_EQ(parse_go_buildinfo(b.data(), b.size(), nullptr), "");
}

TEST(GoProbeSites, RetsComeFromTheDisassemblyNotFromAByteScan) {
  const uint8_t code[] = {
      0x49, 0x3b, 0x66, 0x10,        // cmp rsp, [r14+0x10]
      0x76, 0x08,                    // jbe +8 (morestack)
      0xb8, 0xc3, 0x00, 0x00, 0x00,  // mov eax, 0xc3   <- a 0xC3 byte that is no RET
      0xc3,                          // ret
      0x31, 0xc0,                    // xor eax, eax
      0xc3,                          // ret
      0xcc, 0xcc,                    // int3 padding
  };
  GoProbeSites s;
  std::string err;
  ASSERT_TRUE(find_go_probe_sites(code, sizeof code, 0x1000, &s, &err)) << err;
  EXPECT_EQ(s.entry_vaddr, 0x1000u);
  EXPECT_EQ(s.probe_vaddr, 0x1006u);  // after the stack check
  ASSERT_EQ(s.rets.size(), 2u);
  EXPECT_EQ(s.rets[0], 0x100bu);
  EXPECT_EQ(s.rets[1], 0x100eu);
}

TEST(GoProbeSites, NoStackCheckProbesTheEntryAndNoRetIsAnError) {
  const uint8_t leaf[] = {0x31, 0xc0, 0xc3};
  GoProbeSites s;
  std::string err;
  ASSERT_TRUE(find_go_probe_sites(leaf, sizeof leaf, 0x2000, &s, &err)) << err;
  EXPECT_EQ(s.probe_vaddr, 0x2000u);
  const uint8_t noret[] = {0x31, 0xc0, 0xeb, 0xfc};
  EXPECT_FALSE(find_go_probe_sites(noret, sizeof noret, 0x2000, &s, &err));
}

// A real Go binary from the machine's toolchain (Debian's golang-go), plain and `-s -w`.
class GoBinary : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (system("command -v go >/dev/null 2>&1") != 0) return;
    char tmpl[] = "/tmp/ab-go-unit-XXXXXX";
    if (!mkdtemp(tmpl)) return;
    dir_ = tmpl;
    std::ofstream(dir_ + "/go.mod") << "module abunit\n\ngo 1.19\n";
    std::ofstream(dir_ + "/main.go") << "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"os\"\n)\n\n"
                                        "func main() {\n\tc, err := tls.Dial(\"tcp\", os.Args[1], nil)\n"
                                        "\tif err != nil {\n\t\treturn\n\t}\n\tb := make([]byte, 8)\n"
                                        "\tc.Write(b)\n\tc.Read(b)\n\tc.Close()\n}\n";
    std::string env = "cd " + dir_ + " && env GOPROXY=off GOFLAGS=-mod=mod GOCACHE=" + dir_ +
                      "/cache GOPATH=" + dir_ + "/gopath HOME=" + dir_ + " CGO_ENABLED=0 ";
    if (system((env + "go build -o plain . >/dev/null 2>&1").c_str()) == 0 &&
        system((env + "go build -ldflags='-s -w' -o stripped . >/dev/null 2>&1").c_str()) == 0)
      built_ = true;
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override {
    if (!built_) GTEST_SKIP() << "no Go toolchain (scripts/setup.sh installs golang-go)";
  }
  static std::string read_file(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static inline std::string dir_;
  static inline bool built_ = false;
};

TEST_F(GoBinary, LocatesWriteReadAndTheirRetsStrippedOrNot) {
  auto plain = ab::loader::locate_go_tls(dir_ + "/plain");
  auto stripped = ab::loader::locate_go_tls(dir_ + "/stripped");
  ASSERT_TRUE(plain && stripped);
  for (auto* g : {&*plain, &*stripped}) {
    EXPECT_TRUE(g->is_go);
    EXPECT_TRUE(g->usable()) << g->problem;
    EXPECT_EQ(g->go_version.rfind("go1.", 0), 0u) << g->go_version;
    EXPECT_NE(g->close, 0u);
  }
  // -s -w drops the symbol table, not code: the same places
  EXPECT_EQ(plain->write, stripped->write);
  EXPECT_EQ(plain->read, stripped->read);
  EXPECT_EQ(plain->write_rets, stripped->write_rets);
  EXPECT_EQ(plain->read_rets, stripped->read_rets);

  // The unstripped binary's .symtab agrees on where the functions start; the probe is after
  // the stack check, a few bytes in.
  auto syms = ab::loader::resolve_symbols(dir_ + "/plain", {"crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"});
  ASSERT_TRUE(syms && syms->size() == 2);
  uint64_t w = syms->at("crypto/tls.(*Conn).Write"), r = syms->at("crypto/tls.(*Conn).Read");
  EXPECT_GT(plain->write, w);
  EXPECT_LT(plain->write, w + 16);
  EXPECT_GT(plain->read, r);
  EXPECT_LT(plain->read, r + 16);

  const std::string bytes = read_file(dir_ + "/stripped");
  for (auto* rets : {&stripped->write_rets, &stripped->read_rets})
    for (uint64_t off : *rets) {
      ASSERT_LT(off, bytes.size());
      EXPECT_EQ((uint8_t)bytes[off], 0xc3);
    }
  std::printf("located in %.2f ms (plain), %.2f ms (stripped); Write %zu RETs, Read %zu RETs\n",
              plain->locate_ms, stripped->locate_ms, stripped->write_rets.size(), stripped->read_rets.size());
}

// Plain sockets: internal/poll.(*FD) Write / Read / Close, located the same way.
TEST_F(GoBinary, LocatesInternalPollFdWriteReadCloseStrippedOrNot) {
  auto plain = ab::loader::locate_go_tls(dir_ + "/plain");
  auto stripped = ab::loader::locate_go_tls(dir_ + "/stripped");
  ASSERT_TRUE(plain && stripped);
  for (auto* g : {&*plain, &*stripped}) {
    EXPECT_TRUE(g->plain_usable()) << g->plain_problem;
    EXPECT_NE(g->fd_close, 0u);
  }
  EXPECT_EQ(plain->fd_write, stripped->fd_write);
  EXPECT_EQ(plain->fd_read_rets, stripped->fd_read_rets);
  auto syms = ab::loader::resolve_symbols(dir_ + "/plain", {"internal/poll.(*FD).Write", "internal/poll.(*FD).Read"});
  ASSERT_TRUE(syms && syms->size() == 2);
  const uint64_t w = syms->at("internal/poll.(*FD).Write"), r = syms->at("internal/poll.(*FD).Read");
  EXPECT_GT(plain->fd_write, w);  // after the stack check
  EXPECT_LT(plain->fd_write, w + 16);
  EXPECT_GT(plain->fd_read, r);
  EXPECT_LT(plain->fd_read, r + 16);
  const std::string bytes = read_file(dir_ + "/stripped");
  for (auto* rets : {&stripped->fd_write_rets, &stripped->fd_read_rets})
    for (uint64_t off : *rets) {
      ASSERT_LT(off, bytes.size());
      EXPECT_EQ((uint8_t)bytes[off], 0xc3);
    }
}

TEST_F(GoBinary, ADamagedPclntabIsAGoBinaryThatCannotBeWatched) {
  std::string bytes = read_file(dir_ + "/stripped");
  // the pclntab starts with its magic; damage every copy (there is one, in .gopclntab)
  const std::string magic("\xf0\xff\xff\xff", 4);
  size_t at = bytes.find(magic);
  ASSERT_NE(at, std::string::npos);
  while (at != std::string::npos) {
    bytes[at] = 0x42;
    at = bytes.find(magic, at + 1);
  }
  const std::string p = dir_ + "/damaged";
  std::ofstream(p, std::ios::binary) << bytes;
  auto g = ab::loader::locate_go_tls(p);
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->is_go);
  EXPECT_FALSE(g->usable());
  EXPECT_NE(g->problem.find("magic"), std::string::npos) << g->problem;
}

TEST(GoLocate, NotGoAndNotElf) {
  auto self = ab::loader::locate_go_tls("/proc/self/exe");  // this test: C++, not Go
  ASSERT_TRUE(self);
  EXPECT_FALSE(self->is_go);
  EXPECT_FALSE(ab::loader::locate_go_tls("/proc/self/status"));
  EXPECT_FALSE(ab::loader::locate_go_tls("/nonexistent"));
}

}  // namespace
