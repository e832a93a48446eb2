#include "tide/bench/runner.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "tide/bench/op_profile.h"
#include "tide/models/deep_cache.h"
#include "tide/nn/layers.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/error.h"
#include "tide/runtime/flop_counter.h"
#include "tide/runtime/load_aware_threads.h"
#include "tide/runtime/memory.h"
#include "tide/schedulers/scheduler.h"

namespace tide::bench {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A fixed prompt's ids: BOS, a few words, EOS, EOS padding to 77 (only the shape matters for speed).
// CLIP vocabularies end with BOS, EOS (49406, 49407 in the released ones).
at::Tensor prompt_ids(bool empty, int64_t vocab_size) {
  std::vector<int64_t> ids(77, vocab_size - 1);
  ids[0] = vocab_size - 2;
  if (!empty)
    for (int i = 1; i <= 8; ++i) ids[i] = (320 + 37 * i) % (vocab_size - 2);
  return at::tensor(ids, at::kLong).unsqueeze(0);  // [1, 77]
}

struct Conditioning {
  at::Tensor context;   // [2, 77, D] (uncond, cond) or [1, 77, D] without guidance
  at::Tensor pooled;    // SDXL [B, P]
  at::Tensor time_ids;  // SDXL [B, 6]
};

// As StableDiffusionPipeline::generate conditions the UNet; returns the text encoder passes it made.
Conditioning encode(BenchModels& m, bool guided, int height, int width, int* encoder_passes) {
  auto one = [&](bool empty, at::Tensor* pooled) -> at::Tensor {
    const at::Tensor ids = prompt_ids(empty, m.text_encoder->config().vocab_size);
    if (!m.is_xl()) {
      ++*encoder_passes;
      return m.text_encoder->forward(ids).last_hidden_state;
    }
    const at::Tensor first = m.text_encoder->forward(ids).penultimate;
    auto second = m.text_encoder_2->forward(ids);
    *pooled = second.text_embeds;
    ++*encoder_passes;
    return at::cat({first, second.penultimate}, -1);  // [1, 77, D1 + D2]
  };
  Conditioning c;
  c.context = one(false, &c.pooled);
  if (guided) {
    at::Tensor uncond_pooled;
    const at::Tensor uncond = m.is_xl() && m.force_zeros_for_empty_prompt
                                  ? (uncond_pooled = at::zeros_like(c.pooled), at::zeros_like(c.context))
                                  : one(true, &uncond_pooled);
    c.context = at::cat({uncond, c.context});
    if (m.is_xl()) c.pooled = at::cat({uncond_pooled, c.pooled});
  }
  if (m.is_xl()) {
    c.time_ids = at::tensor({double(height), double(width), 0.0, 0.0, double(height), double(width)}, at::kFloat)
                     .unsqueeze(0)
                     .repeat({c.context.size(0), 1});
  }
  return c;
}

// What a pass computed, for comparing the two sides' numbers.
struct PassOutputs {
  at::Tensor unet;   // the single UNet call's output
  at::Tensor image;  // the decoded image
};

// Token Merging for a pass's UNet calls, as the pipeline installs it (none without --tome).
void install_token_merging(std::optional<nn::TokenMerging>& tome, BenchModels& m, const BenchSettings& s) {
  if (!s.tome.enabled()) return;
  tome.emplace(s.tome, 0);
  tome->set_latent_size(s.height / m.vae_scale_factor(), s.width / m.vae_scale_factor());
}

// One pass over all stages; `flops` receives the analytic work of each stage; `result` (optional) the
// resident memory during the VAE decode, when this pass's peak is the highest so far; `outputs` what it computed.
StageTimes run_pass(BenchModels& m, const BenchSettings& s, StageTimes* flops, int* unet_calls, BenchResult* result,
                    PassOutputs* outputs, runtime::LoadAwareThreads* load) {
  c10::InferenceMode inference;
  // The thread count before every stage and step, as the pipeline sets it.
  const int limit = s.threads > 0 ? s.threads : at::get_num_threads();
  auto adapt_threads = [&] { runtime::apply_thread_count(load, limit); };
  adapt_threads();
  const bool guided = s.guidance > 1.0;
  std::optional<nn::TokenMerging> tome;
  install_token_merging(tome, m, s);
  nn::TokenMergingScope tome_scope(tome ? &*tome : nullptr);
  StageTimes t{};
  const auto start = Clock::now();

  int encoder_passes = 0;
  Conditioning c = encode(m, guided, s.height, s.width, &encoder_passes);
  t[kTextEncoder] = since(start);
  double text_flops = clip_text_flops(m.text_encoder->config(), 77);
  if (m.is_xl()) text_flops += clip_text_flops(m.text_encoder_2->config(), 77);
  if (s.one_shot) {  // as tide generate: once the prompt is encoded the text encoders only hold memory
    m.text_encoder = models::ClipTextModel(nullptr);
    m.text_encoder_2 = models::ClipTextModel(nullptr);
    runtime::return_free_memory();
  }

  const int f = m.vae_scale_factor();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  at::Tensor latents = at::randn({1, m.unet->config().in_channels, s.height / f, s.width / f}, generator, at::kFloat);

  // The UNet calls, as the pipeline does, but from the first call of every pass: bench times the steady state
  // (the pipeline's very first call runs outside it, leaving the heap to the later calls' activations; so
  // does a one-shot pass's, which also keeps the int8 weights only packed, as tide generate does).
  std::optional<runtime::FreedMemoryReuse> reuse;
  if (s.one_shot) nn::keep_int8_weights_packed_only(*m.unet);
  else reuse.emplace();
  // One UNet call with the guidance batch, outside the end-to-end time.
  adapt_threads();
  const auto unet_start = Clock::now();
  {
    runtime::FlopCount count;
    outputs->unet = m.unet->forward(guided ? at::cat({latents, latents}) : latents, 999.0, c.context, c.pooled, c.time_ids);
    (*flops)[kUnet] = count.flops();
  }
  t[kUnet] = since(unet_start);
  if (!reuse) reuse.emplace();

  const auto denoise_start = Clock::now();
  auto scheduler = schedulers::make_scheduler(s.scheduler, m.scheduler_config, {});
  scheduler->set_timesteps(s.steps);
  latents = latents * scheduler->init_noise_sigma();
  int calls = 0;
  {
    runtime::FlopCount count;
    std::optional<models::DeepCache> deep_cache;
    if (s.cache_interval > 1) deep_cache.emplace(s.cache_interval);
    models::DeepCacheScope deep_cache_scope(deep_cache ? &*deep_cache : nullptr);
    for (double step_t : scheduler->timesteps()) {
      adapt_threads();
      if (deep_cache) deep_cache->begin_call(calls);
      at::Tensor input = scheduler->scale_model_input(guided ? at::cat({latents, latents}) : latents, step_t);
      at::Tensor noise = m.unet->forward(input, step_t, c.context, c.pooled, c.time_ids);
      ++calls;
      if (guided) {
        auto halves = noise.chunk(2);
        noise = halves[0] + s.guidance * (halves[1] - halves[0]);
      }
      latents = scheduler->step(noise, step_t, latents, generator);
    }
    (*flops)[kDenoise] = count.flops();
  }
  t[kDenoise] = since(denoise_start);

  reuse.reset();
  if (s.one_shot) m.unet = models::UNet2DConditionModel(nullptr);  // before the decode, as tide generate does
  runtime::return_free_memory();  // as StableDiffusionPipeline::decode does
  if (m.read_vae && !s.tiny_decoder) {
    c10::InferenceMode loading_outside_inference_mode(false);  // parameters stay ordinary tensors
    m.vae = m.read_vae();
    m.read_vae = nullptr;
  }
  const int64_t start_rss = runtime::current_rss_bytes();
  // A one-shot pass's peak is measured over the whole pass (run_one_shot), not per stage.
  const bool window = result && !s.one_shot && runtime::reset_peak_rss_window();
  adapt_threads();
  const auto vae_start = Clock::now();
  {
    runtime::FlopCount count;
    // Random weights can drive latents far from the usual range; keep the decoder's input finite.
    const at::Tensor finite = at::nan_to_num(latents, 0.0, 1e4, -1e4);
    outputs->image = s.tiny_decoder ? m.tiny_decoder->decode(finite / m.tiny_decoder->config().scaling_factor)
                                    : m.vae->decode(finite / m.vae->config().scaling_factor, s.vae_tiling);
    (*flops)[kVaeDecode] = count.flops();
  }
  t[kVaeDecode] = since(vae_start);
  if (window) {
    const int64_t peak = runtime::window_peak_rss_bytes();
    if (peak > result->vae_decode_peak_rss_bytes) {
      result->vae_decode_peak_rss_bytes = peak;
      result->vae_decode_start_rss_bytes = start_rss;
    }
  }
  t[kTotal] = since(start) - t[kUnet];

  (*flops)[kTextEncoder] = text_flops * encoder_passes;
  (*flops)[kTotal] = (*flops)[kTextEncoder] + (*flops)[kDenoise] + (*flops)[kVaeDecode];
  *unet_calls = calls;
  return t;
}

// Puts the models in the state a side measures: the UNet in `dtype`, convolution weights stored in the
// layout of the current optimizations. Done before a pass, outside its timing.
void prepare_side(BenchModels& m, at::ScalarType dtype) {
  nn::set_compute_dtype(*m.unet, dtype);
  nn::store_conv_weights_for_current_layout(*m.unet);
  if (!m.read_vae) nn::store_conv_weights_for_current_layout(*m.vae);  // a deferred VAE gets its layout when read
  if (m.tiny_decoder) nn::store_conv_weights_for_current_layout(*m.tiny_decoder);
}

// The thread counts the passes ran with, and how far the two sides' outputs are apart.
void finish(const BenchSettings& s, const runtime::LoadAwareThreads* load, int threads_before,
            const PassOutputs& measured, const PassOutputs& compared, BenchResult* result) {
  if (load) {
    result->threads_fewest = load->fewest();
    result->threads_most = load->most();
  } else {
    result->threads_fewest = result->threads_most = s.threads > 0 ? s.threads : threads_before;
  }
  at::set_num_threads(threads_before);
  if (s.compare_plain && !s.compare_default && compared.unet.defined()) {
    const at::Tensor a = measured.unet.to(at::kDouble), b = compared.unet.to(at::kDouble);
    result->unet_relative_error = (a - b).norm().item<double>() / b.norm().item<double>();
    const at::Tensor ia = measured.image.to(at::kDouble).clamp(-1, 1), ib = compared.image.to(at::kDouble).clamp(-1, 1);
    const double mse = (ia - ib).pow(2).mean().item<double>();
    result->image_psnr_db = mse > 0 ? 10.0 * std::log10(4.0 / mse) : INFINITY;
  }
}

}  // namespace

