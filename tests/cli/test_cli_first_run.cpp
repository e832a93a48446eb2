// What a new user runs first: `tide make-tiny` writes a model that `tide generate` turns into a picture
// with nothing downloaded; `--output-latents` writes what diffusers returns with output_type="latent";
// `tide info` describes folders and single files through the one model loader.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "cli_runner.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

TEST(CliFirstRun, MakeTinyWritesAModelThatGeneratesAPicture) {
  TempDir dir;
  auto made = run_tide("make-tiny " + quote(dir / "tiny"));
  ASSERT_EQ(made.code, 0) << made.output;
  for (const char* part : {"model_index.json", "unet/config.json", "vae/diffusion_pytorch_model.safetensors",
                           "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json"})
    EXPECT_TRUE(fs::exists(dir / "tiny" / part)) << part;
  EXPECT_NE(made.output.find("tide generate --model"), std::string::npos) << made.output;

  auto generated = run_tide("generate --model " + quote(dir / "tiny") +
                            " --prompt 'a yellow robot' --seed 42 --steps 4 --output " + quote(dir / "robot.png"));
  ASSERT_EQ(generated.code, 0) << generated.output;
  const auto image = tide::io::read_png(dir / "robot.png");
  EXPECT_EQ(image.rgb8.sizes(), (at::IntArrayRef{32, 32, 3}));  // sample size 16 × VAE factor 2
  EXPECT_GT(image.rgb8.to(at::kFloat).std().item<float>(), 1.f) << "a flat picture";

  // The same seed makes the same model: weights are a function of --seed alone.
  auto again = run_tide("make-tiny " + quote(dir / "tiny2"));
  ASSERT_EQ(again.code, 0) << again.output;
  for (const char* file : {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}) {
    std::ifstream a(dir / "tiny" / file, std::ios::binary), b(dir / "tiny2" / file, std::ios::binary);
    EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b))) << file;
  }
  auto other_seed = run_tide("make-tiny " + quote(dir / "tiny3") + " --seed 1");
  ASSERT_EQ(other_seed.code, 0) << other_seed.output;
  {
    std::ifstream a(dir / "tiny" / "unet/diffusion_pytorch_model.safetensors", std::ios::binary);
    std::ifstream b(dir / "tiny3" / "unet/diffusion_pytorch_model.safetensors", std::ios::binary);
    EXPECT_FALSE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b)))
        << "--seed 1 wrote the same weights as seed 0";
  }

  // Running it again keeps the model; a folder that holds something else is refused and left alone.
  const auto unet_time = fs::last_write_time(dir / "tiny" / "unet/diffusion_pytorch_model.safetensors");
  auto existing = run_tide("make-tiny " + quote(dir / "tiny"));
  EXPECT_EQ(existing.code, 0) << existing.output;
  EXPECT_NE(existing.output.find("left as it is"), std::string::npos) << existing.output;
  EXPECT_EQ(fs::last_write_time(dir / "tiny" / "unet/diffusion_pytorch_model.safetensors"), unet_time);
  fs::create_directories(dir / "photos");
  auto not_a_model = run_tide("make-tiny " + quote(dir / "photos"));
  EXPECT_NE(not_a_model.code, 0);
  EXPECT_NE(not_a_model.output.find("already exists"), std::string::npos) << not_a_model.output;
  auto no_dir = run_tide("make-tiny");
  EXPECT_NE(no_dir.code, 0);
  EXPECT_NE(no_dir.output.find("missing DIR"), std::string::npos) << no_dir.output;
}

TEST(CliFirstRun, OutputLatentsAreTheFinalLatentsOfTheRun) {
  TempDir dir;
  tide::testing::make_tiny_pipeline(dir / "model");
  auto run = run_tide("generate --model " + quote(dir / "model") +
                      " --prompt 'a red robot' --seed 9 --steps 3 --num-images 2 --width 24 --height 32 --output " +
                      quote(dir / "out.png") + " --output-latents " + quote(dir / "latents.npy"));
  ASSERT_EQ(run.code, 0) << run.output;
  const at::Tensor latents = tide::io::read_npy(dir / "latents.npy");
  EXPECT_EQ(latents.sizes(), (at::IntArrayRef{2, 4, 16, 12}));  // [N, 4, H/2, W/2]

  // They are exactly what the library's run gives for the same request.
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(dir / "model");
  tide::pipeline::GenerationRequest request;
  request.prompt = "a red robot";
  request.seed = 9;
  request.steps = 3;
  request.num_images = 2;
  request.width = 24;
  request.height = 32;
  EXPECT_TRUE(at::allclose(latents, pipe->generate(request).latents, 1e-5, 1e-5));

  auto wrong = run_tide("generate --model " + quote(dir / "model") + " --prompt x --steps 1 --output " +
                        quote(dir / "x.png") + " --output-latents " + quote(dir / "latents.bin"));
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(wrong.output.find("--output-latents must name a .npy file"), std::string::npos) << wrong.output;
  EXPECT_FALSE(fs::exists(dir / "x.png")) << "an invocation error left an image behind";
}

TEST(CliFirstRun, InfoDescribesASingleFileWithoutItsTokenizer) {
  TempDir dir;
  tide::testing::make_tiny_pipeline(dir / "model");
  auto converted = run_tide("convert --model " + quote(dir / "model") + " --output " + quote(dir / "tiny.safetensors"));
  ASSERT_EQ(converted.code, 0) << converted.output;
  // Offline, with no tokenizer anywhere: info needs only configs and weights.
  auto info = run_tide("info " + quote(dir / "tiny.safetensors"), "HF_HUB_OFFLINE=1 HF_HOME=" + quote(dir / "hf") + " ");
  ASSERT_EQ(info.code, 0) << info.output;
  for (const char* part : {"unet", "vae", "text_encoder", "PNDMScheduler", "total parameters"})
    EXPECT_NE(info.output.find(part), std::string::npos) << part << "\n" << info.output;
}

}  // namespace
