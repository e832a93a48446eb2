// The tide binary as a user runs it: help, clear errors with a non-zero exit, and generation
// on a tiny random pipeline built in-process (and on the fixture pipeline when available).
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/runtime/cpu_features.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

TEST(Cli, HelpListsCommandsAndEveryGenerateFlag) {
  auto top = run_tide("--help");
  EXPECT_EQ(top.code, 0);
  EXPECT_NE(top.output.find("generate"), std::string::npos);
  EXPECT_NE(top.output.find("info"), std::string::npos);
  auto gen = run_tide("generate --help");
  EXPECT_EQ(gen.code, 0);
  for (const char* flag : {"--model", "--prompt", "--negative-prompt", "--steps", "--guidance", "--seed", "--width",
                           "--height", "--num-images", "--scheduler", "--karras", "--eta", "--output", "--threads",
                           "--variant", "--tokenizer", "--dtype", "--cpus", "--vae-tiling", "dpm++2m", "euler-a", "unipc"})
    EXPECT_NE(gen.output.find(flag), std::string::npos) << flag;
  EXPECT_EQ(run_tide("").code, 2);
  auto unknown = run_tide("paint");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.output.find("unknown command"), std::string::npos);
}

TEST(Cli, BadInvocationsFailWithClearMessages) {
  TempDir dir;
  auto missing = run_tide("generate --model " + quote(dir / "nope") + " --prompt cat");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("not found"), std::string::npos) << missing.output;
  auto no_model = run_tide("generate --prompt cat");
  EXPECT_EQ(no_model.code, 1);
  EXPECT_NE(no_model.output.find("--model is required"), std::string::npos) << no_model.output;
  auto bad_int = run_tide("generate --model x --prompt cat --steps many");
  EXPECT_EQ(bad_int.code, 1);
  EXPECT_NE(bad_int.output.find("--steps expects an integer"), std::string::npos) << bad_int.output;
  auto bad_flag = run_tide("generate --model x --prompt cat --stpes 3");
  EXPECT_EQ(bad_flag.code, 1);
  EXPECT_NE(bad_flag.output.find("unknown flag --stpes"), std::string::npos) << bad_flag.output;
  auto not_a_model = run_tide("generate --model " + quote(dir.path()) + " --prompt cat");
  EXPECT_EQ(not_a_model.code, 1);
  EXPECT_NE(not_a_model.output.find("model_index.json"), std::string::npos) << not_a_model.output;
}

class CliTinyModel : public tide::testing::TinyPipelineSuite {};

TEST_F(CliTinyModel, BadSizeAndUnknownSchedulerAreErrorsAndWriteNothing) {
  TempDir out;
  auto bad_size = run_tide("generate --model " + quote(model()) + " --prompt cat --width 33 --output " + quote(out / "a.png"));
  EXPECT_EQ(bad_size.code, 1);
  EXPECT_NE(bad_size.output.find("multiples of 2"), std::string::npos) << bad_size.output;
  auto bad_sched = run_tide("generate --model " + quote(model()) + " --prompt cat --scheduler warp --output " + quote(out / "a.png"));
  EXPECT_EQ(bad_sched.code, 1);
  EXPECT_NE(bad_sched.output.find("warp"), std::string::npos) << bad_sched.output;
  EXPECT_NE(bad_sched.output.find("dpm++2m"), std::string::npos) << bad_sched.output;
  auto bad_out = run_tide("generate --model " + quote(model()) + " --prompt cat --output " + quote(out / "a.jpg"));
  EXPECT_EQ(bad_out.code, 1);
  EXPECT_EQ(std::distance(fs::directory_iterator(out.path()), {}), 0) << "a failed run left files behind";
}

