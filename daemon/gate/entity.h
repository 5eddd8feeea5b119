// entity.h — what a deny or a kill acts on: a cgroup subtree, a process tree or one process.
//
// The policy names buckets and fan-out entities with strings ("cgroup:/agents/a", "tree:42",
// "process:42", policy::bucket_key); the gate parses them once into an EntityKey, so the
// kind and the pid are typed from there on and only the store and the logs see the string.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ab::gate {

struct EntityKey {
  enum class Kind : uint8_t { Cgroup, Tree, Process };
  Kind kind = Kind::Process;
  std::string cgroup;  // Kind::Cgroup: the subtree's path ("/agents/a")
  uint32_t pid = 0;    // Kind::Tree: the tree's root; Kind::Process: the process

  static EntityKey of_cgroup(std::string path) { return {Kind::Cgroup, std::move(path), 0}; }
  static EntityKey of_tree(uint32_t root) { return {Kind::Tree, {}, root}; }
  static EntityKey of_process(uint32_t pid) { return {Kind::Process, {}, pid}; }
  // "cgroup:/a", "tree:42", "process:42"; nullopt for anything else.
  static std::optional<EntityKey> parse(std::string_view key);

  std::string str() const;     // the policy's spelling, as parse() reads it
  std::string target() const;  // "/a" or "42": what events call the target
  // Whether the entity takes in a process (of that cgroup, in the tree rooted at tree_root).
  bool covers(const std::string& process_cgroup, uint32_t tree_root, uint32_t process_pid) const;

  auto operator<=>(const EntityKey&) const = default;
};

}  // namespace ab::gate
