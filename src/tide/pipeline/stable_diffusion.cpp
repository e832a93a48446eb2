#include "tide/pipeline/stable_diffusion.h"

#include <optional>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/models/deep_cache.h"
#include "tide/pipeline/image_conditioning.h"
#include "tide/nn/layers.h"
#include "tide/pipeline/a1111_conditioning.h"
#include "tide/nn/timestep_embedding.h"
#include "tide/runtime/error.h"
#include "tide/runtime/load_aware_threads.h"
#include "tide/runtime/memory.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

nlohmann::json read_component_json(const fs::path& folder, const std::string& component, const char* file) {
  const fs::path path = folder / component / file;
  if (!fs::exists(path)) throw Error(folder.string() + ": component '" + component + "' is missing (" + path.string() + ")");
  return io::read_json(path);
}

// The storage of a layer (module path `layer`) of `component`: `requested`, or unset, float32 except what a
// quantized file stores as int8 (16-bit files are widened once, so LoRAs merge in float32 as diffusers does).
nn::WeightFormat layer_storage(const std::optional<nn::WeightFormat>& requested, const std::string& component,
                               const std::string& layer, const io::WeightSource& source) {
  if (requested) return nn::storage_for_layer(*requested, component, layer);
  const std::string weight = layer + ".weight";
  const bool int8 = source.contains(weight) && source.dtype(weight) == at::kChar;
  return int8 ? nn::WeightFormat::kInt8 : nn::WeightFormat::kFloat32;
}

// Gives `component`'s Linear and Conv2d weights the storage they are loaded into; returns their source.
template <typename Module>
const io::WeightSource& set_storage(Module& module, PipelineParts& parts, const std::string& component) {
  auto it = parts.weights.find(component);
  if (it == parts.weights.end()) throw Error(parts.description + ": no weights for component '" + component + "'");
  const io::WeightSource& source = it->second;
  nn::set_weight_storage(*module, [&](const std::string& layer) {
    return layer_storage(parts.weight_format, component, layer, source);
  });
  module->eval();
  return source;
}

template <typename Module>
void load_weights(Module& module, PipelineParts& parts, const std::string& component) {
  io::load_module_weights(*module, set_storage(module, parts, component), component);
}

// Builds a component without drawing torch's random init: every parameter is loaded right after, and
// untouched memory is not resident, so a model stored in 16 or 8 bits never holds a float32 copy.
template <typename Model, typename Config>
Model build(const Config& config) {
  nn::NoInitGuard no_init;
  return Model(config);
}

// A pipeline's compute settings on the calling thread for the duration of one call.
class ComputeScope {
 public:
  ComputeScope(const StableDiffusionPipeline::ComputeSettings& settings, runtime::LoadAwareThreads* load)
      : optimizations_(settings.optimizations),
        load_(load),
        previous_threads_(at::get_num_threads()),
        limit_(settings.threads > 0 ? settings.threads : previous_threads_) {
    adapt();
  }
  ~ComputeScope() {
    if (at::get_num_threads() != previous_threads_) at::set_num_threads(previous_threads_);
  }
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

  // The thread count for the next piece of work: the limit, or what other processes leave free now.
  void adapt() { runtime::apply_thread_count(load_, limit_); }

 private:
  runtime::OptimizationsGuard optimizations_;
  runtime::LoadAwareThreads* load_;
  int previous_threads_;
  int limit_;
};

}  // namespace

