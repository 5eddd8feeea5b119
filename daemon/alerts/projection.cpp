#include "alerts/projection.h"

#include <cmath>

namespace ab::alerts {

std::optional<double> projected_crossing_s(double spent_in_window_usd, double rate_usd_per_s, double limit_usd,
                                           double window_remaining_s) {
  if (!std::isfinite(spent_in_window_usd) || !std::isfinite(rate_usd_per_s) || !std::isfinite(limit_usd) ||
      !std::isfinite(window_remaining_s))
    return std::nullopt;
  if (spent_in_window_usd < 0 || limit_usd <= 0 || window_remaining_s < 0) return std::nullopt;
  if (spent_in_window_usd >= limit_usd) return 0.0;
  if (rate_usd_per_s <= 0) return std::nullopt;
  double t = (limit_usd - spent_in_window_usd) / rate_usd_per_s;
  if (t > window_remaining_s) return std::nullopt;
  return t;
}

}  // namespace ab::alerts
