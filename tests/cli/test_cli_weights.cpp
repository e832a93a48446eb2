// --weights and tide quantize as a user runs them: a quantized folder that generate and bench load as it is,
// the same picture from an f16 file in 16 and 32 bits, and clear errors that leave nothing behind.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/safetensors.h"
#include "tide/io/weights.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

class CliWeights : public tide::testing::TinyPipelineSuite {};

std::string generate_args(const fs::path& model, const fs::path& output) {
  return "generate --model " + quote(model) + " --prompt 'a red fox' --steps 2 --seed 3 --threads 1 --output " + quote(output);
}

TEST(CliWeightsHelp, EveryFlagIsExplained) {
  auto help = run_tide("quantize --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--model", "--weights", "--output", "--variant", "--tokenizer"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
  EXPECT_NE(run_tide("generate --help").output.find("--weights"), std::string::npos);
  EXPECT_NE(run_tide("bench --help").output.find("--compare-weights"), std::string::npos);
  EXPECT_NE(run_tide("serve --help").output.find("--weights"), std::string::npos);
  EXPECT_NE(run_tide("--help").output.find("quantize"), std::string::npos);
}

TEST_F(CliWeights, QuantizedFolderLoadsAsItIs) {
  TempDir dir;
  const fs::path out = dir / "int8";
  auto q = run_tide("quantize --model " + quote(model()) + " --weights int8 --output " + quote(out));
  ASSERT_EQ(q.code, 0) << q.output;
  const auto unet = tide::io::WeightSource::from_component_dir(out / "unet");
  EXPECT_EQ(unet.dtype("down_blocks.0.resnets.0.conv1.weight"), at::kChar);
  EXPECT_TRUE(unet.contains("down_blocks.0.resnets.0.conv1.weight_scale"));
  EXPECT_NE(unet.metadata().at("tide.quantization").find("int8"), std::string::npos);
  // The text encoder's linear layers too (its embeddings and norms stay float32).
  const auto text_encoder = tide::io::WeightSource::from_component_dir(out / "text_encoder");
  EXPECT_EQ(text_encoder.dtype("text_model.encoder.layers.0.mlp.fc1.weight"), at::kChar);
  EXPECT_EQ(text_encoder.dtype("text_model.embeddings.token_embedding.weight"), at::kFloat);
  const auto unet_bytes = [](const fs::path& folder) { return fs::file_size(folder / "unet" / "diffusion_pytorch_model.safetensors"); };
  EXPECT_LT(double(unet_bytes(out)), 0.5 * double(unet_bytes(model())));

  // generate reads it as int8 with no flag, and the picture equals --weights int8 on the float model.
  auto from_folder = run_tide(generate_args(out, dir / "a.png"));
  ASSERT_EQ(from_folder.code, 0) << from_folder.output;
  auto on_the_fly = run_tide(generate_args(model(), dir / "b.png") + " --weights int8");
  ASSERT_EQ(on_the_fly.code, 0) << on_the_fly.output;
  const auto a = tide::io::read_png(dir / "a.png").rgb8, b = tide::io::read_png(dir / "b.png").rgb8;
  EXPECT_TRUE(at::equal(a, b));

  // As one file in the original layout: int8 weights with their scales beside them, the same picture.
  const fs::path file = dir / "int8.safetensors";
  auto single = run_tide("quantize --model " + quote(model()) + " --weights int8 --output " + quote(file));
  ASSERT_EQ(single.code, 0) << single.output;
  const auto original = tide::io::WeightSource::from_file(file);
  EXPECT_EQ(original.dtype("model.diffusion_model.input_blocks.1.0.in_layers.2.weight"), at::kChar);
  EXPECT_EQ(original.dtype("model.diffusion_model.input_blocks.1.0.in_layers.2.weight_scale"), at::kFloat);
  EXPECT_EQ(original.dtype("model.diffusion_model.input_blocks.0.0.weight"), at::kFloat);  // conv_in stays float
  EXPECT_NE(original.metadata().at("tide.quantization").find("int8"), std::string::npos);
  EXPECT_LT(double(fs::file_size(file)), 0.5 * double(unet_bytes(model())));
  auto from_file = run_tide(generate_args(file, dir / "c.png") + " --tokenizer " + quote(model()));
  ASSERT_EQ(from_file.code, 0) << from_file.output;
  EXPECT_TRUE(at::equal(tide::io::read_png(dir / "c.png").rgb8, a));
  // GGUF files hold no int8 tensors of this kind: converting the int8 folder to one is refused.
  auto gguf = run_tide("convert --model " + quote(out) + " --to single-file --output " + quote(dir / "x.gguf"));
  EXPECT_EQ(gguf.code, 1);
  EXPECT_NE(gguf.output.find("stored as int8"), std::string::npos) << gguf.output;
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));

  // bench measures int8 against float32 side by side.
  auto bench = run_tide("bench --model " + quote(model()) + " --weights int8 --compare-weights f32 --width 32 "
                        "--height 32 --steps 1 --runs 1 --warmup 0 --threads 1 --json " + quote(dir / "r.json"));
  ASSERT_EQ(bench.code, 0) << bench.output;
  std::ifstream in(dir / "r.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("weights"), "int8");
  EXPECT_EQ(j.at("baseline"), "weights f32");
  // Quality side by side: int8 moves the UNet's answer a little, not a lot.
  ASSERT_TRUE(j.at("unet_relative_error").is_number()) << j.dump();
  EXPECT_GT(j.at("unet_relative_error").get<double>(), 0.0);
  EXPECT_LT(j.at("unet_relative_error").get<double>(), 0.1);
  ASSERT_TRUE(j.at("image_psnr_db").is_number()) << j.dump();
  EXPECT_GT(j.at("image_psnr_db").get<double>(), 20.0);
}

