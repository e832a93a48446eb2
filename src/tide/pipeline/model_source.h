// Where a model comes from: the --model argument as a user gives it — a diffusers folder, an original
// single-file checkpoint (.safetensors, .ckpt, .gguf), or a Hugging Face Hub id (org/name[@revision]).
#pragma once
#include <filesystem>
#include <string>

#include "tide/pipeline/stable_diffusion.h"

namespace tide::pipeline {

// A diffusers folder: a local folder as it is, a Hub id downloaded into (or found in) the HF cache
// (with `variant` weights where they exist). Anything else is an error that says what was looked for.
// `revision` (a branch, tag or commit) applies to Hub ids without an `@revision` of their own.
std::filesystem::path resolve_model(const std::string& model, const std::string& variant = "",
                                    const std::string& revision = "");

// Configs and weight sources of any of the three forms: the one model loader behind generate, info, convert,
// bench and train-ti. A single file takes its tokenizer from
// options.tokenizer, else from the family's reference model on the Hub (cached or downloaded).
PipelineParts model_parts(const std::string& model, const LoadOptions& options = {});

}  // namespace tide::pipeline
