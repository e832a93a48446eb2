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
#include "tide/server/job_queue.h"
#include "tide/server/lora_library.h"

namespace tide::server {

std::string format_number(double value);  // 7 -> "7", 7.5 -> "7.5"

// lora_hashes: A1111's "Lora hashes" value (LoraLibrary::hashes), "" for none.
std::string infotext(const pipeline::GenerationRequest& request, uint64_t seed, const std::string& sampler,
                     const std::string& schedule_label, const std::string& model, const std::string& lora_hashes = "");

// The infotext of one picture of a finished job, as every API that runs jobs writes it: the prompt as sent (its
// <lora:...> tags kept) and, when the job applied LoRAs, their "Lora hashes" (`loras` may be null: no folder).
std::string job_infotext(const JobSpec& spec, const JobOutcome& outcome, uint64_t seed, const std::string& sampler,
                         const std::string& schedule_label, LoraLibrary* loras);

// The reverse, for /sdapi/v1/png-info: {"Prompt": ..., "Negative prompt": ..., "Steps": "20", ...}.
nlohmann::json parse_infotext(const std::string& text);

}  // namespace tide::server
