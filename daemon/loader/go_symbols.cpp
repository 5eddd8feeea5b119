#include "loader/go_symbols.h"

#include <capstone/capstone.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <spdlog/spdlog.h>

namespace ab::loader {

namespace {

constexpr uint32_t kMagic117 = 0xfffffffa;  // Go 1.16 and 1.17 (1.16 has no register ABI)
constexpr uint32_t kMagic118 = 0xfffffff0;  // Go 1.18, 1.19
constexpr uint32_t kMagic120 = 0xfffffff1;  // Go 1.20 and later

constexpr const char* kWrite = "crypto/tls.(*Conn).Write";
constexpr const char* kRead = "crypto/tls.(*Conn).Read";
constexpr const char* kClose = "crypto/tls.(*Conn).Close";
// Plain sockets (plain_attach.cpp): every net.Conn read and write of a Go program goes through
// these (net.(*conn).Write -> (*netFD).Write -> (*FD).Write -> syscall).
constexpr const char* kFdWrite = "internal/poll.(*FD).Write";
constexpr const char* kFdRead = "internal/poll.(*FD).Read";
constexpr const char* kFdClose = "internal/poll.(*FD).Close";

// Little-endian reads bounded by the image.
struct Bytes {
  const uint8_t* p;
  size_t n;
  bool u32(uint64_t off, uint32_t* v) const {
    if (off > n || n - off < 4) return false;
    memcpy(v, p + off, 4);
    return true;
  }
  bool word(uint64_t off, uint8_t size, uint64_t* v) const {
    if (off > n || n - off < size) return false;
    *v = 0;
    memcpy(v, p + off, size);
    return true;
  }
  // NUL-terminated string at off; false if it runs off the image.
  bool cstr(uint64_t off, std::string_view* s) const {
    if (off >= n) return false;
    const void* z = memchr(p + off, 0, n - off);
    if (!z) return false;
    *s = std::string_view((const char*)p + off, (const uint8_t*)z - (p + off));
    return true;
  }
};

struct FdGuard {
  int fd;
  ~FdGuard() { if (fd >= 0) close(fd); }
};
struct ElfGuard {
  Elf* e;
  ~ElfGuard() { if (e) elf_end(e); }
};
struct CsGuard {
  csh h = 0;
  ~CsGuard() { if (h) cs_close(&h); }
};

bool version_at_least_117(const std::string& v) {
  // "go1.17", "go1.17.3", "go1.18beta1"...: major 1, minor >= 17
  if (v.rfind("go1.", 0) != 0) return false;
  return atoi(v.c_str() + 4) >= 17;
}

}  // namespace

bool parse_pclntab(const uint8_t* p, size_t n, uint64_t text_fallback,
                   const std::vector<std::string>& wanted, std::vector<GoFunc>* out,
                   PclntabInfo* info, std::string* error) {
  auto fail = [&](const std::string& m) {
    if (error) *error = m;
    return false;
  };
  Bytes b{p, n};
  uint32_t magic = 0;
  if (!b.u32(0, &magic)) return fail("pclntab too short");
  if (magic != kMagic117 && magic != kMagic118 && magic != kMagic120) {
    char buf[64];
    snprintf(buf, sizeof buf, "pclntab magic 0x%08x not supported", magic);
    return fail(buf);
  }
  if (n < 8 || p[4] != 0 || p[5] != 0) return fail("pclntab header padding is not zero");
  uint8_t quantum = p[6], ps = p[7];
  if (ps != 8) return fail("pclntab pointer size " + std::to_string(ps) + " (only 64-bit binaries)");
  if (quantum != 1 && quantum != 2 && quantum != 4) return fail("pclntab quantum is not 1, 2 or 4");
  const bool new_layout = magic != kMagic117;  // 1.18+: text start in the header, 32-bit offsets
  uint64_t nfunc = 0, text = 0, funcname = 0, functab = 0;
  if (!b.word(8, ps, &nfunc)) return fail("pclntab header truncated");
  if (new_layout) {
    if (!b.word(8 + 2 * ps, ps, &text) || !b.word(8 + 3 * ps, ps, &funcname) ||
        !b.word(8 + 7 * ps, ps, &functab))
      return fail("pclntab header truncated");
    if (text == 0) text = text_fallback;
  } else {
    if (!b.word(8 + 2 * ps, ps, &funcname) || !b.word(8 + 6 * ps, ps, &functab))
      return fail("pclntab header truncated");
  }
  const uint64_t entry_size = new_layout ? 8 : 2 * ps;
  if (nfunc == 0 || nfunc > (1u << 26)) return fail("pclntab function count out of range");
  if (functab >= n || funcname >= n || (n - functab) / entry_size < nfunc + 1)
    return fail("pclntab function table out of bounds");
  if (info) *info = PclntabInfo{magic, ps, nfunc, text};

  auto entry_of = [&](uint64_t i, uint64_t* pc, uint64_t* funcoff) {
    const uint64_t at = functab + i * entry_size;
    if (new_layout) {
      uint32_t e = 0, f = 0;
      if (!b.u32(at, &e) || !b.u32(at + 4, &f)) return false;
      *pc = text + e;
      *funcoff = f;
      return true;
    }
    return b.word(at, ps, pc) && b.word(at + ps, ps, funcoff);
  };
  size_t found = 0;
  for (uint64_t i = 0; i < nfunc; i++) {
    uint64_t pc = 0, funcoff = 0, next = 0, unused = 0;
    if (!entry_of(i, &pc, &funcoff) || !entry_of(i + 1, &next, &unused))
      return fail("pclntab function table truncated");
    // _func: entry (u32 offset from text for 1.18+, uintptr before), then int32 nameOff
    uint32_t name_off = 0;
    if (!b.u32(functab + funcoff + (new_layout ? 4 : ps), &name_off))
      return fail("pclntab function record out of bounds");
    std::string_view name;
    if (!b.cstr(funcname + name_off, &name)) return fail("pclntab function name out of bounds");
    bool want = wanted.empty();
    for (const auto& w : wanted) want |= name == w;
    if (!want) continue;
    if (next <= pc) return fail("pclntab function " + std::string(name) + " has no extent");
    out->push_back(GoFunc{std::string(name), pc, next});
    if (!wanted.empty() && ++found == wanted.size()) break;
  }
  return true;
}

std::string parse_go_buildinfo(const uint8_t* p, size_t n,
                               const std::function<std::string(uint64_t, uint64_t)>* read_vaddr) {
  static const char kBiMagic[] = "\xff Go buildinf:";
  if (n < 32 || memcmp(p, kBiMagic, 14) != 0) return "";
  const uint8_t ps = p[14], flags = p[15];
  if (flags & 2) {  // 1.18+: inline strings, each a uvarint length then bytes
    uint64_t len = 0;
    size_t i = 32;
    for (int shift = 0; i < n && shift < 64; shift += 7) {
      uint8_t c = p[i++];
      len |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) break;
    }
    if (len > 64 || i > n || n - i < len) return "";
    return std::string((const char*)p + i, len);
  }
  if (!read_vaddr || ps != 8 || (flags & 1)) return "";
  Bytes b{p, n};
  uint64_t hdr = 0;  // pointer to a Go string header (ptr, len)
  if (!b.word(16, ps, &hdr)) return "";
  std::string sh = (*read_vaddr)(hdr, 16);
  if (sh.size() != 16) return "";
  uint64_t sptr = 0, slen = 0;
  memcpy(&sptr, sh.data(), 8);
  memcpy(&slen, sh.data() + 8, 8);
  if (slen > 64) return "";
  return (*read_vaddr)(sptr, slen);
}

