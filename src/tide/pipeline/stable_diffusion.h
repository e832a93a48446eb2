// The Stable Diffusion text-to-image pipeline for SD 1.x / 2.x (StableDiffusionPipeline) and XL
// (StableDiffusionXLPipeline): tokenizer(s), text encoder(s), UNet, VAE and a scheduler, loaded from a
// diffusers folder and run like diffusers.
#pragma once
#include <ATen/ATen.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tide/adapters/lora_set.h"
#include "tide/io/weights.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/autoencoder_tiny.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/generation.h"
#include "tide/runtime/optimizations.h"
#include "tide/text/clip_tokenizer.h"
#include "tide/text/embeddings.h"

namespace tide::runtime {
class LoadAwareThreads;  // runtime/load_aware_threads.h
}  // namespace tide::runtime

namespace tide::pipeline {

struct LoadOptions {
  std::string variant;              // "fp16": read `*.fp16.safetensors`
  std::string revision;             // Hub ids: branch, tag or commit (an `@revision` in the id wins)
  std::filesystem::path tokenizer;  // single-file checkpoints: a tokenizer folder or a model folder with tokenizer/
  bool tokenizers = true;           // single files: find their tokenizer(s) (false: configs and weights only)
  // How Linear and Conv2d weights are kept in memory (--weights); unset: float32, except the layers a
  // quantized file stores as int8 (computing is float32 either way).
  std::optional<nn::WeightFormat> weights;
};

// Everything a pipeline is made of, before the weights are loaded: configs and where the weights are.
struct PipelineParts {
  std::string pipeline_class;  // StableDiffusionPipeline | StableDiffusionXLPipeline | LatentConsistencyModelPipeline
  bool force_zeros_for_empty_prompt = false;
  std::map<std::string, nlohmann::json> configs;        // unet, vae, text_encoder[, text_encoder_2], scheduler
  std::map<std::string, io::WeightSource> weights;      // unet, vae, text_encoder[, text_encoder_2]
  std::filesystem::path tokenizer_dir, tokenizer_2_dir;  // tokenizer_2: SDXL only
  std::string tokenizer_2_pad_token;                    // overrides tokenizer_2's own when set
  std::string description;                              // for messages
  std::filesystem::path folder;                         // the diffusers folder, when the model is one (local or Hub)
  std::optional<nn::WeightFormat> weight_format;        // LoadOptions::weights
  // For one-shot runs: the VAE's weights are read when the VAE is first used (decode, image-to-image encode,
  // vae()) instead of with the rest, so the denoising loop never holds them (SD 1.5: 160 MiB in f16).
  bool load_vae_on_first_use = false;
};

// Reads model_index.json and the component configs of a diffusers folder.
PipelineParts parts_from_folder(const std::filesystem::path& folder, const LoadOptions& options = {});

// The VAE of `parts` on its own, stored and loaded as a pipeline made from them would hold it: for tools that
// run the decoder apart from a pipeline (tide bench's one-shot passes read it only when they decode).
models::AutoencoderKL load_vae(PipelineParts& parts);

class StableDiffusionPipeline {
 public:
  static std::unique_ptr<StableDiffusionPipeline> from_parts(PipelineParts parts);
  static std::unique_ptr<StableDiffusionPipeline> from_folder(const std::filesystem::path& folder,
                                                              const LoadOptions& options = {}) {
    return from_parts(parts_from_folder(folder, options));
  }

