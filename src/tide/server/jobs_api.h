// tide's own job API: a generation is a resource. POST /api/jobs queues it and answers at once (202, Location);
// GET /api/jobs/{id} tells its status, place in the queue and progress, and once it is done its images (base64
// PNGs with their `parameters` chunk) and seeds; GET /api/jobs/{id}/events streams its progress as server-sent
// events; DELETE /api/jobs/{id} cancels it. Jobs that ended stay readable for a while: the last
// JobQueue::kKeptJobs (64) of them, each for at most JobQueue::kKeptSeconds (10 minutes) after it ended.
// Errors: {"error": {"message": ..., "field": ... or null}}; a bad body is 422, an unknown id 404, a full
// queue 503 with Retry-After.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "tide/server/api_context.h"

namespace tide::server::jobs {

// Body: prompt, negative_prompt, seed (-1 or absent: random), steps (50), guidance or cfg_scale (7.5), width and
// height (the model's size), scheduler (tide's names, as tide generate --scheduler; absent: the model's own),
// karras, num_images (1), model (absent: the current one), prompt_syntax ("a1111" or "plain"), cache_interval
// (DeepCache, as tide generate --cache-interval: the whole UNet every N-th step; 1 = off). Unknown fields are
// refused.
HttpReply create(ApiContext& ctx, const std::string& body);
HttpReply get(ApiContext& ctx, const std::string& id);
// A waiting job is removed; a running one stops after its current step (this waits for that). The reply is the
// job as GET shows it then; a job that had already ended is left as it was.
HttpReply cancel(ApiContext& ctx, const std::string& id);
HttpReply not_found(const std::string& id);

// A job's server-sent events: `progress` after every denoising step (the steps already done first), then one
// `done`, `failed` or `cancelled` event whose data is the job as GET shows it; then the stream ends. The HTTP
// layer pulls text from it; nothing here blocks the generation worker.
class EventStream {
 public:
  // loras: the server's LoRA folders, for the infotexts' "Lora hashes" (null: none).
  EventStream(std::shared_ptr<Job> job, LoraLibrary* loras) : job_(std::move(job)), loras_(loras) {}
  // The next events (or, when nothing happened within `wait`, an SSE comment that keeps the connection alive
  // and finds out whether the client is still there). `ended`: the final event is in this text.
  std::string next(std::chrono::milliseconds wait, bool& ended);

 private:
  std::shared_ptr<Job> job_;
  LoraLibrary* loras_;
  bool started_ = false, ended_ = false;
  uint64_t seen_ = 0;   // the job's version when last read
  size_t steps_sent_ = 0;
};

// nullptr for an unknown id.
std::shared_ptr<EventStream> open_events(ApiContext& ctx, const std::string& id);

}  // namespace tide::server::jobs
