#include "tide/runtime/cpu_features.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace tide::runtime {
namespace {

// The first "flags" and "model name" lines of /proc/cpuinfo.
struct CpuInfo {
  std::set<std::string> flags;
  std::string model;
};

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo i;
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
      const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
      if (key == "flags" && i.flags.empty()) {
        std::istringstream words(value);
        for (std::string w; words >> w;) i.flags.insert(w);
      } else if (key == "model name" && i.model.empty()) {
        i.model = value;
      }
    }
    return i;
  }();
  return info;
}

}  // namespace

std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"})
    if (has_cpu_feature(f)) out.push_back(f);
  return out;
}

bool has_cpu_feature(const std::string& name) { return cpu_info().flags.count(name) > 0; }

bool bf16_supported() { return has_cpu_feature("amx_bf16") || has_cpu_feature("avx512_bf16"); }

std::string cpu_model_name() { return cpu_info().model.empty() ? "unknown CPU" : cpu_info().model; }

}  // namespace tide::runtime
