#include "tide/server/job_queue.h"

#include <c10/util/Exception.h>

#include "tide/runtime/error.h"
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

JobOutcome Job::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return done_; });
  return outcome_;
}

std::optional<JobOutcome> Job::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!done_cv_.wait_for(lock, timeout, [&] { return done_; })) return std::nullopt;
  return outcome_;
}

void Job::finish(JobOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    outcome_ = std::move(outcome);
    done_ = true;
  }
  done_cv_.notify_all();
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
  cancelled->finish(std::move(outcome));
  return true;
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
    job->finish(std::move(outcome));
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
    JobOutcome outcome = run(*job);
    outcome.seconds = seconds_since(started_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_.reset();
      progress_.active = false;
      progress_.latents = at::Tensor();
    }
    job->finish(std::move(outcome));
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
    if (!same_loras(pipe.loras(), spec.loras)) pipe.set_loras(spec.loras);
    pipeline::GenerationRequest request = pipe.resolve(spec.request);
    request.num_images = 1;
    pipe.make_scheduler(request);  // a bad scheduler option fails here, before any work
    outcome.request = request;
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
      try {
        auto result = pipe.generate(one, conditioning, [&](const pipeline::StepInfo& step) {
          std::function<void(const std::string&, int)> observer;
          {
            std::lock_guard<std::mutex> lock(mutex_);
            progress_.step = step.index + 1;
            progress_.steps = step.total;
            progress_.latents = step.latents;
            observer = observer_;
          }
          if (observer) observer(job.id(), step.index + 1);
          if (spec.on_step) spec.on_step(i, step.index + 1, step.total, step.latents);
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
