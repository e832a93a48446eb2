// Few-step sampling and the tiny autoencoder from the command line: the flags and their errors, and runs on
// the fixture pipelines that must give diffusers' images (LCM pipeline, SDXL "Turbo" settings, TAESD decode).
#include <gtest/gtest.h>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

TEST(CliFewStep, HelpListsTheFlagsAndSchedulers) {
  auto help = run_tide("generate --help");
  ASSERT_EQ(help.code, 0);
  for (const char* text : {"--timestep-spacing", "--taesd", "--eta", "lcm", "tcd", "trailing", "gamma"})
    EXPECT_NE(help.output.find(text), std::string::npos) << text;
}

class CliFewStepTiny : public tide::testing::TinyPipelineSuite {};

TEST_F(CliFewStepTiny, BadOptionsAreClearErrors) {
  TempDir out;
  const std::string base = "generate --model " + quote(model()) + " --prompt cat --steps 2 --output " + quote(out / "a.png");
  auto spacing = run_tide(base + " --timestep-spacing sideways");
  EXPECT_EQ(spacing.code, 1);
  EXPECT_NE(spacing.output.find("sideways"), std::string::npos) << spacing.output;
  EXPECT_NE(spacing.output.find("trailing"), std::string::npos) << spacing.output;
  auto lcm_spacing = run_tide(base + " --scheduler lcm --timestep-spacing trailing");
  EXPECT_EQ(lcm_spacing.code, 1);
  EXPECT_NE(lcm_spacing.output.find("original_inference_steps"), std::string::npos) << lcm_spacing.output;
  auto eta = run_tide(base + " --scheduler euler --eta 0.3");
  EXPECT_EQ(eta.code, 1);
  EXPECT_NE(eta.output.find("ddim and tcd"), std::string::npos) << eta.output;
  auto gamma = run_tide(base + " --scheduler tcd --eta 2");
  EXPECT_EQ(gamma.code, 1);
  EXPECT_NE(gamma.output.find("[0, 1]"), std::string::npos) << gamma.output;
  auto no_taesd = run_tide(base + " --taesd " + quote(out / "nope"));
  EXPECT_EQ(no_taesd.code, 1);
  EXPECT_NE(no_taesd.output.find("does not exist"), std::string::npos) << no_taesd.output;
  auto pipeline_as_taesd = run_tide(base + " --taesd " + quote(model()));
  EXPECT_EQ(pipeline_as_taesd.code, 1);
  EXPECT_NE(pipeline_as_taesd.output.find("not a tiny autoencoder"), std::string::npos) << pipeline_as_taesd.output;
  auto vae_as_decoder = run_tide(base + " --decoder " + quote(model() / "vae"));  // --decoder: the same flag
  EXPECT_EQ(vae_as_decoder.code, 1);
  EXPECT_NE(vae_as_decoder.output.find("AutoencoderKL"), std::string::npos) << vae_as_decoder.output;
  auto both = run_tide(base + " --decoder " + quote(out / "a") + " --taesd " + quote(out / "b"));
  EXPECT_EQ(both.code, 1);
  EXPECT_NE(both.output.find("not both"), std::string::npos) << both.output;
  auto vae_as_taesd = run_tide(base + " --taesd " + quote(model() / "vae"));
  EXPECT_EQ(vae_as_taesd.code, 1);
  EXPECT_NE(vae_as_taesd.output.find("AutoencoderKL"), std::string::npos) << vae_as_taesd.output;
  EXPECT_EQ(std::distance(fs::directory_iterator(out.path()), {}), 0) << "a failed run left files behind";
}