TEST_F(CliTinyModel, GeneratesNumberedPngsWithParametersDeterministically) {
  TempDir out;
  const std::string common = "generate --model " + quote(model()) +
                             " --prompt 'a red robot' --negative-prompt blurry --steps 3 --seed 5 --num-images 2"
                             " --width 32 --height 24 --scheduler euler-a --threads 1";
  auto first = run_tide(common + " --output " + quote(out / "robot.png"));
  ASSERT_EQ(first.code, 0) << first.output;
  ASSERT_TRUE(fs::exists(out / "robot-0.png"));
  ASSERT_TRUE(fs::exists(out / "robot-1.png"));
  auto image = tide::io::read_png(out / "robot-0.png");
  EXPECT_EQ(image.rgb8.sizes(), (at::IntArrayRef{24, 32, 3}));
  const std::string params = image.text.at("parameters");
  EXPECT_NE(params.find("a red robot"), std::string::npos) << params;
  EXPECT_NE(params.find("Negative prompt: blurry"), std::string::npos) << params;
  EXPECT_NE(params.find("Seed: 5"), std::string::npos) << params;
  EXPECT_NE(params.find("Steps: 3"), std::string::npos) << params;
  // The two images of a batch differ; the same command gives the same pixels.
  EXPECT_FALSE(at::equal(image.rgb8, tide::io::read_png(out / "robot-1.png").rgb8));
  auto second = run_tide(common + " --output " + quote(out / "again.png"));
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_TRUE(at::equal(image.rgb8, tide::io::read_png(out / "again-0.png").rgb8));
  auto info = run_tide("info " + quote(model()));
  EXPECT_EQ(info.code, 0) << info.output;
  EXPECT_NE(info.output.find("UNet2DConditionModel"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("PNDMScheduler"), std::string::npos) << info.output;
}

// --dtype bf16 runs the UNet in bf16 where the CPU has it natively; elsewhere (or with TIDE_NO_BF16=1) it
// says so and gives exactly the float32 image. The initial noise is float32 either way.
TEST_F(CliTinyModel, Bf16WhereTheCpuHasItFloat32WithANoteElsewhere) {
  TempDir out;
  const std::string common = "generate --model " + quote(model()) +
                             " --prompt 'a red robot' --steps 3 --seed 11 --width 32 --height 32 --threads 1";
  auto f32 = run_tide(common + " --output " + quote(out / "f32.png"));
  ASSERT_EQ(f32.code, 0) << f32.output;
  EXPECT_NE(f32.output.find("UNet in float32"), std::string::npos) << f32.output;
  const auto f32_image = tide::io::read_png(out / "f32.png");

  auto fallback = run_tide(common + " --dtype bf16 --output " + quote(out / "fallback.png"), "TIDE_NO_BF16=1 ");
  ASSERT_EQ(fallback.code, 0) << fallback.output;
  EXPECT_NE(fallback.output.find("running float32"), std::string::npos) << fallback.output;
  EXPECT_TRUE(at::equal(tide::io::read_png(out / "fallback.png").rgb8, f32_image.rgb8));

  auto bf16 = run_tide(common + " --dtype bf16 --output " + quote(out / "bf16.png"));
  ASSERT_EQ(bf16.code, 0) << bf16.output;
  const auto bf16_image = tide::io::read_png(out / "bf16.png");
  if (tide::runtime::bf16_supported()) {
    EXPECT_NE(bf16.output.find("UNet in bf16"), std::string::npos) << bf16.output;
    EXPECT_NE(bf16_image.text.at("parameters").find("Dtype: bf16"), std::string::npos);
    const at::Tensor diff = (bf16_image.rgb8.to(at::kFloat) - f32_image.rgb8.to(at::kFloat)).abs();
    EXPECT_GT(diff.max().item<float>(), 0.f) << "bf16 gave the float32 pixels: did it run in bf16?";
    EXPECT_LT(diff.mean().item<float>(), 3.f) << "bf16 strayed from the float32 image";
    std::cout << "bf16 vs float32 pixels: mean " << diff.mean().item<float>() << ", max " << diff.max().item<float>()
              << "\n";
  } else {
    tide::testing::note_path_not_exercised("the bf16 UNet", "this CPU has no AVX512-BF16 or AMX (the fallback ran)");
    EXPECT_NE(bf16.output.find("running float32"), std::string::npos) << bf16.output;
    EXPECT_TRUE(at::equal(bf16_image.rgb8, f32_image.rgb8));
  }

  auto bad = run_tide(common + " --dtype f16 --output " + quote(out / "bad.png"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("--dtype must be float32 or bf16"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(out / "bad.png"));
}

// --cpus pins like numactl -C; the default thread count follows the CPUs left.
TEST_F(CliTinyModel, CpusPinsAndBadListsAreClearErrors) {
  TempDir out;
  const std::string common = "generate --model " + quote(model()) + " --prompt cat --steps 1 --seed 1 --width 16 --height 16";
  auto pinned = run_tide(common + " --cpus 0 --output " + quote(out / "a.png"));
  ASSERT_EQ(pinned.code, 0) << pinned.output;
  EXPECT_NE(pinned.output.find("1 thread on CPUs 0"), std::string::npos) << pinned.output;
  EXPECT_TRUE(fs::exists(out / "a.png"));
  auto backwards = run_tide(common + " --cpus 3-1 --output " + quote(out / "b.png"));
  EXPECT_EQ(backwards.code, 1);
  EXPECT_NE(backwards.output.find("tide generate: --cpus expects CPU numbers"), std::string::npos) << backwards.output;
  auto absent = run_tide(common + " --cpus 1000 --output " + quote(out / "b.png"));
  EXPECT_EQ(absent.code, 1);
  EXPECT_NE(absent.output.find("CPU 1000 is not available"), std::string::npos) << absent.output;
  EXPECT_FALSE(fs::exists(out / "b.png"));
}

// The README's main job on the fixture pipeline: the PNG equals diffusers' reference.
TEST(CliFixtures, GenerateMatchesTheDiffusersReferenceImage) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  auto run = run_tide("generate --model " + quote(tide::testing::pipeline_dir("sd1-tiny")) +
                      " --prompt 'a bowl of fruit on a wooden table' --steps 20 --seed 3 --width 64 --height 64"
                      " --scheduler dpm++2m --output " + quote(out / "fruit.png"));
  ASSERT_EQ(run.code, 0) << run.output;
  auto ours = tide::io::read_png(out / "fruit.png").rgb8.to(at::kInt);
  auto reference = tide::io::read_png(tide::testing::reference_case("sd1_dpmpp2m_64x64") / "image_0.png").rgb8.to(at::kInt);
  ASSERT_EQ(ours.sizes(), reference.sizes());
  EXPECT_LE((ours - reference).abs().max().item<int>(), 2);
  EXPECT_LE((ours - reference).abs().to(at::kDouble).mean().item<double>(), 0.25);
}

// --vae-tiling on the fixture pipeline, whose VAE tiles are 128 px (64 latents): on tiles a larger image,
// a bad value fails before any work and writes nothing, and off equals the default at the default size.
TEST(CliFixtures, VaeTilingFlag) {
  TIDE_REQUIRE_FIXTURES();
  TempDir out;
  const std::string common = "generate --model " + quote(tide::testing::pipeline_dir("sd1-tiny")) +
                             " --prompt 'a lighthouse at dusk' --seed 11 --threads 1";
  // 144x136 px = 72x68 latents: 2 x 2 tiles. One step without guidance: the UNet is slow at this size.
  const std::string large = " --width 144 --height 136 --steps 1 --guidance 1";
  auto tiled = run_tide(common + large + " --vae-tiling on --output " + quote(out / "tiled.png"));
  ASSERT_EQ(tiled.code, 0) << tiled.output;
  EXPECT_NE(tiled.output.find("VAE decode in tiles of 128x128 px"), std::string::npos) << tiled.output;
  const at::Tensor tiled_image = tide::io::read_png(out / "tiled.png").rgb8;
  EXPECT_EQ(tiled_image.sizes(), (at::IntArrayRef{136, 144, 3}));
  // The same image untiled (auto: far below 1 MP) differs: the tiling took effect.
  auto untiled = run_tide(common + large + " --output " + quote(out / "untiled.png"));
  ASSERT_EQ(untiled.code, 0) << untiled.output;
  EXPECT_EQ(untiled.output.find("VAE decode in tiles"), std::string::npos) << untiled.output;
  EXPECT_FALSE(at::equal(tiled_image, tide::io::read_png(out / "untiled.png").rgb8));

  auto bogus = run_tide(common + " --steps 2 --vae-tiling bogus --output " + quote(out / "bogus.png"));
  EXPECT_EQ(bogus.code, 1);
  EXPECT_NE(bogus.output.find("--vae-tiling must be auto, on or off, got 'bogus'"), std::string::npos) << bogus.output;
  EXPECT_FALSE(fs::exists(out / "bogus.png"));
  EXPECT_EQ(std::distance(fs::directory_iterator(out.path()), {}), 2) << "a failed run left files behind";

  auto off = run_tide(common + " --steps 2 --vae-tiling off --output " + quote(out / "off.png"));
  ASSERT_EQ(off.code, 0) << off.output;
  auto by_default = run_tide(common + " --steps 2 --output " + quote(out / "default.png"));
  ASSERT_EQ(by_default.code, 0) << by_default.output;
  const at::Tensor off_image = tide::io::read_png(out / "off.png").rgb8;
  EXPECT_EQ(off_image.sizes(), (at::IntArrayRef{64, 64, 3}));
  EXPECT_TRUE(at::equal(off_image, tide::io::read_png(out / "default.png").rgb8));
}

}  // namespace
