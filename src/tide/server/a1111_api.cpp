#include "tide/server/a1111_api.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <random>


#include "tide/io/atomic_file.h"
#include "tide/io/image.h"
#include "tide/runtime/error.h"
#include "tide/server/a1111_samplers.h"
#include "tide/server/base64.h"
#include "tide/server/infotext.h"
#include "tide/server/request_fields.h"
#include "tide/text/embeddings.h"
#include "tide/train/image_files.h"
#include "tide/version.h"

namespace tide::server::a1111 {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

// FastAPI's 422 body names the field.
HttpReply field_error(const FieldError& e) {
  return json_reply({{"detail", json::array({{{"loc", {"body", e.field}}, {"msg", e.message}, {"type", e.type}}})}}, 422);
}

HttpReply detail(const std::string& message, int status) { return json_reply({{"detail", message}}, status); }

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y%m%d%H%M%S", &tm);
  return buffer;
}

// Fields A1111 has that tide does not compute: accepted, and named in a warning when not at their defaults.
std::vector<std::string> unimplemented_fields(const json& body) {
  std::vector<std::string> names;
  auto set = [&](const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return false;
    if (it->is_boolean()) return it->get<bool>();
    if (it->is_number()) return it->get<double>() != 0;
    if (it->is_string()) return !it->get<std::string>().empty();
    if (it->is_array() || it->is_object()) return !it->empty();
    return true;
  };
  for (const char* key : {"enable_hr", "restore_faces", "tiling", "subseed_strength", "styles", "script_name",
                          "script_args", "alwayson_scripts", "refiner_checkpoint", "s_churn", "s_noise_override",
                          "s_min_uncond", "hr_scale_override"})
    if (set(key)) names.push_back(key);
  for (const char* key : {"seed_resize_from_h", "seed_resize_from_w"}) {
    auto it = body.find(key);
    if (it != body.end() && it->is_number() && it->get<double>() > 0) names.push_back(key);
  }
  return names;
}

json model_json(const ModelEntry& e) {
  return {{"title", e.name}, {"model_name", e.name}, {"hash", nullptr}, {"sha256", nullptr},
          {"filename", e.source}, {"config", nullptr}};
}

}  // namespace

namespace {
// A base64 image of an img2img request (a data: URL prefix allowed), as uint8 [H, W, 3]; PNG or JPEG.
at::Tensor request_image(const json& body, const char* field, const json& value) {
  std::string text = value.is_string() ? value.get<std::string>() : std::string();
  if (text.empty()) throw FieldError{field, "expected a base64-encoded PNG or JPEG image", "type_error.str"};
  if (text.rfind("data:", 0) == 0 && text.find(',') != std::string::npos) text = text.substr(text.find(',') + 1);
  std::string bytes;
  try {
    bytes = base64_decode(text);
    return train::decode_rgb_image(bytes, field);
  } catch (const Error& e) {
    throw FieldError{field, std::string("not a base64 PNG or JPEG image: ") + e.what(), "value_error"};
  }
}
}  // namespace

HttpReply txt2img(ApiContext& ctx, const std::string& raw_body) { return generate(ctx, raw_body, false); }
HttpReply img2img(ApiContext& ctx, const std::string& raw_body) { return generate(ctx, raw_body, true); }

