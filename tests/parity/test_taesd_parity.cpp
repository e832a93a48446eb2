// The tiny autoencoder (TAESD, diffusers' AutoencoderTiny) against diffusers (features/taesd): decode and
// encode of the component case, and a StableDiffusionPipeline run that decodes with it (`pipe.vae = taesd`).
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/models/autoencoder_tiny.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::feature_case;


bool is_pipeline_case(const std::string& id) {
  return io::read_json(feature_case("taesd", id) / "case.json").value("mode", "") == "pipeline";
}

std::vector<std::string> cases(bool pipeline) {
  std::vector<std::string> out;
  for (const auto& id : tide::testing::feature_cases("taesd"))
    if (is_pipeline_case(id) == pipeline) out.push_back(id);
  return out;
}

class TaesdComponents : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TaesdComponents);

TEST_P(TaesdComponents, EncodeAndDecodeMatchDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  c10::InferenceMode inference;
  const fs::path dir = feature_case("taesd", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto taesd = models::load_autoencoder_tiny(tide::testing::pipeline_dir(c["taesd"].get<std::string>()));
  EXPECT_EQ(taesd->config().scale_factor(), c["vae_scale_factor_as_pipelines_derive_it"].get<int64_t>());

  // The latents are the generator's first draw.
  const at::Tensor z = io::read_npy(dir / "decode_in.npy");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c["seed"].get<uint64_t>());
  EXPECT_TENSOR_NEAR(at::randn(z.sizes(), gen, at::kFloat) * c["latent_std"].get<double>(), z, 1e-6);
  EXPECT_TENSOR_NEAR(at::tanh(z / 3) * 3, io::read_npy(dir / "decode_clamped_in.npy"), 1e-6);

  const at::Tensor decoded = taesd->decode(z);
  const at::Tensor decode_out = io::read_npy(dir / "decode_out.npy");
  EXPECT_TENSOR_NEAR(decoded, decode_out, 1e-4);
  std::printf("decode_out max abs diff %.3g (max |ref| %.3g)\n", tide::testing::max_abs_diff(decoded, decode_out),
              decode_out.abs().max().item<double>());
  const at::Tensor png = io::read_png(dir / "decode_image.png").rgb8;
  const int png_diff = (io::to_rgb8(decoded)[0].to(at::kInt) - png.to(at::kInt)).abs().max().item<int>();
  EXPECT_LE(png_diff, 1);

  // Encode: the synthetic image as pixels in [-1, 1], then the encoder (no distribution, no scaling).
  const at::Tensor image = io::read_png(dir / "encode_image.png").rgb8.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  const at::Tensor encode_in = io::read_npy(dir / "encode_in.npy");
  EXPECT_TENSOR_NEAR(image / 127.5 - 1, encode_in, 1e-6);
  const at::Tensor encoded = taesd->encode(encode_in);
  const at::Tensor encode_out = io::read_npy(dir / "encode_out.npy");
  EXPECT_TENSOR_NEAR(encoded, encode_out, 1e-5);
  std::printf("encode_out max abs diff %.3g (max |ref| %.3g)\n", tide::testing::max_abs_diff(encoded, encode_out),
              encode_out.abs().max().item<double>());
  const at::Tensor roundtrip = taesd->decode(encode_out);
  EXPECT_TENSOR_NEAR(roundtrip, io::read_npy(dir / "roundtrip_decode_out.npy"), 1e-4);
  std::printf("roundtrip_decode_out max abs diff %.3g\n",
              tide::testing::max_abs_diff(roundtrip, io::read_npy(dir / "roundtrip_decode_out.npy")));
}

INSTANTIATE_TEST_SUITE_P(Features, TaesdComponents, ::testing::ValuesIn(cases(false)),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

class TaesdPipeline : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TaesdPipeline);

