// Stable Diffusion GGUF files (what stable-diffusion.cpp's `convert` writes and its users download) presented
// as an original single-file checkpoint, so that single_file.h's one name table maps them to diffusers.
//
// The names in those files depend on the stable-diffusion.cpp version that wrote them:
// - since late 2025: the original checkpoint's names, unchanged;
// - before: its internal names, where the text encoders are renamed to Hugging Face CLIP names —
//   SD 2.x `cond_stage_model.model.*` (OpenCLIP) became `cond_stage_model.transformer.text_model.*`, SDXL's
//   `conditioner.embedders.0.*` became `cond_stage_model.*` and `conditioner.embedders.1.model.*` became
//   `cond_stage_model.1.transformer.text_model.*`; OpenCLIP's fused `attn.in_proj_*` is kept as
//   `self_attn.in_proj.*` (2025) or split into `self_attn.{q,k,v}_proj.*` (2024); the UNet's linear
//   `proj_in` / `proj_out` of SD 2.x and XL are stored as 1x1 convolutions [C, C, 1, 1] (2024).
// - UNet-only files (ComfyUI-GGUF and others) name the UNet `input_blocks.*` or `diffusion_model.*`.
// Values are never changed otherwise (OpenCLIP's text_projection keeps its [D, P] orientation).
#pragma once
#include <filesystem>

#include "tide/io/weights.h"

namespace tide::pipeline {

// The GGUF file's tensors under original checkpoint names (read on demand, dequantized to float32 where
// they are quantized), its metadata as the source's metadata. A file that holds only a UNet, or no Stable
// Diffusion model, gives a tide::Error saying what it holds.
io::WeightSource gguf_checkpoint(const std::filesystem::path& file);

}  // namespace tide::pipeline
