// plain_attach.h — attach the plain-HTTP programs (tls.bpf.c, "Plain HTTP") to ONE process
// that connected to an endpoint with `tls: false` (Ollama, vLLM, llama.cpp, LM Studio, a
// LiteLLM proxy). Two ways a process moves socket bytes, both hooked per process, never
// host-wide (a host-wide read/write program costs every process's I/O 9-13 %, measured):
//   - the C library's write/send/sendto, read/recv/recvfrom and close (Python, curl, Node's
//     libuv): entry + return probes; uretprobes are safe on C code;
//   - Go's internal/poll.(*FD) Write / Read / Close (Go makes raw syscalls and never calls
//     the C library's), found through .gopclntab as crypto/tls is (go_symbols.h).
// The programs read only sockets the connect tracepoint put in plain_socks; every other
// read/write of the process costs a uprobe hit and one map look-up.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "loader/bpf_runtime.h"
#include "loader/elf_symbols.h"
#include "loader/go_symbols.h"

namespace ab::loader {

struct ProcessLinks;  // tls_attach.h

// File offsets of the C library's socket I/O functions (0: not defined by the file).
struct LibcIoSymbols {
  uint64_t write = 0, send = 0, sendto = 0;
  uint64_t read = 0, recv = 0, recvfrom = 0;
  uint64_t close = 0;
  bool usable() const { return (write || send || sendto) && (read || recv || recvfrom); }
};

// Whether a mapped object is a C library by its file name ("libc.so.6", "libc-2.31.so",
// musl's "ld-musl-x86_64.so.1", which is musl's libc too).
bool is_c_library_path(const std::string& path);

// The offsets in the ELF file open at fd; nullopt if it is not readable ELF.
std::optional<LibcIoSymbols> locate_libc_io(int fd);

class LibcIoCache {
 public:
  std::optional<LibcIoSymbols> get(const ObjectFile& f);

 private:
  PerFileCache<LibcIoSymbols> cache_;
};

// The C library's programs on the object f (mapped by pid as `path`). 0 or negative errno.
int attach_plain_libc(BpfRuntime& rt, int pid, const ObjectFile& f, const std::string& path,
                      const LibcIoSymbols& syms, ProcessLinks* out, std::string* error);
// Go's internal/poll.(*FD) programs on a Go executable. 0 or negative errno.
int attach_plain_go(BpfRuntime& rt, int pid, const std::string& target, const std::string& path,
                    const GoTlsSymbols& syms, ProcessLinks* out, std::string* error);

}  // namespace ab::loader
