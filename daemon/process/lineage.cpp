#include "process/lineage.h"

#include <algorithm>
#include <utility>

namespace ab::process {

namespace {

// A walk never goes deeper than this (real process trees are far shallower; it also bounds a
// walk over inconsistent data).
constexpr size_t kMaxDepth = 1024;

uint64_t ticks_of(uint64_t ns) { return boottime_ns_to_ticks(ns); }

uint64_t ns_of_ticks(uint64_t ticks) {
	return ticks * (1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec()));
}

// Same process when either start is unknown or both agree at tick granularity.
bool same_start(uint64_t a_ns, uint64_t b_ns) { return a_ns == 0 || b_ns == 0 || ticks_of(a_ns) == ticks_of(b_ns); }

} // namespace

const std::vector<std::string>& default_transparent_comms() {
	static const std::vector<std::string> v = {
	    // shells
	    "sh", "bash", "dash", "zsh", "fish", "ksh", "ksh93", "mksh", "pdksh", "tcsh", "csh", "ash",
	    "yash", "pwsh", "nu",
	    // terminal multiplexers ("tmux*" by prefix) and emulators, `script`
	    "screen", "SCREEN", "zellij", "abduco", "dtach", "script", "xterm", "urxvt", "konsole",
	    "gnome-terminal-", "xfce4-terminal", "mate-terminal", "lxterminal", "tilix", "alacritty",
	    "kitty", "wezterm-gui", "foot",
	    // init, service managers, supervisors, schedulers, container inits and shims
	    "systemd", "init", "(sd-pam)", "runit", "runsv", "runsvdir", "s6-svscan", "s6-supervise",
	    "supervisord", "cron", "crond", "anacron", "atd", "tini", "dumb-init", "catatonit",
	    "docker-init", "containerd-shim", "conmon",
	    // session and privilege helpers
	    "sshd", "sshd-session", "login", "agetty", "su", "sudo", "doas", "pkexec", "runuser",
	    "setpriv",
	    // command wrappers (most exec in place; timeout, time, flock stay as the parent)
	    "env", "nohup", "nice", "ionice", "stdbuf", "setsid", "chrt", "taskset", "timeout", "time",
	    "flock",
	};
	return v;
}

const std::vector<std::string>& default_transparent_prefixes() {
	static const std::vector<std::string> v = {"tmux"};
	return v;
}

ProcessTable::ProcessTable() : ProcessTable(Options{}) {}

ProcessTable::ProcessTable(Options opts) : opts_(std::move(opts)) {
	transparent_.insert(opts_.transparent_comms.begin(), opts_.transparent_comms.end());
	if (opts_.max_entries == 0) opts_.max_entries = 1;
}

bool ProcessTable::is_transparent(std::string_view comm) const {
	if (comm.empty()) return false; // unknown: a process of its own
	if (transparent_.count(std::string(comm))) return true;
	for (const auto& p : opts_.transparent_prefixes)
		if (comm.size() >= p.size() && comm.substr(0, p.size()) == p) return true;
	return false;
}

ProcessTable::Entry* ProcessTable::get(int pid) {
	auto it = entries_.find(pid);
	return it == entries_.end() ? nullptr : &it->second;
}

const ProcessTable::Entry* ProcessTable::find(int pid) const {
	auto it = entries_.find(pid);
	return it == entries_.end() ? nullptr : &it->second;
}

int ProcessTable::tree_root(int pid) const {
	const Entry* e = find(pid);
	return e ? e->root : 0;
}

std::vector<int> ProcessTable::tree_members(int root) const {
	std::vector<int> out;
	auto it = members_.find(root);
	if (it == members_.end()) return out;
	out.assign(it->second.begin(), it->second.end());
	std::sort(out.begin(), out.end());
	return out;
}

std::vector<int> ProcessTable::pids() const {
	std::vector<int> out;
	out.reserve(entries_.size());
	for (const auto& [pid, e] : entries_) out.push_back(pid);
	std::sort(out.begin(), out.end());
	return out;
}

bool ProcessTable::same_cgroup(const Entry& a, const Entry& b) const {
	if (a.cgroup_id != 0 && b.cgroup_id != 0) return a.cgroup_id == b.cgroup_id;
	if (!a.cgroup.empty() && !b.cgroup.empty()) return a.cgroup == b.cgroup;
	return true; // unknown on one side: no evidence of a boundary
}

