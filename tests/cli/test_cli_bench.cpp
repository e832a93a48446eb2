// tide bench as a user runs it: --help, clear errors, and a tiny timed run whose JSON has every stage.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/kernels/gemm_cpu.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/runtime/cpu_features.h"
#include "tide/runtime/threads.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::TempDir;

using tide::testing::quote;
using tide::testing::Run;

Run tide_bench(const std::string& args, const std::string& env = "") {
  return tide::testing::run_tide("bench " + args, env);
}

// The tests that time a real (tiny) pipeline share one model folder.
class CliBenchTinyModel : public tide::testing::TinyPipelineSuite {};

TEST(CliBench, HelpExplainsEveryFlag) {
  auto help = tide_bench("--help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--arch", "--model", "--width", "--height", "--steps", "--scheduler", "--runs", "--warmup",
                           "--threads", "--peak", "--plain", "--compare-plain", "--json", "--dtype", "--compare-dtype", "--profile", "--cpus", "--attention",
                           "--backward", "--strip-rows",
                           "--vae-tiling", "--decoder", "--compare-default", "--cache-interval", "--compare-cache", "--hog",
                           "--one-shot"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
}

TEST(CliBench, BadInvocationsFailWithClearMessages) {
  auto neither = tide_bench("");
  EXPECT_EQ(neither.code, 1);
  EXPECT_NE(neither.output.find("exactly one of --arch"), std::string::npos) << neither.output;
  auto unknown = tide_bench("--arch sd9");
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.output.find("sd15"), std::string::npos) << unknown.output;
  auto both = tide_bench("--arch sd15 --plain --compare-plain");
  EXPECT_EQ(both.code, 1);
  EXPECT_NE(both.output.find("exclude each other"), std::string::npos) << both.output;
  auto dtype = tide_bench("--arch sd15 --dtype f16");
  EXPECT_EQ(dtype.code, 1);
  EXPECT_NE(dtype.output.find("--dtype"), std::string::npos) << dtype.output;
  auto tiling = tide_bench("--arch sd15 --vae-tiling always");
  EXPECT_EQ(tiling.code, 1);
  EXPECT_NE(tiling.output.find("--vae-tiling must be auto, on or off, got 'always'"), std::string::npos)
      << tiling.output;
}

TEST_F(CliBenchTinyModel, TinyModelWritesJsonWithAllStages) {
  TempDir dir;
  const fs::path json_path = dir.path() / "result.json";
  auto run = tide_bench("--model " + quote(model()) +
                        " --width 32 --height 32 --steps 2 --runs 2 --warmup 1 --threads 1 --compare-plain --json " +
                        quote(json_path));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("speedup"), std::string::npos) << run.output;
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j.at("stages").size(), 5u);
  const char* names[] = {"text_encoder", "unet", "denoise", "vae_decode", "total"};
  for (size_t i = 0; i < 5; ++i) {
    const auto& s = j["stages"][i];
    EXPECT_EQ(s.at("stage"), names[i]);
    EXPECT_GT(s.at("median_s").get<double>(), 0);
    EXPECT_LE(s.at("min_s").get<double>(), s.at("median_s").get<double>());
    EXPECT_GE(s.at("max_s").get<double>(), s.at("median_s").get<double>());
    EXPECT_GT(s.at("gflop").get<double>(), 0) << names[i];
    EXPECT_GT(s.at("plain_median_s").get<double>(), 0);
    EXPECT_TRUE(s.at("peak_fraction").is_null());  // no --peak
  }
  EXPECT_EQ(j.at("unet_calls"), 2);
  EXPECT_EQ(j.at("threads"), 1);
  EXPECT_TRUE(j.at("cpu_features").is_array());
  EXPECT_GT(j.at("peak_rss_bytes").get<int64_t>(), 0);
  EXPECT_GT(j.at("vae_decode_peak_rss_bytes").get<int64_t>(), 0);
  EXPECT_LE(j.at("vae_decode_peak_rss_bytes").get<int64_t>(), j.at("peak_rss_bytes").get<int64_t>());
  EXPECT_GT(j.at("vae_decode_start_rss_bytes").get<int64_t>(), 0);
  EXPECT_LE(j.at("vae_decode_start_rss_bytes").get<int64_t>(), j.at("vae_decode_peak_rss_bytes").get<int64_t>());
  EXPECT_EQ(j.at("vae_tiling"), "auto");
  EXPECT_FALSE(j.at("vae_tiled").get<bool>());
  // UNet FLOPs per call times the calls = the denoising loop's.
  EXPECT_NEAR(j["stages"][2]["gflop"].get<double>(), 2 * j["stages"][1]["gflop"].get<double>(), 1e-9);
}

