// Builds a complete, tiny SD 1.x-style diffusers folder with random weights in-process, so that
// pipeline and CLI tests run without any downloaded or fixture files.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tide/io/safetensors.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/autoencoder_tiny.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/pipeline/tiny_model.h"

namespace tide::testing {

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

inline void save_module(torch::nn::Module& module, const std::filesystem::path& file) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : module.named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) tensors.emplace_back(b.key(), b.value());
  std::filesystem::create_directories(file.parent_path());
  tide::io::write_safetensors(file, tensors);
}

// GPT-2's byte -> printable unicode character table, as UTF-8 strings.
inline std::vector<std::string> byte_symbols() {
  std::vector<std::string> out(256);
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    out[b] = utf8(printable ? b : 256 + extra++);
  }
  return out;
}

// Writes the folder (tide::pipeline::write_tiny_pipeline) and returns its path (`dir`).
inline std::filesystem::path make_tiny_pipeline(const std::filesystem::path& dir, uint64_t seed = 0) {
  tide::pipeline::write_tiny_pipeline(dir, seed);
  return dir;
}

// Writes a diffusers AutoencoderTiny folder that fits the tiny pipeline (4 latent channels, factor 2: two
// 16-channel blocks), random weights from a generator seeded with `seed`; returns `dir`.
inline std::filesystem::path make_tiny_taesd(const std::filesystem::path& dir, uint64_t seed = 0) {
  const nlohmann::json config = {{"_class_name", "AutoencoderTiny"},       {"encoder_block_out_channels", {16, 16}},
                                 {"decoder_block_out_channels", {16, 16}}, {"num_encoder_blocks", {1, 2}},
                                 {"num_decoder_blocks", {2, 1}},           {"latent_channels", 4}};
  at::manual_seed(seed);
  tide::models::AutoencoderTiny taesd(tide::models::AutoencoderTinyConfig::from_json(config));
  save_module(*taesd, dir / "diffusion_pytorch_model.safetensors");
  write_text(dir / "config.json", config.dump(2));
  return dir;
}

}  // namespace tide::testing
