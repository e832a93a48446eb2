// Diffusers pipelines straight from the Hugging Face Hub, into the standard HF cache (the one
// huggingface_hub and diffusers use, see hub_cache.h), like huggingface_hub's snapshot_download
// restricted to the files a text-to-image pipeline reads: model_index.json, the component
// configs, the CLIP tokenizer files and the safetensors weights — never .bin/.ckpt/.onnx/.msgpack,
// safety_checker or feature_extractor.
//
// Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (else $HF_TOKEN_PATH or
// $HF_HOME/token), HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE=1 (use only the cache).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace tide::hub {

struct Options {
  std::string revision = "main";     // branch, tag or commit hash
  std::string variant;               // "fp16": *.fp16.safetensors where a component has them
  std::vector<std::string> components;  // only these components (e.g. "tokenizer"); empty: all the pipeline needs
  std::string endpoint;              // "" → $HF_ENDPOINT, else https://huggingface.co
  std::filesystem::path cache_dir;   // "" → default_cache_dir()
  std::optional<std::string> token;  // unset → $HF_TOKEN, else the token file
  std::optional<bool> offline;       // unset → $HF_HUB_OFFLINE
  bool progress = true;              // a progress bar per file when stderr is a terminal
  int max_attempts = 5;              // per file, without progress, on dropped connections and 5xx
  double retry_wait_seconds = 1.0;   // doubled after each failed attempt, at most 8 s
};

// "org/name" or "org/name@revision"; nullopt when `text` is not shaped like a Hub model id.
struct RepoRef {
  std::string repo_id;
  std::optional<std::string> revision;
};
std::optional<RepoRef> parse_repo_ref(const std::string& text);

// Downloads (or finds in the cache) what the pipeline needs of `repo_id` at options.revision
// and returns the snapshot folder, a diffusers model folder. Files already in the snapshot
// cost no request; interrupted downloads resume; every blob is checked (size, and sha256 for
// LFS files) before it gets its final name. Throws tide::Error with a message saying what to do.
std::filesystem::path snapshot_download(const std::string& repo_id, const Options& options = {});

// The files of `files` (repo-relative paths) that the pipeline needs, given its model_index.json:
// for each non-null component (except safety_checker and feature_extractor) its configs,
// tokenizer files and safetensors weights (+ index and shards) — of `variant` where the
// component has that variant, else the plain ones.
std::vector<std::string> select_pipeline_files(const std::vector<std::string>& files, const nlohmann::json& model_index,
                                               const std::string& variant);

// The variant in a weight file name: "fp16" for model.fp16.safetensors,
// model.safetensors.index.fp16.json and model.fp16-00001-of-00002.safetensors; "" for plain ones.
std::string weight_variant(const std::string& file_name);

// "W/\"abc\"" → "abc"
std::string normalize_etag(const std::string& etag);

}  // namespace tide::hub