// --one-shot: each side's models loaded for one picture alone, let go as tide generate lets them go (text
// encoders after encoding, int8 weights kept only packed, the UNet before the decode, the VAE read when it
// decodes): the same numbers as the repeated passes, and a peak per side.
TEST_F(CliBenchTinyModel, OneShotComputesWhatTheRepeatedPassesDoAndReportsEachSidesPeak) {
  TempDir dir;
  const std::string common = "--model " + quote(model()) +
                             " --weights int8 --compare-weights f32 --width 32 --height 32 --steps 2 --threads 1 ";
  auto repeated = tide_bench(common + "--runs 1 --warmup 0 --json " + quote(dir.path() / "repeated.json"));
  ASSERT_EQ(repeated.code, 0) << repeated.output;
  auto once = tide_bench(common + "--one-shot --json " + quote(dir.path() / "once.json"));
  ASSERT_EQ(once.code, 0) << once.output;
  EXPECT_NE(once.output.find("models loaded for it alone"), std::string::npos) << once.output;
  std::ifstream a(dir.path() / "repeated.json"), b(dir.path() / "once.json");
  const auto r = nlohmann::json::parse(a), o = nlohmann::json::parse(b);
  EXPECT_FALSE(r.at("one_shot").get<bool>());
  EXPECT_FALSE(r.contains("one_shot_peak_rss_bytes"));
  ASSERT_TRUE(o.at("one_shot").get<bool>());
  EXPECT_EQ(o.at("runs"), 1);
  EXPECT_EQ(o.at("warmup"), 0);
  EXPECT_EQ(o.at("unet_calls"), 2);
  EXPECT_EQ(o.at("baseline_unet_calls"), 2);
  for (int i = 0; i < 5; ++i) {
    EXPECT_GT(o["stages"][i].at("median_s").get<double>(), 0) << i;
    EXPECT_GT(o["stages"][i].at("baseline_median_s").get<double>(), 0) << i;
  }
  // The int8 UNet computing from its packed weights alone and the VAE read only when decoding give what the
  // models kept whole give: the same distance to float32.
  ASSERT_TRUE(o.at("unet_relative_error").is_number()) << o.dump();
  ASSERT_TRUE(o.at("image_psnr_db").is_number()) << o.dump();
  EXPECT_NEAR(o.at("unet_relative_error").get<double>(), r.at("unet_relative_error").get<double>(), 1e-9);
  EXPECT_NEAR(o.at("image_psnr_db").get<double>(), r.at("image_psnr_db").get<double>(), 1e-6);
  const int64_t peak = o.at("peak_rss_bytes"), side = o.at("one_shot_peak_rss_bytes"),
                baseline = o.at("baseline_one_shot_peak_rss_bytes");
  EXPECT_GT(side, 0);
  EXPECT_GT(baseline, 0);
  EXPECT_LE(side, peak);
  EXPECT_LE(baseline, peak);

  auto runs = tide_bench(common + "--one-shot --runs 2");
  EXPECT_EQ(runs.code, 1);
  EXPECT_NE(runs.output.find("--one-shot makes one cold pass per side"), std::string::npos) << runs.output;
}

