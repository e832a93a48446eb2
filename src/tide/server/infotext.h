// The generation parameters as one text, in AUTOMATIC1111's "infotext" form: what A1111 stores in a PNG's
// `parameters` chunk, returns in `info.infotexts`, and what image tools read back:
//   prompt
//   Negative prompt: ...
//   Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model: sd15, ...
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tide/pipeline/generation.h"

namespace tide::server {

std::string format_number(double value);  // 7 -> "7", 7.5 -> "7.5"

std::string infotext(const pipeline::GenerationRequest& request, uint64_t seed, const std::string& sampler,
                     const std::string& schedule_label, const std::string& model);

// The reverse, for /sdapi/v1/png-info: {"Prompt": ..., "Negative prompt": ..., "Steps": "20", ...}.
nlohmann::json parse_infotext(const std::string& text);

}  // namespace tide::server
