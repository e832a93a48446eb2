// Generation jobs run one at a time, in order, on one worker thread that owns every pipeline call (a pipeline
// is used from one thread at a time). HTTP threads submit jobs, wait for them, read the progress of the running
// one (step i of n, elapsed, ETA, the latest latents for a preview) and interrupt or skip it.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tide/adapters/lora_set.h"
#include "tide/pipeline/generation.h"
#include "tide/server/model_registry.h"

namespace tide::server {

// What a job computes: `images` pictures of `request`, image i from seed request.seed + i (each reproducible on
// its own by `tide generate --seed`), all from the same conditioning.
struct JobSpec {
  std::string id;     // "" = a new one
  std::string model;  // registry name; "" = the current model
  pipeline::GenerationRequest request;
  int images = 1;
  // Kept after it ends, so that JobQueue::find() still returns it (the job API's results are fetched later).
  bool keep = false;
  // LoRAs merged into the model for this job (none: its base weights, restored bit for bit).
  std::vector<adapters::LoraSpec> loras;
  // The prompt as the client sent it, its <lora:...> tags kept (request.prompt has them cut out): what the
  // infotexts record, as A1111's do. "" = request.prompt.
  std::string prompt_as_sent;
  // Called on the worker after every denoising step: picture `image` (0-based) has done `step` of `steps`;
  // `latents` [N, C, h, w] are the pipeline's (copy what you keep). For streamed previews.
  std::function<void(int image, int step, int steps, const at::Tensor& latents)> on_step;
};

struct JobImage {
  at::Tensor rgb8;  // uint8 [H, W, 3]
  uint64_t seed;
};

struct JobOutcome {
  std::vector<JobImage> images;
  pipeline::GenerationRequest request;  // as resolved by the pipeline (sizes filled in)
  std::string model;                    // the model's name
  bool interrupted = false;             // stopped by interrupt(), or cancelled while queued
  std::string error;                    // set when the job failed; bad_request: a tide::Error (the request's fault)
  bool bad_request = false;
  double seconds = 0;
};

enum class JobStatus { kQueued, kRunning, kDone, kFailed, kCancelled };
// "queued", "running", "done", "failed", "cancelled".
const char* status_name(JobStatus status);

// Where a job stood after one of its denoising steps.
struct JobStep {
  int image_index = 0, image_count = 0;  // which picture of the job
  int step = 0, steps = 0;               // steps done in this picture, and their number
  double elapsed = 0;                    // seconds since the job started
  double fraction() const;               // 0..1 over the whole job
  double eta() const;                    // seconds left, estimated from the pace so far (0 before the first step)
};

struct JobState {
  JobStatus status = JobStatus::kQueued;
  JobStep progress;      // the latest step (step 0 before the first)
  double elapsed = 0;    // seconds since the job started: now while it runs, its total once it ended
  size_t steps_logged = 0;
  uint64_t version = 0;  // grows with every change
  JobOutcome outcome;    // once it ended
};

class Job {
 public:
  explicit Job(JobSpec spec) : spec_(std::move(spec)) {}
  const std::string& id() const { return spec_.id; }
  const JobSpec& spec() const { return spec_; }
  // Blocks until the job has finished (or was cancelled).
  JobOutcome wait();
  JobState state() const;
  // The steps logged from the first-th on (every step of every picture, in order).
  std::vector<JobStep> steps_since(size_t first) const;
  // Blocks until the job's version is past `seen` or `timeout` passed; returns the version then.
  uint64_t wait_changed(uint64_t seen, std::chrono::milliseconds timeout) const;
  // The same, waiting at most `timeout`; nullopt when the job is still going.
  std::optional<JobOutcome> wait_for(std::chrono::milliseconds timeout);

 private:
  friend class JobQueue;
  void start(int images, int steps);
  void log_step(JobStep step);  // elapsed: filled in
  void finish(JobOutcome outcome);
  JobSpec spec_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_cv_;
  bool done_ = false;
  JobOutcome outcome_;
  JobStatus status_ = JobStatus::kQueued;
  std::chrono::steady_clock::time_point started_;
  double seconds_ = 0;  // total, once ended
  std::vector<JobStep> steps_;
  JobStep latest_;
  uint64_t version_ = 0;
};

// What the queue has done since it started, for /metrics.
struct JobCounters {
  uint64_t done = 0, failed = 0, cancelled = 0;  // jobs that ended so
  uint64_t images = 0;
  uint64_t steps = 0;
  double step_seconds = 0;  // summed over `steps`: from one step's end to the next (a picture's first: from its start)
};

// The running job as /progress shows it.
struct ProgressSnapshot {
  bool active = false;
  std::string job_id;
  std::string model;
  int image_index = 0, image_count = 0;  // which picture of the job is being computed
  int step = 0, steps = 0;               // UNet calls done in this picture, and their number
  double elapsed = 0;                    // seconds since the job started
  double progress = 0;                   // 0..1 over the whole job
  double eta = 0;                        // seconds left, estimated from the pace so far
  bool interrupted = false;
  int queued = 0;      // jobs waiting behind it
  at::Tensor latents;  // the latest latents [N, C, h, w] (undefined before the first step)
  bool xl = false;
};

class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class JobQueue {
 public:
  // max_waiting: how many jobs may wait while one runs; submit() beyond that throws QueueFull.
  JobQueue(ModelRegistry& registry, size_t max_waiting);
  ~JobQueue();

  std::shared_ptr<Job> submit(JobSpec spec);
  // Stops the running job after its current step ("" or its id) or removes a waiting one (its id).
  // False when no such job.
  bool interrupt(const std::string& id = "");
  // Abandons the picture being computed and goes on with the job's next one (A1111's skip).
  void skip();
  ProgressSnapshot progress() const;
  // 0: running, k > 0: k-th in line, -1: not known (finished or never submitted).
  int position(const std::string& id) const;
  size_t waiting() const;
  // A waiting or running job, or one that ended and was submitted with `keep` (the last kKeptJobs, for at most
  // kKeptSeconds after they ended); nullptr otherwise. Kept jobs past those bounds (and their images) are let go
  // here and when a job ends.
  std::shared_ptr<Job> find(const std::string& id);
  static constexpr size_t kKeptJobs = 64;
  static constexpr int kKeptSeconds = 600;
  JobCounters counters() const;
  // Ends the worker: waiting jobs are cancelled, the running one is interrupted; returns when it has stopped.
  void shutdown();

  // Test hooks: while paused the worker starts no new job; the observer runs on the worker after every step.
  void set_paused(bool paused);
  void set_step_observer(std::function<void(const std::string& job_id, int step)> observer);

 private:
  void work();
  JobOutcome run(Job& job);
  // Counts the job's end, keeps it when asked, then finishes it (wakes whoever waits). Not under mutex_.
  void end(const std::shared_ptr<Job>& job, JobOutcome outcome);
  void drop_expired();  // under mutex_
  ModelRegistry& registry_;
  const size_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::shared_ptr<Job> running_;
  struct Ended {
    std::shared_ptr<Job> job;
    std::chrono::steady_clock::time_point at;
  };
  std::deque<Ended> kept_;  // oldest first
  JobCounters counters_;
  bool stopping_ = false, paused_ = false;
  bool interrupt_ = false, skip_ = false;
  ProgressSnapshot progress_;
  std::chrono::steady_clock::time_point started_;
  uint64_t next_id_ = 1;
  std::function<void(const std::string&, int)> observer_;
  std::thread worker_;
};

}  // namespace tide::server