const char* stage_name(int stage) {
  static const char* names[kStageCount] = {"text_encoder", "unet", "denoise", "vae_decode", "total"};
  return names[stage];
}

double clip_text_flops(const models::ClipTextConfig& c, int64_t tokens) {
  const double d = double(c.hidden_size), inter = double(c.intermediate_size), l = double(tokens);
  const double per_layer = l * (4 * d * d + 2 * d * inter) + 2 * l * l * d;  // q,k,v,out + mlp + q·kᵀ, probs·v
  double macs = double(c.num_hidden_layers) * per_layer;
  if (c.with_projection) macs += d * double(c.projection_dim);
  return 2 * macs;
}

BenchSettings resolve_settings(const BenchModels& m, BenchSettings s) {
  const int f = m.vae_scale_factor();
  if (s.width == 0) s.width = m.default_size();
  if (s.height == 0) s.height = m.default_size();
  if (s.width < f || s.height < f || s.width % f || s.height % f)
    throw Error("tide bench: width and height must be positive multiples of " + std::to_string(f) + ", got " +
                std::to_string(s.width) + "x" + std::to_string(s.height));
  if (s.steps < 1) throw Error("tide bench: --steps must be at least 1, got " + std::to_string(s.steps));
  if (s.runs < 1) throw Error("tide bench: --runs must be at least 1, got " + std::to_string(s.runs));
  if (s.warmup < 0) throw Error("tide bench: --warmup must be 0 or more, got " + std::to_string(s.warmup));
  schedulers::make_scheduler(s.scheduler, m.scheduler_config, {});  // throws on an unknown name
  if (s.tiny_decoder && !m.tiny_decoder) throw Error("tide bench: no tiny decoder loaded (--decoder)");
  if (m.tiny_decoder) {
    const auto& t = m.tiny_decoder->config();
    if (t.latent_channels != m.unet->config().out_channels || t.scale_factor() != f)
      throw Error("tide bench: the tiny decoder takes " + std::to_string(t.latent_channels) +
                  " latent channels and scales by " + std::to_string(t.scale_factor()) + ", the model's latents have " +
                  std::to_string(m.unet->config().out_channels) + " channels and its VAE scales by " + std::to_string(f));
  }
  return s;
}

