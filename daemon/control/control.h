// control.h — the daemon's control socket (server) and the CLI's side of it (client).
//
// Wire protocol: a Unix stream socket carrying newline-delimited JSON, any number of
// request/response pairs per connection, answered in order.
//   request:  {"cmd":"status","args":{...}}            ("args" optional, an object)
//   response: {"ok":true,"result":<json>}
//          or {"ok":false,"error":"<message>","code":<int>}
// Error codes are errno values (see `codes` below), so they stay meaningful to scripts.
//
// Access: the peer's credentials come from the kernel (SO_PEERCRED, SO_PEERGROUPS) at connect
// time. Mutating commands require uid 0. ReadOnly commands require uid 0 or membership (primary
// or supplementary) in the reader group, `agentbrake` by default.
//
// Event-loop integration: Server::fd() is an epoll fd of the server's own (listening socket,
// every client socket, and a timerfd for deadlines). Add it to the daemon's epoll with EPOLLIN;
// whenever it is readable call on_readable(), which does all ready work without blocking:
// accepts, reads what is there, runs complete requests' handlers, writes what the socket
// takes, and closes connections past their deadline. Handlers run on the caller's thread.
// Server is not thread-safe: construct it, add commands and call on_readable() from one thread
// (the event loop). Client is a plain blocking object for the CLI (one per thread).
#pragma once
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ab::control {

namespace codes {
constexpr int kInternal = 1;         // a handler failed (message says why)
constexpr int kNotFound = 3;         // ESRCH: no such target (pid, cgroup)
constexpr int kPermission = 13;      // EACCES: peer not allowed
constexpr int kBusy = 16;            // EBUSY: too many clients
constexpr int kBadRequest = 22;      // EINVAL: malformed request or invalid arguments
constexpr int kTooLarge = 90;        // EMSGSIZE: request line too long
constexpr int kUnknownCommand = 38;  // ENOSYS: the daemon has no such command
constexpr int kTimeout = 110;        // ETIMEDOUT: (client side) no answer in time
constexpr int kClosed = 104;         // ECONNRESET: (client side) daemon closed the connection
}  // namespace codes

// An ok:false answer (or a client-side protocol failure). Handlers may throw it to choose the
// code; std::invalid_argument becomes kBadRequest, any other exception kInternal.
struct ControlError : std::runtime_error {
  int code;
  ControlError(int code, const std::string& message) : std::runtime_error(message), code(code) {}
};

// The daemon could not be reached at all (no socket, refused, permission on the socket file).
// what() is "cannot reach agentbraked at <path>: <reason>".
struct UnreachableError : std::runtime_error {
  std::string socket_path;
  std::string reason;
  UnreachableError(const std::string& path, const std::string& why)
      : std::runtime_error("cannot reach agentbraked at " + path + ": " + why),
        socket_path(path),
        reason(why) {}
};

enum class Access { ReadOnly, Mutating };

struct Peer {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;  // supplementary groups
  bool is_root() const { return uid == 0; }
  bool in_group(gid_t g) const;  // primary or supplementary
};

struct ServerOptions {
  mode_t socket_mode = 0660;
  std::string reader_group = "agentbrake";  // socket's group (when it exists) + ReadOnly access
  std::optional<gid_t> reader_gid;          // overrides reader_group's lookup (tests)
  std::chrono::milliseconds read_timeout{2000};    // to finish a started request line
  std::chrono::milliseconds write_timeout{5000};   // to take a pending response
  std::chrono::milliseconds idle_timeout{120000};  // an open connection with nothing to do
  size_t max_clients = 64;
  size_t max_request_bytes = 1 << 20;
};

class Server {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& args, const Peer& peer)>;

  // Creates the parent directory (0755) if missing, removes a stale socket (refuses when a live
  // server answers there, or when the path is not a socket), binds, listens, chmods
  // `socket_mode` and chowns root:<reader_group> when that group exists. Throws
  // std::runtime_error naming the path on failure.
  explicit Server(std::string path, ServerOptions opts = {});
  ~Server();  // closes everything and unlinks the socket (if it is still ours)
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void add_command(std::string name, Access access, Handler handler);

  int fd() const { return epoll_fd_; }
  void on_readable();
  // Convenience for tests and simple loops: wait up to timeout_ms for fd(), then on_readable().
  void poll_once(int timeout_ms);

  size_t client_count() const { return clients_.size(); }
  const std::string& path() const { return path_; }

 private:
  struct Conn;
  void accept_all();
  void handle_client(int fd, uint32_t events);
  bool wants_input(const Conn& c) const;
  void process_lines(Conn& c);
  std::string handle_request(const std::string& line, const Peer& peer);
  void try_write(Conn& c);
  void update_interest(Conn& c);
  void close_client(int fd);
  void sweep_deadlines();
  void arm_timer();
  bool allowed(Access a, const Peer& p) const;
  std::optional<gid_t> reader_gid() const;

  struct Command {
    Access access;
    Handler handler;
  };
  std::string path_;
  ServerOptions opts_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int timer_fd_ = -1;
  ino_t socket_ino_ = 0;
  std::map<std::string, Command> commands_;
  std::map<int, std::unique_ptr<Conn>> clients_;
};

class Client {
 public:
  // Throws UnreachableError when nothing answers at `path`.
  static Client connect(const std::string& path, int timeout_ms = 5000);
  Client(Client&& o) noexcept;
  Client& operator=(Client&& o) noexcept;
  ~Client();

  // Sends one request and waits for its answer. Returns "result" when ok; throws ControlError
  // with the daemon's code and message when not ok, kTimeout when no answer came in time,
  // kClosed when the daemon closed the connection.
  nlohmann::json call(const std::string& cmd, const nlohmann::json& args = nlohmann::json::object(),
                      int timeout_ms = 5000);
  const std::string& path() const { return path_; }

 private:
  Client(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
  std::string buf_;
};

// The peer's credentials of a connected Unix socket (SO_PEERCRED + SO_PEERGROUPS). On a kernel
// without SO_PEERGROUPS the supplementary groups come from /proc/<pid>/status, read only
// through a pidfd of the very peer (SO_PEERPIDFD): the groups count only if that process is
// still alive after the read, so a reused pid never lends its groups. Without either, the
// peer has its primary group only. Exposed for tests.
Peer peer_of(int fd);

// Supplementary groups of the process `pidfd` refers to (its pid is `pid`), or nullopt when it
// has exited (its pid may already name another process). Exposed for tests.
std::optional<std::vector<gid_t>> groups_of_live_process(int pidfd, pid_t pid);

}  // namespace ab::control
