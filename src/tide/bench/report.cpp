#include "tide/bench/report.h"

#include <cmath>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace tide::bench {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

StageSummary summarize(const BenchResult& r, int stage) {
  StageSummary s;
  std::vector<double> t, p;
  for (const auto& run : r.runs) t.push_back(run[stage]);
  for (const auto& run : r.plain_runs) p.push_back(run[stage]);
  if (!t.empty()) {
    s.median_s = median(t);
    s.min_s = *std::min_element(t.begin(), t.end());
    s.max_s = *std::max_element(t.begin(), t.end());
  }
  s.plain_median_s = median(p);
  return s;
}

nlohmann::json to_json(const BenchResult& r, const ReportContext& c) {
  using nlohmann::json;
  json stages = json::array();
  for (int i = 0; i < kStageCount; ++i) {
    const StageSummary s = summarize(r, i);
    const double gflops = s.median_s > 0 ? r.flops[i] * 1e-9 / s.median_s : 0;
    json st = {{"stage", stage_name(i)}, {"median_s", s.median_s}, {"min_s", s.min_s}, {"max_s", s.max_s},
               {"gflop", r.flops[i] * 1e-9}, {"gflops", gflops}};
    st["peak_fraction"] = c.peak_gflops > 0 ? json(gflops / c.peak_gflops) : json(nullptr);
    const bool plain = c.settings.baseline_label == "plain";
    st["plain_median_s"] = plain && s.plain_median_s > 0 ? json(s.plain_median_s) : json(nullptr);
    if (!plain) st["baseline_median_s"] = s.plain_median_s > 0 ? json(s.plain_median_s) : json(nullptr);
    st["speedup"] = s.plain_median_s > 0 && s.median_s > 0 ? json(s.plain_median_s / s.median_s) : json(nullptr);
    stages.push_back(st);
  }
  const auto& set = c.settings;
  json out = {{"stages", stages},
              {"peak_gflops", c.peak_gflops > 0 ? json(c.peak_gflops) : json(nullptr)},
              {"peak_isa", c.peak_isa},
              {"threads", c.threads},
              {"threads_adapt", c.settings.adapt_threads},
              {"threads_used", {r.threads_fewest, r.threads_most}},
              {"hog_processes", c.hog_processes},
              {"cpus", c.cpus},
              {"cpu_features", c.cpu_features},
              {"cpu_model", c.cpu_model},
              {"peak_rss_bytes", c.peak_rss_bytes},
              {"vae_decode_peak_rss_bytes",
               r.vae_decode_peak_rss_bytes > 0 ? json(r.vae_decode_peak_rss_bytes) : json(nullptr)},
              {"vae_decode_start_rss_bytes",
               r.vae_decode_peak_rss_bytes > 0 ? json(r.vae_decode_start_rss_bytes) : json(nullptr)},
              {"model", c.model},
              {"width", r.width},
              {"height", r.height},
              {"steps", set.steps},
              {"scheduler", set.scheduler},
              {"guidance", set.guidance},
              {"runs", set.runs},
              {"warmup", set.warmup},
              {"unet_calls", r.unet_calls},
              {"decoder", set.tiny_decoder ? c.decoder : "vae"},
              {"vae_tiling", models::vae_tiling_name(set.vae_tiling)},
              {"vae_tiled", r.vae_tiled},
              {"dtype", c.dtype},
              {"weights", c.weights},
              {"tome_ratio", set.tome.ratio},
              {"tome_max_downsample", set.tome.max_downsample},
              {"cache_interval", set.cache_interval},
              {"optimizations", set.optimizations.enabled()},
              {"compare_plain", set.compare_plain && set.baseline_label == "plain"}};
  out["one_shot"] = set.one_shot;
  if (set.one_shot) {
    out["one_shot_peak_rss_bytes"] = r.one_shot_peak_rss_bytes;
    if (set.compare_plain) out["baseline_one_shot_peak_rss_bytes"] = r.baseline_one_shot_peak_rss_bytes;
  }
  if (set.compare_plain) {
    out["baseline"] = set.baseline_label;
    out["baseline_optimizations"] = set.baseline.enabled();
    out["baseline_unet_calls"] = r.baseline_unet_calls;
    const BenchSettings other = compared_side(set);
    out["baseline_settings"] = {{"steps", other.steps}, {"scheduler", other.scheduler}, {"guidance", other.guidance},
                                {"cache_interval", other.cache_interval},
                                {"decoder", other.tiny_decoder ? c.decoder : "vae"}};
    // How far the measured side's numbers are from the baseline's (null: identical images).
    out["unet_relative_error"] = std::isfinite(r.unet_relative_error) ? json(r.unet_relative_error) : json(nullptr);
    out["image_psnr_db"] = std::isfinite(r.image_psnr_db) ? json(r.image_psnr_db) : json(nullptr);
  }
  return out;
}