// --hog keeps every core busy beside the run; without --threads (and OMP_NUM_THREADS) the count adapts and
// drops to one thread; with --threads it stays fixed. Bad hog counts are refused.
TEST_F(CliBenchTinyModel, HogBesideTheRunAndThreadsAdaptingToIt) {
  TempDir dir;
  const fs::path json_path = dir.path() / "result.json";
  const int cores = tide::runtime::usable_cores();
  const std::string common = "--model " + quote(model()) + " --width 32 --height 32 --steps 3 --runs 1 --warmup 0 ";
  auto adapting = tide_bench(common + "--hog " + std::to_string(cores) + " --json " + quote(json_path),
                             "env -u OMP_NUM_THREADS ");
  ASSERT_EQ(adapting.code, 0) << adapting.output;
  EXPECT_NE(adapting.output.find("(adapting to the load, up to "), std::string::npos) << adapting.output;
  EXPECT_NE(adapting.output.find("busy process"), std::string::npos) << adapting.output;
  {
    std::ifstream in(json_path);
    const auto j = nlohmann::json::parse(in);
    EXPECT_TRUE(j.at("threads_adapt").get<bool>());
    EXPECT_EQ(j.at("hog_processes"), cores);
    EXPECT_EQ(j.at("threads_used"), nlohmann::json::array({1, 1})) << "every core was busy: one thread";
  }
  auto fixed = tide_bench(common + "--hog 1 --threads 2 --json " + quote(json_path), "env -u OMP_NUM_THREADS ");
  ASSERT_EQ(fixed.code, 0) << fixed.output;
  {
    std::ifstream in(json_path);
    const auto j = nlohmann::json::parse(in);
    EXPECT_FALSE(j.at("threads_adapt").get<bool>());
    EXPECT_EQ(j.at("threads_used"), nlohmann::json::array({2, 2}));
  }
  for (const char* bad : {"-1", "100000", "many"}) {
    auto run = tide_bench(common + "--hog " + bad);
    EXPECT_EQ(run.code, 1) << bad;
    EXPECT_NE(run.output.find("--hog"), std::string::npos) << run.output;
  }
}

// The tiny VAE's tiles are 32 px (sample_size 32, f = 2): 48x32 px is larger than one tile.
TEST_F(CliBenchTinyModel, VaeTilingOnTilesTheDecode) {
  TempDir dir;
  const fs::path json_path = dir.path() / "result.json";
  auto run = tide_bench("--model " + quote(model()) +
                        " --width 48 --height 32 --steps 1 --runs 1 --warmup 0 --threads 1 --vae-tiling on --json " +
                        quote(json_path));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("VAE decode: tiled (--vae-tiling on)"), std::string::npos) << run.output;
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("vae_tiling"), "on");
  EXPECT_TRUE(j.at("vae_tiled").get<bool>());
  EXPECT_GT(j["stages"][3]["median_s"].get<double>(), 0);
}

// --compare-dtype: the same optimizations, the compared side's UNet in float32. The measured side runs
// bf16 where the CPU has it natively (float32 with a note elsewhere).
TEST_F(CliBenchTinyModel, CompareDtypeRunsBothSides) {
  TempDir dir;
  const fs::path json_path = dir.path() / "result.json";
  auto run = tide_bench("--model " + quote(model()) +
                        " --width 32 --height 32 --steps 1 --runs 1 --warmup 0 --threads 1 --dtype bf16"
                        " --compare-dtype float32 --json " + quote(json_path));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("baseline: float32"), std::string::npos) << run.output;
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("dtype"), tide::runtime::bf16_supported() ? "bf16" : "float32");
  EXPECT_EQ(j.at("baseline"), "float32");
  EXPECT_EQ(j.at("compare_plain"), false);
  for (const auto& s : j.at("stages")) EXPECT_GT(s.at("baseline_median_s").get<double>(), 0) << s.at("stage");
  auto both = tide_bench("--arch sd15 --compare-plain --compare-dtype float32");
  EXPECT_EQ(both.code, 1);
  EXPECT_NE(both.output.find("--compare-dtype excludes"), std::string::npos) << both.output;
}