TEST_F(CliWeights, SixteenBitSingleFileGivesTheFloat32PictureOfItsValues) {
  TempDir dir;
  const fs::path file = dir / "f16.safetensors";
  auto q = run_tide("quantize --model " + quote(model()) + " --weights f16 --output " + quote(file));
  ASSERT_EQ(q.code, 0) << q.output;
  EXPECT_EQ(tide::io::WeightSource::from_file(file).dtype("model.diffusion_model.input_blocks.0.0.weight"), at::kHalf);
  // Kept in 16 bits (as stored) or widened to float32 once: the same picture.
  const std::string tokenizer = " --tokenizer " + quote(model());
  auto half = run_tide(generate_args(file, dir / "half.png") + tokenizer + " --weights f16");
  ASSERT_EQ(half.code, 0) << half.output;
  auto full = run_tide(generate_args(file, dir / "full.png") + tokenizer);
  ASSERT_EQ(full.code, 0) << full.output;
  EXPECT_TRUE(at::equal(tide::io::read_png(dir / "half.png").rgb8, tide::io::read_png(dir / "full.png").rgb8));
}

TEST_F(CliWeights, BadRequestsFailClearlyAndWriteNothing) {
  TempDir dir;
  auto bad_format = run_tide("quantize --model " + quote(model()) + " --weights int4 --output " + quote(dir / "x"));
  EXPECT_EQ(bad_format.code, 1);
  EXPECT_NE(bad_format.output.find("--weights must be f32, f16, bf16 or int8, got 'int4'"), std::string::npos) << bad_format.output;
  auto exists = run_tide("quantize --model " + quote(model()) + " --weights f16 --output " + quote(dir.path()));
  EXPECT_EQ(exists.code, 1);
  EXPECT_NE(exists.output.find("already exists"), std::string::npos) << exists.output;
  auto no_model = run_tide("quantize --model " + quote(dir / "missing") + " --weights int8 --output " + quote(dir / "y"));
  EXPECT_EQ(no_model.code, 1);
  auto generate = run_tide(generate_args(model(), dir / "z.png") + " --weights q4");
  EXPECT_EQ(generate.code, 1);
  EXPECT_NE(generate.output.find("tide generate: --weights"), std::string::npos) << generate.output;
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 0u) << "a failed command left files behind";
}

}  // namespace
