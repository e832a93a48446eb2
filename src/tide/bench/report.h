// Bench results as a table for people and as JSON for scripts:
// {"stages": [{"stage", "median_s", "min_s", "max_s", "gflop", "gflops", "peak_fraction", "plain_median_s",
//   "speedup"}], "peak_gflops", "threads", "threads_adapt", "threads_used": [fewest, most], "hog_processes",
//   "cpu_features", "peak_rss_bytes", "vae_decode_peak_rss_bytes",
//   "vae_decode_start_rss_bytes", "vae_tiled", "decoder", "one_shot", ...settings; with a compared side
//   "baseline", "baseline_unet_calls", "baseline_settings"; one-shot: "one_shot_peak_rss_bytes" (and
//   "baseline_one_shot_peak_rss_bytes")}.
// gflop: work of one pass of the stage; gflops: achieved rate at the median; null where not measured.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tide/bench/runner.h"

namespace tide::bench {

struct ReportContext {
  std::string model;  // "sd15 (random weights)" or a folder
  BenchSettings settings;
  int threads = 0;
  std::string cpus = "all";  // --cpus, as given
  int hog_processes = 0;      // --hog: busy processes beside the benchmark
  double peak_gflops = 0;  // 0: not measured (--peak not given)
  std::string peak_isa;
  std::vector<std::string> cpu_features;
  std::string cpu_model;
  std::string dtype = "float32";
  std::string weights = "f32";  // how the measured side stores Linear/Conv2d weights (--weights)
  std::string decoder = "vae";  // --decoder as given (taesd, taesdxl or a folder) where settings.tiny_decoder
  int64_t peak_rss_bytes = 0;
};

struct StageSummary {
  double median_s = 0, min_s = 0, max_s = 0;
  double plain_median_s = 0;  // 0 without compare_plain
};
StageSummary summarize(const BenchResult& result, int stage);

double median(std::vector<double> values);

nlohmann::json to_json(const BenchResult& result, const ReportContext& context);
std::string to_table(const BenchResult& result, const ReportContext& context);

}  // namespace tide::bench
