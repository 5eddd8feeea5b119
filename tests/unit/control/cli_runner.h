// cli_runner.h — runs the built `agentbrake` binary for black-box CLI tests (shared by
// unit_control and unit_store). The binary sits in the build directory, one level above the
// test binaries (build/tests/unit_*); tests skip when it has not been built.
#pragma once
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

extern char** environ;

namespace ab::testing {

inline std::string agentbrake_binary() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto p = self.parent_path().parent_path() / "agentbrake";
  return std::filesystem::exists(p) ? p.string() : "";
}

struct CliResult {
  int rc = -1;  // exit status, or 128+signal
  std::string out, err;
};

// A running CLI process with its stdout/stderr captured.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) != 0 || pipe2(e, O_CLOEXEC) != 0) return;
    // everything the child needs is built before fork (the test may run threads)
    std::string bin = agentbrake_binary();
    std::vector<std::string> envs;
    for (char** ep = environ; *ep; ++ep)
      if (std::string(*ep).rfind("AGENTBRAKE_", 0) != 0) envs.push_back(*ep);
    for (const auto& kv : env) envs.push_back(kv);
    std::vector<char*> argv, envp;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& kv : envs) envp.push_back(kv.data());
    envp.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(o[1], 1);
      dup2(e[1], 2);
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
      execve(bin.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    close(o[1]);
    close(e[1]);
    out_fd_ = o[0];
    err_fd_ = e[0];
  }
  ~CliProcess() {
    if (pid_ > 0 && !done_) {
      kill(pid_, SIGKILL);
      wait(5000);
    }
    if (out_fd_ >= 0) close(out_fd_);
    if (err_fd_ >= 0) close(err_fd_);
  }
  // Collects output for up to ms milliseconds (returns early when both pipes close).
  void pump(int ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (out_fd_ >= 0 || err_fd_ >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd p[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
      if (poll(p, 2, static_cast<int>(left)) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!p[i].revents) continue;
        char buf[65536];
        ssize_t n = read(p[i].fd, buf, sizeof buf);
        int& fd = i == 0 ? out_fd_ : err_fd_;
        if (n <= 0) {
          close(fd);
          fd = -1;
        } else {
          (i == 0 ? res_.out : res_.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
  }
  const std::string& out() const { return res_.out; }
  void signal(int sig) { kill(pid_, sig); }
  CliResult wait(int ms = 10000) {
    pump(ms);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    int st = 0;
    while (!done_) {
      pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        done_ = true;
        res_.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      if (std::chrono::steady_clock::now() > until) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        done_ = true;
        res_.rc = -2;  // timed out
        break;
      }
      usleep(5000);
    }
    return res_;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  bool done_ = false;
  CliResult res_;
};

inline CliResult run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  CliProcess p(args, env);
  return p.wait();
}

}  // namespace ab::testing