TEST_F(CliFewStepTiny, LcmAndTcdRunDeterministically) {
  TempDir out;
  const std::string base = "generate --model " + quote(model()) + " --prompt 'a red robot' --steps 4 --guidance 1"
                           " --seed 3 --width 32 --height 32 --threads 1";
  for (const char* extra : {"--scheduler lcm", "--scheduler tcd --eta 0.3", "--scheduler euler-a --timestep-spacing trailing"}) {
    auto a = run_tide(base + " " + extra + " --output " + quote(out / "a.png"));
    ASSERT_EQ(a.code, 0) << extra << "\n" << a.output;
    auto b = run_tide(base + " " + extra + " --output " + quote(out / "b.png"));
    ASSERT_EQ(b.code, 0) << extra << "\n" << b.output;
    EXPECT_TRUE(at::equal(tide::io::read_png(out / "a.png").rgb8, tide::io::read_png(out / "b.png").rgb8)) << extra;
  }
}

// `tide generate` on a fixture pipeline with the case's settings; its PNG against diffusers' image_0.png.
int png_difference(const std::string& args, const fs::path& reference_png) {
  TempDir out;
  auto run = run_tide(args + " --output " + quote(out / "x.png") + " --threads 1");
  EXPECT_EQ(run.code, 0) << args << "\n" << run.output;
  if (run.code != 0) return 255;
  const at::Tensor mine = tide::io::read_png(out / "x.png").rgb8.to(at::kInt);
  const at::Tensor theirs = tide::io::read_png(reference_png).rgb8.to(at::kInt);
  if (mine.sizes() != theirs.sizes()) return 255;
  return (mine - theirs).abs().max().item<int>();
}

fs::path pipeline(const std::string& name) { return tide::testing::pipeline_dir(name); }
fs::path feature_png(const std::string& kind, const std::string& id) {
  return tide::testing::feature_case(kind, id) / "image_0.png";
}

TEST(CliFewStepFixtures, LatentConsistencyModelPipelineFolder) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path png = feature_png("fewstep", "fs_sd1lcm_pipe_g8_4step_64x64");
  if (!fs::exists(png)) GTEST_SKIP() << "fixture case fs_sd1lcm_pipe_g8_4step_64x64 not present";
  EXPECT_LE(png_difference("generate --model " + quote(pipeline("sd1-tiny-lcm")) +
                               " --prompt 'a portrait of a fox in a suit' --steps 4 --guidance 8 --seed 32"
                               " --width 64 --height 64",
                           png),
            2);
}

TEST(CliFewStepFixtures, SdxlTurboSettings) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path png = feature_png("fewstep", "fs_sdxl_turbo_1step_64x64");
  if (!fs::exists(png)) GTEST_SKIP() << "fixture case fs_sdxl_turbo_1step_64x64 not present";
  EXPECT_LE(png_difference("generate --model " + quote(pipeline("sdxl-tiny")) +
                               " --prompt 'a neon sign in the rain' --scheduler euler-a --timestep-spacing trailing"
                               " --steps 1 --guidance 0 --seed 34 --width 64 --height 64",
                           png),
            2);
}

TEST(CliFewStepFixtures, TaesdDecode) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path png = feature_png("taesd", "taesd_sd1_pipe_pndm_10step_64x64");
  if (!fs::exists(png)) GTEST_SKIP() << "fixture case taesd_sd1_pipe_pndm_10step_64x64 not present";
  EXPECT_LE(png_difference("generate --model " + quote(pipeline("sd1-tiny")) + " --taesd " +
                               quote(pipeline("taesd-tiny")) +
                               " --prompt 'a lighthouse at sunset' --scheduler pndm --steps 10 --guidance 7.5"
                               " --seed 42 --width 64 --height 64",
                           png),
            2);
}

