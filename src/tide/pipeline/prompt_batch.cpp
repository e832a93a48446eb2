#include "tide/pipeline/prompt_batch.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tide/adapters/lora_argument.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

template <typename T>
T field(const nlohmann::json& j, const char* key, const T& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(std::string("\"") + key + "\" has the wrong type");
  }
}

// A name that is safe as a file stem.
bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

std::vector<BatchItem> read_prompt_batch(const fs::path& file, const GenerationRequest& base) {
  std::ifstream in(file);
  if (!in) throw Error("cannot read the prompts file " + file.string());
  std::vector<BatchItem> items;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    text = trim(text);
    if (text.empty() || text[0] == '#') continue;
    BatchItem item;
    item.index = static_cast<int>(items.size());
    item.line = line;
    item.request = base;
    item.request.seed = base.seed + static_cast<uint64_t>(item.index);
    char name[16];
    std::snprintf(name, sizeof name, "%05d", item.index);
    item.name = name;
    if (text[0] != '{') {
      item.request.prompt = text;
    } else {
      try {
        const auto j = nlohmann::json::parse(text);
        if (!j.is_object()) throw Error("not a JSON object");
        if (!j.contains("prompt") || !j["prompt"].is_string()) throw Error("no \"prompt\" string");
        auto& r = item.request;
        r.prompt = j["prompt"].get<std::string>();
        if (j.contains("negative_prompt") && !j["negative_prompt"].is_null())
          r.negative_prompt = field<std::string>(j, "negative_prompt", "");
        r.seed = field<uint64_t>(j, "seed", r.seed);
        r.width = field<int>(j, "width", r.width);
        r.height = field<int>(j, "height", r.height);
        r.steps = field<int>(j, "steps", r.steps);
        r.guidance = field<double>(j, "guidance", r.guidance);
        r.scheduler = field<std::string>(j, "scheduler", r.scheduler);
        r.num_images = field<int>(j, "num_images", r.num_images);
        r.clip_skip = field<int>(j, "clip_skip", r.clip_skip);
        item.name = field<std::string>(j, "name", item.name);
        if (!valid_name(item.name))
          throw Error("\"name\" must be letters, digits, '-', '_' or '.', got '" + item.name + "'");
      } catch (const nlohmann::json::exception& e) {
        item.error = std::string("not valid JSON (") + e.what() + ")";
      } catch (const Error& e) {
        item.error = e.what();
      }
    }
    items.push_back(std::move(item));
  }
  // Two lines writing the same file would overwrite each other.
  std::map<std::string, int> first_line;
  for (auto& item : items) {
    const auto [it, inserted] = first_line.emplace(item.name, item.line);
    if (!inserted && item.error.empty())
      item.error = "the name " + item.name + " is already used by line " + std::to_string(it->second);
  }
  return items;
}

std::vector<fs::path> batch_outputs(const BatchItem& item, const fs::path& dir) {
  std::vector<fs::path> out;
  const int n = item.request.num_images;
  if (n == 1) return {dir / (item.name + ".png")};
  for (int i = 0; i < n; ++i) out.push_back(dir / (item.name + "-" + std::to_string(i) + ".png"));
  return out;
}

BatchOutcome run_prompt_batch(StableDiffusionPipeline& pipe, const std::vector<BatchItem>& items,
                              train::Communicator& communicator, const fs::path& dir, bool resume,
                              const std::function<void(const BatchItem&, const GenerationResult&)>& write,
                              const std::function<void(const std::string&)>& report) {
  BatchOutcome mine;
  const int rank = communicator.rank(), ranks = communicator.size();
  // Rank 0 prints every rank's lines, numbered as they finish: what has arrived after each of its own items,
  // and at the end everything still on the way.
  size_t printed = 0;
  auto print_arrived = [&](size_t until) {
    if (rank != 0) return;
    for (const auto& line : communicator.take_reports(until > printed ? until - printed : 0))
      report("[" + std::to_string(++printed) + "/" + std::to_string(items.size()) + "] " + line);
  };
  auto finished = [&](const std::string& line) {
    communicator.report_to_main(ranks > 1 ? line + " (rank " + std::to_string(rank) + ")" : line);
    print_arrived(0);
  };
  for (const auto& item : items) {
    if (item.index % ranks != rank) continue;
    const std::string where = "line " + std::to_string(item.line) + " (" + item.name + ")";
    if (!item.error.empty()) {
      finished(where + ": " + item.error);
      ++mine.failed;
      continue;
    }
    if (resume) {
      const auto outputs = batch_outputs(item, dir);
      if (std::all_of(outputs.begin(), outputs.end(), [](const fs::path& p) { return fs::exists(p); })) {
        finished(where + ": skipped, its pictures exist");
        ++mine.skipped;
        continue;
      }
    }
    try {
      if (!adapters::same_loras(pipe.loras(), item.loras)) pipe.set_loras(item.loras);
      const GenerationResult result = pipe.generate(item.request);
      write(item, result);
      ++mine.done;
      finished(where + ": done");
    } catch (const std::exception& e) {  // tide::Error, and a c10::Error from odd settings: this line only
      finished(where + ": " + e.what());
      ++mine.failed;
    }
  }
  print_arrived(items.size());
  at::Tensor counts = at::tensor({double(mine.done), double(mine.skipped), double(mine.failed)}, at::kDouble);
  communicator.allreduce_sum(counts);
  return {static_cast<int>(counts[0].item<double>()), static_cast<int>(counts[1].item<double>()),
          static_cast<int>(counts[2].item<double>())};
}

}  // namespace tide::pipeline
