#include "tide/models/presets.h"

#include <map>
#include <utility>

#include "tide/runtime/error.h"

namespace tide::models::presets {
namespace {

// The files as published on the Hub (key order as there; nlohmann::json sorts keys anyway).

constexpr const char* kSd15Unet = R"json({
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})json";

constexpr const char* kSd21Unet = R"json({
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.10.0.dev0",
  "act_fn": "silu",
  "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "dual_cross_attention": false,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "num_class_embeds": null,
  "only_cross_attention": false,
  "out_channels": 4,
  "sample_size": 96,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "use_linear_projection": true,
  "upcast_attention": true
})json";

constexpr const char* kSdxlUnet = R"json({
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.19.0.dev0",
  "act_fn": "silu",
  "addition_embed_type": "text_time",
  "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": 256,
  "attention_head_dim": [5, 10, 20],
  "block_out_channels": [320, 640, 1280],
  "center_input_sample": false,
  "class_embed_type": null,
  "class_embeddings_concat": false,
  "conv_in_kernel": 3,
  "conv_out_kernel": 3,
  "cross_attention_dim": 2048,
  "cross_attention_norm": null,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "downsample_padding": 1,
  "dual_cross_attention": false,
  "encoder_hid_dim": null,
  "encoder_hid_dim_type": null,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_only_cross_attention": null,
  "mid_block_scale_factor": 1,
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "num_attention_heads": null,
  "num_class_embeds": null,
  "only_cross_attention": false,
  "out_channels": 4,
  "projection_class_embeddings_input_dim": 2816,
  "resnet_out_scale_factor": 1.0,
  "resnet_skip_time_act": false,
  "resnet_time_scale_shift": "default",
  "sample_size": 128,
  "time_cond_proj_dim": null,
  "time_embedding_act_fn": null,
  "time_embedding_dim": null,
  "time_embedding_type": "positional",
  "timestep_post_act": null,
  "transformer_layers_per_block": [1, 2, 10],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "upcast_attention": null,
  "use_linear_projection": true
})json";

// The three VAEs share the architecture; sample size, scaling factor and version differ.
constexpr const char* kSd15Vae = R"json({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
})json";

constexpr const char* kSd21Vae = R"json({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.8.0",
  "_name_or_path": "hf-models/stable-diffusion-v2-768x768/vae",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 768,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
})json";

constexpr const char* kSdxlVae = R"json({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.20.0.dev0",
  "_name_or_path": "../sdxl-vae/",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "force_upcast": true,
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 1024,
  "scaling_factor": 0.13025,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
})json";

// OpenAI CLIP ViT-L/14 text tower (SD 1.x; SDXL's first encoder).
constexpr const char* kSd15TextEncoder = R"json({
  "_name_or_path": "openai/clip-vit-large-patch14",
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "torch_dtype": "float32",
  "transformers_version": "4.22.0.dev0",
  "vocab_size": 49408
})json";

// OpenCLIP ViT-H/14 text tower without its last layer (SD 2.x uses the penultimate layer's output).
constexpr const char* kSd21TextEncoder = R"json({
  "_name_or_path": "hf-models/stable-diffusion-v2-768x768/text_encoder",
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1024,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 16,
  "num_hidden_layers": 23,
  "pad_token_id": 1,
  "projection_dim": 512,
  "torch_dtype": "float32",
  "transformers_version": "4.25.0.dev0",
  "vocab_size": 49408
})json";

constexpr const char* kSdxlTextEncoder = R"json({
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "torch_dtype": "float16",
  "transformers_version": "4.32.0.dev0",
  "vocab_size": 49408
})json";

// OpenCLIP ViT-bigG/14 text tower with its projection.
constexpr const char* kSdxlTextEncoder2 = R"json({
  "architectures": ["CLIPTextModelWithProjection"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1280,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 5120,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 20,
  "num_hidden_layers": 32,
  "pad_token_id": 1,
  "projection_dim": 1280,
  "torch_dtype": "float16",
  "transformers_version": "4.32.0.dev0",
  "vocab_size": 49408
})json";

constexpr const char* kSd15Scheduler = R"json({
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
})json";

constexpr const char* kSd21Scheduler = R"json({
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.8.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
})json";

constexpr const char* kSdxlScheduler = R"json({
  "_class_name": "EulerDiscreteScheduler",
  "_diffusers_version": "0.19.0.dev0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "interpolation_type": "linear",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null,
  "use_karras_sigmas": false
})json";

