#include <algorithm>
#include "process/cgroup.h"
#include "process/cgroup_scope.h"

#include "process/io_detail.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>

namespace ab::process {

namespace {

bool is_octal(char c) { return c >= '0' && c <= '7'; }

// Split on single spaces (mountinfo fields never contain a raw space: they are escaped).
std::vector<std::string_view> split_spaces(std::string_view line) {
	std::vector<std::string_view> out;
	size_t i = 0;
	while (i < line.size()) {
		while (i < line.size() && line[i] == ' ') ++i;
		if (i >= line.size()) break;
		size_t j = line.find(' ', i);
		if (j == std::string_view::npos) j = line.size();
		out.push_back(line.substr(i, j - i));
		i = j;
	}
	return out;
}

// Value of a "key value" line in a flat keyed file such as cgroup.events.
std::optional<std::string_view> keyed_value(std::string_view content, std::string_view key) {
	size_t pos = 0;
	while (pos < content.size()) {
		size_t eol = content.find('\n', pos);
		if (eol == std::string_view::npos) eol = content.size();
		std::string_view line = content.substr(pos, eol - pos);
		if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ')
			return line.substr(key.size() + 1);
		pos = eol + 1;
	}
	return std::nullopt;
}

std::optional<bool> events_flag(const std::string& mount, const std::string& rel, std::string_view key) {
	if (!valid_cgroup_path(rel)) return std::nullopt;
	auto content = detail::read_file(cgroup_abs_path(mount, rel) + "/cgroup.events");
	if (!content) return std::nullopt;
	auto v = keyed_value(*content, key);
	if (!v) return std::nullopt;
	if (*v == "1") return true;
	if (*v == "0") return false;
	return std::nullopt;
}

std::string child_rel(const std::string& parent, const char* name) {
	return parent == "/" ? "/" + std::string(name) : parent + "/" + name;
}

// Depth-first walk of the directories under `rel` (itself included), calling fn(rel, ino).
// Returns false when a bound cut the walk short. Symlinks are never followed.
bool walk_tree(const std::string& mount, const std::string& rel, size_t max_dirs, size_t max_depth,
               const std::function<void(const std::string&, uint64_t)>& fn) {
	struct stat st {};
	if (::lstat(cgroup_abs_path(mount, rel).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return true;
	fn(rel, st.st_ino);
	size_t visited = 1;
	bool complete = true;
	std::vector<std::pair<std::string, size_t>> stack{{rel, 0}};
	while (!stack.empty()) {
		auto [cur, depth] = std::move(stack.back());
		stack.pop_back();
		DIR* d = ::opendir(cgroup_abs_path(mount, cur).c_str());
		if (!d) continue; // removed meanwhile, or unreadable
		while (dirent* de = ::readdir(d)) {
			const char* name = de->d_name;
			if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
			if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) continue;
			struct stat cst {};
			if (::fstatat(::dirfd(d), name, &cst, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(cst.st_mode))
				continue;
			if (depth + 1 > max_depth || visited >= max_dirs) {
				complete = false;
				continue;
			}
			std::string child = child_rel(cur, name);
			fn(child, cst.st_ino);
			++visited;
			stack.emplace_back(std::move(child), depth + 1);
		}
		::closedir(d);
	}
	return complete;
}

void append_procs(const std::string& path, std::vector<int>& out, int* err) {
	auto content = detail::read_file(path);
	if (!content) {
		if (err) *err = -errno;
		return;
	}
	size_t pos = 0;
	std::string_view c = *content;
	while (pos < c.size()) {
		size_t eol = c.find('\n', pos);
		if (eol == std::string_view::npos) eol = c.size();
		if (auto v = detail::parse_nonneg(c.substr(pos, eol - pos)); v && *v > 0)
			out.push_back(static_cast<int>(*v));
		pos = eol + 1;
	}
}

int writable_cgroup(const std::string& rel) {
	if (!valid_cgroup_path(rel)) return -EINVAL;
	if (rel == "/") return -EINVAL;
	return 0;
}

} // namespace

std::string unescape_mountinfo(std::string_view field) {
	std::string out;
	out.reserve(field.size());
	for (size_t i = 0; i < field.size(); ++i) {
		if (field[i] == '\\' && i + 3 < field.size() && is_octal(field[i + 1]) &&
		    is_octal(field[i + 2]) && is_octal(field[i + 3])) {
			int v = (field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0');
			if (v <= 0xff) {
				out.push_back(static_cast<char>(v));
				i += 3;
				continue;
			}
		}
		out.push_back(field[i]);
	}
	return out;
}

std::optional<std::string> find_cgroup2_mount(const std::string& mountinfo) {
	auto content = detail::read_file(mountinfo, 16 << 20);
	if (!content) return std::nullopt;
	std::optional<std::string> first, first_at_root;
	std::string_view c = *content;
	size_t pos = 0;
	while (pos < c.size()) {
		size_t eol = c.find('\n', pos);
		if (eol == std::string_view::npos) eol = c.size();
		auto f = split_spaces(c.substr(pos, eol - pos));
		pos = eol + 1;
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		if (f.size() < 8) continue;
		size_t sep = 0;
		for (size_t i = 6; i < f.size(); ++i)
			if (f[i] == "-") {
				sep = i;
				break;
			}
		if (sep == 0 || sep + 1 >= f.size() || f[sep + 1] != "cgroup2") continue;
		std::string mp = unescape_mountinfo(f[4]);
		if (!first) first = mp;
		if (f[3] == "/" && !first_at_root) first_at_root = mp;
	}
	return first_at_root ? first_at_root : first;
}

std::optional<std::string> parse_cgroup_v2_line(std::string_view c) {
	size_t pos = 0;
	while (pos < c.size()) {
		size_t eol = c.find('\n', pos);
		if (eol == std::string_view::npos) eol = c.size();
		std::string_view line = c.substr(pos, eol - pos);
		pos = eol + 1;
		if (line.substr(0, 3) != "0::") continue;
		std::string_view path = line.substr(3);
		constexpr std::string_view deleted = " (deleted)";
		if (path.size() > deleted.size() && path.substr(path.size() - deleted.size()) == deleted)
			path.remove_suffix(deleted.size());
		if (path.empty() || path[0] != '/') return std::nullopt;
		return std::string(path);
	}
	return std::nullopt;
}

std::optional<std::string> read_cgroup_path(int pid, const std::string& proc_root) {
	auto host = read_host_cgroup_path(pid, proc_root);
	if (!host || cgroup_scope_is_host()) return host;
	return cgroup_path_in_scope(cgroup_scope(), *host);  // nullopt: outside the --cgroup-scope
}

bool valid_cgroup_path(std::string_view rel) {
	if (rel.empty() || rel[0] != '/' || rel.size() > 4096) return false;
	if (rel == "/") return true;
	if (rel.back() == '/') return false;
	size_t pos = 1;
	while (pos <= rel.size()) {
		size_t next = rel.find('/', pos);
		if (next == std::string_view::npos) next = rel.size();
		std::string_view el = rel.substr(pos, next - pos);
		if (el.empty() || el == "." || el == "..") return false;
		if (el.find('\0') != std::string_view::npos) return false;
		pos = next + 1;
	}
	return true;
}

std::string cgroup_abs_path(const std::string& mount, std::string_view rel) {
	if (rel.empty() || rel == "/") return mount;
	std::string out = mount;
	while (!out.empty() && out.back() == '/') out.pop_back();
	if (rel.front() != '/') out.push_back('/');
	out.append(rel);
	return out;
}

std::optional<uint64_t> cgroup_id_of(const std::string& mount, std::string_view rel) {
	if (!valid_cgroup_path(rel)) return std::nullopt;
	struct stat st {};
	if (::stat(cgroup_abs_path(mount, rel).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
	return static_cast<uint64_t>(st.st_ino);
}

std::optional<std::string> systemd_unit_of(const std::string& cgroup_path) {
	std::string_view p = cgroup_path;
	while (!p.empty()) {
		size_t slash = p.rfind('/');
		std::string_view el = slash == std::string_view::npos ? p : p.substr(slash + 1);
		auto ends_with = [&](std::string_view suf) {
			return el.size() > suf.size() && el.substr(el.size() - suf.size()) == suf;
		};
		if (ends_with(".service") || ends_with(".scope")) return std::string(el);
		if (slash == std::string_view::npos) break;
		p = p.substr(0, slash);
	}
	return std::nullopt;
}

// ---- CgroupResolver ------------------------------------------------------------------------

CgroupResolver::CgroupResolver(std::string mount) : CgroupResolver(std::move(mount), Options{}) {}

CgroupResolver::CgroupResolver(std::string mount, Options opts) : mount_(std::move(mount)), opts_(opts) {}

void CgroupResolver::remember(uint64_t id, std::string path) {
	if (by_id_.size() >= opts_.max_cached && !by_id_.count(id)) {
		by_id_.clear();
		++stats_.cache_resets;
	}
	by_id_[id] = std::move(path);
}

size_t CgroupResolver::rescan() {
	++stats_.rescans;
	std::unordered_map<uint64_t, std::string> fresh;
	bool complete = walk_tree(mount_, "/", opts_.max_scan_dirs, opts_.max_scan_depth,
	                          [&](const std::string& rel, uint64_t ino) {
		                          if (fresh.size() < opts_.max_cached) fresh.emplace(ino, rel);
	                          });
	if (!complete || fresh.size() >= opts_.max_cached) ++stats_.rescans_truncated;
	by_id_ = std::move(fresh);
	return by_id_.size();
}

std::optional<std::string> CgroupResolver::path_for_id(uint64_t id) {
	if (id == 0) return std::nullopt;
	if (auto it = by_id_.find(id); it != by_id_.end()) {
		++stats_.hits;
		return it->second;
	}
	++stats_.misses;
	auto now = std::chrono::steady_clock::now();
	if (auto it = negative_.find(id); it != negative_.end()) {
		if (now - it->second < opts_.negative_ttl) {
			++stats_.negative_hits;
			return std::nullopt;
		}
		negative_.erase(it);
	}
	if (!take_rescan_token(now)) {
		++stats_.rescans_deferred;
		return std::nullopt;
	}
	rescan();
	if (auto it = by_id_.find(id); it != by_id_.end()) return it->second;
	if (negative_.size() >= opts_.max_negative) negative_.clear();
	negative_[id] = now;
	return std::nullopt;
}

bool CgroupResolver::take_rescan_token(std::chrono::steady_clock::time_point now) {
	const double burst = double(opts_.rescan_burst ? opts_.rescan_burst : 1);
	if (rescan_tokens_ < 0) {
		rescan_tokens_ = burst;
	} else if (opts_.rescan_refill.count() > 0) {
		rescan_tokens_ = std::min(burst, rescan_tokens_ + std::chrono::duration<double>(now - rescan_tokens_at_).count() /
		                                                      std::chrono::duration<double>(opts_.rescan_refill).count());
	} else {
		rescan_tokens_ = burst;
	}
	rescan_tokens_at_ = now;
	if (rescan_tokens_ < 1) return false;
	rescan_tokens_ -= 1;
	return true;
}

std::optional<uint64_t> CgroupResolver::id_for_path(const std::string& rel) {
	auto id = cgroup_id_of(mount_, rel);
	if (!id) return std::nullopt;
	remember(*id, rel);
	negative_.erase(*id);
	return id;
}

void CgroupResolver::forget(uint64_t id) { by_id_.erase(id); }

// ---- side effects ----------------------------------------------------------------------------

CgResult cgroup_freeze(const std::string& mount, const std::string& rel, bool freeze) {
	if (int e = writable_cgroup(rel)) return {e};
	return {detail::write_file(cgroup_abs_path(mount, rel) + "/cgroup.freeze", freeze ? "1" : "0")};
}

CgResult cgroup_kill(const std::string& mount, const std::string& rel) {
	if (int e = writable_cgroup(rel)) return {e};
	return {detail::write_file(cgroup_abs_path(mount, rel) + "/cgroup.kill", "1")};
}

CgResult cgroup_kill_by_signal(const std::string& mount, const std::string& rel,
                               std::chrono::milliseconds timeout) {
	if (int e = writable_cgroup(rel)) return {e};
	if (!cgroup_id_of(mount, rel)) return {-ENOENT};
	const bool froze = static_cast<bool>(cgroup_freeze(mount, rel, true));
	const auto deadline = std::chrono::steady_clock::now() + timeout;
	int err = 0;
	for (;;) {
		int lerr = 0;
		auto pids = cgroup_procs_recursive(mount, rel, &lerr);
		if (pids.empty()) break;
		for (int pid : pids)
			if (::kill(pid, SIGKILL) != 0 && errno != ESRCH) err = -errno;
		if (std::chrono::steady_clock::now() >= deadline) {
			if (!err) err = -ETIMEDOUT;
			break;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(2));
	}
	if (froze) (void)cgroup_freeze(mount, rel, false);
	return {err};
}

CgResult cgroup_create(const std::string& mount, const std::string& rel) {
	if (int e = writable_cgroup(rel)) return {e};
	if (::mkdir(cgroup_abs_path(mount, rel).c_str(), 0755) != 0) return {-errno};
	return {0};
}

CgResult cgroup_remove(const std::string& mount, const std::string& rel) {
	if (int e = writable_cgroup(rel)) return {e};
	if (::rmdir(cgroup_abs_path(mount, rel).c_str()) != 0) return {-errno};
	return {0};
}

CgResult cgroup_attach(const std::string& mount, const std::string& rel, int pid) {
	if (!valid_cgroup_path(rel) || pid <= 0) return {-EINVAL};
	return {detail::write_file(cgroup_abs_path(mount, rel) + "/cgroup.procs", std::to_string(pid))};
}

std::vector<int> cgroup_procs(const std::string& mount, const std::string& rel, int* err) {
	std::vector<int> out;
	if (err) *err = 0;
	if (!valid_cgroup_path(rel)) {
		if (err) *err = -EINVAL;
		return out;
	}
	append_procs(cgroup_abs_path(mount, rel) + "/cgroup.procs", out, err);
	return out;
}

std::vector<int> cgroup_procs_recursive(const std::string& mount, const std::string& rel, int* err) {
	std::vector<int> out;
	if (err) *err = 0;
	if (!valid_cgroup_path(rel)) {
		if (err) *err = -EINVAL;
		return out;
	}
	if (!cgroup_id_of(mount, rel)) {
		if (err) *err = -ENOENT;
		return out;
	}
	CgroupResolver::Options o;
	bool complete = walk_tree(mount, rel, o.max_scan_dirs, o.max_scan_depth,
	                          [&](const std::string& r, uint64_t) {
		                          append_procs(cgroup_abs_path(mount, r) + "/cgroup.procs", out, nullptr);
	                          });
	if (!complete && err) *err = -E2BIG;
	return out;
}

std::optional<bool> is_frozen(const std::string& mount, const std::string& rel) {
	return events_flag(mount, rel, "frozen");
}

std::optional<bool> is_populated(const std::string& mount, const std::string& rel) {
	return events_flag(mount, rel, "populated");
}

bool wait_frozen(const std::string& mount, const std::string& rel, bool want,
                 std::chrono::milliseconds timeout) {
	auto deadline = std::chrono::steady_clock::now() + timeout;
	for (;;) {
		auto f = is_frozen(mount, rel);
		if (f && *f == want) return true;
		if (std::chrono::steady_clock::now() >= deadline) return false;
		std::this_thread::sleep_for(std::chrono::milliseconds(2));
	}
}

} // namespace ab::process
