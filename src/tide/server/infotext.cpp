#include "tide/server/infotext.h"

#include <cstdio>
#include <sstream>
#include <vector>

#include "tide/version.h"

namespace tide::server {

std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.10g", value);
  return buffer;
}

std::string infotext(const pipeline::GenerationRequest& r, uint64_t seed, const std::string& sampler,
                     const std::string& schedule_label, const std::string& model, const std::string& lora_hashes) {
  std::ostringstream s;
  s << r.prompt;
  if (r.negative_prompt && !r.negative_prompt->empty()) s << "\nNegative prompt: " << *r.negative_prompt;
  s << "\nSteps: " << r.steps << ", Sampler: " << sampler;
  if (!schedule_label.empty()) s << ", Schedule type: " << schedule_label;
  s << ", CFG scale: " << format_number(r.guidance) << ", Seed: " << seed << ", Size: " << r.width << "x" << r.height
    << ", Model: " << model;
  if (r.clip_skip != 1) s << ", Clip skip: " << r.clip_skip;
  if (r.scheduler_options.eta != 0) s << ", Eta: " << format_number(r.scheduler_options.eta);
  if (r.tome.enabled()) s << ", Token merging ratio: " << format_number(r.tome.ratio);
  // The same keys as tide generate's PNGs (and A1111's for denoising strength and mask blur).
  if (r.cache_interval > 1) s << ", DeepCache interval: " << r.cache_interval;
  if (r.prompt_syntax == pipeline::PromptSyntax::kPlain) s << ", Prompt syntax: plain";
  if (r.init_image.defined() && r.strength) s << ", Denoising strength: " << format_number(*r.strength);
  if (r.mask.defined() && r.mask_blur > 0) s << ", Mask blur: " << format_number(r.mask_blur);
  if (!lora_hashes.empty()) s << ", Lora hashes: \"" << lora_hashes << "\"";
  s << ", Version: tide " TIDE_VERSION;
  return s.str();
}

std::string job_infotext(const JobSpec& spec, const JobOutcome& outcome, uint64_t seed, const std::string& sampler,
                         const std::string& schedule_label, LoraLibrary* loras) {
  pipeline::GenerationRequest r = outcome.request;
  if (!spec.prompt_as_sent.empty()) r.prompt = spec.prompt_as_sent;
  const std::string hashes = loras && !spec.loras.empty() ? loras->hashes(spec.loras) : "";
  return infotext(r, seed, sampler, schedule_label, outcome.model, hashes);
}

nlohmann::json parse_infotext(const std::string& text) {
  nlohmann::json out = nlohmann::json::object();
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (lines.empty()) return out;
  // The last line holds "Key: value, Key: value" when it starts with "Steps: ".
  std::string settings;
  if (lines.back().rfind("Steps: ", 0) == 0) {
    settings = lines.back();
    lines.pop_back();
  }
  std::string prompt, negative;
  bool in_negative = false;
  for (const auto& line : lines) {
    if (line.rfind("Negative prompt: ", 0) == 0) {
      in_negative = true;
      negative = line.substr(17);
    } else if (in_negative) {
      negative += "\n" + line;
    } else {
      prompt += (prompt.empty() ? "" : "\n") + line;
    }
  }
  out["Prompt"] = prompt;
  out["Negative prompt"] = negative;
  // Values may be quoted ("...") when they hold commas.
  size_t i = 0;
  while (i < settings.size()) {
    const size_t colon = settings.find(": ", i);
    if (colon == std::string::npos) break;
    const std::string key = settings.substr(i, colon - i);
    size_t j = colon + 2;
    std::string value;
    if (j < settings.size() && settings[j] == '"') {
      const size_t close = settings.find('"', j + 1);
      value = settings.substr(j + 1, close == std::string::npos ? std::string::npos : close - j - 1);
      j = close == std::string::npos ? settings.size() : close + 1;
      const size_t comma = settings.find(", ", j);
      j = comma == std::string::npos ? settings.size() : comma;
    } else {
      const size_t comma = settings.find(", ", j);
      value = settings.substr(j, comma == std::string::npos ? std::string::npos : comma - j);
      j = comma == std::string::npos ? settings.size() : comma;
    }
    out[key] = value;
    i = j + 2;
  }
  return out;
}

}  // namespace tide::server
