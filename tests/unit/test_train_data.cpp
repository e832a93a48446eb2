// Training data: Pillow-exact bicubic resizing, crops, pixel scaling, caption templates, and the
// position-keyed randomness that makes results independent of the number of processes.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_support.h"
#include "tiny_pipeline.h"
#include "tide/io/image.h"
#include "tide/runtime/error.h"
#include "tide/train/dataset.h"
#include "tide/train/keyed_rng.h"
#include "tide/io/pil_resize.h"
#include "tide/train/templates.h"

namespace {
using namespace tide::train;
using namespace tide::io;

at::Tensor row_image(const std::vector<int>& values, int rows = 1, int channels = 1) {
  at::Tensor t = at::empty({rows, static_cast<int64_t>(values.size()), channels}, at::kByte);
  for (int r = 0; r < rows; ++r)
    for (size_t x = 0; x < values.size(); ++x)
      for (int c = 0; c < channels; ++c) t[r][static_cast<int64_t>(x)][c] = values[x] + 3 * c;
  return t;
}

std::vector<int> row_values(const at::Tensor& t, int row = 0, int channel = 0) {
  std::vector<int> out;
  for (int64_t x = 0; x < t.size(1); ++x) out.push_back(t[row][x][channel].item<uint8_t>());
  return out;
}

// Bicubic kernel (a = -0.5) values used below, derived by hand: k(0.25) = 111/128, k(0.75) = 29/128,
// k(1.25) = -9/128. Pillow widens the kernel by the downscale factor and normalizes the taps to sum 1.
TEST(PilResize, DownscaleByTwoMatchesHandDerivedTaps) {
  // 4 -> 2: scale 2, support 4. Output 0 centred at 1.0 sees inputs 0..3 at distances (0.5, 0.5, 1.5, 2.5)/2,
  // weights (111, 111, 29, -9)/242; output 1 centred at 3.0 mirrors them.
  const auto coeffs = bicubic_coefficients(4, 2);
  ASSERT_EQ(coeffs.count[0], 4);
  EXPECT_NEAR(coeffs.w[0][0], 111.0 / 242, 1e-12);
  EXPECT_NEAR(coeffs.w[0][2], 29.0 / 242, 1e-12);
  EXPECT_NEAR(coeffs.w[0][3], -9.0 / 242, 1e-12);
  // (111·10 + 111·50 + 29·200 − 9·100) / 242 = 47.77 -> 48; (−9·10 + 29·50 + 111·200 + 111·100) / 242 = 143.2 -> 143
  const at::Tensor out = pil_resize_bicubic(row_image({10, 50, 200, 100}), 2, 1);
  EXPECT_EQ(row_values(out), (std::vector<int>{48, 143}));
}

TEST(PilResize, UpscaleByTwoMatchesHandDerivedTaps) {
  // 2 -> 4: scale 0.5, support 2. Centres 0.25, 0.75, 1.25, 1.75; taps (111, -9)/102, (111, 29)/140,
  // (29, 111)/140, (-9, 111)/102 on [100, 200]: 91.2, 120.7, 179.3, 208.8.
  const at::Tensor out = pil_resize_bicubic(row_image({100, 200}), 4, 1);
  EXPECT_EQ(row_values(out), (std::vector<int>{91, 121, 179, 209}));
  // Negative lobes clip to 0..255 like Pillow's clip8.
  EXPECT_EQ(row_values(pil_resize_bicubic(row_image({0, 255}), 4, 1)), (std::vector<int>{0, 53, 202, 255}));
}

TEST(PilResize, TwoPassesAndChannels) {
  // Two identical rows, 4x2 -> 2x1: the horizontal pass as above, then the vertical one averages equal rows.
  const at::Tensor img = row_image({10, 50, 200, 100}, 2, 3);
  const at::Tensor out = pil_resize_bicubic(img, 2, 1);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{1, 2, 3}));
  EXPECT_EQ(row_values(out, 0, 0), (std::vector<int>{48, 143}));
  // Channel c holds values + 3c: the same taps give the shifted results (weights sum to 1).
  EXPECT_EQ(row_values(out, 0, 1), (std::vector<int>{51, 146}));
  EXPECT_EQ(row_values(out, 0, 2), (std::vector<int>{54, 149}));
  // Same size: an exact copy. Vertical only: the transpose of the horizontal case.
  EXPECT_TRUE(pil_resize_bicubic(img, 4, 2).equal(img));
  const at::Tensor column = row_image({10, 50, 200, 100}).permute({1, 0, 2}).contiguous();  // [4, 1, 1]
  EXPECT_TRUE(pil_resize_bicubic(column, 1, 2).flatten().equal(pil_resize_bicubic(row_image({10, 50, 200, 100}), 2, 1).flatten()));
  EXPECT_THROW(pil_resize_bicubic(at::zeros({2, 2}, at::kByte), 1, 1), tide::Error);
}

