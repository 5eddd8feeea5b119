#include "control/control.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace ab::control {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxPendingOutput = 16u << 20;
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxReadPerWakeup = 1u << 20;
// Work and memory per connection are bounded: at most this many requests are answered per
// wakeup, and none while this much output waits for the client to read it; meanwhile its
// input stays in the kernel's socket buffer (the client's writes block), nothing is dropped.
constexpr size_t kMaxRequestsPerPass = 32;
constexpr size_t kOutputHighWater = 1u << 20;

std::string errno_str(int e) { return std::strerror(e); }

std::string dump(const nlohmann::json& j) {
  // never throw on odd bytes (a process name is not guaranteed UTF-8)
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string error_line(const std::string& message, int code) {
  return "{\"ok\":false,\"error\":" + dump(nlohmann::json(message)) +
         ",\"code\":" + std::to_string(code) + "}\n";
}

sockaddr_un make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    throw std::runtime_error("control socket path '" + path + "' is empty or longer than " +
                             std::to_string(sizeof(a.sun_path) - 1) + " bytes");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

std::optional<gid_t> lookup_group(const std::string& name) {
  if (name.empty()) return std::nullopt;
  struct group gr {};
  struct group* res = nullptr;
  std::vector<char> buf(16384);
  if (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res) == 0 && res) return gr.gr_gid;
  return std::nullopt;
}

// Supplementary groups from /proc/<pid>/status ("Groups:\t1 2 3").
std::vector<gid_t> proc_groups(pid_t pid) {
  std::vector<gid_t> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Groups:", 0) == 0) {
      std::istringstream is(line.substr(7));
      unsigned long g;
      while (is >> g) out.push_back(static_cast<gid_t>(g));
      break;
    }
  }
  return out;
}

}  // namespace

bool Peer::in_group(gid_t g) const {
  return gid == g || std::find(groups.begin(), groups.end(), g) != groups.end();
}

Peer peer_of(int fd) {
  Peer p;
  ucred cr{};
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
    p.pid = cr.pid;
    p.uid = cr.uid;
    p.gid = cr.gid;
  }
  std::vector<gid_t> groups(64);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  if (rc != 0 && errno == ERANGE) {
    groups.resize(glen / sizeof(gid_t) + 1);
    glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  }
  if (rc == 0) {
    groups.resize(glen / sizeof(gid_t));
    p.groups = std::move(groups);
  } else if (p.pid > 0) {
    // Only through a pidfd of the peer itself: a bare pid may have been reused since connect.
    int pidfd = -1;
    socklen_t plen = sizeof pidfd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &plen) == 0 && pidfd >= 0) {
      if (auto g = groups_of_live_process(pidfd, p.pid)) p.groups = std::move(*g);
      ::close(pidfd);
    }
  }
  return p;
}

std::optional<std::vector<gid_t>> groups_of_live_process(int pidfd, pid_t pid) {
  std::vector<gid_t> groups = proc_groups(pid);
  // alive after the read: the status read was that process's (a pid is not reused while its
  // process lives)
  if (::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0) return std::nullopt;
  return groups;
}

// ---- Server -------------------------------------------------------------------------------------

struct Server::Conn {
  int fd = -1;
  Peer peer;
  std::string in;
  std::string out;
  bool peer_closed = false;   // EOF seen: finish answering, then close
  bool close_after_write = false;
  Clock::time_point deadline;
  uint32_t interest = 0;
};

Server::Server(std::string path, ServerOptions opts) : path_(std::move(path)), opts_(std::move(opts)) {
  sockaddr_un addr = make_addr(path_);
  auto fail = [&](const std::string& what, int e) {
    std::string msg = "control socket " + path_ + ": " + what + ": " + errno_str(e);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (timer_fd_ >= 0) ::close(timer_fd_);
    listen_fd_ = epoll_fd_ = timer_fd_ = -1;
    throw std::runtime_error(msg);
  };

  std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      if (ec) throw std::runtime_error("control socket " + path_ + ": cannot create " +
                                       parent.string() + ": " + ec.message());
      ::chmod(parent.c_str(), 0755);
    }
  }

  struct stat sb {};
  if (::lstat(path_.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode))
      throw std::runtime_error("control socket " + path_ + ": exists and is not a socket; refusing to replace it");
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      int e = errno;
      ::close(probe);
      if (rc == 0)
        throw std::runtime_error("control socket " + path_ + ": another agentbraked is listening there");
      if (e != ECONNREFUSED && e != ENOENT)
        spdlog::warn("control: probing stale socket {}: {}", path_, errno_str(e));
    }
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) fail("cannot remove stale socket", errno);
  }

  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket", errno);
  // bind under a restrictive umask so the socket is never briefly world-connectable
  mode_t old = ::umask(0177);
  int brc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int berr = errno;
  ::umask(old);
  if (brc != 0) fail("bind", berr);
  if (::chmod(path_.c_str(), opts_.socket_mode) != 0) fail("chmod", errno);
  if (geteuid() == 0) {
    if (auto g = lookup_group(opts_.reader_group)) {
      if (::chown(path_.c_str(), 0, *g) != 0)
        spdlog::warn("control: chown {} root:{}: {}", path_, opts_.reader_group, errno_str(errno));
    }
  }
  if (::lstat(path_.c_str(), &sb) == 0) socket_ino_ = sb.st_ino;
  if (::listen(listen_fd_, 64) != 0) fail("listen", errno);

  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) fail("epoll_create1", errno);
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) fail("timerfd_create", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) fail("epoll_ctl", errno);
  ev.data.fd = timer_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev) != 0) fail("epoll_ctl", errno);
}

