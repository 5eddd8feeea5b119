// money.h — US dollar amounts as the CLI and the HTML report print them. One primitive and
// the two styles built on it.
#pragma once
#include <string>

namespace ab::util {

// "$" and exactly `decimals` digits after the point, rounded: format_usd_fixed(2.5, 2) ==
// "$2.50", format_usd_fixed(12.3, 0) == "$12".
std::string format_usd_fixed(double usd, int decimals);

// Tables and one-line summaries: 4 decimals below $1, else 2: "$0.0123", "$12.35", "$0.0000".
std::string format_usd(double usd);

// The HTML report's cards and tables: "$0" for nothing, else 4 decimals below $1, 3 below
// $100, 2 from $100: "$0.0123", "$12.345", "$123.45".
std::string format_usd_report(double usd);

}  // namespace ab::util
