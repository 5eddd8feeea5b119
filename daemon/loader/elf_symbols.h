// elf_symbols.h — resolve function symbols to file offsets (what uprobes attach to), once per
// file: attaching by name to /usr/bin/node (99 MB) re-reads the ELF each time (~100 ms).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace ab::loader {

struct FileKey {
  uint64_t dev = 0, ino = 0;
  int64_t mtime_ns = 0;
  auto operator<=>(const FileKey&) const = default;
};

FileKey file_key(const struct stat& st);

// A file the daemon (root) reads for another process, opened so that whoever controls its
// path can neither block nor redirect the daemon: the name is resolved with O_PATH (no open
// of a FIFO, device or pty happens), the inode must be a regular file on a filesystem that
// is not FUSE (a user-space server could stall every read), and only then is it opened
// O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC through the O_PATH descriptor. Everything after that
// (ELF reads, mmap, uprobe attach through fd_path()) names this inode, never the path again.
class ObjectFile {
 public:
  ObjectFile() = default;
  ObjectFile(ObjectFile&& o) noexcept : fd_(o.fd_), st_(o.st_) { o.fd_ = -1; }
  ObjectFile& operator=(ObjectFile&& o) noexcept;
  ObjectFile(const ObjectFile&) = delete;
  ObjectFile& operator=(const ObjectFile&) = delete;
  ~ObjectFile();

  // The object a process has mapped at `range` ("start-end" as in /proc/PID/maps), through
  // /proc/PID/map_files/<range>: the inode really mapped, whatever is at its path now.
  static std::optional<ObjectFile> open_mapped(int pid, const std::string& range, std::string* why,
                                               const std::string& proc_root = "/proc");
  // Any path (tests, tools, the daemon's own libc): the same checks.
  static std::optional<ObjectFile> open_path(const std::string& path, std::string* why);

  int fd() const { return fd_; }
  const struct stat& st() const { return st_; }
  FileKey key() const { return file_key(st_); }
  // A path naming this same inode for APIs that take a path (uprobe attach: the kernel
  // resolves it in the daemon's own fd table), valid while this object lives.
  std::string fd_path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
  struct stat st_ {};
};

// A thread-safe memo of what was read from a file, per file identity: a file mapped by many
// processes is read once. `compute` runs outside the lock.
template <class T>
class PerFileCache {
 public:
  template <class Compute>
  std::optional<T> get(const FileKey& k, Compute&& compute) {
    {
      std::lock_guard lk(mu_);
      if (auto it = cache_.find(k); it != cache_.end()) return it->second;
    }
    std::optional<T> r = compute();
    std::lock_guard lk(mu_);
    cache_[k] = r;
    return r;
  }
  size_t size() const {
    std::lock_guard lk(mu_);
    return cache_.size();
  }

 private:
  mutable std::mutex mu_;
  std::map<FileKey, std::optional<T>> cache_;
};

// Offsets of the OpenSSL functions agentbrake hooks; 0 = the file does not define it.
struct TlsSymbols {
  uint64_t ssl_write = 0, ssl_write_ex = 0, ssl_read = 0, ssl_read_ex = 0;
  uint64_t ssl_new = 0, ssl_free = 0;
  bool usable() const { return (ssl_write || ssl_write_ex) && (ssl_read || ssl_read_ex); }
};

// Returns the file offsets of `names` defined (not imported) in the ELF file open at `fd`;
// missing names are absent from the map. Returns std::nullopt if the file is not readable ELF.
std::optional<std::map<std::string, uint64_t>> resolve_symbols(int fd, const std::vector<std::string>& names);
// The same for a path, opened as ObjectFile::open_path does.
std::optional<std::map<std::string, uint64_t>> resolve_symbols(const std::string& path,
                                                               const std::vector<std::string>& names);

// Thread-safe cache of TlsSymbols per file identity (dev, inode, mtime).
class TlsSymbolCache {
 public:
  // Returns std::nullopt if the file cannot be read or is not ELF.
  std::optional<TlsSymbols> get(const ObjectFile& f);
  size_t size() const { return cache_.size(); }

 private:
  PerFileCache<TlsSymbols> cache_;
};

}  // namespace ab::loader
