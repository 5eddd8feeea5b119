// ir.cpp — YAML → IR with positions, and the merge of several files.
#include "policy/ir.h"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>

namespace ab::policy::ir {

const Node* Node::find(std::string_view key) const {
  const Entry* e = find_entry(key);
  return e ? &e->value : nullptr;
}

const Entry* Node::find_entry(std::string_view key) const {
  for (const Entry& e : entries)
    if (e.key == key) return &e;
  return nullptr;
}

std::string_view kind_name(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Null: return "nothing";
    case Node::Kind::Scalar: return "a scalar";
    case Node::Kind::Seq: return "a list";
    case Node::Kind::Map: return "a mapping";
  }
  return "?";
}

namespace {

int line_of(const YAML::Mark& m, int fallback) {
  if (m.is_null() || m.line < 0) return fallback;
  return m.line + 1;
}

bool is_quoted_tag(const std::string& tag) {
  // yaml-cpp tags plain scalars "?" and quoted ones "!"; an explicit !!str also makes a string.
  return tag == "!" || tag == "tag:yaml.org,2002:str" || tag == "!!str";
}

// Aliases make yaml-cpp nodes shared; expanding them into the IR could blow up ("billion
// laughs"). A policy has hundreds of nodes, not millions.
constexpr size_t kMaxNodes = 200'000;

struct NodeBudget {
  size_t nodes = 0;
  bool exceeded = false;
};

Node convert(const YAML::Node& y, const std::string& file, int fallback_line, std::vector<std::string>& errors,
             NodeBudget& budget) {
  Node n;
  if (++budget.nodes > kMaxNodes) {
    if (!budget.exceeded)
      errors.push_back(fmt::format("{}:{}: too many YAML nodes (more than {}; aliases expanding?)", file,
                                   line_of(y.Mark(), fallback_line), kMaxNodes));
    budget.exceeded = true;
    n.where = SourceRef{file, fallback_line};
    return n;
  }
  n.where = SourceRef{file, line_of(y.Mark(), fallback_line)};
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.value = y.Scalar();
      n.quoted = is_quoted_tag(y.Tag());
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::Seq;
      for (const auto& item : y) n.items.push_back(convert(item, file, n.where.line, errors, budget));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (const auto& kv : y) {
        const YAML::Node& k = kv.first;
        int kline = line_of(k.Mark(), n.where.line);
        if (!k.IsScalar()) {
          errors.push_back(fmt::format("{}:{}: a mapping key must be a plain name", file, kline));
          continue;
        }
        std::string key = k.Scalar();
        if (const Entry* prev = n.find_entry(key)) {
          errors.push_back(fmt::format("{}:{}: duplicate key '{}' (first at line {})", file, kline, key,
                                       prev->key_where.line));
          continue;
        }
        Entry e;
        e.key = key;
        e.key_where = SourceRef{file, kline};
        e.value = convert(kv.second, file, kline, errors, budget);
        // An empty value ("key:" then nothing) gets yaml-cpp's mark of the NEXT token, often
        // on a later line: cite the key instead.
        if (e.value.is_null()) e.value.where.line = kline;
        n.entries.push_back(std::move(e));
      }
      break;
  }
  return n;
}

}  // namespace

namespace {

// The 1-based line yaml-cpp blamed, kept within the text (an unterminated construct is
// noticed at end of input, one line past the last one), plus a hint for the commonest cause.
std::string syntax_error(std::string_view yaml, const std::string& file, const YAML::Exception& e,
                         const char* what) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < yaml.size()) {
    size_t nl = yaml.find('\n', start);
    if (nl == std::string_view::npos) nl = yaml.size();
    lines.push_back(yaml.substr(start, nl - start));
    start = nl + 1;
  }
  int line = line_of(e.mark, 1);
  while (line > 1 && (line > int(lines.size()) ||
                      lines[line - 1].find_first_not_of(" \t\r") == std::string_view::npos))
    --line;
  std::string hint;
  if (line >= 1 && line <= int(lines.size())) {
    std::string_view l = lines[line - 1];
    std::string_view indent = l.substr(0, l.find_first_not_of(" \t"));
    if (indent.find('\t') != std::string_view::npos) hint = " (a tab in the indentation: YAML allows only spaces)";
  }
  return fmt::format("{}:{}: {}: {}{}", file, line, what, e.msg, hint);
}

}  // namespace

Node parse(std::string_view yaml, const std::string& file, std::vector<std::string>& errors) {
  YAML::Node root;
  try {
    // yaml-cpp reports duplicate keys neither as an error nor consistently; convert() checks.
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    errors.push_back(syntax_error(yaml, file, e, "YAML syntax error"));
    return Node{Node::Kind::Null, SourceRef{file, 1}, {}, false, {}, {}};
  } catch (const YAML::Exception& e) {
    errors.push_back(syntax_error(yaml, file, e, "YAML error"));
    return Node{Node::Kind::Null, SourceRef{file, 1}, {}, false, {}, {}};
  }
  NodeBudget budget;
  return convert(root, file, 1, errors, budget);
}

void merge(Node& base, const Node& overlay, const std::string& path, std::vector<std::string>& errors) {
  if (overlay.is_null()) return;
  if (base.is_null()) {
    base = overlay;
    return;
  }
  if (base.kind != overlay.kind) {
    errors.push_back(fmt::format("{}: '{}' is {} here but {} at {}; cannot merge", overlay.where.str(), path,
                                 kind_name(overlay), kind_name(base), base.where.str()));
    return;
  }
  switch (overlay.kind) {
    case Node::Kind::Scalar:
      base = overlay;  // a later scalar wins
      break;
    case Node::Kind::Seq:
      base.items.insert(base.items.end(), overlay.items.begin(), overlay.items.end());
      break;
    case Node::Kind::Map:
      for (const Entry& oe : overlay.entries) {
        Entry* be = nullptr;
        for (Entry& e : base.entries)
          if (e.key == oe.key) be = &e;
        if (be) {
          merge(be->value, oe.value, path.empty() ? oe.key : path + "." + oe.key, errors);
        } else {
          base.entries.push_back(oe);
        }
      }
      break;
    case Node::Kind::Null:
      break;
  }
}

}  // namespace ab::policy::ir