HttpReply generate(ApiContext& ctx, const std::string& raw_body, bool image_to_image) {
  json body;
  try {
    body = json::parse(raw_body);
  } catch (const json::exception& e) {
    return json_reply({{"detail", json::array({{{"loc", {"body", 0}}, {"msg", std::string("invalid JSON: ") + e.what()},
                                                 {"type", "value_error.jsondecode"}}})}},
                      422);
  }
  if (!body.is_object()) return detail("the request body must be a JSON object", 422);
  try {
    pipeline::GenerationRequest request;
    request.prompt_syntax = pipeline::PromptSyntax::kA1111;
    request.prompt = get_string(body, "prompt", "");
    const std::string prompt_as_sent = request.prompt;  // with its <lora:...> tags, for the infotexts
    std::vector<adapters::LoraSpec> loras;
    try {
      loras = take_prompt_loras(ctx.loras, request.prompt);
    } catch (const Error& e) {
      throw FieldError{"prompt", e.what(), "value_error"};
    }
    request.negative_prompt = get_string(body, "negative_prompt", "");
    request.steps = static_cast<int>(get_int(body, "steps", 50));
    require_range("steps", request.steps, 1, ctx.limits.max_steps);
    request.guidance = get_number(body, "cfg_scale", 7.0);
    if (!(request.guidance >= 0 && request.guidance <= 100))
      throw FieldError{"cfg_scale", "cfg_scale must be between 0 and 100", "value_error.number.not_in_range"};
    request.width = static_cast<int>(get_int(body, "width", 512));
    request.height = static_cast<int>(get_int(body, "height", 512));
    require_range("width", request.width, 1, ctx.limits.max_side);
    require_range("height", request.height, 1, ctx.limits.max_side);
    const int batch_size = static_cast<int>(get_int(body, "batch_size", 1));
    const int n_iter = static_cast<int>(get_int(body, "n_iter", 1));
    require_range("batch_size", batch_size, 1, ctx.limits.max_images);
    require_range("n_iter", n_iter, 1, ctx.limits.max_images);
    if (batch_size * n_iter > ctx.limits.max_images)
      throw FieldError{"n_iter", "batch_size × n_iter must be at most " + std::to_string(ctx.limits.max_images),
                       "value_error.number.not_in_range"};
    int64_t seed = get_int(body, "seed", -1);
    if (seed < 0) seed = static_cast<int64_t>(std::random_device{}() % 4294967294u);
    request.seed = static_cast<uint64_t>(seed);
    const std::string sampler_name = get_string(body, "sampler_name", get_string(body, "sampler_index", "Euler"));
    const std::string schedule = get_string(body, "scheduler", "Automatic");
    SamplerChoice sampler;
    try {
      sampler = choose_sampler(sampler_name, schedule);
    } catch (const Error& e) {
      throw FieldError{body.contains("scheduler") && !body.contains("sampler_name") ? "scheduler" : "sampler_name",
                       e.what(), "value_error"};
    }
    request.scheduler = sampler.scheduler;
    request.scheduler_options.karras = sampler.karras;
    if (image_to_image) {
      // A1111's img2img: init_images[0] redrawn at denoising_strength; with `mask`, inpainting (white = repaint,
      // inpainting_mask_invert swaps), mask_blur in pixels.
      if (!body.contains("init_images") || !body["init_images"].is_array() || body["init_images"].empty())
        throw FieldError{"init_images", "img2img needs init_images with one base64 PNG or JPEG", "value_error.missing"};
      request.init_image = request_image(body, "init_images", body["init_images"][0]);
      request.strength = get_number(body, "denoising_strength", 0.75);
      if (!(*request.strength > 0 && *request.strength <= 1))
        throw FieldError{"denoising_strength", "denoising_strength must be in (0, 1]", "value_error.number.not_in_range"};
      if (body.contains("mask") && !body["mask"].is_null()) {
        at::Tensor mask = request_image(body, "mask", body["mask"]);
        if (get_int(body, "inpainting_mask_invert", 0) != 0) mask = 255 - mask;
        request.mask = mask;
        request.mask_blur = static_cast<double>(get_int(body, "mask_blur", 4));
        if (request.mask_blur < 0 || request.mask_blur > 64)
          throw FieldError{"mask_blur", "mask_blur must be between 0 and 64", "value_error.number.not_in_range"};
      }
    }
    if (sampler.scheduler == "ddim" || sampler.scheduler == "tcd") {  // the others have no eta (A1111 ignores it)
      const double eta = get_number(body, "eta", 0.0);
      if (!(eta >= 0 && eta <= 1)) throw FieldError{"eta", "eta must be between 0 and 1", "value_error"};
      request.scheduler_options.eta = eta;
    }
    // tide's extension (A1111 has no such setting): DeepCache, as tide generate --cache-interval.
    const int64_t cache_interval = get_int(body, kCacheIntervalField, 1);
    require_range(kCacheIntervalField, cache_interval, 1, ctx.limits.max_steps);
    request.cache_interval = static_cast<int>(cache_interval);

    std::vector<std::string> warnings;
    for (const auto& name : unimplemented_fields(body)) warnings.push_back(name + " is not implemented by tide and was ignored");
    std::string model;
    const json overrides = body.contains("override_settings") && !body["override_settings"].is_null()
                               ? body["override_settings"]
                               : json::object();
    if (!overrides.is_object()) throw FieldError{"override_settings", "value is not a valid dict", "type_error.dict"};
    for (const auto& [key, value] : overrides.items()) {
      if (key == "sd_model_checkpoint") {
        const std::string name = get_string(overrides, key, "");
        const auto entry = ctx.registry.find(name);
        if (!entry) {
          std::string known;
          for (const auto& e : ctx.registry.models()) known += (known.empty() ? "" : ", ") + e.name;
          throw FieldError{"override_settings", "model '" + name + "' not found; known models: " + known, "value_error"};
        }
        model = entry->name;
      } else if (key == "CLIP_stop_at_last_layers") {
        request.clip_skip = static_cast<int>(get_int(overrides, key, 1));
        require_range("CLIP_stop_at_last_layers", request.clip_skip, 1, 12);
      } else if (key == "token_merging_ratio") {
        // A1111's own Token Merging setting: tomesd with use_rand=False, around the self-attention only.
        request.tome.ratio = get_number(overrides, key, 0);
        if (!(request.tome.ratio >= 0 && request.tome.ratio < 1))
          throw FieldError{"override_settings", "token_merging_ratio must be in [0, 1)", "value_error"};
        request.tome.use_rand = false;
      } else if (key != "samples_format" || get_string(overrides, key, "png") != "png") {
        warnings.push_back("override_settings." + key + " is not implemented by tide and was ignored");
      }
    }
    if (model.empty()) model = ctx.registry.current();
    const bool send_images = get_bool(body, "send_images", true);
    const bool save_images = get_bool(body, "save_images", false);
    if (save_images && ctx.output_dir.empty())
      warnings.push_back("save_images: tide serve was started without --output-dir; nothing was saved");

    JobSpec spec;
    spec.id = get_string(body, "force_task_id", "");
    spec.model = model;
    spec.request = request;
    spec.images = batch_size * n_iter;
    spec.loras = loras;
    spec.prompt_as_sent = prompt_as_sent;
    std::shared_ptr<Job> job;
    try {
      job = ctx.queue.submit(spec);
    } catch (const QueueFull& e) {
      HttpReply r = detail(e.what(), 503);
      r.headers["Retry-After"] = "10";
      return r;
    }
    const JobOutcome outcome = job->wait();
    if (!outcome.error.empty()) return detail(outcome.error, outcome.bad_request ? 422 : 500);

    pipeline::GenerationRequest r = outcome.request;
    r.prompt = prompt_as_sent;
    json images = json::array(), infotexts = json::array(), seeds = json::array();
    const std::string stamp = timestamp();
    for (size_t i = 0; i < outcome.images.size(); ++i) {
      const auto& image = outcome.images[i];
      const std::string text = job_infotext(spec, outcome, image.seed, sampler.a1111_name, sampler.schedule_label, ctx.loras);
      infotexts.push_back(text);
      seeds.push_back(image.seed);
      if (!send_images && !(save_images && !ctx.output_dir.empty())) continue;
      const std::string png = io::encode_png(image.rgb8, {{"parameters", text}});
      if (send_images) images.push_back(base64_encode(png));
      if (save_images && !ctx.output_dir.empty())
        io::write_file_atomically(ctx.output_dir / (stamp + "-" + std::to_string(image.seed) + "-" + std::to_string(i) + ".png"),
                                  png);
    }
    const std::string negative = r.negative_prompt.value_or("");
    json info = {
        {"prompt", r.prompt},
        {"all_prompts", json::array()},
        {"negative_prompt", negative},
        {"all_negative_prompts", json::array()},
        {"seed", request.seed},
        {"all_seeds", seeds},
        {"subseed", -1},
        {"all_subseeds", json::array()},
        {"subseed_strength", 0},
        {"width", r.width},
        {"height", r.height},
        {"sampler_name", sampler.a1111_name},
        {"cfg_scale", r.guidance},
        {"steps", r.steps},
        {"batch_size", batch_size},
        {"restore_faces", false},
        {"face_restoration_model", nullptr},
        {"sd_model_name", outcome.model},
        {"sd_model_hash", nullptr},
        {"sd_vae_name", nullptr},
        {"sd_vae_hash", nullptr},
        {"seed_resize_from_w", -1},
        {"seed_resize_from_h", -1},
        {"denoising_strength", r.strength ? json(*r.strength) : json(nullptr)},
        {"extra_generation_params", sampler.schedule_label.empty() ? json::object() : json{{"Schedule type", sampler.schedule_label}}},
        {"index_of_first_image", 0},
        {"infotexts", infotexts},
        {"styles", json::array()},
        {"job_timestamp", stamp},
        {"clip_skip", r.clip_skip},
        {"is_using_inpainting_conditioning", false},
        {"version", "tide " TIDE_VERSION},
        {"interrupted", outcome.interrupted},
        {"warnings", warnings},
    };
    for (size_t i = 0; i < seeds.size(); ++i) {
      info["all_prompts"].push_back(r.prompt);
      info["all_negative_prompts"].push_back(negative);
      info["all_subseeds"].push_back(seeds[i]);
    }
    // `parameters`: the request as understood, with A1111's defaults filled in.
    json parameters = body;
    parameters["prompt"] = r.prompt;
    parameters["negative_prompt"] = negative;
    parameters["seed"] = get_int(body, "seed", -1);
    parameters["steps"] = r.steps;
    parameters["cfg_scale"] = r.guidance;
    parameters["width"] = r.width;
    parameters["height"] = r.height;
    parameters["batch_size"] = batch_size;
    parameters["n_iter"] = n_iter;
    parameters["sampler_name"] = sampler_name;
    parameters["scheduler"] = schedule;
    parameters["send_images"] = send_images;
    parameters["save_images"] = save_images;
    parameters[kCacheIntervalField] = r.cache_interval;
    return json_reply({{"images", images}, {"parameters", parameters}, {"info", info.dump()}});
  } catch (const FieldError& e) {
    return field_error(e);
  }
}

