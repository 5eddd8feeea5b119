// state_line.h — one record per line in the daemon's small state files (frozen cgroups,
// manual pauses), with fields that may hold any byte a cgroup name can: spaces, tabs, newlines.
// A field is written with every byte <= 0x20, 0x7f and '%' as %XX, so fields never contain a
// separator; reading splits on single spaces and undoes the escapes.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ab::util {

// Escapes one field: state_field("/a b") == "/a%20b".
std::string state_field(std::string_view raw);

// The fields joined by single spaces, each escaped, with no trailing newline.
std::string state_line(const std::vector<std::string>& fields);

// Splits a line written by state_line back into its fields. Returns nullopt for a malformed
// line (a bad %XX escape, an empty field from doubled spaces); an empty line gives no fields.
std::optional<std::vector<std::string>> parse_state_line(std::string_view line);

}  // namespace ab::util
