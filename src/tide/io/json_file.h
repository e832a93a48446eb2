// Reading JSON files (config.json, model_index.json, ...) with errors that name the file.
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "tide/runtime/error.h"

namespace tide::io {

nlohmann::json read_json(const std::filesystem::path& path);

// Whether a JSON number is a whole number that T holds (1000.0 counts: Python writes some so). Not a number:
// true, and the conversion reports the type.
template <typename T>
bool json_integer_fits(const nlohmann::json& v) {
  constexpr auto lowest = std::numeric_limits<T>::min();
  constexpr auto highest = std::numeric_limits<T>::max();
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(highest);
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    return i >= static_cast<int64_t>(lowest) && (std::is_unsigned_v<T> || i <= static_cast<int64_t>(highest));
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();  // highest + 1 is exact in double where highest itself may not be
    return std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lowest) &&
           d < static_cast<double>(highest) + 1.0;
  }
  return true;
}

template <typename T>
struct is_integer_vector : std::false_type {};
template <typename E, typename A>
struct is_integer_vector<std::vector<E, A>> : std::bool_constant<std::is_integral_v<E> && !std::is_same_v<E, bool>> {};

// config[key] if present and not null, else `fallback`; a value of the wrong type is an error naming the key.
// An integer must be a whole number in T's range (nlohmann would truncate 2.5 and wrap 1e10 silently).
template <typename T>
T json_get(const nlohmann::json& config, const std::string& key, const T& fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!json_integer_fits<T>(*it))
      throw Error("config key '" + key + "' must be an integer in range, not " + it->dump());
  }
  if constexpr (is_integer_vector<T>::value) {
    if (it->is_array())
      for (const auto& e : *it)
        if (!json_integer_fits<typename T::value_type>(e))
          throw Error("config key '" + key + "' must hold integers in range, not " + it->dump());
  }
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("config key '" + key + "' has an unexpected type: " + it->dump());
  }
}

}  // namespace tide::io
