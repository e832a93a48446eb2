#include "tide/server/lora_library.h"

#include <algorithm>

#include "tide/adapters/lora_argument.h"
#include "tide/runtime/error.h"
#include "tide/runtime/sha256.h"
#include "tide/text/extra_networks.h"

namespace tide::server {
namespace fs = std::filesystem;

LoraLibrary::LoraLibrary(std::vector<fs::path> dirs) : dirs_(std::move(dirs)) {
  for (const auto& dir : dirs_)
    if (!fs::is_directory(dir)) throw Error("LoRA folder " + dir.string() + " is not a folder");
  refresh();
}

void LoraLibrary::refresh() {
  std::vector<LoraFile> found;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    std::vector<fs::path> paths;
    for (fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
         !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".safetensors" && fs::is_regular_file(it->path())) paths.push_back(it->path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) found.push_back({p.stem().string(), p});
  }
  std::lock_guard<std::mutex> lock(mutex_);
  files_ = std::move(found);
}

std::vector<LoraFile> LoraLibrary::files() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return files_;
}

std::optional<LoraFile> LoraLibrary::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& f : files_)
    if (f.name == name) return f;
  return std::nullopt;
}

PromptLoras LoraLibrary::resolve(const std::string& prompt) {
  const text::PromptWithLoras tagged = text::extract_lora_tags(prompt);
  PromptLoras out{tagged.prompt, {}};
  for (const auto& tag : tagged.loras) {
    auto file = find(tag.name);
    if (!file && !dirs_.empty()) {
      refresh();  // a file added since the last listing
      file = find(tag.name);
    }
    if (!file)
      throw Error("<lora:" + tag.name + ">: no LoRA named '" + tag.name + "'" +
                  (dirs_.empty() ? std::string(" (tide serve was started without --lora-dir)")
                                 : " in the --lora-dir folders (see /sdapi/v1/loras)"));
    adapters::LoraSpec spec{file->path, tag.unet_weight, std::nullopt};
    if (tag.text_encoder_weight != tag.unet_weight) spec.text_encoder_weight = tag.text_encoder_weight;
    out.loras.push_back(spec);
  }
  return out;
}

std::string LoraLibrary::hashes(const std::vector<adapters::LoraSpec>& loras) {
  std::string out;
  for (const auto& l : loras) {
    std::string hash;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = hashes_.find(l.file); it != hashes_.end()) hash = it->second;
    }
    if (hash.empty()) {
      hash = runtime::sha256_file(l.file).substr(0, 12);
      std::lock_guard<std::mutex> lock(mutex_);
      hashes_[l.file] = hash;
    }
    out += (out.empty() ? "" : ", ") + adapters::lora_label(l) + ": " + hash;
  }
  return out;
}

std::vector<adapters::LoraSpec> take_prompt_loras(LoraLibrary* library, std::string& prompt) {
  PromptLoras tagged = library ? library->resolve(prompt) : LoraLibrary({}).resolve(prompt);
  prompt = std::move(tagged.prompt);
  return std::move(tagged.loras);
}

}  // namespace tide::server
