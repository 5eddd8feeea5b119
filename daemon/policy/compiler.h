// compiler.h — IR → Policy: schema check and compilation. Internal to the policy module.
#pragma once

#include <string>
#include <vector>

#include "policy/ir.h"
#include "policy/policy.h"

namespace ab::policy {

// Checks the merged IR against the schema and compiles it. Appends every problem found to
// `errors` ("file:line: message"); the returned Policy is meaningful only when no error was
// added.
Policy compile(const ir::Node& root, std::vector<std::string>& errors);

// The `models:`-style map of model → prices (a policy's `prices:` or a price file's `models:`).
std::map<std::string, ModelPrice> compile_prices(const ir::Node& node, const std::string& what,
                                                 std::vector<std::string>& errors);

// 16 lower-case hex digits (FNV-1a 64) of `text`.
std::string digest_hex(std::string_view text);

}  // namespace ab::policy
