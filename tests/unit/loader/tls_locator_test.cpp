// Unit tests for the TLS locator's pure parts: build-id notes, the xref method on a small
// synthetic ELF image laid out like a non-PIE Bun build, the on-disk cache lines, and bad input.
#include "loader/tls_locator.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>

using namespace ab::loader;

namespace {

constexpr uint64_t kRoVa = 0x200000, kCodeVa = 0x400000, kCodeOff = 0x2000;

void put32(std::string& s, size_t at, uint32_t v) { memcpy(&s[at], &v, 4); }

// An ET_EXEC image: PT_NOTE (build id), an R segment with the ssl_lib.cc file name, an RX segment
// with functions built from `code` (offsets relative to kCodeVa).
std::string image(const std::string& code, const std::string& build_id = "\x01\x02\x03\x04") {
  std::string img(kCodeOff + code.size(), '\0');
  Elf64_Ehdr eh{};
  memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_phoff = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 3;
  memcpy(&img[0], &eh, sizeof eh);
  // note at 0x800, rodata at 0x1000..0x2000, code at 0x2000
  std::string note(12, '\0');
  put32(note, 0, 4);
  put32(note, 4, (uint32_t)build_id.size());
  put32(note, 8, NT_GNU_BUILD_ID);
  note += std::string("GNU\0", 4) + build_id;
  memcpy(&img[0x800], note.data(), note.size());
  const char* fname = "../../vendor/boringssl/ssl/ssl_lib.cc";
  memcpy(&img[0x1010], fname, strlen(fname) + 1);
  Elf64_Phdr ph[3]{};
  ph[0] = {PT_NOTE, PF_R, 0x800, kRoVa - 0x1000 + 0x800, 0, note.size(), note.size(), 4};
  ph[1] = {PT_LOAD, PF_R, 0x1000, kRoVa, kRoVa, 0x1000, 0x1000, 0x1000};
  ph[2] = {PT_LOAD, PF_R | PF_X, kCodeOff, kCodeVa, kCodeVa, code.size(), code.size(), 0x1000};
  memcpy(&img[sizeof eh], ph, sizeof ph);
  memcpy(&img[kCodeOff], code.data(), code.size());
  return img;
}

constexpr uint32_t kFileVa = kRoVa + 0x10;

// mov ecx, file; mov edi, 16; xor esi, esi; mov edx, reason; mov r8d, line; call rel32
std::string error_site(uint32_t reason, uint32_t line = 100) {
  static const char kSite[] = "\xb9????\xbf\x10\x00\x00\x00\x31\xf6\xba????\x41\xb8????\xe8\x00\x00\x00\x00";
  std::string s(kSite, sizeof kSite - 1);
  put32(s, 1, kFileVa);
  put32(s, 13, reason);
  put32(s, 19, line);
  return s;
}

struct Code {
  std::string b;
  uint64_t begin_function() {  // 16-aligned, int3 padding before, frame-pointer prologue
    while (b.size() % 16) b += '\xcc';
    if (!b.empty() && (uint8_t)b.back() != 0xcc) b += std::string(16, '\xcc');
    uint64_t at = kCodeVa + b.size();
    b += std::string("\x55\x48\x89\xe5", 4);
    return at;
  }
  void call(uint64_t target) {
    uint64_t at = kCodeVa + b.size();
    std::string c = "\xe8????";
    put32(c, 1, (uint32_t)(int32_t)(target - (at + 5)));
    b += c;
  }
  void ret() { b += '\xc3'; }
};

// ssl_read_impl {226, 215}, SSL_read {66} calling it, SSL_write {66, 226, 215, 111}, and a
// decoy raising only 66 that calls nothing.
std::string bun_like(uint64_t* write_va, uint64_t* read_va, bool write_complete = true) {
  Code c;
  c.begin_function();
  c.b += error_site(66);
  c.ret();
  uint64_t impl = c.begin_function();
  c.b += error_site(226) + error_site(215);
  c.ret();
  *read_va = c.begin_function();
  c.b += error_site(66);
  c.call(impl);
  c.ret();
  *write_va = c.begin_function();
  c.b += error_site(66) + error_site(226) + error_site(215);
  if (write_complete) c.b += error_site(111);
  c.ret();
  c.begin_function();
  c.ret();
  return image(c.b);
}

}  // namespace

TEST(TlsLocator, BuildId) {
  EXPECT_EQ(elf_build_id(image("\xc3", "\xd7\x2a\x72\x9b")), "d72a729b");
  EXPECT_EQ(elf_build_id("not an elf"), "");
}

TEST(TlsLocator, XrefFindsWriteAndRead) {
  uint64_t w = 0, r = 0;
  std::string img = bun_like(&w, &r);
  TlsLocation l = locate_boringssl_xref(img);
  ASSERT_EQ(l.kind, TlsLocation::Kind::Found) << l.why;
  EXPECT_EQ(l.syms.ssl_write, w - kCodeVa + kCodeOff);
  EXPECT_EQ(l.syms.ssl_read, r - kCodeVa + kCodeOff);
  EXPECT_EQ(l.library, "boringssl");
  EXPECT_EQ(l.build_id, "01020304");
}