  bool is_xl() const { return xl_; }
  // Embeddings of one prompt: SD: last hidden state; XL: both encoders' penultimate states
  // concatenated, and the second encoder's projected pooled output. `clip_skip` (A1111's numbering, see
  // GenerationRequest) moves up that many layers minus one. a1111 syntax: [1, 77 × chunks, D].
  PromptEmbeddings encode_prompt(const std::string& prompt, PromptSyntax syntax = PromptSyntax::kPlain,
                                 int clip_skip = 1);
  // Initial latents: one randn [N, C, H/f, W/f] from `generator`, times the scheduler's init sigma.
  at::Tensor prepare_latents(int num_images, int height, int width, double init_noise_sigma,
                             at::Generator& generator) const;
  // Checks the request (sizes, steps, guidance) and fills the defaults; throws tide::Error.
  GenerationRequest resolve(GenerationRequest request) const;
  std::unique_ptr<schedulers::Scheduler> make_scheduler(const GenerationRequest& request) const;
  // latents / scaling_factor -> VAE decoder, tiled or not as `tiling` says (models::VaeTiling); with a tiny
  // autoencoder set, its decoder instead (never tiled).
  at::Tensor decode(const at::Tensor& latents, models::VaeTiling tiling = models::VaeTiling::kAuto);
  // Decodes with `taesd` from now on, like diffusers' `pipe.vae = AutoencoderTiny...` (the VAE's encoder and
  // scale factor stay). Latent channels or scale factor that do not fit the model are a tide::Error.
  void set_tiny_autoencoder(models::AutoencoderTiny taesd);
  bool has_tiny_autoencoder() const { return static_cast<bool>(taesd_); }
  // Whether a request at `guidance` batches an unconditional pass: guidance > 1, except for guidance-distilled
  // UNets (time_cond_proj_dim), which take the scale as an embedding instead.
  bool uses_classifier_free_guidance(double guidance) const;

  // What the UNet is conditioned on for a request: the prompt's (and the negative prompt's) embeddings in
  // the guidance batch order, and SDXL's pooled embeddings and time ids.
  UNetConditioning condition(const GenerationRequest& request);
  // condition() then the denoising loop and the VAE decode.
  GenerationResult generate(const GenerationRequest& request, const StepCallback& on_step = nullptr);
  // The same with the conditioning made beforehand by condition() for this request.
  GenerationResult generate(const GenerationRequest& request, const UNetConditioning& conditioning,
                            const StepCallback& on_step = nullptr);
  // Frees the text encoders, for one-shot runs once condition() is done: 0.47 GiB of SD 1.5's float32
  // weights, 2.8 GB of SDXL's. Encoding a prompt or adding an embedding afterwards is a tide::Error.
  void release_text_encoders();
  // For one-shot runs: the next generate() frees the UNet as soon as its denoising loop ends, before the VAE
  // decode, whose activations then no longer add to it (SD 1.5 at 512: 0.9 GB of int8 UNet, 3.4 GB in float32,
  // beside about 1 GB of decoder activations). Generating again afterwards is a tide::Error.
  void release_unet_after_denoising() { release_unet_after_denoising_ = true; }
  // For one-shot runs: the UNet's int8 layers keep their weights only in the int8 kernels' packed layout once
  // their first call has packed them (nn::keep_int8_weights_packed_only; SD 1.5: 0.66 GB less). Later shapes
  // still work; setting LoRAs afterwards, another UNet dtype or int8_kernels switched off are a tide::Error.
  void keep_int8_weights_packed_only();

  // The dtype the UNet computes in (float32 as loaded; bf16 for --dtype bf16). Text encoders and VAE stay
  // float32: they run once per image, and latents, noise and scheduler arithmetic stay float32 too, so a
  // seed draws the same initial noise in every dtype.
  void set_unet_dtype(at::ScalarType dtype);
  at::ScalarType unet_dtype() const { return unet_->conv_in->bias.scalar_type(); }  // weights may be stored narrower

  // How this pipeline computes: its optimizations and thread count (0: the calling thread's own). Every
  // call installs them on the calling thread for its duration and restores what was there, so pipelines
  // with different settings can run in different threads of one process. A new pipeline takes the
  // optimizations of the thread that loads it. With adapt_to_load the count is an upper limit: each call and
  // each denoising step runs with as many threads as other processes leave CPUs free
  // (runtime/load_aware_threads.h). Results can then differ in their last bits between runs on a busy
  // machine, as they do between thread counts; a fixed count repeats them bit for bit.
  struct ComputeSettings {
    runtime::Optimizations optimizations;
    int threads = 0;
    bool adapt_to_load = false;
  };
  void set_compute_settings(const ComputeSettings& settings);
  const ComputeSettings& compute_settings() const { return compute_; }
  // The thread counts adapt_to_load chose so far (null without it).
  const runtime::LoadAwareThreads* load_aware_threads() const { return load_aware_threads_.get(); }