// --compare-tome: the same pass with and without Token Merging; fewer attention FLOPs on the ToMe side.
TEST_F(CliBenchTinyModel, CompareTomeRunsBothSides) {
  TempDir dir;
  const fs::path json_path = dir.path() / "result.json";
  auto run = tide_bench("--model " + quote(model()) + " --width 32 --height 32 --steps 1 --runs 1 --warmup 0 "
                        "--threads 1 --tome 0.5 --compare-tome --json " + quote(json_path));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("baseline: without ToMe"), std::string::npos) << run.output;
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("tome_ratio").get<double>(), 0.5);
  EXPECT_EQ(j.at("baseline"), "without ToMe");
  for (const auto& s : j.at("stages")) EXPECT_GT(s.at("baseline_median_s").get<double>(), 0) << s.at("stage");
  auto no_ratio = tide_bench("--model " + quote(model()) + " --compare-tome");
  EXPECT_EQ(no_ratio.code, 1);
  EXPECT_NE(no_ratio.output.find("--compare-tome needs --tome"), std::string::npos) << no_ratio.output;
}

// --decoder times a tiny autoencoder in the decode stage; --compare-default runs the 20-step DPM++ recipe
// with guidance and the VAE beside a few-step, guidance-free one.
TEST_F(CliBenchTinyModel, TinyDecoderAgainstTheDefaultRecipe) {
  TempDir dir;
  const fs::path taesd = tide::testing::make_tiny_taesd(dir.path() / "taesd");
  const fs::path json_path = dir.path() / "result.json";
  auto run = tide_bench("--model " + quote(model()) + " --width 32 --height 32 --steps 2 --scheduler lcm --guidance 1"
                        " --runs 1 --warmup 0 --threads 1 --decoder " + quote(taesd) + " --compare-default --json " +
                        quote(json_path));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("baseline: the default: 20 steps dpm++2m"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("UNet calls per pass: 2 (baseline: 20)"), std::string::npos) << run.output;
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("decoder"), taesd.string());
  EXPECT_EQ(j.at("unet_calls"), 2);
  EXPECT_EQ(j.at("baseline_unet_calls"), 20);
  EXPECT_EQ(j.at("baseline_settings"), (nlohmann::json{{"steps", 20}, {"scheduler", "dpm++2m"}, {"guidance", 7.5},
                                                       {"cache_interval", 1}, {"decoder", "vae"}}));
  EXPECT_TRUE(j.at("image_psnr_db").is_null());  // two recipes make different pictures on purpose
  for (const auto& s : j.at("stages")) EXPECT_GT(s.at("baseline_median_s").get<double>(), 0) << s.at("stage");
  // The tiny decoder's work is counted, and is far less than the VAE's.
  auto vae = tide_bench("--model " + quote(model()) + " --width 32 --height 32 --steps 1 --runs 1 --warmup 0 "
                        "--threads 1 --json " + quote(dir.path() / "vae.json"));
  ASSERT_EQ(vae.code, 0) << vae.output;
  std::ifstream vae_in(dir.path() / "vae.json");
  const auto v = nlohmann::json::parse(vae_in);
  EXPECT_EQ(v.at("decoder"), "vae");
  EXPECT_GT(j["stages"][3]["gflop"].get<double>(), 0);
  EXPECT_LT(j["stages"][3]["gflop"].get<double>(), v["stages"][3]["gflop"].get<double>());

  // The other weights of --compare-weights decode with the same tiny decoder.
  auto weights = tide_bench("--model " + quote(model()) + " --width 32 --height 32 --steps 1 --runs 1 --warmup 0 "
                            "--threads 1 --decoder " + quote(taesd) + " --compare-weights f16");
  ASSERT_EQ(weights.code, 0) << weights.output;
  EXPECT_NE(weights.output.find("decoder: " + taesd.string()), std::string::npos) << weights.output;

  auto twice = tide_bench("--model " + quote(model()) + " --compare-plain --compare-default");
  EXPECT_EQ(twice.code, 1);
  EXPECT_NE(twice.output.find("--compare-default excludes"), std::string::npos) << twice.output;
  auto missing = tide_bench("--model " + quote(model()) + " --decoder " + quote(dir.path() / "nowhere"));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
  // The built-in TAESD architecture scales by 8; the tiny pipeline's VAE by 2.
  auto mismatch = tide_bench("--model " + quote(model()) + " --decoder taesd");
  EXPECT_EQ(mismatch.code, 1);
  EXPECT_NE(mismatch.output.find("scales by 8"), std::string::npos) << mismatch.output;
}