std::string to_table(const BenchResult& r, const ReportContext& c) {
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%-13s %9s %9s %9s %9s %9s %6s", "stage", "median_s", "min_s", "max_s", "GFLOP",
                "GFLOP/s", "peak%");
  o << line << (r.plain_runs.empty() ? "" : "  baseline  speedup") << "\n";
  for (int i = 0; i < kStageCount; ++i) {
    const StageSummary s = summarize(r, i);
    const double gflops = s.median_s > 0 ? r.flops[i] * 1e-9 / s.median_s : 0;
    char peak[16] = "-";
    if (c.peak_gflops > 0) std::snprintf(peak, sizeof peak, "%.1f", 100 * gflops / c.peak_gflops);
    std::snprintf(line, sizeof line, "%-13s %9.3f %9.3f %9.3f %9.1f %9.1f %6s", stage_name(i), s.median_s, s.min_s,
                  s.max_s, r.flops[i] * 1e-9, gflops, peak);
    o << line;
    if (!r.plain_runs.empty()) {
      std::snprintf(line, sizeof line, " %9.3f %7.2fx", s.plain_median_s,
                    s.median_s > 0 ? s.plain_median_s / s.median_s : 0.0);
      o << line;
    }
    o << "\n";
  }
  if (!r.plain_runs.empty()) {
    o << "baseline: " << c.settings.baseline_label << "\n";
    if (!c.settings.compare_default) {
      char quality[160];
      std::snprintf(quality, sizeof quality, "against the baseline: UNet call relative error %.3g, image PSNR %.1f dB\n",
                    r.unet_relative_error, r.image_psnr_db);
      o << quality;
    }
  }
  o << "UNet calls per pass: " << r.unet_calls;
  if (!r.plain_runs.empty() && r.baseline_unet_calls != r.unet_calls) o << " (baseline: " << r.baseline_unet_calls << ")";
  o << "; peak RSS: " << c.peak_rss_bytes / (1 << 20) << " MiB";
  if (c.settings.one_shot) {
    o << " (one picture, models loaded for it alone: " << r.one_shot_peak_rss_bytes / (1 << 20) << " MiB";
    if (!r.plain_runs.empty()) o << ", baseline " << r.baseline_one_shot_peak_rss_bytes / (1 << 20) << " MiB";
    o << ")";
  }
  if (r.vae_decode_peak_rss_bytes > 0)
    o << " (during VAE decode: " << r.vae_decode_peak_rss_bytes / (1 << 20) << " MiB, "
      << r.vae_decode_start_rss_bytes / (1 << 20) << " MiB when it began)";
  o << "\nthreads: " << (r.threads_fewest == r.threads_most ? std::to_string(r.threads_most)
                                                             : std::to_string(r.threads_fewest) + " to " + std::to_string(r.threads_most))
    << (c.settings.adapt_threads ? " (adapting to the load, up to " + std::to_string(c.threads) + ")" : "")
    << (c.hog_processes > 0 ? "; beside " + std::to_string(c.hog_processes) + " busy process" +
                                  (c.hog_processes > 1 ? "es" : "") + " (--hog)"
                            : "");
  if (c.settings.tiny_decoder)
    o << "\ndecoder: " << c.decoder << " (the vae_decode stage times it)\n";
  else
    o << "\nVAE decode: " << (r.vae_tiled ? "tiled" : "untiled") << " (--vae-tiling "
      << models::vae_tiling_name(c.settings.vae_tiling) << ")\n";
  return o.str();
}

}  // namespace tide::bench