TEST(TrainingData, CenterCropAndUnitRange) {
  const at::Tensor img = at::arange(5 * 3 * 3, at::kByte).reshape({5, 3, 3});
  const at::Tensor crop = center_crop(img);  // rows (5-3)//2 .. (5+3)//2 = 1..4
  ASSERT_EQ(crop.sizes(), (at::IntArrayRef{3, 3, 3}));
  EXPECT_TRUE(crop.equal(img.slice(0, 1, 4)));
  at::Tensor px = at::tensor({0, 127, 128, 255}, at::kByte).reshape({1, 4, 1}).repeat({1, 1, 3});
  const at::Tensor unit = to_unit_range(px);
  ASSERT_EQ(unit.sizes(), (at::IntArrayRef{1, 3, 1, 4}));
  EXPECT_FLOAT_EQ(unit[0][0][0][0].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(unit[0][0][0][1].item<float>(), static_cast<float>(127 / 127.5 - 1.0));
  EXPECT_FLOAT_EQ(unit[0][0][0][3].item<float>(), 1.0f);
}

TEST(TrainingData, ImagesFolderResizesFlipsAndRejectsEmpty) {
  tide::testing::TempDir dir;
  EXPECT_THROW(TrainingImages({dir.path(), 8, 1, false}), tide::Error);  // no images
  at::Tensor img = (at::arange(12 * 10 * 3) % 251).to(at::kByte).reshape({12, 10, 3});
  tide::io::write_png(dir / "b.png", img);
  tide::io::write_png(dir / "a.png", img.flip({0}).contiguous());
  tide::testing::write_text(dir / "notes.txt", "not an image");
  TrainingImages images({dir.path(), 8, 3, true});
  ASSERT_EQ(images.num_images(), 2);
  EXPECT_EQ(images.length(), 6);
  EXPECT_EQ(images.files()[0].filename(), "a.png");  // sorted
  EXPECT_EQ(images.skipped_files().size(), 1u);
  EXPECT_TRUE(images.resized(1).equal(pil_resize_bicubic(center_crop(img), 8, 8)));
  EXPECT_TRUE(images.pixels(1, true).equal(images.pixels(1, false).flip({3})));
}

TEST(Templates, DiffusersListsAndFormatting) {
  const auto& object = caption_templates(LearnableProperty::object);
  const auto& style = caption_templates(LearnableProperty::style);
  ASSERT_EQ(object.size(), 27u);
  ASSERT_EQ(style.size(), 19u);
  EXPECT_EQ(object.front(), "a photo of a {}");
  EXPECT_EQ(object.back(), "a photo of a small {}");
  EXPECT_EQ(style.front(), "a painting in the style of {}");
  EXPECT_EQ(style.back(), "a large painting in the style of {}");
  EXPECT_EQ(format_caption(object[2], "<cat> <cat>_1"), "a cropped photo of the <cat> <cat>_1");
  EXPECT_EQ(parse_learnable_property("style"), LearnableProperty::style);
  EXPECT_THROW(parse_learnable_property("person"), tide::Error);
}

TEST(KeyedRng, SampleDrawsDependOnPositionOnlyNotOnWorldSize) {
  const uint64_t seed = 1234;
  const int64_t global_batch = 4;
  const std::vector<int64_t> shape{1, 4, 2, 2};
  // Every world size that splits a global batch of 4 gets the same draws for the same global position.
  std::map<int, std::map<int64_t, SampleDraws>> by_world;
  for (int world : {1, 2, 4}) {
    const int64_t per_rank = global_batch / world;
    for (int rank = 0; rank < world; ++rank)
      for (int64_t batch_start : {0, 4})
        for (int64_t i = batch_start + rank * per_rank; i < batch_start + (rank + 1) * per_rank; ++i)
          by_world[world][i] = draw_sample(seed, static_cast<uint64_t>(i), 27, 0.5, 1000, shape);
  }
  for (int world : {2, 4})
    for (const auto& [pos, d] : by_world[1]) {
      const auto& other = by_world[world].at(pos);
      EXPECT_EQ(d.template_index, other.template_index);
      EXPECT_EQ(d.flip, other.flip);
      EXPECT_EQ(d.timestep, other.timestep);
      EXPECT_TRUE(d.noise.equal(other.noise));
      EXPECT_TRUE(d.latent_eps.equal(other.latent_eps));
    }
  // Different positions and seeds draw differently.
  EXPECT_FALSE(by_world[1][0].noise.equal(by_world[1][1].noise));
  EXPECT_FALSE(draw_sample(seed + 1, 0, 27, 0.5, 1000, shape).noise.equal(by_world[1][0].noise));
  std::set<int64_t> timesteps;
  for (int64_t p = 0; p < 64; ++p) timesteps.insert(draw_sample(seed, p, 27, 0.5, 1000, shape).timestep);
  EXPECT_GT(timesteps.size(), 50u);
  EXPECT_GE(*timesteps.begin(), 0);
  EXPECT_LT(*timesteps.rbegin(), 1000);
}

TEST(KeyedRng, EpochPermutations) {
  const auto p0 = epoch_permutation(7, 0, 50), p1 = epoch_permutation(7, 1, 50);
  EXPECT_EQ(p0, epoch_permutation(7, 0, 50));
  EXPECT_NE(p0, p1);
  std::vector<int64_t> sorted = p1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
}

}  // namespace
