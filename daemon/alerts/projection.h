// projection.h — "at this rate, the limit is crossed before the window ends": an early warning
// for spend limits. Pure arithmetic, no clock.
#pragma once

#include <optional>

namespace ab::alerts {

// Seconds from now until `spent_in_window_usd + rate_usd_per_s * t` reaches `limit_usd`,
// provided that happens within `window_remaining_s`; nullopt when it does not (rate zero or
// negative, or the window ends first). Already at or over the limit: 0. Any argument that is
// not finite, a negative spend, a limit <= 0 or a negative remaining window: nullopt.
std::optional<double> projected_crossing_s(double spent_in_window_usd, double rate_usd_per_s, double limit_usd,
                                           double window_remaining_s);

}  // namespace ab::alerts
