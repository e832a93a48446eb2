#include "tide/runtime/optimizations.h"

#include <sstream>

#include "tide/runtime/error.h"

namespace tide::runtime {

std::vector<std::string> Optimizations::enabled() const {
  std::vector<std::string> names;
  if (blocked_attention) names.push_back("blocked_attention");
  if (channels_last) names.push_back("channels_last");
  if (in_place) names.push_back("in_place");
  if (winograd) names.push_back("winograd");
  if (winograd_f4) names.push_back("winograd_f4");
  if (reuse_memory) names.push_back("reuse_memory");
  if (int8_kernels) names.push_back("int8_kernels");
  if (frozen_backward) names.push_back("frozen_backward");
  if (direct_conv) names.push_back("direct_conv");
  if (geglu_kernel) names.push_back("geglu_kernel");
  if (onednn_matmul) names.push_back("onednn_matmul");
  if (half_attention) names.push_back("half_attention");
  return names;
}

std::vector<std::string> Optimizations::names() {
  return {"blocked_attention", "channels_last", "in_place",        "winograd",    "winograd_f4",
          "reuse_memory",      "int8_kernels",  "frozen_backward", "direct_conv", "geglu_kernel",
          "onednn_matmul",     "half_attention"};
}

Optimizations Optimizations::without(const std::string& comma_separated) const {
  Optimizations o = *this;
  std::stringstream list(comma_separated);
  std::string name;
  while (std::getline(list, name, ',')) {
    if (name == "blocked_attention")
      o.blocked_attention = false;
    else if (name == "channels_last")
      o.channels_last = false;
    else if (name == "in_place")
      o.in_place = false;
    else if (name == "winograd")
      o.winograd = false;
    else if (name == "winograd_f4")
      o.winograd_f4 = false;
    else if (name == "reuse_memory")
      o.reuse_memory = false;
    else if (name == "int8_kernels")
      o.int8_kernels = false;
    else if (name == "frozen_backward")
      o.frozen_backward = false;
    else if (name == "direct_conv")
      o.direct_conv = false;
    else if (name == "geglu_kernel")
      o.geglu_kernel = false;
    else if (name == "onednn_matmul")
      o.onednn_matmul = false;
    else if (name == "half_attention")
      o.half_attention = false;
    else if (!name.empty())
      throw Error("unknown optimization '" + name + "'; known: " + [] {
        std::string all;
        for (const auto& n : names()) all += (all.empty() ? "" : ", ") + n;
        return all;
      }());
  }
  return o;
}

Optimizations& optimizations() {
  thread_local Optimizations current;
  return current;
}

}  // namespace tide::runtime
