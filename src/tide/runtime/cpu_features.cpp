#include "tide/runtime/cpu_features.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace tide::runtime {
namespace {

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

// oneDNN's DNNL_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA, for tide's own kernels too: below AVX-512 the AVX-512 and AMX
// flags are hidden (below AVX2 also AVX2 and FMA), so every path takes the branch a CPU without them takes.
std::string max_isa() {
  const char* value = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (!value || !*value) value = std::getenv("DNNL_MAX_CPU_ISA");
  return value && *value ? upper(value) : "ALL";
}

bool below_avx512(const std::string& isa) {
  return isa.rfind("AVX512", 0) != 0 && isa.rfind("AVX10", 0) != 0 && isa != "ALL";
}

void cap_to_max_isa(std::set<std::string>& flags) {
  const std::string isa = max_isa();
  const bool no_avx512 = below_avx512(isa);
  const bool no_avx2 = no_avx512 && isa.rfind("AVX2", 0) != 0;
  for (auto it = flags.begin(); it != flags.end();) {
    const bool hidden = (no_avx512 && (it->rfind("avx512", 0) == 0 || it->rfind("amx", 0) == 0)) ||
                        (no_avx2 && (*it == "avx2" || *it == "fma" || *it == "avx_vnni"));
    it = hidden ? flags.erase(it) : std::next(it);
  }
}

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
    cap_to_max_isa(i.flags);
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

bool max_isa_allows_avx512() {
  static const bool allowed = !below_avx512(max_isa());
  return allowed;
}

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
