// tls_locator.h — find the TLS read/write entry points of a mapped object that does not export
// OpenSSL's SSL_* symbols: GnuTLS (libgnutls.so.30, by its own exported names) and BoringSSL
// linked into a stripped executable (Bun: Claude Code, opencode).
//
// The ladder for a stripped BoringSSL, cheapest first:
//   1. table: a built-in table of offsets keyed by GNU build id, for builds seen and verified;
//   2. xref:  BoringSSL's OPENSSL_PUT_ERROR passes __FILE__ and a reason code to
//      ERR_put_error. SSL_write is the one function of ssl/ssl_lib.cc that raises exactly
//      {SHOULD_NOT_HAVE_BEEN_CALLED, UNINITIALIZED, SSL_HANDSHAKE_FAILURE, BAD_LENGTH};
//      SSL_read raises only SHOULD_NOT_HAVE_BEEN_CALLED (its inlined SSL_peek) and calls
//      ssl_read_impl, which raises {UNINITIALIZED, SSL_HANDSHAKE_FAILURE}. Reason codes are
//      part of BoringSSL's ABI (never renumbered); line numbers and code layout are not used.
// A result (found or not) is cached in memory and on disk per (build id, file identity), so a
// 373 MB binary is scanned once per build, not at every first connect. Pure code apart from
// file reads: it runs on the attach worker's thread, never on the event loop.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loader/elf_symbols.h"

namespace ab::loader {

struct TlsLocation {
  enum class Kind {
    None,          // no TLS library this module knows of in the object
    Found,         // syms usable
    Unrecognised,  // a TLS library is linked in but its entry points were not found
  };
  Kind kind = Kind::None;
  TlsSymbols syms;
  std::string library;  // "boringssl", "gnutls"
  std::string method;   // "symbols", "table", "xref", "cache:<method>"
  std::string build_id; // GNU build id in hex, "" when the file has none
  std::string why;      // Unrecognised: what failed, for capture_blind
  double scan_ms = 0;   // time spent locating (0 for a cache hit)
};

// Identity of a file for the on-disk cache.
struct FileIdentity {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0;
  auto operator<=>(const FileIdentity&) const = default;
};

// GNU build id (hex) of an ELF image in memory; "" when absent or malformed.
std::string elf_build_id(std::string_view image);

// The xref method on an ELF image in memory (the whole file). Exposed for tests and the bench.
TlsLocation locate_boringssl_xref(std::string_view image);

// Built-in table entry for a build id, if any.
struct KnownBuild {
  const char* build_id;
  const char* what;  // product and version, for docs and logs
  uint64_t ssl_write, ssl_read, ssl_new, ssl_free;
};
const std::vector<KnownBuild>& known_boringssl_builds();

class TlsLocator {
 public:
  // cache_dir: where "tls-locations" is kept ("" = memory only).
  explicit TlsLocator(std::string cache_dir = "") : cache_dir_(std::move(cache_dir)) {}
  void set_cache_dir(const std::string& dir);
  // f: the object, opened safely (ObjectFile).
  TlsLocation locate(const ObjectFile& f);
  // The same for a path (tests, bench), opened as ObjectFile::open_path does.
  TlsLocation locate(const std::string& path);
  // counters for status/bench
  size_t scans() const { return scans_; }
  // Scans cut short because the file shrank under its mapping (SIGBUS, caught): a process's
  // owner truncating its own executable while it is read must not take the daemon down.
  size_t changed_while_read() const { return bus_faults_; }
  // Test-only: called with the object's fd once it is mapped, before it is read.
  void set_after_map_hook_for_test(std::function<void(int fd)> h) { after_map_hook_ = std::move(h); }

 private:
  void load_disk_locked();
  void append_disk_locked(const FileIdentity& id, const TlsLocation& loc);
  std::string cache_dir_;
  std::mutex mu_;
  bool disk_loaded_ = false;
  std::map<FileIdentity, TlsLocation> mem_;
  size_t scans_ = 0;
  size_t bus_faults_ = 0;
  std::function<void(int fd)> after_map_hook_;
};

// Serialises / parses one line of the on-disk cache (exposed for unit tests).
std::string format_cache_line(const FileIdentity& id, const TlsLocation& loc);
std::optional<std::pair<FileIdentity, TlsLocation>> parse_cache_line(const std::string& line);

}  // namespace ab::loader
