#include "loader/tls_locator.h"

#include <elf.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace ab::loader {

namespace {

// BoringSSL reason codes (include/openssl/err.h, ssl.h): stable numbers, part of its ABI.
constexpr uint32_t kLibSsl = 16;                  // ERR_LIB_SSL
constexpr uint32_t kShouldNotHaveBeenCalled = 66;  // ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED
constexpr uint32_t kBadLength = 111;               // SSL_R_BAD_LENGTH
constexpr uint32_t kHandshakeFailure = 215;        // SSL_R_SSL_HANDSHAKE_FAILURE
constexpr uint32_t kUninitialized = 226;           // SSL_R_UNINITIALIZED

constexpr std::string_view kSslLibSuffix{"/ssl/ssl_lib.cc\0", 16};

// How far back from an error site the start of its function may be.
constexpr uint64_t kMaxFunctionSpan = 64 * 1024;

struct Segment {
  uint64_t vaddr, memsz, offset, filesz;
  uint32_t flags;
};

struct Image {
  std::string_view data;
  uint16_t type = 0;
  std::vector<Segment> segs;

  bool parse(std::string_view d) {
    data = d;
    if (d.size() < sizeof(Elf64_Ehdr) || memcmp(d.data(), ELFMAG, SELFMAG) != 0) return false;
    Elf64_Ehdr eh;
    memcpy(&eh, d.data(), sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_machine != EM_X86_64)
      return false;
    type = eh.e_type;
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > d.size() ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > d.size() - eh.e_phoff)
      return false;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
      Elf64_Phdr ph;
      memcpy(&ph, d.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
      if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE) continue;
      if (ph.p_offset > d.size() || ph.p_filesz > d.size() - ph.p_offset) continue;  // truncated
      if (ph.p_type == PT_NOTE) {
        notes.push_back({ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, 0});
        continue;
      }
      segs.push_back({ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, ph.p_flags});
    }
    return true;
  }
  std::vector<Segment> notes;

  std::string_view bytes(const Segment& s) const { return data.substr(s.offset, s.filesz); }
  // File offset of a virtual address inside segment data, or nullopt.
  std::optional<uint64_t> offset_of(uint64_t va) const {
    for (auto& s : segs)
      if (va >= s.vaddr && va < s.vaddr + s.filesz) return va - s.vaddr + s.offset;
    return std::nullopt;
  }
};

uint32_t rd32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

// One ERR_put_error call site found from a reference to the file-name string.
struct ErrorSite {
  uint64_t insn_va;  // the instruction loading the file name
  uint32_t reason;
};

// Registers (0..15, x86 numbering) → immediate loaded into them.
struct RegFile {
  std::optional<uint32_t> r[16];
};

// Decodes the few instructions that set up ERR_put_error's arguments after the file name is
// loaded: mov r32, imm32 / xor r32, r32 / mov r64, r64 (which clobbers its destination).
// Stops at a call/jmp or anything else. Returns the registers known.
RegFile decode_arg_setup(std::string_view code, size_t pos) {
  RegFile rf;
  for (int n = 0; n < 10 && pos < code.size(); n++) {
    auto b = [&](size_t k) -> int { return pos + k < code.size() ? (uint8_t)code[pos + k] : -1; };
    int op = b(0);
    int rex = 0;
    if (op >= 0x40 && op <= 0x4f) {
      rex = op;
      pos++;
      op = b(0);
    }
    if (op < 0) break;
    const int rexr = (rex & 4) ? 8 : 0, rexb = (rex & 1) ? 8 : 0;
    if (op >= 0xb8 && op <= 0xbf && !(rex & 8)) {  // mov r32, imm32
      if (pos + 5 > code.size()) break;
      rf.r[(op - 0xb8) + rexb] = rd32(code.data() + pos + 1);
      pos += 5;
    } else if ((op == 0x31 || op == 0x33) && b(1) >= 0xc0) {  // xor r, r
      int m = b(1), reg = ((m >> 3) & 7) + rexr, rm = (m & 7) + rexb;
      if (reg == rm) rf.r[reg] = 0; else rf.r[op == 0x31 ? rm : reg].reset();
      pos += 2;
    } else if ((op == 0x89 || op == 0x8b) && b(1) >= 0xc0) {  // mov r, r
      int m = b(1), reg = ((m >> 3) & 7) + rexr, rm = (m & 7) + rexb;
      rf.r[op == 0x89 ? rm : reg].reset();
      pos += 2;
    } else {
      break;  // call, jmp, or something this decoder does not follow
    }
  }
  return rf;
}

