#include "tide/server/a1111_samplers.h"

#include <algorithm>
#include <cctype>

#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"

namespace tide::server {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string listed_names() {
  std::string s;
  for (const auto& sampler : a1111_samplers()) s += (s.empty() ? "" : ", ") + sampler.name;
  for (const auto& name : schedulers::scheduler_names()) s += ", " + name;
  return s;
}

}  // namespace

const std::vector<A1111Sampler>& a1111_samplers() {
  // The deterministic k-diffusion samplers and the timestep samplers that diffusers' schedulers match in
  // method. SDE and ancestral DPM variants are absent: tide has no scheduler that computes them.
  static const std::vector<A1111Sampler> samplers = {
      {"Euler a", {"k_euler_a", "k_euler_ancestral"}, "euler-a", false, false},
      {"Euler", {"k_euler"}, "euler", false, true},
      {"LMS", {"k_lms"}, "lms", false, true},
      {"Heun", {"k_heun"}, "heun", false, true},
      {"DPM++ 2M", {"k_dpmpp_2m"}, "dpm++2m", true, true},
      {"DDIM", {"ddim"}, "ddim", false, false},
      {"PLMS", {"plms"}, "pndm", false, false},
      {"UniPC", {"unipc"}, "unipc", false, true},
      {"DDPM", {"ddpm"}, "ddpm", false, false},
  };
  return samplers;
}

std::vector<std::pair<std::string, std::string>> a1111_schedule_types() {
  return {{"automatic", "Automatic"}, {"uniform", "Uniform"}, {"karras", "Karras"}};
}

SamplerChoice choose_sampler(const std::string& requested, const std::string& schedule) {
  std::string name = requested.empty() ? std::string("Euler") : requested;
  bool legacy_karras = false;
  const std::string suffix = " karras";
  if (lower(name).size() > suffix.size() && lower(name).compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    legacy_karras = true;  // "DPM++ 2M Karras", "LMS Karras"
    name = name.substr(0, name.size() - suffix.size());
  }
  const A1111Sampler* found = nullptr;
  for (const auto& s : a1111_samplers()) {
    if (lower(s.name) == lower(name)) found = &s;
    for (const auto& alias : s.aliases)
      if (lower(alias) == lower(name)) found = &s;
  }
  SamplerChoice choice;
  bool karras_supported = false, karras_default = false;
  if (found) {
    choice.scheduler = found->scheduler;
    choice.a1111_name = found->name;
    karras_supported = found->karras_supported;
    karras_default = found->karras_by_default;
  } else {
    const auto names = schedulers::scheduler_names();
    if (std::find(names.begin(), names.end(), lower(name)) == names.end())
      throw Error("sampler '" + requested + "' not found; tide has: " + listed_names());
    choice.scheduler = lower(name);
    choice.a1111_name = choice.scheduler;
    // tide's names: the schedulers with Karras sigmas (scheduler.h), none by default.
    karras_supported = choice.scheduler == "euler" || choice.scheduler == "lms" || choice.scheduler == "heun" ||
                       choice.scheduler == "dpm++2m" || choice.scheduler == "dpm++3m" || choice.scheduler == "unipc";
  }
  const std::string kind = lower(schedule);
  bool karras;
  if (kind.empty() || kind == "automatic") {
    karras = legacy_karras || karras_default;
  } else if (kind == "karras") {
    karras = true;
  } else if (kind == "uniform") {
    if (legacy_karras) throw Error("sampler '" + requested + "' implies Karras sigmas; schedule type '" + schedule +
                                   "' contradicts it");
    karras = false;
  } else {
    throw Error("schedule type '" + schedule + "' not found; tide has: Automatic, Uniform, Karras");
  }
  if (karras && !karras_supported)
    throw Error("sampler '" + choice.a1111_name + "' has no Karras schedule in tide; use it with Automatic or Uniform");
  choice.karras = karras;
  choice.schedule_label = karras ? "Karras" : "";
  return choice;
}

}  // namespace tide::server
