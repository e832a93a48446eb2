// The models a server can use: diffusers folders and single-file checkpoints found in --models folders, plus
// any named on the command line. A model loads on first use and stays warm; beyond `max_loaded` pipelines, or
// while the process holds more than `memory_budget_bytes`, the least recently used ones are dropped.
#pragma once
#include <cstdint>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tide/pipeline/stable_diffusion.h"

namespace tide::server {

struct ModelEntry {
  std::string name;    // folder name, or file name without extension: what APIs accept
  std::string source;  // what pipeline::model_parts loads: a path, or a Hub id
  std::string kind;    // "diffusers" | "single-file" | "hub"
  std::string filename() const;  // as A1111's sd-models lists it
};

// A loaded model and the embedding tokens installed into it (expanded in prompts).
struct LoadedModel {
  ModelEntry entry;
  std::unique_ptr<pipeline::StableDiffusionPipeline> pipeline;
  std::vector<std::string> embedding_tokens;
};

struct RegistryOptions {
  std::vector<std::filesystem::path> model_dirs;
  std::vector<std::string> extra_models;  // --model values that are not names in model_dirs (paths, Hub ids)
  std::vector<std::filesystem::path> embedding_dirs;
  // Also list the diffusers models in the Hugging Face cache (hub::default_cache_dir()), by Hub id.
  bool include_hf_cache = false;
  size_t max_loaded = 1;
  // After a load, models other than the one just loaded are dropped (least recently used first) while the
  // process's resident memory is above this; 0 = no budget. The model in use is never dropped.
  int64_t memory_budget_bytes = 0;
  pipeline::LoadOptions load;
  pipeline::StableDiffusionPipeline::ComputeSettings compute;
};

class ModelRegistry {
 public:
  explicit ModelRegistry(RegistryOptions options);

  // Lists the folders again (A1111's /refresh-checkpoints).
  void refresh();
  std::vector<ModelEntry> models() const;
  // By name, A1111 title ("name [hash]"), file name with extension, or source; nullopt when unknown.
  std::optional<ModelEntry> find(const std::string& name) const;
  // The model new requests use when they name none: the first listed until set_current.
  std::string current() const;
  // Throws tide::Error for an unknown name (listing the known ones).
  void set_current(const std::string& name);
  // The embedding files in the --embeddings folders: {token (file stem), path}.
  std::vector<std::pair<std::string, std::filesystem::path>> embeddings() const;
  std::vector<std::string> loaded_names() const;

  // The model, loaded if it is not (call from one thread at a time: the generation worker). Evicts the least
  // recently used beyond max_loaded and the memory budget. The pointer stays valid until the next acquire
  // from that thread.
  std::shared_ptr<LoadedModel> acquire(const std::string& name);

 private:
  std::shared_ptr<LoadedModel> load(const ModelEntry& entry) const;
  RegistryOptions options_;
  mutable std::mutex mutex_;
  std::vector<ModelEntry> entries_;
  std::string current_;
  std::list<std::shared_ptr<LoadedModel>> loaded_;  // most recently used first
};

}  // namespace tide::server