// CLIPTokenizer settings; SD 1.x pads with <|endoftext|>, the OpenCLIP tokenizers with "!".
nlohmann::json tokenizer_config(const std::string& name_or_path, const std::string& pad_token) {
  auto token = [](const std::string& content) {
    return nlohmann::json{{"__type", "AddedToken"}, {"content", content}, {"lstrip", false},
                          {"normalized", true},     {"rstrip", false},    {"single_word", false}};
  };
  return {{"add_prefix_space", false},
          {"bos_token", token("<|startoftext|>")},
          {"do_lower_case", true},
          {"eos_token", token("<|endoftext|>")},
          {"errors", "replace"},
          {"model_max_length", 77},
          {"name_or_path", name_or_path},
          {"pad_token", pad_token},
          {"special_tokens_map_file", "./special_tokens_map.json"},
          {"tokenizer_class", "CLIPTokenizer"},
          {"unk_token", token("<|endoftext|>")}};
}

// model_index.json of a folder holding only what tide reads (no safety checker, no feature extractor).
nlohmann::json model_index(const std::string& pipeline, const std::string& scheduler, bool xl) {
  nlohmann::json j = {{"_class_name", pipeline},
                      {"_diffusers_version", "0.25.0"},
                      {"feature_extractor", {nullptr, nullptr}},
                      {"scheduler", {"diffusers", scheduler}},
                      {"text_encoder", {"transformers", "CLIPTextModel"}},
                      {"tokenizer", {"transformers", "CLIPTokenizer"}},
                      {"unet", {"diffusers", "UNet2DConditionModel"}},
                      {"vae", {"diffusers", "AutoencoderKL"}}};
  if (xl) {
    j["force_zeros_for_empty_prompt"] = true;
    j["text_encoder_2"] = {"transformers", "CLIPTextModelWithProjection"};
    j["tokenizer_2"] = {"transformers", "CLIPTokenizer"};
  } else {
    j["requires_safety_checker"] = false;
    j["safety_checker"] = {nullptr, nullptr};
  }
  return j;
}

using Table = std::map<std::string, nlohmann::json>;

const std::map<std::string, Table>& all_presets() {
  static const std::map<std::string, Table> presets = [] {
    using nlohmann::json;
    std::map<std::string, Table> p;
    p["sd15"] = {{"unet", json::parse(kSd15Unet)},
                 {"vae", json::parse(kSd15Vae)},
                 {"text_encoder", json::parse(kSd15TextEncoder)},
                 {"scheduler", json::parse(kSd15Scheduler)},
                 {"tokenizer", tokenizer_config("openai/clip-vit-large-patch14", "<|endoftext|>")},
                 {"model_index", model_index("StableDiffusionPipeline", "PNDMScheduler", false)}};
    p["sd21"] = {{"unet", json::parse(kSd21Unet)},
                 {"vae", json::parse(kSd21Vae)},
                 {"text_encoder", json::parse(kSd21TextEncoder)},
                 {"scheduler", json::parse(kSd21Scheduler)},
                 {"tokenizer", tokenizer_config("hf-models/stable-diffusion-v2-768x768/tokenizer", "!")},
                 {"model_index", model_index("StableDiffusionPipeline", "DDIMScheduler", false)}};
    p["sdxl"] = {{"unet", json::parse(kSdxlUnet)},
                 {"vae", json::parse(kSdxlVae)},
                 {"text_encoder", json::parse(kSdxlTextEncoder)},
                 {"text_encoder_2", json::parse(kSdxlTextEncoder2)},
                 {"scheduler", json::parse(kSdxlScheduler)},
                 {"tokenizer", tokenizer_config("openai/clip-vit-large-patch14", "<|endoftext|>")},
                 {"tokenizer_2", tokenizer_config("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "!")},
                 {"model_index", model_index("StableDiffusionXLPipeline", "EulerDiscreteScheduler", true)}};
    return p;
  }();
  return presets;
}

const Table& preset(const std::string& family) {
  const auto& presets = all_presets();
  auto it = presets.find(family);
  if (it == presets.end()) {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown model preset '" + family + "' (known: " + names + ")");
  }
  return it->second;
}

}  // namespace

std::vector<std::string> preset_names() { return {"sd15", "sd21", "sdxl"}; }

std::vector<std::string> preset_components(const std::string& family) {
  std::vector<std::string> names;
  for (const auto& [component, config] : preset(family)) names.push_back(component);
  return names;
}

nlohmann::json preset_config(const std::string& family, const std::string& component) {
  const Table& table = preset(family);
  auto it = table.find(component);
  if (it == table.end()) {
    std::string names;
    for (const auto& [name, config] : table) names += (names.empty() ? "" : ", ") + name;
    throw Error("model preset '" + family + "' has no component '" + component + "' (it has: " + names + ")");
  }
  return it->second;
}

}  // namespace tide::models::presets