// A function entry at a 16-aligned address: push rbp; mov rbp, rsp (Bun builds keep frame
// pointers; also where the function before ends exactly on the boundary, with no padding), or
// a usual first instruction after int3 padding (the linker's fill between functions).
bool is_function_start(std::string_view code, uint64_t code_va, uint64_t a) {
  if (a <= code_va || a - code_va + 4 > code.size()) return false;
  size_t p = a - code_va;
  if (memcmp(code.data() + p, "\x55\x48\x89\xe5", 4) == 0) return true;
  if ((uint8_t)code[p - 1] != 0xcc) return false;
  const uint8_t c0 = code[p], c1 = code[p + 1];
  return c0 == 0x55 ||                               // push rbp
         (c0 == 0x41 && c1 >= 0x54 && c1 <= 0x57) ||  // push r12..r15
         c0 == 0x53 ||                               // push rbx
         (c0 == 0xf3 && c1 == 0x0f);                 // endbr64
}

// The nearest function entry at or before va.
std::optional<uint64_t> function_start(std::string_view code, uint64_t code_va, uint64_t va) {
  const uint64_t floor = va > kMaxFunctionSpan ? va - kMaxFunctionSpan : 0;
  for (uint64_t a = va & ~uint64_t{15}; a > code_va && a >= floor; a -= 16)
    if (is_function_start(code, code_va, a)) return a;
  return std::nullopt;
}

// Where the function starting at `start` ends: the next function entry after it (bounded).
uint64_t function_end(std::string_view code, uint64_t code_va, uint64_t start) {
  const uint64_t limit = std::min<uint64_t>(start + kMaxFunctionSpan, code_va + code.size());
  for (uint64_t a = start + 16; a < limit; a += 16)
    if (is_function_start(code, code_va, a)) return a;
  return limit;
}

bool calls(std::string_view code, uint64_t code_va, uint64_t from, uint64_t to, uint64_t target) {
  for (uint64_t a = from; a + 5 <= to; a++) {
    size_t p = a - code_va;
    if ((uint8_t)code[p] != 0xe8) continue;
    int32_t rel = (int32_t)rd32(code.data() + p + 1);
    if (a + 5 + (int64_t)rel == target) return true;
  }
  return false;
}

}  // namespace

std::string elf_build_id(std::string_view d) {
  Image im;
  if (!im.parse(d)) return "";
  for (auto& n : im.notes) {
    std::string_view s = im.bytes(n);
    size_t p = 0;
    while (p + 12 <= s.size()) {
      uint32_t namesz = rd32(s.data() + p), descsz = rd32(s.data() + p + 4), type = rd32(s.data() + p + 8);
      uint64_t name_end = p + 12 + ((uint64_t(namesz) + 3) & ~3ull);
      uint64_t desc_end = name_end + ((uint64_t(descsz) + 3) & ~3ull);
      if (desc_end > s.size() || name_end > s.size()) break;
      if (type == NT_GNU_BUILD_ID && namesz == 4 && memcmp(s.data() + p + 12, "GNU", 4) == 0 && descsz > 0 &&
          descsz <= 64 && name_end + descsz <= s.size()) {
        std::string out;
        static const char* hx = "0123456789abcdef";
        for (uint32_t i = 0; i < descsz; i++) {
          uint8_t c = s[name_end + i];
          out += hx[c >> 4];
          out += hx[c & 15];
        }
        return out;
      }
      p = desc_end;
    }
  }
  return "";
}