// Record the cgroup an event saw the process in (either part may be unknown: 0 / "").
// Returns true when that is evidence of a move. A changed id with no path leaves the path
// unknown rather than stale.
bool ProcessTable::set_cgroup(Entry& e, uint64_t id, std::string path) {
	bool moved;
	if (id && e.cgroup_id)
		moved = id != e.cgroup_id;
	else
		moved = !path.empty() && !e.cgroup.empty() && path != e.cgroup;
	if (id) {
		if (id != e.cgroup_id && path.empty()) e.cgroup.clear();
		e.cgroup_id = id;
	}
	if (!path.empty()) {
		if (path != e.cgroup && !id) e.cgroup_id = 0;
		e.cgroup = std::move(path);
	}
	return moved;
}

// The recorded parent, if it is still the process that forked `e`: a parent never started
// after its child (this rejects a pid reused since).
const ProcessTable::Entry* ProcessTable::parent_of(const Entry& e) const {
	if (e.parent_gone || e.ppid <= 0 || e.ppid == e.pid) return nullptr;
	const Entry* p = find(e.ppid);
	if (!p) return nullptr;
	if (p->start_ns && e.start_ns && ticks_of(p->start_ns) > ticks_of(e.start_ns)) return nullptr;
	return p;
}

int ProcessTable::compute_root(const Entry& e) const {
	int root = 0;
	const Entry* cur = &e;
	for (size_t depth = 0; cur && depth < kMaxDepth; ++depth) {
		if (cur->pid == 1) break;
		if (cur != &e && !same_cgroup(*cur, e)) break;
		if (!is_transparent(cur->comm)) root = cur->pid;
		if (cur->parent_gone) {
			if (cur->anchor_root) root = cur->anchor_root;
			break;
		}
		cur = parent_of(*cur);
	}
	return root ? root : e.pid;
}

void ProcessTable::set_root(Entry& e, int root) {
	if (e.root == root) return;
	if (e.root) {
		auto it = members_.find(e.root);
		if (it != members_.end()) {
			it->second.erase(e.pid);
			if (it->second.empty()) members_.erase(it);
		}
	}
	e.root = root;
	if (root) members_[root].insert(e.pid);
}

void ProcessTable::recompute_subtree(int pid) {
	std::vector<int> todo{pid};
	size_t guard = 0;
	while (!todo.empty() && guard++ <= entries_.size()) {
		int p = todo.back();
		todo.pop_back();
		auto it = entries_.find(p);
		if (it == entries_.end()) continue;
		Entry& e = it->second;
		set_root(e, compute_root(e));
		todo.insert(todo.end(), e.children.begin(), e.children.end());
	}
}

void ProcessTable::link(Entry& e) {
	Entry* p = e.parent_gone || e.ppid <= 0 || !parent_of(e) ? nullptr : get(e.ppid);
	if (!p) return;
	if (std::find(p->children.begin(), p->children.end(), e.pid) == p->children.end())
		p->children.push_back(e.pid);
}

void ProcessTable::unlink(Entry& e) {
	if (e.ppid <= 0) return;
	auto it = entries_.find(e.ppid);
	if (it == entries_.end()) return;
	auto& ch = it->second.children;
	auto pos = std::find(ch.begin(), ch.end(), e.pid);
	if (pos != ch.end()) {
		*pos = ch.back();
		ch.pop_back();
	}
}

ProcessTable::Entry& ProcessTable::create(int pid) {
	Entry& e = entries_[pid];
	e = Entry{};
	e.pid = pid;
	touch(e);
	return e;
}

void ProcessTable::remove(int pid) {
	auto it = entries_.find(pid);
	if (it == entries_.end()) return;
	Entry& e = it->second;
	unlink(e);
	for (int c : e.children) {
		auto cit = entries_.find(c);
		if (cit == entries_.end()) continue;
		Entry& child = cit->second;
		if (child.parent_gone || child.ppid != pid) continue;
		child.parent_gone = true;
		child.anchor_root = child.root != child.pid ? child.root : 0;
	}
	set_root(e, 0);
	entries_.erase(it);
}

