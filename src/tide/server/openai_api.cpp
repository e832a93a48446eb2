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

HttpReply error(int status, const std::string& message, const std::string& param, const std::string& type,
                const std::string& code) {
  return json_reply({{"error",
                      {{"message", message},
                       {"type", type},
                       {"param", param.empty() ? json(nullptr) : json(param)},
                       {"code", code.empty() ? json(nullptr) : json(code)}}}},
                    status);
}

std::variant<std::shared_ptr<Job>, HttpReply> submit(ApiContext& ctx, const JobSpec& spec) {
  try {
    return ctx.queue.submit(spec);
  } catch (const QueueFull& e) {
    HttpReply r = error(503, e.what(), "", "server_error", "queue_full");
    r.headers["Retry-After"] = "10";
    return r;
  }
}

std::string result_png(ApiContext& ctx, const JobSpec& spec, const JobOutcome& outcome, const JobImage& image,
                       const SamplerChoice& sampler) {
  const std::string text = job_infotext(spec, outcome, image.seed, sampler.a1111_name, sampler.schedule_label, ctx.loras);
  return io::encode_png(image.rgb8, {{"parameters", text}});
}

std::variant<ImagesRequest, HttpReply> parse_images_generations(ApiContext& ctx, const std::string& raw) {
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
    const std::string prompt_as_sent = request.prompt;
    std::vector<adapters::LoraSpec> loras;
    try {
      loras = take_prompt_loras(ctx.loras, request.prompt);
    } catch (const Error& e) {
      return error(400, e.what(), "prompt");
    }
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
    ImagesRequest parsed;
    if (has(body, "response_format", json::value_t::string)) {
      const std::string format = body["response_format"].get<std::string>();
      if (format != "b64_json" && format != "url")
        return error(400, "response_format must be b64_json or url, got '" + format + "'", "response_format");
      parsed.url = format == "url";
    }
    if (has(body, "output_format", json::value_t::string) && body["output_format"].get<std::string>() != "png")
      return error(400, "output_format: tide writes png only", "output_format");
    if (has(body, "stream", json::value_t::boolean)) parsed.stream = body["stream"].get<bool>();
    if (has(body, "partial_images", json::value_t::number_integer)) parsed.partial_images = body["partial_images"].get<int>();
    if (parsed.partial_images < 0 || parsed.partial_images > 3)
      return error(400, "partial_images must be between 0 and 3", "partial_images");
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

    parsed.spec.model = model;
    parsed.spec.request = request;
    parsed.spec.images = n;
    parsed.spec.loras = loras;
    parsed.spec.prompt_as_sent = prompt_as_sent;
    parsed.sampler = sampler;
    return parsed;
  } catch (const std::invalid_argument& e) {
    return error(400, std::string("'") + e.what() + "' has the wrong type", e.what());
  } catch (const json::exception& e) {
    return error(400, std::string("bad value: ") + e.what());
  }
}

HttpReply images_generations(ApiContext& ctx, const ImagesRequest& request, const std::string& base_url) {
  auto submitted = submit(ctx, request.spec);
  if (auto* reply = std::get_if<HttpReply>(&submitted)) return *reply;
  const JobOutcome outcome = std::get<std::shared_ptr<Job>>(submitted)->wait();
  if (!outcome.error.empty())
    return error(outcome.bad_request ? 400 : 500, outcome.error, "", outcome.bad_request ? "invalid_request_error" : "server_error");
  if (outcome.images.empty()) return error(500, "the job was cancelled", "", "server_error", "cancelled");
  if (request.url && !ctx.images) return error(500, "this server keeps no images for response_format url", "response_format");
  json data = json::array();
  for (const auto& image : outcome.images) {
    std::string png = result_png(ctx, request.spec, outcome, image, request.sampler);
    json item = {{"revised_prompt", outcome.request.prompt}, {"seed", image.seed}};
    if (request.url)
      item["url"] = base_url + "/v1/images/files/" + ctx.images->put(std::move(png)) + ".png";
    else
      item["b64_json"] = base64_encode(png);
    data.push_back(item);
  }
  return json_reply({{"created", static_cast<int64_t>(std::time(nullptr))}, {"data", data}});
}

HttpReply images_generations(ApiContext& ctx, const std::string& body) {
  auto parsed = parse_images_generations(ctx, body);
  if (auto* reply = std::get_if<HttpReply>(&parsed)) return *reply;
  const auto& request = std::get<ImagesRequest>(parsed);
  if (request.stream) return error(400, "stream needs the HTTP server's event stream", "stream");
  return images_generations(ctx, request, "");
}

HttpReply models(ApiContext& ctx) {
  json data = json::array();
  for (const auto& e : ctx.registry.models())
    data.push_back({{"id", e.name}, {"object", "model"}, {"created", 0}, {"owned_by", "tide"}});
  return json_reply({{"object", "list"}, {"data", data}});
}

}  // namespace tide::server::openai
