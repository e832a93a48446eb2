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

}  // namespace tide::testing
