// load.cpp — files and directories in, LoadResult out: reading, ownership checks, merging.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "policy/compiler.h"
#include "policy/ir.h"
#include "policy/policy.h"

namespace ab::policy {

namespace fs = std::filesystem;

namespace {

constexpr long long kMaxPolicyFileBytes = 4 << 20;  // 4 MiB: a policy is text written by people

// A policy can name a program to run as root (alerts: exec), so only root may write it.
std::optional<std::string> ownership_problem(const std::string& path, const struct stat& st) {
  if (st.st_uid != 0)
    return fmt::format("{}: refused: owned by uid {}, not root (a policy can name a program that runs as root)",
                       path, st.st_uid);
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return fmt::format("{}: refused: writable by {} (mode {:04o}); run chmod go-w {}", path,
                       (st.st_mode & S_IWGRP) && (st.st_mode & S_IWOTH) ? "group and others"
                       : (st.st_mode & S_IWGRP)                         ? "group"
                                                                        : "others",
                       st.st_mode & 07777, path);
  return std::nullopt;
}

// Opens the file once and checks what was opened (fstat), so the file read is the file checked.
bool read_checked(const std::string& path, bool check_ownership, std::string& out, std::vector<std::string>& errors) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    errors.push_back(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    return false;
  }
  struct stat st {};
  bool ok = true;
  if (::fstat(fd, &st) != 0) {
    errors.push_back(fmt::format("{}: cannot stat: {}", path, std::strerror(errno)));
    ok = false;
  } else if (!S_ISREG(st.st_mode)) {
    errors.push_back(fmt::format("{}: not a regular file", path));
    ok = false;
  } else if (check_ownership) {
    if (auto why = ownership_problem(path, st)) {
      errors.push_back(*why);
      ok = false;
    }
  }
  if (ok && st.st_size > kMaxPolicyFileBytes) {
    errors.push_back(fmt::format("{}: too large ({} bytes; a policy file may have at most {})", path,
                                 static_cast<long long>(st.st_size), kMaxPolicyFileBytes));
    ok = false;
  }
  while (ok) {
    char buf[65536];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      errors.push_back(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
      ok = false;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > size_t(kMaxPolicyFileBytes)) {
      errors.push_back(fmt::format("{}: too large (a policy file may have at most {} bytes)", path,
                                   kMaxPolicyFileBytes));
      ok = false;
    }
  }
  ::close(fd);
  return ok;
}

// Errors come out of the compiler in schema order; an operator reads them in file order:
// by file (in merge order), then by line. The file and line are the "file:line: " prefix.
void sort_errors(std::vector<std::string>& errors, const std::vector<std::string>& files) {
  auto key = [&](const std::string& e) {
    size_t sep = e.find(": ");
    std::string_view prefix(e.data(), sep == std::string::npos ? 0 : sep);
    std::string_view file = prefix;
    long line = 0;
    if (size_t colon = prefix.rfind(':'); colon != std::string_view::npos) {
      std::string_view num = prefix.substr(colon + 1);
      if (!num.empty() && std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        file = prefix.substr(0, colon);
        line = std::strtol(std::string(num).c_str(), nullptr, 10);
      }
    }
    size_t idx = std::find(files.begin(), files.end(), file) - files.begin();
    return std::pair<size_t, long>(idx, line);
  };
  std::stable_sort(errors.begin(), errors.end(),
                   [&](const std::string& a, const std::string& b) { return key(a) < key(b); });
}

// A secret file (fleet password): a regular file, at most 4 KiB; its trailing newline removed.
bool read_secret(const std::string& path, std::string& out, std::vector<std::string>& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why.push_back(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    return false;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 4096) {
    why.push_back(fmt::format("{} is too large for a password ({} bytes)", path, text.size()));
    return false;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.empty()) {
    why.push_back(fmt::format("{} is empty", path));
    return false;
  }
  out = std::move(text);
  return true;
}

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

LoadResult finish(ir::Node merged, std::vector<std::string> errors, std::string source,
                  std::vector<std::string> files) {
  LoadResult r;
  r.source = source;
  Policy p = compile(merged, errors);
  if (!errors.empty()) {
    sort_errors(errors, files);
    r.errors = std::move(errors);
    return r;
  }
  if (p.fleet) {
    // The password never sits in the policy text: it is read here, once per load, from a file
    // only root can read, and kept out of to_json (and so of the digest and `policy show`).
    if (!p.fleet->password_file.empty()) {
      std::string pw;
      std::vector<std::string> why;
      if (!read_secret(p.fleet->password_file, pw, why)) {
        for (const std::string& w : why) errors.push_back(p.fleet->password_file_where.str() + ": password_file: " + w);
        sort_errors(errors, files);
        r.errors = std::move(errors);
        return r;
      }
      p.fleet->password = std::move(pw);
    }
    if (p.fleet->host_id.empty()) p.fleet->host_id = local_hostname();
  }
  p.source = std::move(source);
  p.files = std::move(files);
  p.digest = digest_hex(to_json(p).dump());
  r.policy = std::make_shared<const Policy>(std::move(p));
  return r;
}

}  // namespace

