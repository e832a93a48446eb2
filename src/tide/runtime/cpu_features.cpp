#include "tide/runtime/cpu_features.h"

#include <algorithm>
#include <cstdlib>
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
        i.flags = cpuinfo_flags(line);
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

bool bf16_supported() {
  const char* off = std::getenv("TIDE_NO_BF16");
  if (off && *off && std::string(off) != "0") return false;
  return cpuinfo_has_native_bf16(cpu_info().flags);
}

std::set<std::string> cpuinfo_flags(const std::string& cpuinfo) {
  std::istringstream lines(cpuinfo);
  std::set<std::string> flags;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    const auto colon = line.find(':');
    std::istringstream words(colon == std::string::npos ? "" : line.substr(colon + 1));
    for (std::string w; words >> w;) flags.insert(w);
    break;  // the first processor's flags speak for all
  }
  return flags;
}

bool cpuinfo_has_native_bf16(const std::set<std::string>& flags) {
  return flags.count("amx_bf16") > 0 || flags.count("avx512_bf16") > 0;
}

std::string cpu_model_name() { return cpu_info().model.empty() ? "unknown CPU" : cpu_info().model; }

}  // namespace tide::runtime
