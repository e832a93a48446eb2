// Textual-inversion training, as diffusers' textual_inversion.py computes it, data-parallel over the ranks of a
// Communicator: each rank takes its share of every global batch (train_batch_size × world size consecutive
// samples of the epoch's shuffled order), the placeholder vectors' gradients are summed over the ranks (each
// already divided by the global sample count), and every rank applies the same AdamW update. All randomness
// is keyed by sample position (keyed_rng.h), so results do not depend on the number of ranks.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tide/schedulers/scheduler.h"
#include "tide/train/adamw.h"
#include "tide/train/checkpoint.h"
#include "tide/train/communicator.h"
#include "tide/train/latent_cache.h"
#include "tide/train/lr_schedule.h"
#include "tide/train/options.h"
#include "tide/train/placeholder.h"
#include "tide/train/training_models.h"

namespace tide::train {

struct StepReport {
  int64_t step = 0;   // updates done, 1-based after the update
  int64_t total = 0;  // max_train_steps
  double loss = 0;    // mean over the update's samples (all ranks)
  double lr = 0;      // the learning rate this update used
  double seconds = 0;
  double encode_seconds = 0;  // of which in the VAE encoder (first use of an image variant, or --no_latent_cache)
  int64_t peak_rss_bytes = 0;  // the most resident memory during the update (this rank; 0 if unknown)
};

struct TrainHooks {
  std::function<void(const std::string&)> log;           // rank 0's messages (default: stderr)
  std::function<void(const StepReport&)> on_step;        // rank 0, after every update
  // rank 0, every validation_steps when a validation prompt is set: the models with the current vectors in
  // the token table (tokenizer already knows the placeholder tokens).
  std::function<void(int64_t step, TrainingModels& models, const Placeholder& placeholder)> on_validation;
};

class Trainer {
 public:
  // Loads the models and images, adds the placeholder, resumes from a checkpoint if asked. Errors: tide::Error.
  Trainer(TrainOptions options, Communicator& comm, TrainHooks hooks = {});

  // Trains up to max_train_steps; rank 0 writes checkpoints, logs and the outputs.
  void run();

  // Loss of the samples at these global positions with the current vectors, no gradient, this rank only
  // (tests: the loss on fixed samples falls as training proceeds). `vectors` [n, D], when given, stand in for
  // the current ones during this call.
  double evaluate_loss(const std::vector<int64_t>& positions, const at::Tensor& vectors = {});

  const at::Tensor& vectors() const { return vectors_; }
  const Placeholder& placeholder() const { return placeholder_; }
  TrainingModels& models() { return models_; }
  int64_t global_step() const { return state_.global_step; }
  int64_t max_train_steps() const { return max_train_steps_; }
  uint64_t seed() const { return state_.seed; }
  const LatentCache& latent_cache() const { return *latents_; }
  // Copies the vectors into the text encoder's token table (for validation and the saved pipeline).
  void write_vectors_to_table();

 private:
  // The loss of one sample (scalar float32; with autograd to vectors_ when with_grad).
  at::Tensor sample_loss(int64_t epoch, int64_t index_in_epoch, bool with_grad);
  // One optimizer update: the samples of up to gradient_accumulation_steps global batches, forward and
  // backward, the gradients summed over the ranks, the AdamW step. Returns its figures.
  StepReport update();
  // Caches every image's latents, both orientations, then lets the VAE go where nothing needs it later.
  void encode_every_image_variant();
  void load_unet();
  void resume(const std::string& spec);
  const std::vector<int64_t>& permutation(int64_t epoch);
  void log(const std::string& message) const;
  void save_outputs_at_step();
  void save_final_outputs();
  RunSignature signature() const;
  at::Tensor caption_ids(int template_index);

  TrainOptions options_;
  Communicator& comm_;
  TrainHooks hooks_;
  TrainingModels models_;
  std::unique_ptr<TrainingImages> images_;
  std::unique_ptr<LatentCache> latents_;
  std::unique_ptr<schedulers::Scheduler> noise_scheduler_;
  std::unique_ptr<LrSchedule> lr_schedule_;
  std::unique_ptr<AdamW> optimizer_;
  Placeholder placeholder_;
  at::Tensor vectors_;  // float32 [n, D], requires_grad
  TrainingState state_;
  int64_t max_train_steps_ = 0;
  int64_t updates_per_epoch_ = 0;
  at::ScalarType unet_dtype_ = at::kFloat;
  std::vector<at::Tensor> caption_ids_;  // per template, lazily
  int64_t permutation_epoch_ = -1;
  std::vector<int64_t> permutation_;
};

}  // namespace tide::train