HttpReply progress(ApiContext& ctx, bool skip_current_image, const std::string& task_id) {
  const ProgressSnapshot p = ctx.queue.progress();
  json current_image = nullptr;
  if (!skip_current_image) {
    const std::string png = ctx.previews.png(p);
    if (!png.empty()) current_image = base64_encode(png);
  }
  std::string textinfo = "Waiting...";
  if (p.active)
    textinfo = "Image " + std::to_string(p.image_index + 1) + " of " + std::to_string(p.image_count) + ", step " +
               std::to_string(p.step) + " of " + std::to_string(p.steps);
  json state = {{"skipped", false},
                {"interrupted", p.interrupted},
                {"stopping_generation", false},
                {"job", p.active ? p.job_id : ""},
                {"job_count", p.active ? p.image_count : 0},
                {"job_timestamp", "0"},
                {"job_no", p.image_index},
                {"sampling_step", p.step},
                {"sampling_steps", p.steps}};
  json out = {{"progress", p.progress},
              {"eta_relative", p.eta},
              {"state", state},
              {"current_image", current_image},
              {"textinfo", textinfo},
              {"current_task", p.active ? json(p.job_id) : json(nullptr)}};
  // tide's additions: the waiting jobs, seconds so far, and where a given job stands (0 running, k waiting, -1 not
  // known: finished or never submitted).
  json extra = {{"queued", p.queued}, {"elapsed", p.elapsed}, {"model", p.model}};
  if (!task_id.empty()) extra["queue_position"] = ctx.queue.position(task_id);
  out["tide"] = extra;
  return json_reply(out);
}

