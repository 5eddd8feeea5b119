// agentbrake — the operator's CLI for agentbraked.
//
// Exit status: 0 ok, 1 runtime failure (daemon unreachable, database missing, the daemon
// refused), 2 bad usage or invalid input (unknown flag, bad duration, bad TARGET, invalid
// policy, the daemon said the arguments were invalid).
//
// Live commands (status, agents, top, pause/resume/kill, policy show/reload) talk to the daemon
// over its control socket; history commands (usage, events, report) read the SQLite database
// read-only and work without a daemon; `policy validate` needs neither.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "control/control.h"
#include "format.h"
#include "policy/policy.h"
#include "report.h"
#include "store/store.h"
#include "util/duration.h"
#include "util/timefmt.h"

#ifndef AB_VERSION
#define AB_VERSION "0.0.0"
#endif

namespace {

using json = nlohmann::json;
namespace ctl = ab::control;
namespace st = ab::store;
namespace util = ab::util;

constexpr int kOk = 0;
constexpr int kFail = 1;
constexpr int kUsage = 2;

volatile sig_atomic_t g_stop = 0;
void on_stop_signal(int) { g_stop = 1; }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a sleeping poll()/nanosleep() returns at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

int err(const std::string& msg, int rc) {
  std::fprintf(stderr, "agentbrake: %s\n", msg.c_str());
  return rc;
}

// Writes to stdout; false when the reader went away (EPIPE: `| head`).
bool out(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) return false;
  return true;
}
bool out_flush() { return std::fflush(stdout) == 0 && !std::ferror(stdout); }

struct Globals {
  std::string db = "/var/lib/agentbrake/agentbrake.db";
  std::string socket = "/run/agentbrake/control.sock";
};

// Runs a request against the daemon and maps failures to exit codes and messages.
int with_daemon(const Globals& g, const std::function<int(ctl::Client&)>& fn) {
  try {
    auto client = ctl::Client::connect(g.socket);
    return fn(client);
  } catch (const ctl::UnreachableError& e) {
    return err(e.what(), kFail);
  } catch (const ctl::ControlError& e) {
    return err(e.what(), e.code == ctl::codes::kBadRequest ? kUsage : kFail);
  }
}

std::unique_ptr<st::Store> open_db(const Globals& g, std::string& error) {
  try {
    return st::Store::open(g.db, st::OpenMode::ReadOnly);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

std::optional<int64_t> since_ns(const std::string& text, std::string& error) {
  auto d = util::parse_duration_ns(text);
  if (!d) {
    error = "invalid duration '" + text + "' for --since: expected a number and a unit (30s, 10m, 2h, 7d)";
    return std::nullopt;
  }
  return util::now_unix_ns() - *d;
}

// ---- commands -------------------------------------------------------------------------------

int cmd_status(const Globals& g, bool as_json) {
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call("status");
    out(as_json ? r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" : ab::cli::format_status(r));
    return kOk;
  });
}

int cmd_fleet_status(const Globals& g, bool as_json) {
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call("fleet_status");
    out(as_json ? r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" : ab::cli::format_fleet_status(r));
    return kOk;
  });
}

int cmd_agents(const Globals& g, bool as_json) {
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call("agents");
    out(as_json ? r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" : ab::cli::format_agents(r));
    return kOk;
  });
}

