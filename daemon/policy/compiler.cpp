// compiler.cpp — the policy schema: every implemented key of docs/interface.md, its type, its
// range and its default; shorthands expanded into the general limit list.
#include "policy/compiler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

namespace ab::policy {

namespace {

using ir::Node;

// ---- small helpers ------------------------------------------------------------------------

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join(const std::vector<std::string_view>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += v[i];
  }
  return out;
}

// A plain YAML number: 12, -3, 1.5, 2e6 (no hex, no inf/nan, no quotes).
std::optional<double> plain_number(const Node& n) {
  if (!n.is_scalar() || n.quoted) return std::nullopt;
  const std::string& s = n.value;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t ed = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++ed;
    if (ed == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  double v = std::strtod(s.c_str(), nullptr);
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string describe(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Null: return "nothing";
    case Node::Kind::Seq: return "a list";
    case Node::Kind::Map: return "a mapping";
    case Node::Kind::Scalar:
      if (n.quoted) return fmt::format("the string \"{}\"", n.value);
      return fmt::format("'{}'", n.value);
  }
  return "?";
}

// ---- the checker --------------------------------------------------------------------------

class Compiler {
 public:
  explicit Compiler(std::vector<std::string>& errors) : errors_(errors) {}

  void err(const SourceRef& w, const std::string& msg) { errors_.push_back(w.str() + ": " + msg); }

  // `ctx` is appended to messages: "" at top level, " in budget 'x'" inside one.
  bool want_map(const Node& n, std::string_view key, std::string_view ctx) {
    if (n.is_map()) return true;
    err(n.where, fmt::format("'{}'{} must be a mapping, got {}", key, ctx, describe(n)));
    return false;
  }
  bool want_seq(const Node& n, std::string_view key, std::string_view ctx) {
    if (n.is_seq()) return true;
    err(n.where, fmt::format("'{}'{} must be a list, got {}", key, ctx, describe(n)));
    return false;
  }

  // Reports every key of `map` not in `allowed`; returns how many there were.
  size_t check_keys(const Node& map, const std::vector<std::string_view>& allowed, std::string_view ctx) {
    size_t unknown = 0;
    for (const ir::Entry& e : map.entries) {
      if (std::find(allowed.begin(), allowed.end(), e.key) != allowed.end()) continue;
      ++unknown;
      std::string_view best;
      size_t best_d = 3;
      for (std::string_view a : allowed) {
        size_t d = edit_distance(e.key, a);
        if (d < best_d) best_d = d, best = a;
      }
      if (!best.empty())
        err(e.key_where, fmt::format("unknown key '{}'{}; did you mean '{}'?", e.key, ctx, best));
      else
        err(e.key_where, fmt::format("unknown key '{}'{} (known: {})", e.key, ctx, join(allowed)));
    }
    return unknown;
  }

  std::optional<std::string> string(const Node& n, std::string_view key, std::string_view ctx) {
    if (n.is_scalar() && !n.value.empty()) return n.value;
    err(n.where, fmt::format("'{}'{} must be a non-empty string, got {}", key, ctx, describe(n)));
    return std::nullopt;
  }

  std::optional<double> number(const Node& n, std::string_view key, std::string_view ctx, bool allow_zero) {
    auto v = plain_number(n);
    if (!v) {
      err(n.where, fmt::format("'{}'{} must be a number, got {}", key, ctx, describe(n)));
      return std::nullopt;
    }
    if (*v < 0 || (!allow_zero && *v == 0)) {
      err(n.where, fmt::format("'{}'{} must be {}, got {}", key, ctx, allow_zero ? "zero or more" : "positive",
                               n.value));
      return std::nullopt;
    }
    return v;
  }

  std::optional<int64_t> integer(const Node& n, std::string_view key, std::string_view ctx, int64_t min,
                                 int64_t max) {
    auto v = plain_number(n);
    if (!v) {
      err(n.where, fmt::format("'{}'{} must be a whole number, got {}", key, ctx, describe(n)));
      return std::nullopt;
    }
    if (*v < double(min)) {
      err(n.where, fmt::format("'{}'{} must be {}, got {}", key, ctx,
                               min == 1 ? std::string("positive") : fmt::format("at least {}", min), n.value));
      return std::nullopt;
    }
    if (*v > double(max)) {
      err(n.where, fmt::format("'{}'{} must be at most {}, got {}", key, ctx, max, n.value));
      return std::nullopt;
    }
    if (std::floor(*v) != *v) {
      err(n.where, fmt::format("'{}'{} must be a whole number, got {}", key, ctx, n.value));
      return std::nullopt;
    }
    return static_cast<int64_t>(*v);
  }

  std::optional<bool> boolean(const Node& n, std::string_view key, std::string_view ctx) {
    if (n.is_scalar() && !n.quoted) {
      std::string v = n.value;
      std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
      if (v == "true" || v == "yes" || v == "on") return true;
      if (v == "false" || v == "no" || v == "off") return false;
    }
    err(n.where, fmt::format("'{}'{} must be true or false, got {}", key, ctx, describe(n)));
    return std::nullopt;
  }

  std::optional<Millis> duration(const Node& n, std::string_view key, std::string_view ctx, bool allow_zero) {
    if (!n.is_scalar()) {
      err(n.where, fmt::format("'{}'{} must be a duration like 30s, 10m, 2h, 7d; got {}", key, ctx, describe(n)));
      return std::nullopt;
    }
    auto d = util::parse_policy_duration(n.value);
    if (!d) {
      err(n.where, fmt::format("'{}'{}: bad duration '{}' (write e.g. 500ms, 30s, 10m, 2h, 7d)", key, ctx, n.value));
      return std::nullopt;
    }
    if (!allow_zero && d->count() == 0) {
      err(n.where, fmt::format("'{}'{} must be longer than zero, got '{}'", key, ctx, n.value));
      return std::nullopt;
    }
    return d;
  }

  template <class T>
  std::optional<T> choice(const Node& n, std::string_view key, std::string_view ctx,
                          std::optional<T> (*parse)(std::string_view), std::string_view options) {
    if (n.is_scalar())
      if (auto v = parse(n.value)) return v;
    err(n.where, fmt::format("'{}'{} must be one of {}; got {}", key, ctx, options, describe(n)));
    return std::nullopt;
  }

  std::optional<std::string> glob(const Node& n, std::string_view key, std::string_view ctx, bool cgroup) {
    auto s = string(n, key, ctx);
    if (!s) return std::nullopt;
    if (auto why = glob_error(*s, cgroup)) {
      err(n.where, fmt::format("'{}'{}: bad glob '{}': {}", key, ctx, *s, *why));
      return std::nullopt;
    }
    return s;
  }

  Match match(const Node& n, std::string_view ctx) {
    Match m;
    if (n.is_null()) return m;
    if (!want_map(n, "match", ctx)) return m;
    std::string mctx = fmt::format(" of match{}", ctx);
    check_keys(n, {"cgroup", "unit", "exe", "comm", "uid"}, mctx);
    if (const Node* v = n.find("cgroup")) m.cgroup = glob(*v, "cgroup", mctx, true);
    if (const Node* v = n.find("unit")) m.unit = glob(*v, "unit", mctx, false);
    if (const Node* v = n.find("exe")) m.exe = glob(*v, "exe", mctx, false);
    if (const Node* v = n.find("comm")) m.comm = glob(*v, "comm", mctx, false);
    if (const Node* v = n.find("uid"))
      if (auto u = integer(*v, "uid", mctx, 0, 4294967294LL)) m.uid = static_cast<uint32_t>(*u);
    return m;
  }

  // ---- sections -----------------------------------------------------------------------

  void endpoints(const Node& n, Policy& p) {
    if (!want_seq(n, "endpoints", "")) return;
    for (size_t i = 0; i < n.items.size(); ++i) {
      const Node& it = n.items[i];
      std::string ctx = fmt::format(" in endpoints[{}]", i);
      if (!it.is_map()) {
        err(it.where, fmt::format("endpoints[{}] must be a mapping {{host, port, api, tls}}, got {}", i, describe(it)));
        continue;
      }
      check_keys(it, {"host", "port", "api", "tls"}, ctx);
      Endpoint ep;
      ep.where = it.where;
      bool ok = true;
      const Node* host = it.find("host");
      const Node* port = it.find("port");
      const Node* api = it.find("api");
      if (!host) err(it.where, fmt::format("endpoints[{}] needs 'host'", i)), ok = false;
      if (!port) err(it.where, fmt::format("endpoints[{}] needs 'port'", i)), ok = false;
      if (!api) err(it.where, fmt::format("endpoints[{}] needs 'api' (openai, anthropic, gemini, ollama)", i)),
          ok = false;
      if (host) {
        if (auto h = string(*host, "host", ctx)) {
          std::string v = *h;
          if (v.size() > 2 && v.front() == '[' && v.back() == ']') v = v.substr(1, v.size() - 2);
          std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
          if (v.find_first_of("/ \t@") != std::string::npos || v.find("://") != std::string::npos) {
            err(host->where, fmt::format("'host'{} must be a host name or address without scheme, path or port, "
                                         "got '{}'", ctx, *h));
            ok = false;
          } else if (v.find('*') != std::string::npos) {
            // A DNS name pattern ('*' = one or more characters of one label), learned from DNS
            // look-ups only: it must name a domain, not match everything.
            const std::string tail = v.substr(v.rfind('*') + 1);
            if (v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-*") != std::string::npos ||
                std::count(tail.begin(), tail.end(), '.') < 2 || v.find("**") != std::string::npos) {
              err(host->where, fmt::format("'host'{} pattern '{}': '*' stands for part of one DNS label and must "
                                           "be followed by a domain of at least two labels (\"*.openai.azure.com\")",
                                           ctx, *h));
              ok = false;
            }
          }
          ep.host = v;
        } else {
          ok = false;
        }
      }
      if (port) {
        if (auto v = integer(*port, "port", ctx, 1, 65535)) ep.port = static_cast<uint16_t>(*v);
        else ok = false;
      }
      if (api) {
        static const std::set<std::string> apis = {"openai", "anthropic", "gemini", "ollama", "bedrock"};
        if (api->is_scalar() && apis.count(api->value)) {
          ep.api = api->value;
        } else {
          err(api->where, fmt::format("'api'{} must be one of openai, anthropic, gemini, ollama, bedrock; got {}", ctx,
                                      describe(*api)));
          ok = false;
        }
      }
      if (const Node* t = it.find("tls")) {
        if (auto b = boolean(*t, "tls", ctx)) ep.tls = *b;
        else ok = false;
      }
      if (!ok) continue;
      bool dup = false;
      for (const Endpoint& prev : p.endpoints) {
        if (prev.host == ep.host && prev.port == ep.port) {
          dup = true;
          if (prev.api != ep.api || prev.tls != ep.tls)
            err(ep.where, fmt::format("endpoint {}:{} is declared again with different settings (first at {})",
                                      ep.host, ep.port, prev.where.str()));
        }
      }
      if (!dup) p.endpoints.push_back(std::move(ep));
    }
  }

  std::map<std::string, ModelPrice> prices(const Node& n, std::string_view key) {
    std::map<std::string, ModelPrice> out;
    if (n.is_null()) return out;
    if (!want_map(n, key, "")) return out;
    for (const ir::Entry& e : n.entries) {
      std::string ctx = fmt::format(" in {}.{}", key, e.key);
      const Node& m = e.value;
      if (!m.is_map()) {
        err(m.where, fmt::format("price of model '{}' must be a mapping {{input, output, cache_read, cache_write}}, "
                                 "got {}", e.key, describe(m)));
        continue;
      }
      check_keys(m, {"input", "output", "cache_read", "cache_write"}, ctx);
      ModelPrice mp;
      bool ok = true;
      for (std::string_view req : {"input", "output"}) {
        const Node* v = m.find(req);
        if (!v) {
          err(m.where, fmt::format("price of model '{}' needs '{}' (USD per 1M tokens)", e.key, req));
          ok = false;
          continue;
        }
        auto x = number(*v, req, ctx, true);
        if (!x) ok = false;
        else (req == "input" ? mp.input : mp.output) = *x;
      }
      if (const Node* v = m.find("cache_read")) {
        if (auto x = number(*v, "cache_read", ctx, true)) mp.cache_read = *x;
        else ok = false;
      }
      if (const Node* v = m.find("cache_write")) {
        if (auto x = number(*v, "cache_write", ctx, true)) mp.cache_write = *x;
        else ok = false;
      }
      if (ok) out[e.key] = mp;
    }
    return out;
  }

  static bool valid_name(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    for (char c : s)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
    return true;
  }

  void budgets(const Node& n, Policy& p) {
    if (!want_seq(n, "budgets", "")) return;
    std::map<std::string, SourceRef> seen;
    for (size_t i = 0; i < n.items.size(); ++i) {
      const Node& it = n.items[i];
      if (!it.is_map()) {
        err(it.where, fmt::format("budgets[{}] must be a mapping with a name and limits, got {}", i, describe(it)));
        continue;
      }
      Budget b;
      b.where = it.where;
      std::string ctx = fmt::format(" in budgets[{}]", i);
      if (const Node* nm = it.find("name")) {
        if (auto s = string(*nm, "name", ctx)) {
          if (!valid_name(*s)) {
            err(nm->where, fmt::format("budget name '{}' may only use letters, digits, '-', '_' and '.' "
                                       "(at most 64)", *s));
          } else {
            b.name = *s;
            ctx = fmt::format(" in budget '{}'", b.name);
            auto [pos, fresh] = seen.emplace(b.name, it.where);
            if (!fresh)
              err(it.where, fmt::format("duplicate budget name '{}' (first defined at {})", b.name, pos->second.str()));
          }
        }
      } else {
        err(it.where, fmt::format("budgets[{}] needs a 'name'", i));
      }
      size_t unknown_keys =
          check_keys(it, {"name", "match", "per", "tokens_per_minute", "requests_per_minute", "spend_per_hour_usd",
                          "spend_per_day_usd", "max_inflight", "limits", "action", "scope"},
                     ctx);
      if (const Node* v = it.find("match")) b.match = match(*v, ctx);
      if (const Node* v = it.find("per"))
        if (auto x = choice<Per>(*v, "per", ctx, &parse_per, "cgroup, tree, process")) b.per = *x;
      if (const Node* v = it.find("action"))
        if (auto x = choice<Action>(*v, "action", ctx, &parse_action, "alert, throttle, deny, kill")) b.action = *x;
      if (const Node* v = it.find("scope")) {
        if (v->is_scalar() && v->value == "host") b.scope = Budget::Scope::Host;
        else if (v->is_scalar() && v->value == "fleet") b.scope = Budget::Scope::Fleet;
        else err(v->where, fmt::format("'scope'{} must be one of host, fleet; got {}", ctx, describe(*v)));
        if (b.fleet()) fleet_budget_at_ = v->where;
      }

      struct Shorthand {
        std::string_view key;
        LimitKind kind;
        Millis window;
      };
      static const Shorthand shorthands[] = {
          {"tokens_per_minute", LimitKind::Tokens, std::chrono::minutes(1)},
          {"requests_per_minute", LimitKind::Requests, std::chrono::minutes(1)},
          {"spend_per_hour_usd", LimitKind::SpendUsd, std::chrono::hours(1)},
          {"spend_per_day_usd", LimitKind::SpendUsd, std::chrono::hours(24)},
      };
      for (const Shorthand& sh : shorthands) {
        const Node* v = it.find(sh.key);
        if (!v) continue;
        std::optional<double> amount;
        if (sh.kind == LimitKind::SpendUsd) amount = number(*v, sh.key, ctx, false);
        else if (auto x = integer(*v, sh.key, ctx, 1, int64_t(1) << 53)) amount = double(*x);
        if (amount) b.limits.push_back(Limit{sh.kind, *amount, sh.window, std::string(sh.key), v->where});
      }
      if (const Node* v = it.find("limits")) {
        if (want_seq(*v, "limits", ctx)) {
          for (size_t j = 0; j < v->items.size(); ++j) limit(v->items[j], j, ctx, b);
        }
      }
      if (const Node* v = it.find("max_inflight"))
        if (auto x = integer(*v, "max_inflight", ctx, 1, 1'000'000)) b.max_inflight = *x;
      if (b.limits.empty() && !b.max_inflight && !b.name.empty() && !it.find("limits")) {
        bool any_shorthand = false;
        for (const Shorthand& sh : shorthands) any_shorthand |= it.find(sh.key) != nullptr;
        // A misspelt limit key was already reported; "no limit" would only repeat it.
        if (!any_shorthand && !it.find("max_inflight") && unknown_keys == 0)
          err(it.where, fmt::format("budget '{}' sets no limit: give tokens_per_minute, requests_per_minute, "
                                    "spend_per_hour_usd, spend_per_day_usd, max_inflight or limits",
                                    b.name));
      }
      p.budgets.push_back(std::move(b));
    }
  }

  void limit(const Node& n, size_t j, const std::string& ctx, Budget& b) {
    std::string origin = fmt::format("limits[{}]", j);
    std::string lctx = fmt::format(" of {}{}", origin, ctx);
    if (!n.is_map()) {
      err(n.where, fmt::format("{}{} must be a mapping like {{tokens: 500, window: 10s}}, got {}", origin, ctx,
                               describe(n)));
      return;
    }
    check_keys(n, {"tokens", "spend_usd", "requests", "window"}, lctx);
    const ir::Entry* what = nullptr;
    int count = 0;
    for (std::string_view k : {"tokens", "spend_usd", "requests"})
      if (const ir::Entry* e = n.find_entry(k)) {
        ++count;
        if (!what) what = e;
      }
    if (count != 1) {
      err(n.where, fmt::format("{}{} needs exactly one of tokens, spend_usd, requests", origin, ctx));
      return;
    }
    const Node* w = n.find("window");
    if (!w) {
      err(n.where, fmt::format("{}{} needs a 'window' (e.g. 10s, 30m)", origin, ctx));
      return;
    }
    Limit l;
    l.origin = origin;
    l.where = n.where;
    std::optional<double> amount;
    if (what->key == "spend_usd") {
      l.kind = LimitKind::SpendUsd;
      amount = number(what->value, what->key, lctx, false);
    } else {
      l.kind = what->key == "tokens" ? LimitKind::Tokens : LimitKind::Requests;
      if (auto x = integer(what->value, what->key, lctx, 1, int64_t(1) << 53)) amount = double(*x);
    }
    auto win = duration(*w, "window", lctx, false);
    if (!amount || !win) return;
    l.amount = *amount;
    l.window = *win;
    b.limits.push_back(std::move(l));
  }

  // Common part of a loop detector; returns false if `n` is not usable.
  bool loop_common(const Node& n, std::string_view name, LoopRule& r, std::vector<std::string_view> extra_keys) {
    std::string ctx = fmt::format(" in loops.{}", name);
    if (!n.is_map()) {
      err(n.where, fmt::format("loops.{} must be a mapping, got {}", name, describe(n)));
      return false;
    }
    std::vector<std::string_view> keys = {"action", "per", "match", "enabled"};
    keys.insert(keys.end(), extra_keys.begin(), extra_keys.end());
    check_keys(n, keys, ctx);
    r.enabled = true;
    r.where = n.where;
    if (const Node* v = n.find("enabled"))
      if (auto b = boolean(*v, "enabled", ctx)) r.enabled = *b;
    if (const Node* v = n.find("action"))
      if (auto x = choice<Action>(*v, "action", ctx, &parse_action, "alert, throttle, deny, kill")) r.action = *x;
    if (const Node* v = n.find("per"))
      if (auto x = choice<Per>(*v, "per", ctx, &parse_per, "cgroup, tree, process")) r.per = *x;
    if (const Node* v = n.find("match")) r.match = match(*v, ctx);
    return true;
  }

  void loops(const Node& n, Policy& p) {
    if (n.is_null()) return;
    if (!want_map(n, "loops", "")) return;
    check_keys(n, {"ping_pong", "repetition", "fan_out", "retry_storm"}, " in loops");
    auto count = [&](const Node& d, std::string_view det, std::string_view key, int64_t& out, int64_t max) {
      if (const Node* v = d.find(key))
        if (auto x = integer(*v, key, fmt::format(" in loops.{}", det), 1, max)) out = *x;
    };
    auto window = [&](const Node& d, std::string_view det, Millis& out) {
      if (const Node* v = d.find("window"))
        if (auto x = duration(*v, "window", fmt::format(" in loops.{}", det), false)) out = *x;
    };
    if (const Node* d = n.find("ping_pong"); d && !d->is_null()) {
      auto& r = p.loops.ping_pong;
      if (loop_common(*d, "ping_pong", r, {"max_round_trips", "window"})) {
        count(*d, "ping_pong", "max_round_trips", r.max_round_trips, 1'000'000);
        window(*d, "ping_pong", r.window);
      }
    }
    if (const Node* d = n.find("repetition"); d && !d->is_null()) {
      auto& r = p.loops.repetition;
      if (loop_common(*d, "repetition", r, {"max_repeats", "window", "hamming"})) {
        count(*d, "repetition", "max_repeats", r.max_repeats, 1'000'000);
        window(*d, "repetition", r.window);
        if (const Node* v = d->find("hamming"))
          if (auto x = integer(*v, "hamming", " in loops.repetition", 0, 64)) r.hamming = static_cast<int>(*x);
      }
    }
    if (const Node* d = n.find("fan_out"); d && !d->is_null()) {
      auto& r = p.loops.fan_out;
      if (loop_common(*d, "fan_out", r, {"max_concurrent"}))
        count(*d, "fan_out", "max_concurrent", r.max_concurrent, 1'000'000);
    }
    if (const Node* d = n.find("retry_storm"); d && !d->is_null()) {
      auto& r = p.loops.retry_storm;
      if (loop_common(*d, "retry_storm", r, {"max_errors", "window"})) {
        count(*d, "retry_storm", "max_errors", r.max_errors, 1'000'000);
        window(*d, "retry_storm", r.window);
      }
    }
  }

  void alerts(const Node& n, Policy& p) {
    if (!want_seq(n, "alerts", "")) return;
    std::map<std::string, SourceRef> names;
    const auto& kinds = known_event_kinds();
    for (size_t i = 0; i < n.items.size(); ++i) {
      const Node& it = n.items[i];
      std::string ctx = fmt::format(" in alerts[{}]", i);
      if (!it.is_map()) {
        err(it.where, fmt::format("alerts[{}] must be a mapping with webhook or exec, got {}", i, describe(it)));
        continue;
      }
      check_keys(it, {"name", "webhook", "exec", "on", "min_interval"}, ctx);
      AlertRule a;
      a.where = it.where;
      a.name = fmt::format("alerts[{}]", i);
      a.on = {"budget_exceeded", "loop_detected", "denied", "killed"};
      if (const Node* v = it.find("name"))
        if (auto s = string(*v, "name", ctx)) {
          a.name = *s;
          auto [pos, fresh] = names.emplace(a.name, it.where);
          if (!fresh)
            err(v->where, fmt::format("duplicate alert name '{}' (first defined at {})", a.name, pos->second.str()));
        }
      const Node* wh = it.find("webhook");
      const Node* ex = it.find("exec");
      if ((wh != nullptr) == (ex != nullptr)) {
        err(it.where, fmt::format("alerts[{}] needs exactly one of 'webhook' (a URL) or 'exec' (a program path)", i));
      } else if (wh) {
        if (auto s = string(*wh, "webhook", ctx)) {
          bool scheme = s->rfind("https://", 0) == 0 || s->rfind("http://", 0) == 0;
          size_t host_at = s->find("://");
          if (!scheme || host_at == std::string::npos || host_at + 3 >= s->size() || (*s)[host_at + 3] == '/')
            err(wh->where, fmt::format("'webhook'{} must be an http:// or https:// URL, got '{}'", ctx, *s));
          else
            a.webhook = *s;
        }
      } else if (auto s = string(*ex, "exec", ctx)) {
        if ((*s)[0] != '/')
          err(ex->where, fmt::format("'exec'{} must be an absolute path, got '{}'", ctx, *s));
        else
          a.exec = *s;
      }
      if (const Node* v = it.find("on")) {
        std::vector<const Node*> items;
        if (v->is_scalar()) items.push_back(v);
        else if (v->is_seq())
          for (const Node& k : v->items) items.push_back(&k);
        else
          err(v->where, fmt::format("'on'{} must be a list of event kinds, got {}", ctx, describe(*v)));
        if (v->is_scalar() || v->is_seq()) {
          a.on.clear();
          for (const Node* k : items) {
            if (k->is_scalar() && std::find(kinds.begin(), kinds.end(), k->value) != kinds.end()) {
              if (std::find(a.on.begin(), a.on.end(), k->value) == a.on.end()) a.on.push_back(k->value);
            } else {
              std::vector<std::string_view> kv(kinds.begin(), kinds.end());
              err(k->where, fmt::format("unknown event kind {}{} (known: {})", describe(*k), ctx, join(kv)));
            }
          }
          if (a.on.empty() && v->is_seq() && v->items.empty())
            err(v->where, fmt::format("'on'{} is empty: the rule would never fire", ctx));
        }
      }
      if (const Node* v = it.find("min_interval"))
        if (auto d = duration(*v, "min_interval", ctx, true)) a.min_interval = *d;
      p.alerts.push_back(std::move(a));
    }
  }

  void metrics(const Node& n, Policy& p) {
    if (n.is_null()) return;
    if (!want_map(n, "metrics", "")) return;
    check_keys(n, {"listen"}, " in metrics");
    const Node* l = n.find("listen");
    if (!l) {
      err(n.where, "'metrics' needs 'listen' (host:port, e.g. \"127.0.0.1:9464\")");
      return;
    }
    auto s = string(*l, "listen", " in metrics");
    if (!s) return;
    Metrics m;
    m.listen = *s;
    std::string host, port;
    if ((*s)[0] == '[') {
      size_t close = s->find(']');
      if (close != std::string::npos && close + 1 < s->size() && (*s)[close + 1] == ':') {
        host = s->substr(1, close - 1);
        port = s->substr(close + 2);
      }
    } else if (size_t colon = s->rfind(':'); colon != std::string::npos && s->find(':') == colon) {
      host = s->substr(0, colon);
      port = s->substr(colon + 1);
    }
    int64_t pn = 0;
    bool port_ok = !port.empty() && port.size() <= 5 &&
                   std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); });
    if (port_ok) pn = std::stoll(port);
    if (host.empty() || !port_ok || pn < 1 || pn > 65535) {
      err(l->where, fmt::format("'listen' in metrics must be host:port (e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"), "
                                "got '{}'", *s));
      return;
    }
    m.host = host;
    m.port = static_cast<uint16_t>(pn);
    p.metrics = m;
  }

  void otlp(const Node& n, Policy& p) {
    if (n.is_null()) return;
    if (!want_map(n, "otlp", "")) return;
    check_keys(n, {"endpoint", "headers_file", "metrics_interval"}, " in otlp");
    Otlp o;
    const Node* e = n.find("endpoint");
    if (!e) {
      err(n.where, "'otlp' needs 'endpoint' (the collector's OTLP/HTTP base URL, e.g. \"http://127.0.0.1:4318\")");
      return;
    }
    auto url = string(*e, "endpoint", " in otlp");
    if (!url) return;
    const bool scheme = url->rfind("http://", 0) == 0 || url->rfind("https://", 0) == 0;
    const size_t host_at = url->find("://");
    const size_t authority_end = host_at == std::string::npos ? std::string::npos : url->find_first_of("/?#", host_at + 3);
    const std::string authority =
        host_at == std::string::npos ? "" : url->substr(host_at + 3, authority_end == std::string::npos ? std::string::npos : authority_end - host_at - 3);
    if (!scheme || authority.empty()) {
      err(e->where, fmt::format("'endpoint' in otlp must be an http:// or https:// URL (e.g. \"http://127.0.0.1:4318\"), got '{}'", *url));
      return;
    }
    if (authority.find('@') != std::string::npos) {
      // credentials belong in headers_file, which is never shown; a URL is (policy show, logs)
      err(e->where, "'endpoint' in otlp must not carry user:password@: put an Authorization header in 'headers_file'");
      return;
    }
    if (url->find_first_of("?#") != std::string::npos) {
      err(e->where, fmt::format("'endpoint' in otlp is a base URL: no query or fragment, got '{}'", *url));
      return;
    }
    o.endpoint = *url;
    while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
    if (const Node* h = n.find("headers_file")) {
      if (auto f = string(*h, "headers_file", " in otlp")) {
        if ((*f)[0] != '/')
          err(h->where, fmt::format("'headers_file' in otlp must be an absolute path, got '{}'", *f));
        else
          o.headers_file = *f;
      }
    }
    if (const Node* v = n.find("metrics_interval"))
      if (auto d = duration(*v, "metrics_interval", " in otlp", false)) {
        if (*d < std::chrono::seconds(1))
          err(v->where, "'metrics_interval' in otlp must be at least 1s");
        else
          o.metrics_interval = *d;
      }
    p.otlp = o;
  }

  // `fleet:` (docs/fleet.md). The password is read by the loader from password_file.
  void fleet(const Node& n, Policy& p) {
    if (n.is_null()) return;
    if (!want_map(n, "fleet", "")) return;
    check_keys(n, {"redis", "password_file", "host_id", "fail"}, " in fleet");
    Fleet f;
    f.where = n.where;
    bool ok = true;
    if (const Node* v = n.find("redis")) {
      if (auto s = string(*v, "redis", " in fleet")) {
        if (auto why = parse_redis_url(*s, f)) {
          err(v->where, fmt::format("'redis' in fleet: {} (write redis://HOST:PORT/DB or rediss://HOST:PORT/DB; "
                                    "the password goes in password_file)", *why));
          ok = false;
        }
      } else {
        ok = false;
      }
    } else {
      err(n.where, "'fleet' needs 'redis' (e.g. redis://127.0.0.1:6379/0)");
      ok = false;
    }
    if (const Node* v = n.find("password_file")) {
      if (auto s = string(*v, "password_file", " in fleet")) {
        if ((*s)[0] != '/') {
          err(v->where, fmt::format("'password_file' in fleet must be an absolute path, got '{}'", *s));
          ok = false;
        } else {
          f.password_file = *s;
          f.password_file_where = v->where;
        }
      } else {
        ok = false;
      }
    }
    if (const Node* v = n.find("host_id")) {
      if (auto s = string(*v, "host_id", " in fleet")) {
        if (!valid_name(*s)) {
          err(v->where, fmt::format("'host_id' in fleet may only use letters, digits, '-', '_' and '.' (at most 64), "
                                    "got '{}'", *s));
          ok = false;
        } else {
          f.host_id = *s;
        }
      } else {
        ok = false;
      }
    }
    if (const Node* v = n.find("fail")) {
      if (auto x = choice<FleetFail>(*v, "fail", " in fleet", &parse_fleet_fail, "local, open, closed")) f.fail = *x;
      else ok = false;
    }
    if (ok) p.fleet = std::move(f);
    else fleet_invalid_ = true;
  }

  // "redis://host:port/db" into f; the reason it is not one otherwise.
  static std::optional<std::string> parse_redis_url(const std::string& url, Fleet& f) {
    std::string rest;
    if (url.rfind("redis://", 0) == 0) rest = url.substr(8);
    else if (url.rfind("rediss://", 0) == 0) rest = url.substr(9), f.tls = true;
    else return fmt::format("'{}' is not a redis:// or rediss:// URL", url);
    if (rest.find('@') != std::string::npos) return "a password or user in the URL is refused";
    std::string hostport = rest, db;
    if (size_t slash = rest.find('/'); slash != std::string::npos) {
      hostport = rest.substr(0, slash);
      db = rest.substr(slash + 1);
    }
    std::string host = hostport, port;
    if (!hostport.empty() && hostport[0] == '[') {
      size_t close = hostport.find(']');
      if (close == std::string::npos) return fmt::format("unclosed '[' in '{}'", url);
      host = hostport.substr(1, close - 1);
      if (close + 1 < hostport.size()) {
        if (hostport[close + 1] != ':') return fmt::format("bad host:port in '{}'", url);
        port = hostport.substr(close + 2);
      }
    } else if (size_t colon = hostport.rfind(':'); colon != std::string::npos) {
      if (hostport.find(':') != colon) return fmt::format("an IPv6 address must be written in [ ] in '{}'", url);
      host = hostport.substr(0, colon);
      port = hostport.substr(colon + 1);
    }
    if (host.empty()) return fmt::format("no host in '{}'", url);
    auto all_digits = [](const std::string& s) {
      return !s.empty() && s.size() <= 5 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
    };
    if (!port.empty() || hostport.back() == ':') {
      if (!all_digits(port) || std::stoll(port) < 1 || std::stoll(port) > 65535)
        return fmt::format("bad port '{}' in '{}'", port, url);
      f.port = static_cast<uint16_t>(std::stoll(port));
    }
    if (!db.empty()) {
      if (!all_digits(db) || std::stoll(db) > 15) return fmt::format("bad database number '{}' in '{}' (0-15)", db, url);
      f.db = static_cast<int>(std::stoll(db));
    }
    f.redis = url;
    f.host = host;
    return std::nullopt;
  }

  void pacing(const Node& n, Policy& p) {
    if (n.is_null()) return;
    if (!want_map(n, "pacing", "")) return;
    check_keys(n, {"enabled"}, " in pacing");
    if (const Node* v = n.find("enabled"))
      if (auto b = boolean(*v, "enabled", " in pacing")) p.pacing.enabled = *b;
  }

  Policy run(const Node& root) {
    Policy p;
    if (root.is_null()) return p;  // an empty policy: every default, nothing gated
    if (!root.is_map()) {
      err(root.where, fmt::format("a policy must be a mapping of keys (mode, budgets, loops, ...), got {}",
                                  describe(root)));
      return p;
    }
    check_keys(root, {"mode", "retention", "retention_max_mb", "metrics", "otlp", "max_hold", "cooldown", "endpoints", "prices", "budgets",
                      "loops", "pacing", "alerts", "fleet"},
               "");
    if (const Node* v = root.find("mode"))
      if (auto x = choice<Mode>(*v, "mode", "", &parse_mode, "enforce, observe")) p.mode = *x;
    if (const Node* v = root.find("retention"))
      if (auto x = duration(*v, "retention", "", false)) p.retention = *x;
    if (const Node* v = root.find("retention_max_mb"))
      if (auto x = integer(*v, "retention_max_mb", "", 0, int64_t(1) << 30)) p.retention_max_mb = *x;
    if (const Node* v = root.find("max_hold"))
      if (auto x = duration(*v, "max_hold", "", false)) p.max_hold = *x;
    if (const Node* v = root.find("cooldown"))
      if (auto x = duration(*v, "cooldown", "", true)) p.cooldown = *x;
    if (const Node* v = root.find("metrics")) metrics(*v, p);
    if (const Node* v = root.find("otlp")) otlp(*v, p);
    if (const Node* v = root.find("endpoints"); v && !v->is_null()) endpoints(*v, p);
    if (const Node* v = root.find("prices")) p.prices = prices(*v, "prices");
    if (const Node* v = root.find("budgets"); v && !v->is_null()) budgets(*v, p);
    if (const Node* v = root.find("loops")) loops(*v, p);
    if (const Node* v = root.find("pacing")) pacing(*v, p);
    if (const Node* v = root.find("alerts"); v && !v->is_null()) alerts(*v, p);
    if (const Node* v = root.find("fleet")) fleet(*v, p);
    if (fleet_budget_at_ && !p.fleet && !fleet_invalid_)
      err(*fleet_budget_at_, "'scope: fleet' needs a 'fleet:' block (redis, password_file, host_id, fail) "
                             "naming the Redis the hosts share");
    return p;
  }

 private:
  std::vector<std::string>& errors_;
  std::optional<SourceRef> fleet_budget_at_;   // the first `scope: fleet`
  bool fleet_invalid_ = false;                 // `fleet:` had errors (already reported)
};

}  // namespace

