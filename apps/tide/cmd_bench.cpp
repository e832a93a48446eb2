// tide bench: how fast text-to-image runs here, stage by stage, and against plain libtorch.
#include <iostream>
#include <optional>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "thread_flags.h"
#include "tide/bench/attention_bench.h"
#include "tide/bench/bench_models.h"
#include "tide/bench/conv_bench.h"
#include "tide/bench/cpu_hog.h"
#include "tide/bench/peak.h"
#include "tide/bench/report.h"
#include "tide/bench/runner.h"
#include "tide/io/atomic_file.h"
#include "tide/models/presets.h"
#include "tide/pipeline/model_source.h"
#include "tide/runtime/compute_dtype.h"
#include "tide/runtime/cpu_features.h"
#include "tide/runtime/error.h"
#include "tide/runtime/memory.h"
#include "tide/runtime/threads.h"
#include "tide/schedulers/scheduler.h"

namespace tide::cli {
namespace {

std::string joined(const std::vector<std::string>& names, const char* sep = ", ") {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : sep) + n;
  return s;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  io::write_file_atomically(path, j.dump(2) + "\n");
  std::cerr << "wrote " << path << "\n";
}

int run_attention(const Args& args, const bench::PeakResult& peak, int threads) {
  bench::AttentionBenchSettings s;
  s.batch = args.has("batch") ? args.get_int("batch") : 2;
  s.heads = args.get_int("heads");
  s.tokens = args.get_int("tokens");
  s.head_dim = args.get_int("head-dim");
  s.context_tokens = args.get_int("context-tokens");
  s.runs = args.get_int("runs");
  s.warmup = args.get_int("warmup");
  s.backward = args.get_flag("backward");
  s.strip_rows = args.get_int("strip-rows");
  s.half_products = args.get_flag("half");
  const auto r = bench::run_attention_bench(s);
  const double blocked = bench::median(r.blocked_s), plain = bench::median(r.plain_s);
  const double gflops = r.flops * 1e-9 / blocked, plain_gflops = r.flops * 1e-9 / plain;
  std::ostringstream o;
  o << "attention [" << s.batch << " x " << s.heads << " heads, " << s.tokens << " x "
    << (s.context_tokens ? s.context_tokens : s.tokens) << " tokens, head dim " << s.head_dim << "]"
    << (s.backward ? ", forward + backward" : "") << (s.half_products ? ", float16 products" : "") << ", " << threads << " threads: " << r.flops * 1e-9
    << " GFLOP per call\n"
    << "  blocked: " << blocked << " s median (" << gflops << " GFLOP/s)\n"
    << "  plain:   " << plain << " s median (" << plain_gflops << " GFLOP/s)\n"
    << "  speedup: " << plain / blocked << "x; max |blocked - plain| = " << r.max_abs_diff << "\n"
    << "  cpu time: blocked " << bench::median(r.blocked_cpu_s) << " s, plain " << bench::median(r.plain_cpu_s)
    << " s (all threads; " << bench::median(r.plain_cpu_s) / bench::median(r.blocked_cpu_s) << "x)\n"
    << "  memory:  blocked " << bench::median(r.blocked_peak_bytes) / (1 << 20) << " MiB, plain "
    << bench::median(r.plain_peak_bytes) / (1 << 20) << " MiB median peak above the resident memory before the call\n";
  if (peak.gflops > 0) o << "  peak:    " << peak.gflops << " GFLOP/s, blocked at " << 100 * gflops / peak.gflops << "%\n";
  std::cout << o.str();
  if (args.has("json")) {
    nlohmann::json j = {{"attention",
                         {{"batch", s.batch}, {"heads", s.heads}, {"tokens", s.tokens},
                          {"context_tokens", s.context_tokens ? s.context_tokens : s.tokens}, {"head_dim", s.head_dim},
                          {"gflop", r.flops * 1e-9}, {"blocked_median_s", blocked}, {"plain_median_s", plain},
                          {"blocked_s", r.blocked_s}, {"plain_s", r.plain_s}, {"speedup", plain / blocked},
                          {"gflops", gflops}, {"max_abs_diff", r.max_abs_diff},
                          {"blocked_cpu_s", r.blocked_cpu_s}, {"plain_cpu_s", r.plain_cpu_s},
                          {"backward", s.backward}, {"half_products", s.half_products}, {"blocked_peak_bytes", r.blocked_peak_bytes},
                          {"plain_peak_bytes", r.plain_peak_bytes}}},
                        {"peak_gflops", peak.gflops > 0 ? nlohmann::json(peak.gflops) : nlohmann::json(nullptr)},
                        {"threads", threads},
                        {"cpu_features", runtime::cpu_features()},
                        {"peak_rss_bytes", runtime::peak_rss_bytes()}};
    write_json(args.get("json"), j);
  }
  return 0;
}

int run_conv(const Args& args, const bench::PeakResult& peak, int threads) {
  bench::ConvBenchSettings s;
  s.batch = args.has("batch") ? args.get_int("batch") : 1;
  s.in_channels = args.get_int("channels");
  s.out_channels = args.has("out-channels") ? args.get_int("out-channels") : s.in_channels;
  s.size = args.get_int("size");
  s.kernel_size = args.get_int("kernel-size");
  s.stride = args.get_int("stride");
  s.runs = args.get_int("runs");
  s.warmup = args.get_int("warmup");
  s.backward = args.get_flag("backward");
  const auto r = bench::run_conv_bench(s);
  const double onednn = bench::median(r.onednn_s);
  auto line = [&](const char* name, const std::vector<double>& times) {
    std::ostringstream o;
    const double t = bench::median(times);
    o << "  " << name << t << " s median (" << r.flops * 1e-9 / t << " GFLOP/s";
    if (peak.gflops > 0) o << ", " << 100 * r.flops * 1e-9 / t / peak.gflops << "% of peak";
    o << "), " << onednn / t << "x oneDNN\n";
    return o.str();
  };
  std::ostringstream o;
  o << s.kernel_size << "x" << s.kernel_size << " convolution" << (s.backward ? "'s input gradient" : "")
    << ", stride " << s.stride << " [" << s.batch << " x "
    << s.in_channels << " -> " << s.out_channels << " channels, " << s.size << " x " << s.size << "], " << threads
    << " threads: " << r.flops * 1e-9 << " GFLOP per call\n"
    << line("oneDNN:   ", r.onednn_s);
  if (!r.direct_s.empty())
    o << line("direct:   ", r.direct_s) << "    max |direct - oneDNN| = " << r.direct_max_abs_diff << "\n";
  else
    o << "  direct:   not available for this shape or CPU\n";
  if (!r.winograd_s.empty())
    o << line("winograd: ", r.winograd_s) << "    max |winograd - oneDNN| = " << r.winograd_max_abs_diff << "\n"
      << (r.winograd_few_tiles_s.empty() ? ""
                                     : line("winograd, few tiles: ", r.winograd_few_tiles_s) +
                                           "    max |winograd, few tiles - oneDNN| = " +
                                           std::to_string(r.winograd_few_tiles_max_abs_diff) + "\n")
      << (r.winograd_f4_s.empty() ? ""
                                  : line("winograd F(4x4), few tiles: ", r.winograd_f4_s) +
                                        "    max |winograd F(4x4) - oneDNN| = " +
                                        std::to_string(r.winograd_f4_max_abs_diff) + "\n");
  o << (s.backward ? "  the frozen-weight backward takes: " : "  the Conv2d module takes: ") << r.path << "\n";
  if (peak.gflops > 0) o << "  peak:     " << peak.gflops << " GFLOP/s\n";
  std::cout << o.str();
  if (args.has("json")) {
    auto median_or_null = [](const std::vector<double>& v) {
      return v.empty() ? nlohmann::json(nullptr) : nlohmann::json(bench::median(v));
    };
    nlohmann::json j = {{"conv",
                         {{"batch", s.batch}, {"in_channels", s.in_channels}, {"out_channels", s.out_channels},
                          {"size", s.size}, {"kernel_size", s.kernel_size}, {"stride", s.stride},
                          {"gflop", r.flops * 1e-9}, {"onednn_median_s", onednn}, {"onednn_s", r.onednn_s},
                          {"direct_median_s", median_or_null(r.direct_s)}, {"direct_s", r.direct_s},
                          {"direct_max_abs_diff", r.direct_max_abs_diff},
                          {"winograd_median_s", median_or_null(r.winograd_s)}, {"winograd_s", r.winograd_s},
                          {"winograd_max_abs_diff", r.winograd_max_abs_diff},
                          {"winograd_pays_off", r.winograd_pays_off},
                          {"winograd_few_tiles_median_s", median_or_null(r.winograd_few_tiles_s)},
                          {"winograd_few_tiles_s", r.winograd_few_tiles_s},
                          {"winograd_few_tiles_max_abs_diff", r.winograd_few_tiles_max_abs_diff},
                          {"winograd_few_tiles_pays_off", r.winograd_few_tiles_pays_off},
                          {"winograd_f4_median_s", median_or_null(r.winograd_f4_s)},
                          {"winograd_f4_s", r.winograd_f4_s},
                          {"winograd_f4_max_abs_diff", r.winograd_f4_max_abs_diff},
                          {"backward", s.backward}, {"path", r.path}}},
                        {"peak_gflops", peak.gflops > 0 ? nlohmann::json(peak.gflops) : nlohmann::json(nullptr)},
                        {"threads", threads},
                        {"cpu_features", runtime::cpu_features()}};
    write_json(args.get("json"), j);
  }
  return 0;
}

}  // namespace

