// probe_tool.cpp — the BPF side of the capture benchmark (run_capture_bench.py builds it
// against libab_loader.a of a build directory).
//
//   probe_tool empty OBJ PID LIB multi|classic entry|entryret
//       Attaches the do-nothing programs of empty_uprobe.bpf.o (OBJ) to SSL_write, SSL_read,
//       SSL_write_ex and SSL_read_ex of LIB for PID only (entry only, or entry + return),
//       prints {"attach_ms":..,"links":..}, waits for a line (or EOF) on stdin, detaches and
//       prints {"detach_ms":..}. The baseline beside the daemon's real programs.
//
//   probe_tool attach PID[,PID...]
//       Loads the daemon's programs (ab::loader::BpfRuntime, capture holds off, own pin dir)
//       and times TlsAttacher::attach, then TlsAttacher::detach, of each process in turn; then
//       the same detaches done concurrently (the links of one process by one thread each; all
//       processes at once); prints one JSON line with every duration. Run it with no daemon.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loader/bpf_runtime.h"
#include "loader/elf_symbols.h"
#include "loader/tls_attach.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The link_create part of the kernel's union bpf_attr for BPF_TRACE_UPROBE_MULTI (uapi
// linux/bpf.h, kernel >= 6.6); libbpf 1.1.2 predates it. Zero-padded to the full attr size.
struct LinkCreateUprobeMulti {
  uint32_t prog_fd, target_fd, attach_type, flags;
  uint64_t path, offsets, ref_ctr_offsets, cookies;
  uint32_t cnt, multi_flags, pid, unused;
  uint8_t zero[64];
};
constexpr int kCmdLinkCreate = 28;         // BPF_LINK_CREATE
constexpr uint32_t kTraceUprobeMulti = 48;  // BPF_TRACE_UPROBE_MULTI
constexpr uint32_t kMultiReturn = 1;        // BPF_F_UPROBE_MULTI_RETURN

int link_uprobe_multi(int prog_fd, const std::string& path, const std::vector<uint64_t>& offs, int pid,
                      bool ret) {
  LinkCreateUprobeMulti a;
  std::memset(&a, 0, sizeof a);
  a.prog_fd = static_cast<uint32_t>(prog_fd);
  a.attach_type = kTraceUprobeMulti;
  a.path = reinterpret_cast<uint64_t>(path.c_str());
  a.offsets = reinterpret_cast<uint64_t>(offs.data());
  a.cnt = static_cast<uint32_t>(offs.size());
  a.multi_flags = ret ? kMultiReturn : 0;
  a.pid = static_cast<uint32_t>(pid);
  long fd = syscall(__NR_bpf, kCmdLinkCreate, &a, sizeof a);
  return fd < 0 ? -errno : static_cast<int>(fd);
}

int cmd_empty(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: probe_tool empty OBJ PID LIB multi|classic entry|entryret\n");
    return 2;
  }
  const std::string obj_path = argv[2], lib = argv[4], kind = argv[5], which = argv[6];
  const int pid = std::atoi(argv[3]);
  const bool multi = kind == "multi", with_ret = which == "entryret";
  auto syms = ab::loader::resolve_symbols(lib, {"SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"});
  if (!syms || syms->empty()) {
    std::fprintf(stderr, "no SSL symbols in %s\n", lib.c_str());
    return 1;
  }
  std::vector<uint64_t> offs;
  for (auto& [name, off] : *syms) offs.push_back(off);

  bpf_object* obj = bpf_object__open_file(obj_path.c_str(), nullptr);
  if (!obj) {
    std::perror("bpf_object__open_file");
    return 1;
  }
  bpf_program* entry = bpf_object__find_program_by_name(obj, "empty_entry");
  bpf_program* ret = bpf_object__find_program_by_name(obj, "empty_return");
  if (multi) {
    bpf_program__set_expected_attach_type(entry, static_cast<bpf_attach_type>(kTraceUprobeMulti));
    bpf_program__set_expected_attach_type(ret, static_cast<bpf_attach_type>(kTraceUprobeMulti));
  }
  if (int err = bpf_object__load(obj)) {
    std::fprintf(stderr, "load %s: %s\n", obj_path.c_str(), std::strerror(-err));
    return 1;
  }
  std::vector<int> fds;
  std::vector<bpf_link*> links;
  auto t0 = Clock::now();
  for (int r = 0; r < (with_ret ? 2 : 1); r++) {
    bpf_program* p = r ? ret : entry;
    if (multi) {
      int fd = link_uprobe_multi(bpf_program__fd(p), lib, offs, pid, r == 1);
      if (fd < 0) {
        std::fprintf(stderr, "uprobe_multi: %s\n", std::strerror(-fd));
        return 1;
      }
      fds.push_back(fd);
    } else {
      for (uint64_t off : offs) {
        LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = r == 1);
        bpf_link* l = bpf_program__attach_uprobe_opts(p, pid, lib.c_str(), off, &uo);
        if (!l) {
          std::fprintf(stderr, "uprobe: %s\n", std::strerror(errno));
          return 1;
        }
        links.push_back(l);
      }
    }
  }
  double attach_ms = ms_since(t0);
  size_t probes = offs.size() * (with_ret ? 2 : 1);
  std::printf("{\"attach_ms\":%.3f,\"probes\":%zu}\n", attach_ms, probes);
  std::fflush(stdout);
  std::string line;
  std::getline(std::cin, line);
  t0 = Clock::now();
  for (int fd : fds) close(fd);
  for (auto* l : links) bpf_link__destroy(l);
  std::printf("{\"detach_ms\":%.3f}\n", ms_since(t0));
  bpf_object__close(obj);
  return 0;
}

