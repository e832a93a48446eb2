#include "tide/server/job_queue.h"

#include <c10/util/Exception.h>

#include "tide/runtime/error.h"
#include "tide/adapters/lora_argument.h"
#include "tide/server/lora_library.h"
#include "tide/text/embeddings.h"

namespace tide::server {
namespace {

// Thrown from the step callback to leave the denoising loop (the pipeline's RAII scopes clean up).
struct Interrupted {};
struct Skipped {};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

const char* status_name(JobStatus status) {
  switch (status) {
    case JobStatus::kQueued: return "queued";
    case JobStatus::kRunning: return "running";
    case JobStatus::kDone: return "done";
    case JobStatus::kFailed: return "failed";
    case JobStatus::kCancelled: return "cancelled";
  }
  return "unknown";
}

double JobStep::fraction() const {
  if (image_count <= 0) return 0.0;
  const double in_image = steps > 0 ? double(step) / steps : 0.0;
  return (image_index + in_image) / image_count;
}

double JobStep::eta() const {
  const double f = fraction();
  return f > 0 ? elapsed / f - elapsed : 0.0;
}

JobOutcome Job::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_cv_.wait(lock, [&] { return done_; });
  return outcome_;
}

JobState Job::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  JobState s;
  s.status = status_;
  s.progress = latest_;
  s.elapsed = status_ == JobStatus::kRunning ? seconds_since(started_) : seconds_;
  s.steps_logged = steps_.size();
  s.version = version_;
  if (done_) s.outcome = outcome_;
  return s;
}

std::vector<JobStep> Job::steps_since(size_t first) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (first >= steps_.size()) return {};
  return std::vector<JobStep>(steps_.begin() + static_cast<std::ptrdiff_t>(first), steps_.end());
}

uint64_t Job::wait_changed(uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_cv_.wait_for(lock, timeout, [&] { return version_ > seen; });
  return version_;
}

void Job::start(int images, int steps) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = JobStatus::kRunning;
    started_ = std::chrono::steady_clock::now();
    latest_ = JobStep{};
    latest_.image_count = images;
    latest_.steps = steps;
    ++version_;
  }
  changed_cv_.notify_all();
}

void Job::log_step(JobStep step) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    step.elapsed = seconds_since(started_);
    steps_.push_back(step);
    latest_ = step;
    ++version_;
  }
  changed_cv_.notify_all();
}

std::optional<JobOutcome> Job::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!changed_cv_.wait_for(lock, timeout, [&] { return done_; })) return std::nullopt;
  return outcome_;
}

void Job::finish(JobOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = !outcome.error.empty() ? JobStatus::kFailed
              : outcome.interrupted  ? JobStatus::kCancelled
                                     : JobStatus::kDone;
    if (started_ != std::chrono::steady_clock::time_point{}) seconds_ = seconds_since(started_);
    outcome_ = std::move(outcome);
    done_ = true;
    ++version_;
  }
  changed_cv_.notify_all();
}

JobQueue::JobQueue(ModelRegistry& registry, size_t max_waiting)
    : registry_(registry), max_waiting_(max_waiting), worker_([this] { work(); }) {}

JobQueue::~JobQueue() { shutdown(); }

std::shared_ptr<Job> JobQueue::submit(JobSpec spec) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) throw QueueFull("the server is shutting down");
  if (waiting_.size() >= max_waiting_)
    throw QueueFull("the queue is full (" + std::to_string(waiting_.size()) + " jobs waiting); try again later");
  if (spec.id.empty()) spec.id = "task(" + std::to_string(next_id_++) + ")";
  auto job = std::make_shared<Job>(std::move(spec));
  waiting_.push_back(job);
  wake_.notify_all();
  return job;
}

bool JobQueue::interrupt(const std::string& id) {
  std::shared_ptr<Job> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (running_ && (id.empty() || running_->id() == id)) {
      interrupt_ = true;
      progress_.interrupted = true;
      return true;
    }
    if (id.empty()) return false;
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      if ((*it)->id() == id) {
        cancelled = *it;
        waiting_.erase(it);
        break;
      }
    }
  }
  if (!cancelled) return false;
  JobOutcome outcome;
  outcome.interrupted = true;
  outcome.request = cancelled->spec().request;
  end(cancelled, std::move(outcome));
  return true;
}

void JobQueue::end(const std::shared_ptr<Job>& job, JobOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!outcome.error.empty()) ++counters_.failed;
    else if (outcome.interrupted) ++counters_.cancelled;
    else ++counters_.done;
    counters_.images += outcome.images.size();
    if (job->spec().keep) {
      kept_.push_back({job, std::chrono::steady_clock::now()});
      drop_expired();
    }
  }
  job->finish(std::move(outcome));
}

void JobQueue::drop_expired() {
  const auto oldest = std::chrono::steady_clock::now() - std::chrono::seconds(kKeptSeconds);
  while (!kept_.empty() && (kept_.size() > kKeptJobs || kept_.front().at < oldest)) kept_.pop_front();
}

std::shared_ptr<Job> JobQueue::find(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  drop_expired();
  if (running_ && running_->id() == id) return running_;
  for (const auto& job : waiting_)
    if (job->id() == id) return job;
  for (const auto& kept : kept_)
    if (kept.job->id() == id) return kept.job;
  return nullptr;
}

JobCounters JobQueue::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

void JobQueue::skip() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (running_) skip_ = true;
}

