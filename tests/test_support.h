// Helpers shared by the tests: where the reference fixtures are, and tensor comparisons.
#pragma once
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tide::testing {

// The fixtures folder from TIDE_FIXTURES; skips the calling test when unset (CTest reports it skipped).
#define TIDE_REQUIRE_FIXTURES()                                                      \
  do {                                                                               \
    if (!::tide::testing::fixtures_available())                                     \
      GTEST_SKIP() << "TIDE_FIXTURES is not set: reference fixtures not available"; \
  } while (0)

inline bool fixtures_available() {
  const char* dir = std::getenv("TIDE_FIXTURES");
  return dir && *dir && std::filesystem::is_directory(dir);
}

inline std::filesystem::path fixtures_dir() {
  const char* dir = std::getenv("TIDE_FIXTURES");
  return dir ? std::filesystem::path(dir) : std::filesystem::path();
}

inline std::filesystem::path reference_case(const std::string& id) { return fixtures_dir() / "reference" / id; }
inline std::filesystem::path pipeline_dir(const std::string& name) { return fixtures_dir() / "pipelines" / name; }

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Asserts equal shapes and max |a - b| <= tol, printing the difference on failure.
#define EXPECT_TENSOR_NEAR(actual, expected, tol)                                            \
  do {                                                                                       \
    const at::Tensor tide_a_ = (actual), tide_e_ = (expected);                               \
    ASSERT_EQ(tide_a_.sizes(), tide_e_.sizes()) << #actual " vs " #expected;                 \
    const double tide_d_ = ::tide::testing::max_abs_diff(tide_a_, tide_e_);                  \
    EXPECT_LE(tide_d_, (tol)) << #actual " vs " #expected << ": max abs diff " << tide_d_; \
  } while (0)

// A temporary folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("tide-test-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
             std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" + std::to_string(std::rand()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace tide::testing