TEST_P(TaesdPipeline, DecodesWithTheTinyAutoencoder) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path dir = feature_case("taesd", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(c["pipeline"].get<std::string>()));
  pipe->set_tiny_autoencoder(models::load_autoencoder_tiny(tide::testing::pipeline_dir(c["taesd"].get<std::string>())));
  ASSERT_TRUE(pipe->has_tiny_autoencoder());

  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  r.scheduler = schedulers::scheduler_name_for_class(c["scheduler"].get<std::string>(), c["scheduler_config"]);
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  double worst_step = 0;
  const auto result = pipe->generate(r, [&](const pipeline::StepInfo& s) {
    worst_step = std::max(worst_step, tide::testing::relative_max_error(s.latents, steps[s.index]));
  });
  EXPECT_EQ(result.unet_calls, c["num_unet_calls"].get<int>());
  EXPECT_LE(worst_step, 1e-4);
  // diffusers decodes latents / taesd.config.scaling_factor (1.0).
  const at::Tensor decode_in = io::read_npy(dir / "vae_decode_in.npy");
  const double final_error = tide::testing::relative_max_error(result.latents / c["vae_scaling_factor"].get<double>(), decode_in);
  EXPECT_LE(final_error, 1e-4);
  const at::Tensor image = (result.decoded / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1});
  const double image_diff = tide::testing::max_abs_diff(image, io::read_npy(dir / "image.npy"));
  EXPECT_LE(image_diff, 1e-3);
  const at::Tensor png = io::read_png(dir / "image_0.png").rgb8;
  const int png_diff = (result.images[0].to(at::kInt) - png.to(at::kInt)).abs().max().item<int>();
  EXPECT_LE(png_diff, 2);
  std::printf("%s: per-step latents rel %.3g, vae_decode_in rel %.3g, image.npy %.3g, PNG %d\n", GetParam().c_str(),
              worst_step, final_error, image_diff, png_diff);
}

INSTANTIATE_TEST_SUITE_P(Features, TaesdPipeline, ::testing::ValuesIn(cases(true)),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

TEST(TaesdParityCases, FixturesHoldBothKinds) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(cases(false).empty());
  EXPECT_FALSE(cases(true).empty());
}

// A wrong folder is a clear error, not a crash.
TEST(TaesdLoading, WrongFoldersAreErrors) {
  TIDE_REQUIRE_FIXTURES();
  auto message = [](const fs::path& dir) {
    try {
      models::load_autoencoder_tiny(dir);
    } catch (const tide::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(tide::testing::pipeline_dir("sd1-tiny")).find("whole pipeline"), std::string::npos);
  EXPECT_NE(message(tide::testing::pipeline_dir("sd1-tiny") / "vae").find("AutoencoderKL"), std::string::npos);
  EXPECT_NE(message(tide::testing::pipeline_dir("no-such-folder")).find("does not exist"), std::string::npos);
}

// A TAESD whose latents do not fit the model (an SD3/FLUX-style 16-channel one, or another image factor) is
// refused with the reason, and the pipeline keeps decoding with its VAE.
TEST(TaesdLoading, MismatchedTinyAutoencoderIsRefused) {
  TIDE_REQUIRE_FIXTURES();
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir("sdxl-tiny"));
  models::AutoencoderTinyConfig config;
  config.encoder_block_out_channels = config.decoder_block_out_channels = {16, 16};
  config.num_encoder_blocks = {1, 1};
  config.num_decoder_blocks = {1, 1};
  config.latent_channels = 16;
  try {
    pipe->set_tiny_autoencoder(models::AutoencoderTiny(config));
    ADD_FAILURE() << "a 16-channel TAESD was accepted for a 4-channel model";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("latent channels"), std::string::npos) << e.what();
  }
  config.latent_channels = 4;
  config.encoder_block_out_channels = config.decoder_block_out_channels = {16, 16, 16};
  config.num_encoder_blocks = config.num_decoder_blocks = {1, 1, 1};  // factor 4, the tiny VAE's is 2
  EXPECT_THROW(pipe->set_tiny_autoencoder(models::AutoencoderTiny(config)), tide::Error);
  EXPECT_FALSE(pipe->has_tiny_autoencoder());
}

}  // namespace
