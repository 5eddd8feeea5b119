#include "loader/plain_attach.h"

#include "loader/go_attach.h"
#include "loader/tls_attach.h"

namespace ab::loader {

bool is_c_library_path(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return base.rfind("libc.so", 0) == 0 || base.rfind("libc-", 0) == 0 || base.rfind("ld-musl-", 0) == 0;
}

std::optional<LibcIoSymbols> locate_libc_io(int fd) {
  auto m = resolve_symbols(fd, {"write", "send", "sendto", "read", "recv", "recvfrom", "close"});
  if (!m) return std::nullopt;
  auto at = [&](const char* n) -> uint64_t {
    auto it = m->find(n);
    return it == m->end() ? 0 : it->second;
  };
  LibcIoSymbols s;
  s.write = at("write");
  s.send = at("send");
  s.sendto = at("sendto");
  s.read = at("read");
  s.recv = at("recv");
  s.recvfrom = at("recvfrom");
  s.close = at("close");
  return s;
}

std::optional<LibcIoSymbols> LibcIoCache::get(const ObjectFile& f) {
  return cache_.get(f.key(), [&] { return locate_libc_io(f.fd()); });
}

namespace {

std::vector<uint64_t> nonzero(std::initializer_list<uint64_t> offs) {
  std::vector<uint64_t> v;
  for (uint64_t o : offs)
    if (o) v.push_back(o);
  return v;
}

}  // namespace

int attach_plain_libc(BpfRuntime& rt, int pid, const ObjectFile& f, const std::string& path,
                      const LibcIoSymbols& s, ProcessLinks* out, std::string* error) {
  const std::string target = f.fd_path();
  const auto writes = nonzero({s.write, s.send, s.sendto});
  const auto reads = nonzero({s.read, s.recv, s.recvfrom});
  // Return probes first: an entry without its return would leave scratch state behind.
  const std::pair<TlsHook, std::vector<uint64_t>> plan[] = {
      {TlsHook::PlainWriteExit, writes}, {TlsHook::PlainReadExit, reads},
      {TlsHook::PlainCloseEnter, nonzero({s.close})},
      {TlsHook::PlainWriteEnter, writes}, {TlsHook::PlainReadEnter, reads},
  };
  for (const auto& [hook, offsets] : plan)
    if (int err = attach_hook_offsets(rt, hook, pid, target, path + " (plain)", offsets, out, error)) return err;
  return 0;
}

int attach_plain_go(BpfRuntime& rt, int pid, const std::string& target, const std::string& path,
                    const GoTlsSymbols& s, ProcessLinks* out, std::string* error) {
  const std::pair<TlsHook, std::vector<uint64_t>> plan[] = {
      {TlsHook::GoPlainWriteRet, s.fd_write_rets},
      {TlsHook::GoPlainReadRet, s.fd_read_rets},
      {TlsHook::GoPlainCloseEnter, nonzero({s.fd_close})},
      {TlsHook::GoPlainWriteEnter, {s.fd_write}},
      {TlsHook::GoPlainReadEnter, {s.fd_read}},
  };
  for (const auto& [hook, offsets] : plan)
    if (int err = attach_hook_offsets(rt, hook, pid, target, path + " (Go plain)", offsets, out, error)) return err;
  return 0;
}

}  // namespace ab::loader
