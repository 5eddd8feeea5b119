// socket_scan.h — at start-up, find processes that already hold TCP connections to LLM
// endpoints (they connected before the daemon ran, so no connect event will come).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "agentbrake_events.h"

namespace ab::capture {

struct TcpConnection {
  ab_endpoint_key remote{};  // port in host order
  ab_endpoint_key local{};
  uint64_t inode = 0;
};

// Parses the content of /proc/net/tcp or /proc/net/tcp6 (family AF_INET / AF_INET6) and
// returns the ESTABLISHED connections. Malformed lines are skipped.
std::vector<TcpConnection> parse_proc_net_tcp(std::string_view content, int family);

// The ESTABLISHED connections of <proc_root>/net/tcp and tcp6 together (family in the keys).
std::vector<TcpConnection> read_tcp_connections(const std::string& proc_root = "/proc");

// The pipe and socket inodes a process holds open (from <proc_root>/<pid>/fd); empty when it
// is gone or unreadable.
struct FdInodes {
  std::vector<uint64_t> pipes, sockets;
};
FdInodes fd_inodes(int pid, const std::string& proc_root = "/proc");

struct ConnectedProcess {
  int pid = 0;
  ab_endpoint_key remote{};
};

// Every process with an established TCP connection whose remote end satisfies
// is_endpoint. One entry per (pid, remote). Processes that vanish mid-scan are skipped.
std::vector<ConnectedProcess> processes_connected_to(
    const std::function<bool(const ab_endpoint_key&)>& is_endpoint, const std::string& proc_root = "/proc");

// Connected Unix sockets (socketpairs included) as inode → peer inode, from the kernel's
// sock_diag netlink interface. Empty when it is unavailable.
std::vector<std::pair<uint64_t, uint64_t>> unix_socket_peers();

}  // namespace ab::capture
