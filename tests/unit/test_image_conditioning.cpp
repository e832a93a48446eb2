// Image-to-image building blocks: Pillow-exact Lanczos resizing (against the diffusers fixtures' resized
// init images), the mask's grey conversion and binarization, the mask blur, the strength slicing of a
// schedule (PNDM's duplicate timestep included) and the request checks.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/io/pil_blur.h"
#include "tide/io/pil_resize.h"
#include "tide/pipeline/image_conditioning.h"
#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;

// [1, 3, H, W] in [-1, 1] back to the uint8 [H, W, 3] levels it was made from.
at::Tensor levels(const at::Tensor& image_tensor) {
  return ((image_tensor[0].permute({1, 2, 0}) + 1) / 2 * 255).round().to(at::kByte);
}

// diffusers resized these init images with PIL's Image.LANCZOS: tide's resize gives the same levels.
TEST(PilLanczos, MatchesPillowOnTheFixtureInitImages) {
  TIDE_REQUIRE_FIXTURES();
  struct Resized {
    const char* kind;
    const char* id;
    int width, height;
  };
  int checked = 0;
  for (const Resized& c : {Resized{"img2img", "i2i_sd1_euler_a_s0.75_init65x97", 96, 64},
                           Resized{"inpaint", "inp_sd1_4ch_dpmpp2m_s0.8_init48x72_to64x96", 96, 64}}) {
    const fs::path dir = tide::testing::feature_case(c.kind, c.id);
    ASSERT_TRUE(fs::exists(dir / "init_image.png")) << dir;
    const at::Tensor init = io::read_png(dir / "init_image.png").rgb8;
    ASSERT_FALSE(init.size(0) == c.height && init.size(1) == c.width) << "the case must exercise the resize";
    const at::Tensor expected = levels(io::read_npy(dir / "init_image_tensor.npy"));
    const at::Tensor ours = io::pil_resize_lanczos(init, c.width, c.height);
    ASSERT_EQ(ours.sizes(), expected.sizes());
    EXPECT_EQ((ours.to(at::kInt) - expected.to(at::kInt)).abs().max().item<int>(), 0) << c.id;
    // preprocess_image is the resize followed by /255*2-1
    EXPECT_TENSOR_NEAR(pipeline::preprocess_image(init, c.width, c.height), io::read_npy(dir / "init_image_tensor.npy"),
                       1e-6);
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(PilLanczos, SameSizeIsACopyAndBadInputIsAnError) {
  const at::Tensor img = at::randint(0, 256, {5, 7, 3}, at::kByte);
  EXPECT_TRUE(io::pil_resize_lanczos(img, 7, 5).equal(img));
  // a constant image stays constant (weights sum to one) in both directions
  const at::Tensor flat = at::full({9, 11, 3}, 77, at::kByte);
  EXPECT_TRUE(io::pil_resize_lanczos(flat, 4, 20).eq(77).all().item<bool>());
  EXPECT_THROW(io::pil_resize_lanczos(at::zeros({4, 4}, at::kFloat), 2, 2), Error);
}

TEST(MaskPreprocessing, GreyLevelsBinarizeAtHalfLikeDiffusers) {
  // 127/255 < 0.5 -> keep, 128/255 -> repaint
  at::Tensor grey = at::tensor({0, 127, 128, 255}, at::kByte).view({1, 4});
  const at::Tensor m = pipeline::preprocess_mask(grey, 4, 1);
  EXPECT_EQ(m.sizes(), (at::IntArrayRef{1, 1, 1, 4}));
  EXPECT_TRUE(m.flatten().equal(at::tensor({0.f, 0.f, 1.f, 1.f})));
  // RGB masks go through Pillow's "L": red 76, green 150, blue 29, white 255
  at::Tensor rgb = at::zeros({1, 4, 3}, at::kByte);
  rgb[0][0][0] = 255;
  rgb[0][1][1] = 255;
  rgb[0][2][2] = 255;
  rgb[0][3].fill_(255);
  EXPECT_TRUE(pipeline::preprocess_mask(rgb, 4, 1).flatten().equal(at::tensor({0.f, 1.f, 0.f, 1.f})));
}

TEST(MaskPreprocessing, MatchesTheFixtureMaskConditions) {
  TIDE_REQUIRE_FIXTURES();
  int checked = 0;
  for (const auto& id : tide::testing::feature_cases("inpaint")) {
    const fs::path dir = tide::testing::feature_case("inpaint", id);
    const at::Tensor expected = io::read_npy(dir / "mask_condition.npy");
    const at::Tensor mask = io::read_png(dir / "mask.png").rgb8;
    const at::Tensor ours = pipeline::preprocess_mask(mask, static_cast<int>(expected.size(3)), static_cast<int>(expected.size(2)));
    EXPECT_TRUE(ours.equal(expected)) << id;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST(MaskBlur, GaussianBlurKeepsFlatAreasAndSoftensEdgesSymmetrically) {
  EXPECT_NEAR(io::pil_box_radius_for_gaussian(0), 0, 1e-6);
  const at::Tensor flat = at::full({12, 10}, 200, at::kByte);
  EXPECT_TRUE(io::pil_gaussian_blur(flat, 3).equal(flat));
  // a vertical edge: every row the same, monotone across, symmetric about the edge
  at::Tensor edge = at::zeros({8, 20}, at::kByte);
  edge.slice(1, 10).fill_(255);
  const at::Tensor blurred = io::pil_gaussian_blur(edge, 2).to(at::kInt);
  for (int y = 1; y < 8; ++y) EXPECT_TRUE(blurred[y].equal(blurred[0]));
  const at::Tensor row = blurred[0];
  for (int x = 1; x < 20; ++x) EXPECT_GE(row[x].item<int>(), row[x - 1].item<int>());
  EXPECT_GT(row[10].item<int>(), 127);
  EXPECT_LT(row[9].item<int>(), 128);
  EXPECT_LT(row[10].item<int>(), 255);
  EXPECT_EQ(row[0].item<int>(), 0);
  EXPECT_EQ(row[19].item<int>(), 255);
  for (int x = 0; x < 10; ++x) EXPECT_NEAR(row[x].item<int>() + row[19 - x].item<int>(), 255, 1) << x;
  EXPECT_TRUE(io::pil_gaussian_blur(edge, 0).equal(edge));
}

TEST(StrengthSlicing, FollowsDiffusersGetTimesteps) {
  EXPECT_EQ(pipeline::first_timestep_index(12, 0.7, 1), 4u);  // int(8.4) = 8 of 12 run
  EXPECT_EQ(pipeline::first_timestep_index(10, 1.0, 1), 0u);
  EXPECT_EQ(pipeline::first_timestep_index(10, 0.6, 2), 8u);  // Heun: two entries per step
  EXPECT_EQ(pipeline::first_timestep_index(50, 0.9999, 1), 1u);

  // PNDM's schedule repeats its second timestep: [901, 801, 801, 701, ...]; at 0.6 the loop runs the
  // 7 distinct timesteps from 601.
  const nlohmann::json config = {{"_class_name", "PNDMScheduler"}, {"skip_prk_steps", true},
                                 {"steps_offset", 1},             {"beta_schedule", "scaled_linear"},
                                 {"beta_start", 0.00085},         {"beta_end", 0.012}};
  auto pndm = schedulers::make_scheduler("pndm", config, {});
  pndm->set_timesteps(10);
  ASSERT_EQ(pndm->timesteps().size(), 11u);
  const size_t first = pipeline::first_timestep_index(10, 0.6, pndm->order());
  EXPECT_EQ(pndm->timesteps().size() - first, 7u);
  EXPECT_EQ(pndm->timesteps()[first], 601);
  EXPECT_EQ(pndm->timesteps()[first + 1], 501);
}

TEST(ImageRequest, ChecksAndDefaults) {
  pipeline::GenerationRequest r;
  r.steps = 10;
  r.init_image = at::zeros({65, 97, 3}, at::kByte);
  pipeline::resolve_image_inputs(r, 8, false, 4);
  EXPECT_EQ(r.width, 96);
  EXPECT_EQ(r.height, 64);
  EXPECT_DOUBLE_EQ(*r.strength, 0.8);

  pipeline::GenerationRequest xl;
  xl.init_image = r.init_image;
  pipeline::resolve_image_inputs(xl, 8, true, 4);
  EXPECT_DOUBLE_EQ(*xl.strength, 0.3);
  pipeline::GenerationRequest xl_inpaint = xl;
  xl_inpaint.strength.reset();
  xl_inpaint.width = xl_inpaint.height = 0;
  xl_inpaint.mask = at::zeros({65, 97}, at::kByte);
  pipeline::resolve_image_inputs(xl_inpaint, 8, true, 4);
  EXPECT_DOUBLE_EQ(*xl_inpaint.strength, 0.9999);
  EXPECT_EQ(xl_inpaint.width, 0) << "inpainting keeps the model's default size";

  const auto fails = [](pipeline::GenerationRequest q, int64_t channels, const std::string& message) {
    try {
      pipeline::resolve_image_inputs(q, 8, false, channels);
      ADD_FAILURE() << "no error, expected: " << message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  pipeline::GenerationRequest bad = r;
  bad.strength = 0;
  fails(bad, 4, "strength must be in (0, 1]");
  bad.strength = 1.01;
  fails(bad, 4, "strength must be in (0, 1]");
  bad = r;
  bad.mask = at::zeros({10, 10}, at::kByte);
  fails(bad, 4, "the mask is 10x10 but the init image is 97x65");
  pipeline::GenerationRequest text_only;
  fails(text_only, 9, "inpainting model (9-channel UNet)");
  text_only.mask = at::zeros({8, 8}, at::kByte);
  fails(text_only, 4, "a mask needs an init image");
  fails(r, 9, "give it a mask");
  bad = r;
  bad.init_image = at::zeros({4, 4, 3}, at::kByte);
  bad.width = bad.height = 0;
  fails(bad, 4, "smaller than the VAE factor");
  bad = r;
  bad.init_image = at::zeros({8, 8, 3}, at::kFloat);
  fails(bad, 4, "uint8");
}

}  // namespace
