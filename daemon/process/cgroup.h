// cgroup v2 helpers: find the v2 mount, read a process's v2 path, map cgroup ids (what BPF's
// bpf_get_current_cgroup_id() returns: the inode number of the cgroup directory) to paths and
// back, and the cgroupfs side effects the brake needs (freeze, kill, list members).
//
// Paths. A cgroup "path" (`rel` below) is always relative to the cgroup v2 mount and starts
// with "/", exactly as /proc/<pid>/cgroup prints it and as the public interface names cgroups
// ("/" is the root cgroup, "/agents/a" a child). `mount` is the absolute directory the v2
// hierarchy is mounted on (find_cgroup2_mount()); every function takes it as a parameter so
// tests can point it at a plain directory tree.
//
// Errors. Functions that change state return a CgResult: `err` is 0 on success or a negative
// errno (-EINVAL for a bad path, -ENOENT for a missing cgroup or a kernel without the control
// file, -EACCES/-EPERM without privilege, ...). It converts to true on success only.
//
// Not thread-safe: CgroupResolver is meant to be owned by the daemon's event loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ab::process {

// Outcome of a cgroupfs write. `if (cgroup_freeze(...))` tests for success; `.err` is the
// negative errno on failure (0 on success).
struct [[nodiscard]] CgResult {
	int err = 0;
	bool ok() const { return err == 0; }
	explicit operator bool() const { return err == 0; }
};

// Mount point of the cgroup v2 hierarchy (the first "cgroup2" entry) in a mountinfo file.
// Octal escapes of the mount point (\040 space, \011 tab, \012 newline, \134 backslash) are
// decoded. nullopt when the file is unreadable or has no cgroup2 mount.
std::optional<std::string> find_cgroup2_mount(const std::string& mountinfo = "/proc/self/mountinfo");

// Decode the octal escapes the kernel uses in /proc/*/mountinfo fields.
std::string unescape_mountinfo(std::string_view field);

// The v2 path of `pid`: the "0::<path>" line of <proc_root>/<pid>/cgroup (hybrid hosts also
// print v1 lines; they are ignored). A process in a cgroup that was removed reads
// "0::/path (deleted)"; the suffix is stripped. nullopt when the process is gone or the file
// has no v2 line. The path is relative to the reader's cgroup namespace (the daemon runs in
// the host's, where it is relative to the v2 mount). Under a --cgroup-scope
// (cgroup_scope.h) the path is relative to the scope, and nullopt for a process outside it.
std::optional<std::string> read_cgroup_path(int pid, const std::string& proc_root = "/proc");

// Parse the content of a /proc/<pid>/cgroup file (the "0::" line). Exposed for tests.
std::optional<std::string> parse_cgroup_v2_line(std::string_view content);

// True when `rel` is a well-formed cgroup path: starts with "/", no "." or ".." element, no
// empty element except a single trailing "/" (which callers should not send), no NUL.
bool valid_cgroup_path(std::string_view rel);

// mount + rel ("/" maps to the mount itself).
std::string cgroup_abs_path(const std::string& mount, std::string_view rel);

// The cgroup id of `rel`: st_ino of its directory. nullopt when it does not exist.
std::optional<uint64_t> cgroup_id_of(const std::string& mount, std::string_view rel);

// The systemd unit that owns a cgroup: the last path element ending in ".service" or ".scope"
// ("/system.slice/foo.service" -> "foo.service", "/user.slice/user-1000.slice/
// user@1000.service/app.slice/x.scope" -> "x.scope", "/system.slice/foo.service/worker" ->
// "foo.service"). nullopt when no element is a service or a scope (slices own no process).
std::optional<std::string> systemd_unit_of(const std::string& cgroup_path);

// ---- id <-> path -----------------------------------------------------------------------

class CgroupResolver {
public:
	struct Options {
		size_t max_cached = 65536;    // cache cap; the cache is cleared when full (counted)
		size_t max_scan_dirs = 100000; // a rescan visits at most this many directories
		size_t max_scan_depth = 64;    // and descends at most this deep
		// An id that a rescan did not find is not rescanned for again before this long
		// (bounds the cost of events carrying ids of cgroups that are already gone).
		std::chrono::milliseconds negative_ttl{1000};
		size_t max_negative = 4096;
		// Rescans on a miss are rate-limited (a token bucket: this many at once, then one per
		// refill period): a storm of execs in new or vanished cgroups costs at most a few full
		// walks per second. A miss without a token is answered "unknown" and counted.
		size_t rescan_burst = 8;
		std::chrono::milliseconds rescan_refill{250};
	};
	struct Stats {
		uint64_t hits = 0, misses = 0, rescans = 0, rescans_truncated = 0, cache_resets = 0,
		         negative_hits = 0, rescans_deferred = 0;
	};

