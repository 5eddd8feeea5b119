// Plain-HTTP attach: which mapped objects are C libraries, and their socket I/O offsets.
#include "loader/plain_attach.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <string>

namespace {

using ab::loader::is_c_library_path;

TEST(PlainAttach, CLibraryNames) {
  EXPECT_TRUE(is_c_library_path("/usr/lib/x86_64-linux-gnu/libc.so.6"));
  EXPECT_TRUE(is_c_library_path("/lib/libc-2.31.so"));
  EXPECT_TRUE(is_c_library_path("/lib/ld-musl-x86_64.so.1"));
  EXPECT_FALSE(is_c_library_path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
  EXPECT_FALSE(is_c_library_path("/usr/lib/x86_64-linux-gnu/libcurl.so.4"));
  EXPECT_FALSE(is_c_library_path("/opt/app/mylibc.so"));
  EXPECT_FALSE(is_c_library_path("libc"));
}

// The C library this test runs on: its path from /proc/self/maps.
std::string own_libc() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (is_c_library_path(path)) return path;
  }
  return "";
}

TEST(PlainAttach, LocatesTheSocketFunctionsOfTheRunningCLibrary) {
  const std::string libc = own_libc();
  if (libc.empty()) GTEST_SKIP() << "no C library mapped by name";
  std::string why;
  auto f = ab::loader::ObjectFile::open_path(libc, &why);
  ASSERT_TRUE(f) << why;
  auto s = ab::loader::locate_libc_io(f->fd());
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->usable());
  for (uint64_t off : {s->write, s->send, s->sendto, s->read, s->recv, s->recvfrom, s->close}) EXPECT_NE(off, 0u);
  // distinct functions
  EXPECT_NE(s->write, s->send);
  EXPECT_NE(s->read, s->recv);
  ab::loader::LibcIoCache cache;
  auto again = cache.get(*f);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->sendto, s->sendto);
}

TEST(PlainAttach, NotElfIsNullopt) {
  char tmpl[] = "/tmp/ab-plain-unit-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "not an ELF file", 15), 15);
  EXPECT_FALSE(ab::loader::locate_libc_io(fd));
  close(fd);
  unlink(tmpl);
}

}  // namespace
