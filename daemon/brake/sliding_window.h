// sliding_window.h — amounts with timestamps, summed over a sliding window.
//
// One window backs one limit of one bucket ("in any `length` window, at most N tokens").
// An entry counts at time `now` while now − ts < length: it enters at ts and leaves exactly
// `length` later. Each entry may carry a tag (a reservation id) so that a reservation can
// later be replaced by the real usage, or withdrawn, without moving it in time: a call is
// counted at the moment it was admitted, whatever its final size.
//
// Pure: no clock inside; every query takes now_ns. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

namespace ab::brake {

// Whether `need` more fits under `limit` when `level` is already used. A window with nothing
// in it admits anything, so that a call larger than the whole limit can still go out alone
// rather than be held forever. The small tolerance keeps USD sums (0.1 + 0.2) from failing
// against a limit they equal.
bool fits(double level, double need, double limit);

class SlidingWindow {
 public:
  static constexpr uint64_t kUntagged = 0;  // entries that will never be settled (restored history)

  explicit SlidingWindow(int64_t length_ns) : length_ns_(length_ns) {}

  int64_t length_ns() const { return length_ns_; }

  // Adds `amount` at `ts_ns`. Entries stay ordered by time even when ts_ns is older than the
  // newest entry (history restored after live calls).
  void add(int64_t ts_ns, double amount, uint64_t tag = kUntagged);
  // Replaces the amount of the entry tagged `tag`; false when there is none (it already left
  // the window, or was never added).
  bool set_amount(uint64_t tag, double amount);
  // Removes the entry tagged `tag`; false when there is none.
  bool remove(uint64_t tag);

  // Forgets entries that have left the window at now_ns. Queries give the same answers with
  // or without trimming; trimming only frees memory and keeps queries fast.
  void trim(int64_t now_ns);

  // Sum of the amounts in the window at now_ns: entries with now_ns − length < ts.
  double level(int64_t now_ns) const;
  // Number of entries in the window at now_ns.
  size_t count(int64_t now_ns) const;
  bool empty(int64_t now_ns) const { return count(now_ns) == 0; }

  // The earliest time ≥ now_ns at which `need` fits under `limit` if nothing else is added
  // (entries leaving the window one by one). Always defined: at the latest the window empties.
  int64_t room_at(int64_t now_ns, double need, double limit) const;

  // Time of the oldest entry still in the window at now_ns, if any.
  std::optional<int64_t> oldest(int64_t now_ns) const;

 private:
  struct Entry {
    int64_t ts_ns;
    double amount;
    uint64_t tag;
  };
  bool inside(const Entry& e, int64_t now_ns) const { return now_ns - e.ts_ns < length_ns_; }
  Entry* find(uint64_t tag);

  int64_t length_ns_;
  std::deque<Entry> entries_;  // ordered by ts_ns
  double total_ = 0;           // sum of every entry's amount (trimmed or not yet)
};

}  // namespace ab::brake
