#include "tide/adapters/lora_argument.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "tide/runtime/error.h"

namespace tide::adapters {
namespace fs = std::filesystem;
namespace {

// The whole of `text` as a number, if it is one.
std::optional<double> as_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE) return std::nullopt;
  return v;
}

}  // namespace

LoraSpec parse_lora_argument(const std::string& argument, const std::optional<fs::path>& lora_dir) {
  if (argument.empty()) throw Error("--lora: expected FILE[:WEIGHT], got an empty value");
  std::string name = argument;
  double weight = 1.0;
  if (const auto colon = argument.rfind(':'); colon != std::string::npos) {
    if (auto number = as_number(argument.substr(colon + 1))) {
      if (!std::isfinite(*number)) throw Error("--lora " + argument + ": the weight must be a finite number");
      name = argument.substr(0, colon);
      weight = *number;
    }
  }
  if (name.empty()) throw Error("--lora " + argument + ": no file before the weight");

  std::vector<fs::path> tried = {fs::path(name)};
  if (lora_dir) {
    if (!fs::is_directory(*lora_dir)) throw Error("--lora-dir " + lora_dir->string() + " is not a folder");
    if (!fs::path(name).is_absolute()) {
      tried.push_back(*lora_dir / name);
      tried.push_back(*lora_dir / (name + ".safetensors"));
    }
  }
  for (const auto& path : tried)
    if (fs::is_regular_file(path)) return {path, weight};

  std::string message = "--lora " + argument + ": no LoRA file " + name;
  if (lora_dir) message += " (nor " + name + " or " + name + ".safetensors in " + lora_dir->string() + ")";
  const auto colon = argument.rfind(':');
  if (colon != std::string::npos && name == argument)
    message += "; a weight after ':' must be a number, e.g. FILE:0.8";
  throw Error(message);
}

std::string lora_label(const LoraSpec& spec) {
  const fs::path& f = spec.file;
  return f.extension() == ".safetensors" ? f.stem().string() : f.filename().string();
}

bool same_loras(const std::vector<LoraSpec>& a, const std::vector<LoraSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].file != b[i].file || a[i].weight != b[i].weight || a[i].text_encoder_weight != b[i].text_encoder_weight)
      return false;
  return true;
}

}  // namespace tide::adapters
