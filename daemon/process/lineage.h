// The live process model: who forked whom, what each process runs, its cgroup, and which
// agent tree it belongs to. Fed by the BPF fork/exec/exit events and by /proc scans (at start,
// and whenever the daemon wants to resynchronize after lost events). See docs/lineage.md.
//
// THE TREE-ROOT RULE
//   An agent tree groups an agent with the sub-agents and tools it spawned. The root of a
//   process P is found by walking from P up its recorded parents:
//     - the walk stays inside P's cgroup: it stops before the first ancestor in another
//       cgroup (a cgroup boundary: an agent moved into its own cgroup roots its own tree);
//     - it stops before pid 1 (init never belongs to a tree);
//     - the root is the OLDEST process on that walk (P included) that is not "transparent":
//       a shell, terminal multiplexer or emulator, init / service manager / supervisor /
//       container init, session or privilege helper, or a command wrapper
//       (default_transparent_comms(); matched on comm, tmux by prefix). Transparent processes
//       are walked THROUGH: an agent's `sh -c "python sub.py"` keeps the sub-agent in the
//       agent's tree, and the user's login shell above the agent never becomes its root;
//     - when nothing on the walk qualifies (an interactive shell with no agent above it), P is
//       its own root. So tree_root() of a tracked process is never 0.
//   Examples: python started from bash -> the python. python spawning python sub-agents and a
//   curl tool (directly or through sh -c) -> all rooted at the top python. An agent moved
//   into another cgroup before exec, parent a shell elsewhere -> the agent.
//
// PARENT EXIT (re-parenting)
//   The kernel re-parents the children of an exiting process to a subreaper or init. The
//   table does not follow that: it keeps the lineage of who spawned whom. When a process exits
//   its children are marked `parent_gone` and keep the tree root they had (`anchor_root`), and
//   so do their descendants: a tree's membership and root pid never change because a
//   process in the middle (or the root itself) exited. A dead root's pid stays the tree's id
//   while members live. (A pid reused while members of its dead tree still live could share
//   that id; pids wrap at pid_max, 4M on 64-bit hosts.)
//
// WHEN ROOTS CHANGE
//   Roots are computed in O(depth) when a process is forked, exec'd, moves cgroup, is
//   upserted or scanned, and cached; tree_root() is O(1). An exec or a cgroup move
//   recomputes the process and its live descendants (its eligibility or cgroup is part of
//   their walk); nothing else moves an existing root.
//
// BOUNDS
//   Entries are removed at exit. A lost exit event leaves an entry behind until the next
//   scan() (which removes processes /proc no longer lists, and replaces reused pids, told
//   apart by start time) or until the cap (Options::max_entries) evicts the least recently
//   touched entries, which is counted in stats().evicted.
//
// The caller passes process-level events only: pid = thread-group id, fork = a new thread
// group (not a thread), exit = the thread group's exit. Not thread-safe (the daemon's event
// loop owns it).
#pragma once

#include "process/cgroup.h"
#include "process/procfs.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ab::process {

// The comm names that never root a tree (exact match), plus "tmux" matched as a prefix
// (tmux renames itself "tmux: server" / "tmux: client"). See docs/lineage.md for why each.
const std::vector<std::string>& default_transparent_comms();
const std::vector<std::string>& default_transparent_prefixes();

class ProcessTable {
public:
	struct Options {
		size_t max_entries = 65536;
		std::vector<std::string> transparent_comms = default_transparent_comms();
		std::vector<std::string> transparent_prefixes = default_transparent_prefixes();
	};

	struct Entry {
		int pid = 0;
		int ppid = 0;             // recorded parent: the process that forked it (0: unknown)
		bool parent_gone = false; // that parent exited (or was evicted): lineage above is cut
		int anchor_root = 0;      // when parent_gone: the root above it at that time (0: none)
		std::string comm, exe;
		uint32_t uid = 0;
		uint64_t cgroup_id = 0; // 0: unknown (learned from /proc only)
		std::string cgroup;     // "" : unknown
		uint64_t start_ns = 0;  // task->start_boottime; tick-granular when learned from /proc; 0: unknown
		int root = 0;           // cached tree root
		std::vector<int> children; // live children whose recorded parent this is
		uint64_t touched = 0;      // recency for eviction
	};