int run_bench(int argc, char** argv) {
  Args args("bench", "tide bench (--arch NAME | --model PATH) [options]",
            "Times text-to-image stage by stage (text encoder, one UNet call with the guidance batch, the\n"
            "denoising loop, VAE decode, end to end) and reports GFLOP/s, the share of the machine's FMA peak\n"
            "and, with --compare-plain, the speed-up over plain libtorch measured in the same process.");
  args.option("arch", "NAME", "built-in architecture with random weights, no download: " +
                                  joined(models::presets::preset_names()))
      .option("model", "PATH", "a diffusers model folder instead of --arch")
      .option("width", "PX", "image width", "the model's sample size")
      .option("height", "PX", "image height", "the model's sample size")
      .option("steps", "N", "denoising steps", "20")
      .option("scheduler", "NAME", "one of: " + joined(schedulers::scheduler_names()), "dpm++2m")
      .option("guidance", "G", "guidance scale; above 1 the UNet runs a batch of 2 (uncond + cond)", "7.5")
      .option("runs", "N", "timed passes; the median, min and max are reported", "3")
      .option("warmup", "N", "untimed passes first", "1")
      .option("dtype", "TYPE", "the UNet's compute dtype: float32 | bf16 (bf16 needs AMX or AVX512-BF16; elsewhere "
              "float32 with a note)", "float32")
      .option("weights", "FORMAT",
              "how Linear and Conv2d weights are kept in memory: f32, f16, bf16 (widened per layer when used) or "
              "int8 (per-channel scales; int8 kernels where the CPU has them)",
              "f32; with --model, int8 for a folder written by tide quantize")
      .option("compare-weights", "FORMAT",
              "like --compare-plain, but the compared side keeps every optimization and stores its weights as FORMAT "
              "(a second copy of the models is loaded)")
      .flag("one-shot",
            "make one picture per side the way tide generate makes it and report its peak resident memory: the models "
            "loaded for it alone, the text encoders let go after encoding, int8 weights kept only packed, the UNet let "
            "go before the VAE decode, the VAE read when it decodes. With a --compare-* flag the compared side's "
            "models load after the measured side's are gone. Its times are one cold pass (--runs, --warmup and "
            "--profile do not apply)")
      .option("compare-dtype", "TYPE",
              "like --compare-plain, but the compared side keeps every optimization and runs the UNet in TYPE")
      .flag("peak", "measure this machine's float32 FMA peak and report each stage's share of it")
      .flag("plain", "switch every optimization off: plain libtorch module code, as diffusers runs it")
      .flag("compare-plain", "after every pass run the same pass with --plain; print the speed-up per stage")
      .option("compare-without", "NAMES",
              "like --compare-plain, but the compared side keeps every optimization except these (comma-separated: " +
                  joined(runtime::Optimizations::names(), ",") + ")")
      .option("without", "NAMES", "switch these optimizations off (comma-separated)")
      .option("vae-tiling", "auto|on|off",
              "tiled VAE decode as in tide generate: on = whenever the latent is larger than one tile, auto = only "
              "for images of more than 1024x1024 pixels, off = never",
              "auto")
      .option("tome", "RATIO", "Token Merging ratio on the measured side (tomesd's defaults otherwise: max_downsample 1, "
              "2x2 cells, self-attention only)", "0")
      .option("tome-max-downsample", "M", "with --tome: merge in blocks at most M times downsampled", "1")
      .flag("compare-tome", "after every pass run the same pass without Token Merging; print the speed-up per stage")
      .option("cache-interval", "N", "DeepCache in the denoising loop: the whole UNet every N-th step only", "1")
      .flag("compare-cache", "after every pass run the same pass without DeepCache; print the speed-up per stage")
      .option("decoder", "NAME|DIR",
              "decode with a tiny autoencoder instead of the VAE (the vae_decode stage times it): taesd or taesdxl "
              "(their architecture with random weights, no download) or a diffusers AutoencoderTiny folder")
      .flag("compare-default",
            "after every pass run tide generate's default recipe (20 steps dpm++2m, guidance 7.5, the VAE, no "
            "DeepCache) with the same optimizations; print how much faster these settings are, stage by stage")
      .option("json", "FILE", "also write the results as JSON (written atomically)")
      .flag("profile", "after the timed passes, break one UNet call and one VAE decode down by operator")
      .flag("attention", "time attention alone, blocked kernel vs plain, instead of the pipeline")
      .option("batch", "N", "--attention: batch (2 = guidance batch); --conv: batch", "2 with --attention, 1 with --conv")
      .option("heads", "N", "--attention: heads", "8")
      .option("tokens", "N", "--attention: query tokens (4096 = 64x64 latents, SD 1.5 at 512 px)", "4096")
      .option("head-dim", "N", "--attention: head dimension", "40")
      .option("context-tokens", "N", "--attention: key/value tokens; 0 = self-attention", "0")
      .flag("backward", "--attention: time forward + backward (training): the blocked kernel's strip-wise backward "
            "vs plain autograd; --conv: time the input gradient (training against frozen weights, weight channels "
            "last) with oneDNN's backward-data kernel, the direct kernel and the Winograd kernels instead of the forward")
      .option("strip-rows", "N", "--attention --backward: query rows per backward strip; 0 = the kernel's choice", "0")
      .flag("half", "--attention: the blocked kernel's two products with float16 multiplies, as int8 UNets run "
            "attention on CPUs with AVX512-FP16 (an error elsewhere); max |blocked - plain| then shows their rounding")
      .flag("conv", "time one convolution instead of the pipeline: oneDNN's kernel, tide's direct kernel (weight "
                    "stored HWIO) and, for 3x3 at stride 1, the Winograd kernels; names the kernel tide takes")
      .option("channels", "N", "--conv: input channels", "512")
      .option("out-channels", "N", "--conv: output channels", "--channels")
      .option("size", "PX", "--conv: height and width of the map (64 = the VAE decoder's mid block at 512 px)", "64")
      .option("kernel-size", "N", "--conv: kernel height and width, odd (padding N / 2)", "3")
      .option("stride", "N", "--conv: stride", "1");
  args.option("hog", "N",
              "keep N cores busy beside the benchmark with N spinning processes, to measure how tide shares a "
              "machine that is not idle (compare with --threads 1 and without --threads)",
              "0");
  add_thread_flags(args);
  if (!args.parse(argc, argv)) return 0;

  const int threads = apply_thread_flags(args, "tide bench");
  std::string dtype_note;
  const at::ScalarType dtype =
      runtime::usable_compute_dtype(runtime::parse_compute_dtype(args.get("dtype"), "tide bench: --dtype"), &dtype_note);
  if (!dtype_note.empty()) std::cerr << dtype_note << "\n";
  bench::PeakResult peak;
  if (args.get_flag("peak")) {
    peak = bench::measure_fma_peak();
    std::cerr << "FMA peak: " << peak.gflops << " GFLOP/s float32 (" << peak.isa << ", " << peak.threads
              << " threads)\n";
  }
  if (args.get_flag("attention") && args.get_flag("conv"))
    throw Error("tide bench: --attention and --conv exclude each other");
  if (args.get_flag("attention")) return run_attention(args, peak, threads);
  if (args.get_flag("conv")) return run_conv(args, peak, threads);

  if (args.has("arch") == args.has("model"))
    throw Error("tide bench: give exactly one of --arch (" + joined(models::presets::preset_names()) +
                ") or --model PATH");
  if (args.get_flag("plain") && args.get_flag("compare-plain"))
    throw Error("tide bench: --plain and --compare-plain exclude each other (--compare-plain already runs both)");

  bench::BenchSettings s;
  if (args.has("width")) s.width = args.get_int("width");
  if (args.has("height")) s.height = args.get_int("height");
  s.steps = args.get_int("steps");
  s.scheduler = args.get("scheduler");
  s.guidance = args.get_double("guidance");
  s.runs = args.get_int("runs");
  s.warmup = args.get_int("warmup");
  s.compare_plain = args.get_flag("compare-plain");
  s.vae_tiling = models::parse_vae_tiling(args.get("vae-tiling"), "tide bench: --vae-tiling");
  if (args.get_flag("plain")) s.optimizations = runtime::Optimizations::plain();
  if (args.has("without")) s.optimizations = s.optimizations.without(args.get("without"));
  if (args.has("compare-without")) {
    if (s.compare_plain) throw Error("tide bench: --compare-plain and --compare-without exclude each other");
    s.compare_plain = true;
    s.baseline = s.optimizations.without(args.get("compare-without"));
    s.baseline_label = "without " + args.get("compare-without");
  }
  s.dtype = s.baseline_dtype = dtype;
  if (args.has("compare-dtype")) {
    if (s.compare_plain) throw Error("tide bench: --compare-dtype excludes --compare-plain and --compare-without");
    s.compare_plain = true;
    s.baseline = s.optimizations;
    s.baseline_dtype = runtime::parse_compute_dtype(args.get("compare-dtype"), "tide bench: --compare-dtype");
    s.baseline_label = runtime::compute_dtype_name(s.baseline_dtype);
  }

  std::optional<nn::WeightFormat> weights, baseline_weights;
  if (args.has("weights")) weights = nn::parse_weight_format(args.get("weights"), "tide bench: --weights");
  if (args.has("compare-weights")) {
    if (s.compare_plain) throw Error("tide bench: --compare-weights excludes the other --compare-* flags");
    baseline_weights = nn::parse_weight_format(args.get("compare-weights"), "tide bench: --compare-weights");
    s.compare_plain = true;
    s.baseline = s.optimizations;
    s.baseline_dtype = s.dtype;
    s.baseline_label = "weights " + nn::weight_format_name(*baseline_weights);
  }

  s.tome.ratio = args.get_double("tome");
  s.tome.max_downsample = args.get_int("tome-max-downsample");
  if (!(s.tome.ratio >= 0 && s.tome.ratio < 1)) throw Error("tide bench: --tome must be in [0, 1)");
  if (s.tome.max_downsample < 1) throw Error("tide bench: --tome-max-downsample must be at least 1");
  s.baseline_tome = s.tome;  // both sides merge tokens, unless --compare-tome compares with and without
  if (args.get_flag("compare-tome")) {
    s.baseline_tome = bench::BenchSettings().baseline_tome;
    // With --compare-weights: against the other weights without ToMe (e.g. int8 + ToMe against float32).
    if (s.compare_plain && !baseline_weights)
      throw Error("tide bench: --compare-tome excludes the other --compare-* flags but --compare-weights");
    if (!s.tome.enabled()) throw Error("tide bench: --compare-tome needs --tome RATIO");
    s.baseline_label = baseline_weights ? s.baseline_label + " without ToMe" : "without ToMe";
    s.compare_plain = true;
    s.baseline = s.optimizations;
    s.baseline_dtype = s.dtype;
  }

  s.cache_interval = args.get_int("cache-interval");
  if (s.cache_interval < 1) throw Error("tide bench: --cache-interval must be at least 1 (1 = off)");
  if (args.get_flag("compare-cache")) {
    if (s.compare_plain) throw Error("tide bench: --compare-cache excludes the other --compare-* flags");
    if (s.cache_interval < 2) throw Error("tide bench: --compare-cache needs --cache-interval 2 or more");
    s.compare_plain = s.compare_cache = true;
    s.baseline = s.optimizations;
    s.baseline_dtype = s.dtype;
    s.baseline_label = "without DeepCache";
  }

  s.tiny_decoder = args.has("decoder");
  if (args.get_flag("compare-default")) {
    if (s.compare_plain) throw Error("tide bench: --compare-default excludes the other --compare-* flags");
    s.compare_plain = s.compare_default = true;
    s.baseline = s.optimizations;
    s.baseline_dtype = s.dtype;
    s.baseline_tome = s.tome;
    s.baseline_label = "the default: 20 steps dpm++2m, guidance 7.5, VAE decode";
  }

  s.one_shot = args.get_flag("one-shot");
  if (s.one_shot && (args.has("runs") || args.has("warmup") || args.get_flag("profile")))
    throw Error("tide bench: --one-shot makes one cold pass per side; it excludes --runs, --warmup and --profile");
  if (s.one_shot) {
    s.runs = 1;
    s.warmup = 0;
  }
  if (args.has("arch")) {
    const auto names = models::presets::preset_names();
    if (std::find(names.begin(), names.end(), args.get("arch")) == names.end())
      throw Error("tide bench: unknown --arch '" + args.get("arch") + "'; choose one of: " + joined(names));
  }
  const std::filesystem::path folder = args.has("model") ? pipeline::resolve_model(args.get("model")) : "";
  // Both sides decode with the same one.
  const models::AutoencoderTiny tiny_decoder = s.tiny_decoder ? bench::tiny_decoder_from(args.get("decoder"))
                                                              : models::AutoencoderTiny(nullptr);
  // One side's models, with the weights stored as `format` (unset: as the files store them).
  auto load_models = [&](std::optional<nn::WeightFormat> format) {
    bench::BenchModels m = args.has("arch")
                               ? bench::models_from_preset(args.get("arch"), format.value_or(nn::WeightFormat::kFloat32), s.one_shot)
                               : bench::models_from_folder(folder, format, s.one_shot);
    m.tiny_decoder = tiny_decoder;
    return m;
  };
  if (s.one_shot) {
    runtime::hand_freed_memory_back_promptly();  // as tide generate
    runtime::reset_peak_rss_window();            // the measured side's peak counts from its load
  }
  bench::BenchModels models = load_models(weights);
  if (baseline_weights && !s.one_shot) models.baseline = std::make_shared<bench::BenchModels>(load_models(baseline_weights));
  s = bench::resolve_settings(models, s);

  s.threads = threads;
  s.adapt_threads = threads_adapt_to_load(args);
  const int hog_processes = args.get_int("hog");
  const int most_hogs = 4 * runtime::usable_cores();
  if (hog_processes < 0 || hog_processes > most_hogs)
    throw Error("tide bench: --hog must be between 0 and " + std::to_string(most_hogs) + ", got " +
                std::to_string(hog_processes));

  bench::ReportContext ctx;
  ctx.hog_processes = hog_processes;
  ctx.model = models.description;
  ctx.settings = s;
  ctx.threads = threads;
  if (args.has("cpus")) ctx.cpus = args.get("cpus");
  ctx.peak_gflops = peak.gflops;
  ctx.peak_isa = peak.isa;
  ctx.cpu_features = runtime::cpu_features();
  ctx.cpu_model = runtime::cpu_model_name();
  ctx.dtype = runtime::compute_dtype_name(dtype);
  ctx.weights = models.weights;
  if (s.tiny_decoder) ctx.decoder = args.get("decoder");
  std::cerr << "bench " << ctx.model << ": " << s.width << "x" << s.height << ", " << s.steps << " steps "
            << s.scheduler << ", guidance " << s.guidance << ", " << thread_summary(args, threads) << ", UNet in "
            << runtime::compute_dtype_name(dtype) << ", weights " << models.weights << ", optimizations: "
            << (s.optimizations.enabled().empty() ? "none (plain)" : joined(s.optimizations.enabled()))
            << (s.tiny_decoder ? ", decoder " + ctx.decoder : std::string(", VAE tiling ") + models::vae_tiling_name(s.vae_tiling))
            << (s.cache_interval > 1 ? ", DeepCache interval " + std::to_string(s.cache_interval) : "") << "\n"
            << "cpu: " << ctx.cpu_model << " [" << joined(ctx.cpu_features, " ") << "]\n";

  std::optional<bench::CpuHog> hog;
  if (hog_processes > 0) {
    hog.emplace(hog_processes);
    std::cerr << "--hog: " << hog_processes << " busy process" << (hog_processes > 1 ? "es" : "")
              << " beside the benchmark\n";
  }
  auto on_pass = [&](const std::string& label, int index) { std::cerr << "  " << label << " " << index + 1 << "\n"; };
  const auto result = s.one_shot ? bench::run_one_shot(std::move(models), s, [&] { return load_models(baseline_weights ? baseline_weights : weights); }, on_pass)
                                 : bench::run_bench(models, s, on_pass);
  hog.reset();
  ctx.peak_rss_bytes = runtime::peak_rss_bytes();
  std::cout << bench::to_table(result, ctx);
  if (args.has("json")) write_json(args.get("json"), bench::to_json(result, ctx));
  if (args.get_flag("profile")) std::cout << bench::profile_report(models, s);
  return 0;
}

}  // namespace tide::cli
