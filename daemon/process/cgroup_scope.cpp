// The daemon's cgroup scope: see cgroup_scope.h.
#include "process/cgroup_scope.h"

#include "process/cgroup.h"
#include "process/io_detail.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ab::process {
namespace {
std::string& scope_storage() {
	static std::string scope = "/";
	return scope;
}
} // namespace

std::optional<std::string> cgroup_path_in_scope(std::string_view scope, std::string_view host_path) {
	if (!valid_cgroup_path(host_path) || !valid_cgroup_path(scope)) return std::nullopt;
	if (scope == "/") return std::string(host_path);
	if (host_path == scope) return std::string("/");
	// "/S/..." but not "/ST": the scope must be followed by a separator.
	if (host_path.size() > scope.size() && host_path.substr(0, scope.size()) == scope && host_path[scope.size()] == '/')
		return std::string(host_path.substr(scope.size()));
	return std::nullopt;
}

std::optional<std::string> cgroup_host_path(std::string_view scope, std::string_view rel) {
	if (!valid_cgroup_path(rel) || !valid_cgroup_path(scope)) return std::nullopt;
	if (scope == "/") return std::string(rel);
	if (rel == "/") return std::string(scope);
	return std::string(scope) + std::string(rel);
}

unsigned cgroup_path_depth(std::string_view path) {
	if (path == "/" || path.empty()) return 0;
	unsigned n = 0;
	for (char c : path) n += c == '/';
	return n;
}

void set_cgroup_scope(std::string scope) { scope_storage() = std::move(scope); }
const std::string& cgroup_scope() { return scope_storage(); }
bool cgroup_scope_is_host() { return scope_storage() == "/"; }

std::optional<std::string> read_host_cgroup_path(int pid, const std::string& proc_root) {
	if (pid <= 0) return std::nullopt;
	auto content = detail::read_file(proc_root + "/" + std::to_string(pid) + "/cgroup");
	if (!content) return std::nullopt;
	return parse_cgroup_v2_line(*content);
}

bool pid_in_cgroup_scope(int pid, const std::string& proc_root) {
	auto host = read_host_cgroup_path(pid, proc_root);
	if (!host) return cgroup_scope_is_host() && pid > 0;
	return cgroup_path_in_scope(cgroup_scope(), *host).has_value();
}

std::optional<ScopeRoot> open_cgroup_scope(const std::string& mount, const std::string& scope, std::string* error) {
	auto fail = [&](std::string why) -> std::optional<ScopeRoot> {
		if (error) *error = std::move(why);
		return std::nullopt;
	};
	if (!valid_cgroup_path(scope)) return fail("not an absolute cgroup path without . or .. elements");
	ScopeRoot r;
	r.dir = cgroup_abs_path(mount, scope);
	struct stat st {};
	if (::stat(r.dir.c_str(), &st) != 0) return fail(r.dir + ": " + std::strerror(errno));
	if (!S_ISDIR(st.st_mode)) return fail(r.dir + " is not a directory");
	struct statfs fs {};
	if (::statfs(r.dir.c_str(), &fs) != 0) return fail(r.dir + ": " + std::strerror(errno));
	if (static_cast<unsigned long>(fs.f_type) != CGROUP2_SUPER_MAGIC) return fail(r.dir + " is not on a cgroup v2 file system");
	if (::access((r.dir + "/cgroup.procs").c_str(), F_OK) != 0) return fail(r.dir + " is not a cgroup (no cgroup.procs)");
	r.id = st.st_ino;
	r.level = cgroup_path_depth(scope);
	return r;
}

} // namespace ab::process