int cmd_attach(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: probe_tool attach PID[,PID...]\n");
    return 2;
  }
  std::vector<int> pids;
  std::stringstream ss(argv[2]);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) pids.push_back(std::stoi(t));
  std::string what;
  if (ab::loader::ensure_kernel_filesystems(&what) != 0) {
    std::fprintf(stderr, "kernel filesystems: %s\n", what.c_str());
    return 1;
  }
  ab::loader::RuntimeOptions ro;
  ro.pin_dir = "/sys/fs/bpf/agentbrake-bench-" + std::to_string(getpid());
  ro.daemon_tgid = static_cast<uint32_t>(getpid());
  ro.capture_holds = false;
  std::string err;
  int rc = 0;
  {
    auto rt = ab::loader::BpfRuntime::create(ro, &err);
    if (!rt) {
      std::fprintf(stderr, "BpfRuntime: %s\n", err.c_str());
      std::filesystem::remove_all(ro.pin_dir);
      return 1;
    }
    ab::loader::TlsAttacher att(*rt);
    std::vector<ab::loader::ProcessLinks> links(pids.size());
    std::vector<double> attach_ms, detach_ms;
    size_t nlinks = 0;
    for (size_t i = 0; i < pids.size(); i++) {
      auto t0 = Clock::now();
      int r = att.attach(pids[i], &links[i], &err);
      attach_ms.push_back(ms_since(t0));
      if (r != 0) {
        std::fprintf(stderr, "attach %d: %s\n", pids[i], err.c_str());
        rc = 1;
      }
      nlinks += links[i].count();
    }
    for (auto& l : links) {
      auto t0 = Clock::now();
      att.detach(l);
      detach_ms.push_back(ms_since(t0));
    }
    auto list = [](const std::vector<double>& v) {
      std::string s = "[";
      char b[32];
      for (size_t i = 0; i < v.size(); i++) {
        std::snprintf(b, sizeof b, "%s%.3f", i ? "," : "", v[i]);
        s += b;
      }
      return s + "]";
    };
    // The same detaches done concurrently: (1) the links of one process closed by one thread
    // each, (2) every process detached by its own thread. Does the kernel's per-link wait
    // overlap?
    std::vector<double> links_parallel_ms;
    for (size_t i = 0; i < pids.size(); i++) {
      att.attach(pids[i], &links[i], &err);
      auto t0 = Clock::now();
      std::vector<std::thread> ts;
      for (int fd : links[i].multi_link_fds) ts.emplace_back([fd] { close(fd); });
      for (auto* l : links[i].perf_links) ts.emplace_back([l] { bpf_link__destroy(l); });
      for (auto& t : ts) t.join();
      links[i].multi_link_fds.clear();
      links[i].perf_links.clear();
      links_parallel_ms.push_back(ms_since(t0));
    }
    for (size_t i = 0; i < pids.size(); i++) att.attach(pids[i], &links[i], &err);
    auto t0 = Clock::now();
    {
      std::vector<std::thread> ts;
      for (auto& l : links) ts.emplace_back([&att, &l] { att.detach(l); });
      for (auto& t : ts) t.join();
    }
    double all_parallel_ms = ms_since(t0);
    std::printf("{\"uprobe_multi\":%s,\"processes\":%zu,\"links\":%zu,\"attach_ms\":%s,\"detach_ms\":%s,"
                "\"detach_links_parallel_ms\":%s,\"detach_all_parallel_ms\":%.3f}\n",
                rt->uprobe_multi() ? "true" : "false", pids.size(), nlinks, list(attach_ms).c_str(),
                list(detach_ms).c_str(), list(links_parallel_ms).c_str(), all_parallel_ms);
  }
  std::filesystem::remove_all(ro.pin_dir);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  libbpf_set_print([](enum libbpf_print_level lvl, const char* fmt, va_list ap) {
    return lvl == LIBBPF_WARN ? std::vfprintf(stderr, fmt, ap) : 0;
  });
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "empty") return cmd_empty(argc, argv);
  if (cmd == "attach") return cmd_attach(argc, argv);
  std::fprintf(stderr, "usage: probe_tool empty|attach ... (see the source)\n");
  return 2;
}
