#include "tide/bench/bench_models.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "tide/models/presets.h"
#include "tide/nn/layers.h"
#include "tide/nn/weight_storage.h"

namespace tide::bench {
namespace {

// Fills every parameter from one 1M-value uniform pool (copying is ~10x faster than drawing ~3·10^9
// random numbers for SDXL): matrices and kernels scaled by 1/√fan_in, norm weights 1, biases small.
// `filled(name)` runs after each parameter is filled.
void fill_parameters(torch::nn::Module& module, const std::function<void(const std::string&)>& filled) {
  constexpr int64_t kPool = 1 << 20;
  static const at::Tensor pool = at::empty({kPool}).uniform_(-1.0, 1.0, at::make_generator<at::CPUGeneratorImpl>(0));
  const float* src = pool.data_ptr<float>();
  c10::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto& item : module.named_parameters()) {
    at::Tensor p = item.value();
    const std::string& name = item.key();
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    if (p.dim() == 1 && !is_bias) {  // norm weights
      p.fill_(1.0);
      filled(name);
      continue;
    }
    const double scale = p.dim() >= 2 ? 1.0 / std::sqrt(double(p.numel() / p.size(0))) : 0.02;
    float* dst = p.data_ptr<float>();
    const int64_t n = p.numel(), start = (offset += 7919) % kPool;
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dst[i] = static_cast<float>(scale) * src[(start + i) & (kPool - 1)];
    });
    filled(name);
  }
}

template <typename Module>
void prepare(Module& m, nn::WeightFormat weights, const std::string& component) {
  // Each layer's weight is stored in `weights` right after it is filled, so that a narrow format never holds
  // the float32 model (bench --json reports the peak resident memory).
  std::map<std::string, std::shared_ptr<torch::nn::Module>> layers;
  for (const auto& item : m->named_modules("", /*include_self=*/false)) layers.emplace(item.key(), item.value());
  fill_parameters(*m, [&](const std::string& name) {
    if (name.size() <= 7 || name.compare(name.size() - 7, 7, ".weight") != 0) return;
    const std::string layer = name.substr(0, name.size() - 7);
    auto it = layers.find(layer);
    if (it == layers.end()) return;
    nn::convert_weight_storage(*it->second, [&](const std::string&) { return nn::storage_for_layer(weights, component, layer); });
  });
  m->eval();
}

}  // namespace

BenchModels models_from_preset(const std::string& family, nn::WeightFormat weights, bool defer_vae) {
  using models::presets::preset_config;
  BenchModels m;
  m.description = family + " (random weights)";
  m.weights = nn::weight_format_name(weights);
  nn::NoInitGuard no_init;  // the fill below replaces torch's random init
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(preset_config(family, "text_encoder")));
  prepare(m.text_encoder, weights, "text_encoder");
  const auto components = models::presets::preset_components(family);
  if (std::find(components.begin(), components.end(), "text_encoder_2") != components.end()) {
    m.text_encoder_2 =
        models::ClipTextModel(models::ClipTextConfig::from_json(preset_config(family, "text_encoder_2")));
    prepare(m.text_encoder_2, weights, "text_encoder_2");
    m.force_zeros_for_empty_prompt = preset_config(family, "model_index").value("force_zeros_for_empty_prompt", true);
  }
  m.unet = models::UNet2DConditionModel(models::UNet2DConditionConfig::from_json(preset_config(family, "unet")));
  prepare(m.unet, weights, "unet");
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(preset_config(family, "vae")));
  if (defer_vae) {
    m.read_vae = [vae = m.vae, weights]() mutable {
      prepare(vae, weights, "vae");
      nn::store_conv_weights_for_current_layout(*vae);
      return vae;
    };
  } else {
    prepare(m.vae, weights, "vae");
  }
  m.scheduler_config = preset_config(family, "scheduler");
  return m;
}

BenchModels models_from_folder(const std::filesystem::path& folder, std::optional<nn::WeightFormat> weights,
                               bool defer_vae) {
  pipeline::LoadOptions options;
  options.weights = weights;
  pipeline::PipelineParts parts = pipeline::parts_from_folder(folder, options);
  parts.load_vae_on_first_use = defer_vae;
  pipeline::PipelineParts vae_parts = parts;  // configs and where the weights are, nothing read yet
  auto pipe = pipeline::StableDiffusionPipeline::from_parts(std::move(parts));
  BenchModels m;
  m.description = folder.string();
  m.weights = weights ? nn::weight_format_name(*weights) : "f32 (int8 where the files are)";
  m.text_encoder = pipe->text_encoder();
  if (pipe->is_xl()) {
    m.text_encoder_2 = pipe->text_encoder_2();
    m.force_zeros_for_empty_prompt = pipe->force_zeros_for_empty_prompt();
  }
  m.unet = pipe->unet();
  if (defer_vae) {
    nn::NoInitGuard no_init;  // its storage is never written: only the configuration is asked of it
    m.vae = models::AutoencoderKL(pipe->vae_architecture().config());
    m.read_vae = [vae_parts]() mutable { return pipeline::load_vae(vae_parts); };
  } else {
    m.vae = pipe->vae();
  }
  m.scheduler_config = pipe->scheduler_config();
  return m;  // the module holders share ownership; the pipeline object itself can go
}

models::AutoencoderTiny tiny_decoder_from(const std::string& name) {
  if (name != "taesd" && name != "taesdxl") return models::load_autoencoder_tiny(name);
  nn::NoInitGuard no_init;
  models::AutoencoderTiny tiny{models::AutoencoderTinyConfig()};  // madebyollin/taesd and taesdxl's config
  prepare(tiny, nn::WeightFormat::kFloat32, "taesd");
  return tiny;
}

}  // namespace tide::bench