TEST(TlsLocator, XrefSaysWhyWhenWriteIsNotSingledOut) {
  uint64_t w = 0, r = 0;
  TlsLocation l = locate_boringssl_xref(bun_like(&w, &r, /*write_complete=*/false));
  EXPECT_EQ(l.kind, TlsLocation::Kind::Unrecognised);
  EXPECT_NE(l.why.find("not singled out"), std::string::npos) << l.why;
}

TEST(TlsLocator, NoBoringSslIsNone) {
  std::string img = image("\x55\x48\x89\xe5\xc3");
  img.replace(0x1010, 6, "xxxxxx");
  size_t at = img.find("ssl_lib.cc");
  img[at] = 'X';
  EXPECT_EQ(locate_boringssl_xref(img).kind, TlsLocation::Kind::None);
}

TEST(TlsLocator, GarbageNeverCrashes) {
  uint64_t w = 0, r = 0;
  const std::string good = bun_like(&w, &r);
  std::mt19937 rng(12);
  for (int i = 0; i < 2000; i++) {
    std::string img = good;
    int flips = 1 + rng() % 16;
    for (int k = 0; k < flips; k++) img[rng() % img.size()] = (char)rng();
    if (i % 3 == 0) img.resize(rng() % img.size());
    TlsLocation l = locate_boringssl_xref(img);
    (void)elf_build_id(img);
    if (l.kind == TlsLocation::Kind::Found) {
      EXPECT_LT(l.syms.ssl_write, img.size());
      EXPECT_LT(l.syms.ssl_read, img.size());
    }
  }
}

TEST(TlsLocator, CacheLineRoundTrip) {
  FileIdentity id{64769, 123456, 373019152, 1796600000123456789};
  TlsLocation l;
  l.kind = TlsLocation::Kind::Found;
  l.library = "boringssl";
  l.method = "xref";
  l.build_id = "d72a729b5627657c0649e49ae9d771fec0783039";
  l.syms.ssl_write = 0x311d660;
  l.syms.ssl_read = 0x311d810;
  auto back = parse_cache_line(format_cache_line(id, l));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->first, id);
  EXPECT_EQ(back->second.kind, TlsLocation::Kind::Found);
  EXPECT_EQ(back->second.syms.ssl_write, 0x311d660u);
  EXPECT_EQ(back->second.syms.ssl_read, 0x311d810u);
  EXPECT_EQ(back->second.method, "xref");
  EXPECT_EQ(back->second.build_id, l.build_id);

  TlsLocation u;
  u.kind = TlsLocation::Kind::Unrecognised;
  u.library = "boringssl";
  u.method = "xref";
  u.why = "BoringSSL found but\nSSL_write not singled out";
  auto ub = parse_cache_line(format_cache_line(id, u));
  ASSERT_TRUE(ub);
  EXPECT_EQ(ub->second.kind, TlsLocation::Kind::Unrecognised);
  EXPECT_EQ(ub->second.why, "BoringSSL found but SSL_write not singled out");
  EXPECT_EQ(ub->second.build_id, "");
}

TEST(TlsLocator, BadCacheLinesRejected) {
  for (const char* bad : {"", "v2 - 1 2 3 4 boringssl xref found 1 2 0 0", "v1 - 1 2 3 boringssl xref found",
                          "v1 - 1 2 3 4 boringssl xref found 0 0 0 0", "v1 - x 2 3 4 a b found 1 2 0 0",
                          "v1 - 1 2 3 4 a b maybe"})
    EXPECT_FALSE(parse_cache_line(bad)) << bad;
}

TEST(TlsLocator, KnownBuildsHaveOffsets) {
  for (auto& k : known_boringssl_builds()) {
    EXPECT_EQ(strlen(k.build_id), 40u) << k.what;
    EXPECT_NE(k.ssl_write, 0u) << k.what;
    EXPECT_NE(k.ssl_read, 0u) << k.what;
  }
}

// Harden C1: the owner of a mapped object can truncate it while the daemon reads it; the read
// faults (SIGBUS) and must cost that one look-up, not the daemon.
TEST(TlsLocator, AFileTruncatedWhileReadIsAFailedLookUpNotACrash) {
  char path[] = "/tmp/ab-locator-trunc-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  {
    // an ELF header followed by enough bytes to map a few pages
    std::string img(64 * 1024, '\0');
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_type = ET_DYN;
    eh.e_machine = EM_X86_64;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    std::memcpy(img.data(), &eh, sizeof eh);
    ASSERT_EQ(write(fd, img.data(), img.size()), ssize_t(img.size()));
  }
  TlsLocator loc;
  int truncated = 0;
  loc.set_after_map_hook_for_test([&](int) {
    ASSERT_EQ(ftruncate(fd, 0), 0);
    truncated++;
  });
  TlsLocation l = loc.locate(std::string(path));
  EXPECT_EQ(truncated, 1);
  EXPECT_EQ(loc.changed_while_read(), 1u);
  EXPECT_NE(l.kind, TlsLocation::Kind::Found);
  EXPECT_EQ(l.why, "the file changed while it was read");
  // the guard is off again: the next look-up of an intact file works as before
  loc.set_after_map_hook_for_test(nullptr);
  ASSERT_EQ(ftruncate(fd, 64 * 1024), 0);
  TlsLocation again = loc.locate(std::string(path));
  EXPECT_EQ(loc.changed_while_read(), 1u);
  EXPECT_NE(again.why, "the file changed while it was read");
  close(fd);
  unlink(path);
}