  int vae_scale_factor() const { return static_cast<int>(vae_->config().scale_factor()); }
  int default_size() const;
  const std::string& description() const { return description_; }
  const nlohmann::json& scheduler_config() const { return scheduler_config_; }
  // Adds a textual-inversion embedding's token(s) to the tokenizer(s) and text encoder(s): SD 1.x/2.x take
  // `vectors`, SDXL `vectors` (clip_l) and `vectors_2` (clip_g). A mismatch (family, width, known token) is a
  // tide::Error and changes nothing.
  void install_embedding(const text::TextualInversionEmbedding& embedding);

  // Merges these LoRAs (file, multiplier) into the UNet and text encoder(s), replacing the ones set before;
  // {} gives back the base weights bit for bit. Call it before encoding prompts. A file that does not fit
  // the model (unknown layer, shape, other family) is a tide::Error and changes nothing.
  void set_loras(const std::vector<adapters::LoraSpec>& loras);
  const std::vector<adapters::LoraSpec>& loras() const { return loras_.active(); }

  text::ClipTokenizer& tokenizer() { return *tokenizer_; }
  models::ClipTextModel& text_encoder() { return text_encoder_; }
  models::ClipTextModel& text_encoder_2() { return text_encoder_2_; }  // SDXL only
  bool force_zeros_for_empty_prompt() const { return force_zeros_for_empty_prompt_; }
  models::UNet2DConditionModel& unet() { return unet_; }
  models::AutoencoderKL& vae() { return loaded_vae(); }
  // The VAE's configuration and tiling rules, without reading weights that load_vae_on_first_use deferred.
  const models::AutoencoderKLImpl& vae_architecture() const { return *vae_; }

 private:
  StableDiffusionPipeline() = default;
  at::Tensor encode_ids(models::ClipTextModel& encoder, text::ClipTokenizer& tokenizer, const std::string& prompt,
                        int from_end, bool final_norm, at::Tensor* text_embeds);
  // The conditioning of a prompt and a negative prompt in the guidance batch order, a1111 syntax.
  std::pair<PromptEmbeddings, PromptEmbeddings> encode_a1111_pair(const GenerationRequest& r, bool guided);
  // vae_, with its weights read first if loading them was deferred (PipelineParts::load_vae_on_first_use).
  models::AutoencoderKL& loaded_vae();
  std::string description_;
  bool force_zeros_for_empty_prompt_ = false;
  bool xl_ = false;  // two text encoders (StableDiffusionXLPipeline)
  // LatentConsistencyModelPipeline decodes the scheduler's last `denoised`, not the latents.
  bool decode_denoised_ = false;
  std::unique_ptr<text::ClipTokenizer> tokenizer_, tokenizer_2_;
  models::ClipTextModel text_encoder_{nullptr}, text_encoder_2_{nullptr};
  models::UNet2DConditionModel unet_{nullptr};
  models::AutoencoderKL vae_{nullptr};
  models::AutoencoderTiny taesd_{nullptr};
  std::unique_ptr<io::WeightSource> deferred_vae_weights_;  // until loaded_vae() reads them
  std::mutex vae_load_mutex_;
  nlohmann::json scheduler_config_;
  ComputeSettings compute_;
  std::shared_ptr<runtime::LoadAwareThreads> load_aware_threads_;  // with compute_.adapt_to_load
  adapters::LoraSet loras_;
  bool release_unet_after_denoising_ = false;
  bool int8_weights_packed_only_ = false;
  std::atomic<bool> unet_has_run_{false};  // its first call packs the int8 weights
};

}  // namespace tide::pipeline