PipelineParts parts_from_folder(const fs::path& folder, const LoadOptions& options) {
  if (!fs::is_directory(folder)) throw Error("model folder " + folder.string() + " does not exist");
  const fs::path index_path = folder / "model_index.json";
  if (!fs::exists(index_path))
    throw Error(folder.string() + " is not a diffusers pipeline folder (no model_index.json)");
  const auto index = io::read_json(index_path);
  PipelineParts parts;
  parts.description = folder.string();
  parts.folder = folder;
  parts.pipeline_class = io::json_get<std::string>(index, "_class_name", "");
  std::vector<std::string> components = {"unet", "vae", "text_encoder"};
  // The img2img / inpaint variants of a folder hold the same components.
  if (parts.pipeline_class == "StableDiffusionXLImg2ImgPipeline" || parts.pipeline_class == "StableDiffusionXLInpaintPipeline")
    parts.pipeline_class = "StableDiffusionXLPipeline";
  if (parts.pipeline_class == "StableDiffusionImg2ImgPipeline" || parts.pipeline_class == "StableDiffusionInpaintPipeline")
    parts.pipeline_class = "StableDiffusionPipeline";
  if (parts.pipeline_class == "StableDiffusionXLPipeline") {
    components.push_back("text_encoder_2");
    parts.tokenizer_2_dir = folder / "tokenizer_2";
    parts.force_zeros_for_empty_prompt = io::json_get<bool>(index, "force_zeros_for_empty_prompt", true);
  } else if (parts.pipeline_class != "StableDiffusionPipeline" &&
             parts.pipeline_class != "LatentConsistencyModelPipeline") {
    throw Error(index_path.string() + ": pipeline class '" + parts.pipeline_class +
                "' is not supported (StableDiffusionPipeline, StableDiffusionXLPipeline and "
                "LatentConsistencyModelPipeline are)");
  }
  for (const auto& c : components) {
    parts.configs[c] = read_component_json(folder, c, "config.json");
    parts.weights.emplace(c, io::WeightSource::from_component_dir(folder / c, options.variant));
  }
  parts.configs["scheduler"] = read_component_json(folder, "scheduler", "scheduler_config.json");
  parts.tokenizer_dir = folder / "tokenizer";
  parts.weight_format = options.weights;
  return parts;
}

models::AutoencoderKL load_vae(PipelineParts& parts) {
  auto vae = build<models::AutoencoderKL>(models::AutoencoderKLConfig::from_json(parts.configs.at("vae")));
  load_weights(vae, parts, "vae");
  nn::store_conv_weights_for_current_layout(*vae);
  return vae;
}

std::unique_ptr<StableDiffusionPipeline> StableDiffusionPipeline::from_parts(PipelineParts parts) {
  std::unique_ptr<StableDiffusionPipeline> p(new StableDiffusionPipeline());
  p->compute_.optimizations = runtime::optimizations();
  p->description_ = parts.description;
  p->force_zeros_for_empty_prompt_ = parts.force_zeros_for_empty_prompt;
  p->xl_ = parts.configs.count("text_encoder_2") > 0;
  p->decode_denoised_ = parts.pipeline_class == "LatentConsistencyModelPipeline";
  p->tokenizer_ = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(parts.tokenizer_dir));
  p->text_encoder_ = build<models::ClipTextModel>(models::ClipTextConfig::from_json(parts.configs.at("text_encoder")));
  load_weights(p->text_encoder_, parts, "text_encoder");
  if (parts.configs.count("text_encoder_2")) {
    p->tokenizer_2_ = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(parts.tokenizer_2_dir));
    if (!parts.tokenizer_2_pad_token.empty()) p->tokenizer_2_->set_pad_token(parts.tokenizer_2_pad_token);
    p->text_encoder_2_ = build<models::ClipTextModel>(models::ClipTextConfig::from_json(parts.configs.at("text_encoder_2")));
    load_weights(p->text_encoder_2_, parts, "text_encoder_2");
  }
  p->unet_ = build<models::UNet2DConditionModel>(models::UNet2DConditionConfig::from_json(parts.configs.at("unet")));
  load_weights(p->unet_, parts, "unet");
  p->vae_ = build<models::AutoencoderKL>(models::AutoencoderKLConfig::from_json(parts.configs.at("vae")));
  if (parts.load_vae_on_first_use) {
    // Storage that is never written is not resident until loaded_vae() fills it.
    set_storage(p->vae_, parts, "vae");
    p->deferred_vae_weights_ = std::make_unique<io::WeightSource>(std::move(parts.weights.at("vae")));
  } else {
    load_weights(p->vae_, parts, "vae");
  }
  p->scheduler_config_ = parts.configs.at("scheduler");
  nn::store_conv_weights_for_current_layout(*p->unet_);
  nn::store_conv_weights_for_current_layout(*p->vae_);
  if (p->is_xl() != p->unet_->config().has_text_time())
    throw Error(parts.description + ": the UNet's addition_embed_type does not fit a " +
                (p->is_xl() ? "two" : "one") + "-text-encoder pipeline");
  // The tensors read and converted while loading leave free heap behind (0.45 GB for an int8 SD 1.5 folder).
  runtime::return_free_memory();
  return p;
}