BenchSettings compared_side(const BenchSettings& s) {
  BenchSettings c = s;
  c.optimizations = s.baseline;
  c.dtype = s.baseline_dtype;
  c.tome = s.baseline_tome;
  if (s.compare_cache) c.cache_interval = 1;
  if (s.compare_default) {
    const BenchSettings defaults;
    c.steps = defaults.steps;
    c.scheduler = defaults.scheduler;
    c.guidance = defaults.guidance;
    c.cache_interval = 1;
    c.tiny_decoder = false;
  }
  return c;
}

std::string profile_report(BenchModels& m, const BenchSettings& raw) {
  const BenchSettings s = resolve_settings(m, raw);
  runtime::OptimizationsGuard guard(s.optimizations);
  prepare_side(m, s.dtype);
  c10::InferenceMode inference;
  const bool guided = s.guidance > 1.0;
  int encoder_passes = 0;
  const Conditioning c = encode(m, guided, s.height, s.width, &encoder_passes);
  const int f = m.vae_scale_factor();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  const at::Tensor latents =
      at::randn({1, m.unet->config().in_channels, s.height / f, s.width / f}, generator, at::kFloat);
  const at::Tensor input = guided ? at::cat({latents, latents}) : latents;
  std::string out = "UNet call (batch " + std::to_string(input.size(0)) + (s.tome.enabled() ? ", ToMe" : "") + "):\n";
  {
    std::optional<nn::TokenMerging> tome;  // the same merged call the timed passes run
    install_token_merging(tome, m, s);
    nn::TokenMergingScope tome_scope(tome ? &*tome : nullptr);
    // As the timed passes run it: freed memory kept for the next call, else every fresh block's page faults
    // (oneDNN's re-laid-out weights among them) would count against the operator that touched it first.
    runtime::FreedMemoryReuse reuse;
    m.unet->forward(input, 999.0, c.context, c.pooled, c.time_ids);  // warm: first-call costs are not the model's
    out += op_table(profile_ops([&] { m.unet->forward(input, 999.0, c.context, c.pooled, c.time_ids); }));
  }
  out += s.tiny_decoder ? "Tiny decoder (--decoder):\n" : "VAE decode:\n";
  out += op_table(profile_ops([&] {
    if (s.tiny_decoder) m.tiny_decoder->decode(latents / m.tiny_decoder->config().scaling_factor);
    else m.vae->decode(latents / m.vae->config().scaling_factor);
  }));
  return out;
}