const std::vector<KnownBuild>& known_boringssl_builds() {
  // Offsets are file offsets (what uprobes take). Each was found by the xref method and
  // verified by capturing the agent's plaintext against the TLS simulator (tests/e2e).
  static const std::vector<KnownBuild> k = {
      {"d72a729b5627657c0649e49ae9d771fec0783039", "Claude Code 2.1.328 linux-x64 (Bun)", 0x311d660, 0x311d810, 0, 0},
      {"c30f169b1bef81fa57467cd091ba53aab5235468", "opencode 1.18.33 linux-x64 (Bun)", 0x367f780, 0x367f3f0, 0, 0},
  };
  return k;
}

TlsLocation locate_boringssl_xref(std::string_view d) {
  TlsLocation loc;
  loc.library = "boringssl";
  loc.method = "xref";
  Image im;
  if (!im.parse(d)) return loc;
  loc.build_id = elf_build_id(d);
  // 1. the file-name string, in a read-only, non-executable segment
  uint64_t str_va = 0;
  for (auto& s : im.segs) {
    if (s.flags & (PF_X | PF_W)) continue;
    std::string_view b = im.bytes(s);
    size_t at = b.find(kSslLibSuffix);
    if (at == std::string_view::npos) continue;
    size_t st = at;
    while (st > 0 && b[st - 1] != '\0' && at - st < 4096) st--;
    str_va = s.vaddr + st;
    break;
  }
  if (!str_va) return loc;  // no BoringSSL/OpenSSL ssl_lib.cc in here: not ours
  loc.kind = TlsLocation::Kind::Unrecognised;
  // 2. its references from code: an absolute imm32 (non-PIE: mov r32, imm32) or a
  //    RIP-relative lea (PIE); then the reason that goes with it
  std::vector<ErrorSite> sites;
  size_t undecoded = 0;
  const Segment* code_seg = nullptr;
  for (auto& s : im.segs) {
    if (!(s.flags & PF_X)) continue;
    std::string_view code = im.bytes(s);
    auto consider = [&](size_t insn, size_t after, int file_reg) {
      RegFile rf = decode_arg_setup(code, after);
      rf.r[file_reg].reset();
      // 5-argument form ERR_put_error(lib, 0, reason, file, line): file in rcx, reason in edx;
      // 4-argument form ERR_put_error(lib, reason, file, line): file in rdx, reason in esi.
      std::optional<uint32_t> lib = rf.r[7], reason;
      if (file_reg == 1) reason = rf.r[2];
      else if (file_reg == 2) reason = rf.r[6];
      if (lib && *lib == kLibSsl && reason) {
        sites.push_back({s.vaddr + insn, *reason});
        code_seg = &s;
      } else {
        undecoded++;
      }
    };
    if (im.type == ET_EXEC && str_va <= 0xffffffffull) {
      char pat[4];
      uint32_t v = (uint32_t)str_va;
      memcpy(pat, &v, 4);
      std::string_view needle(pat, 4);
      for (size_t at = code.find(needle, 1); at != std::string_view::npos; at = code.find(needle, at + 1)) {
        uint8_t op = code[at - 1];
        if (op < 0xb8 || op > 0xbf) continue;
        bool rexb = at >= 2 && (uint8_t)code[at - 2] == 0x41;
        int reg = (op - 0xb8) + (rexb ? 8 : 0);
        consider(at - 1 - (rexb ? 1 : 0), at + 4, reg);
      }
    } else {
      for (size_t p = 0; p + 7 <= code.size(); p++) {
        uint8_t rex = code[p];
        if ((rex != 0x48 && rex != 0x4c) || (uint8_t)code[p + 1] != 0x8d) continue;
        uint8_t m = code[p + 2];
        if ((m & 0xc7) != 0x05) continue;
        int32_t disp = (int32_t)rd32(code.data() + p + 3);
        if (s.vaddr + p + 7 + (int64_t)disp != str_va) continue;
        consider(p, p + 7, ((m >> 3) & 7) + (rex == 0x4c ? 8 : 0));
      }
    }
  }
  if (sites.empty() || !code_seg) {
    loc.why = "BoringSSL found (ssl_lib.cc) but none of its error sites decoded";
    return loc;
  }
  std::string_view code = im.bytes(*code_seg);
  const uint64_t code_va = code_seg->vaddr;
  // 3. error sites → functions → the set of reasons each raises
  std::map<uint64_t, std::set<uint32_t>> fn;
  for (auto& e : sites) {
    if (e.insn_va < code_va || e.insn_va >= code_va + code.size()) continue;
    if (auto st = function_start(code, code_va, e.insn_va)) fn[*st].insert(e.reason);
  }
  const std::set<uint32_t> write_set{kShouldNotHaveBeenCalled, kUninitialized, kHandshakeFailure, kBadLength};
  std::vector<uint64_t> writes, read_impls, read_candidates;
  for (auto& [start, rs] : fn) {
    if (rs == write_set) writes.push_back(start);
    if (rs == std::set<uint32_t>{kUninitialized, kHandshakeFailure}) read_impls.push_back(start);
    if (rs == std::set<uint32_t>{kShouldNotHaveBeenCalled}) read_candidates.push_back(start);
  }
  std::vector<uint64_t> reads;
  for (uint64_t c : read_candidates) {
    uint64_t end = function_end(code, code_va, c);
    for (uint64_t impl : read_impls)
      if (calls(code, code_va, c, end, impl)) {
        reads.push_back(c);
        break;
      }
  }
  // SSL_read may call a separate SSL_peek: both then call ssl_read_impl; SSL_read is the one
  // that calls the other.
  if (reads.size() == 2) {
    uint64_t a = reads[0], b = reads[1];
    if (calls(code, code_va, a, function_end(code, code_va, a), b)) reads = {a};
    else if (calls(code, code_va, b, function_end(code, code_va, b), a)) reads = {b};
  }
  if (writes.size() != 1 || reads.size() != 1) {
    loc.why = "BoringSSL found but SSL_write/SSL_read not singled out (" + std::to_string(sites.size()) +
              " error sites in " + std::to_string(fn.size()) + " functions, " + std::to_string(writes.size()) +
              " SSL_write and " + std::to_string(reads.size()) + " SSL_read candidates)";
    return loc;
  }
  auto w = im.offset_of(writes[0]), r = im.offset_of(reads[0]);
  if (!w || !r) {
    loc.why = "BoringSSL entry points outside the file's segments";
    return loc;
  }
  loc.kind = TlsLocation::Kind::Found;
  loc.syms.ssl_write = *w;
  loc.syms.ssl_read = *r;
  return loc;
}

