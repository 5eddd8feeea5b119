// ir.h — the policy's intermediate representation: a YAML tree in which every node and every
// mapping key remembers the file and line it came from, so that errors found after merging
// several files still cite the right place. Internal to the policy module.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace ab::policy::ir {

struct Entry;

struct Node {
  enum class Kind { Null, Scalar, Seq, Map };
  Kind kind = Kind::Null;
  SourceRef where;
  std::string value;           // Scalar text
  bool quoted = false;         // Scalar written in quotes ('5' is a string, 5 a number)
  std::vector<Node> items;     // Seq
  std::vector<Entry> entries;  // Map, in document order

  const Node* find(std::string_view key) const;
  const Entry* find_entry(std::string_view key) const;
  bool is_map() const { return kind == Kind::Map; }
  bool is_seq() const { return kind == Kind::Seq; }
  bool is_scalar() const { return kind == Kind::Scalar; }
  bool is_null() const { return kind == Kind::Null; }
};

struct Entry {
  std::string key;
  SourceRef key_where;
  Node value;
};

// "a mapping", "a list", "a string", "nothing".
std::string_view kind_name(const Node&);

// Parses one YAML document. Syntax errors, duplicate keys and non-scalar keys are appended to
// `errors` as "file:line: message". An empty document gives a Null node.
Node parse(std::string_view yaml, const std::string& file, std::vector<std::string>& errors);

// Merges `overlay` into `base`: maps merge key by key (recursively), lists concatenate, a
// scalar in `overlay` replaces the one in `base`, a Null overlay changes nothing and a Null
// base takes the overlay. A mapping against a list (or a scalar against either) is an error
// citing both places. `path` names the key for messages ("loops.ping_pong").
void merge(Node& base, const Node& overlay, const std::string& path, std::vector<std::string>& errors);

}  // namespace ab::policy::ir
