#include "tide/pipeline/model_source.h"

#include "tide/runtime/error.h"

namespace tide::pipeline {

std::filesystem::path resolve_model(const std::string& model) {
  if (model.empty()) throw Error("no model given");
  const std::filesystem::path path(model);
  if (std::filesystem::is_directory(path)) return path;
  if (std::filesystem::exists(path))
    throw Error(model + " is a file; tide reads diffusers model folders (with model_index.json)");
  throw Error("model " + model + " not found: no such folder");
}

}  // namespace tide::pipeline
