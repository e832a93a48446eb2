// The command line's LoRA argument: FILE[:WEIGHT], FILE a path or, with a LoRA folder, a name in it.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tide/adapters/lora_set.h"

namespace tide::adapters {

// "dir/pixel-art.safetensors:0.8" -> (that file, 0.8); no weight -> 1. The text after the last ':' is the
// weight only if it reads as a number, so paths with ':' still work. A name that is no existing file is
// looked up in `lora_dir` as NAME and NAME.safetensors. tide::Error when no file is found or the weight is
// not finite.
LoraSpec parse_lora_argument(const std::string& argument, const std::optional<std::filesystem::path>& lora_dir);

// How the LoRA is named in an image's parameters: the file name without .safetensors.
std::string lora_label(const LoraSpec& spec);

// Whether two LoRA lists merge into the same weights (same files, weights and text-encoder weights, in order).
bool same_loras(const std::vector<LoraSpec>& a, const std::vector<LoraSpec>& b);

}  // namespace tide::adapters