HttpReply interrupt(ApiContext& ctx, const std::string& body) {
  std::string id;
  if (!body.empty()) {
    try {
      const json j = json::parse(body);
      if (j.is_object()) id = get_string(j, "id_task", "");
    } catch (const json::exception&) {
      return detail("the request body must be JSON", 422);
    } catch (const FieldError& e) {
      return field_error(e);
    }
  }
  ctx.queue.interrupt(id);
  return json_reply(nullptr);
}

HttpReply skip(ApiContext& ctx) {
  ctx.queue.skip();
  return json_reply(nullptr);
}

HttpReply sd_models(ApiContext& ctx) {
  json out = json::array();
  for (const auto& e : ctx.registry.models()) out.push_back(model_json(e));
  return json_reply(out);
}

HttpReply refresh_checkpoints(ApiContext& ctx) {
  ctx.registry.refresh();
  return json_reply(nullptr);
}

HttpReply samplers() {
  json out = json::array();
  for (const auto& s : a1111_samplers()) {
    json options = json::object();
    if (s.karras_by_default) options["scheduler"] = "karras";
    out.push_back({{"name", s.name}, {"aliases", s.aliases}, {"options", options}});
  }
  return json_reply(out);
}

HttpReply schedulers() {
  json out = json::array();
  for (const auto& [name, label] : a1111_schedule_types())
    out.push_back({{"name", name}, {"label", label}, {"aliases", nullptr}, {"default_rho", -1}, {"need_inner_model", false}});
  return json_reply(out);
}

