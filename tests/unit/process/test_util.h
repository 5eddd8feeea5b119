// Helpers for the process module's tests: temp dirs, fake /proc entries, root gating.
#pragma once

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ab::process::test {

inline std::string data_path(const std::string& rel) { return std::string(AB_TEST_DATA) + "/process/" + rel; }

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
public:
	TempDir() {
		std::string tmpl = (std::filesystem::temp_directory_path() / "ab_process_XXXXXX").string();
		char* p = ::mkdtemp(tmpl.data());
		if (!p) throw std::runtime_error("mkdtemp failed");
		path_ = p;
	}
	~TempDir() {
		std::error_code ec;
		std::filesystem::remove_all(path_, ec);
	}
	TempDir(const TempDir&) = delete;
	TempDir& operator=(const TempDir&) = delete;
	const std::string& path() const { return path_; }
	std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

private:
	std::string path_;
};

inline void write_text(const std::string& path, const std::string& text) {
	std::filesystem::create_directories(std::filesystem::path(path).parent_path());
	std::ofstream f(path, std::ios::binary | std::ios::trunc);
	f << text;
	if (!f) throw std::runtime_error("cannot write " + path);
}

// One fake /proc/<pid> directory.
struct FakeProc {
	int pid = 0, ppid = 0;
	std::string comm = "proc";
	char state = 'S';
	int pgrp = 0, session = 0, tty_nr = 0, tpgid = -1;
	unsigned long flags = 0x00400000; // PF_FORKNOEXEC-ish, not a kernel thread
	unsigned long long start_ticks = 1000;
	unsigned uid = 1000;
	int tgid = 0; // 0: same as pid
	std::string exe = "/usr/bin/proc";
	std::string cgroup = "/"; // empty: no cgroup file
	bool hybrid = false;      // also write v1 lines
};

inline std::string stat_line(const FakeProc& p) {
	// pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
	// stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
	return std::to_string(p.pid) + " (" + p.comm + ") " + p.state + " " + std::to_string(p.ppid) + " " +
	       std::to_string(p.pgrp ? p.pgrp : p.pid) + " " + std::to_string(p.session ? p.session : p.pid) + " " +
	       std::to_string(p.tty_nr) + " " + std::to_string(p.tpgid) + " " + std::to_string(p.flags) +
	       " 120 0 0 0 3 4 0 0 20 0 1 0 " + std::to_string(p.start_ticks) +
	       " 2297856 180 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
}

inline void write_fake_proc(const std::string& root, const FakeProc& p) {
	const std::string dir = root + "/" + std::to_string(p.pid);
	std::filesystem::create_directories(dir);
	write_text(dir + "/stat", stat_line(p));
	const std::string u = std::to_string(p.uid);
	write_text(dir + "/status", "Name:\t" + p.comm + "\nUmask:\t0022\nState:\t" + std::string(1, p.state) +
	                                " (sleeping)\nTgid:\t" + std::to_string(p.tgid ? p.tgid : p.pid) +
	                                "\nNgid:\t0\nPid:\t" + std::to_string(p.pid) + "\nPPid:\t" +
	                                std::to_string(p.ppid) + "\nUid:\t" + u + "\t" + u + "\t" + u + "\t" + u +
	                                "\nGid:\t100\t100\t100\t100\n");
	if (!p.cgroup.empty()) {
		std::string cg;
		if (p.hybrid) cg += "12:pids:/user.slice\n4:memory:/user.slice\n1:name=systemd:/user.slice\n";
		cg += "0::" + p.cgroup + "\n";
		write_text(dir + "/cgroup", cg);
	}
	if (!p.exe.empty()) {
		std::error_code ec;
		std::filesystem::create_symlink(p.exe, dir + "/exe", ec);
	}
}

// Tests that need root and a real cgroup v2 tree: skipped when not possible, unless the run
// demands it (AGENTBRAKE_REQUIRE_BPF=1, as CI does), where a skip would hide a regression.
inline bool require_real_environment() {
	const char* v = std::getenv("AGENTBRAKE_REQUIRE_BPF");
	return v && std::string(v) == "1";
}

#define AB_SKIP_OR_FAIL(why)                                                                   \
	do {                                                                                       \
		if (::ab::process::test::require_real_environment()) FAIL() << (why);                   \
		GTEST_SKIP() << (why);                                                                 \
	} while (0)

} // namespace ab::process::test
