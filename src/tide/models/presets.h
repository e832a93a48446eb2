// Built-in configs of the released checkpoints, exactly as their diffusers `config.json` files read:
// "sd15" (runwayml/stable-diffusion-v1-5), "sd21" (stabilityai/stable-diffusion-2-1, v-prediction, 768 px)
// and "sdxl" (stabilityai/stable-diffusion-xl-base-1.0). They let a benchmark build full-size models with
// random weights without any download, and give original single-file checkpoints their architecture.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tide::models::presets {

// "sd15", "sd21", "sdxl".
std::vector<std::string> preset_names();

// The components a preset has: "unet", "vae", "text_encoder", ["text_encoder_2"], "scheduler",
// "tokenizer", ["tokenizer_2"], "model_index".
std::vector<std::string> preset_components(const std::string& family);

// `family`'s config of `component`: config.json (unet, vae, text encoders), scheduler_config.json
// ("scheduler"), tokenizer_config.json ("tokenizer", "tokenizer_2"), model_index.json ("model_index", as
// a folder without safety checker writes it). Unknown family or component: tide::Error naming both.
nlohmann::json preset_config(const std::string& family, const std::string& component);

}  // namespace tide::models::presets