Server::~Server() {
  for (auto& [fd, c] : clients_) ::close(fd);
  clients_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (timer_fd_ >= 0) ::close(timer_fd_);
  struct stat sb {};
  if (socket_ino_ && ::lstat(path_.c_str(), &sb) == 0 && sb.st_ino == socket_ino_ && S_ISSOCK(sb.st_mode))
    ::unlink(path_.c_str());
}

void Server::add_command(std::string name, Access access, Handler handler) {
  commands_[std::move(name)] = Command{access, std::move(handler)};
}

void Server::poll_once(int timeout_ms) {
  pollfd p{epoll_fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) > 0) on_readable();
}

void Server::on_readable() {
  // A bounded number of rounds so one busy client cannot monopolize the caller's loop; anything
  // left keeps fd() readable and the caller comes back.
  for (int round = 0; round < 4; ++round) {
    epoll_event evs[64];
    int n = ::epoll_wait(epoll_fd_, evs, 64, 0);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == listen_fd_) {
        accept_all();
      } else if (fd == timer_fd_) {
        uint64_t ticks;
        while (::read(timer_fd_, &ticks, sizeof ticks) > 0) {
        }
      } else {
        handle_client(fd, evs[i].events);
      }
    }
  }
  sweep_deadlines();
  arm_timer();
}

std::optional<gid_t> Server::reader_gid() const {
  if (opts_.reader_gid) return opts_.reader_gid;
  return lookup_group(opts_.reader_group);
}

bool Server::allowed(Access a, const Peer& p) const {
  if (p.is_root()) return true;
  if (a == Access::Mutating) return false;
  auto g = reader_gid();
  return g && p.in_group(*g);
}

void Server::accept_all() {
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        spdlog::warn("control: accept on {}: {}", path_, errno_str(errno));
      return;
    }
    if (clients_.size() >= opts_.max_clients) {
      std::string msg = error_line("too many clients connected to agentbraked", codes::kBusy);
      (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->peer = peer_of(fd);
    c->deadline = Clock::now() + opts_.idle_timeout;
    c->interest = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{};
    ev.events = c->interest;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      spdlog::warn("control: epoll_ctl: {}", errno_str(errno));
      ::close(fd);
      continue;
    }
    clients_[fd] = std::move(c);
  }
}

void Server::handle_client(int fd, uint32_t events) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Conn& c = *it->second;

  if (events & EPOLLOUT) try_write(c);
  if (!clients_.count(fd)) return;
  // requests already read but not answered yet (the per-pass bound): their turn now
  if (c.out.size() < kOutputHighWater && c.in.find('\n') != std::string::npos) {
    process_lines(c);
    if (!clients_.count(fd)) return;
  }

  if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) && wants_input(c)) {
    size_t got_total = 0;
    char buf[kReadChunk];
    while (!c.peer_closed && got_total < kMaxReadPerWakeup && wants_input(c)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        got_total += static_cast<size_t>(n);
        continue;
      }
      if (n == 0) {
        c.peer_closed = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_client(fd);  // ECONNRESET and friends
      return;
    }
    if (got_total > 0 || c.peer_closed) {
      process_lines(c);
      if (!clients_.count(fd)) return;
    }
  }
  if (c.peer_closed && c.out.empty() && (c.close_after_write || c.in.find('\n') == std::string::npos)) {
    close_client(fd);
    return;
  }
  if (!c.out.empty()) try_write(c);
  if (!clients_.count(fd)) return;
  update_interest(c);
}

