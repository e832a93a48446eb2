// tide generate --init-image / --strength / --mask / --mask-blur as a user runs them: help, clear errors
// that write nothing, the output size rules, and the diffusers reference images of the img2img and
// inpaint fixtures reproduced from the command line.
#include <gtest/gtest.h>

#include <fstream>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

// A uint8 [h, w, 3] gradient.
at::Tensor gradient_image(int h, int w) {
  at::Tensor y = at::arange(h, at::kInt).view({h, 1, 1}).expand({h, w, 3});
  at::Tensor x = at::arange(w, at::kInt).view({1, w, 1}).expand({h, w, 3});
  at::Tensor c = at::arange(3, at::kInt).view({1, 1, 3}).expand({h, w, 3});
  return ((y * 7 + x * 5 + c * 60) % 256).to(at::kByte).contiguous();
}

int max_level_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kInt) - b.to(at::kInt)).abs().max().item<int>();
}

TEST(CliImageToImage, HelpListsTheFlags) {
  auto help = run_tide("generate --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--init-image", "--strength", "--mask", "--mask-blur"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
}

class CliImageToImageTiny : public tide::testing::TinyPipelineSuite {};

TEST_F(CliImageToImageTiny, BadInputsAreClearErrorsAndWriteNothing) {
  TempDir dir;
  tide::io::write_png(dir / "init.png", gradient_image(24, 32));
  tide::io::write_png(dir / "small_mask.png", gradient_image(16, 16));
  { std::ofstream(dir / "broken.png") << "not a png"; }
  const std::string base = "generate --model " + quote(model()) + " --prompt cat --steps 4 --output " + quote(dir / "out.png");
  const auto expect_error = [&](const std::string& flags, const std::string& message) {
    auto run = run_tide(base + " " + flags);
    EXPECT_EQ(run.code, 1) << flags << "\n" << run.output;
    EXPECT_NE(run.output.find(message), std::string::npos) << flags << "\n" << run.output;
    EXPECT_FALSE(fs::exists(dir / "out.png")) << flags;
  };
  expect_error("--mask " + quote(dir / "init.png"), "--mask needs --init-image");
  expect_error("--strength 0.5", "--strength needs --init-image");
  expect_error("--init-image " + quote(dir / "init.png") + " --strength 0", "--strength must be in (0, 1]");
  expect_error("--init-image " + quote(dir / "init.png") + " --strength 1.5", "--strength must be in (0, 1]");
  expect_error("--init-image " + quote(dir / "missing.png"), "missing.png does not exist");
  expect_error("--init-image " + quote(dir / "broken.png"), "--init-image");
  expect_error("--init-image " + quote(dir / "init.png") + " --mask " + quote(dir / "small_mask.png"),
               "the mask is 16x16 but the init image is 32x24");
  expect_error("--init-image " + quote(dir / "init.png") + " --mask-blur 4", "--mask-blur needs --mask");
  expect_error("--init-image " + quote(dir / "init.png") + " --strength 0.1", "runs no denoising step");
}

TEST_F(CliImageToImageTiny, OutputHasTheInitImageSizeRoundedDownAndRecordsTheStrength) {
  TempDir dir;
  tide::io::write_png(dir / "init.png", gradient_image(25, 33));
  const std::string common = "generate --model " + quote(model()) +
                             " --prompt 'a red robot' --steps 4 --seed 5 --threads 1 --init-image " + quote(dir / "init.png");
  auto run = run_tide(common + " --strength 0.5 --output " + quote(dir / "a.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  const auto image = tide::io::read_png(dir / "a.png");
  EXPECT_EQ(image.rgb8.sizes(), (at::IntArrayRef{24, 32, 3}));
  EXPECT_NE(image.text.at("parameters").find("Denoising strength: 0.5"), std::string::npos) << image.text.at("parameters");
  // Another strength is another image; the same command the same pixels.
  auto other = run_tide(common + " --strength 1 --output " + quote(dir / "b.png"));
  ASSERT_EQ(other.code, 0) << other.output;
  EXPECT_FALSE(at::equal(image.rgb8, tide::io::read_png(dir / "b.png").rgb8));
  auto again = run_tide(common + " --strength 0.5 --output " + quote(dir / "c.png"));
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_TRUE(at::equal(image.rgb8, tide::io::read_png(dir / "c.png").rgb8));

  // Inpainting with a 4-channel model: the model's default size (the tiny model's 32x32) unless given.
  at::Tensor mask = at::zeros({25, 33, 3}, at::kByte);
  mask.slice(0, 5, 15).slice(1, 5, 20).fill_(255);
  tide::io::write_png(dir / "mask.png", mask);
  auto inpaint = run_tide(common + " --mask " + quote(dir / "mask.png") + " --mask-blur 2 --output " + quote(dir / "d.png"));
  ASSERT_EQ(inpaint.code, 0) << inpaint.output;
  const auto inpainted = tide::io::read_png(dir / "d.png");
  EXPECT_EQ(inpainted.rgb8.size(0), inpainted.rgb8.size(1));
  EXPECT_NE(inpainted.text.at("parameters").find("Mask blur: 2"), std::string::npos);
}

// The fixture cases from the command line: the PNG within 2 levels of diffusers' (the floor is 1).
TEST(CliImageToImageFixtures, Img2ImgAndInpaintMatchTheDiffusersImages) {
  TIDE_REQUIRE_FIXTURES();
  struct Case {
    const char* kind;
    const char* id;
    const char* flags;
  };
  const Case cases[] = {
      {"img2img", "i2i_sd1_ddim_s0.6_64x64", "--scheduler ddim --strength 0.6"},
      {"inpaint", "inp_sd1in9_euler_a_s0.75_64x64", "--scheduler euler-a --strength 0.75"},
  };
  for (const auto& c : cases) {
    const fs::path dir = tide::testing::feature_case(c.kind, c.id);
    if (!fs::exists(dir / "case.json")) {
      ADD_FAILURE() << "fixture case " << c.kind << "/" << c.id << " is missing";
      continue;
    }
    const auto spec = tide::io::read_json(dir / "case.json");
    TempDir out;
    std::string cmd = "generate --model " + quote(tide::testing::pipeline_dir(spec["pipeline"].get<std::string>())) +
                      " --prompt " + quote(spec["prompt"].get<std::string>()) + " --seed " +
                      std::to_string(spec["seed"].get<int>()) + " --steps " + std::to_string(spec["steps"].get<int>()) +
                      " --guidance " + std::to_string(spec["guidance_scale"].get<double>()) + " --init-image " +
                      quote(dir / "init_image.png") + " " + c.flags + " --output " + quote(out / "x.png");
    if (!spec["negative_prompt"].is_null()) cmd += " --negative-prompt " + quote(spec["negative_prompt"].get<std::string>());
    if (fs::exists(dir / "mask.png")) cmd += " --mask " + quote(dir / "mask.png");
    auto run = run_tide(cmd);
    ASSERT_EQ(run.code, 0) << c.id << "\n" << run.output;
    const at::Tensor ours = tide::io::read_png(out / "x.png").rgb8;
    const at::Tensor reference = tide::io::read_png(dir / "image_0.png").rgb8;
    ASSERT_EQ(ours.sizes(), reference.sizes()) << c.id;
    EXPECT_LE(max_level_diff(ours, reference), 2) << c.id;
  }
}

// An inpainting (9-channel) model cannot make an image from text alone: it says what it needs.
TEST(CliImageToImageFixtures, InpaintingModelWithoutImageAndMaskIsAClearError) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  const fs::path inpaint_model = tide::testing::pipeline_dir("sd1-tiny-inpaint");
  auto run = run_tide("generate --model " + quote(inpaint_model) + " --prompt cat --steps 2 --output " + quote(out / "x.png"));
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_NE(run.output.find("inpainting model (9-channel UNet)"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(out / "x.png"));
}

}  // namespace
