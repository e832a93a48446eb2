#include "tide/io/json_file.h"

#include <fstream>
#include <sstream>

#include "tide/runtime/error.h"

namespace tide::io {
namespace {

// Python's json module writes float infinities and NaN as bare `Infinity`, `-Infinity`, `NaN`
// (diffusers does, e.g. `"lambda_min_clipped": -Infinity`). Strict JSON has no such tokens: map them,
// outside strings, to the largest finite doubles (comparisons behave the same) and NaN to null.
std::string replace_python_float_tokens(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (text.compare(i, 9, "-Infinity") == 0) {
      out += "-1.7976931348623157e308";
      i += 8;
    } else if (text.compare(i, 8, "Infinity") == 0) {
      out += "1.7976931348623157e308";
      i += 7;
    } else if (text.compare(i, 3, "NaN") == 0) {
      out += "null";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(replace_python_float_tokens(buffer.str()));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace tide::io