void StableDiffusionPipeline::install_embedding(const text::TextualInversionEmbedding& embedding) {
  if (!text_encoder_) throw Error(description_ + ": the text encoders were released; embeddings can no longer be added");
  if (embedding.is_xl() != is_xl())
    throw Error("embedding " + embedding.token + ": " +
                (is_xl() ? "an SD 1.x/2.x embedding; an SDXL model needs one with clip_l and clip_g vectors"
                         : "an SDXL embedding (clip_l / clip_g); this is an SD 1.x/2.x model"));
  auto check = [&](const at::Tensor& v, const models::ClipTextModel& encoder, const char* which) {
    if (v.size(1) != encoder->config().hidden_size)
      throw Error("embedding " + embedding.token + ": " + which + " vectors are " + std::to_string(v.size(1)) +
                  " wide, the text encoder's are " + std::to_string(encoder->config().hidden_size));
  };
  check(embedding.vectors, text_encoder_, is_xl() ? "clip_l" : "its");
  if (is_xl()) check(embedding.vectors_2, text_encoder_2_, "clip_g");
  const std::string token = embedding.token;
  if (is_xl() && tokenizer_2_->token_id(token))
    throw Error("embedding " + token + ": the token is already in the second tokenizer's vocabulary");
  text::install_embedding(*tokenizer_, text_encoder_, {token, embedding.vectors, {}});
  if (is_xl()) text::install_embedding(*tokenizer_2_, text_encoder_2_, {token, embedding.vectors_2, {}});
}

void StableDiffusionPipeline::keep_int8_weights_packed_only() {
  nn::keep_int8_weights_packed_only(*unet_);
  int8_weights_packed_only_ = true;
}

void StableDiffusionPipeline::set_loras(const std::vector<adapters::LoraSpec>& loras) {
  if (int8_weights_packed_only_)
    throw Error(description_ + ": LoRAs cannot change once the int8 weights are kept only packed "
                "(keep_int8_weights_packed_only); set them before");
  std::map<std::string, torch::nn::Module*> components = {{"unet", unet_.get()}};
  if (text_encoder_) components["text_encoder"] = text_encoder_.get();
  if (text_encoder_2_) components["text_encoder_2"] = text_encoder_2_.get();
  loras_.apply(loras, components, &unet_->config(), xl_);
}

void StableDiffusionPipeline::set_compute_settings(const ComputeSettings& settings) {
  compute_ = settings;
  load_aware_threads_ = settings.adapt_to_load ? std::make_shared<runtime::LoadAwareThreads>() : nullptr;
  ComputeScope scope(compute_, load_aware_threads_.get());
  nn::store_conv_weights_for_current_layout(*unet_);
  nn::store_conv_weights_for_current_layout(*vae_);
  if (taesd_) nn::store_conv_weights_for_current_layout(*taesd_);
}

void StableDiffusionPipeline::set_unet_dtype(at::ScalarType dtype) {
  if (int8_weights_packed_only_ && dtype != unet_dtype())
    throw Error(description_ + ": the UNet's dtype cannot change once its int8 weights are kept only packed");
  ComputeScope scope(compute_, load_aware_threads_.get());
  nn::set_compute_dtype(*unet_, dtype);
  nn::store_conv_weights_for_current_layout(*unet_);
}

