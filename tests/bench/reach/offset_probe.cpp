// offset_probe.cpp — the empty-uprobe baseline of run_reach_bench.py: do-nothing programs
// (tests/bench/capture/empty_uprobe.bpf.c) attached, for one pid, at exactly the places where
// agentbraked attaches its TLS programs in a file, found by the daemon's own locators
// (libab_loader.a): OpenSSL and GnuTLS by their symbols, BoringSSL in a stripped Bun binary by
// the build-id table / xref scan, Go crypto/tls by .gopclntab (entries and RET instructions).
//
//   offset_probe sites PATH openssl|gnutls|boringssl|go
//       prints {"entry":[offsets],"ret":[offsets]} (file offsets; "ret": uretprobes)
//   offset_probe empty OBJ PID PATH openssl|gnutls|boringssl|go
//       attaches the empty programs there (uprobe_multi, one link per probe like the daemon),
//       prints {"attach_ms":..,"probes":..}, waits for a line on stdin, detaches, prints
//       {"detach_ms":..}.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "loader/elf_symbols.h"
#include "loader/go_symbols.h"
#include "loader/tls_locator.h"

namespace {

struct Sites {
  std::vector<uint64_t> entry, ret;
};

bool sites_for(const std::string& path, const std::string& kind, Sites* s, std::string* err) {
  auto add = [](std::vector<uint64_t>& v, uint64_t off) {
    if (off) v.push_back(off);
  };
  if (kind == "go") {
    auto g = ab::loader::locate_go_tls(path);
    if (!g || !g->usable()) {
      *err = g ? g->problem : "not ELF";
      return false;
    }
    add(s->entry, g->write);
    add(s->entry, g->read);
    add(s->entry, g->close);
    for (auto r : g->write_rets) add(s->entry, r);
    for (auto r : g->read_rets) add(s->entry, r);
    return true;
  }
  ab::loader::TlsSymbols t;
  if (kind == "openssl") {
    auto m = ab::loader::resolve_symbols(path, {"SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex", "SSL_new", "SSL_free"});
    if (!m || m->empty()) {
      *err = "no SSL symbols";
      return false;
    }
    auto get = [&](const char* n) { auto it = m->find(n); return it == m->end() ? uint64_t{0} : it->second; };
    t.ssl_write = get("SSL_write"), t.ssl_write_ex = get("SSL_write_ex"), t.ssl_read = get("SSL_read");
    t.ssl_read_ex = get("SSL_read_ex"), t.ssl_new = get("SSL_new"), t.ssl_free = get("SSL_free");
  } else {
    ab::loader::TlsLocator loc;
    auto l = loc.locate(path);
    if (l.kind != ab::loader::TlsLocation::Kind::Found) {
      *err = "not found: " + l.why;
      return false;
    }
    t = l.syms;
  }
  // what TlsAttacher::attach_object attaches: entry+return of the write/read functions, the
  // return of SSL_new, the entry of SSL_free
  for (auto off : {t.ssl_write, t.ssl_write_ex, t.ssl_read, t.ssl_read_ex}) {
    add(s->entry, off);
    add(s->ret, off);
  }
  add(s->ret, t.ssl_new);
  add(s->entry, t.ssl_free);
  return true;
}

void print_list(const std::vector<uint64_t>& v) {
  std::printf("[");
  for (size_t i = 0; i < v.size(); i++) std::printf("%s%llu", i ? "," : "", (unsigned long long)v[i]);
  std::printf("]");
}

struct LinkCreateUprobeMulti {
  uint32_t prog_fd, target_fd, attach_type, flags;
  uint64_t path, offsets, ref_ctr_offsets, cookies;
  uint32_t cnt, multi_flags, pid, unused;
  uint8_t zero[64];
};
constexpr int kCmdLinkCreate = 28;          // BPF_LINK_CREATE
constexpr uint32_t kTraceUprobeMulti = 48;  // BPF_TRACE_UPROBE_MULTI
constexpr uint32_t kMultiReturn = 1;        // BPF_F_UPROBE_MULTI_RETURN

int link_uprobe_multi(int prog_fd, const std::string& path, uint64_t off, int pid, bool ret) {
  LinkCreateUprobeMulti a;
  std::memset(&a, 0, sizeof a);
  a.prog_fd = static_cast<uint32_t>(prog_fd);
  a.attach_type = kTraceUprobeMulti;
  a.path = reinterpret_cast<uint64_t>(path.c_str());
  a.offsets = reinterpret_cast<uint64_t>(&off);
  a.cnt = 1;
  a.multi_flags = ret ? kMultiReturn : 0;
  a.pid = static_cast<uint32_t>(pid);
  long fd = syscall(__NR_bpf, kCmdLinkCreate, &a, sizeof a);
  return fd < 0 ? -errno : static_cast<int>(fd);
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  std::string err;
  Sites s;
  if (cmd == "sites" && argc == 4) {
    if (!sites_for(argv[2], argv[3], &s, &err)) {
      std::fprintf(stderr, "%s: %s\n", argv[2], err.c_str());
      return 1;
    }
    std::printf("{\"entry\":");
    print_list(s.entry);
    std::printf(",\"ret\":");
    print_list(s.ret);
    std::printf("}\n");
    return 0;
  }
  if (cmd != "empty" || argc != 6) {
    std::fprintf(stderr, "usage: offset_probe sites PATH KIND | empty OBJ PID PATH KIND\n");
    return 2;
  }
  const std::string obj_path = argv[2], path = argv[4];
  const int pid = std::atoi(argv[3]);
  if (!sites_for(path, argv[5], &s, &err)) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), err.c_str());
    return 1;
  }
  bpf_object* obj = bpf_object__open_file(obj_path.c_str(), nullptr);
  if (!obj) {
    std::perror("bpf_object__open_file");
    return 1;
  }
  bpf_program* entry = bpf_object__find_program_by_name(obj, "empty_entry");
  bpf_program* ret = bpf_object__find_program_by_name(obj, "empty_return");
  bpf_program__set_expected_attach_type(entry, static_cast<bpf_attach_type>(kTraceUprobeMulti));
  bpf_program__set_expected_attach_type(ret, static_cast<bpf_attach_type>(kTraceUprobeMulti));
  if (int e = bpf_object__load(obj)) {
    std::fprintf(stderr, "load %s: %s\n", obj_path.c_str(), std::strerror(-e));
    return 1;
  }
  std::vector<int> fds;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 2; r++) {
    for (uint64_t off : r ? s.ret : s.entry) {
      int fd = link_uprobe_multi(bpf_program__fd(r ? ret : entry), path, off, pid, r == 1);
      if (fd < 0) {
        std::fprintf(stderr, "uprobe_multi at %#llx: %s\n", (unsigned long long)off, std::strerror(-fd));
        return 1;
      }
      fds.push_back(fd);
    }
  }
  double attach_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"attach_ms\":%.3f,\"probes\":%zu}\n", attach_ms, fds.size());
  std::fflush(stdout);
  std::string line;
  std::getline(std::cin, line);
  t0 = std::chrono::steady_clock::now();
  for (int fd : fds) close(fd);
  std::printf("{\"detach_ms\":%.3f}\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  bpf_object__close(obj);
  return 0;
}