std::string format_cache_line(const FileIdentity& id, const TlsLocation& loc) {
  std::ostringstream o;
  o << "v1 " << (loc.build_id.empty() ? "-" : loc.build_id) << ' ' << id.dev << ' ' << id.ino << ' ' << id.size
    << ' ' << id.mtime_ns << ' ' << (loc.library.empty() ? "-" : loc.library) << ' '
    << (loc.method.empty() ? "-" : loc.method) << ' ';
  if (loc.kind == TlsLocation::Kind::Found) {
    o << "found " << std::hex << loc.syms.ssl_write << ' ' << loc.syms.ssl_read << ' ' << loc.syms.ssl_new << ' '
      << loc.syms.ssl_free << std::dec;
  } else {
    std::string why = loc.why;
    std::replace(why.begin(), why.end(), '\n', ' ');
    o << (loc.kind == TlsLocation::Kind::Unrecognised ? "unrecognised " : "none ") << why;
  }
  return o.str();
}

std::optional<std::pair<FileIdentity, TlsLocation>> parse_cache_line(const std::string& line) {
  std::istringstream is(line);
  std::string v, bid, lib, method, kind;
  FileIdentity id;
  TlsLocation loc;
  if (!(is >> v >> bid >> id.dev >> id.ino >> id.size >> id.mtime_ns >> lib >> method >> kind) || v != "v1")
    return std::nullopt;
  loc.build_id = bid == "-" ? "" : bid;
  loc.library = lib == "-" ? "" : lib;
  loc.method = method == "-" ? "" : method;
  if (kind == "found") {
    if (!(is >> std::hex >> loc.syms.ssl_write >> loc.syms.ssl_read >> loc.syms.ssl_new >> loc.syms.ssl_free))
      return std::nullopt;
    if (!loc.syms.usable()) return std::nullopt;
    loc.kind = TlsLocation::Kind::Found;
  } else if (kind == "unrecognised" || kind == "none") {
    loc.kind = kind == "none" ? TlsLocation::Kind::None : TlsLocation::Kind::Unrecognised;
    std::getline(is >> std::ws, loc.why);
  } else {
    return std::nullopt;
  }
  return std::make_pair(id, loc);
}