void ProcessTable::evict_if_needed() {
	if (entries_.size() <= opts_.max_entries) return;
	// Drop the least recently touched 1/16 (at least the excess) in one go: amortized O(1).
	size_t n = std::max(entries_.size() - opts_.max_entries, opts_.max_entries / 16);
	n = std::min(n, entries_.size() - 1); // never the entry just touched
	std::vector<std::pair<uint64_t, int>> by_age;
	by_age.reserve(entries_.size());
	for (const auto& [pid, e] : entries_) by_age.emplace_back(e.touched, pid);
	std::nth_element(by_age.begin(), by_age.begin() + static_cast<std::ptrdiff_t>(n), by_age.end());
	for (size_t i = 0; i < n; ++i) remove(by_age[i].second);
	stats_.evicted += n;
}

void ProcessTable::on_fork(int parent, int child, uint64_t start_ns) {
	++stats_.forks;
	if (child <= 0 || child == parent) return;
	if (Entry* old = get(child)) {
		if (same_start(old->start_ns, start_ns)) {
			// a duplicate, or the exec arrived first: learn the parent if unknown
			if (old->ppid <= 0 && !old->parent_gone) {
				old->ppid = parent;
				if (!old->start_ns) old->start_ns = start_ns;
				link(*old);
				recompute_subtree(child);
			}
			touch(*old);
			return;
		}
		++stats_.reused_pids;
		remove(child);
	}
	Entry& e = create(child);
	e.ppid = parent;
	e.start_ns = start_ns;
	if (const Entry* p = find(parent)) {
		e.comm = p->comm;
		e.exe = p->exe;
		e.uid = p->uid;
		e.cgroup_id = p->cgroup_id;
		e.cgroup = p->cgroup;
	}
	link(e);
	set_root(e, compute_root(e));
	evict_if_needed();
}

void ProcessTable::on_exec(int pid, std::string comm, std::string exe, uint32_t uid, uint64_t cgroup_id,
                           std::string cgroup, uint64_t start_ns, int ppid) {
	++stats_.execs;
	if (pid <= 0) return;
	Entry* e = get(pid);
	if (e && !same_start(e->start_ns, start_ns)) {
		++stats_.reused_pids;
		remove(pid);
		e = nullptr;
	}
	bool created = false, relinked = false;
	if (!e) {
		e = &create(pid);
		e->start_ns = start_ns;
		created = true;
	}
	if (!e->start_ns) e->start_ns = start_ns;
	if (e->ppid <= 0 && !e->parent_gone && ppid > 0 && ppid != pid) {
		e->ppid = ppid;
		link(*e);
		relinked = true; // lineage learned: recompute below
	}
	const bool was_transparent = is_transparent(e->comm);
	const bool moved = set_cgroup(*e, cgroup_id, std::move(cgroup));
	e->comm = std::move(comm);
	e->exe = std::move(exe);
	e->uid = uid;
	if (moved) {
		e->anchor_root = 0;
		++stats_.cgroup_moves;
	}
	touch(*e);
	if (created || relinked || moved || was_transparent != is_transparent(e->comm))
		recompute_subtree(pid);
	else
		set_root(*e, compute_root(*e));
	if (created) evict_if_needed();
}

void ProcessTable::on_exit(int pid, uint64_t start_ns) {
	++stats_.exits;
	const Entry* e = find(pid);
	// The exit tracepoint runs in the process's last thread, which may not be its leader:
	// its start time is then later than the process's. Only an exit of something that
	// started BEFORE the tracked process (an earlier owner of the pid) is not this one's.
	if (!e || (e->start_ns && start_ns && ticks_of(start_ns) < ticks_of(e->start_ns))) {
		++stats_.unknown_exits;
		return;
	}
	remove(pid);
}

void ProcessTable::on_cgroup(int pid, uint64_t cgroup_id, std::string cgroup) {
	Entry* e = get(pid);
	if (!e) return;
	const bool moved = set_cgroup(*e, cgroup_id, std::move(cgroup));
	touch(*e);
	if (!moved) return;
	++stats_.cgroup_moves;
	e->anchor_root = 0; // it left the tree it was anchored in
	recompute_subtree(pid);
}

