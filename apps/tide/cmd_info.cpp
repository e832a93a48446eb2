// tide info: what a model folder holds, without loading the weights.
#include <iostream>
#include <map>

#include "args.h"
#include "commands.h"
#include "tide/io/json_file.h"
#include "tide/io/weights.h"
#include "tide/pipeline/model_source.h"
#include "tide/runtime/error.h"

namespace tide::cli {
namespace fs = std::filesystem;
namespace {

std::string human_count(int64_t n) {
  char buf[32];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof(buf), "%.2fB", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(buf, sizeof(buf), "%.1fM", n / 1e6);
  else if (n >= 1000)
    std::snprintf(buf, sizeof(buf), "%.1fK", n / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(n));
  return buf;
}

}  // namespace

int run_info(int argc, char** argv) {
  Args args("info", "tide info MODEL", "Lists a model's components, their parameter counts and stored dtypes, and its scheduler.");
  args.positional("MODEL", "diffusers model folder or Hugging Face Hub id (org/name[@revision])").option("variant", "NAME", "describe this weight variant (e.g. fp16)");
  if (!args.parse(argc, argv)) return 0;
  const fs::path folder = pipeline::resolve_model(*args.positional_value("MODEL"), args.has("variant") ? args.get("variant") : "");
  const fs::path index_path = folder / "model_index.json";
  if (!fs::exists(index_path)) throw Error(folder.string() + " is not a diffusers pipeline folder (no model_index.json)");
  const auto index = io::read_json(index_path);
  std::cout << "model     " << folder.string() << "\n";
  std::cout << "pipeline  " << io::json_get<std::string>(index, "_class_name", "?") << "\n";
  int64_t total = 0;
  for (const auto& [name, value] : index.items()) {
    if (name.empty() || name[0] == '_' || !value.is_array() || value.size() != 2 || value[1].is_null()) continue;
    const std::string cls = value[1].get<std::string>();
    std::cout << "\n" << name << " (" << cls << ")\n";
    if (name == "scheduler") {
      const auto config = io::read_json(folder / name / "scheduler_config.json");
      for (const char* key : {"beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing", "steps_offset"})
        if (config.contains(key)) std::cout << "  " << key << ": " << config[key].dump() << "\n";
      continue;
    }
    if (name.rfind("tokenizer", 0) == 0) continue;
    const auto source = io::WeightSource::from_component_dir(folder / name, args.has("variant") ? args.get("variant") : "");
    int64_t params = 0;
    std::map<std::string, int64_t> by_dtype;
    for (const auto& tensor : source.names()) {
      int64_t n = 1;
      for (int64_t d : source.shape(tensor)) n *= d;
      params += n;
      by_dtype[c10::toString(source.dtype(tensor))] += n;
    }
    total += params;
    std::cout << "  parameters: " << human_count(params) << " in " << source.names().size() << " tensors\n";
    std::cout << "  stored as:";
    for (const auto& [dtype, n] : by_dtype) std::cout << " " << dtype << " (" << human_count(n) << ")";
    std::cout << "\n  file: " << source.description() << "\n";
  }
  std::cout << "\ntotal parameters: " << human_count(total) << "\n";
  return 0;
}

}  // namespace tide::cli
