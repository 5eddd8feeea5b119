#include "loader/elf_symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

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

std::optional<std::map<std::string, uint64_t>> resolve_symbols(const std::string& path,
                                                               const std::vector<std::string>& names) {
  if (elf_version(EV_CURRENT) == EV_NONE) return std::nullopt;
  FdGuard fd{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) return std::nullopt;
  ElfGuard e{elf_begin(fd.fd, ELF_C_READ_MMAP, nullptr)};
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

std::optional<FileKey> file_key(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileKey{(uint64_t)st.st_dev, (uint64_t)st.st_ino,
                 (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
}

std::optional<TlsSymbols> TlsSymbolCache::get(const std::string& path) {
  return cache_.get(path, [&]() -> std::optional<TlsSymbols> {
    auto syms = resolve_symbols(path, {"SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex", "SSL_new", "SSL_free"});
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
