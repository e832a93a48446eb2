// Original single-file checkpoints (the CompVis/LDM and Stability layouts: `model.diffusion_model.*`,
// `first_stage_model.*`, `cond_stage_model.*` / `conditioner.embedders.*`) presented as diffusers
// components, and diffusers components written back in that layout — the naming of diffusers'
// `loaders/single_file_utils.py` and `scripts/convert_diffusers_to_original_stable_diffusion.py`.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tide/io/weights.h"

namespace tide::io {
enum class GgmlType : uint32_t;  // io/gguf.h
}

namespace tide::pipeline {

enum class Family { SD1, SD2, SDXL };

std::string family_name(Family family);    // "sd1", "sd2", "sdxl"
std::string family_preset(Family family);  // the built-in configs: "sd15", "sd21", "sdxl"

// From tensor names and shapes: SD1 `cond_stage_model.transformer.text_model.*`, SD2 OpenCLIP
// `cond_stage_model.model.*`, SDXL `conditioner.embedders.0/1.*`. Anything else: tide::Error saying what
// the file holds.
Family detect_family(const io::WeightSource& checkpoint);

// The diffusers components of a family: "unet", "vae", "text_encoder"[, "text_encoder_2"].
std::vector<std::string> family_components(Family family);

// Each component's config ("unet", "vae", "text_encoder"[, "text_encoder_2"], "scheduler", "model_index"):
// the ones `tide convert` stored in the file's metadata ("config.<component>"), else the family preset
// (with the UNet's in/out channels read from the weights).
std::map<std::string, nlohmann::json> single_file_configs(const io::WeightSource& checkpoint, Family family);

// One WeightSource per component, named as diffusers names it, computed on demand from the checkpoint
// (nothing is read until a tensor is asked for). Unknown tensors are ignored: EMA copies, scheduler
// buffers, `position_ids`, `logit_scale`, SD2's unused last text layer, ...
std::map<std::string, io::WeightSource> components_from_single_file(const io::WeightSource& checkpoint, Family family);
std::map<std::string, io::WeightSource> components_from_single_file(
    const io::WeightSource& checkpoint, Family family, const std::map<std::string, nlohmann::json>& configs);

// Tensors of the checkpoint that map to nothing and are not known to be ignorable (for checks and messages).
std::vector<std::string> unmapped_tensors(const io::WeightSource& checkpoint, Family family,
                                          const std::map<std::string, nlohmann::json>& configs);

// The reverse: diffusers components -> original names with the inverse transforms (q/k/v concatenated,
// 1x1 conv VAE attention, transposed projection), on demand. A tensor with no original name is an error.
io::WeightSource single_file_source(Family family, const std::map<std::string, io::WeightSource>& components,
                                    const std::map<std::string, nlohmann::json>& configs);
// The same, read into memory, in name order.
std::vector<std::pair<std::string, at::Tensor>> to_single_file(Family family,
                                                                const std::map<std::string, io::WeightSource>& components,
                                                                const std::map<std::string, nlohmann::json>& configs);

// The family of a diffusers model from its component configs: a second text encoder means SDXL; an
// OpenCLIP text encoder (gelu) SD2; else SD1.
Family family_of_configs(const std::map<std::string, nlohmann::json>& configs);

// A whole single-file model: family, configs and components.
struct SingleFileModel {
  Family family = Family::SD1;
  std::map<std::string, nlohmann::json> configs;
  std::map<std::string, io::WeightSource> components;
};
// `file`: safetensors, torch.save (.ckpt) or GGUF (gguf_checkpoint.h).
SingleFileModel read_single_file(const std::filesystem::path& file);

// Writes `components` as one original-layout safetensors file (atomically), every config stored in the
// metadata (with `metadata`) so that the file reads back as the same model; floating tensors converted to
// `dtype` if given. int8 weights (tide quantize) keep their float32 scales beside them as "<original>_scale".
void write_single_file(const std::filesystem::path& file, Family family,
                       const std::map<std::string, io::WeightSource>& components,
                       const std::map<std::string, nlohmann::json>& configs,
                       std::optional<at::ScalarType> dtype = std::nullopt,
                       std::map<std::string, std::string> metadata = {});

// The same checkpoint as a GGUF file, as stable-diffusion.cpp's convert lays one out (tide reads it too):
// matrices and convolutions whose last dimension fits `type`'s 32-value blocks in `type`, other matrices and
// convolutions in F16 (F32 when `type` is F32), vectors in F32, integer tensors as they are; the configs in
// metadata as write_single_file keeps them. Written atomically.
void write_gguf_single_file(const std::filesystem::path& file, Family family,
                            const std::map<std::string, io::WeightSource>& components,
                            const std::map<std::string, nlohmann::json>& configs, io::GgmlType type);

}  // namespace tide::pipeline
