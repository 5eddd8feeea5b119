#include "capture/socket_scan.h"

#include <dirent.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace ab::capture {

namespace {

constexpr int kTcpEstablished = 1;

// "0100007F:1F90" → address bytes as the kernel printed them (each 32-bit word in host order).
bool parse_addr(std::string_view tok, int family, ab_endpoint_key* out) {
  auto colon = tok.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view hex = tok.substr(0, colon);
  size_t want = family == AF_INET ? 8 : 32;
  if (hex.size() != want) return false;
  ab_endpoint_key k{};
  k.family = static_cast<uint16_t>(family);
  for (size_t w = 0; w < want / 8; w++) {
    std::string word(hex.substr(w * 8, 8));
    char* end = nullptr;
    uint32_t v = static_cast<uint32_t>(std::strtoul(word.c_str(), &end, 16));
    if (*end) return false;
    std::memcpy(k.addr + w * 4, &v, 4);  // /proc prints the in-memory word: copy it back as is
  }
  std::string port(tok.substr(colon + 1));
  char* end = nullptr;
  unsigned long p = std::strtoul(port.c_str(), &end, 16);
  if (*end || p > 65535) return false;
  k.port = static_cast<uint16_t>(p);
  *out = k;
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<TcpConnection> parse_proc_net_tcp(std::string_view content, int family) {
  std::vector<TcpConnection> out;
  size_t pos = 0;
  bool header = true;
  while (pos < content.size()) {
    size_t nl = content.find('\n', pos);
    std::string line(content.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos));
    pos = nl == std::string_view::npos ? content.size() : nl + 1;
    if (header) {
      header = false;
      continue;
    }
    std::istringstream in(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
    if (!(in >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode)) continue;
    if (std::strtol(st.c_str(), nullptr, 16) != kTcpEstablished) continue;
    TcpConnection c;
    if (!parse_addr(remote, family, &c.remote) || !parse_addr(local, family, &c.local)) continue;
    c.inode = std::strtoull(inode.c_str(), nullptr, 10);
    if (c.inode == 0) continue;
    out.push_back(c);
  }
  return out;
}

std::vector<TcpConnection> read_tcp_connections(const std::string& proc_root) {
  std::vector<TcpConnection> out;
  for (auto [file, fam] : {std::pair{"/net/tcp", AF_INET}, std::pair{"/net/tcp6", AF_INET6}})
    for (auto& c : parse_proc_net_tcp(read_file(proc_root + file), fam)) out.push_back(c);
  return out;
}

FdInodes fd_inodes(int pid, const std::string& proc_root) {
  FdInodes out;
  const std::string dir = proc_root + "/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char buf[64];
    ssize_t n = readlinkat(dirfd(d), e->d_name, buf, sizeof buf - 1);
    if (n <= 0) continue;
    buf[n] = 0;
    unsigned long long ino = 0;
    if (std::sscanf(buf, "pipe:[%llu]", &ino) == 1) out.pipes.push_back(ino);
    else if (std::sscanf(buf, "socket:[%llu]", &ino) == 1) out.sockets.push_back(ino);
  }
  closedir(d);
  return out;
}

std::vector<ConnectedProcess> processes_connected_to(
    const std::function<bool(const ab_endpoint_key&)>& is_endpoint, const std::string& proc_root) {
  std::map<uint64_t, ab_endpoint_key> wanted;  // socket inode → remote
  for (const auto& c : read_tcp_connections(proc_root)) {
    ab_endpoint_key k = c.remote;
    // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is matched as IPv4 too.
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (k.family == AF_INET6 && std::memcmp(k.addr, mapped, 12) == 0) {
      ab_endpoint_key v4{};
      v4.family = AF_INET;
      v4.port = k.port;
      std::memcpy(v4.addr, k.addr + 12, 4);
      if (is_endpoint(v4)) wanted[c.inode] = v4;
      continue;
    }
    if (is_endpoint(k)) wanted[c.inode] = k;
  }
  std::vector<ConnectedProcess> out;
  if (wanted.empty()) return out;
  DIR* d = opendir(proc_root.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    std::set<uint64_t> seen;
    for (uint64_t ino : fd_inodes(static_cast<int>(pid), proc_root).sockets) {
      auto it = wanted.find(ino);
      if (it == wanted.end() || !seen.insert(ino).second) continue;
      out.push_back({static_cast<int>(pid), it->second});
    }
  }
  closedir(d);
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> unix_socket_peers() {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return out;
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_show = UDIAG_SHOW_PEER;
  sockaddr_nl nl{};
  nl.nl_family = AF_NETLINK;
  if (sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&nl), sizeof nl) < 0) {
    close(fd);
    return out;
  }
  alignas(nlmsghdr) char buf[32768];
  for (bool done = false; !done;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
          uint32_t peer = 0;
          std::memcpy(&peer, RTA_DATA(a), sizeof peer);
          if (peer) out.emplace_back(m->udiag_ino, peer);
        }
      }
    }
  }
  close(fd);
  return out;
}

}  // namespace ab::capture
