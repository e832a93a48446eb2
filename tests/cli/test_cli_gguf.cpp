// stable-diffusion.cpp's GGUF files as a user gives them to tide generate: read like a single-file checkpoint,
// with --weights choosing how they are kept in memory, and a damaged file refused with its name.
#include <gtest/gtest.h>

#include <fstream>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/gguf_writer.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/pipeline/single_file.h"

namespace {
namespace fs = std::filesystem;
using tide::io::GgmlType;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

class CliGguf : public tide::testing::TinyPipelineSuite {
 protected:
  // The tiny model under its original names as a GGUF file: matrices whose rows fit the blocks in `type`, the
  // rest in F16 / F32, as stable-diffusion.cpp's convert keeps them.
  static void write_gguf(const fs::path& file, GgmlType type) {
    std::map<std::string, tide::io::WeightSource> components;
    std::map<std::string, nlohmann::json> configs;
    for (const char* c : {"unet", "vae", "text_encoder"}) {
      components[c] = tide::io::WeightSource::from_component_dir(model() / c);
      configs[c] = tide::io::read_json(model() / c / "config.json");
    }
    configs["scheduler"] = tide::io::read_json(model() / "scheduler" / "scheduler_config.json");
    configs["model_index"] = tide::io::read_json(model() / "model_index.json");
    const auto original = tide::pipeline::single_file_source(tide::pipeline::Family::SD1, components, configs);
    std::vector<tide::io::GgufTensorToWrite> tensors;
    for (const auto& name : original.names()) {
      const at::Tensor t = original.tensor(name);
      GgmlType as = t.dim() >= 2 ? GgmlType::F16 : GgmlType::F32;
      if (t.dim() >= 2 && t.size(-1) % 32 == 0) as = type;
      if (!t.is_floating_point()) as = GgmlType::I64;
      tensors.push_back({name, t, as});
    }
    // A tiny model's configs travel in the metadata, as tide convert stores them (real files need none).
    std::map<std::string, std::string> metadata = {{"general.architecture", "sd1"}};
    for (const auto& [component, config] : configs) metadata["config." + component] = config.dump();
    tide::io::write_gguf(file, tensors, metadata);
  }
  static std::string generate(const fs::path& model_file, const fs::path& png, const std::string& extra = "") {
    return "generate --model " + quote(model_file) + " --tokenizer " + quote(model()) +
           " --prompt 'a red fox' --steps 2 --seed 5 --threads 1 --output " + quote(png) + extra;
  }
};

TEST_F(CliGguf, Q8FileMakesNearlyTheFloatModelsPicture) {
  TempDir dir;
  write_gguf(dir / "tiny-q8_0.gguf", GgmlType::Q8_0);
  auto from_gguf = run_tide(generate(dir / "tiny-q8_0.gguf", dir / "gguf.png"));
  ASSERT_EQ(from_gguf.code, 0) << from_gguf.output;
  auto from_folder = run_tide("generate --model " + quote(model()) +
                              " --prompt 'a red fox' --steps 2 --seed 5 --threads 1 --output " + quote(dir / "folder.png"));
  ASSERT_EQ(from_folder.code, 0) << from_folder.output;
  const at::Tensor a = tide::io::read_png(dir / "gguf.png").rgb8, b = tide::io::read_png(dir / "folder.png").rgb8;
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_LE(tide::testing::max_abs_diff(a, b), 8.0);  // Q8_0 rounding, not another picture
  EXPECT_GT(a.to(at::kFloat).std().item<double>(), 1.0);  // not a flat image

  // --weights int8 re-quantizes the dequantized blocks per channel; the run still works.
  auto int8 = run_tide(generate(dir / "tiny-q8_0.gguf", dir / "int8.png", " --weights int8"));
  EXPECT_EQ(int8.code, 0) << int8.output;
}

TEST_F(CliGguf, DamagedFileIsRefusedByName) {
  TempDir dir;
  write_gguf(dir / "tiny.gguf", GgmlType::F16);
  const auto size = fs::file_size(dir / "tiny.gguf");
  fs::resize_file(dir / "tiny.gguf", size / 2);
  auto truncated = run_tide(generate(dir / "tiny.gguf", dir / "x.png"));
  EXPECT_EQ(truncated.code, 1) << truncated.output;
  EXPECT_NE(truncated.output.find("tiny.gguf"), std::string::npos) << truncated.output;
  EXPECT_FALSE(fs::exists(dir / "x.png"));
  std::ofstream(dir / "text.gguf") << "not a gguf file at all";
  auto not_gguf = run_tide(generate(dir / "text.gguf", dir / "y.png"));
  EXPECT_EQ(not_gguf.code, 1) << not_gguf.output;
  EXPECT_NE(not_gguf.output.find("GGUF"), std::string::npos) << not_gguf.output;
}

}  // namespace