Policy compile(const ir::Node& root, std::vector<std::string>& errors) { return Compiler(errors).run(root); }

std::map<std::string, ModelPrice> compile_prices(const ir::Node& node, const std::string& what,
                                                 std::vector<std::string>& errors) {
  return Compiler(errors).prices(node, what);
}

std::string digest_hex(std::string_view text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return fmt::format("{:016x}", h);
}

// ---- enums -----------------------------------------------------------------------------

std::string_view to_string(Mode m) { return m == Mode::Enforce ? "enforce" : "observe"; }
std::string_view to_string(Action a) {
  switch (a) {
    case Action::Alert: return "alert";
    case Action::Throttle: return "throttle";
    case Action::Deny: return "deny";
    case Action::Kill: return "kill";
  }
  return "?";
}
std::string_view to_string(Per p) {
  switch (p) {
    case Per::Cgroup: return "cgroup";
    case Per::Tree: return "tree";
    case Per::Process: return "process";
  }
  return "?";
}
std::string_view to_string(LimitKind k) {
  switch (k) {
    case LimitKind::Tokens: return "tokens";
    case LimitKind::SpendUsd: return "spend_usd";
    case LimitKind::Requests: return "requests";
  }
  return "?";
}
std::optional<Mode> parse_mode(std::string_view s) {
  if (s == "enforce") return Mode::Enforce;
  if (s == "observe") return Mode::Observe;
  return std::nullopt;
}
std::optional<Action> parse_action(std::string_view s) {
  if (s == "alert") return Action::Alert;
  if (s == "throttle") return Action::Throttle;
  if (s == "deny") return Action::Deny;
  if (s == "kill") return Action::Kill;
  return std::nullopt;
}
std::string_view to_string(FleetFail f) {
  switch (f) {
    case FleetFail::Local: return "local";
    case FleetFail::Open: return "open";
    case FleetFail::Closed: return "closed";
  }
  return "?";
}
std::optional<FleetFail> parse_fleet_fail(std::string_view s) {
  if (s == "local") return FleetFail::Local;
  if (s == "open") return FleetFail::Open;
  if (s == "closed") return FleetFail::Closed;
  return std::nullopt;
}
std::optional<Per> parse_per(std::string_view s) {
  if (s == "cgroup") return Per::Cgroup;
  if (s == "tree") return Per::Tree;
  if (s == "process") return Per::Process;
  return std::nullopt;
}

const std::vector<std::string>& known_event_kinds() {
  static const std::vector<std::string> k = {
      "llm_call",       "budget_exceeded", "loop_detected", "paused",        "resumed",
      "denied",         "killed",          "alert_failed",  "policy_loaded", "policy_rejected",
      "events_lost",    "probe_attached",  "probe_failed",  "alert_sent",    "spend_projected",
      "fleet_degraded", "fleet_restored"};
  return k;
}

std::string SourceRef::str() const { return line > 0 ? fmt::format("{}:{}", file, line) : file; }

const Budget* Policy::find_budget(std::string_view name) const {
  for (const Budget& b : budgets)
    if (b.name == name) return &b;
  return nullptr;
}

}  // namespace ab::policy
