// Timed text-to-image passes, stage by stage, as `tide bench` runs them: text encoding, one UNet call with
// the guidance batch, the whole denoising loop, VAE decode and the end-to-end time. With compare_plain,
// each pass is followed by the same pass with every optimization off, so both see the same machine state.
#pragma once
#include <c10/core/ScalarType.h>

#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tide/bench/bench_models.h"
#include "tide/runtime/optimizations.h"

#include "tide/nn/token_merging.h"

namespace tide::bench {

enum Stage { kTextEncoder, kUnet, kDenoise, kVaeDecode, kTotal, kStageCount };
const char* stage_name(int stage);  // "text_encoder", "unet", "denoise", "vae_decode", "total"

struct BenchSettings {
  int width = 0, height = 0;  // 0: the model's default size
  int steps = 20;
  std::string scheduler = "dpm++2m";
  double guidance = 7.5;  // > 1: the UNet runs the unconditional and conditional halves as one batch of 2
  int runs = 3;
  int warmup = 1;
  bool compare_plain = false;            // alternate every pass with a pass under `baseline`
  runtime::Optimizations optimizations;  // the measured side (Optimizations::plain() under --plain)
  runtime::Optimizations baseline = runtime::Optimizations::plain();  // the compared side
  std::string baseline_label = "plain";  // "plain", "without channels_last" (--compare-without), "float32"
  at::ScalarType dtype = at::kFloat;           // the UNet's compute dtype on the measured side
  at::ScalarType baseline_dtype = at::kFloat;  // and on the compared side
  models::VaeTiling vae_tiling = models::VaeTiling::kAuto;  // tiled VAE decode (--vae-tiling), as in tide generate
  nn::TokenMergingOptions tome;           // Token Merging on the measured side (off unless ratio > 0)
  nn::TokenMergingOptions baseline_tome;  // and on the compared side
  int cache_interval = 1;                 // DeepCache in the denoising loop of the measured side (1 = off)
  bool compare_cache = false;             // the compared side without it
  bool tiny_decoder = false;     // decode with BenchModels::tiny_decoder (--decoder, TAESD) instead of the VAE
  // The compared side is tide generate's default run instead: 20 steps dpm++2m, guidance 7.5, the VAE, no
  // DeepCache (with the measured side's optimizations): "how much faster than the default is this recipe".
  bool compare_default = false;
  // One picture per side, each side's models loaded for it alone and let go as tide generate lets them go:
  // the text encoders after encoding, int8 weights kept only packed after the first UNet call, the UNet
  // after the loop, the VAE read when it decodes (run_one_shot). Each side's peak resident memory is then
  // that of one tide generate run; its times are those of a cold pass.
  bool one_shot = false;
  int threads = 0;             // threads (0: the calling thread's count); with adapt_threads the most
  bool adapt_threads = false;  // as tide generate without --threads: fewer while other processes keep cores busy
};

// The settings the compared side's passes run with (baseline optimizations, dtype, ToMe; no DeepCache under
// compare_cache; the default recipe under compare_default).
BenchSettings compared_side(const BenchSettings& settings);

using StageTimes = std::array<double, kStageCount>;  // seconds

struct BenchResult {
  std::vector<StageTimes> runs, plain_runs;  // timed passes (plain_runs: compare_plain only)
  StageTimes flops{};                        // float ops per pass of each stage, analytic
  int unet_calls = 0;                        // per pass, in the denoising loop
  int baseline_unet_calls = 0;               // the same on the compared side
  int width = 0, height = 0;
  bool vae_tiled = false;                // the VAE decode stage ran tiled
  int64_t vae_decode_peak_rss_bytes = 0;  // most resident memory during the VAE decode stage (measured side,
                                          // all passes); 0 where it cannot be measured on its own
  int64_t vae_decode_start_rss_bytes = 0;  // resident memory when that stage began (in the same pass)
  // compare_plain: how far the measured side's numbers are from the compared side's, from the last pass of
  // each (same inputs): ‖a − b‖ / ‖b‖ of the single UNet call's output, and the PSNR (dB) of the decoded image
  // (pixels in [-1, 1] clamped, peak 2). NaN where not compared (and under compare_default, whose two sides
  // make different pictures on purpose); PSNR +inf for identical images.
  double unet_relative_error = std::nan("");
  double image_psnr_db = std::nan("");
  int threads_fewest = 0, threads_most = 0;  // the thread counts the passes ran with
  // one_shot: the most resident memory while each side's models were loaded and its picture made.
  int64_t one_shot_peak_rss_bytes = 0, baseline_one_shot_peak_rss_bytes = 0;
};

// Checks the settings against the models (sizes, scheduler name, steps); throws tide::Error.
BenchSettings resolve_settings(const BenchModels& models, BenchSettings settings);

// `on_pass(label, index)` is called before every pass ("warmup", "run", "plain warmup", "plain run"; the
// baseline's label for "plain").
BenchResult run_bench(BenchModels& models, const BenchSettings& settings,
                      const std::function<void(const std::string&, int)>& on_pass = nullptr);

// BenchSettings::one_shot: one pass of the measured side with `models` (loaded with defer_vae), which it lets
// go, then, with compare_plain, `load_baseline()`'s models for one pass of the compared side. The measured
// side's peak counts from the caller's runtime::reset_peak_rss_window() before loading `models`.
BenchResult run_one_shot(BenchModels models, const BenchSettings& settings,
                         const std::function<BenchModels()>& load_baseline,
                         const std::function<void(const std::string&, int)>& on_pass = nullptr);

// `--profile`: one UNet call with the guidance batch and one VAE decode on the measured side, broken down
// by operator (op_profile.h), as text.
std::string profile_report(BenchModels& models, const BenchSettings& settings);

// Float ops of one text encoder pass over `tokens` tokens (linear layers and attention products, ×2).
double clip_text_flops(const models::ClipTextConfig& config, int64_t tokens);

}  // namespace tide::bench