// --profile breaks a UNet call and a VAE decode down by operator, the blocked attention kernel named.
TEST_F(CliBenchTinyModel, ProfileListsOperators) {
  auto run = tide_bench("--model " + quote(model()) +
                        " --width 128 --height 128 --steps 1 --runs 1 --warmup 0 --threads 1 --profile");
  ASSERT_EQ(run.code, 0) << run.output;
  for (const char* expected : {"UNet call (batch 2)", "VAE decode", "aten::conv2d", "tide::blocked_attention",
                               "(not in an operator)", "share"})
    EXPECT_NE(run.output.find(expected), std::string::npos) << expected << "\n" << run.output;
  // The VAE decoder's 32-channel convolutions on the 128×128 image take the Winograd path where it pays off.
  if (tide::kernels::winograd_conv3x3_pays_off(1, 32, 32, 128, 128)) {
    EXPECT_NE(run.output.find("tide::winograd_conv3x3"), std::string::npos) << run.output;
  }
}

// With --tome the profiled call is the merged one the timed passes run: the matching shows up in it.
TEST_F(CliBenchTinyModel, ProfileOfATokenMergingRunMergesToo) {
  const std::string common = "--model " + quote(model()) + " --width 128 --height 128 --steps 1 --runs 1 --warmup 0 --threads 1 --profile";
  auto merged = tide_bench(common + " --tome 0.5");
  ASSERT_EQ(merged.code, 0) << merged.output;
  EXPECT_NE(merged.output.find("UNet call (batch 2, ToMe)"), std::string::npos) << merged.output;
  EXPECT_NE(merged.output.find("tide::token_merging"), std::string::npos) << merged.output;
  auto plain = tide_bench(common);
  ASSERT_EQ(plain.code, 0) << plain.output;
  EXPECT_EQ(plain.output.find("tide::token_merging"), std::string::npos) << plain.output;
}

