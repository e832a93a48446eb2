#include "tide/runtime/optimizations.h"

namespace tide::runtime {

std::vector<std::string> Optimizations::enabled() const {
  std::vector<std::string> names;
  if (blocked_attention) names.push_back("blocked_attention");
  if (channels_last) names.push_back("channels_last");
  return names;
}

Optimizations& optimizations() {
  static Optimizations current;
  return current;
}

}  // namespace tide::runtime