int StableDiffusionPipeline::default_size() const {
  return static_cast<int>(unet_->config().sample_size) * vae_scale_factor();
}

at::Tensor StableDiffusionPipeline::encode_ids(models::ClipTextModel& encoder, text::ClipTokenizer& tokenizer,
                                               const std::string& prompt, int from_end, bool final_norm,
                                               at::Tensor* text_embeds) {
  at::Tensor ids = at::tensor(tokenizer.encode_padded(prompt), at::kLong).unsqueeze(0);  // [1, 77]
  auto out = encoder->forward(ids);
  if (text_embeds) *text_embeds = out.text_embeds;
  return hidden_state(out, encoder, {from_end, final_norm});  // [1, 77, D]
}

PromptEmbeddings StableDiffusionPipeline::encode_prompt(const std::string& prompt, PromptSyntax syntax, int clip_skip) {
  c10::InferenceMode inference;
  ComputeScope scope(compute_, load_aware_threads_.get());
  if (!text_encoder_)
    throw Error(description_ + ": the text encoders were released (release_text_encoders); prompts can no longer be encoded");
  if (clip_skip < 1) throw Error("clip skip must be at least 1 (1 = the text encoder's last layer), got " + std::to_string(clip_skip));
  if (syntax == PromptSyntax::kA1111) {
    // A1111 reads SDXL from both encoders' penultimate layers, and applies clip skip to neither SDXL nor SD 2.x
    // (whose OpenCLIP encoder pads with id 0, not EOS).
    if (is_xl()) {
      PromptEmbeddings e;
      at::Tensor first = encode_a1111_prompt(text_encoder_, *tokenizer_, prompt, {2, false});
      at::Tensor second = encode_a1111_prompt(text_encoder_2_, *tokenizer_2_, prompt, {2, false}, &e.pooled);
      e.context = at::cat({first, second}, -1);  // [1, 77 n, D1 + D2]
      return e;
    }
    const bool open_clip = tokenizer_->pad_id() != tokenizer_->eos_id();
    return {encode_a1111_prompt(text_encoder_, *tokenizer_, prompt, {open_clip ? 1 : clip_skip, true}), {}};
  }
  if (!is_xl()) return {encode_ids(text_encoder_, *tokenizer_, prompt, clip_skip, true, nullptr), {}};
  // SDXL: penultimate hidden states of both encoders side by side; pooled = the second's projection.
  PromptEmbeddings e;
  at::Tensor first = encode_ids(text_encoder_, *tokenizer_, prompt, clip_skip + 1, false, nullptr);
  at::Tensor second = encode_ids(text_encoder_2_, *tokenizer_2_, prompt, clip_skip + 1, false, &e.pooled);
  e.context = at::cat({first, second}, -1);  // [1, 77, D1 + D2]
  return e;
}

std::pair<PromptEmbeddings, PromptEmbeddings> StableDiffusionPipeline::encode_a1111_pair(const GenerationRequest& r,
                                                                                        bool guided) {
  const PromptEmbeddings cond = encode_prompt(r.prompt, PromptSyntax::kA1111, r.clip_skip);
  if (!guided) return {cond, {}};
  const std::string negative = r.negative_prompt.value_or("");
  PromptEmbeddings uncond;
  if (is_xl() && negative.empty()) {
    // A1111 gives SDXL zeros for an empty negative prompt (any chunk padding below is the empty prompt's).
    uncond = {at::zeros({1, 77, cond.context.size(2)}), at::zeros_like(cond.pooled)};
  } else {
    uncond = encode_prompt(negative, PromptSyntax::kA1111, r.clip_skip);
  }
  if (cond.context.size(1) != uncond.context.size(1)) {
    PromptEmbeddings c = cond;
    pad_to_same_length(c.context, uncond.context, encode_prompt("", PromptSyntax::kA1111, r.clip_skip).context);
    return {c, uncond};
  }
  return {cond, uncond};
}