TEST(CliBench, AttentionModeReportsSpeedupAndPeak) {
  TempDir dir;
  auto run = tide_bench("--attention --tokens 100 --heads 2 --head-dim 8 --runs 1 --threads 1 --peak --json " +
                        quote(dir.path() / "a.json"));
  ASSERT_EQ(run.code, 0) << run.output;
  std::ifstream in(dir.path() / "a.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_LT(j.at("attention").at("max_abs_diff").get<double>(), 1e-4);
  EXPECT_GT(j.at("peak_gflops").get<double>(), 0);
}

// DNNL_MAX_CPU_ISA=AVX2 caps tide's own kernels and reports as it caps oneDNN's: no AVX-512 or AMX feature is
// listed or used, and the peak is measured with AVX2 where the CPU has it.
TEST(CliBench, MaxIsaAvx2HidesAvx512AndAmx) {
  TempDir dir;
  auto run = tide::testing::run_command("DNNL_MAX_CPU_ISA=AVX2 " + std::string(TIDE_BINARY) +
                                        " bench --attention --tokens 64 --heads 2 --head-dim 8 --runs 1 --threads 1 "
                                        "--peak --json " + quote(dir.path() / "a.json"));
  ASSERT_EQ(run.code, 0) << run.output;
  std::ifstream in(dir.path() / "a.json");
  const auto j = nlohmann::json::parse(in);
  for (const auto& feature : j.at("cpu_features")) {
    const std::string f = feature.get<std::string>();
    EXPECT_TRUE(f.rfind("avx512", 0) != 0 && f.rfind("amx", 0) != 0) << f;
  }
  EXPECT_LT(j.at("attention").at("max_abs_diff").get<double>(), 1e-4);
  if (tide::runtime::has_cpu_feature("avx2") && tide::runtime::has_cpu_feature("fma")) {
    EXPECT_NE(run.output.find("avx2"), std::string::npos) << run.output;
    EXPECT_EQ(run.output.find("avx512"), std::string::npos) << run.output;
  }
}

// --conv: one convolution, oneDNN's kernel, the direct one and the Winograd kernels (chunked, few tiles with 2×2
// and 4×4 output tiles), with the same outputs.
TEST(CliBench, ConvModeComparesWinogradWithDirect) {
  TempDir dir;
  // Runs `tide bench --conv ARGS --warmup 0 --threads 1` and returns its output and the JSON's "conv" object.
  auto conv_bench = [&](const std::string& args, const std::string& name) {
    auto run = tide_bench("--conv " + args + " --warmup 0 --threads 1 --json " + quote(dir.path() / name));
    EXPECT_EQ(run.code, 0) << run.output;
    std::ifstream in(dir.path() / name);
    return std::make_pair(run.output, in ? nlohmann::json::parse(in).at("conv") : nlohmann::json::object());
  };
  const auto [output, j] = conv_bench("--channels 16 --out-channels 24 --size 20 --batch 2 --runs 2", "c.json");
  ASSERT_FALSE(j.empty());
  EXPECT_NE(output.find("x oneDNN"), std::string::npos) << output;
  EXPECT_EQ(j.at("in_channels"), 16);
  EXPECT_EQ(j.at("out_channels"), 24);
  EXPECT_EQ(j.at("kernel_size"), 3);
  EXPECT_EQ(j.at("onednn_s").size(), 2u);
  const bool avx2 = tide::kernels::gemm_f32_available();
  EXPECT_EQ(j.at("winograd_s").size(), 2u);  // the Winograd kernels run on any CPU (libtorch's products without AVX2)
  EXPECT_EQ(j.at("direct_s").size(), avx2 ? 2u : 0u);
  EXPECT_NEAR(j.at("gflop").get<double>(), 2.0 * 2 * 24 * 20 * 20 * 16 * 9 * 1e-9, 1e-12);
  EXPECT_LT(j.at("winograd_max_abs_diff").get<double>(), 1e-4);
  EXPECT_LT(j.at("direct_max_abs_diff").get<double>(), 1e-4);
  EXPECT_EQ(j.at("winograd_few_tiles_s").size(), 2u);
  EXPECT_LT(j.at("winograd_few_tiles_max_abs_diff").get<double>(), 1e-4);
  EXPECT_EQ(j.at("winograd_f4_s").size(), 2u);
  EXPECT_LT(j.at("winograd_f4_max_abs_diff").get<double>(), 1e-4);
  EXPECT_NE(output.find("winograd F(4x4), few tiles: "), std::string::npos) << output;
  // 50 tiles of 4×4 outputs: the few-tiles kernel with F(4×4) tiles, so neither F(2×2) kernel.
  EXPECT_FALSE(j.at("winograd_few_tiles_pays_off").get<bool>());
  EXPECT_FALSE(j.at("winograd_pays_off").get<bool>());
  EXPECT_NE(output.find(avx2 ? "takes: winograd F(4x4), few tiles" : "takes: oneDNN"), std::string::npos) << output;
  EXPECT_EQ(j.at("path"), avx2 ? "winograd F(4x4), few tiles" : "oneDNN");
  EXPECT_FALSE(j.at("backward").get<bool>());
  // 20 output channels: no direct kernel, so the module keeps the weight channels last, which the few-tiles
  // kernel reads as well.
  const auto jn = conv_bench("--channels 16 --out-channels 20 --size 20 --runs 1", "n.json").second;
  ASSERT_FALSE(jn.empty());
  EXPECT_EQ(jn.at("direct_s").size(), 0u);
  EXPECT_EQ(jn.at("winograd_few_tiles_s").size(), 1u);
  EXPECT_LT(jn.at("winograd_few_tiles_max_abs_diff").get<double>(), 1e-4);
  EXPECT_LT(jn.at("winograd_f4_max_abs_diff").get<double>(), 1e-4);
  EXPECT_EQ(jn.at("path"), avx2 ? "winograd F(4x4), few tiles" : "oneDNN");
  // A strided 3×3: no Winograd, the direct kernel against oneDNN.
  const auto js = conv_bench("--channels 16 --out-channels 24 --size 9 --stride 2 --runs 1", "s.json").second;
  ASSERT_FALSE(js.empty());
  EXPECT_EQ(js.at("winograd_s").size(), 0u);
  EXPECT_EQ(js.at("winograd_few_tiles_s").size(), 0u);
  EXPECT_EQ(js.at("winograd_f4_s").size(), 0u);
  EXPECT_EQ(js.at("direct_s").size(), avx2 ? 1u : 0u);
  EXPECT_NEAR(js.at("gflop").get<double>(), 2.0 * 24 * 5 * 5 * 16 * 9 * 1e-9, 1e-12);
  EXPECT_LT(js.at("direct_max_abs_diff").get<double>(), 1e-4);
  EXPECT_EQ(js.at("path"), avx2 ? "direct" : "oneDNN");
  // --backward: the input gradient; on a 4×4 map (256 → 128 channels) the direct kernel's, against oneDNN's
  // backward-data kernel and both Winograd kernels on the flipped weight, all with the same answer.
  const auto [back_output, jb] = conv_bench("--channels 128 --out-channels 256 --size 4 --runs 2 --backward", "b.json");
  ASSERT_FALSE(jb.empty());
  EXPECT_TRUE(jb.at("backward").get<bool>());
  EXPECT_NE(back_output.find("input gradient"), std::string::npos) << back_output;
  EXPECT_EQ(jb.at("path"), avx2 ? "direct" : "oneDNN");
  EXPECT_NE(back_output.find(avx2 ? "frozen-weight backward takes: direct" : "takes: oneDNN"), std::string::npos)
      << back_output;
  EXPECT_EQ(jb.at("direct_s").size(), avx2 ? 2u : 0u);
  EXPECT_EQ(jb.at("winograd_s").size(), 2u);
  EXPECT_LT(jb.at("direct_max_abs_diff").get<double>(), 1e-4);
  EXPECT_LT(jb.at("winograd_max_abs_diff").get<double>(), 1e-4);
  EXPECT_LT(jb.at("winograd_few_tiles_max_abs_diff").get<double>(), 1e-4);
  EXPECT_LT(jb.at("winograd_f4_max_abs_diff").get<double>(), 1e-4);
  EXPECT_GT(jb.at("onednn_median_s").get<double>(), 0);
  auto even = tide_bench("--conv --kernel-size 2");
  EXPECT_EQ(even.code, 1);
  EXPECT_NE(even.output.find("must be odd"), std::string::npos) << even.output;
  auto both = tide_bench("--conv --attention");
  EXPECT_EQ(both.code, 1);
  EXPECT_NE(both.output.find("exclude each other"), std::string::npos) << both.output;
  auto bad = tide_bench("--conv --channels 0");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("must be positive"), std::string::npos) << bad.output;
}

// --attention --backward: forward and backward, the blocked kernel's strip-wise backward (several strips
// here) against plain autograd, with each side's peak memory.
TEST(CliBench, AttentionBackwardModeComparesGradients) {
  TempDir dir;
  auto run = tide_bench("--attention --backward --strip-rows 16 --tokens 100 --context-tokens 77 --heads 2 "
                        "--head-dim 8 --runs 1 --warmup 0 --threads 1 --json " + quote(dir.path() / "a.json"));
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("forward + backward"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("memory:"), std::string::npos) << run.output;
  std::ifstream in(dir.path() / "a.json");
  const auto j = nlohmann::json::parse(in).at("attention");
  EXPECT_TRUE(j.at("backward").get<bool>());
  EXPECT_LT(j.at("max_abs_diff").get<double>(), 1e-4);
  EXPECT_EQ(j.at("blocked_peak_bytes").size(), 1u);
  EXPECT_EQ(j.at("plain_peak_bytes").size(), 1u);
}

}  // namespace