BenchResult run_bench(BenchModels& models, const BenchSettings& raw,
                      const std::function<void(const std::string&, int)>& on_pass) {
  const BenchSettings s = resolve_settings(models, raw);
  BenchResult result;
  result.width = s.width;
  result.height = s.height;
  const int f = models.vae_scale_factor();
  result.vae_tiled = !s.tiny_decoder && models.vae->tiles(s.height / f, s.width / f, s.vae_tiling);
  const BenchSettings other = compared_side(s);
  PassOutputs measured, compared;
  const int threads_before = at::get_num_threads();
  std::optional<runtime::LoadAwareThreads> load;
  if (s.adapt_threads) load.emplace();
  for (int i = 0; i < s.warmup + s.runs; ++i) {
    const bool warm = i < s.warmup;
    const int index = warm ? i : i - s.warmup;
    {
      runtime::OptimizationsGuard guard(s.optimizations);
      prepare_side(models, s.dtype);
      if (on_pass) on_pass(warm ? "warmup" : "run", index);
      StageTimes flops{};
      const StageTimes t = run_pass(models, s, &flops, &result.unet_calls, &result, &measured, load ? &*load : nullptr);
      if (i == 0) result.flops = flops;
      if (!warm) result.runs.push_back(t);
    }
    if (s.compare_plain) {
      BenchModels& side = models.baseline ? *models.baseline : models;  // --compare-weights: other weights
      runtime::OptimizationsGuard guard(other.optimizations);
      prepare_side(side, other.dtype);
      if (on_pass) on_pass(s.baseline_label + (warm ? " warmup" : " run"), index);
      StageTimes flops{};
      const StageTimes t =
          run_pass(side, other, &flops, &result.baseline_unet_calls, nullptr, &compared, load ? &*load : nullptr);
      if (!warm) result.plain_runs.push_back(t);
    }
  }
  finish(s, load ? &*load : nullptr, threads_before, measured, compared, &result);
  return result;
}

