#include "tide/train/cpu_bf16.h"

#include <fstream>
#include <sstream>

namespace tide::train {

bool cpuinfo_has_native_bf16(const std::string& cpuinfo) {
  std::istringstream lines(cpuinfo);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') == std::string::npos ? line.size() : line.find(':') + 1));
    std::string flag;
    while (words >> flag)
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    return false;  // the first processor's flags speak for all
  }
  return false;
}

bool cpu_has_native_bf16() {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  return cpuinfo_has_native_bf16(text.str());
}

}  // namespace tide::train
