// Dollar amounts: the CLI tables' style, the HTML report's, and the fixed-decimals primitive.
#include "util/money.h"

#include <gtest/gtest.h>

using namespace ab::util;

TEST(Money, Fixed) {
  EXPECT_EQ(format_usd_fixed(2.5, 2), "$2.50");
  EXPECT_EQ(format_usd_fixed(12.3, 0), "$12");
  EXPECT_EQ(format_usd_fixed(0.125, 2), "$0.12");  // round half to even, as printf does
  EXPECT_EQ(format_usd_fixed(-1.5, 1), "$-1.5");
}

TEST(Money, Tables) {
  EXPECT_EQ(format_usd(0.0123), "$0.0123");
  EXPECT_EQ(format_usd(12.345), "$12.35");
  EXPECT_EQ(format_usd(0), "$0.0000");
  EXPECT_EQ(format_usd(0.99999), "$1.0000");  // below $1 before rounding
  EXPECT_EQ(format_usd(1), "$1.00");
  EXPECT_EQ(format_usd(-0.5), "$-0.5000");
}

TEST(Money, Report) {
  EXPECT_EQ(format_usd_report(0), "$0");
  EXPECT_EQ(format_usd_report(0.0123), "$0.0123");
  EXPECT_EQ(format_usd_report(12.3456), "$12.346");
  EXPECT_EQ(format_usd_report(123.456), "$123.46");
  EXPECT_EQ(format_usd_report(-2), "$-2.000");
}
