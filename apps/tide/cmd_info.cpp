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
  args.positional("MODEL", "diffusers model folder, single-file checkpoint or Hugging Face Hub id (org/name[@revision])")
      .option("variant", "NAME", "describe this weight variant (e.g. fp16)");
  if (!args.parse(argc, argv)) return 0;
  const auto model = args.positional_value("MODEL");
  if (!model) throw Error("tide info: give a model (folder, single file or Hub id)");
  pipeline::LoadOptions load;
  load.variant = args.has("variant") ? args.get("variant") : "";
  load.tokenizers = false;  // only configs and weights are described
  const pipeline::PipelineParts parts = pipeline::model_parts(*model, load);
  std::cout << "model     " << parts.description << "\n";
  std::cout << "pipeline  " << parts.pipeline_class << "\n";
  int64_t total = 0;
  for (const auto& [name, source] : parts.weights) {
    const auto& config = parts.configs.at(name);
    std::cout << "\n" << name << " (" << io::json_get<std::string>(config, "_class_name", name == "unet" ? "UNet2DConditionModel" : "?")
              << ")\n";
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
  const auto& scheduler = parts.configs.at("scheduler");
  std::cout << "\nscheduler (" << io::json_get<std::string>(scheduler, "_class_name", "?") << ")\n";
  for (const char* key : {"beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing", "steps_offset"})
    if (scheduler.contains(key)) std::cout << "  " << key << ": " << scheduler[key].dump() << "\n";
  std::cout << "\ntotal parameters: " << human_count(total) << "\n";
  return 0;
}

}  // namespace tide::cli