LoadResult load_texts(const std::vector<std::pair<std::string, std::string>>& named_texts, const std::string& source) {
  std::vector<std::string> errors;
  std::vector<std::string> files;
  ir::Node merged;
  for (const auto& [name, text] : named_texts) {
    files.push_back(name);
    ir::Node doc = ir::parse(text, name, errors);
    if (!doc.is_null() && !doc.is_map()) {
      errors.push_back(fmt::format("{}: a policy must be a mapping of keys (mode, budgets, loops, ...), got {}",
                                   doc.where.str(), ir::kind_name(doc)));
      continue;
    }
    ir::merge(merged, doc, "", errors);
  }
  return finish(std::move(merged), std::move(errors), source, std::move(files));
}

LoadResult load_text(std::string_view yaml, const std::string& source_name) {
  return load_texts({{source_name, std::string(yaml)}}, source_name);
}

LoadResult load_builtin_default() { return load_text(embedded::kDefaultPolicy, "builtin:default.yaml"); }

LoadResult load_path(const std::string& path, bool check_ownership) {
  LoadResult fail;
  fail.source = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    fail.errors.push_back(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    return fail;
  }
  std::vector<std::string> files;
  if (S_ISDIR(st.st_mode)) {
    if (check_ownership)
      if (auto why = ownership_problem(path, st)) fail.errors.push_back(*why);
    std::error_code ec;
    for (const auto& de : fs::directory_iterator(path, ec)) {
      std::string name = de.path().filename().string();
      if (name.empty() || name[0] == '.' || de.path().extension() != ".yaml") continue;
      files.push_back((fs::path(path) / name).string());
    }
    if (ec) {
      fail.errors.push_back(fmt::format("{}: cannot list: {}", path, ec.message()));
      return fail;
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) fail.errors.push_back(fmt::format("{}: no *.yaml files in this directory", path));
  } else if (S_ISREG(st.st_mode)) {
    files.push_back(path);
  } else {
    fail.errors.push_back(fmt::format("{}: not a regular file or directory", path));
    return fail;
  }

  std::vector<std::pair<std::string, std::string>> texts;
  for (const std::string& f : files) {
    std::string text;
    if (read_checked(f, check_ownership, text, fail.errors)) texts.emplace_back(f, std::move(text));
  }
  if (!fail.errors.empty()) return fail;
  return load_texts(texts, path);
}

std::vector<std::string> validate_path(const std::string& path, bool check_ownership) {
  return load_path(path, check_ownership).errors;
}

LoadResult load_default_location() {
  std::error_code ec;
  if (fs::is_directory(kDefaultPolicyDir, ec)) {
    for (const auto& de : fs::directory_iterator(kDefaultPolicyDir, ec)) {
      std::string name = de.path().filename().string();
      if (!name.empty() && name[0] != '.' && de.path().extension() == ".yaml") return load_path(kDefaultPolicyDir);
    }
  }
  return load_builtin_default();
}

std::map<std::string, ModelPrice> parse_price_file(std::string_view yaml, const std::string& source_name,
                                                   std::vector<std::string>& errors) {
  ir::Node root = ir::parse(yaml, source_name, errors);
  if (root.is_null()) return {};
  if (!root.is_map()) {
    errors.push_back(fmt::format("{}: a price file must be a mapping with 'models:', got {}", root.where.str(),
                                 ir::kind_name(root)));
    return {};
  }
  for (const ir::Entry& e : root.entries)
    if (e.key != "models" && e.key != "as_of" && e.key != "currency")
      errors.push_back(fmt::format("{}: unknown key '{}' in a price file (known: models, as_of, currency)",
                                   e.key_where.str(), e.key));
  if (const ir::Node* c = root.find("currency"); c && !(c->is_scalar() && c->value == "USD"))
    errors.push_back(fmt::format("{}: only currency USD is supported", c->where.str()));
  const ir::Node* models = root.find("models");
  if (!models) return {};
  return compile_prices(*models, "models", errors);
}

}  // namespace ab::policy