void TlsLocator::set_cache_dir(const std::string& dir) {
  std::lock_guard lk(mu_);
  cache_dir_ = dir;
  disk_loaded_ = false;
}

void TlsLocator::load_disk_locked() {
  if (disk_loaded_) return;
  disk_loaded_ = true;
  if (cache_dir_.empty()) return;
  std::ifstream f(cache_dir_ + "/tls-locations");
  std::string line;
  while (std::getline(f, line)) {
    if (auto e = parse_cache_line(line)) mem_.emplace(e->first, std::move(e->second));  // first line wins
  }
}

void TlsLocator::append_disk_locked(const FileIdentity& id, const TlsLocation& loc) {
  if (cache_dir_.empty()) return;
  std::ofstream f(cache_dir_ + "/tls-locations", std::ios::app);
  f << format_cache_line(id, loc) << '\n';
}

namespace {
struct Mapping {
  void* p = MAP_FAILED;
  size_t n = 0;
  ~Mapping() { if (p != MAP_FAILED) munmap(p, n); }
};

// Reading a mapped file that shrinks under the mapping raises SIGBUS. The files read here are
// other users' (a process's own executable and libraries), so the fault is caught: while this
// thread reads [lo, hi), a SIGBUS at an address inside it jumps back to the scan's start;
// any other SIGBUS gets the default action.
thread_local sigjmp_buf* t_bus_jmp = nullptr;
thread_local const char* t_bus_lo = nullptr;
thread_local const char* t_bus_hi = nullptr;

void on_sigbus(int sig, siginfo_t* si, void*) {
  const char* a = static_cast<const char*>(si->si_addr);
  if (t_bus_jmp && a >= t_bus_lo && a < t_bus_hi) siglongjmp(*t_bus_jmp, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_bus_guard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, nullptr);
  });
}

// What the mapped image holds: a known BoringSSL build (table) or one found by its xrefs.
// Touches only the image and locals, so a jump out of it (SIGBUS) leaves no state half made.
TlsLocation scan_image(std::string_view image, bool* scanned, bool* has_ssl) {
  TlsLocation loc;
  Image im;
  if (!im.parse(image)) return loc;
  // Cheap test first: a BoringSSL ssl_lib.cc file name in read-only data. Most objects
  // (libc, libm, ...) stop here.
  bool has_ssl_lib = false;
  for (auto& s : im.segs)
    if (!(s.flags & (PF_X | PF_W)) && im.bytes(s).find(kSslLibSuffix) != std::string_view::npos) has_ssl_lib = true;
  if (!has_ssl_lib) return loc;
  *has_ssl = true;
  const std::string bid = elf_build_id(image);
  for (auto& k : known_boringssl_builds()) {
    if (bid != k.build_id || !k.ssl_write || !k.ssl_read) continue;
    loc.kind = TlsLocation::Kind::Found;
    loc.library = "boringssl";
    loc.method = "table";
    loc.build_id = bid;
    loc.syms.ssl_write = k.ssl_write;
    loc.syms.ssl_read = k.ssl_read;
    loc.syms.ssl_new = k.ssl_new;
    loc.syms.ssl_free = k.ssl_free;
  }
  if (loc.kind != TlsLocation::Kind::Found) {
    *scanned = true;
    loc = locate_boringssl_xref(image);
    if (loc.kind == TlsLocation::Kind::Unrecognised && loc.why.empty()) loc.why = "BoringSSL build not recognised";
  }
  return loc;
}
}  // namespace

