// printable.h — text chosen by whoever runs an agent (a process name, a cgroup, a model) made
// safe to show or hand on: no byte of it can move a cursor, retitle a terminal or end a line.
#pragma once
#include <string>

namespace ab::util {

// Control characters (C0, DEL, and C1 written as UTF-8 U+0080..U+009F) become visible "\xNN"
// escapes; everything else, other UTF-8 included, is kept: control_escaped("a\nb") == "a\\x0ab".
std::string control_escaped(const std::string& s);

}  // namespace ab::util
