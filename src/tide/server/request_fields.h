// Reading the fields of a JSON request body the way pydantic v1 (what AUTOMATIC1111 validates with) does: ints
// from integral numbers or numeric strings, floats from numbers or numeric strings, strings from strings or
// numbers. A field of the wrong type or out of range is a FieldError that names it; each API turns it into its
// own 422 body.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace tide::server {

struct FieldError {
  std::string field, message, type;  // type: pydantic's error type ("type_error.integer", ...)
};

// Absent or null: fallback.
int64_t get_int(const nlohmann::json& body, const std::string& key, int64_t fallback);
double get_number(const nlohmann::json& body, const std::string& key, double fallback);
std::string get_string(const nlohmann::json& body, const std::string& key, const std::string& fallback);
bool get_bool(const nlohmann::json& body, const std::string& key, bool fallback);

// A FieldError "KEY must be between LOW and HIGH, got VALUE" unless low <= value <= high.
void require_range(const std::string& key, int64_t value, int64_t low, int64_t high);

}  // namespace tide::server
