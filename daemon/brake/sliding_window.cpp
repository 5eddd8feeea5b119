#include "brake/sliding_window.h"

#include <algorithm>
#include <cmath>

namespace ab::brake {

bool fits(double level, double need, double limit) {
  // Amounts are never negative, so a level this close to zero means nothing is counted.
  constexpr double kEmpty = 1e-12;
  if (level <= kEmpty) return true;
  const double tolerance = 1e-9 * std::max(1.0, std::fabs(limit));
  return level + need <= limit + tolerance;
}

void SlidingWindow::add(int64_t ts_ns, double amount, uint64_t tag) {
  total_ += amount;
  if (entries_.empty() || entries_.back().ts_ns <= ts_ns) {
    entries_.push_back({ts_ns, amount, tag});
    return;
  }
  auto pos = std::upper_bound(entries_.begin(), entries_.end(), ts_ns,
                              [](int64_t ts, const Entry& e) { return ts < e.ts_ns; });
  entries_.insert(pos, {ts_ns, amount, tag});
}

SlidingWindow::Entry* SlidingWindow::find(uint64_t tag) {
  if (tag == kUntagged) return nullptr;
  // Reservations are settled soon after they were made: search from the newest end.
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    if (it->tag == tag) return &*it;
  return nullptr;
}

bool SlidingWindow::set_amount(uint64_t tag, double amount) {
  Entry* e = find(tag);
  if (!e) return false;
  total_ += amount - e->amount;
  e->amount = amount;
  return true;
}

bool SlidingWindow::remove(uint64_t tag) {
  if (tag == kUntagged) return false;
  // From the newest end: the usual caller withdraws the reservation it just made.
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    if (it->tag != tag) continue;
    total_ -= it->amount;
    entries_.erase(std::next(it).base());
    if (entries_.empty()) total_ = 0;  // no drift left behind by float sums
    return true;
  }
  return false;
}

void SlidingWindow::trim(int64_t now_ns) {
  while (!entries_.empty() && !inside(entries_.front(), now_ns)) {
    total_ -= entries_.front().amount;
    entries_.pop_front();
  }
  if (entries_.empty()) total_ = 0;
}

double SlidingWindow::level(int64_t now_ns) const {
  double expired = 0;
  size_t left = 0;
  for (const Entry& e : entries_) {
    if (inside(e, now_ns)) break;
    expired += e.amount;
    ++left;
  }
  if (left == entries_.size()) return 0;
  return std::max(0.0, total_ - expired);
}

size_t SlidingWindow::count(int64_t now_ns) const {
  size_t left = 0;
  for (const Entry& e : entries_) {
    if (inside(e, now_ns)) break;
    ++left;
  }
  return entries_.size() - left;
}

int64_t SlidingWindow::room_at(int64_t now_ns, double need, double limit) const {
  double remaining = level(now_ns);
  if (fits(remaining, need, limit)) return now_ns;
  for (const Entry& e : entries_) {
    if (!inside(e, now_ns)) continue;
    remaining -= e.amount;
    const int64_t leaves_at = e.ts_ns + length_ns_;
    if (fits(remaining, need, limit)) return std::max(now_ns, leaves_at);
  }
  // Only reachable through float residue: by then every entry has left.
  return entries_.empty() ? now_ns : std::max(now_ns, entries_.back().ts_ns + length_ns_);
}

std::optional<int64_t> SlidingWindow::oldest(int64_t now_ns) const {
  for (const Entry& e : entries_)
    if (inside(e, now_ns)) return e.ts_ns;
  return std::nullopt;
}

}  // namespace ab::brake