HttpReply loras(ApiContext& ctx) {
  json out = json::array();
  if (ctx.loras)
    for (const auto& f : ctx.loras->files())
      out.push_back({{"name", f.name}, {"alias", f.name}, {"path", f.path.string()}, {"metadata", json::object()}});
  return json_reply(out);
}

HttpReply embeddings(ApiContext& ctx) {
  json loaded = json::object(), skipped = json::object();
  for (const auto& [token, path] : ctx.registry.embeddings()) {
    try {
      const auto e = text::read_embedding_file(path, token);
      loaded[token] = {{"step", nullptr}, {"sd_checkpoint", nullptr}, {"sd_checkpoint_name", nullptr},
                       {"shape", e.vectors.size(1)}, {"vectors", e.vectors.size(0)}};
    } catch (const Error&) {
      skipped[token] = {{"step", nullptr}, {"sd_checkpoint", nullptr}, {"sd_checkpoint_name", nullptr},
                        {"shape", nullptr}, {"vectors", nullptr}};
    }
  }
  return json_reply({{"loaded", loaded}, {"skipped", skipped}});
}

HttpReply get_options(ApiContext& ctx) {
  return json_reply({{"sd_model_checkpoint", ctx.registry.current()},
                     {"CLIP_stop_at_last_layers", 1},
                     {"samples_format", "png"},
                     {"sd_checkpoints_limit", 1},
                     {"live_previews_enable", true},
                     // A1111's names: TAESD previews where --preview-decoder gave one, else the linear map.
                     {"show_progress_type", ctx.previews.decodes(false) || ctx.previews.decodes(true) ? "TAESD"
                                                                                                      : "Approx cheap"},
                     {"show_progress_every_n_steps", 1}});
}

HttpReply set_options(ApiContext& ctx, const std::string& raw) {
  json body;
  try {
    body = json::parse(raw);
  } catch (const json::exception& e) {
    return detail(std::string("invalid JSON: ") + e.what(), 422);
  }
  if (!body.is_object()) return detail("the request body must be a JSON object", 422);
  if (body.contains("sd_model_checkpoint")) {
    try {
      ctx.registry.set_current(get_string(body, "sd_model_checkpoint", ""));
    } catch (const Error& e) {
      return detail(e.what(), 422);
    } catch (const FieldError& e) {
      return field_error(e);
    }
  }
  return json_reply(nullptr);
}

HttpReply cmd_flags(ApiContext& ctx) { return json_reply(ctx.command_line); }

HttpReply png_info(const std::string& raw) {
  json body;
  try {
    body = json::parse(raw);
  } catch (const json::exception& e) {
    return detail(std::string("invalid JSON: ") + e.what(), 422);
  }
  if (!body.is_object() || !body.contains("image") || !body["image"].is_string())
    return field_error({"image", "field required", "value_error.missing"});
  try {
    const io::PngImage png = io::decode_png(base64_decode(body["image"].get<std::string>()), "the image");
    json items = json::object();
    std::string parameters;
    for (const auto& [key, value] : png.text) {
      if (key == "parameters") parameters = value;
      else items[key] = value;
    }
    return json_reply({{"info", parameters}, {"items", items}, {"parameters", parse_infotext(parameters)}});
  } catch (const Error& e) {
    return detail(e.what(), 422);
  }
}

HttpReply memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), available = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  long resident_pages = 0;
  {
    std::ifstream statm("/proc/self/statm");
    long size = 0;
    statm >> size >> resident_pages;
  }
  const double total = double(pages) * page, free = double(available) * page;
  return json_reply({{"ram", {{"free", free}, {"used", total - free}, {"total", total},
                              {"process_resident", double(resident_pages) * page}}},
                     {"cuda", {{"error", "tide computes on the CPU"}}}});
}

HttpReply empty_list() { return json_reply(json::array()); }

}  // namespace tide::server::a1111
