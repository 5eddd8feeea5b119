#include "util/money.h"

#include <cmath>

#include <fmt/format.h>

namespace ab::util {

std::string format_usd_fixed(double usd, int decimals) { return fmt::format("${:.{}f}", usd, decimals); }

std::string format_usd(double usd) { return format_usd_fixed(usd, std::fabs(usd) < 1.0 ? 4 : 2); }

std::string format_usd_report(double usd) {
  if (usd == 0) return "$0";
  const double a = std::fabs(usd);
  return format_usd_fixed(usd, a >= 100 ? 2 : a >= 1 ? 3 : 4);
}

}  // namespace ab::util
