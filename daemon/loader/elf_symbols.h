// elf_symbols.h — resolve function symbols to file offsets (what uprobes attach to), once per
// file: attaching by name to /usr/bin/node (99 MB) re-reads the ELF each time (~100 ms).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ab::loader {

struct FileKey {
  uint64_t dev = 0, ino = 0;
  int64_t mtime_ns = 0;
  auto operator<=>(const FileKey&) const = default;
};

// The identity of the file at `path`; nullopt when it cannot be stat'ed.
std::optional<FileKey> file_key(const std::string& path);

// A thread-safe memo of what was read from a file, per file identity: a file mapped by many
// processes is read once. `compute` runs outside the lock; a file that cannot be stat'ed is
// not cached (nullopt).
template <class T>
class PerFileCache {
 public:
  template <class Compute>
  std::optional<T> get(const std::string& path, Compute&& compute) {
    auto key = file_key(path);
    if (!key) return std::nullopt;
    {
      std::lock_guard lk(mu_);
      if (auto it = cache_.find(*key); it != cache_.end()) return it->second;
    }
    std::optional<T> r = compute();
    std::lock_guard lk(mu_);
    cache_[*key] = r;
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

// Returns the file offsets of `names` defined (not imported) in the ELF file at `path`;
// missing names are absent from the map. Returns std::nullopt if the file is not readable ELF.
std::optional<std::map<std::string, uint64_t>> resolve_symbols(const std::string& path,
                                                               const std::vector<std::string>& names);

// Thread-safe cache of TlsSymbols per file identity (dev, inode, mtime).
class TlsSymbolCache {
 public:
  // Returns std::nullopt if the file cannot be read or is not ELF.
  std::optional<TlsSymbols> get(const std::string& path);
  size_t size() const { return cache_.size(); }

 private:
  PerFileCache<TlsSymbols> cache_;
};

}  // namespace ab::loader
