#include "tide/server/openai_api.h"

#include <cstdio>
#include <ctime>
#include <random>
#include <stdexcept>

#include "tide/io/image.h"
#include "tide/runtime/error.h"
#include "tide/server/a1111_samplers.h"
#include "tide/server/base64.h"
#include "tide/server/infotext.h"

namespace tide::server::openai {
using nlohmann::json;
namespace {

HttpReply error(int status, const std::string& message, const std::string& param = "",
                const std::string& type = "invalid_request_error", const std::string& code = "") {
  return json_reply({{"error",
                      {{"message", message},
                       {"type", type},
                       {"param", param.empty() ? json(nullptr) : json(param)},
                       {"code", code.empty() ? json(nullptr) : json(code)}}}},
                    status);
}

// Fails with the field's name when present with another type.
bool has(const json& body, const std::string& key, json::value_t type) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return false;
  const bool ok = type == json::value_t::number_float ? it->is_number()
                  : type == json::value_t::number_integer ? it->is_number_integer()
                                                          : it->type() == type;
  if (!ok) throw std::invalid_argument(key);
  return true;
}

}  // namespace

HttpReply images_generations(ApiContext& ctx, const std::string& raw) {
  json body;
  try {
    body = json::parse(raw);
  } catch (const json::exception& e) {
    return error(400, std::string("We could not parse the JSON body of your request: ") + e.what());
  }
  if (!body.is_object()) return error(400, "the request body must be a JSON object");
  try {
    pipeline::GenerationRequest request;
    request.prompt_syntax = pipeline::PromptSyntax::kA1111;
    if (!has(body, "prompt", json::value_t::string) || body["prompt"].get<std::string>().empty())
      return error(400, "prompt is required", "prompt");
    request.prompt = body["prompt"].get<std::string>();
    std::string model = ctx.registry.current();
    if (has(body, "model", json::value_t::string)) {
      const auto entry = ctx.registry.find(body["model"].get<std::string>());
      if (!entry) {
        std::string known;
        for (const auto& e : ctx.registry.models()) known += (known.empty() ? "" : ", ") + e.name;
        return error(404, "The model '" + body["model"].get<std::string>() + "' does not exist; tide has: " + known,
                     "model", "invalid_request_error", "model_not_found");
      }
      model = entry->name;
    }
    int n = 1;
    if (has(body, "n", json::value_t::number_integer)) n = body["n"].get<int>();
    if (n < 1 || n > ctx.limits.max_images)
      return error(400, "n must be between 1 and " + std::to_string(ctx.limits.max_images), "n");
    if (has(body, "size", json::value_t::string) && body["size"].get<std::string>() != "auto") {
      const std::string size = body["size"].get<std::string>();
      int w = 0, h = 0;
      char x = 0, rest = 0;
      if (std::sscanf(size.c_str(), "%d%c%d%c", &w, &x, &h, &rest) != 3 || x != 'x' || w < 1 || h < 1)
        return error(400, "size must be WIDTHxHEIGHT such as 512x512, or auto; got '" + size + "'", "size");
      if (w > ctx.limits.max_side || h > ctx.limits.max_side)
        return error(400, "size: width and height must be at most " + std::to_string(ctx.limits.max_side), "size");
      request.width = w;
      request.height = h;
    }
    if (has(body, "response_format", json::value_t::string) && body["response_format"].get<std::string>() != "b64_json")
      return error(400,
                   "response_format '" + body["response_format"].get<std::string>() +
                       "' is not supported by tide: ask for b64_json (the image is in the response)",
                   "response_format");
    if (has(body, "stream", json::value_t::boolean) && body["stream"].get<bool>())
      return error(400, "stream is not supported by tide", "stream");
    if (has(body, "negative_prompt", json::value_t::string)) request.negative_prompt = body["negative_prompt"].get<std::string>();
    request.steps = 20;
    if (has(body, "steps", json::value_t::number_integer)) request.steps = body["steps"].get<int>();
    if (request.steps < 1 || request.steps > ctx.limits.max_steps)
      return error(400, "steps must be between 1 and " + std::to_string(ctx.limits.max_steps), "steps");
    request.guidance = 7.0;
    if (has(body, "cfg_scale", json::value_t::number_float)) request.guidance = body["cfg_scale"].get<double>();
    if (!(request.guidance >= 0 && request.guidance <= 100)) return error(400, "cfg_scale must be between 0 and 100", "cfg_scale");
    if (has(body, "seed", json::value_t::number_integer) && body["seed"].get<int64_t>() >= 0)
      request.seed = body["seed"].get<uint64_t>();
    else
      request.seed = std::random_device{}() % 4294967294u;
    std::string sampler_name = "DPM++ 2M", schedule = "Automatic";
    if (has(body, "sampler", json::value_t::string)) sampler_name = body["sampler"].get<std::string>();
    if (has(body, "scheduler", json::value_t::string)) schedule = body["scheduler"].get<std::string>();
    SamplerChoice sampler;
    try {
      sampler = choose_sampler(sampler_name, schedule);
    } catch (const Error& e) {
      return error(400, e.what(), "sampler");
    }
    request.scheduler = sampler.scheduler;
    request.scheduler_options.karras = sampler.karras;

    JobSpec spec;
    spec.model = model;
    spec.request = request;
    spec.images = n;
    std::shared_ptr<Job> job;
    try {
      job = ctx.queue.submit(spec);
    } catch (const QueueFull& e) {
      HttpReply r = error(503, e.what(), "", "server_error", "queue_full");
      r.headers["Retry-After"] = "10";
      return r;
    }
    const JobOutcome outcome = job->wait();
    if (!outcome.error.empty())
      return error(outcome.bad_request ? 400 : 500, outcome.error, "", outcome.bad_request ? "invalid_request_error" : "server_error");
    if (outcome.images.empty()) return error(500, "the job was cancelled", "", "server_error", "cancelled");
    json data = json::array();
    for (const auto& image : outcome.images) {
      const std::string text = infotext(outcome.request, image.seed, sampler.a1111_name, sampler.schedule_label, outcome.model);
      data.push_back({{"b64_json", base64_encode(io::encode_png(image.rgb8, {{"parameters", text}}))},
                      {"revised_prompt", outcome.request.prompt},
                      {"seed", image.seed}});
    }
    return json_reply({{"created", static_cast<int64_t>(std::time(nullptr))}, {"data", data}});
  } catch (const std::invalid_argument& e) {
    return error(400, std::string("'") + e.what() + "' has the wrong type", e.what());
  } catch (const json::exception& e) {
    return error(400, std::string("bad value: ") + e.what());
  }
}

HttpReply models(ApiContext& ctx) {
  json data = json::array();
  for (const auto& e : ctx.registry.models())
    data.push_back({{"id", e.name}, {"object", "model"}, {"created", 0}, {"owned_by", "tide"}});
  return json_reply({{"object", "list"}, {"data", data}});
}

}  // namespace tide::server::openai