	explicit CgroupResolver(std::string mount);
	CgroupResolver(std::string mount, Options opts);

	const std::string& mount() const { return mount_; }

	// Path of the cgroup whose id is `id`. Served from the cache (no syscall); on a miss the
	// whole tree under the mount is rescanned once (bounded by Options), replacing the cache.
	// nullopt for an id that does not exist (any more). The root cgroup maps to "/".
	// Kernel cgroup ids are never reused, so a cached pair stays true until the cgroup is
	// removed; call forget() then (or let the cache cap / the next rescan drop it).
	std::optional<std::string> path_for_id(uint64_t id);

	// The id of `rel` (stats the directory every time: a removed and re-created cgroup gets
	// a new id) and caches the pair. nullopt when `rel` is invalid or missing.
	std::optional<uint64_t> id_for_path(const std::string& rel);

	// Drop an id from the cache (the cgroup was removed).
	void forget(uint64_t id);

	// Rescan the whole tree now. Returns the number of cgroups found.
	size_t rescan();

	size_t cached() const { return by_id_.size(); }
	const Stats& stats() const { return stats_; }

private:
	void remember(uint64_t id, std::string path);

	std::string mount_;
	Options opts_;
	std::unordered_map<uint64_t, std::string> by_id_;
	std::unordered_map<uint64_t, std::chrono::steady_clock::time_point> negative_;
	Stats stats_;
	double rescan_tokens_ = -1;  // < 0: not started (a full bucket)
	std::chrono::steady_clock::time_point rescan_tokens_at_{};
	bool take_rescan_token(std::chrono::steady_clock::time_point now);
};

// ---- the brake's cgroupfs side effects -------------------------------------------------
// All refuse the root cgroup ("/": it has no cgroup.freeze or cgroup.kill, and acting on the
// whole host is never meant) and malformed paths with -EINVAL.

// Write "1" (freeze) or "0" (thaw) to <cgroup>/cgroup.freeze. Freezing is asynchronous: the
// cgroup reports "frozen 1" in cgroup.events once every task is stopped (wait_frozen()).
// A frozen process is invisible to its parent (unlike SIGSTOP). -ENOENT: no such cgroup or
// no cgroup.freeze (kernel < 5.2).
CgResult cgroup_freeze(const std::string& mount, const std::string& rel, bool freeze);

// Write "1" to <cgroup>/cgroup.kill: SIGKILL every process of the cgroup and its descendants,
// atomically with respect to forks. -ENOENT: no such cgroup or no cgroup.kill (kernel < 5.14;
// the caller may fall back to signalling cgroup_procs()).
CgResult cgroup_kill(const std::string& mount, const std::string& rel);

// The same without cgroup.kill (kernels before 5.14): freeze the cgroup (so members cannot
// fork while being signalled), SIGKILL every pid of it and its descendants until none is left
// or `timeout` passes (-ETIMEDOUT), thaw (a frozen task still dies of SIGKILL). Blocks up to
// `timeout`. -EPERM when a member could not be signalled.
CgResult cgroup_kill_by_signal(const std::string& mount, const std::string& rel,
                               std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

// The pids (thread-group ids) in <cgroup>/cgroup.procs, in file order (not recursive).
// Empty when the cgroup is missing or empty; `err` (optional) receives 0 or a negative errno.
std::vector<int> cgroup_procs(const std::string& mount, const std::string& rel, int* err = nullptr);

// The pids of the cgroup and all its descendant cgroups (bounded depth, as the resolver).
std::vector<int> cgroup_procs_recursive(const std::string& mount, const std::string& rel,
                                        int* err = nullptr);

// Create the cgroup directory `rel` (its parent must exist). -EEXIST when it exists.
CgResult cgroup_create(const std::string& mount, const std::string& rel);

// Remove the (empty) cgroup directory `rel`. -EBUSY while it has processes or children.
CgResult cgroup_remove(const std::string& mount, const std::string& rel);

// Move process `pid` into `rel` (write it to cgroup.procs). The root cgroup is allowed here.
CgResult cgroup_attach(const std::string& mount, const std::string& rel, int pid);

// "frozen 1" in <cgroup>/cgroup.events. nullopt when the file is missing or unreadable.
std::optional<bool> is_frozen(const std::string& mount, const std::string& rel);

// "populated 1" in <cgroup>/cgroup.events (the cgroup or a descendant has a process).
std::optional<bool> is_populated(const std::string& mount, const std::string& rel);

// Wait until is_frozen() == want (polls cgroup.events, which the kernel notifies on change).
// Returns true when reached within `timeout`.
bool wait_frozen(const std::string& mount, const std::string& rel, bool want,
                 std::chrono::milliseconds timeout);

} // namespace ab::process
