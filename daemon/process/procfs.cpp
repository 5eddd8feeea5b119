#include "process/procfs.h"

#include "process/cgroup.h"
#include "process/cgroup_scope.h"
#include "process/io_detail.h"

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace ab::process {

namespace {

constexpr unsigned long kPfKthread = 0x00200000; // include/linux/sched.h PF_KTHREAD

// Signed decimal (the whole token); nullopt otherwise.
std::optional<long long> parse_signed(std::string_view s) {
	bool neg = false;
	if (!s.empty() && s[0] == '-') {
		neg = true;
		s.remove_prefix(1);
	}
	auto v = detail::parse_nonneg(s);
	if (!v) return std::nullopt;
	return neg ? -*v : *v;
}

std::optional<unsigned long long> parse_unsigned(std::string_view s) {
	if (s.empty() || s.size() > 20) return std::nullopt;
	unsigned long long v = 0;
	for (char c : s) {
		if (c < '0' || c > '9') return std::nullopt;
		unsigned long long d = static_cast<unsigned long long>(c - '0');
		if (v > (~0ULL - d) / 10) return std::nullopt;
		v = v * 10 + d;
	}
	return v;
}

bool fits_int(long long v) { return v >= INT_MIN && v <= INT_MAX; }

// First whitespace-separated token after "Key:" in a /proc/<pid>/status file.
std::optional<std::string_view> status_field(std::string_view content, std::string_view key) {
	size_t pos = 0;
	while (pos < content.size()) {
		size_t eol = content.find('\n', pos);
		if (eol == std::string_view::npos) eol = content.size();
		std::string_view line = content.substr(pos, eol - pos);
		pos = eol + 1;
		if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ':')
			continue;
		std::string_view rest = line.substr(key.size() + 1);
		size_t b = rest.find_first_not_of(" \t");
		if (b == std::string_view::npos) return std::string_view{};
		rest = rest.substr(b);
		size_t e = rest.find_first_of(" \t");
		return rest.substr(0, e);
	}
	return std::nullopt;
}

int sys_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
	errno = ENOSYS;
	return -1;
#endif
}

int sys_pidfd_send_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
	return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#else
	errno = ENOSYS;
	return -1;
#endif
}

} // namespace

bool parse_proc_stat(std::string_view c, ProcInfo& out) {
	size_t open = c.find('(');
	size_t close = c.rfind(')');
	if (open == std::string_view::npos || close == std::string_view::npos || close < open) return false;
	std::string_view pid_s = c.substr(0, open);
	while (!pid_s.empty() && pid_s.back() == ' ') pid_s.remove_suffix(1);
	auto pid = detail::parse_nonneg(pid_s);
	if (!pid || *pid <= 0 || !fits_int(*pid)) return false;

	// Fields after the comm: field 3 (state) is index 0.
	std::string_view rest = c.substr(close + 1);
	std::vector<std::string_view> f;
	f.reserve(24);
	size_t i = 0;
	while (i < rest.size() && f.size() < 22) {
		while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n')) ++i;
		if (i >= rest.size()) break;
		size_t j = rest.find_first_of(" \n", i);
		if (j == std::string_view::npos) j = rest.size();
		f.push_back(rest.substr(i, j - i));
		i = j;
	}
	if (f.size() < 20 || f[0].size() != 1) return false;
	auto ppid = parse_signed(f[1]);
	auto pgrp = parse_signed(f[2]);
	auto session = parse_signed(f[3]);
	auto tty = parse_signed(f[4]);
	auto tpgid = parse_signed(f[5]);
	auto flags = parse_unsigned(f[6]);
	auto start = parse_unsigned(f[19]);
	if (!ppid || !pgrp || !session || !tty || !tpgid || !flags || !start) return false;
	if (!fits_int(*ppid) || !fits_int(*pgrp) || !fits_int(*session) || !fits_int(*tty) || !fits_int(*tpgid))
		return false;

	out.pid = static_cast<int>(*pid);
	out.comm = std::string(c.substr(open + 1, close - open - 1));
	out.state = f[0][0];
	out.ppid = static_cast<int>(*ppid);
	out.pgrp = static_cast<int>(*pgrp);
	out.session = static_cast<int>(*session);
	out.tty_nr = static_cast<int>(*tty);
	out.tpgid = static_cast<int>(*tpgid);
	out.kernel_thread = (*flags & kPfKthread) != 0;
	out.start_ticks = *start;
	return true;
}

