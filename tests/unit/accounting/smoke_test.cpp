#include <gtest/gtest.h>
#include "accounting/prices.h"
using namespace ab::accounting;
TEST(PricesSmoke, BuiltinParses) { EXPECT_GT(PriceTable::builtin().size(), 40u); }
