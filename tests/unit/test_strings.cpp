// The shared string helpers: trim (Python's str.strip() over ASCII whitespace), env_or_empty and shape_string,
// which every error message about a tensor's shape goes through.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "tide/runtime/shape_string.h"
#include "tide/runtime/strings.h"

namespace {

TEST(Strings, TrimRemovesAsciiWhitespaceAtBothEnds) {
  EXPECT_EQ(tide::trim("  a b \t\r\n"), "a b");
  EXPECT_EQ(tide::trim("\f\vtoken\v\f"), "token");  // all six of Python's ASCII whitespace characters
  EXPECT_EQ(tide::trim("inner  space"), "inner  space");
  EXPECT_EQ(tide::trim(" \t\n "), "");
  EXPECT_EQ(tide::trim(""), "");
  EXPECT_EQ(tide::trim("\xc2\xa0x"), "\xc2\xa0x");  // bytes of non-ASCII characters are kept
}

TEST(Strings, EnvOrEmptyReadsTheEnvironment) {
  ::setenv("TIDE_TEST_STRINGS_VALUE", " v ", 1);
  EXPECT_EQ(tide::env_or_empty("TIDE_TEST_STRINGS_VALUE"), " v ");
  ::unsetenv("TIDE_TEST_STRINGS_VALUE");
  EXPECT_EQ(tide::env_or_empty("TIDE_TEST_STRINGS_VALUE"), "");
}

TEST(Strings, ShapeStringWritesShapesAsLists) {
  EXPECT_EQ(tide::shape_string(at::IntArrayRef{2, 4, 64, 64}), "[2, 4, 64, 64]");
  EXPECT_EQ(tide::shape_string(std::vector<int64_t>{320}), "[320]");
  EXPECT_EQ(tide::shape_string({}), "[]");
  EXPECT_EQ(tide::shape_string(at::zeros({3, 0, 5}).sizes()), "[3, 0, 5]");
  EXPECT_EQ(tide::shape_string({-1, 77}), "[-1, 77]");
}

}  // namespace
