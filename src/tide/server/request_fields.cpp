#include "tide/server/request_fields.h"

#include <stdexcept>

namespace tide::server {
using nlohmann::json;

int64_t get_int(const json& body, const std::string& key, int64_t fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (v == static_cast<double>(static_cast<int64_t>(v))) return static_cast<int64_t>(v);
  }
  if (it->is_string()) {
    try {
      size_t used = 0;
      const int64_t v = std::stoll(it->get<std::string>(), &used);
      if (used == it->get<std::string>().size()) return v;
    } catch (const std::exception&) {
    }
  }
  throw FieldError{key, "value is not a valid integer", "type_error.integer"};
}

double get_number(const json& body, const std::string& key, double fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (it->is_number()) return it->get<double>();
  if (it->is_string()) {
    try {
      size_t used = 0;
      const double v = std::stod(it->get<std::string>(), &used);
      if (used == it->get<std::string>().size()) return v;
    } catch (const std::exception&) {
    }
  }
  throw FieldError{key, "value is not a valid float", "type_error.float"};
}

std::string get_string(const json& body, const std::string& key, const std::string& fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  throw FieldError{key, "str type expected", "type_error.str"};
}

bool get_bool(const json& body, const std::string& key, bool fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_number_integer() && (it->get<int64_t>() == 0 || it->get<int64_t>() == 1)) return it->get<int64_t>() == 1;
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    if (s == "true" || s == "True" || s == "1") return true;
    if (s == "false" || s == "False" || s == "0") return false;
  }
  throw FieldError{key, "value could not be parsed to a boolean", "type_error.bool"};
}

void require_range(const std::string& key, int64_t value, int64_t low, int64_t high) {
  if (value < low || value > high)
    throw FieldError{key, key + " must be between " + std::to_string(low) + " and " + std::to_string(high) + ", got " +
                              std::to_string(value),
                     "value_error.number.not_in_range"};
}

}  // namespace tide::server
