#include "tide/pipeline/model_source.h"

#include "tide/io/json_file.h"
#include "tide/hub/hub.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

// The released pipeline whose tokenizer(s) a family's single files were trained with.
std::string reference_repo(Family family) {
  switch (family) {
    case Family::SD1: return "stable-diffusion-v1-5/stable-diffusion-v1-5";
    case Family::SD2: return "stabilityai/stable-diffusion-2-1";
    case Family::SDXL: return "stabilityai/stable-diffusion-xl-base-1.0";
  }
  return "";
}

void find_tokenizers(PipelineParts& parts, Family family, const fs::path& given) {
  const bool xl = family == Family::SDXL;
  fs::path root = given;
  if (root.empty()) {
    hub::Options options;
    options.components = xl ? std::vector<std::string>{"tokenizer", "tokenizer_2"} : std::vector<std::string>{"tokenizer"};
    try {
      root = hub::snapshot_download(reference_repo(family), options);
    } catch (const Error& e) {
      throw Error(std::string("a single-file checkpoint holds no tokenizer, and the ") + family_name(family) +
                  " tokenizer of " + reference_repo(family) + " could not be had (" + e.what() +
                  "); give a tokenizer folder with --tokenizer DIR");
    }
  }
  if (!fs::is_directory(root)) throw Error("tokenizer folder " + root.string() + " not found");
  // A model folder (tokenizer/, tokenizer_2/) or a bare tokenizer folder (vocab.json).
  const bool model_folder = fs::is_directory(root / "tokenizer");
  parts.tokenizer_dir = model_folder ? root / "tokenizer" : root;
  if (!fs::exists(parts.tokenizer_dir / "vocab.json"))
    throw Error("no tokenizer in " + root.string() + ": expected vocab.json and merges.txt, or a tokenizer/ folder");
  if (!xl) return;
  if (model_folder && fs::is_directory(root / "tokenizer_2")) {
    parts.tokenizer_2_dir = root / "tokenizer_2";
  } else {  // SDXL's second tokenizer is the first with "!" as padding
    parts.tokenizer_2_dir = parts.tokenizer_dir;
    parts.tokenizer_2_pad_token = "!";
  }
}

PipelineParts single_file_parts(const fs::path& file, const LoadOptions& options) {
  SingleFileModel model = read_single_file(file);
  PipelineParts parts;
  parts.description = file.string();
  const bool xl = model.family == Family::SDXL;
  parts.pipeline_class = xl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline";
  const auto& index = model.configs.count("model_index") ? model.configs.at("model_index") : nlohmann::json::object();
  parts.force_zeros_for_empty_prompt = xl && io::json_get<bool>(index, "force_zeros_for_empty_prompt", true);
  for (const auto& component : family_components(model.family)) parts.configs[component] = model.configs.at(component);
  parts.configs["scheduler"] = model.configs.at("scheduler");
  parts.weights = std::move(model.components);
  parts.weight_format = options.weights;
  if (options.tokenizers) find_tokenizers(parts, model.family, options.tokenizer);
  return parts;
}

}  // namespace

fs::path resolve_model(const std::string& model, const std::string& variant, const std::string& revision) {
  if (model.empty()) throw Error("no model given");
  const fs::path path(model);
  if (fs::is_directory(path)) return path;
  if (fs::exists(path)) throw Error(model + " is a file, not a diffusers model folder (with model_index.json)");
  // Not on disk: "org/name[@revision]" is a Hugging Face Hub model.
  if (const auto ref = hub::parse_repo_ref(model)) {
    hub::Options options;
    if (!revision.empty()) options.revision = revision;
    if (ref->revision) options.revision = *ref->revision;
    options.variant = variant;
    return hub::snapshot_download(ref->repo_id, options);
  }
  throw Error("model " + model + " not found: no such folder or file, nor a Hugging Face model id (org/name)");
}

PipelineParts model_parts(const std::string& model, const LoadOptions& options) {
  const fs::path path(model);
  if (fs::is_regular_file(path)) {
    const std::string ext = path.extension().string();
    if (ext != ".safetensors" && ext != ".ckpt" && ext != ".pt" && ext != ".pth" && ext != ".bin" && ext != ".gguf")
      throw Error(model + ": tide reads diffusers folders, Hub ids and single-file checkpoints (.safetensors, "
                  ".gguf, or .ckpt / .pt / .pth / .bin as torch.save writes them)");
    return single_file_parts(path, options);
  }
  return parts_from_folder(resolve_model(model, options.variant, options.revision), options);
}

}  // namespace tide::pipeline
