// The LoRA files a server can apply: the .safetensors files under its --lora-dir folders (subfolders too),
// named by file name without extension, as A1111's Lora folder. Prompts name them with <lora:NAME:WEIGHT>
// tags (text/extra_networks.h), which are cut out and resolved here; the job applies them to the pipeline.
#pragma once
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tide/adapters/lora_set.h"

namespace tide::server {

struct LoraFile {
  std::string name;  // file name without .safetensors: what tags use
  std::filesystem::path path;
};

struct PromptLoras {
  std::string prompt;                     // without its tags
  std::vector<adapters::LoraSpec> loras;  // in the order of the tags
};

class LoraLibrary {
 public:
  explicit LoraLibrary(std::vector<std::filesystem::path> dirs);

  // Lists the folders again (also done when a tag names a file not seen yet).
  void refresh();
  std::vector<LoraFile> files() const;
  std::optional<LoraFile> find(const std::string& name) const;

  // Cuts the <lora:...> tags out of `prompt` and resolves their names here (never as paths: a request cannot
  // reach files outside the folders). tide::Error naming the tag for an unknown name or a bad tag.
  PromptLoras resolve(const std::string& prompt);

  // A1111's "Lora hashes" value for these LoRAs: `name: first 12 hex digits of the file's sha256, ...`
  // (hashes computed once per file and kept).
  std::string hashes(const std::vector<adapters::LoraSpec>& loras);

 private:
  std::vector<std::filesystem::path> dirs_;
  mutable std::mutex mutex_;
  std::vector<LoraFile> files_;  // sorted by path; the first of equal names wins
  std::map<std::filesystem::path, std::string> hashes_;  // file -> its short sha256
};

// Cuts the tags out of `prompt` and returns their LoRAs (`library`->resolve); without a library (no --lora-dir)
// a prompt with tags is a tide::Error saying so, and `prompt` is left as it was.
std::vector<adapters::LoraSpec> take_prompt_loras(LoraLibrary* library, std::string& prompt);

}  // namespace tide::server
