// Small file helpers shared by the process module (internal; not part of its API).
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>

namespace ab::process::detail {

// Whole content of a (small, possibly procfs/cgroupfs) file, read until EOF; at most `cap`
// bytes. nullopt on error, with errno set.
inline std::optional<std::string> read_file(const std::string& path, size_t cap = 1 << 20) {
	int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0) return std::nullopt;
	std::string out;
	char buf[4096];
	for (;;) {
		ssize_t n = ::read(fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR) continue;
			int e = errno;
			::close(fd);
			errno = e;
			return std::nullopt;
		}
		if (n == 0) break;
		out.append(buf, static_cast<size_t>(n));
		if (out.size() >= cap) break;
	}
	::close(fd);
	return out;
}

// Write `data` to an existing file in one write(). Returns 0 or a negative errno.
inline int write_file(const std::string& path, std::string_view data) {
	int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
	if (fd < 0) return -errno;
	ssize_t n;
	do {
		n = ::write(fd, data.data(), data.size());
	} while (n < 0 && errno == EINTR);
	int rc = n < 0 ? -errno : (static_cast<size_t>(n) == data.size() ? 0 : -EIO);
	::close(fd);
	return rc;
}

// Decimal non-negative integer (whole string); nullopt otherwise.
inline std::optional<long long> parse_nonneg(std::string_view s) {
	if (s.empty() || s.size() > 18) return std::nullopt;
	long long v = 0;
	for (char c : s) {
		if (c < '0' || c > '9') return std::nullopt;
		v = v * 10 + (c - '0');
	}
	return v;
}

} // namespace ab::process::detail