ProgressSnapshot JobQueue::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ProgressSnapshot p = progress_;
  p.queued = static_cast<int>(waiting_.size());
  if (p.active) {
    p.elapsed = seconds_since(started_);
    const double per_image = p.steps > 0 ? double(p.step) / p.steps : 0.0;
    p.progress = p.image_count > 0 ? (p.image_index + per_image) / p.image_count : 0.0;
    p.eta = p.progress > 0 ? p.elapsed / p.progress - p.elapsed : 0.0;
  }
  return p;
}

int JobQueue::position(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (running_ && running_->id() == id) return 0;
  for (size_t i = 0; i < waiting_.size(); ++i)
    if (waiting_[i]->id() == id) return static_cast<int>(i) + 1;
  return -1;
}

size_t JobQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_.size();
}

void JobQueue::set_paused(bool paused) {
  std::lock_guard<std::mutex> lock(mutex_);
  paused_ = paused;
  wake_.notify_all();
}

void JobQueue::set_step_observer(std::function<void(const std::string&, int)> observer) {
  std::lock_guard<std::mutex> lock(mutex_);
  observer_ = std::move(observer);
}

void JobQueue::shutdown() {
  std::deque<std::shared_ptr<Job>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (running_) interrupt_ = true;
    cancelled.swap(waiting_);
    wake_.notify_all();
  }
  for (auto& job : cancelled) {
    JobOutcome outcome;
    outcome.interrupted = true;
    outcome.request = job->spec().request;
    end(job, std::move(outcome));
  }
  if (worker_.joinable()) worker_.join();
}

void JobQueue::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || (!paused_ && !waiting_.empty()); });
      if (stopping_) return;
      job = waiting_.front();
      waiting_.pop_front();
      running_ = job;
      interrupt_ = skip_ = false;
      progress_ = ProgressSnapshot{};
      progress_.active = true;
      progress_.job_id = job->id();
      progress_.image_count = job->spec().images;
      progress_.steps = job->spec().request.steps;
      started_ = std::chrono::steady_clock::now();
    }
    job->start(job->spec().images, job->spec().request.steps);
    JobOutcome outcome = run(*job);
    outcome.seconds = seconds_since(started_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_.reset();
      progress_.active = false;
      progress_.latents = at::Tensor();
    }
    end(job, std::move(outcome));
  }
}

JobOutcome JobQueue::run(Job& job) {
  JobOutcome outcome;
  const JobSpec& spec = job.spec();
  outcome.request = spec.request;
  try {
    auto model = registry_.acquire(spec.model);
    auto& pipe = *model->pipeline;
    outcome.model = model->entry.name;
    // Pipelines are shared by every job: each sets its own LoRAs (or none) before it conditions.
    if (!adapters::same_loras(pipe.loras(), spec.loras)) pipe.set_loras(spec.loras);
    pipeline::GenerationRequest request = pipe.resolve(spec.request);
    request.num_images = 1;
    pipe.make_scheduler(request);  // a bad scheduler option fails here, before any work
    outcome.request = request;
    // Reported as the scheduler's name ("" = the model's own, named after its class when tide has that one).
    if (outcome.request.scheduler.empty())
      outcome.request.scheduler = schedulers::scheduler_name_for_class(
          pipe.scheduler_config().value("_class_name", std::string()), pipe.scheduler_config());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      progress_.model = outcome.model;
      progress_.xl = pipe.is_xl();
    }
    // A multi-vector embedding token stands for all its tokens (as in tide generate).
    pipeline::GenerationRequest expanded = request;
    expanded.prompt = text::expand_multi_vector_tokens(request.prompt, pipe.tokenizer(), model->embedding_tokens);
    if (request.negative_prompt)
      expanded.negative_prompt =
          text::expand_multi_vector_tokens(*request.negative_prompt, pipe.tokenizer(), model->embedding_tokens);
    const pipeline::UNetConditioning conditioning = pipe.condition(expanded);

    for (int i = 0; i < spec.images; ++i) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (interrupt_) break;
        skip_ = false;
        progress_.image_index = i;
        progress_.step = 0;
      }
      pipeline::GenerationRequest one = expanded;
      one.seed = request.seed + static_cast<uint64_t>(i);
      auto step_began = std::chrono::steady_clock::now();
      try {
        auto result = pipe.generate(one, conditioning, [&](const pipeline::StepInfo& step) {
          std::function<void(const std::string&, int)> observer;
          const double step_seconds = seconds_since(step_began);
          {
            std::lock_guard<std::mutex> lock(mutex_);
            progress_.step = step.index + 1;
            progress_.steps = step.total;
            progress_.latents = step.latents;
            observer = observer_;
            ++counters_.steps;
            counters_.step_seconds += step_seconds;
          }
          job.log_step({i, spec.images, step.index + 1, step.total});
          if (observer) observer(job.id(), step.index + 1);
          if (spec.on_step) spec.on_step(i, step.index + 1, step.total, step.latents);
          step_began = std::chrono::steady_clock::now();  // a test's observer holding the worker is not a step's time
          std::lock_guard<std::mutex> lock(mutex_);
          if (interrupt_) throw Interrupted{};
          if (skip_) throw Skipped{};
        });
        outcome.images.push_back({result.images[0].contiguous(), one.seed});
      } catch (const Skipped&) {
        continue;
      } catch (const Interrupted&) {
        break;
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    outcome.interrupted = interrupt_;
  } catch (const Error& e) {
    outcome.error = e.what();
    outcome.bad_request = true;
  } catch (const c10::Error& e) {
    outcome.error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    outcome.error = e.what();
  }
  return outcome;
}

}  // namespace tide::server