// More input is read only when the buffered input holds no complete request, less than one
// request's worth of bytes, and the client has read most of its answers.
bool Server::wants_input(const Conn& c) const {
  return !c.close_after_write && c.out.size() < kOutputHighWater && c.in.size() <= opts_.max_request_bytes &&
         c.in.find('\n') == std::string::npos;
}

void Server::process_lines(Conn& c) {
  size_t start = 0;
  size_t answered = 0;
  while (!c.close_after_write && answered < kMaxRequestsPerPass && c.out.size() < kOutputHighWater) {
    size_t nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    std::string line = c.in.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line: ignore
    if (line.size() > opts_.max_request_bytes) {
      c.out += error_line("request too large (limit " + std::to_string(opts_.max_request_bytes) + " bytes)",
                          codes::kTooLarge);
      c.close_after_write = true;
      break;
    }
    c.out += handle_request(line, c.peer);
    answered++;
  }
  c.in.erase(0, start);
  if (!c.close_after_write && c.in.size() > opts_.max_request_bytes && c.in.find('\n') == std::string::npos) {
    c.out += error_line("request too large (limit " + std::to_string(opts_.max_request_bytes) + " bytes)",
                        codes::kTooLarge);
    c.close_after_write = true;
    c.in.clear();
  }
  if (c.close_after_write) c.in.clear();
  // deadlines: a started line must finish soon; otherwise an idle connection may linger
  auto now = Clock::now();
  if (!c.out.empty())
    c.deadline = now + opts_.write_timeout;
  else if (!c.in.empty())
    c.deadline = now + opts_.read_timeout;
  else
    c.deadline = now + opts_.idle_timeout;
}

std::string Server::handle_request(const std::string& line, const Peer& peer) {
  nlohmann::json req = nlohmann::json::parse(line, nullptr, false);
  if (req.is_discarded() || !req.is_object())
    return error_line("malformed request: expected one JSON object per line, e.g. {\"cmd\":\"status\"}",
                      codes::kBadRequest);
  auto cmd_it = req.find("cmd");
  if (cmd_it == req.end() || !cmd_it->is_string())
    return error_line("malformed request: \"cmd\" must be a string", codes::kBadRequest);
  std::string cmd = cmd_it->get<std::string>();
  nlohmann::json args = nlohmann::json::object();
  if (auto a = req.find("args"); a != req.end() && !a->is_null()) {
    if (!a->is_object()) return error_line("malformed request: \"args\" must be an object", codes::kBadRequest);
    args = *a;
  }
  auto it = commands_.find(cmd);
  if (it == commands_.end()) return error_line("unknown command '" + cmd + "'", codes::kUnknownCommand);
  if (!allowed(it->second.access, peer)) {
    std::string why = it->second.access == Access::Mutating
                          ? "requires root"
                          : "requires root or membership in group '" + opts_.reader_group + "'";
    spdlog::info("control: refused '{}' to uid {} pid {}", cmd, peer.uid, peer.pid);
    return error_line("permission denied: '" + cmd + "' " + why, codes::kPermission);
  }
  try {
    nlohmann::json result = it->second.handler(args, peer);
    return "{\"ok\":true,\"result\":" + dump(result) + "}\n";
  } catch (const ControlError& e) {
    return error_line(e.what(), e.code);
  } catch (const std::invalid_argument& e) {
    return error_line(e.what(), codes::kBadRequest);
  } catch (const nlohmann::json::exception& e) {
    // typically a handler reading args of the wrong type
    return error_line(std::string("invalid arguments: ") + e.what(), codes::kBadRequest);
  } catch (const std::exception& e) {
    return error_line(e.what(), codes::kInternal);
  } catch (...) {
    return error_line("internal error", codes::kInternal);
  }
}

void Server::try_write(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close_client(c.fd);  // EPIPE etc.
    return;
  }
  if (c.out.size() > kMaxPendingOutput) {
    spdlog::warn("control: client pid {} does not read its answers; closing", c.peer.pid);
    close_client(c.fd);
    return;
  }
  if (c.out.empty()) {
    if (c.close_after_write || (c.peer_closed && c.in.find('\n') == std::string::npos)) {
      close_client(c.fd);
      return;
    }
    c.deadline = Clock::now() + (c.in.empty() ? opts_.idle_timeout : opts_.read_timeout);
  }
}

void Server::update_interest(Conn& c) {
  // once the peer has closed (or we will close), stop listening for input: a half-closed
  // socket is always readable and would spin the caller's loop
  uint32_t want = 0;
  if (!c.peer_closed && wants_input(c)) want |= EPOLLIN | EPOLLRDHUP;
  // requests left for a later pass: writable comes at once, and then it is their turn
  if (!c.out.empty() || (!c.close_after_write && c.in.find('\n') != std::string::npos)) want |= EPOLLOUT;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.interest = want;
}

