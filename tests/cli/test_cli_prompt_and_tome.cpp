// tide generate's A1111 prompt syntax, clip skip and Token Merging flags, and the values it refuses.
#include <gtest/gtest.h>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

class CliPromptAndTome : public tide::testing::TinyPipelineSuite {
 protected:
  std::string generate(const std::string& flags, const fs::path& output) {
    return "generate --model " + quote(model()) + " --prompt 'a (red:1.3) robot BREAK blue sky' --steps 2 --seed 3 "
           "--width 32 --height 32 --threads 1 " + flags + " --output " + quote(output);
  }
};

TEST_F(CliPromptAndTome, HelpExplainsTheFlags) {
  const auto help = run_tide("generate --help");
  for (const char* flag : {"--prompt-syntax", "--clip-skip", "diffusers' clip_skip is N-1", "--tome", "--tome-seed",
                           "--tome-no-rand", "--tome-max-downsample", "--tome-sx", "--tome-sy", "--tome-merge"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
}

TEST_F(CliPromptAndTome, A1111SyntaxAndClipSkipChangeThePictureAndAreRecorded) {
  TempDir out;
  ASSERT_EQ(run_tide(generate("", out / "plain.png")).code, 0);
  const auto a1111 = run_tide(generate("--prompt-syntax a1111 --clip-skip 2", out / "a1111.png"));
  ASSERT_EQ(a1111.code, 0) << a1111.output;
  const auto plain = tide::io::read_png(out / "plain.png"), weighted = tide::io::read_png(out / "a1111.png");
  EXPECT_FALSE(at::equal(plain.rgb8, weighted.rgb8));
  EXPECT_NE(weighted.text.at("parameters").find("Clip skip: 2"), std::string::npos);
  EXPECT_EQ(weighted.text.at("parameters").find("Prompt syntax: plain"), std::string::npos);
  EXPECT_NE(plain.text.at("parameters").find("Prompt syntax: plain"), std::string::npos);
}

TEST_F(CliPromptAndTome, TokenMergingRunsAndIsRecorded) {
  TempDir out;
  ASSERT_EQ(run_tide(generate("", out / "plain.png")).code, 0);
  const auto merged = run_tide(generate("--tome 0.5 --tome-merge attn,mlp", out / "tome.png"));
  ASSERT_EQ(merged.code, 0) << merged.output;
  const auto image = tide::io::read_png(out / "tome.png");
  EXPECT_NE(image.text.at("parameters").find("Token merging ratio: 0.5"), std::string::npos);
  EXPECT_FALSE(at::equal(image.rgb8, tide::io::read_png(out / "plain.png").rgb8));
  // Another ToMe seed, another choice of destination tokens.
  ASSERT_EQ(run_tide(generate("--tome 0.5 --tome-merge attn,mlp --tome-seed 9", out / "seed9.png")).code, 0);
  EXPECT_FALSE(at::equal(image.rgb8, tide::io::read_png(out / "seed9.png").rgb8));
}

TEST_F(CliPromptAndTome, PreviewAndDeepCache) {
  TempDir out;
  const auto run = run_tide(generate("--preview " + quote(out / "preview.png") + " --cache-interval 2", out / "a.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  const auto preview = tide::io::read_png(out / "preview.png");
  EXPECT_EQ(preview.rgb8.sizes(), (at::IntArrayRef{16, 16, 3}));  // the latent's size: 32 px / VAE factor 2
  EXPECT_NE(tide::io::read_png(out / "a.png").text.at("parameters").find("DeepCache interval: 2"), std::string::npos);
  const auto bad = run_tide(generate("--preview " + quote(out / "p.jpg"), out / "b.png"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("--preview must name a .png"), std::string::npos) << bad.output;
  const auto zero = run_tide(generate("--cache-interval 0", out / "c.png"));
  EXPECT_EQ(zero.code, 1);
  EXPECT_NE(zero.output.find("cache interval must be at least 1"), std::string::npos) << zero.output;
}

// With a tiny autoencoder the preview is its full-size decode: after the last step, the picture itself.
TEST_F(CliPromptAndTome, PreviewThroughTheTinyDecoder) {
  TempDir out;
  const fs::path taesd = tide::testing::make_tiny_taesd(out / "taesd");
  const auto run =
      run_tide(generate("--decoder " + quote(taesd) + " --preview " + quote(out / "preview.png"), out / "a.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  const at::Tensor preview = tide::io::read_png(out / "preview.png").rgb8;
  EXPECT_EQ(preview.sizes(), (at::IntArrayRef{32, 32, 3}));
  EXPECT_TRUE(at::equal(preview, tide::io::read_png(out / "a.png").rgb8));
}

TEST_F(CliPromptAndTome, BadValuesAreRefusedAndWriteNothing) {
  TempDir out;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--guidance inf", "finite number"},
      {"--guidance nan", "finite number"},
      {"--threads 100000", "--threads must be between 1 and"},
      {"--threads 0", "--threads must be between 1 and"},
      {"--prompt-syntax comfy", "plain or a1111"},
      {"--clip-skip 0", "clip skip must be at least 1"},
      {"--prompt-syntax a1111 --clip-skip 7", "the text encoder has"},
      {"--tome 1.5", "ToMe ratio"},
      {"--tome 0.5 --tome-merge everything", "--tome-merge takes"},
      {"--tome 0.5 --tome-sx 0", "at least 1"},
  };
  for (const auto& [flags, message] : cases) {
    const auto r = run_tide(generate(flags, out / "bad.png"));
    EXPECT_EQ(r.code, 1) << flags;
    EXPECT_NE(r.output.find(message), std::string::npos) << flags << ": " << r.output;
    EXPECT_FALSE(fs::exists(out / "bad.png")) << flags;
  }
  const auto weight = run_tide("generate --model " + quote(model()) + " --prompt '(a:1.2.3)' --prompt-syntax a1111 "
                               "--steps 1 --width 32 --height 32 --output " + quote(out / "bad.png"));
  EXPECT_EQ(weight.code, 1);
  EXPECT_NE(weight.output.find("is not a number"), std::string::npos) << weight.output;
}

// <lora:NAME:WEIGHT> in an A1111 prompt: the LoRA from the folder, merged like --lora (here the features/lora
// LoCon case at 0.6 gives diffusers' image); a third number is the UNet's own weight.
TEST(CliPromptLoraTags, TagsApplyLorasFromTheFolder) {
  TIDE_REQUIRE_FIXTURES();
  TempDir dir;
  const fs::path lora_case = tide::testing::feature_case("lora", "lora_sd1_locon_m06");
  fs::copy_file(lora_case / "lora.safetensors", dir / "locon.safetensors");
  const auto c = tide::io::read_json(lora_case / "case.json");
  const std::string common = "generate --model " + quote(tide::testing::pipeline_dir("sd1-tiny")) + " --seed " +
                             std::to_string(c["seed"].get<int>()) + " --steps " + std::to_string(c["steps"].get<int>()) +
                             " --width 64 --height 64 --threads 1 --prompt-syntax a1111 --scheduler " +
                             tide::testing::scheduler_cli_name(c["scheduler"].get<std::string>(), c["scheduler_kwargs"]) +
                             " --lora-dir " +
                             quote(dir.path());
  const std::string prompt = c["prompt"].get<std::string>();
  auto run = run_tide(common + " --prompt " + quote(prompt + " <lora:locon:0.6>") + " --output " + quote(dir / "a.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  const auto ours = tide::io::read_png(dir / "a.png");
  const auto reference = tide::io::read_png(lora_case / "image_0.png").rgb8.to(at::kInt);
  EXPECT_LE((ours.rgb8.to(at::kInt) - reference).abs().max().item<int>(), 2);
  EXPECT_NE(ours.text.at("parameters").find("<lora:locon:0.6>"), std::string::npos) << ours.text.at("parameters");
  run = run_tide(common + " --prompt " + quote(prompt + " <lora:locon:0.6:0>") + " --output " + quote(dir / "b.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_FALSE(at::equal(tide::io::read_png(dir / "b.png").rgb8, ours.rgb8));
  run = run_tide(common + " --prompt " + quote(prompt + " <lora:missing:1>") + " --output " + quote(dir / "c.png"));
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.output.find("missing"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(dir / "c.png"));
}

}  // namespace