BenchResult run_one_shot(BenchModels models, const BenchSettings& raw, const std::function<BenchModels()>& load_baseline,
                         const std::function<void(const std::string&, int)>& on_pass) {
  BenchSettings s = resolve_settings(models, raw);
  s.one_shot = true;
  BenchResult result;
  result.width = s.width;
  result.height = s.height;
  const int f = models.vae_scale_factor();
  result.vae_tiled = !s.tiny_decoder && models.vae->tiles(s.height / f, s.width / f, s.vae_tiling);
  PassOutputs measured, compared;
  const int threads_before = at::get_num_threads();
  std::optional<runtime::LoadAwareThreads> load;
  if (s.adapt_threads) load.emplace();
  // One side: its pass, then the most resident memory since its models began to load, then everything let go.
  auto one_side = [&](BenchModels& m, const BenchSettings& side, PassOutputs* outputs, int* unet_calls,
                      std::vector<StageTimes>* runs) {
    runtime::OptimizationsGuard guard(side.optimizations);
    prepare_side(m, side.dtype);
    StageTimes flops{};
    runs->push_back(run_pass(m, side, &flops, unet_calls, &result, outputs, load ? &*load : nullptr));
    if (runs == &result.runs) result.flops = flops;
    m = BenchModels();
    const int64_t peak = runtime::window_peak_rss_bytes();
    runtime::return_free_memory();
    return peak > 0 ? peak : runtime::peak_rss_bytes();
  };
  if (on_pass) on_pass("one-shot run", 0);
  result.one_shot_peak_rss_bytes = one_side(models, s, &measured, &result.unet_calls, &result.runs);
  if (s.compare_plain) {
    BenchSettings other = compared_side(s);
    runtime::reset_peak_rss_window();
    BenchModels side = load_baseline();
    if (on_pass) on_pass(s.baseline_label + " one-shot run", 0);
    result.baseline_one_shot_peak_rss_bytes =
        one_side(side, other, &compared, &result.baseline_unet_calls, &result.plain_runs);
  }
  finish(s, load ? &*load : nullptr, threads_before, measured, compared, &result);
  return result;
}

}  // namespace tide::bench