at::Tensor StableDiffusionPipeline::prepare_latents(int num_images, int height, int width, double init_noise_sigma,
                                                    at::Generator& generator) const {
  const int f = vae_scale_factor();
  const int64_t channels = vae_->config().latent_channels;  // not the UNet's: 9 for inpainting models
  // One draw for the whole batch, like diffusers' randn_tensor with a single CPU generator.
  at::Tensor noise = at::randn({num_images, channels, height / f, width / f}, generator, at::kFloat);
  return noise * init_noise_sigma;
}

GenerationRequest StableDiffusionPipeline::resolve(GenerationRequest r) const {
  const int f = vae_scale_factor();
  resolve_image_inputs(r, f, is_xl(), unet_->config().in_channels);
  if (r.width == 0) r.width = default_size();
  if (r.height == 0) r.height = default_size();
  if (r.width < f || r.height < f || r.width % f != 0 || r.height % f != 0)
    throw Error("width and height must be positive multiples of " + std::to_string(f) + " (the VAE scale factor of " +
                description_ + "), got " + std::to_string(r.width) + "x" + std::to_string(r.height));
  if (r.steps < 1) throw Error("the number of steps must be at least 1, got " + std::to_string(r.steps));
  if (r.num_images < 1) throw Error("the number of images must be at least 1, got " + std::to_string(r.num_images));
  if (!(r.guidance >= 0)) throw Error("guidance must be a non-negative number");
  const auto& t = r.tome;
  if (!(t.ratio >= 0 && t.ratio < 1)) throw Error("the ToMe ratio must be in [0, 1), got " + std::to_string(t.ratio));
  if (t.sx < 1 || t.sy < 1 || t.max_downsample < 1)
    throw Error("ToMe's sx, sy and max_downsample must be at least 1");
  if (r.cache_interval < 1) throw Error("the cache interval must be at least 1 (1 = off), got " + std::to_string(r.cache_interval));
  if (r.clip_skip < 1)
    throw Error("clip skip must be at least 1 (1 = the text encoder's last layer), got " + std::to_string(r.clip_skip));
  if (r.original_height == 0) r.original_height = r.height;
  if (r.original_width == 0) r.original_width = r.width;
  if (r.target_height == 0) r.target_height = r.height;
  if (r.target_width == 0) r.target_width = r.width;
  return r;
}

std::unique_ptr<schedulers::Scheduler> StableDiffusionPipeline::make_scheduler(const GenerationRequest& r) const {
  return schedulers::make_scheduler(r.scheduler, scheduler_config_, r.scheduler_options);
}

at::Tensor StableDiffusionPipeline::decode(const at::Tensor& latents, models::VaeTiling tiling) {
  c10::InferenceMode inference;
  ComputeScope scope(compute_, load_aware_threads_.get());
  runtime::return_free_memory();
  if (taesd_) return taesd_->decode(latents / taesd_->config().scaling_factor);  // [N, 3, H, W]
  return loaded_vae()->decode(latents / vae_->config().scaling_factor, tiling);   // [N, 3, H, W]
}

models::AutoencoderKL& StableDiffusionPipeline::loaded_vae() {
  std::lock_guard<std::mutex> lock(vae_load_mutex_);
  if (deferred_vae_weights_) {
    c10::InferenceMode loading_outside_inference_mode(false);  // parameters stay ordinary tensors
    io::load_module_weights(*vae_, *deferred_vae_weights_, "vae");
    deferred_vae_weights_.reset();
    ComputeScope scope(compute_, load_aware_threads_.get());
    nn::store_conv_weights_for_current_layout(*vae_);
  }
  return vae_;
}

