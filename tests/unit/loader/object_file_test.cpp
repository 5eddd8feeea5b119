// ObjectFile: a path a local user controls never blocks or redirects the daemon (Harden C1).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "loader/elf_symbols.h"
#include "loader/tls_attach.h"

using ab::loader::ObjectFile;

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/ab-objfile-XXXXXX";
    path = mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
};
}  // namespace

TEST(ObjectFile, FifoIsRefusedWithoutBlocking) {
  TempDir d;
  const std::string fifo = d.path + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto t0 = std::chrono::steady_clock::now();
  std::string why;
  EXPECT_FALSE(ObjectFile::open_path(fifo, &why));  // a plain open() would block here forever
  EXPECT_NE(why.find("not a regular file"), std::string::npos) << why;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_FALSE(ObjectFile::open_path("/dev/null", &why));
  EXPECT_FALSE(ObjectFile::open_path(d.path, &why));  // a directory
  EXPECT_FALSE(ObjectFile::open_path(d.path + "/absent", &why));
}

TEST(ObjectFile, MappedObjectIsTheInodeMappedNotWhatIsAtItsPathNow) {
  TempDir d;
  const std::string lib = d.path + "/lib.so";
  { std::ofstream(lib) << std::string(8192, 'a'); }
  int fd = open(lib.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* m = mmap(nullptr, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  struct stat orig {};
  fstat(fd, &orig);
  close(fd);
  // Swap a FIFO in at the path: the mapping is what counts.
  ASSERT_EQ(rename(lib.c_str(), (lib + ".old").c_str()), 0);
  ASSERT_EQ(mkfifo(lib.c_str(), 0600), 0);
  bool found = false;
  for (const auto& o : ab::loader::mapped_executable_files(getpid())) {
    if (o.path != lib + ".old") continue;
    found = true;
    std::string why;
    auto f = ObjectFile::open_mapped(getpid(), o.range, &why);
    if (geteuid() != 0) GTEST_SKIP() << "map_files needs CAP_SYS_ADMIN: " << why;
    ASSERT_TRUE(f) << why;
    EXPECT_EQ(f->st().st_ino, orig.st_ino);
    EXPECT_TRUE(S_ISREG(f->st().st_mode));
    struct stat via {};
    ASSERT_EQ(stat(f->fd_path().c_str(), &via), 0);  // what uprobe attach resolves
    EXPECT_EQ(via.st_ino, orig.st_ino);
  }
  EXPECT_TRUE(found);
  munmap(m, 8192);
  std::string why;
  EXPECT_FALSE(ObjectFile::open_mapped(getpid(), "../../etc/passwd", &why));
}

TEST(ObjectFile, ParseMapsLine) {
  auto m = ab::loader::parse_maps_line("7f1c2a000000-7f1c2a1c5000 r-xp 00028000 fd:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->range, "7f1c2a000000-7f1c2a1c5000");
  EXPECT_EQ(m->path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
  // maps pads to 8 digits, map_files does not (a non-PIE executable at 0x400000)
  auto np = ab::loader::parse_maps_line("00400000-0063f000 r-xp 00000000 fd:01 77 /tmp/go_agent");
  ASSERT_TRUE(np);
  EXPECT_EQ(np->range, "400000-63f000");
  auto sp = ab::loader::parse_maps_line("1000-2000 r-xp 0 fd:01 9 /tmp/a b/lib.so");
  ASSERT_TRUE(sp);
  EXPECT_EQ(sp->path, "/tmp/a b/lib.so");
  EXPECT_FALSE(ab::loader::parse_maps_line("1000-2000 r--p 0 fd:01 9 /usr/lib/x.so"));
  EXPECT_FALSE(ab::loader::parse_maps_line("1000-2000 r-xp 0 00:00 0 [vdso]"));
  EXPECT_FALSE(ab::loader::parse_maps_line("1000-2000 r-xp 0 fd:01 9 /tmp/x.so (deleted)"));
}
