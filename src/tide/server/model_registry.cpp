#include "tide/server/model_registry.h"

#include <algorithm>
#include <fstream>
#include <iostream>

#include "tide/hub/hub_cache.h"

#include "tide/pipeline/model_source.h"
#include "tide/runtime/error.h"
#include "tide/runtime/memory.h"
#include "tide/text/embeddings.h"

namespace tide::server {
namespace fs = std::filesystem;
namespace {

bool is_checkpoint_file(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".safetensors" || ext == ".ckpt" || ext == ".gguf";
}

// A --model value as an entry: a folder or file on disk, else a Hub id.
ModelEntry entry_for(const std::string& model) {
  std::string trimmed = model;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const fs::path path(trimmed);
  if (fs::is_regular_file(path)) return {path.stem().string(), trimmed, "single-file"};
  if (fs::is_directory(path)) return {path.filename().string(), trimmed, "diffusers"};
  return {trimmed, trimmed, "hub"};
}

}  // namespace

std::string ModelEntry::filename() const {
  return kind == "hub" ? source : fs::path(source).filename().string();
}

ModelRegistry::ModelRegistry(RegistryOptions options) : options_(std::move(options)) {
  for (const auto& dir : options_.model_dirs)
    if (!fs::is_directory(dir)) throw Error("--models " + dir.string() + " is not a folder");
  for (const auto& dir : options_.embedding_dirs)
    if (!fs::is_directory(dir)) throw Error("--embeddings " + dir.string() + " is not a folder");
  refresh();
}

void ModelRegistry::refresh() {
  std::vector<ModelEntry> found;
  auto add = [&](ModelEntry e) {
    for (const auto& f : found)
      if (f.name == e.name) return;  // the first of a name wins
    found.push_back(std::move(e));
  };
  for (const auto& model : options_.extra_models) add(entry_for(model));
  for (const auto& dir : options_.model_dirs) {
    if (fs::exists(dir / "model_index.json")) add({dir.filename().string(), dir.string(), "diffusers"});
    std::vector<fs::path> paths;
    std::error_code ec;
    for (const auto& item : fs::directory_iterator(dir, ec)) paths.push_back(item.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) {
      if (fs::is_directory(p) && fs::exists(p / "model_index.json")) add({p.filename().string(), p.string(), "diffusers"});
      else if (fs::is_regular_file(p) && is_checkpoint_file(p)) add({p.stem().string(), p.string(), "single-file"});
    }
  }
  if (options_.include_hf_cache) {
    // models--org--name folders whose main snapshot is a diffusers pipeline.
    std::vector<fs::path> repos;
    std::error_code ec;
    for (const auto& item : fs::directory_iterator(hub::default_cache_dir(), ec)) repos.push_back(item.path());
    std::sort(repos.begin(), repos.end());
    for (const auto& repo : repos) {
      const std::string folder = repo.filename().string();
      if (folder.rfind("models--", 0) != 0) continue;
      std::string id = folder.substr(8);
      const size_t separator = id.find("--");
      if (separator != std::string::npos) id.replace(separator, 2, "/");
      std::ifstream ref(repo / "refs" / "main");
      std::string commit;
      if (!(ref >> commit)) continue;
      if (fs::exists(repo / "snapshots" / commit / "model_index.json")) add({id, id, "hub"});
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  entries_ = std::move(found);
  const bool current_listed = std::any_of(entries_.begin(), entries_.end(), [&](const auto& e) { return e.name == current_; });
  if (!current_listed) current_ = entries_.empty() ? "" : entries_.front().name;
}

std::vector<ModelEntry> ModelRegistry::models() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_;
}

std::optional<ModelEntry> ModelRegistry::find(const std::string& raw) const {
  std::string name = raw;
  // A1111 titles: "name.safetensors [hash]".
  const size_t bracket = name.find(" [");
  if (bracket != std::string::npos && !name.empty() && name.back() == ']') name = name.substr(0, bracket);
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& e : entries_)
    if (e.name == name || e.filename() == name || e.source == name) return e;
  return std::nullopt;
}

std::string ModelRegistry::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

void ModelRegistry::set_current(const std::string& name) {
  const auto entry = find(name);
  if (!entry) {
    std::string known;
    for (const auto& e : models()) known += (known.empty() ? "" : ", ") + e.name;
    throw Error("model '" + name + "' not found; known models: " + (known.empty() ? "(none)" : known));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  current_ = entry->name;
}

std::vector<std::pair<std::string, fs::path>> ModelRegistry::embeddings() const {
  std::vector<std::pair<std::string, fs::path>> out;
  for (const auto& dir : options_.embedding_dirs) {
    std::error_code ec;
    for (const auto& item : fs::directory_iterator(dir, ec)) {
      const std::string ext = item.path().extension().string();
      if (item.is_regular_file() && (ext == ".safetensors" || ext == ".pt" || ext == ".bin"))
        out.emplace_back(item.path().stem().string(), item.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> ModelRegistry::loaded_names() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> names;
  for (const auto& m : loaded_) names.push_back(m->entry.name);
  return names;
}

std::shared_ptr<LoadedModel> ModelRegistry::load(const ModelEntry& entry) const {
  auto model = std::make_shared<LoadedModel>();
  model->entry = entry;
  model->pipeline = pipeline::StableDiffusionPipeline::from_parts(pipeline::model_parts(entry.source, options_.load));
  model->pipeline->set_compute_settings(options_.compute);
  // Embeddings of another family (an SDXL one for an SD 1.5 model) do not fit: skipped with a note, as A1111 does.
  for (const auto& [token, path] : embeddings()) {
    try {
      const auto embedding = text::read_embedding_file(path, token);
      model->pipeline->install_embedding(embedding);
      model->embedding_tokens.push_back(embedding.token);
    } catch (const Error& e) {
      std::cerr << "embedding " << path.string() << " skipped for " << entry.name << ": " << e.what() << "\n";
    }
  }
  return model;
}

std::shared_ptr<LoadedModel> ModelRegistry::acquire(const std::string& requested) {
  const std::string name = requested.empty() ? current() : requested;
  const auto entry = find(name);
  if (!entry) {
    std::string known;
    for (const auto& e : models()) known += (known.empty() ? "" : ", ") + e.name;
    throw Error("model '" + name + "' not found; known models: " + (known.empty() ? "(none)" : known));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
      if ((*it)->entry.name == entry->name) {
        auto model = *it;
        loaded_.erase(it);
        loaded_.push_front(model);
        return model;
      }
    }
    // Drop before loading, so that two models' weights are never held beyond the limit at once.
    while (!loaded_.empty() && loaded_.size() >= std::max<size_t>(1, options_.max_loaded)) loaded_.pop_back();
  }
  std::cerr << "loading model " << entry->name << " (" << entry->source << ")\n";
  auto model = load(*entry);
  std::lock_guard<std::mutex> lock(mutex_);
  loaded_.push_front(model);
  if (options_.memory_budget_bytes > 0) {
    while (loaded_.size() > 1 && runtime::current_rss_bytes() > options_.memory_budget_bytes) {
      std::cerr << "dropping model " << loaded_.back()->entry.name << " (over the memory budget)\n";
      loaded_.pop_back();
      runtime::return_free_memory();  // so that the next look at the resident memory sees the drop
    }
  }
  return model;
}

}  // namespace tide::server
