// go_symbols.h — find Go's crypto/tls entry points in a Go executable, stripped or not.
//
// A Go binary built with `-ldflags="-s -w"` has no .symtab, but the runtime's own function
// table (.gopclntab, the "pclntab") is always there: it maps every function's entry PC to its
// name. This module parses it (Go 1.17's format with magic 0xfffffffa when the build info says
// go1.17, and the 1.18+ formats 0xfffffff0 / 0xfffffff1), finds
//   crypto/tls.(*Conn).Write, crypto/tls.(*Conn).Read, crypto/tls.(*Conn).Close
// and disassembles them (capstone) to find
//   - the probe point of each entry: the first instruction after the goroutine stack check
//     (`cmp rsp|r12, [r14+0x10]; jbe`), because a stack growth re-runs the function from its
//     entry and an entry probe there would see one call twice (and take two credits);
//   - every RET instruction of Write and Read: Go functions are never probed with a
//     uretprobe (goroutine stacks move; the return trampoline corrupts them), so results are
//     read by uprobes on the RETs.
// Only amd64 with Go's register ABI (Go 1.17+) is supported: receiver in RAX, the []byte in
// RBX/RCX/RDI, results in RAX, the current goroutine (g) in R14.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loader/elf_symbols.h"

namespace ab::loader {

// One function of a pclntab: [entry, end) in virtual addresses.
struct GoFunc {
  std::string name;
  uint64_t entry = 0, end = 0;
};

struct PclntabInfo {
  uint32_t magic = 0;
  uint8_t ptr_size = 0;
  uint64_t nfunc = 0;
  uint64_t text_start = 0;
};

// Parses a pclntab image (the bytes of .gopclntab) and returns the functions whose name is in
// `wanted` (all functions when `wanted` is empty). `text_fallback` is used as the text start
// when the header's is 0 (position-independent builds fill it by a dynamic relocation).
// Returns false and sets *error on a bad or unsupported table; never reads outside [p, p+n).
bool parse_pclntab(const uint8_t* p, size_t n, uint64_t text_fallback,
                   const std::vector<std::string>& wanted, std::vector<GoFunc>* out,
                   PclntabInfo* info, std::string* error);

// Reads the Go version recorded in a .go.buildinfo image ("go1.19.8"), or "" if none.
// `read_vaddr` resolves the pointers of the pre-1.18 layout (may be empty: then "" for it).
std::string parse_go_buildinfo(const uint8_t* p, size_t n,
                               const std::function<std::string(uint64_t addr, uint64_t len)>* read_vaddr);

// Where to probe one function.
struct GoProbeSites {
  uint64_t entry_vaddr = 0;   // function entry
  uint64_t probe_vaddr = 0;   // after the stack check (== entry_vaddr if it has none)
  std::vector<uint64_t> rets; // RET instructions (virtual addresses)
};

// Disassembles code (at virtual address `vaddr`) and fills sites. Returns false when the
// bytes do not decode to a function (then *error says why).
bool find_go_probe_sites(const uint8_t* code, size_t n, uint64_t vaddr, GoProbeSites* out,
                         std::string* error);

// File offsets (what uprobes attach to) of the Go crypto/tls probe points of one file.
struct GoTlsSymbols {
  bool is_go = false;            // the file is a Go executable
  std::string go_version;        // from .go.buildinfo, "" if unknown
  uint64_t write = 0;            // (*Conn).Write probe point (after its stack check)
  std::vector<uint64_t> write_rets;
  uint64_t read = 0;             // (*Conn).Read probe point
  std::vector<uint64_t> read_rets;
  uint64_t close = 0;            // (*Conn).Close probe point; 0 if not linked in
  // internal/poll.(*FD) Write / Read / Close: plain sockets (endpoints with `tls: false`)
  uint64_t fd_write = 0;
  std::vector<uint64_t> fd_write_rets;
  uint64_t fd_read = 0;
  std::vector<uint64_t> fd_read_rets;
  uint64_t fd_close = 0;
  std::string plain_problem;     // why its plain sockets cannot be read ("" if plain_usable)
  std::string problem;           // why a Go file cannot be watched ("" if usable)
  double locate_ms = 0;          // time taken to locate (first look at the file)
  bool usable() const { return is_go && write && read && !write_rets.empty() && !read_rets.empty(); }
  bool plain_usable() const {
    return is_go && fd_write && fd_read && !fd_write_rets.empty() && !fd_read_rets.empty();
  }
};

// Locates the probe points in the ELF file open at fd. std::nullopt: not a readable ELF file.
std::optional<GoTlsSymbols> locate_go_tls(int fd);
// The same for a path, opened as ObjectFile::open_path does.
std::optional<GoTlsSymbols> locate_go_tls(const std::string& path);

// Thread-safe cache of locate_go_tls per file identity (dev, inode, mtime).
class GoTlsCache {
 public:
  // name: the object as the process maps it (for logs).
  std::optional<GoTlsSymbols> get(const ObjectFile& f, const std::string& name);
  size_t size() const { return cache_.size(); }

 private:
  PerFileCache<GoTlsSymbols> cache_;
};

}  // namespace ab::loader
