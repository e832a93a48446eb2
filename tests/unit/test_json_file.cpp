#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/runtime/error.h"

namespace {

TEST(JsonFile, ReadsPythonInfinityAndNaNOutsideStrings) {
  tide::testing::TempDir dir;
  std::ofstream(dir / "c.json") << R"({"lo": -Infinity, "hi": Infinity, "n": NaN, "s": "NaN -Infinity"})";
  const auto j = tide::io::read_json(dir / "c.json");
  EXPECT_LT(j["lo"].get<double>(), -1e308);
  EXPECT_GT(j["hi"].get<double>(), 1e308);
  EXPECT_TRUE(j["n"].is_null());
  EXPECT_EQ(j["s"].get<std::string>(), "NaN -Infinity");
}

TEST(JsonFile, ErrorsNameTheFileAndKey) {
  tide::testing::TempDir dir;
  std::ofstream(dir / "bad.json") << "{\"a\": ";
  try {
    tide::io::read_json(dir / "bad.json");
    FAIL();
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
  EXPECT_THROW(tide::io::read_json(dir / "missing.json"), tide::Error);
  const nlohmann::json j = {{"steps", "many"}};
  EXPECT_THROW(tide::io::json_get<int>(j, "steps", 1), tide::Error);
  EXPECT_EQ(tide::io::json_get<int>(j, "absent", 7), 7);
}

}  // namespace

namespace {

// A config number read as an integer must be one, and fit: nlohmann alone would truncate 2.5 and wrap 2^40.
TEST(JsonFile, IntegersMustBeWholeAndFit) {
  const nlohmann::json j = nlohmann::json::parse(
      R"({"half": 2.5, "big": 1099511627776, "negative": -3, "whole": 1000.0, "huge": 1e300, "int": 42})");
  using tide::io::json_get;
  EXPECT_THROW(json_get<int>(j, "half", 0), tide::Error);
  EXPECT_THROW(json_get<int>(j, "big", 0), tide::Error);
  EXPECT_THROW(json_get<int64_t>(j, "huge", 0), tide::Error);
  EXPECT_THROW(json_get<unsigned>(j, "negative", 0u), tide::Error);
  EXPECT_EQ(json_get<int64_t>(j, "big", 0), int64_t(1) << 40);
  EXPECT_EQ(json_get<int>(j, "negative", 0), -3);
  EXPECT_EQ(json_get<int>(j, "whole", 0), 1000);
  EXPECT_EQ(json_get<int>(j, "int", 0), 42);
  EXPECT_DOUBLE_EQ(json_get<double>(j, "half", 0.0), 2.5);
  // Lists of integers too (a float beyond int64 was undefined behaviour in nlohmann's conversion; found by fuzzing).
  const nlohmann::json lists = nlohmann::json::parse(R"({"ok": [32, 64.0], "huge": [32, 62222222222222222224], "half": [1.5]})");
  EXPECT_EQ(json_get<std::vector<int64_t>>(lists, "ok", {}), (std::vector<int64_t>{32, 64}));
  EXPECT_THROW(json_get<std::vector<int64_t>>(lists, "huge", {}), tide::Error);
  EXPECT_THROW(json_get<std::vector<int>>(lists, "half", {}), tide::Error);
  try {
    json_get<int>(j, "half", 0);
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'half'"), std::string::npos) << e.what();
  }
}

}  // namespace