void Server::close_client(int fd) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  clients_.erase(fd);
}

void Server::sweep_deadlines() {
  auto now = Clock::now();
  std::vector<int> expired;
  for (auto& [fd, c] : clients_)
    if (c->deadline <= now) expired.push_back(fd);
  for (int fd : expired) {
    Conn& c = *clients_[fd];
    if (!c.in.empty() && c.out.empty()) {
      // tell a slow writer why, best effort
      std::string msg = error_line("request not completed in time", codes::kBadRequest);
      (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    close_client(fd);
  }
}

void Server::arm_timer() {
  itimerspec its{};
  if (!clients_.empty()) {
    auto earliest = Clock::time_point::max();
    for (auto& [fd, c] : clients_) earliest = std::min(earliest, c->deadline);
    auto delta = std::chrono::duration_cast<std::chrono::nanoseconds>(earliest - Clock::now()).count();
    if (delta < 1'000'000) delta = 1'000'000;  // at least 1 ms out (0 would disarm)
    its.it_value.tv_sec = delta / 1'000'000'000;
    its.it_value.tv_nsec = delta % 1'000'000'000;
  }
  ::timerfd_settime(timer_fd_, 0, &its, nullptr);
}

// ---- Client -------------------------------------------------------------------------------------

Client Client::connect(const std::string& path, int timeout_ms) {
  sockaddr_un addr{};
  try {
    addr = make_addr(path);
  } catch (const std::exception& e) {
    throw UnreachableError(path, "invalid socket path");
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw UnreachableError(path, errno_str(errno));
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno == EAGAIN) {
    // backlog full: wait for room
    pollfd p{fd, POLLOUT, 0};
    int pr = ::poll(&p, 1, timeout_ms);
    if (pr <= 0) {
      ::close(fd);
      throw UnreachableError(path, "timed out connecting (the daemon is not accepting)");
    }
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (rc != 0 && errno == EISCONN) rc = 0;
  }
  if (rc != 0) {
    int e = errno;
    ::close(fd);
    std::string why = errno_str(e);
    if (e == ENOENT) why += " (is agentbraked running?)";
    if (e == EACCES) why += " (root or membership in group 'agentbrake' is needed)";
    throw UnreachableError(path, why);
  }
  return Client(fd, path);
}

Client::Client(Client&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)), buf_(std::move(o.buf_)) {
  o.fd_ = -1;
}

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
    path_ = std::move(o.path_);
    buf_ = std::move(o.buf_);
  }
  return *this;
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

nlohmann::json Client::call(const std::string& cmd, const nlohmann::json& args, int timeout_ms) {
  if (fd_ < 0) throw ControlError(codes::kClosed, "connection to agentbraked is closed");
  nlohmann::json req;
  req["cmd"] = cmd;
  req["args"] = args.is_null() ? nlohmann::json::object() : args;
  std::string line = dump(req) + "\n";
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto remaining_ms = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::max<int64_t>(ms, 0));
  };
  auto closed = [&](const std::string& why) {
    ::close(fd_);
    fd_ = -1;
    return ControlError(codes::kClosed, "agentbraked closed the connection (" + why + ")");
  };

  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, remaining_ms()) <= 0)
        throw ControlError(codes::kTimeout, "timed out sending to agentbraked at " + path_);
      continue;
    }
    // The daemon may have refused us and closed (too many clients, oversized request) before
    // reading the request: its explanation can still be waiting in our receive queue.
    int e = errno;
    char chunk[4096];
    ssize_t got;
    while ((got = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT)) > 0) buf_.append(chunk, static_cast<size_t>(got));
    if (buf_.find('\n') != std::string::npos) break;
    throw closed(errno_str(e));
  }

  while (true) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string resp = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(resp, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
        throw ControlError(codes::kInternal, "unreadable answer from agentbraked");
      if (j["ok"] == true) return j.contains("result") ? j["result"] : nlohmann::json();
      std::string msg = j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                       : "request failed";
      int code = j.contains("code") && j["code"].is_number_integer() ? j["code"].get<int>() : codes::kInternal;
      throw ControlError(code, msg);
    }
    pollfd p{fd_, POLLIN, 0};
    int pr = ::poll(&p, 1, remaining_ms());
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0)
      throw ControlError(codes::kTimeout, "no answer from agentbraked at " + path_ + " within " +
                                              std::to_string(timeout_ms) + " ms");
    char chunk[65536];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) throw closed("end of stream before an answer");
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    throw closed(errno_str(errno));
  }
}

}  // namespace ab::control