bool find_go_probe_sites(const uint8_t* code, size_t n, uint64_t vaddr, GoProbeSites* out,
                         std::string* error) {
  CsGuard cs;
  if (cs_open(CS_ARCH_X86, CS_MODE_64, &cs.h) != CS_ERR_OK) {
    if (error) *error = "capstone: cannot open an x86-64 disassembler";
    return false;
  }
  cs_insn* insn = cs_malloc(cs.h);
  if (!insn) {
    if (error) *error = "capstone: out of memory";
    return false;
  }
  out->entry_vaddr = out->probe_vaddr = vaddr;
  out->rets.clear();
  const uint8_t* c = code;
  size_t left = n;
  uint64_t addr = vaddr;
  int index = 0;
  bool after_check = false;  // the previous instruction compared the stack with g.stackguard0
  bool bad = false;
  while (left > 0) {
    if (!cs_disasm_iter(cs.h, &c, &left, &addr, insn)) {
      // Go pads between functions with INT3; undecodable bytes inside a function are a sign
      // the extent is wrong: refuse rather than guess RETs.
      bad = true;
      break;
    }
    if (index < 8 && out->probe_vaddr == vaddr) {
      if (insn->id == X86_INS_CMP && strstr(insn->op_str, "[r14 + 0x10]")) {
        after_check = true;
      } else if (after_check && insn->id == X86_INS_JBE) {
        out->probe_vaddr = insn->address + insn->size;
      } else {
        after_check = false;
      }
    }
    if (insn->id == X86_INS_RET) out->rets.push_back(insn->address);
    index++;
  }
  cs_free(insn, 1);
  if (bad) {
    if (error) *error = "undecodable instruction inside the function";
    return false;
  }
  if (out->rets.empty()) {
    if (error) *error = "no RET instruction in the function";
    return false;
  }
  return true;
}

