#include "tide/pipeline/stable_diffusion.h"

#include <c10/core/InferenceMode.h>

#include "tide/io/json_file.h"
#include "tide/io/weights.h"
#include "tide/io/image.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

nlohmann::json component_config(const fs::path& folder, const std::string& component, const char* file) {
  const fs::path path = folder / component / file;
  if (!fs::exists(path)) throw Error(folder.string() + ": component '" + component + "' is missing (" + path.string() + ")");
  return io::read_json(path);
}

template <typename Module>
void load_component(Module& module, const fs::path& folder, const std::string& component, const LoadOptions& options) {
  io::load_module_weights(*module, io::WeightSource::from_component_dir(folder / component, options.variant),
                          component);
  module->eval();
}

}  // namespace

std::unique_ptr<StableDiffusionPipeline> StableDiffusionPipeline::from_folder(const fs::path& folder,
                                                                              const LoadOptions& options) {
  if (!fs::is_directory(folder)) throw Error("model folder " + folder.string() + " does not exist");
  const fs::path index_path = folder / "model_index.json";
  if (!fs::exists(index_path))
    throw Error(folder.string() + " is not a diffusers pipeline folder (no model_index.json)");
  const auto index = io::read_json(index_path);
  const std::string cls = io::json_get<std::string>(index, "_class_name", "");
  if (cls != "StableDiffusionPipeline")
    throw Error(index_path.string() + ": pipeline class '" + cls + "' is not supported (StableDiffusionPipeline is)");

  std::unique_ptr<StableDiffusionPipeline> p(new StableDiffusionPipeline());
  p->folder_ = folder;
  p->tokenizer_ = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(folder / "tokenizer"));
  p->text_encoder_ = models::ClipTextModel(
      models::ClipTextConfig::from_json(component_config(folder, "text_encoder", "config.json")));
  load_component(p->text_encoder_, folder, "text_encoder", options);
  p->unet_ = models::UNet2DConditionModel(
      models::UNet2DConditionConfig::from_json(component_config(folder, "unet", "config.json")));
  load_component(p->unet_, folder, "unet", options);
  p->vae_ = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(component_config(folder, "vae", "config.json")));
  load_component(p->vae_, folder, "vae", options);
  p->scheduler_config_ = component_config(folder, "scheduler", "scheduler_config.json");
  return p;
}

int StableDiffusionPipeline::default_size() const { return unet_->config().sample_size * vae_scale_factor(); }

at::Tensor StableDiffusionPipeline::encode_prompt(const std::string& prompt) {
  const auto ids = tokenizer_->encode_padded(prompt);
  at::Tensor input_ids = at::tensor(ids, at::kLong).unsqueeze(0);  // [1, 77]
  return text_encoder_->forward(input_ids).last_hidden_state;      // [1, 77, D]
}

at::Tensor StableDiffusionPipeline::prepare_latents(int num_images, int height, int width, double init_noise_sigma,
                                                    at::Generator& generator) const {
  const int f = vae_scale_factor();
  const int64_t channels = unet_->config().in_channels;
  // One draw for the whole batch, like diffusers' randn_tensor with a single CPU generator.
  at::Tensor noise = at::randn({num_images, channels, height / f, width / f}, generator, at::kFloat);
  return noise * init_noise_sigma;
}

GenerationRequest StableDiffusionPipeline::resolve(GenerationRequest r) const {
  const int f = vae_scale_factor();
  if (r.width == 0) r.width = default_size();
  if (r.height == 0) r.height = default_size();
  if (r.width < f || r.height < f || r.width % f != 0 || r.height % f != 0)
    throw Error("width and height must be positive multiples of " + std::to_string(f) + " (the VAE scale factor of " +
                folder_.string() + "), got " + std::to_string(r.width) + "x" + std::to_string(r.height));
  if (r.steps < 1) throw Error("the number of steps must be at least 1, got " + std::to_string(r.steps));
  if (r.num_images < 1) throw Error("the number of images must be at least 1, got " + std::to_string(r.num_images));
  if (!(r.guidance >= 0)) throw Error("guidance must be a non-negative number");
  return r;
}

std::unique_ptr<schedulers::Scheduler> StableDiffusionPipeline::make_scheduler(const GenerationRequest& r) const {
  return schedulers::make_scheduler(r.scheduler, scheduler_config_, r.scheduler_options);
}

at::Tensor StableDiffusionPipeline::decode(const at::Tensor& latents) {
  return vae_->decode(latents / vae_->config().scaling_factor);  // [N, 3, H, W]
}

GenerationResult StableDiffusionPipeline::generate(const GenerationRequest& raw, const StepCallback& on_step) {
  c10::InferenceMode inference;
  const GenerationRequest r = resolve(raw);
  const bool guided = r.guidance > 1.0;

  // Text: [uncond, cond], each repeated per image like diffusers' num_images_per_prompt.
  at::Tensor cond = encode_prompt(r.prompt).repeat({r.num_images, 1, 1});  // [N, 77, D]
  at::Tensor context = cond;
  if (guided) {
    at::Tensor uncond = encode_prompt(r.negative_prompt.value_or("")).repeat({r.num_images, 1, 1});
    context = at::cat({uncond, cond});  // [2N, 77, D]
  }

  auto scheduler = make_scheduler(r);
  scheduler->set_timesteps(r.steps);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(r.seed);
  at::Tensor latents = prepare_latents(r.num_images, r.height, r.width, scheduler->init_noise_sigma(), generator);

  GenerationResult result;
  const auto& timesteps = scheduler->timesteps();
  for (size_t i = 0; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    at::Tensor model_input = scheduler->scale_model_input(guided ? at::cat({latents, latents}) : latents, t);
    at::Tensor noise_pred = unet_->forward(model_input, t, context);
    ++result.unet_calls;
    if (guided) {
      auto halves = noise_pred.chunk(2);
      noise_pred = halves[0] + r.guidance * (halves[1] - halves[0]);
    }
    latents = scheduler->step(noise_pred, t, latents, generator);
    if (on_step) on_step(StepInfo{static_cast<int>(i), static_cast<int>(timesteps.size()), t, latents});
  }
  result.latents = latents;
  result.decoded = decode(latents);
  result.images = io::to_rgb8(result.decoded);
  return result;
}

}  // namespace tide::pipeline
