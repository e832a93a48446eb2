#include "tide/bench/bench_models.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

#include "tide/models/presets.h"
#include "tide/nn/layers.h"

namespace tide::bench {
namespace {

// Fills every parameter from one 1M-value uniform pool (copying is ~10x faster than drawing ~3·10^9
// random numbers for SDXL): matrices and kernels scaled by 1/√fan_in, norm weights 1, biases small.
void fill_parameters(torch::nn::Module& module) {
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
      continue;
    }
    const double scale = p.dim() >= 2 ? 1.0 / std::sqrt(double(p.numel() / p.size(0))) : 0.02;
    float* dst = p.data_ptr<float>();
    const int64_t n = p.numel(), start = (offset += 7919) % kPool;
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dst[i] = static_cast<float>(scale) * src[(start + i) & (kPool - 1)];
    });
  }
}

template <typename Module>
void prepare(Module& m) {
  fill_parameters(*m);
  m->eval();
}

}  // namespace

BenchModels models_from_preset(const std::string& family) {
  using models::presets::preset_config;
  BenchModels m;
  m.description = family + " (random weights)";
  nn::NoInitGuard no_init;  // the fill below replaces torch's random init
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(preset_config(family, "text_encoder")));
  prepare(m.text_encoder);
  const auto components = models::presets::preset_components(family);
  if (std::find(components.begin(), components.end(), "text_encoder_2") != components.end()) {
    m.text_encoder_2 =
        models::ClipTextModel(models::ClipTextConfig::from_json(preset_config(family, "text_encoder_2")));
    prepare(m.text_encoder_2);
    m.force_zeros_for_empty_prompt = preset_config(family, "model_index").value("force_zeros_for_empty_prompt", true);
  }
  m.unet = models::UNet2DConditionModel(models::UNet2DConditionConfig::from_json(preset_config(family, "unet")));
  prepare(m.unet);
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(preset_config(family, "vae")));
  prepare(m.vae);
  m.scheduler_config = preset_config(family, "scheduler");
  return m;
}

BenchModels models_from_folder(const std::filesystem::path& folder) {
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(folder);
  BenchModels m;
  m.description = folder.string();
  m.text_encoder = pipe->text_encoder();
  if (pipe->is_xl()) {
    m.text_encoder_2 = pipe->text_encoder_2();
    m.force_zeros_for_empty_prompt = pipe->force_zeros_for_empty_prompt();
  }
  m.unet = pipe->unet();
  m.vae = pipe->vae();
  m.scheduler_config = pipe->scheduler_config();
  return m;  // the module holders share ownership; the pipeline object itself can go
}

}  // namespace tide::bench