std::optional<ProcInfo> read_proc(int pid, const std::string& proc_root) {
	if (pid <= 0) return std::nullopt;
	const std::string dir = proc_root + "/" + std::to_string(pid);
	auto stat = detail::read_file(dir + "/stat", 64 * 1024);
	if (!stat) return std::nullopt;
	ProcInfo p;
	if (!parse_proc_stat(*stat, p) || p.pid != pid) return std::nullopt;

	if (auto status = detail::read_file(dir + "/status", 64 * 1024)) {
		if (auto tgid = status_field(*status, "Tgid")) {
			auto v = detail::parse_nonneg(*tgid);
			if (v && *v != pid) return std::nullopt; // a thread, not a process
		}
		if (auto uid = status_field(*status, "Uid")) {
			if (auto v = parse_unsigned(*uid); v && *v <= UINT32_MAX) p.uid = static_cast<uint32_t>(*v);
		}
	} else {
		return std::nullopt; // gone between the two reads
	}

	char buf[PATH_MAX + 32];
	ssize_t n = ::readlink((dir + "/exe").c_str(), buf, sizeof buf - 1);
	if (n > 0) {
		std::string exe(buf, static_cast<size_t>(n));
		constexpr std::string_view deleted = " (deleted)";
		if (exe.size() > deleted.size() && exe.compare(exe.size() - deleted.size(), deleted.size(), deleted) == 0)
			exe.resize(exe.size() - deleted.size());
		p.exe = std::move(exe);
	}
	if (auto cg = read_cgroup_path(pid, proc_root)) p.cgroup = std::move(*cg);
	else if (!cgroup_scope_is_host()) return std::nullopt; // outside the --cgroup-scope: not ours
	return p;
}

std::vector<int> list_pids(const std::string& proc_root) {
	std::vector<int> out;
	DIR* d = ::opendir(proc_root.c_str());
	if (!d) return out;
	while (dirent* de = ::readdir(d)) {
		auto v = detail::parse_nonneg(de->d_name);
		if (v && *v > 0 && fits_int(*v)) out.push_back(static_cast<int>(*v));
	}
	::closedir(d);
	std::sort(out.begin(), out.end());
	return out;
}

bool is_terminal_foreground(const ProcInfo& p) {
	return p.tty_nr != 0 && p.tpgid > 0 && p.tpgid == p.pgrp;
}

long clock_ticks_per_sec() {
	static const long hz = [] {
		long v = ::sysconf(_SC_CLK_TCK);
		return v > 0 ? v : 100;
	}();
	return hz;
}

uint64_t boottime_ns_to_ticks(uint64_t ns) {
	return ns / (1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec()));
}

std::optional<uint64_t> read_start_ticks(int pid, const std::string& proc_root) {
	if (pid <= 0) return std::nullopt;
	auto stat = detail::read_file(proc_root + "/" + std::to_string(pid) + "/stat", 64 * 1024);
	if (!stat) return std::nullopt;
	ProcInfo p;
	if (!parse_proc_stat(*stat, p) || p.pid != pid) return std::nullopt;
	return p.start_ticks;
}

bool same_process(int pid, uint64_t start_boottime_ns, const std::string& proc_root) {
	auto t = read_start_ticks(pid, proc_root);
	return t && *t == boottime_ns_to_ticks(start_boottime_ns);
}

int signal_same_process(int pid, uint64_t start_boottime_ns, int sig, const std::string& proc_root) {
	if (pid <= 0) return -ESRCH;
	int fd = sys_pidfd_open(pid);
	if (fd < 0) return errno == ESRCH ? -ESRCH : -errno;
	int rc = 0;
	if (!same_process(pid, start_boottime_ns, proc_root)) {
		rc = -ESRCH;
	} else if (sys_pidfd_send_signal(fd, sig) != 0) {
		rc = -errno;
	}
	::close(fd);
	return rc;
}

} // namespace ab::process
