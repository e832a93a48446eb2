// Helpers shared by the tests: where the reference fixtures are, and tensor comparisons.
#pragma once
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tide/io/json_file.h"

namespace tide::testing {

// Why the reference fixtures cannot be used ("" when they can): TIDE_FIXTURES unset, or naming a folder
// that does not exist.
inline std::string fixtures_unavailable_reason() {
  const char* dir = std::getenv("TIDE_FIXTURES");
  if (!dir || !*dir) return "TIDE_FIXTURES is not set: reference fixtures not available";
  if (!std::filesystem::is_directory(dir))
    return std::string("TIDE_FIXTURES names ") + dir + ", which is not a folder: reference fixtures not available";
  return "";
}

inline bool fixtures_available() { return fixtures_unavailable_reason().empty(); }

// Skips the calling test, with the reason, when the fixtures cannot be used (CTest reports it skipped).
#define TIDE_REQUIRE_FIXTURES()                                                 \
  do {                                                                          \
    const std::string tide_reason_ = ::tide::testing::fixtures_unavailable_reason(); \
    if (!tide_reason_.empty()) GTEST_SKIP() << tide_reason_;                    \
  } while (0)

// A file's bytes, and a file made of `bytes`.
inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::filesystem::path fixtures_dir() {
  const char* dir = std::getenv("TIDE_FIXTURES");
  return dir ? std::filesystem::path(dir) : std::filesystem::path();
}

inline std::filesystem::path reference_case(const std::string& id) { return fixtures_dir() / "reference" / id; }
inline std::filesystem::path pipeline_dir(const std::string& name) { return fixtures_dir() / "pipelines" / name; }

// A reference case found in the fixtures: its folder name and the pipeline it was made with.
struct ReferenceCase {
  std::string id, pipeline;
};
inline void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.id; }  // readable test listings

// The cases under $TIDE_FIXTURES/reference (folders with a case.json) that hold `marker_file` — e.g.
// "latents_final.npy" for whole text-to-image runs, "unet_out.npy" for component dumps — made with
// `pipeline` (any when empty), sorted. Found at run time, so a reference set of other cases is tested
// the same way; empty without fixtures.
inline std::vector<ReferenceCase> reference_cases(const std::string& marker_file, const std::string& pipeline = "") {
  std::vector<ReferenceCase> cases;
  if (!fixtures_available()) return cases;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(fixtures_dir() / "reference", ec)) {
    const auto dir = entry.path();
    if (!std::filesystem::exists(dir / "case.json") || !std::filesystem::exists(dir / marker_file)) continue;
    const auto config = ::tide::io::read_json(dir / "case.json");
    const std::string made_with = config.value("pipeline", std::string());
    if (pipeline.empty() || made_with == pipeline) cases.push_back({dir.filename().string(), made_with});
  }
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return cases;
}

// The cases of one kind of feature fixture ($TIDE_FIXTURES/features/<kind>/<case>/case.json: img2img,
// inpaint, fewstep, taesd, ti_step, tome, lora, a1111, ...), sorted; found at run time like
// reference_cases(), so unseen cases of the same kind are tested the same way. Empty without fixtures.
inline std::filesystem::path feature_case(const std::string& kind, const std::string& id) {
  return fixtures_dir() / "features" / kind / id;
}
inline std::vector<std::string> feature_cases(const std::string& kind) {
  std::vector<std::string> ids;
  if (!fixtures_available()) return ids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(fixtures_dir() / "features" / kind, ec))
    if (std::filesystem::exists(entry.path() / "case.json")) ids.push_back(entry.path().filename().string());
  std::sort(ids.begin(), ids.end());
  return ids;
}

// A gtest parameter name from a case id (letters, digits and '_' only).
inline std::string case_test_name(const std::string& id) {
  std::string name = id;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

// Says in the test's output (and its XML property) that a CPU-dependent path could not run on this machine,
// so a pass on a CPU without it is not mistaken for a check of it.
inline void note_path_not_exercised(const std::string& path, const std::string& why) {
  ::testing::Test::RecordProperty("not_exercised", path);
  std::printf("[   NOTE   ] %s not exercised: %s\n", path.c_str(), why.c_str());
}

// The `tide generate --scheduler` name of a diffusers scheduler class with its from_config kwargs.
inline std::string scheduler_cli_name(const std::string& cls, const nlohmann::json& kwargs) {
  static const std::map<std::string, std::string> names = {
      {"PNDMScheduler", "pndm"},         {"DDIMScheduler", "ddim"},        {"DDPMScheduler", "ddpm"},
      {"EulerDiscreteScheduler", "euler"}, {"EulerAncestralDiscreteScheduler", "euler-a"},
      {"LMSDiscreteScheduler", "lms"},   {"HeunDiscreteScheduler", "heun"}, {"UniPCMultistepScheduler", "unipc"}};
  if (cls == "DPMSolverMultistepScheduler") return kwargs.value("solver_order", 2) == 3 ? "dpm++3m" : "dpm++2m";
  const auto it = names.find(cls);
  if (it == names.end()) throw std::runtime_error("no tide scheduler for " + cls);
  return it->second;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// ‖actual − expected‖₂ / ‖expected‖₂, in float64.
inline double relative_l2_error(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor e = expected.to(at::kDouble);
  return ((actual.to(at::kDouble) - e).norm() / e.norm()).item<double>();
}

// max |actual − expected| / max |expected|, in float64.
inline double relative_max_error(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.to(at::kDouble).abs().max().item<double>();
  return max_abs_diff(actual, expected) / std::max(scale, 1e-30);
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