std::optional<GoTlsSymbols> locate_go_tls(const std::string& path) {
  auto f = ObjectFile::open_path(path, nullptr);
  if (!f) return std::nullopt;
  return locate_go_tls(f->fd());
}

std::optional<GoTlsSymbols> locate_go_tls(int fd) {
  auto t0 = std::chrono::steady_clock::now();
  if (elf_version(EV_CURRENT) == EV_NONE) return std::nullopt;
  ElfGuard e{elf_begin(fd, ELF_C_READ_MMAP, nullptr)};
  if (!e.e || elf_kind(e.e) != ELF_K_ELF) return std::nullopt;
  size_t fsize = 0;
  const uint8_t* file = (const uint8_t*)elf_rawfile(e.e, &fsize);
  GElf_Ehdr eh;
  if (!file || !gelf_getehdr(e.e, &eh)) return std::nullopt;

  GoTlsSymbols r;
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(e.e, &shstrndx) != 0) return r;
  const uint8_t* pcln = nullptr;
  size_t pcln_size = 0;
  const uint8_t* bi = nullptr;
  size_t bi_size = 0;
  uint64_t text_addr = 0;
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(e.e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    const char* nm = elf_strptr(e.e, shstrndx, sh.sh_name);
    if (!nm) continue;
    std::string_view name(nm);
    const bool in_file = sh.sh_type != SHT_NOBITS && sh.sh_offset <= fsize && fsize - sh.sh_offset >= sh.sh_size;
    if (name == ".text") text_addr = sh.sh_addr;
    if (!in_file) continue;
    // ".gopclntab" (internal linking), ".data.rel.ro.gopclntab"-like names elsewhere
    if (name.size() >= 9 && name.substr(name.size() - 9) == "gopclntab") {
      pcln = file + sh.sh_offset;
      pcln_size = sh.sh_size;
    } else if (name == ".go.buildinfo") {
      bi = file + sh.sh_offset;
      bi_size = sh.sh_size;
    }
  }
  if (!pcln && !bi) return r;  // not a Go binary
  r.is_go = true;

  // virtual address -> file bytes, through the PT_LOAD that holds it
  auto at_vaddr = [&](uint64_t va, uint64_t len) -> const uint8_t* {
    size_t np = 0;
    if (elf_getphdrnum(e.e, &np) != 0) return nullptr;
    for (size_t i = 0; i < np; i++) {
      GElf_Phdr ph;
      if (!gelf_getphdr(e.e, (int)i, &ph) || ph.p_type != PT_LOAD) continue;
      if (va < ph.p_vaddr || va >= ph.p_vaddr + ph.p_filesz) continue;
      uint64_t off = va - ph.p_vaddr + ph.p_offset;
      if (off > fsize || fsize - off < len || va - ph.p_vaddr + len > ph.p_filesz) return nullptr;
      return file + off;
    }
    return nullptr;
  };
  auto to_offset = [&](uint64_t va) -> uint64_t {
    const uint8_t* b = at_vaddr(va, 1);
    return b ? (uint64_t)(b - file) : 0;
  };

  if (bi) {
    std::function<std::string(uint64_t, uint64_t)> rd = [&](uint64_t va, uint64_t len) {
      const uint8_t* b = at_vaddr(va, len);
      return b ? std::string((const char*)b, len) : std::string();
    };
    r.go_version = parse_go_buildinfo(bi, bi_size, &rd);
  }
  if (eh.e_machine != EM_X86_64) {
    r.problem = "Go binary for a machine other than x86-64";
    return r;
  }
  if (!pcln) {
    r.problem = "Go binary without a .gopclntab section";
    return r;
  }
  std::vector<GoFunc> funcs;
  PclntabInfo info;
  std::string err;
  if (!parse_pclntab(pcln, pcln_size, text_addr, {kWrite, kRead, kClose, kFdWrite, kFdRead, kFdClose}, &funcs, &info, &err)) {
    r.problem = err;
    return r;
  }
  if (info.magic == kMagic117 && !version_at_least_117(r.go_version)) {
    r.problem = "Go older than 1.17 (stack ABI) or of unknown version (" + r.go_version + ")";
    return r;
  }
  for (const auto& f : funcs) {
    const uint8_t* code = at_vaddr(f.entry, f.end - f.entry);
    GoProbeSites sites;
    const bool poll = f.name == kFdWrite || f.name == kFdRead || f.name == kFdClose;
    if (!code || !find_go_probe_sites(code, f.end - f.entry, f.entry, &sites, &err)) {
      if (poll) {  // plain sockets only: crypto/tls can still be watched
        r.plain_problem = f.name + ": " + (code ? err : "code not in the file");
        continue;
      }
      r.problem = f.name + ": " + (code ? err : "code not in the file");
      return r;
    }
    std::vector<uint64_t> rets;
    for (uint64_t va : sites.rets) rets.push_back(to_offset(va));
    const uint64_t probe = to_offset(sites.probe_vaddr);
    if (f.name == kWrite) {
      r.write = probe;
      r.write_rets = rets;
    } else if (f.name == kRead) {
      r.read = probe;
      r.read_rets = rets;
    } else if (f.name == kClose) {
      r.close = probe;
    } else if (f.name == kFdWrite) {
      r.fd_write = probe;
      r.fd_write_rets = rets;
    } else if (f.name == kFdRead) {
      r.fd_read = probe;
      r.fd_read_rets = rets;
    } else if (f.name == kFdClose) {
      r.fd_close = probe;
    }
  }
  if (!r.plain_usable() && r.plain_problem.empty()) r.plain_problem = "Go binary without internal/poll.(*FD).Write and Read";
  if (!r.usable() && r.problem.empty()) r.problem = "Go binary without crypto/tls.(*Conn).Write and Read";
  r.locate_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::optional<GoTlsSymbols> GoTlsCache::get(const ObjectFile& f, const std::string& path) {
  return cache_.get(f.key(), [&] {
    auto r = locate_go_tls(f.fd());
    if (r && r->is_go) {
      if (r->usable())
        spdlog::info("Go {} crypto/tls located in {} in {:.2f} ms: Write ({} RETs), Read ({} RETs){}",
                     r->go_version.empty() ? "(version unknown)" : r->go_version, path, r->locate_ms,
                     r->write_rets.size(), r->read_rets.size(), r->close ? ", Close" : "");
      else
        spdlog::info("Go binary {} cannot be watched: {}", path, r->problem);
    }
    return r;
  });
}

}  // namespace ab::loader
