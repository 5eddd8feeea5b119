// tls_attach.h — attach the TLS programs to ONE process: find every mapped object that
// carries OpenSSL (libssl.so.*, or an executable such as /usr/bin/node with OpenSSL inside),
// resolve offsets once per file, and create pid-filtered uprobe links. Attaching and
// detaching are slow enough (detach of a perf uprobe ~50-80 ms here) that they run on
// AttachWorker's thread, never on the event loop.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loader/bpf_runtime.h"
#include "loader/elf_symbols.h"
#include "loader/go_symbols.h"
#include "loader/plain_attach.h"
#include "loader/tls_locator.h"

struct bpf_link;

namespace ab::loader {

// Links of one watched process. Closing them (detach) is the worker's job.
struct ProcessLinks {
  int pid = 0;
  std::vector<int> multi_link_fds;   // uprobe_multi links
  std::vector<bpf_link*> perf_links; // fallback
  std::vector<std::string> objects;  // files attached to
  std::vector<std::string> stacks;   // per object: how its entry points were found ("openssl:symbols", "boringssl:table", ...)
  std::string blind;                 // a TLS library was seen whose entry points were not found: why
  bool plain = false;                // plain-HTTP probes attached (plain_attach.h)
  std::string plain_problem;         // asked for them, none attached: why
  size_t count() const { return multi_link_fds.size() + perf_links.size(); }
};

// One executable file mapping of /proc/<pid>/maps: its path as the process sees it (for logs
// and events only: the daemon never opens it by this name) and the address range that names
// it under /proc/<pid>/map_files/.
struct MappedObject {
  std::string path;
  std::string range;  // "start-end", lower-case hex, as in maps
};

// The mapped files of /proc/<pid>/maps that are executable and could carry OpenSSL, once per
// path (the first executable mapping of each).
std::vector<MappedObject> mapped_executable_files(int pid, const std::string& proc_root = "/proc");
// Parses one line of /proc/<pid>/maps; nullopt unless it is an executable mapping of a file.
std::optional<MappedObject> parse_maps_line(const std::string& line);

// Every attach request ends within this bound: objects left when it is reached are not looked
// at, the attach fails (-ETIMEDOUT) and is counted, so one process cannot hold up the others.
constexpr int64_t kAttachDeadlineMs = 3000;

class TlsAttacher {
 public:
  explicit TlsAttacher(BpfRuntime& rt) : rt_(rt) {}
  // Attaches to every OpenSSL-carrying object mapped by pid. Returns 0 on success with links
  // filled, -ENOENT if the process maps no OpenSSL (nothing attached), other negative errno
  // on failure (partially attached links are detached before returning). `plain`: the plain-
  // HTTP probes too (the process connected to a `tls: false` endpoint); a process with them
  // and no TLS library is attached (0).
  int attach(int pid, ProcessLinks* out, std::string* error, int64_t deadline_ms = kAttachDeadlineMs,
             bool plain = false);
  // Adds the plain-HTTP probes to a process's links (its C library, its Go internal/poll).
  // 0 with out->plain set, -ENOENT when it maps neither (out->plain_problem says why), or
  // another negative errno (the links it added are closed).
  int attach_plain(int pid, ProcessLinks* out, std::string* error);
  // Closes every link of the process.
  void detach(ProcessLinks& links);
  // Closes every link of n processes at once (a pool of threads: the kernel's waits overlap).
  void detach_all(ProcessLinks* sets, size_t n);
  static constexpr size_t kMaxCloserThreads = 256;
  TlsSymbolCache& symbols() { return symbols_; }
  GoTlsCache& go_symbols() { return go_symbols_; }
  TlsLocator& locator() { return locator_; }

 private:
  int attach_object(int pid, const ObjectFile& f, const std::string& path, const TlsSymbols& syms,
                    ProcessLinks* out, std::string* error);
  int attach_go(int pid, const ObjectFile& f, const std::string& path, ProcessLinks* out,
                std::string* problem, std::string* error);
  BpfRuntime& rt_;
  TlsSymbolCache symbols_;
  GoTlsCache go_symbols_;
  TlsLocator locator_;  // objects without exported SSL_* (GnuTLS, stripped BoringSSL)
  LibcIoCache libc_io_;
};

// One thread doing attach/detach requests in order. Completed attaches are handed back
// through take_completed(); the event loop polls notify_fd() (an eventfd) to know when.
class AttachWorker {
 public:
  struct Result {
    int pid = 0;
    int err = 0;  // 0, -ENOENT (no OpenSSL mapped), or another negative errno
    std::string error;
    std::vector<std::string> objects;
    double duration_ms = 0;
    std::vector<std::string> stacks;  // per object, as ProcessLinks::stacks
    std::string blind;                // -ENOENT: a TLS library seen but not readable, why
    bool plain = false;               // the plain-HTTP probes are attached
    bool plain_added = false;         // only the plain-HTTP probes were added (attached already)
    std::string plain_problem;        // they were asked for and are not: why
  };
  explicit AttachWorker(BpfRuntime& rt);
  ~AttachWorker();  // detaches everything still attached, then joins
  AttachWorker(const AttachWorker&) = delete;
  AttachWorker& operator=(const AttachWorker&) = delete;

  // plain: with the plain-HTTP probes; for a process attached already, adds them (a Result
  // with plain set, or plain_problem, reports it).
  void request_attach(int pid, bool plain = false);
  // Where the TLS locator keeps its results across restarts (the daemon's state dir).
  void set_locator_cache_dir(const std::string& dir) { attacher_.locator().set_cache_dir(dir); }
  void request_detach(int pid);
  int notify_fd() const { return efd_; }
  std::vector<Result> take_completed();  // drains the eventfd too
  size_t attached_processes() const;
  size_t attached_links() const;
  bool is_attached(int pid) const;

 private:
  void run();
  void run_detach();
  BpfRuntime& rt_;
  TlsAttacher attacher_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Request {
    bool attach = true;
    int pid = 0;
    bool plain = false;
  };
  std::deque<Request> queue_;
  std::vector<Result> done_;
  std::vector<ProcessLinks> attached_;
  std::deque<ProcessLinks> detach_queue_;  // handed to detach_thread_
  std::condition_variable detach_cv_;
  int attaching_pid_ = 0;
  bool stop_ = false;
  int efd_ = -1;
  std::thread thread_;
  std::thread detach_thread_;
};

}  // namespace ab::loader
