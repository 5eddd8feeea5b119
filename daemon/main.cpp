// agentbraked — watches every outbound LLM API call on this host and brakes runaway agents.
// Flags and behaviour: docs/interface.md ("agentbraked — the daemon"). The work is in daemon/core.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/daemon.h"
#include "process/cgroup.h"

#ifndef AB_VERSION
#define AB_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
  // Block the signals the loop reads from its signalfd before any thread exists, so every
  // thread inherits the mask and none of them takes SIGTERM by default action.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ab::core::DaemonOptions opts;
  opts.version = AB_VERSION;
  std::string policy, state_dir, level = "info";
  bool release_all = false;

  CLI::App app{"agentbraked — sees every LLM API call on this host (eBPF, no proxy) and enforces\n"
               "budgets and loop limits per cgroup, agent tree and process. Runs as root.",
               "agentbraked"};
  app.add_option("--policy", policy,
                 "policy YAML file, or a directory whose *.yaml files are merged in name order\n"
                 "(default: /etc/agentbrake/policy.d, else the built-in default policy)");
  app.add_option("--db", opts.db_path, "SQLite database of calls and events")->capture_default_str();
  app.add_option("--socket", opts.socket_path, "control socket for the agentbrake CLI")->capture_default_str();
  app.add_option("--state-dir", state_dir,
                 "directory for runtime state; pinned maps go to a bpffs directory derived from it\n"
                 "(default: /sys/fs/bpf/agentbrake and /run/agentbrake)");
  app.add_flag("--dry-run", opts.dry_run, "decide and record everything, enforce nothing");
  app.add_option("--ring-buffer-mb", opts.ring_buffer_mb,
                 "event ring buffer size in MiB, a power of two from 1 to 1024; the daemon's RSS\n"
                 "grows by twice this (the kernel maps it twice); records it cannot take are\n"
                 "counted as ring_buffer_lost in status and /metrics")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            unsigned long v = 0;
            try {
              v = std::stoul(s);
            } catch (...) {
              return "not a number: " + s;
            }
            if (v < 1 || v > 1024 || (v & (v - 1)) != 0) return "must be a power of two from 1 to 1024, got " + s;
            return "";
          },
          "POW2 1..1024"))
      ->capture_default_str();
  app.add_option("--cgroup-scope", opts.cgroup_scope,
                 "watch and enforce only inside this cgroup v2 subtree (a path as /proc/PID/cgroup\n"
                 "prints it, e.g. /agents.slice), naming cgroups relative to it in policies,\n"
                 "buckets, events and CLI output; two daemons with disjoint scopes never touch\n"
                 "each other's processes")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            while (s.size() > 1 && s.back() == '/') s.pop_back();
            if (!ab::process::valid_cgroup_path(s))
              return "must be an absolute cgroup path without . or .. elements, got " + s;
            return "";
          },
          "CGROUP"))
      ->capture_default_str();
  app.add_flag("--release-all", release_all,
               "release every hold recorded in the state dir, then exit (the unit's stop path)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.footer(
      "Examples (as root):\n"
      "  agentbraked                                   built-in default policy, default paths\n"
      "  agentbraked --policy /etc/agentbrake/policy.d --dry-run\n"
      "  agentbraked --release-all                     after a crash: let every held agent go\n"
      "Signals: SIGHUP reloads the policy; SIGTERM/SIGINT release holds, flush and exit 0.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto logger = spdlog::stderr_color_mt("agentbraked");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::debug);

  if (!policy.empty()) opts.policy_path = policy;
  if (!state_dir.empty()) opts.state_dir = state_dir;
  if (geteuid() != 0) {
    spdlog::error("agentbraked must run as root (it loads eBPF programs)");
    return 1;
  }
  if (release_all) return ab::core::release_all(opts);
  return ab::core::run_daemon(opts);
}