	struct Stats {
		uint64_t forks = 0, execs = 0, exits = 0, unknown_exits = 0, cgroup_moves = 0;
		uint64_t scans = 0, scan_removed = 0; // entries a scan found gone from /proc
		uint64_t reused_pids = 0;             // an entry replaced by a new process on its pid
		uint64_t evicted = 0;                 // entries dropped by the cap
	};

	ProcessTable();
	explicit ProcessTable(Options opts);

	// A new process `child` (start_ns: its task->start_boottime) forked by `parent`. It
	// inherits the parent's comm, exe, uid and cgroup until its exec. A child pid already in
	// the table with another start time is a reused pid: the old entry is replaced.
	void on_fork(int parent, int child, uint64_t start_ns);

	// `pid` exec'd. start_ns (optional, 0: unknown) tells a reused pid apart. ppid (optional:
	// the exec event's real parent) gives an unknown pid its parent; the recorded parent of a
	// known pid is kept (the event's ppid may be a reaper the process was re-parented to).
	void on_exec(int pid, std::string comm, std::string exe, uint32_t uid, uint64_t cgroup_id,
	             std::string cgroup, uint64_t start_ns = 0, int ppid = 0);

	// The thread group `pid` exited. Its children keep their tree roots (see above). With a
	// start_ns (optional: the exiting task's start_boottime) an exit of a process that started
	// before the tracked one (an earlier owner of the pid) is ignored and counted as unknown;
	// a later start is accepted, since the last thread to exit need not be the leader.
	void on_exit(int pid, uint64_t start_ns = 0);

	// `pid` was seen in another cgroup (an event carried a different cgroup id): it left its
	// tree if the new cgroup differs from its lineage's. Unknown pids are ignored.
	void on_cgroup(int pid, uint64_t cgroup_id, std::string cgroup);

	// Add or refresh one process from /proc. Keeps the recorded lineage of a known process
	// (a /proc ppid that differs from the recorded parent means the parent exited).
	void upsert(const ProcInfo& info);

	// Resynchronize with the whole of proc_root: add what is missing, refresh what is known,
	// drop entries of processes that are gone, skip kernel threads. With a resolver, entries
	// whose cgroup id is unknown get it from their path (one stat per distinct cgroup).
	void scan(const std::string& proc_root = "/proc", CgroupResolver* ids = nullptr);

	const Entry* find(int pid) const;
	int tree_root(int pid) const; // 0 when pid is not tracked
	std::vector<int> tree_members(int root) const; // ascending; the root itself if alive
	size_t size() const { return entries_.size(); }
	std::vector<int> pids() const; // ascending
	const Stats& stats() const { return stats_; }
	bool is_transparent(std::string_view comm) const;

private:
	Entry* get(int pid);
	Entry& create(int pid);
	void remove(int pid);
	void link(Entry& e);
	void unlink(Entry& e);
	const Entry* parent_of(const Entry& e) const;
	int compute_root(const Entry& e) const;
	void set_root(Entry& e, int root);
	void recompute_subtree(int pid);
	void refresh(Entry& e, const ProcInfo& info);
	void touch(Entry& e) { e.touched = ++clock_; }
	void evict_if_needed();
	bool same_cgroup(const Entry& a, const Entry& b) const;
	bool set_cgroup(Entry& e, uint64_t id, std::string path);

	Options opts_;
	std::unordered_set<std::string> transparent_;
	std::unordered_map<int, Entry> entries_;
	std::unordered_map<int, std::unordered_set<int>> members_; // root -> pids
	Stats stats_;
	uint64_t clock_ = 0;
};

} // namespace ab::process
