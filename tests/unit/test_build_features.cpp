// The optional dependencies (TIDE_WITH_MPI, TIDE_WITH_JPEG, TIDE_WITH_CURL): with each, its feature works; without
// it, the feature stops with a tide::Error that says this build lacks it and what to do instead, and what does
// not need it (one process, PNG, local models) keeps working. Each test checks the side this build is on.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include "test_support.h"
#include "tide/hub/hub.h"
#include "tide/io/image.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"
#include "tide/train/communicator.h"
#include "tide/train/image_files.h"

namespace {
using tide::testing::read_bytes;
namespace fs = std::filesystem;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "";
}


// 2x2 pixels of (255, 128, 0), written by libjpeg at quality 90.
const fs::path kOrangeJpeg = fs::path(TIDE_TEST_DATA) / "orange_2x2.jpg";

TEST(BuildFeatures, WithoutMpiARunUnderMpirunIsRefusedAndOneProcessWorks) {
  auto single = tide::train::make_single_process_communicator();
  EXPECT_EQ(single->size(), 1);
  EXPECT_EQ(single->broadcast(uint64_t{42}), 42u);
  if (tide::built_with_mpi())
    GTEST_SKIP() << "built with MPI: runs under mpirun are tested by tests/cli/test_train_ti.cpp";
  const std::string message = error_of([] { tide::train::make_mpi_communicator(); });
  EXPECT_NE(message.find("no MPI support"), std::string::npos) << message;
  EXPECT_NE(message.find("without mpirun"), std::string::npos) << message;
}

TEST(BuildFeatures, JpegInputsDecodeOrSayTheBuildHasNoJpegSupport) {
  ASSERT_TRUE(fs::is_regular_file(kOrangeJpeg)) << kOrangeJpeg;
  at::Tensor png_pixels = at::zeros({2, 2, 3}, at::kByte);
  png_pixels.select(2, 0).fill_(255);
  // PNG never needs libjpeg.
  EXPECT_TRUE(at::equal(tide::train::decode_rgb_image(tide::io::encode_png(png_pixels), "png"), png_pixels));

  const std::string bytes = read_bytes(kOrangeJpeg);
  if (tide::built_with_jpeg()) {
    const at::Tensor from_file = tide::train::read_rgb_image(kOrangeJpeg);
    ASSERT_EQ(from_file.sizes(), (at::IntArrayRef{2, 2, 3}));
    const at::Tensor expected = at::tensor({255, 128, 0}, at::kInt).expand({2, 2, 3});
    EXPECT_LE((from_file.to(at::kInt) - expected).abs().max().item<int>(), 2);
    EXPECT_TRUE(at::equal(tide::train::decode_rgb_image(bytes, "init"), from_file));
    return;
  }
  const std::pair<std::string, std::string> named_errors[] = {
      {kOrangeJpeg.string(), error_of([&] { tide::train::read_rgb_image(kOrangeJpeg); })},
      {"init_images[0]", error_of([&] { tide::train::decode_rgb_image(bytes, "init_images[0]"); })}};
  for (const auto& [name, message] : named_errors) {
    EXPECT_NE(message.find("cannot read JPEG " + name), std::string::npos) << message;
    EXPECT_NE(message.find("no JPEG support"), std::string::npos) << message;
    EXPECT_NE(message.find("convert the image to PNG"), std::string::npos) << message;
  }
}

TEST(BuildFeatures, WithoutCurlAHubIdSaysToPassALocalModel) {
  tide::testing::TempDir cache;
  tide::hub::Options options;
  options.endpoint = "http://127.0.0.1:9";  // the discard port: nothing answers
  options.cache_dir = cache.path();
  options.token = "";
  options.offline = false;
  options.progress = false;
  options.max_attempts = 1;
  options.retry_wait_seconds = 0;
  const std::string message = error_of([&] { tide::hub::snapshot_download("tide-test/not-here", options); });
  if (tide::built_with_curl()) {
    // A real attempt that finds nothing listening; tests/unit/test_hub.cpp has the downloads themselves.
    EXPECT_NE(message.find("cannot reach http://127.0.0.1:9"), std::string::npos) << message;
    return;
  }
  EXPECT_NE(message.find("cannot download from the Hugging Face Hub"), std::string::npos) << message;
  EXPECT_NE(message.find("local model folder"), std::string::npos) << message;
}

}  // namespace
