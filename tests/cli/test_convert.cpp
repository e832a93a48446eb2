// tide convert as a user runs it: a tiny diffusers folder to one single file and back, the same pixels
// from each form, and errors that leave nothing behind.
#include <gtest/gtest.h>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/gguf.h"
#include "tide/io/image.h"
#include "tide/io/safetensors.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

size_t entries(const fs::path& dir) { return static_cast<size_t>(std::distance(fs::directory_iterator(dir), {})); }

class CliConvert : public tide::testing::TinyPipelineSuite {};

// The pixels `tide generate` makes from `model_path`.
at::Tensor generate(const std::string& model_path, const fs::path& out) {
  auto run = run_tide("generate --model " + model_path + " --prompt 'a red robot' --steps 3 --seed 7 --width 32"
                      " --height 32 --threads 1 --output " + quote(out));
  EXPECT_EQ(run.code, 0) << run.output;
  return run.code == 0 ? tide::io::read_png(out).rgb8 : at::Tensor();
}

TEST_F(CliConvert, FolderToSingleFileAndBackGivesTheSameImages) {
  TempDir out;
  auto to_single = run_tide("convert --model " + quote(model()) + " --output " + quote(out / "tiny.safetensors"));
  ASSERT_EQ(to_single.code, 0) << to_single.output;
  EXPECT_EQ(entries(out.path()), 1u) << "only the output file";
  const tide::io::SafetensorsFile file(out / "tiny.safetensors");
  EXPECT_TRUE(file.contains("model.diffusion_model.input_blocks.0.0.weight"));
  EXPECT_TRUE(file.contains("first_stage_model.decoder.mid.attn_1.q.weight"));
  EXPECT_TRUE(file.contains("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"));
  EXPECT_TRUE(file.metadata().count("config.unet"));
  EXPECT_TRUE(file.metadata().count("config.scheduler"));

  auto to_folder = run_tide("convert --model " + quote(out / "tiny.safetensors") + " --output " + quote(out / "back") +
                            " --tokenizer " + quote(model()));
  ASSERT_EQ(to_folder.code, 0) << to_folder.output;
  for (const char* f : {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                        "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                        "text_encoder/config.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json"})
    EXPECT_TRUE(fs::exists(out / "back" / f)) << f;
  EXPECT_EQ(entries(out.path()), 2u) << "no temporary folder left";

  const at::Tensor original = generate(quote(model()), out / "original.png");
  ASSERT_TRUE(original.defined());
  EXPECT_TRUE(at::equal(generate(quote(out / "back"), out / "back.png"), original));

  // Straight from the single file, with the tokenizer of the model it came from.
  auto direct = run_tide("generate --model " + quote(out / "tiny.safetensors") + " --tokenizer " + quote(model()) +
                         " --prompt 'a red robot' --steps 3 --seed 7 --width 32 --height 32 --threads 1 --output " +
                         quote(out / "direct.png"));
  ASSERT_EQ(direct.code, 0) << direct.output;
  EXPECT_TRUE(at::equal(tide::io::read_png(out / "direct.png").rgb8, original));
}

TEST_F(CliConvert, HalfPrecisionOnRequest) {
  TempDir out;
  auto run = run_tide("convert --model " + quote(model()) + " --output " + quote(out / "half.safetensors") + " --dtype f16");
  ASSERT_EQ(run.code, 0) << run.output;
  const tide::io::SafetensorsFile file(out / "half.safetensors");
  EXPECT_EQ(file.entry("model.diffusion_model.out.2.weight").dtype, at::kHalf);
}

// A folder as a GGUF file (f32 is exact: the same picture; q8_0 quantizes the matrices that fit its blocks and
// stays close), read back by tide generate; a type GGUF has no writer for is refused.
TEST_F(CliConvert, FolderToGguf) {
  TempDir out;
  const at::Tensor original = generate(quote(model()), out / "original.png");
  ASSERT_TRUE(original.defined());
  for (const std::string type : {"f32", "q8_0"}) {
    SCOPED_TRACE(type);
    const fs::path file = out / ("tiny-" + type + ".gguf");
    auto run = run_tide("convert --model " + quote(model()) + " --output " + quote(file) + " --dtype " + type);
    ASSERT_EQ(run.code, 0) << run.output;
    EXPECT_NE(run.output.find("GGUF file"), std::string::npos) << run.output;
    const tide::io::GgufFile gguf(file);
    EXPECT_EQ(gguf.metadata().at("general.architecture"), "sd1");
    int quantized = 0;
    for (const auto& t : gguf.tensors()) quantized += t.type == static_cast<uint32_t>(tide::io::GgmlType::Q8_0);
    EXPECT_EQ(quantized > 0, type == "q8_0") << quantized << " Q8_0 tensors";
    auto direct = run_tide("generate --model " + quote(file) + " --tokenizer " + quote(model()) +
                           " --prompt 'a red robot' --steps 3 --seed 7 --width 32 --height 32 --threads 1 --output " +
                           quote(out / (type + ".png")));
    ASSERT_EQ(direct.code, 0) << direct.output;
    const at::Tensor pixels = tide::io::read_png(out / (type + ".png")).rgb8;
    if (type == "f32") {
      EXPECT_TRUE(at::equal(pixels, original));
    } else {
      EXPECT_LE((pixels.to(at::kInt) - original.to(at::kInt)).abs().max().item<int>(), 24);
    }
  }
  auto bad = run_tide("convert --model " + quote(model()) + " --output " + quote(out / "bad.gguf") + " --dtype q2_k");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("--dtype for a .gguf file"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(out / "bad.gguf"));
}

TEST_F(CliConvert, BadInvocationsFailAndWriteNothing) {
  TempDir out;
  auto help = run_tide("convert --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--model", "--output", "--to", "--dtype", "--tokenizer", "--variant"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;

  auto no_output = run_tide("convert --model " + quote(model()));
  EXPECT_EQ(no_output.code, 1);
  EXPECT_NE(no_output.output.find("--output is required"), std::string::npos) << no_output.output;
  auto bad_dtype = run_tide("convert --model " + quote(model()) + " --output " + quote(out / "a.safetensors") + " --dtype f8");
  EXPECT_EQ(bad_dtype.code, 1);
  EXPECT_NE(bad_dtype.output.find("f16, bf16 or f32"), std::string::npos) << bad_dtype.output;
  auto same = run_tide("convert --model " + quote(model()) + " --output " + quote(out / "x") + " --to diffusers");
  EXPECT_EQ(same.code, 1);
  EXPECT_NE(same.output.find("already is a diffusers folder"), std::string::npos) << same.output;
  auto exists = run_tide("convert --model " + quote(model()) + " --output " + quote(model()));
  EXPECT_EQ(exists.code, 1);
  EXPECT_NE(exists.output.find("already exists"), std::string::npos) << exists.output;

  // A safetensors file that is not a checkpoint: the message says what it holds.
  tide::io::write_safetensors(out / "other.safetensors", {{"encoder.weight", at::zeros({2, 2})}});
  auto other = run_tide("convert --model " + quote(out / "other.safetensors") + " --output " + quote(out / "folder"));
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.output.find("not a Stable Diffusion"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("encoder"), std::string::npos) << other.output;
  EXPECT_EQ(entries(out.path()), 1u) << "failed runs left files behind";
}

}  // namespace
