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
