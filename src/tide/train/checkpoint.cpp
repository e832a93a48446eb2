#include "tide/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "tide/io/atomic_file.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/error.h"
#include "tide/text/embeddings.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStateFile = "training_state.json";
constexpr const char* kTensorFile = "optimizer_state.safetensors";

// "checkpoint-12" -> 12; anything else -> -1.
int64_t checkpoint_step(const fs::path& dir) {
  const std::string name = dir.filename().string();
  const std::string prefix = "checkpoint-";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

}  // namespace

std::vector<fs::path> list_checkpoints(const fs::path& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (fs::is_directory(output_dir))
    for (const auto& entry : fs::directory_iterator(output_dir))
      if (entry.is_directory() && checkpoint_step(entry.path()) >= 0)
        found.emplace_back(checkpoint_step(entry.path()), entry.path());
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

fs::path save_checkpoint(const fs::path& output_dir, const TrainingState& state, const RunSignature& signature,
                         std::optional<int> total_limit) {
  if (total_limit && *total_limit > 0) {
    // Like diffusers: before saving, keep at most total_limit - 1.
    auto existing = list_checkpoints(output_dir);
    const fs::path target = output_dir / ("checkpoint-" + std::to_string(state.global_step));
    existing.erase(std::remove(existing.begin(), existing.end(), target), existing.end());
    const int64_t excess = static_cast<int64_t>(existing.size()) - *total_limit + 1;
    for (int64_t i = 0; i < excess; ++i) fs::remove_all(existing[static_cast<size_t>(i)]);
  }
  const fs::path final_dir = output_dir / ("checkpoint-" + std::to_string(state.global_step));
  const fs::path tmp = output_dir / (".checkpoint-" + std::to_string(state.global_step) + ".tmp-" +
                                     std::to_string(::getpid()));
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    text::write_embedding_file(tmp / "learned_embeds.safetensors", signature.placeholder_token, state.vectors);
    io::write_safetensors(tmp / kTensorFile, {{"vectors", state.vectors.to(at::kFloat)},
                                              {"exp_avg", state.exp_avg},
                                              {"exp_avg_sq", state.exp_avg_sq}});
    const nlohmann::json json = {{"global_step", state.global_step},
                                 {"epoch", state.epoch},
                                 {"index", state.index},
                                 {"seed", state.seed},
                                 {"adam_steps", state.adam_steps},
                                 {"lr_scheduler_steps", state.lr_scheduler_steps},
                                 {"placeholder_token", signature.placeholder_token},
                                 {"num_vectors", signature.num_vectors},
                                 {"global_batch_size", signature.global_batch_size},
                                 {"gradient_accumulation_steps", signature.gradient_accumulation_steps},
                                 {"dataset_length", signature.dataset_length}};
    io::write_file_atomically(tmp / kStateFile, json.dump(2) + "\n");
    fs::remove_all(final_dir);  // a checkpoint of the same step from an earlier run
    fs::rename(tmp, final_dir);
  } catch (const fs::filesystem_error& e) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw Error("cannot write checkpoint " + final_dir.string() + ": " + e.what());
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
  return final_dir;
}

std::optional<fs::path> resolve_checkpoint(const fs::path& output_dir, const std::string& spec) {
  if (spec == "latest") {
    const auto all = list_checkpoints(output_dir);
    if (all.empty()) return std::nullopt;
    return all.back();
  }
  const fs::path given(spec);
  if (fs::is_directory(given) && fs::exists(given / kStateFile)) return given;
  const fs::path named = output_dir / given.filename();
  if (fs::is_directory(named) && fs::exists(named / kStateFile)) return named;
  throw Error("checkpoint '" + spec + "' not found (looked for " + given.string() + " and " + named.string() +
              "); use a checkpoint-<step> folder or 'latest'");
}

TrainingState load_checkpoint(const fs::path& dir, const RunSignature& expected) {
  const nlohmann::json json = io::read_json(dir / kStateFile);
  auto mismatch = [&](const std::string& what, const std::string& saved, const std::string& now) {
    throw Error("cannot resume from " + dir.string() + ": it was written with " + what + " " + saved + ", this run has " +
                now);
  };
  const auto token = io::json_get<std::string>(json, "placeholder_token", "");
  if (token != expected.placeholder_token) mismatch("placeholder token", token, expected.placeholder_token);
  for (const auto& [key, value] : std::vector<std::pair<std::string, int64_t>>{
           {"num_vectors", expected.num_vectors},
           {"global_batch_size", expected.global_batch_size},
           {"gradient_accumulation_steps", expected.gradient_accumulation_steps},
           {"dataset_length", expected.dataset_length}}) {
    const auto saved = io::json_get<int64_t>(json, key, -1);
    if (saved != value) mismatch(key, std::to_string(saved), std::to_string(value));
  }
  TrainingState s;
  s.global_step = io::json_get<int64_t>(json, "global_step", 0);
  s.epoch = io::json_get<int64_t>(json, "epoch", 0);
  s.index = io::json_get<int64_t>(json, "index", 0);
  s.seed = io::json_get<uint64_t>(json, "seed", 0);
  s.adam_steps = io::json_get<int64_t>(json, "adam_steps", 0);
  s.lr_scheduler_steps = io::json_get<int64_t>(json, "lr_scheduler_steps", 0);
  io::SafetensorsFile tensors(dir / kTensorFile);
  for (const char* name : {"vectors", "exp_avg", "exp_avg_sq"})
    if (!tensors.contains(name)) throw Error(dir.string() + ": " + kTensorFile + " has no tensor '" + name + "'");
  s.vectors = tensors.tensor("vectors").to(at::kFloat);
  s.exp_avg = tensors.tensor("exp_avg").to(at::kFloat);
  s.exp_avg_sq = tensors.tensor("exp_avg_sq").to(at::kFloat);
  if (s.vectors.dim() != 2 || s.vectors.size(0) != expected.num_vectors)
    throw Error(dir.string() + ": the saved vectors do not have " + std::to_string(expected.num_vectors) + " rows");
  return s;
}

}  // namespace tide::train
