// AUTOMATIC1111's sampler and schedule-type names mapped onto tide's schedulers. A1111 >= 1.9 sends a
// sampler ("DPM++ 2M") and a separate schedule type ("Karras"); older clients send legacy names that
// carry the schedule ("DPM++ 2M Karras"). tide's own CLI names ("dpm++3m") are accepted as well.
#pragma once
#include <string>
#include <vector>

namespace tide::server {

struct SamplerChoice {
  std::string scheduler;  // tide CLI name (schedulers::scheduler_names())
  bool karras = false;
  std::string a1111_name;      // for infotexts: the A1111 sampler name ("DPM++ 2M")
  std::string schedule_label;  // for infotexts: "Karras" or "" (A1111 omits the uniform one)
};

struct A1111Sampler {
  std::string name;                  // "DPM++ 2M"
  std::vector<std::string> aliases;  // "k_dpmpp_2m"
  std::string scheduler;             // tide's
  bool karras_by_default;            // what "Automatic" means for it (A1111 >= 1.9)
  bool karras_supported;
};

// The samplers /sdapi/v1/samplers lists: A1111 names tide computes.
const std::vector<A1111Sampler>& a1111_samplers();
// The schedule types /sdapi/v1/schedulers lists: {name, label}.
std::vector<std::pair<std::string, std::string>> a1111_schedule_types();

// sampler: A1111 name, alias, legacy "... Karras" name or tide name ("" = "Euler", A1111's API default).
// schedule: "", "Automatic", "Uniform" or "Karras" (any case; labels or names). Anything else is a tide::Error
// that lists what exists.
SamplerChoice choose_sampler(const std::string& sampler, const std::string& schedule);

}  // namespace tide::server