// Refresh a known entry (same process) from /proc, without recomputing roots.
void ProcessTable::refresh(Entry& e, const ProcInfo& info) {
	if (!info.comm.empty()) e.comm = info.comm;
	if (!info.exe.empty()) e.exe = info.exe;
	e.uid = info.uid;
	if (!info.cgroup.empty() && info.cgroup != e.cgroup) {
		if (!e.cgroup.empty()) {
			++stats_.cgroup_moves;
			e.anchor_root = 0;
		}
		e.cgroup = info.cgroup;
		e.cgroup_id = 0; // the id of the new path is not known here
	}
	if (!e.start_ns) e.start_ns = ns_of_ticks(info.start_ticks);
	if (!e.parent_gone) {
		if (e.ppid <= 0) {
			e.ppid = info.ppid;
		} else if (info.ppid != e.ppid) {
			// re-parented: the recorded parent exited and its exit was not seen
			unlink(e);
			e.parent_gone = true;
			e.anchor_root = e.root && e.root != e.pid ? e.root : 0;
		}
	}
	touch(e);
}

void ProcessTable::upsert(const ProcInfo& info) {
	if (info.pid <= 0 || info.kernel_thread) return;
	Entry* e = get(info.pid);
	if (e && !same_start(e->start_ns, ns_of_ticks(info.start_ticks))) {
		++stats_.reused_pids;
		remove(info.pid);
		e = nullptr;
	}
	if (!e) {
		e = &create(info.pid);
		e->ppid = info.ppid;
		e->start_ns = ns_of_ticks(info.start_ticks);
		e->comm = info.comm;
		e->exe = info.exe;
		e->uid = info.uid;
		e->cgroup = info.cgroup;
		link(*e);
		set_root(*e, compute_root(*e));
		evict_if_needed();
		return;
	}
	const bool was_linked = parent_of(*e) != nullptr;
	refresh(*e, info);
	if (!was_linked) link(*e);
	recompute_subtree(info.pid);
}

void ProcessTable::scan(const std::string& proc_root, CgroupResolver* ids) {
	++stats_.scans;
	std::unordered_map<int, ProcInfo> live;
	for (int pid : list_pids(proc_root)) {
		auto info = read_proc(pid, proc_root);
		if (!info || info->kernel_thread) continue;
		live.emplace(pid, std::move(*info));
	}
	// 1. Entries of processes that are gone, or whose pid now belongs to another process.
	//    Removing them orphans their children with the roots they had (anchors).
	std::vector<int> gone;
	for (const auto& [pid, e] : entries_) {
		auto it = live.find(pid);
		if (it == live.end()) {
			gone.push_back(pid);
		} else if (!same_start(e.start_ns, ns_of_ticks(it->second.start_ticks))) {
			gone.push_back(pid);
			++stats_.reused_pids;
		}
	}
	// parents before children would orphan children first; any order gives the same anchors
	// because anchors come from the cached roots.
	for (int pid : gone) {
		if (find(pid)) {
			++stats_.scan_removed;
			remove(pid);
		}
	}
	// 2. Add the missing, refresh the known.
	for (const auto& [pid, info] : live) {
		if (Entry* e = get(pid)) {
			refresh(*e, info);
			continue;
		}
		Entry& n = create(pid);
		n.ppid = info.ppid;
		n.start_ns = ns_of_ticks(info.start_ticks);
		n.comm = info.comm;
		n.exe = info.exe;
		n.uid = info.uid;
		n.cgroup = info.cgroup;
	}
	// 3. Rebuild the child lists and every root (O(n * depth)).
	for (auto& [pid, e] : entries_) e.children.clear();
	for (auto& [pid, e] : entries_) link(e);
	if (ids) {
		std::unordered_map<std::string, uint64_t> known;
		for (auto& [pid, e] : entries_) {
			if (e.cgroup_id || e.cgroup.empty()) continue;
			auto it = known.find(e.cgroup);
			if (it == known.end()) it = known.emplace(e.cgroup, ids->id_for_path(e.cgroup).value_or(0)).first;
			e.cgroup_id = it->second;
		}
	}
	for (auto& [pid, e] : entries_) set_root(e, compute_root(e));
	evict_if_needed();
}

} // namespace ab::process
