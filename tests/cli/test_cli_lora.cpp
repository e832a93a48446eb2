// tide generate --lora / --lora-dir as a user runs them: the fixture LoRAs give diffusers' images, the PNG
// records them, and bad files, names and weights are clear errors that write nothing.
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

fs::path lora_case(const std::string& id) { return tide::testing::feature_case("lora", id); }

// The generate command of a features/lora case (Euler, as diffusers ran it).
std::string case_command(const std::string& id) {
  const auto c = tide::io::read_json(lora_case(id) / "case.json");
  std::string cmd = "generate --model " + quote(tide::testing::pipeline_dir(c["pipeline"].get<std::string>())) +
                    " --prompt " + quote(c["prompt"].get<std::string>()) + " --seed " +
                    std::to_string(c["seed"].get<int>()) + " --steps " + std::to_string(c["steps"].get<int>()) +
                    " --guidance " + std::to_string(c["guidance_scale"].get<double>()) + " --width " +
                    std::to_string(c["width"].get<int>()) + " --height " + std::to_string(c["height"].get<int>()) +
                    " --scheduler euler --threads 1";
  if (!c["negative_prompt"].is_null()) cmd += " --negative-prompt " + quote(c["negative_prompt"].get<std::string>());
  return cmd;
}

void expect_reference_image(const fs::path& png, const std::string& id) {
  const auto ours = tide::io::read_png(png).rgb8.to(at::kInt);
  const auto reference = tide::io::read_png(lora_case(id) / "image_0.png").rgb8.to(at::kInt);
  ASSERT_EQ(ours.sizes(), reference.sizes());
  EXPECT_LE((ours - reference).abs().max().item<int>(), 2) << id;
  EXPECT_LE((ours - reference).abs().to(at::kDouble).mean().item<double>(), 0.25) << id;
}

TEST(CliLora, HelpDescribesTheFlags) {
  auto help = run_tide("generate --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.output.find("--lora FILE[:WEIGHT]"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("--lora-dir"), std::string::npos) << help.output;
}

// A file path with its weight (kohya, multiplier 1), and a bare name found in --lora-dir (PEFT).
TEST(CliLora, FixtureLorasGiveTheDiffusersImagesAndAreRecorded) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  const std::string kohya = "lora_sd1_kohya_m1";
  auto run = run_tide(case_command(kohya) + " --lora " + quote((lora_case(kohya) / "lora.safetensors").string() + ":1") +
                      " --output " + quote(out / "kohya.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  expect_reference_image(out / "kohya.png", kohya);
  const std::string params = tide::io::read_png(out / "kohya.png").text.at("parameters");
  EXPECT_NE(params.find("<lora:lora:1>"), std::string::npos) << params;
  EXPECT_NE(params.find("Lora hashes: \"lora: "), std::string::npos) << params;

  const std::string peft = "lora_sd1_peft_m1";
  TempDir loras;
  fs::copy_file(lora_case(peft) / "lora.safetensors", loras / "coffee-style.safetensors");
  run = run_tide(case_command(peft) + " --lora-dir " + quote(loras.path()) + " --lora coffee-style --output " +
                 quote(out / "peft.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  expect_reference_image(out / "peft.png", peft);
  EXPECT_NE(tide::io::read_png(out / "peft.png").text.at("parameters").find("<lora:coffee-style:1>"), std::string::npos);
}

TEST(CliLora, BadLorasAreClearErrorsAndWriteNothing) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  const std::string base = "generate --model " + quote(tide::testing::pipeline_dir("sd1-tiny")) +
                           " --prompt cat --steps 1 --width 64 --height 64 --output " + quote(out / "x.png");
  auto missing = run_tide(base + " --lora " + quote(out / "absent.safetensors"));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("no LoRA file"), std::string::npos) << missing.output;

  auto no_dir = run_tide(base + " --lora-dir " + quote(out / "nope") + " --lora style");
  EXPECT_EQ(no_dir.code, 1);
  EXPECT_NE(no_dir.output.find("is not a folder"), std::string::npos) << no_dir.output;

  const fs::path kohya = lora_case("lora_sd1_kohya_m1") / "lora.safetensors";
  auto bad_weight = run_tide(base + " --lora " + quote(kohya.string() + ":strong"));
  EXPECT_EQ(bad_weight.code, 1);
  EXPECT_NE(bad_weight.output.find("must be a number"), std::string::npos) << bad_weight.output;

  // An SDXL LoRA on an SD 1.x model names the first tensor that does not fit.
  auto other_family = run_tide(base + " --lora " + quote(lora_case("lora_sdxl_kohya_m1") / "lora.safetensors"));
  EXPECT_EQ(other_family.code, 1);
  EXPECT_NE(other_family.output.find("SDXL"), std::string::npos) << other_family.output;
  EXPECT_NE(other_family.output.find("lora_te1_"), std::string::npos) << other_family.output;

  // A weight file that is not a LoRA.
  auto not_lora = run_tide(base + " --lora " + quote(tide::testing::pipeline_dir("sd1-tiny") / "unet" /
                                                    "diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(not_lora.code, 1);
  EXPECT_NE(not_lora.output.find("not a LoRA tensor"), std::string::npos) << not_lora.output;
  EXPECT_EQ(std::distance(fs::directory_iterator(out.path()), {}), 0) << "a failed run left files behind";
}

}  // namespace
