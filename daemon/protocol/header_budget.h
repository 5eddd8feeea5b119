// header_budget.h — one cap on the HTTP header bytes buffered across every stream.
//
// Each stream bounds its own message heads (64 KiB per direction for HTTP/1, 256 KiB header
// blocks for HTTP/2), but 16,384 streams times that is gigabytes. A HeaderBudget is shared by
// all the streams of a StreamTable: every buffer that holds a head (or an HTTP/2 header block or
// control frame) charges its heap capacity to it before it grows, and gives it back when the
// head is parsed or dropped. A buffer the budget has no room for refuses the bytes: its owner
// drops that head (HTTP/1: the message is skipped and parsing resynchronizes at the next start
// line; HTTP/2: the connection is left undecoded, as for an oversized block) and the budget
// counts the refusal (status and metrics counter header_budget_drops).
//
// Not thread-safe: the event loop owns the StreamTable and its budget.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ab::protocol {

class HeaderBudget {
 public:
  static constexpr size_t kDefaultLimit = size_t(64) << 20;  // 64 MiB
  explicit HeaderBudget(size_t limit = kDefaultLimit) : limit_(limit) {}

  // Charges n bytes; false (nothing charged, the refusal counted) when they do not fit.
  bool take(size_t n) {
    if (n > limit_ - std::min(used_, limit_)) {
      ++refused_;
      return false;
    }
    used_ += n;
    peak_ = std::max(peak_, used_);
    return true;
  }
  // Charges n bytes whatever the limit (an allocator rounding up what take() allowed).
  void force(size_t n) {
    used_ += n;
    peak_ = std::max(peak_, used_);
  }
  void give(size_t n) { used_ -= std::min(n, used_); }

  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t limit() const { return limit_; }
  uint64_t refused() const { return refused_; }

 private:
  size_t limit_;
  size_t used_ = 0, peak_ = 0;
  uint64_t refused_ = 0;
};

// A string whose heap capacity is charged to a HeaderBudget (none: not charged). It grows by
// doubling up to `max_bytes` (the owner's own per-buffer bound); release() frees the memory and
// gives the charge back. Owners release once a head is parsed, so an idle stream holds none.
class BudgetedString {
 public:
  explicit BudgetedString(HeaderBudget* budget, size_t max_bytes) : budget_(budget), max_(max_bytes) {}
  ~BudgetedString() { release(); }
  BudgetedString(const BudgetedString&) = delete;
  BudgetedString& operator=(const BudgetedString&) = delete;

  // Room for n bytes in all; false (nothing changed) when the budget refuses.
  bool reserve(size_t n) {
    if (n <= s_.capacity()) return true;
    const size_t want = std::max(n, std::min(2 * s_.capacity(), std::max(n, max_)));
    if (budget_ && want > charged_ && !budget_->take(want - charged_)) return false;
    if (want > charged_) charged_ = want;
    s_.reserve(want);
    if (budget_ && s_.capacity() > charged_) budget_->force(s_.capacity() - charged_);
    charged_ = std::max(charged_, s_.capacity());
    return true;
  }
  bool append(std::string_view d) {
    if (!reserve(s_.size() + d.size())) return false;
    s_.append(d);
    return true;
  }
  void release() {
    std::string().swap(s_);
    if (budget_) budget_->give(charged_);
    charged_ = 0;
  }
  void clear() { s_.clear(); }  // keeps the memory (and its charge)
  void resize(size_t n) { s_.resize(std::min(n, s_.size())); }
  const std::string& str() const { return s_; }
  size_t size() const { return s_.size(); }
  bool empty() const { return s_.empty(); }
  const char* data() const { return s_.data(); }
  size_t charged() const { return charged_; }

 private:
  HeaderBudget* budget_;
  size_t max_;
  std::string s_;
  size_t charged_ = 0;
};

}  // namespace ab::protocol
