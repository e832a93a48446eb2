// Reading JSON files (config.json, model_index.json, ...) with errors that name the file.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "tide/runtime/error.h"

namespace tide::io {

nlohmann::json read_json(const std::filesystem::path& path);

// config[key] if present and not null, else `fallback`; a value of the wrong type is an error naming the key.
template <typename T>
T json_get(const nlohmann::json& config, const std::string& key, const T& fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("config key '" + key + "' has an unexpected type: " + it->dump());
  }
}

}  // namespace tide::io
