#include "loader/elf_symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ab::loader {

namespace {

struct FdGuard {
  int fd;
  ~FdGuard() { if (fd >= 0) close(fd); }
};
struct ElfGuard {
  Elf* e;
  ~ElfGuard() { if (e) elf_end(e); }
};

// Virtual address → file offset through the PT_LOAD segment that contains it.
std::optional<uint64_t> vaddr_to_offset(Elf* e, uint64_t vaddr) {
  size_t n = 0;
  if (elf_getphdrnum(e, &n) != 0) return std::nullopt;
  for (size_t i = 0; i < n; i++) {
    GElf_Phdr ph;
    if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_LOAD) continue;
    if (vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_memsz) return vaddr - ph.p_vaddr + ph.p_offset;
  }
  return std::nullopt;
}

}  // namespace

constexpr long kFuseSuperMagic = 0x65735546;

ObjectFile& ObjectFile::operator=(ObjectFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    st_ = o.st_;
    o.fd_ = -1;
  }
  return *this;
}

ObjectFile::~ObjectFile() {
  if (fd_ >= 0) close(fd_);
}

// O_PATH descriptor → checked regular file → O_RDONLY descriptor of that same inode.
std::optional<ObjectFile> ObjectFile::open_path(const std::string& name, std::string* why) {
  auto fail = [&](const std::string& w) -> std::optional<ObjectFile> {
    if (why) *why = w;
    return std::nullopt;
  };
  FdGuard p{open(name.c_str(), O_PATH | O_CLOEXEC)};
  if (p.fd < 0) return fail(name + ": " + strerror(errno));
  struct stat st {};
  if (fstat(p.fd, &st) != 0) return fail(name + ": " + strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(name + ": not a regular file");
  struct statfs sfs {};
  if (fstatfs(p.fd, &sfs) != 0) return fail(name + ": " + strerror(errno));
  if ((long)sfs.f_type == kFuseSuperMagic) return fail(name + ": on a FUSE filesystem (not read)");
  const std::string via = "/proc/self/fd/" + std::to_string(p.fd);
  ObjectFile f;
  f.fd_ = open(via.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (f.fd_ < 0) return fail(name + ": " + strerror(errno));
  if (fstat(f.fd_, &f.st_) != 0 || f.st_.st_dev != st.st_dev || f.st_.st_ino != st.st_ino || !S_ISREG(f.st_.st_mode))
    return fail(name + ": changed while opened");
  return f;
}

std::optional<ObjectFile> ObjectFile::open_mapped(int pid, const std::string& range, std::string* why,
                                                  const std::string& proc_root) {
  if (range.empty() || range.find_first_not_of("0123456789abcdef-") != std::string::npos) {
    if (why) *why = "bad mapping range '" + range + "'";
    return std::nullopt;
  }
  return open_path(proc_root + "/" + std::to_string(pid) + "/map_files/" + range, why);
}

std::optional<std::map<std::string, uint64_t>> resolve_symbols(const std::string& path,
                                                               const std::vector<std::string>& names) {
  auto f = ObjectFile::open_path(path, nullptr);
  if (!f) return std::nullopt;
  return resolve_symbols(f->fd(), names);
}

std::optional<std::map<std::string, uint64_t>> resolve_symbols(int fd, const std::vector<std::string>& names) {
  if (elf_version(EV_CURRENT) == EV_NONE) return std::nullopt;
  ElfGuard e{elf_begin(fd, ELF_C_READ_MMAP, nullptr)};
  if (!e.e || elf_kind(e.e) != ELF_K_ELF) return std::nullopt;

  std::map<std::string, uint64_t> out;
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(e.e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    if (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB) continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data || sh.sh_entsize == 0) continue;
    size_t count = sh.sh_size / sh.sh_entsize;
    for (size_t i = 0; i < count; i++) {
      GElf_Sym sym;
      if (!gelf_getsym(data, (int)i, &sym)) continue;
      if (GELF_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_shndx == SHN_UNDEF || sym.st_value == 0) continue;
      const char* nm = elf_strptr(e.e, sh.sh_link, sym.st_name);
      if (!nm) continue;
      for (const auto& want : names) {
        if (want == nm && !out.count(want)) {
          if (auto off = vaddr_to_offset(e.e, sym.st_value)) out[want] = *off;
        }
      }
    }
  }
  return out;
}

FileKey file_key(const struct stat& st) {
  return FileKey{(uint64_t)st.st_dev, (uint64_t)st.st_ino,
                 (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
}

std::optional<TlsSymbols> TlsSymbolCache::get(const ObjectFile& f) {
  return cache_.get(f.key(), [&]() -> std::optional<TlsSymbols> {
    auto syms = resolve_symbols(f.fd(), {"SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex", "SSL_new", "SSL_free"});
    if (!syms) return std::nullopt;
    TlsSymbols t;
    auto get = [&](const char* n) { auto it = syms->find(n); return it == syms->end() ? 0 : it->second; };
    t.ssl_write = get("SSL_write");
    t.ssl_write_ex = get("SSL_write_ex");
    t.ssl_read = get("SSL_read");
    t.ssl_read_ex = get("SSL_read_ex");
    t.ssl_new = get("SSL_new");
    t.ssl_free = get("SSL_free");
    return t;
  });
}

}  // namespace ab::loader
