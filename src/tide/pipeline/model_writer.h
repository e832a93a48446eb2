// Writes a loaded pipeline back as a diffusers folder with its weights as they are held in memory: int8
// weights with their `*.weight_scale` tensors, 16-bit weights as 16-bit. What `tide quantize` makes, and
// what tide loads like any diffusers folder (the int8 layers stay int8, see LoadOptions::weights).
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tide/io/weights.h"
#include "tide/pipeline/stable_diffusion.h"

namespace tide::pipeline {

// `parts`: what the pipeline was loaded from (its configs, tokenizer folders and class). `metadata` goes into
// every weight file's safetensors metadata. The folder is built under a temporary name next to `folder` and
// renamed when complete, so a failure leaves nothing behind; an existing `folder` is a tide::Error.
void write_pipeline_folder(StableDiffusionPipeline& pipe, const PipelineParts& parts, const std::filesystem::path& folder,
                           const std::map<std::string, std::string>& metadata = {});

// The weights of a loaded pipeline's components ("unet", "vae", "text_encoder"[, "text_encoder_2"]) under their
// diffusers names, as held in memory (int8 with their scales, 16-bit as 16-bit), for write_single_file. The
// sources refer to the pipeline's tensors: they stay valid while the pipeline does and is not changed.
std::map<std::string, io::WeightSource> pipeline_weights(StableDiffusionPipeline& pipe);

}  // namespace tide::pipeline