void StableDiffusionPipeline::set_tiny_autoencoder(models::AutoencoderTiny taesd) {
  if (!taesd) throw Error("set_tiny_autoencoder: no model given");
  const auto& t = taesd->config();
  const int64_t latent = unet_->config().out_channels;
  if (t.latent_channels != latent)
    throw Error("the tiny autoencoder has " + std::to_string(t.latent_channels) + " latent channels, " + description_ +
                " has " + std::to_string(latent) + ": use the TAESD made for this model family");
  if (t.scale_factor() != vae_scale_factor())
    throw Error("the tiny autoencoder upscales latents " + std::to_string(t.scale_factor()) + "x, the VAE of " +
                description_ + " " + std::to_string(vae_scale_factor()) + "x: use the TAESD made for this model");
  ComputeScope scope(compute_, load_aware_threads_.get());
  nn::store_conv_weights_for_current_layout(*taesd);
  taesd_ = std::move(taesd);
}

bool StableDiffusionPipeline::uses_classifier_free_guidance(double guidance) const {
  return guidance > 1.0 && unet_->config().time_cond_proj_dim == 0;
}

UNetConditioning StableDiffusionPipeline::condition(const GenerationRequest& raw) {
  c10::InferenceMode inference;
  const GenerationRequest r = resolve(raw);
  const bool guided = uses_classifier_free_guidance(r.guidance);

  // Batch order [uncond × N, cond × N] like diffusers with num_images_per_prompt.
  PromptEmbeddings cond, uncond;
  if (r.prompt_syntax == PromptSyntax::kA1111) {
    std::tie(cond, uncond) = encode_a1111_pair(r, guided);
  } else {
    // diffusers applies clip skip to the prompt only.
    cond = encode_prompt(r.prompt, PromptSyntax::kPlain, r.clip_skip);
    if (guided && is_xl() && force_zeros_for_empty_prompt_ && !r.negative_prompt) {
      uncond = {at::zeros_like(cond.context), at::zeros_like(cond.pooled)};
    } else if (guided) {
      uncond = encode_prompt(r.negative_prompt.value_or(""));
    }
  }
  UNetConditioning c;
  c.context = cond.context.repeat({r.num_images, 1, 1});                          // [N, 77 n, D]
  if (is_xl()) c.pooled = cond.pooled.repeat({r.num_images, 1});                 // [N, P]
  if (guided) {
    c.context = at::cat({uncond.context.repeat({r.num_images, 1, 1}), c.context});  // [2N, 77, D]
    if (is_xl()) c.pooled = at::cat({uncond.pooled.repeat({r.num_images, 1}), c.pooled});
  }
  if (is_xl()) {  // [original size, crop top-left, target size] per batch row
    c.time_ids = at::tensor({double(r.original_height), double(r.original_width), double(r.crop_top),
                             double(r.crop_left), double(r.target_height), double(r.target_width)},
                            at::kFloat)
                     .unsqueeze(0)
                     .repeat({c.context.size(0), 1});  // [B, 6]
  }
  return c;
}

void StableDiffusionPipeline::release_text_encoders() {
  text_encoder_ = models::ClipTextModel(nullptr);
  text_encoder_2_ = models::ClipTextModel(nullptr);
  runtime::return_free_memory();  // their weights are many small blocks that glibc would otherwise keep
}

GenerationResult StableDiffusionPipeline::generate(const GenerationRequest& request, const StepCallback& on_step) {
  return generate(request, condition(request), on_step);
}