int cmd_usage(const Globals& g, const std::string& by_text, const std::string& since, bool as_json) {
  auto by = st::parse_by(by_text);
  if (!by) return err("invalid --by '" + by_text + "': expected cgroup, process, model or provider", kUsage);
  std::string e;
  auto from = since_ns(since, e);
  if (!from) return err(e, kUsage);
  auto db = open_db(g, e);
  if (!db) return err(e, kFail);
  try {
    auto rep = db->usage(*by, *from, util::now_unix_ns());
    auto j = rep.to_json();
    out(as_json ? j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" : ab::cli::format_usage(json(j)));
  } catch (const std::exception& ex) {
    return err(ex.what(), kFail);
  }
  return kOk;
}

int cmd_events(const Globals& g, const std::string& since, const std::vector<std::string>& kinds, bool as_json,
               bool follow) {
  std::string e;
  auto from = since_ns(since, e);
  if (!from) return err(e, kUsage);
  for (const auto& k : kinds)
    if (k.empty() || k.find_first_of(" \t\n,") != std::string::npos)
      return err("invalid --kind '" + k + "': give one kind per --kind (e.g. --kind llm_call --kind killed)", kUsage);
  auto db = open_db(g, e);
  if (!db) return err(e, kFail);

  signal(SIGPIPE, SIG_IGN);  // a closed pipe ends the loop through a write error instead
  if (follow) install_stop_handlers();
  bool reader_gone = false;
  int64_t last_id = 0;
  auto emit = [&](const st::EventRow& row) {
    auto j = st::event_to_json(row);
    std::string line = as_json ? j.dump(-1, ' ', false, json::error_handler_t::replace) : ab::cli::format_event(json(j));
    last_id = std::max(last_id, row.id);
    if (!out(line + "\n")) {
      reader_gone = true;
      return false;
    }
    return true;
  };
  try {
    st::EventQuery q;
    q.since_ns = *from;
    q.kinds = kinds;
    db->for_each_event(q, emit);
    if (!out_flush()) reader_gone = true;
    if (!follow || reader_gone) return kOk;
    // Follow: poll for rows newer than the last one shown. The daemon commits every ~200 ms.
    st::EventQuery fq;
    fq.kinds = kinds;
    fq.since_ns = *from;
    while (!g_stop && !reader_gone) {
      // Sleep 200 ms, but wake at once on SIGINT/SIGTERM or when the reader of a pipe goes
      // away (POLLERR on our end), so `events -f | head -3` ends without another event.
      pollfd p{STDOUT_FILENO, 0, 0};
      if (::poll(&p, 1, 200) > 0 && (p.revents & (POLLERR | POLLHUP))) reader_gone = true;
      if (g_stop || reader_gone) break;
      fq.after_id = last_id;
      db->for_each_event(fq, emit);
      if (!out_flush()) reader_gone = true;
    }
  } catch (const std::exception& ex) {
    if (g_stop) return kOk;
    return err(ex.what(), kFail);
  }
  return kOk;
}

int cmd_brake(const Globals& g, const std::string& cmd, const std::string& target, bool as_json) {
  std::string e;
  auto t = ab::cli::normalize_target(target, e);
  if (!t) return err(e, kUsage);
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call(cmd, {{"target", *t}}, 15000);
    out(as_json ? r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" : ab::cli::format_action(cmd, *t, r));
    return kOk;
  });
}

int cmd_policy_validate(const std::string& path, bool no_owner_check) {
  std::vector<std::string> errors;
  try {
    errors = ab::policy::validate_path(path, !no_owner_check);
  } catch (const std::exception& e) {
    errors.push_back(path + ": " + e.what());
  }
  if (errors.empty()) {
    out("policy OK: " + path + "\n");
    return kOk;
  }
  for (const auto& e : errors) out(e + "\n");
  std::fprintf(stderr, "agentbrake: policy %s is invalid (%zu error%s)\n", path.c_str(), errors.size(),
               errors.size() == 1 ? "" : "s");
  return kUsage;
}

int cmd_policy_show(const Globals& g, bool as_json) {
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call("policy_show");
    out((as_json ? r.dump(-1, ' ', false, json::error_handler_t::replace) : r.dump(2, ' ', false, json::error_handler_t::replace)) + "\n");
    return kOk;
  });
}

int cmd_policy_reload(const Globals& g, bool as_json) {
  return with_daemon(g, [&](ctl::Client& c) {
    json r = c.call("policy_reload", json::object(), 30000);
    if (as_json) {
      out(r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    } else if (r.is_object() && r.contains("message") && r["message"].is_string()) {
      out(r["message"].get<std::string>() + "\n");
    } else if (r.is_object() && r.contains("source")) {
      out("policy reloaded from " + ab::cli::format_scalar(r["source"]) + "\n");
    } else {
      out("policy reloaded\n");
    }
    return kOk;
  });
}

// ---- top ------------------------------------------------------------------------------------

struct Terminal {
  bool active = false;
  termios saved{};
  bool have_saved = false;

  void enter() {
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
      have_saved = true;
      termios raw = saved;
      raw.c_lflag &= ~(ICANON | ECHO);  // keys arrive at once, unseen; ISIG kept: Ctrl-C is SIGINT
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    out("\x1b[?1049h\x1b[?25l");  // alternate screen, hide cursor
    out_flush();
    active = true;
  }
  void leave() {
    if (!active) return;
    out("\x1b[?25h\x1b[?1049l");  // show cursor, main screen
    out_flush();
    if (have_saved) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    active = false;
  }
  ~Terminal() { leave(); }
};

std::pair<size_t, size_t> term_size() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) return {ws.ws_col, ws.ws_row};
  return {120, 40};
}

