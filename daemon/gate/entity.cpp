#include "gate/entity.h"

#include <charconv>

namespace ab::gate {

namespace {

std::optional<uint32_t> parse_pid(std::string_view s) {
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<EntityKey> EntityKey::parse(std::string_view key) {
  if (key.rfind("cgroup:", 0) == 0) {
    std::string_view path = key.substr(7);
    if (path.empty() || path[0] != '/') return std::nullopt;
    return of_cgroup(std::string(path));
  }
  if (key.rfind("tree:", 0) == 0) {
    if (auto p = parse_pid(key.substr(5))) return of_tree(*p);
    return std::nullopt;
  }
  if (key.rfind("process:", 0) == 0) {
    if (auto p = parse_pid(key.substr(8))) return of_process(*p);
  }
  return std::nullopt;
}

std::string EntityKey::str() const {
  switch (kind) {
    case Kind::Cgroup: return "cgroup:" + cgroup;
    case Kind::Tree: return "tree:" + std::to_string(pid);
    case Kind::Process: break;
  }
  return "process:" + std::to_string(pid);
}

std::string EntityKey::target() const { return kind == Kind::Cgroup ? cgroup : std::to_string(pid); }

bool EntityKey::covers(const std::string& process_cgroup, uint32_t tree_root, uint32_t process_pid) const {
  switch (kind) {
    case Kind::Cgroup:
      return process_cgroup == cgroup || (cgroup == "/" && !process_cgroup.empty()) ||
             process_cgroup.rfind(cgroup + "/", 0) == 0;
    case Kind::Tree: return tree_root == pid;
    case Kind::Process: break;
  }
  return process_pid == pid;
}

}  // namespace ab::gate
