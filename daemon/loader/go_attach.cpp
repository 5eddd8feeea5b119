#include "loader/go_attach.h"

#include <bpf/libbpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ab::loader {

namespace {

// BPF_LINK_CREATE for uprobe_multi with many offsets in one link (one link per program: the
// RETs of a function share one). Laid out as the kernel's union bpf_attr link_create.
struct MultiAttr {
  uint32_t prog_fd, target_fd, attach_type, flags;
  uint64_t path, offsets, ref_ctr_offsets, cookies;
  uint32_t cnt, multi_flags, pid, pad_;
  uint8_t tail[64];
};

int multi_link(int prog_fd, const std::string& path, const std::vector<uint64_t>& offsets, int pid, bool ret) {
  MultiAttr a;
  memset(&a, 0, sizeof a);
  a.prog_fd = (uint32_t)prog_fd;
  a.attach_type = 48;  // BPF_TRACE_UPROBE_MULTI
  a.path = (uint64_t)(uintptr_t)path.c_str();
  a.offsets = (uint64_t)(uintptr_t)offsets.data();
  a.cnt = (uint32_t)offsets.size();
  a.multi_flags = ret ? 1u : 0u;  // BPF_F_UPROBE_MULTI_RETURN
  a.pid = (uint32_t)pid;
  long fd = syscall(__NR_bpf, 28 /* BPF_LINK_CREATE */, &a, sizeof a);
  return fd < 0 ? -errno : (int)fd;
}

}  // namespace

int attach_hook_offsets(BpfRuntime& rt, TlsHook hook, int pid, const std::string& target, const std::string& path,
                        const std::vector<uint64_t>& offsets, ProcessLinks* out, std::string* error) {
  if (offsets.empty()) return 0;
  const bool ret = tls_hook_is_return(hook);
  if (rt.uprobe_multi()) {
    int fd = multi_link(rt.tls_program_fd(hook), target, offsets, pid, ret);
    if (fd < 0) {
      if (error) *error = "uprobe_multi on " + path + ": " + strerror(-fd);
      return fd;
    }
    out->multi_link_fds.push_back(fd);
    return 0;
  }
  for (uint64_t off : offsets) {
    LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = ret);
    bpf_link* l = bpf_program__attach_uprobe_opts(rt.tls_program(hook), pid, target.c_str(), off, &uo);
    if (!l) {
      int e = -errno;
      if (error) *error = "uprobe on " + path + ": " + strerror(-e);
      return e;
    }
    out->perf_links.push_back(l);
  }
  return 0;
}

int attach_go_object(BpfRuntime& rt, int pid, const std::string& target, const std::string& path,
                     const GoTlsSymbols& syms, ProcessLinks* out, std::string* error) {
  // The RET probes first: an entry without its return would leave scratch state behind.
  const std::pair<TlsHook, std::vector<uint64_t>> plan[] = {
      {TlsHook::GoWriteRet, syms.write_rets},
      {TlsHook::GoReadRet, syms.read_rets},
      {TlsHook::GoCloseEnter, syms.close ? std::vector<uint64_t>{syms.close} : std::vector<uint64_t>{}},
      {TlsHook::GoWriteEnter, {syms.write}},
      {TlsHook::GoReadEnter, {syms.read}},
  };
  for (const auto& [hook, offsets] : plan)
    if (int err = attach_hook_offsets(rt, hook, pid, target, path + " (Go)", offsets, out, error)) return err;
  out->objects.push_back(path);
  return 0;
}

}  // namespace ab::loader
