// tls_locator_bench — what finding BoringSSL's SSL_write/SSL_read in a stripped Bun binary
// costs the attach worker (issue 12): the xref scan of the whole file (the first time a build
// is seen), a lookup in a fresh daemon's on-disk cache (the next daemon start), and a lookup
// in memory (every later process of the same file). Page cache warm (the agent being attached
// to is running, so its file is mapped anyway).
//
//   AB_BUN_BINARIES=path[:path...]  binaries to measure; default: the pinned Claude Code and
//                                   opencode installed by tests/e2e/agents (npm ci there)
//
//   BM_XrefScan/<i>        locate_boringssl_xref on the mapped file (no table, no cache)
//   BM_LocateCold/<i>      TlsLocator::locate with an empty cache dir: build-id table or
//                          scan, as the daemon does at a first connect (table hit when known)
//   BM_LocateDiskCache/<i> a new TlsLocator reading the cache file written by a scan
//   BM_LocateMemory/<i>    the same locator again (stat + map lookup)
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "loader/tls_locator.h"

using namespace ab::loader;

namespace {

std::vector<std::string> binaries() {
  std::vector<std::string> out;
  const char* env = getenv("AB_BUN_BINARIES");
  std::string list = env ? env
                         : std::string(AB_SOURCE_DIR) +
                               "/tests/e2e/agents/node_modules/@anthropic-ai/claude-code-linux-x64/claude:" +
                               AB_SOURCE_DIR + "/tests/e2e/agents/node_modules/opencode-linux-x64/bin/opencode";
  size_t p = 0;
  while (p <= list.size()) {
    size_t q = list.find(':', p);
    if (q == std::string::npos) q = list.size();
    std::string f = list.substr(p, q - p);
    if (!f.empty() && access(f.c_str(), R_OK) == 0) out.push_back(f);
    p = q + 1;
  }
  return out;
}

std::string tmpdir() {
  char t[] = "/tmp/ab-locbench-XXXXXX";
  return mkdtemp(t) ? t : "/tmp";
}

void report(benchmark::State& st, const TlsLocation& l) {
  st.SetLabel(l.method + (l.kind == TlsLocation::Kind::Found ? " found" : " NOT FOUND: " + l.why));
}

void BM_XrefScan(benchmark::State& st, std::string path) {
  int fd = open(path.c_str(), O_RDONLY);
  struct stat sb {};
  fstat(fd, &sb);
  void* m = mmap(nullptr, sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  std::string_view img((const char*)m, sb.st_size);
  TlsLocation l;
  for (auto _ : st) {
    l = locate_boringssl_xref(img);
    benchmark::DoNotOptimize(l);
  }
  char b[96];
  snprintf(b, sizeof b, " write=0x%llx read=0x%llx", (unsigned long long)l.syms.ssl_write,
           (unsigned long long)l.syms.ssl_read);
  st.SetLabel(std::string(l.kind == TlsLocation::Kind::Found ? "found" : "NOT FOUND " + l.why) + b);
  munmap(m, sb.st_size);
}

void BM_LocateCold(benchmark::State& st, std::string path) {
  TlsLocation l;
  for (auto _ : st) {
    std::string d = tmpdir();
    TlsLocator loc(d);
    l = loc.locate(path);
    st.PauseTiming();
    std::filesystem::remove_all(d);
    st.ResumeTiming();
  }
  report(st, l);
}

void BM_LocateDiskCache(benchmark::State& st, std::string path) {
  std::string d = tmpdir();
  { TlsLocator warm(d); warm.locate(path); }
  TlsLocation l;
  for (auto _ : st) {
    TlsLocator loc(d);
    l = loc.locate(path);
  }
  report(st, l);
  std::filesystem::remove_all(d);
}

void BM_LocateMemory(benchmark::State& st, std::string path) {
  TlsLocator loc;
  loc.locate(path);
  TlsLocation l;
  for (auto _ : st) l = loc.locate(path);
  report(st, l);
}

int reg = [] {
  auto bins = binaries();
  for (size_t i = 0; i < bins.size(); i++) {
    std::string n = std::filesystem::path(bins[i]).filename().string();
    benchmark::RegisterBenchmark(("BM_XrefScan/" + n).c_str(), BM_XrefScan, bins[i])->Unit(benchmark::kMillisecond)->Iterations(5);
    benchmark::RegisterBenchmark(("BM_LocateCold/" + n).c_str(), BM_LocateCold, bins[i])->Unit(benchmark::kMillisecond)->Iterations(5);
    benchmark::RegisterBenchmark(("BM_LocateDiskCache/" + n).c_str(), BM_LocateDiskCache, bins[i])->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_LocateMemory/" + n).c_str(), BM_LocateMemory, bins[i])->Unit(benchmark::kMicrosecond);
  }
  if (bins.empty()) fprintf(stderr, "tls_locator_bench: no binary found (npm ci in tests/e2e/agents, or set AB_BUN_BINARIES)\n");
  return 0;
}();

}  // namespace