GenerationResult StableDiffusionPipeline::generate(const GenerationRequest& raw, const UNetConditioning& c,
                                                   const StepCallback& on_step) {
  if (!unet_)
    throw Error(description_ + ": the UNet was released after the last generation (release_unet_after_denoising); "
                "load the model again to generate more");
  c10::InferenceMode inference;
  ComputeScope scope(compute_, load_aware_threads_.get());
  const GenerationRequest r = resolve(raw);
  const bool guided = uses_classifier_free_guidance(r.guidance);
  const at::Tensor &context = c.context, &pooled = c.pooled, &time_ids = c.time_ids;
  if (context.size(0) != r.num_images * (guided ? 2 : 1))
    throw Error("the conditioning has " + std::to_string(context.size(0)) + " rows; this request needs " +
                std::to_string(r.num_images * (guided ? 2 : 1)) + " (was it made for another request?)");

  auto scheduler = make_scheduler(r);
  scheduler->set_timesteps(r.steps);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(r.seed);
  // Text-to-image starts from noise at the first timestep; image-to-image and inpainting midway.
  DenoiseStart start;
  if (r.init_image.defined())
    start = prepare_image_start(r, *scheduler, loaded_vae(), unet_->config().in_channels, generator);
  else
    start.latents = prepare_latents(r.num_images, r.height, r.width, scheduler->init_noise_sigma(), generator);
  at::Tensor latents = start.latents;

  // ToMe's state lives for the whole loop: its generator is drawn from in every UNet call.
  std::optional<nn::TokenMerging> tome;
  if (r.tome.enabled()) {
    tome.emplace(r.tome, r.tome_seed.value_or(r.seed));
    tome->set_latent_size(latents.size(2), latents.size(3));
  }
  nn::TokenMergingScope tome_scope(tome ? &*tome : nullptr);
  std::optional<models::DeepCache> deep_cache;
  if (r.cache_interval > 1) deep_cache.emplace(r.cache_interval);
  models::DeepCacheScope deep_cache_scope(deep_cache ? &*deep_cache : nullptr);
  // Guidance-distilled UNets (LCM) take the scale as an embedding of w = guidance - 1.
  at::Tensor timestep_cond;
  if (const int64_t dim = unet_->config().time_cond_proj_dim; dim > 0)
    timestep_cond = nn::guidance_scale_embedding(at::full({r.num_images}, r.guidance - 1, at::kFloat), dim);  // [N, dim]

  GenerationResult result;
  const auto& timesteps = scheduler->timesteps();
  // Freed memory serves the next UNet call until the loop ends (before the decode), except in this pipeline's
  // very first call: it packs the int8 weights (and, kept only packed, frees the plain ones), which would split
  // up the heap that the later calls' activations reuse (SD 1.5 int8 at 512: 2.0 GiB instead of 1.4 with tide
  // generate's settings, runtime::hand_freed_memory_back_promptly).
  std::optional<runtime::FreedMemoryReuse> reuse;
  if (unet_has_run_) reuse.emplace();
  const int total = static_cast<int>(timesteps.size() - start.first);
  for (size_t i = start.first; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    if (i > start.first) scope.adapt();
    if (deep_cache) deep_cache->begin_call(static_cast<int>(i - start.first));  // counted from the first step run
    at::Tensor model_input = scheduler->scale_model_input(guided ? at::cat({latents, latents}) : latents, t);
    model_input = start.unet_input(model_input, guided);  // 9-channel inpainting: + mask, masked image latents
    at::Tensor noise_pred = unet_->forward(model_input, t, context, pooled, time_ids, timestep_cond);
    ++result.unet_calls;
    unet_has_run_ = true;
    if (!reuse) reuse.emplace();
    if (guided) {
      auto halves = noise_pred.chunk(2);
      noise_pred = halves[0] + r.guidance * (halves[1] - halves[0]);
    }
    latents = scheduler->step(noise_pred, t, latents, generator);
    latents = start.after_step(*scheduler, latents, i);  // 4-channel inpainting: keep the unmasked area
    if (on_step) on_step(StepInfo{static_cast<int>(i - start.first), total, t, latents});
  }
  if (release_unet_after_denoising_) unet_ = models::UNet2DConditionModel(nullptr);
  reuse.reset();  // hands the freed memory back, the UNet's too when released
  result.latents = latents;
  const bool denoised = decode_denoised_ && scheduler->last_denoised().defined();
  result.decoded = decode(denoised ? scheduler->last_denoised() : latents, r.vae_tiling);
  result.images = io::to_rgb8(result.decoded);
  return result;
}

}  // namespace tide::pipeline
