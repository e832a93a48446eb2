#include "tide/server/jobs_api.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

#include "tide/io/image.h"
#include "tide/runtime/error.h"
#include "tide/server/a1111_samplers.h"
#include "tide/server/base64.h"
#include "tide/server/infotext.h"
#include "tide/server/request_fields.h"

namespace tide::server::jobs {
using nlohmann::json;
namespace {

HttpReply error(int status, const std::string& message, const std::string& field = "") {
  return json_reply({{"error", {{"message", message}, {"field", field.empty() ? json(nullptr) : json(field)}}}}, status);
}

// 64 random bits in hex: ids of this API never collide with force_task_id's or guess each other.
std::string new_job_id() {
  std::random_device random;
  const uint64_t bits = (uint64_t(random()) << 32) ^ random();
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(bits));
  return buffer;
}

json links(const std::string& id) {
  return {{"self", "/api/jobs/" + id}, {"events", "/api/jobs/" + id + "/events"}};
}

bool ended(JobStatus s) { return s == JobStatus::kDone || s == JobStatus::kFailed || s == JobStatus::kCancelled; }

json progress_json(const JobStep& p) {
  return {{"step", p.step},           {"steps", p.steps},         {"image_index", p.image_index},
          {"image_count", p.image_count}, {"fraction", p.fraction()}, {"elapsed", p.elapsed},
          {"eta", p.eta()}};
}

// The A1111 sampler name for tide's scheduler where there is one ("euler-a" -> "Euler a"), for the infotext.
std::string sampler_label(const std::string& scheduler) {
  for (const auto& s : a1111_samplers())
    if (s.scheduler == scheduler) return s.name;
  return scheduler.empty() ? std::string("default") : scheduler;
}

json request_json(const pipeline::GenerationRequest& r, const std::string& model, int images) {
  return {{"prompt", r.prompt},
          {"negative_prompt", r.negative_prompt ? json(*r.negative_prompt) : json(nullptr)},
          {"seed", r.seed},
          {"steps", r.steps},
          {"guidance", r.guidance},
          {"width", r.width == 0 ? json(nullptr) : json(r.width)},
          {"height", r.height == 0 ? json(nullptr) : json(r.height)},
          {"scheduler", r.scheduler.empty() ? json(nullptr) : json(r.scheduler)},
          {"karras", r.scheduler_options.karras},
          {"num_images", images},
          {"model", model.empty() ? json(nullptr) : json(model)},
          {"prompt_syntax", r.prompt_syntax == pipeline::PromptSyntax::kPlain ? "plain" : "a1111"},
          {"cache_interval", r.cache_interval}};
}

// The job as GET shows it. queue: for the place of a job that has not ended; loras: for the infotexts.
json job_json(const Job& job, const JobQueue* queue, LoraLibrary* loras) {
  const JobState s = job.state();
  const std::string& id = job.id();
  json out = {{"id", id}, {"status", status_name(s.status)}, {"links", links(id)}};
  out["queue_position"] = nullptr;
  if (!ended(s.status) && queue) {
    const int position = queue->position(id);
    if (position >= 0) out["queue_position"] = position;
  }
  JobStep progress = s.progress;
  if (progress.image_count == 0) {  // not started (queued, or cancelled while it waited)
    progress.image_count = job.spec().images;
    progress.steps = job.spec().request.steps;
  }
  progress.elapsed = s.elapsed;
  json p = progress_json(progress);
  if (s.status == JobStatus::kDone) {  // also when its last picture was skipped
    p["fraction"] = 1.0;
    p["eta"] = 0.0;
  }
  out["progress"] = p;
  if (!ended(s.status)) {
    out["request"] = request_json(job.spec().request, job.spec().model, job.spec().images);
    return out;
  }
  const JobOutcome& o = s.outcome;
  out["request"] = request_json(o.request, o.model.empty() ? job.spec().model : o.model, job.spec().images);
  if (s.status == JobStatus::kFailed) out["error"] = o.error;
  json images = json::array(), seeds = json::array(), infotexts = json::array();
  for (const auto& image : o.images) {
    const std::string text = job_infotext(job.spec(), o, image.seed, sampler_label(o.request.scheduler),
                                          o.request.scheduler_options.karras ? "Karras" : "", loras);
    images.push_back(base64_encode(io::encode_png(image.rgb8, {{"parameters", text}})));
    seeds.push_back(image.seed);
    infotexts.push_back(text);
  }
  out["images"] = images;
  out["seeds"] = seeds;
  out["infotexts"] = infotexts;
  out["seconds"] = s.elapsed;
  return out;
}

std::string sse_event(const char* name, const json& data) {
  return std::string("event: ") + name + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

const std::set<std::string> kFields = {"prompt", "negative_prompt", "seed",       "steps",     "guidance",
                                       "cfg_scale", "width",         "height",     "scheduler", "karras",
                                       "num_images", "model",        "prompt_syntax", "cache_interval"};

JobSpec parse_job(ApiContext& ctx, const json& body) {
  for (const auto& [key, value] : body.items())
    if (!kFields.count(key)) {
      std::string known;
      for (const auto& k : kFields) known += (known.empty() ? "" : ", ") + k;
      throw FieldError{key, "unknown field '" + key + "'; the fields are: " + known, "value_error"};
    }
  JobSpec spec;
  pipeline::GenerationRequest& r = spec.request;
  r.prompt = get_string(body, "prompt", "");
  spec.prompt_as_sent = r.prompt;
  if (body.contains("negative_prompt") && !body["negative_prompt"].is_null())
    r.negative_prompt = get_string(body, "negative_prompt", "");
  const std::string syntax = get_string(body, "prompt_syntax", "a1111");
  if (syntax != "a1111" && syntax != "plain")
    throw FieldError{"prompt_syntax", "prompt_syntax must be \"a1111\" or \"plain\", got \"" + syntax + "\"", "value_error"};
  r.prompt_syntax = syntax == "plain" ? pipeline::PromptSyntax::kPlain : pipeline::PromptSyntax::kA1111;
  if (r.prompt_syntax == pipeline::PromptSyntax::kA1111) {  // as tide generate: <lora:NAME:WEIGHT> tags with a1111
    try {
      spec.loras = take_prompt_loras(ctx.loras, r.prompt);
    } catch (const Error& e) {
      throw FieldError{"prompt", e.what(), "value_error"};
    }
  }

  const int64_t seed = get_int(body, "seed", -1);
  if (seed < -1) throw FieldError{"seed", "seed must be -1 (random) or at least 0, got " + std::to_string(seed), "value_error"};
  r.seed = seed >= 0 ? static_cast<uint64_t>(seed) : std::random_device{}() % 4294967294u;

  const int64_t steps = get_int(body, "steps", 50);
  require_range("steps", steps, 1, ctx.limits.max_steps);
  r.steps = static_cast<int>(steps);
  const bool has_guidance = body.contains("guidance") && !body["guidance"].is_null();
  const bool has_cfg = body.contains("cfg_scale") && !body["cfg_scale"].is_null();
  if (has_guidance && has_cfg) throw FieldError{"cfg_scale", "give guidance or cfg_scale, not both", "value_error"};
  const std::string guidance_field = has_cfg ? "cfg_scale" : "guidance";
  r.guidance = get_number(body, guidance_field, 7.5);
  if (!(r.guidance >= 0 && r.guidance <= 100))
    throw FieldError{guidance_field, guidance_field + " must be between 0 and 100", "value_error.number.not_in_range"};
  for (const char* side : {"width", "height"}) {
    if (!body.contains(side) || body[side].is_null()) continue;  // the model's size
    const int64_t v = get_int(body, side, 0);
    require_range(side, v, 1, ctx.limits.max_side);
    (std::string(side) == "width" ? r.width : r.height) = static_cast<int>(v);
  }
  const int64_t cache_interval = get_int(body, "cache_interval", 1);
  require_range("cache_interval", cache_interval, 1, ctx.limits.max_steps);
  r.cache_interval = static_cast<int>(cache_interval);
  const int64_t images = get_int(body, "num_images", 1);
  require_range("num_images", images, 1, ctx.limits.max_images);
  spec.images = static_cast<int>(images);

  const std::string scheduler = get_string(body, "scheduler", "");
  const bool karras = get_bool(body, "karras", false);
  if (!scheduler.empty()) {
    try {
      const SamplerChoice choice = choose_sampler(scheduler, karras ? "Karras" : "Uniform");
      r.scheduler = choice.scheduler;
      r.scheduler_options.karras = choice.karras;
    } catch (const Error& e) {
      throw FieldError{karras ? "karras" : "scheduler", e.what(), "value_error"};
    }
  } else if (karras) {
    throw FieldError{"karras", "karras needs a scheduler (the model's own takes its sigmas from its config)", "value_error"};
  }

  const std::string model = get_string(body, "model", "");
  if (model.empty()) {
    spec.model = ctx.registry.current();
  } else {
    const auto entry = ctx.registry.find(model);
    if (!entry) {
      std::string known;
      for (const auto& e : ctx.registry.models()) known += (known.empty() ? "" : ", ") + e.name;
      throw FieldError{"model", "model '" + model + "' not found; known models: " + known, "value_error"};
    }
    spec.model = entry->name;
  }
  spec.keep = true;
  spec.id = new_job_id();
  return spec;
}

}  // namespace

HttpReply not_found(const std::string& id) {
  return error(404, "no job '" + id + "': unknown, or it ended more than " + std::to_string(JobQueue::kKeptSeconds / 60) +
                        " minutes or " + std::to_string(JobQueue::kKeptJobs) + " jobs ago");
}

HttpReply create(ApiContext& ctx, const std::string& raw) {
  json body;
  try {
    body = json::parse(raw);
  } catch (const json::exception& e) {
    return error(422, std::string("invalid JSON: ") + e.what());
  }
  if (!body.is_object()) return error(422, "the request body must be a JSON object");
  JobSpec spec;
  try {
    spec = parse_job(ctx, body);
  } catch (const FieldError& e) {
    return error(422, e.message, e.field);
  }
  std::shared_ptr<Job> job;
  try {
    job = ctx.queue.submit(spec);
  } catch (const QueueFull& e) {
    HttpReply r = error(503, e.what());
    r.headers["Retry-After"] = "10";
    return r;
  }
  const JobState s = job->state();
  const int position = ctx.queue.position(job->id());
  HttpReply r = json_reply({{"id", job->id()},
                            {"status", status_name(s.status)},
                            {"queue_position", position >= 0 ? json(position) : json(nullptr)},
                            {"seed", job->spec().request.seed},
                            {"links", links(job->id())}},
                           202);
  r.headers["Location"] = "/api/jobs/" + job->id();
  return r;
}

HttpReply get(ApiContext& ctx, const std::string& id) {
  const auto job = ctx.queue.find(id);
  if (!job) return not_found(id);
  return json_reply(job_json(*job, &ctx.queue, ctx.loras));
}

HttpReply cancel(ApiContext& ctx, const std::string& id) {
  const auto job = ctx.queue.find(id);
  if (!job) return not_found(id);
  if (!ended(job->state().status) && ctx.queue.interrupt(id)) job->wait();
  return json_reply(job_json(*job, &ctx.queue, ctx.loras));
}

std::shared_ptr<EventStream> open_events(ApiContext& ctx, const std::string& id) {
  auto job = ctx.queue.find(id);
  return job ? std::make_shared<EventStream>(std::move(job), ctx.loras) : nullptr;
}

std::string EventStream::next(std::chrono::milliseconds wait, bool& ended_now) {
  ended_now = ended_;
  if (ended_) return "";
  if (started_) job_->wait_changed(seen_, wait);
  started_ = true;
  const JobState s = job_->state();  // before the steps: every step of an ended job is then among them
  seen_ = s.version;
  std::string out;
  for (const auto& step : job_->steps_since(steps_sent_)) {
    json data = progress_json(step);
    data["id"] = job_->id();
    out += sse_event("progress", data);
    ++steps_sent_;
  }
  if (ended(s.status)) {
    out += sse_event(status_name(s.status), job_json(*job_, nullptr, loras_));
    ended_ = ended_now = true;
  }
  return out.empty() ? std::string(": waiting\n\n") : out;
}

}  // namespace tide::server::jobs
