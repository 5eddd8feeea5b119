// The daemon's cgroup scope (agentbraked --cgroup-scope PATH, docs/interface.md): the daemon
// watches and enforces only inside one cgroup subtree and names cgroups relative to it, as a
// process inside a cgroup namespace rooted there would see them. With scope "/S", the host
// cgroup "/S/agents/a" is "/agents/a" everywhere (policy matching, buckets, events, CLI), "/S"
// itself is "/", and a process in "/T" is outside: it does not exist for this daemon.
//
// The daemon keeps a cgroup "mount" that is the scope's directory (/sys/fs/cgroup/S), so every
// cgroupfs helper of cgroup.h already acts inside the scope given a relative path; these
// functions translate what the kernel reports in host terms (/proc/<pid>/cgroup).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ab::process {

// `host_path` (as /proc/<pid>/cgroup prints it in the host's cgroup namespace) relative to
// `scope`: scope "/S": "/S" -> "/", "/S/agents/a" -> "/agents/a", "/ST" or "/T" -> nullopt
// (outside). Scope "/" returns host_path unchanged. nullopt also for a malformed path.
std::optional<std::string> cgroup_path_in_scope(std::string_view scope, std::string_view host_path);

// The host path of `rel` (a path relative to `scope`): scope "/S", "/agents/a" -> "/S/agents/a".
// nullopt when `rel` is malformed or would leave the scope ("/../x", "/a/../../x": any "." or
// ".." element is refused, so no spelling escapes).
std::optional<std::string> cgroup_host_path(std::string_view scope, std::string_view rel);

// Number of elements of a valid path: "/" 0, "/S" 1, "/S/T" 2. It is the cgroup's level in the
// hierarchy, which the kernel side compares with bpf_get_current_ancestor_cgroup_id().
unsigned cgroup_path_depth(std::string_view path);

// The process-wide scope ("/" by default: the whole host). Set once at start-up, before any
// other thread runs; read_cgroup_path() and read_proc() honour it (a process outside the
// scope reads as absent). `scope` must be a valid cgroup path.
void set_cgroup_scope(std::string scope);
const std::string& cgroup_scope();
bool cgroup_scope_is_host();

// The v2 path of `pid` in host terms, ignoring the scope (read_cgroup_path() without the
// translation). nullopt when the process is gone or has no v2 line.
std::optional<std::string> read_host_cgroup_path(int pid, const std::string& proc_root = "/proc");

// Whether `pid` is inside the scope right now (always true for scope "/" while the process
// exists). A process that is gone, or whose cgroup cannot be read, is not.
bool pid_in_cgroup_scope(int pid, const std::string& proc_root = "/proc");

// The scope's root on this host, checked: `scope` names an existing directory of the cgroup v2
// hierarchy mounted at `mount` (a cgroup, not any directory: it is on a cgroup2 file system and
// has cgroup.procs). nullopt with `error` saying what is wrong otherwise.
struct ScopeRoot {
	std::string dir; // mount + scope: the daemon's cgroup "mount" from now on
	uint64_t id = 0; // its cgroup id (inode), what the kernel side compares
	unsigned level = 0;
};
std::optional<ScopeRoot> open_cgroup_scope(const std::string& mount, const std::string& scope, std::string* error);

} // namespace ab::process