TlsLocation TlsLocator::locate(const std::string& path) {
  auto f = ObjectFile::open_path(path, nullptr);
  if (!f) return {};
  return locate(*f);
}

TlsLocation TlsLocator::locate(const ObjectFile& f) {
  const struct stat& st = f.st();
  FileIdentity id{(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
                  (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  std::lock_guard lk(mu_);
  load_disk_locked();
  if (auto it = mem_.find(id); it != mem_.end()) {
    TlsLocation l = it->second;
    l.scan_ms = 0;
    if (l.method.rfind("cache:", 0) != 0) l.method = "cache:" + l.method;
    return l;
  }
  auto t0 = std::chrono::steady_clock::now();
  TlsLocation loc;
  // GnuTLS exports its API: same argument shape as SSL_write/SSL_read (session, buffer,
  // size; ssize_t result), and gnutls_deinit(session) ends a session as SSL_free does.
  if (auto g = resolve_symbols(f.fd(), {"gnutls_record_send", "gnutls_record_recv", "gnutls_deinit"})) {
    auto get = [&](const char* n) { auto i = g->find(n); return i == g->end() ? 0 : i->second; };
    loc.syms.ssl_write = get("gnutls_record_send");
    loc.syms.ssl_read = get("gnutls_record_recv");
    loc.syms.ssl_free = get("gnutls_deinit");
    if (loc.syms.usable()) {
      loc.kind = TlsLocation::Kind::Found;
      loc.library = "gnutls";
      loc.method = "symbols";
      mem_[id] = loc;  // cheap to redo: memory only
      return loc;
    }
    loc = {};
  }
  Mapping m;
  m.n = (size_t)st.st_size;
  if (m.n >= sizeof(Elf64_Ehdr)) m.p = mmap(nullptr, m.n, PROT_READ, MAP_PRIVATE, f.fd(), 0);
  if (m.p == MAP_FAILED) return {};
  std::string_view image((const char*)m.p, m.n);
  install_bus_guard();
  sigjmp_buf jb;
  bool scanned = false, has_ssl = false;
  if (sigsetjmp(jb, 1) == 0) {
    t_bus_jmp = &jb;
    t_bus_lo = image.data();
    t_bus_hi = image.data() + image.size();
    if (after_map_hook_) after_map_hook_(f.fd());
    loc = scan_image(image, &scanned, &has_ssl);
    t_bus_jmp = nullptr;
  } else {
    t_bus_jmp = nullptr;
    bus_faults_++;
    spdlog::warn("mapped object dev {} inode {} shrank while it was read (SIGBUS caught); its TLS stack is not known",
                 uint64_t(st.st_dev), uint64_t(st.st_ino));
    TlsLocation changed;
    changed.why = "the file changed while it was read";
    return changed;  // not cached: its size and mtime are no longer those of `id`
  }
  if (scanned) scans_++;
  if (!has_ssl) {  // most objects (libc, libm, ...): cheap to redo, kept in memory only
    mem_[id] = loc;
    return loc;
  }
  loc.scan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  mem_[id] = loc;
  append_disk_locked(id, loc);
  return loc;
}

}  // namespace ab::loader