int cmd_top(const Globals& g, const std::string& interval_text, bool once) {
  auto iv = util::parse_duration_ns(interval_text);
  if (!iv || *iv < 100'000'000)
    return err("invalid --interval '" + interval_text + "': expected a duration of at least 100ms (e.g. 1s)", kUsage);
  int interval_ms = static_cast<int>(std::min<int64_t>(*iv / 1'000'000, 3'600'000));
  std::optional<ctl::Client> client;
  try {
    client.emplace(ctl::Client::connect(g.socket));
  } catch (const ctl::UnreachableError& e) {
    return err(e.what(), kFail);
  }
  ab::cli::TopModel model;
  auto mono_s = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  auto fetch = [&](std::string& problem) {
    try {
      if (!client) client.emplace(ctl::Client::connect(g.socket));
      model.update(client->call("agents"), mono_s());
      problem.clear();
    } catch (const ctl::ControlError& e) {
      problem = e.what();
      if (e.code == ctl::codes::kClosed || e.code == ctl::codes::kTimeout) client.reset();
      if (e.code == ctl::codes::kPermission) throw;
    } catch (const ctl::UnreachableError& e) {
      problem = e.what();
      client.reset();
    }
  };

  std::string problem;
  bool tty = isatty(STDOUT_FILENO);
  if (once || !tty) {
    try {
      fetch(problem);
    } catch (const ctl::ControlError& e) {
      return err(e.what(), kFail);
    }
    if (!problem.empty()) return err(problem, kFail);
    out(ab::cli::render_top(model.rows(), "agentbrake top", 1000, 100000));
    return kOk;
  }

  signal(SIGPIPE, SIG_IGN);
  install_stop_handlers();
  Terminal term;
  term.enter();
  while (!g_stop) {
    try {
      fetch(problem);
    } catch (const ctl::ControlError& e) {
      term.leave();
      return err(e.what(), kFail);
    }
    auto [w, h] = term_size();
    std::string title = "agentbrake top (" + util::format_rfc3339(util::now_unix_ns(), false) + ", q quits)";
    std::string frame = ab::cli::render_top(model.rows(), title, w, problem.empty() ? h : h - 1);
    if (!problem.empty()) frame = problem.substr(0, w) + "\n" + frame;
    // draw: home, the frame with each line's tail cleared, then clear below
    std::string screen = "\x1b[H";
    size_t pos = 0;
    while (pos < frame.size()) {
      size_t nl = frame.find('\n', pos);
      if (nl == std::string::npos) nl = frame.size();
      screen += frame.substr(pos, nl - pos) + "\x1b[K\r\n";
      pos = nl + 1;
    }
    screen += "\x1b[J";
    if (!out(screen) || !out_flush()) break;
    // wait for the next refresh or a key
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
    bool quit = false;
    while (!g_stop && !quit) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      int pr = ::poll(&p, 1, static_cast<int>(left));
      if (pr > 0 && (p.revents & POLLIN)) {
        char keys[64];
        ssize_t n = ::read(STDIN_FILENO, keys, sizeof keys);
        if (n <= 0) {
          // stdin closed: keep refreshing until a signal
          std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(left, 0)));
          break;
        }
        for (ssize_t i = 0; i < n; ++i)
          if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 3 /* Ctrl-C without ISIG */) quit = true;
        if (!quit) break;  // any other key: refresh now
      }
    }
    if (quit) break;
  }
  term.leave();
  return kOk;
}

const char* kFooter = R"(
Examples:
  agentbrake status                         daemon health, probes, holds, loss counters
  agentbrake agents --json                  every tracked agent and its state, as JSON
  agentbrake top                            live view by spend rate (q quits)
  agentbrake usage --by model --since 7d    spend per model over the last week
  agentbrake events --kind loop_detected --kind killed --since 2h
  agentbrake events --json --follow         stream new events as JSON lines
  agentbrake report --html spend.html --since 7d   a self-contained HTML spend report
  agentbrake pause /agents/research         hold a cgroup's LLM traffic (root)
  agentbrake resume 4242                    release a process
  agentbrake policy validate /etc/agentbrake/policy.d
  agentbrake fleet status                   hosts seen, fleet budgets' use and this host's lease

Durations: 30s, 10m, 2h, 7d. TARGET: a cgroup path relative to the cgroup v2 mount
(starts with /) or a pid. Exit status: 0 ok, 1 runtime failure (daemon unreachable,
database missing), 2 bad usage or invalid input.
Read-only commands need root or membership in group 'agentbrake'; pause, resume,
kill and policy reload need root.)";

}  // namespace

