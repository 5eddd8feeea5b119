// glob.cpp — glob matching for names and cgroup paths, bucket selection.
#include <algorithm>
#include <cstdio>

#include "policy/policy.h"

namespace ab::policy {

namespace {

// Matches a bracket class starting at pattern[i] == '['. Sets `next` to the index after ']'.
// Returns false (and next = npos) if the class is unterminated.
bool match_class(std::string_view p, size_t i, char c, bool& matched, size_t& next) {
  size_t j = i + 1;
  bool negate = false;
  if (j < p.size() && (p[j] == '!' || p[j] == '^')) {
    negate = true;
    ++j;
  }
  bool hit = false;
  bool first = true;
  while (j < p.size() && (p[j] != ']' || first)) {
    first = false;
    char lo = p[j];
    if (lo == '\\' && j + 1 < p.size()) lo = p[++j];
    char hi = lo;
    if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
      hi = p[j + 2];
      if (hi == '\\' && j + 3 < p.size()) {
        hi = p[j + 3];
        ++j;
      }
      j += 2;
    }
    if (c >= lo && c <= hi) hit = true;
    ++j;
  }
  if (j >= p.size()) {
    next = std::string_view::npos;
    return false;
  }
  next = j + 1;
  matched = hit != negate;
  return true;
}

// Glob over one component (or a whole name): `*` matches any run of characters (never
// `stop` when stop != 0), `?` one character, classes, backslash escapes. Iterative with
// single-star backtracking: linear in practice, no recursion.
bool match_component(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0;
  size_t star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size()) {
      char pc = p[pi];
      if (pc == '*') {
        while (pi < p.size() && p[pi] == '*') ++pi;
        star_p = pi;
        star_s = si;
        continue;
      }
      if (pc == '?') {
        ++pi;
        ++si;
        continue;
      }
      if (pc == '[') {
        bool m = false;
        size_t next = 0;
        if (match_class(p, pi, s[si], m, next)) {
          if (m) {
            pi = next;
            ++si;
            continue;
          }
        } else if (s[si] == '[') {  // unterminated: a literal '[' (glob_error rejects it anyway)
          ++pi;
          ++si;
          continue;
        }
      } else {
        char lit = pc;
        size_t adv = 1;
        if (pc == '\\' && pi + 1 < p.size()) {
          lit = p[pi + 1];
          adv = 2;
        }
        if (lit == s[si]) {
          pi += adv;
          ++si;
          continue;
        }
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    if (i >= path.size()) break;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

bool match_segments(const std::vector<std::string_view>& p, size_t pi, const std::vector<std::string_view>& s,
                    size_t si) {
  while (pi < p.size()) {
    if (p[pi] == "**") {
      // Collapse runs of ** and try every split.
      while (pi < p.size() && p[pi] == "**") ++pi;
      if (pi == p.size()) return true;
      for (size_t k = si; k <= s.size(); ++k)
        if (match_segments(p, pi, s, k)) return true;
      return false;
    }
    if (si >= s.size() || !match_component(p[pi], s[si])) return false;
    ++pi;
    ++si;
  }
  return si == s.size();
}

bool match_path(std::string_view pattern, std::string_view path) {
  return match_segments(split_path(pattern), 0, split_path(path), 0);
}

}  // namespace

bool glob_match_name(std::string_view pattern, std::string_view name) { return match_component(pattern, name); }

bool glob_match_cgroup(std::string_view pattern, std::string_view path) {
  if (pattern.empty() || pattern[0] != '/' || path.empty() || path[0] != '/') return false;
  return match_path(pattern, path);
}

std::optional<std::string> glob_error(std::string_view p, bool cgroup_path) {
  if (p.empty()) return "empty pattern";
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\0') return "NUL byte in pattern";
    if (c == '\\') {
      if (i + 1 >= p.size()) return "trailing backslash";
      ++i;
      continue;
    }
    if (c == '[') {
      bool m = false;
      size_t next = 0;
      if (!match_class(p, i, 'a', m, next)) return "unclosed '['";
      i = next - 1;
    }
  }
  if (cgroup_path) {
    if (p[0] != '/') return "a cgroup pattern must start with '/'";
    if (p.size() > 1 && p.find("//") != std::string_view::npos) return "empty path component ('//')";
    for (std::string_view comp : split_path(p)) {
      if (comp.find("**") != std::string_view::npos && comp != "**")
        return "'**' must be a whole path component (e.g. /a/**/b)";
      if (comp == "." || comp == "..") return "'.' and '..' are not allowed in a cgroup pattern";
    }
  }
  return std::nullopt;
}

bool matches(const Match& m, const ProcessFacts& f) {
  if (m.uid && *m.uid != f.uid) return false;
  if (m.comm && !glob_match_name(*m.comm, f.comm)) return false;
  if (m.unit && !glob_match_name(*m.unit, f.unit)) return false;
  if (m.exe) {
    const std::string& pat = *m.exe;
    if (pat.find('/') == std::string::npos) {
      std::string_view base = f.exe;
      size_t slash = base.rfind('/');
      if (slash != std::string_view::npos) base = base.substr(slash + 1);
      if (!glob_match_name(pat, base)) return false;
    } else if (!match_path(pat, f.exe)) {
      return false;
    }
  }
  if (m.cgroup && !bucket_cgroup(m, f.cgroup)) return false;
  return true;
}

std::optional<std::string> bucket_cgroup(const Match& m, const std::string& cgroup_path) {
  if (!m.cgroup) return cgroup_path;
  if (cgroup_path.empty() || cgroup_path[0] != '/') return std::nullopt;
  // Walk the ancestors from the root down: "/", "/a", "/a/b", ...
  if (glob_match_cgroup(*m.cgroup, "/")) return std::string("/");
  std::string prefix;
  for (std::string_view comp : split_path(cgroup_path)) {
    prefix += '/';
    prefix += comp;
    if (glob_match_cgroup(*m.cgroup, prefix)) return prefix;
  }
  return std::nullopt;
}

std::optional<std::string> bucket_key(const Match& m, Per per, const ProcessFacts& f, uint32_t pid,
                                      uint32_t tree_root_pid) {
  if (!matches(m, f)) return std::nullopt;
  switch (per) {
    case Per::Cgroup: {
      auto cg = bucket_cgroup(m, f.cgroup);
      if (!cg) return std::nullopt;
      return "cgroup:" + *cg;
    }
    case Per::Tree: return "tree:" + std::to_string(tree_root_pid ? tree_root_pid : pid);
    case Per::Process: return "process:" + std::to_string(pid);
  }
  return std::nullopt;
}

}  // namespace ab::policy