TEST(CliFewStepFixtures, LcmWithTaesd) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  const std::string base = "generate --model " + quote(pipeline("sd1-tiny")) +
                           " --prompt 'a mountain cabin in autumn' --scheduler lcm --steps 4 --guidance 1 --seed 31"
                           " --width 64 --height 64 --threads 1";
  auto kl = run_tide(base + " --output " + quote(out / "kl.png"));
  ASSERT_EQ(kl.code, 0) << kl.output;
  auto tiny = run_tide(base + " --taesd " + quote(pipeline("taesd-tiny")) + " --output " + quote(out / "tiny.png"));
  ASSERT_EQ(tiny.code, 0) << tiny.output;
  // Same latents, another decoder: the LCM case's KL-decoded image is reproduced, the TAESD one differs.
  const at::Tensor kl_png = tide::io::read_png(out / "kl.png").rgb8;
  const at::Tensor tiny_png = tide::io::read_png(out / "tiny.png").rgb8;
  EXPECT_EQ(tiny_png.sizes(), kl_png.sizes());
  EXPECT_FALSE(at::equal(kl_png, tiny_png));
  const fs::path reference = feature_png("fewstep", "fs_sd1_lcm_4step_64x64");
  if (fs::exists(reference)) {
    const at::Tensor diff = (kl_png.to(at::kInt) - tide::io::read_png(reference).rgb8.to(at::kInt)).abs();
    EXPECT_LE(diff.max().item<int>(), 2);
  }
}

// An LCM-LoRA style run, `--lora FILE:0.6 --scheduler lcm --steps 4 --guidance 1`: the latents and image of the
// same run through the library (whose merge tests/parity/test_lcm_lora.cpp checks), and a PNG that says
// which LoRA and sampler made it.
TEST(CliFewStepFixtures, LcmWithLoraGivesTheLibraryLatents) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path lora = tide::testing::feature_case("lora", "lora_sd1_locon_m06") / "lora.safetensors";
  if (!fs::exists(lora)) GTEST_SKIP() << "fixture case lora_sd1_locon_m06 not present";
  TempDir out;
  const std::string prompt = "a green dragon flying over a village";
  auto run = run_tide("generate --model " + quote(pipeline("sd1-tiny")) + " --prompt " + quote(prompt) + " --lora " +
                      quote(lora.string() + ":0.6") + " --scheduler lcm --steps 4 --guidance 1 --seed 302"
                      " --width 64 --height 64 --threads 1 --output " + quote(out / "x.png") +
                      " --output-latents " + quote(out / "x.npy"));
  ASSERT_EQ(run.code, 0) << run.output;

  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(pipeline("sd1-tiny"));
  pipe->set_loras({{lora, 0.6}});
  tide::pipeline::GenerationRequest request;
  request.prompt = prompt;
  request.width = request.height = 64;
  request.steps = 4;
  request.guidance = 1;
  request.seed = 302;
  request.scheduler = "lcm";
  const auto library = pipe->generate(request);
  const at::Tensor latents = tide::io::read_npy(out / "x.npy");
  ASSERT_EQ(latents.sizes(), library.latents.sizes());
  const double relative = tide::testing::max_abs_diff(latents, library.latents) /
                          library.latents.abs().max().item<double>();
  EXPECT_LE(relative, 1e-5) << "CLI latents vs the library run";
  const auto png = tide::io::read_png(out / "x.png");
  const int pixels = (png.rgb8.to(at::kInt) - library.images[0].to(at::kInt)).abs().max().item<int>();
  EXPECT_LE(pixels, 1);
  std::printf("CLI vs library (lcm + LoRA): latents relative error %.3g, max pixel diff %d\n", relative, pixels);

  // A1111's style: the tag after the prompt, the sampler by its CLI name, the file's short sha256.
  const std::string params = png.text.at("parameters");
  EXPECT_NE(params.find(prompt + " <lora:lora:0.6>"), std::string::npos) << params;
  EXPECT_NE(params.find("Steps: 4, Sampler: lcm, CFG scale: 1,"), std::string::npos) << params;
  const auto sha = tide::testing::run_command("sha256sum " + quote(lora));
  ASSERT_EQ(sha.code, 0) << sha.output;
  EXPECT_NE(params.find("Lora hashes: \"lora: " + sha.output.substr(0, 12) + "\""), std::string::npos) << params;
}

}  // namespace