int main(int argc, char** argv) {
  Globals g;
  CLI::App app{"agentbrake — watch and brake the LLM API calls of AI agents on this host", "agentbrake"};
  app.set_version_flag("--version", std::string("agentbrake ") + AB_VERSION);
  app.footer(kFooter);
  app.fallthrough();  // global flags may also follow the command
  app.require_subcommand(1);
  app.add_option("--db", g.db, "SQLite database (usage, events)")->capture_default_str()->envname("AGENTBRAKE_DB");
  app.add_option("--socket", g.socket, "agentbraked control socket")->capture_default_str()->envname("AGENTBRAKE_SOCKET");

  int rc = kOk;

  bool json_out = false;
  auto* status = app.add_subcommand("status", "Daemon health: version, uptime, policy, probes, holds, loss counters");
  status->add_flag("--json", json_out, "print the status object as JSON");
  status->callback([&] { rc = cmd_status(g, json_out); });

  auto* agents = app.add_subcommand("agents", "Every tracked agent and its state (ok, held, denied, killed)");
  agents->add_flag("--json", json_out, "print a JSON array");
  agents->callback([&] { rc = cmd_agents(g, json_out); });

  std::string top_interval = "1s";
  bool top_once = false;
  auto* top = app.add_subcommand("top", "Live view of agents by spend and token rate (q or Ctrl-C quits)");
  top->add_option("--interval", top_interval, "refresh period")->capture_default_str();
  top->add_flag("--once", top_once, "print one snapshot and exit (also when stdout is not a terminal)");
  top->callback([&] { rc = cmd_top(g, top_interval, top_once); });

  std::string by = "cgroup", since = "24h";
  auto* usage = app.add_subcommand("usage", "Token and spend totals from the database (no daemon needed)");
  usage->add_option("--by", by, "group by cgroup, process, model or provider")->capture_default_str();
  usage->add_option("--since", since, "how far back (30s, 10m, 2h, 7d)")->capture_default_str();
  usage->add_flag("--json", json_out, "print one JSON object");
  usage->callback([&] { rc = cmd_usage(g, by, since, json_out); });

  std::vector<std::string> kinds;
  bool follow = false;
  auto* events = app.add_subcommand("events", "Recorded events, oldest first (no daemon needed)");
  events->add_option("--since", since, "how far back (30s, 10m, 2h, 7d)")->capture_default_str();
  events->add_option("--kind", kinds, "only this kind (repeatable): llm_call, budget_exceeded, loop_detected, "
                                      "paused, resumed, denied, killed, alert_sent, policy_loaded, ...")
      ->allow_extra_args(false);
  events->add_flag("--json", json_out, "one JSON object per line");
  events->add_flag("--follow,-f", follow, "keep printing new events until interrupted");
  events->callback([&] { rc = cmd_events(g, since, kinds, json_out, follow); });

  std::string html_file;
  auto* report = app.add_subcommand("report", "A self-contained HTML spend report (no daemon needed)");
  report->add_option("--html", html_file, "output file (- for standard output)")->required();
  report->add_option("--since", since, "how far back (30s, 10m, 2h, 7d)")->capture_default_str();
  report->callback([&] { rc = ab::cli::run_report(g.db, html_file, since); });

  std::string target;
  for (const char* name : {"pause", "resume", "kill"}) {
    std::string help = std::string(name) == "pause"    ? "Hold the LLM requests of a cgroup or process (root)"
                       : std::string(name) == "resume" ? "Release a held cgroup or process (root)"
                                                       : "Kill every process of a cgroup, or one process (root)";
    auto* sub = app.add_subcommand(name, help);
    sub->add_option("TARGET", target, "cgroup path (/agents/a) or pid")->required();
    sub->add_flag("--json", json_out, "print the daemon's answer as JSON");
    std::string cmd = name;
    sub->callback([&, cmd] { rc = cmd_brake(g, cmd, target, json_out); });
  }

  auto* fleet = app.add_subcommand("fleet", "Budgets shared across hosts through Redis (scope: fleet)");
  fleet->require_subcommand(1);
  auto* fs = fleet->add_subcommand("status", "Hosts seen; per fleet bucket the window's use across hosts and this host's lease");
  fs->add_flag("--json", json_out, "print the fleet object as JSON");
  fs->callback([&] { rc = cmd_fleet_status(g, json_out); });

  auto* policy = app.add_subcommand("policy", "Validate, show or reload the policy");
  policy->require_subcommand(1);
  std::string policy_path;
  bool no_owner_check = false;
  auto* pv = policy->add_subcommand("validate", "Check a policy file or directory without a daemon; errors name file:line");
  pv->add_option("PATH", policy_path, "a YAML file or a directory of *.yaml")->required();
  pv->add_flag("--no-owner-check", no_owner_check,
               "skip the root-ownership check the daemon applies (for drafts)");
  pv->callback([&] { rc = cmd_policy_validate(policy_path, no_owner_check); });
  auto* ps = policy->add_subcommand("show", "The policy in force, as the daemon compiled it");
  ps->add_flag("--json", json_out, "compact JSON on one line");
  ps->callback([&] { rc = cmd_policy_show(g, json_out); });
  auto* pr = policy->add_subcommand("reload", "Ask the daemon to reload its policy (root)");
  pr->add_flag("--json", json_out, "print the daemon's answer as JSON");
  pr->callback([&] { rc = cmd_policy_reload(g, json_out); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }
  std::fflush(stdout);
  return rc;
}
