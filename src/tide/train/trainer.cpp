#include "tide/train/trainer.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <ATen/record_function.h>

#include "tide/bench/op_profile.h"
#include "tide/io/atomic_file.h"
#include "tide/nn/layers.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/error.h"
#include "tide/runtime/memory.h"
#include "tide/runtime/span_arena.h"
#include "tide/runtime/optimizations.h"
#include "tide/runtime/progress.h"
#include "tide/text/embeddings.h"
#include "tide/train/keyed_rng.h"
#include "tide/train/sample_loss.h"
#include "tide/train/templates.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

constexpr double kFlipProbability = 0.5;
constexpr int kDefaultMaxTrainSteps = 5000;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void require_positive(int value, const char* flag) {
  if (value < 1) throw Error(std::string("--") + flag + " must be at least 1, got " + std::to_string(value));
}

// Keeps the lines of train_log.jsonl up to `step` (a resumed run rewrites what follows).
void truncate_log(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    const auto json = nlohmann::json::parse(line, nullptr, false);
    if (!json.is_discarded() && json.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  io::write_file_atomically(path, kept);
}

// --profile's report: seconds per stage of the update, then per operator (backward nodes by autograd's names).
std::string profile_table(const std::vector<bench::OpTime>& ops) {
  return "profile of the last update, by stage:\n" + bench::op_table(bench::stage_times(ops), 1.0) +
         "by operator (stage/operator):\n" + bench::op_table(ops, 0.97);
}

}  // namespace

Trainer::Trainer(TrainOptions options, Communicator& comm, TrainHooks hooks)
    : options_(std::move(options)), comm_(comm), hooks_(std::move(hooks)) {
  const auto& o = options_;
  require_positive(o.train_batch_size, "train_batch_size");
  require_positive(o.gradient_accumulation_steps, "gradient_accumulation_steps");
  if (o.max_train_steps) require_positive(*o.max_train_steps, "max_train_steps");
  if (o.num_train_epochs) require_positive(*o.num_train_epochs, "num_train_epochs");
  if (o.placeholder_token.empty()) throw Error("--placeholder_token is required");
  if (o.initializer_token.empty()) throw Error("--initializer_token is required");

  auto load = [&] {
    pipeline::LoadOptions load_options;
    load_options.variant = o.variant;
    load_options.revision = o.revision;
    load_options.tokenizer = o.tokenizer;
    load_options.weights = o.weights;
    models_ = o.random_weights.empty()
                  ? load_training_models(o.model, load_options, UnetLoading::kLater)
                  : random_training_models(o.random_weights, o.tokenizer.empty() ? fs::path(o.model) / "tokenizer" : o.tokenizer,
                                           0, o.weights, UnetLoading::kLater);
  };
  if (fs::is_directory(o.model)) {
    load();
  } else {  // a Hub id or a single file may download: rank 0 first, the others then read the cache
    if (comm_.is_main()) load();
    comm_.barrier();
    if (!comm_.is_main()) load();
  }
  // The VAE encoder's convolution weights in the layout its forward reads (HWIO, the direct kernel's, where
  // it takes them), so that no layout copy of them is kept; the UNet's follow once it is loaded.
  nn::store_conv_weights_for_current_layout(*models_.vae);
  placeholder_ = add_placeholder(*models_.tokenizer, models_.text_encoder, o.placeholder_token, o.initializer_token,
                                 o.num_vectors);

  const int64_t vae_factor = models_.vae->config().scale_factor();
  if (o.data.resolution % vae_factor != 0)
    throw Error("--resolution must be a multiple of the VAE scale factor " + std::to_string(vae_factor) + ", got " +
                std::to_string(o.data.resolution));
  images_ = std::make_unique<TrainingImages>(o.data);
  for (const auto& skipped : images_->skipped_files()) log("skipping " + skipped.string() + " (not a PNG or JPEG)");
  if (o.validation_epochs) {
    require_positive(*o.validation_epochs, "validation_epochs");
    options_.validation_steps = static_cast<int>(std::min<int64_t>(
        int64_t(*o.validation_epochs) * images_->length(), std::numeric_limits<int>::max()));
    log("--validation_epochs is deprecated (as in diffusers): validating every " +
        std::to_string(options_.validation_steps) + " steps");
  }
  // Every rank must see the same dataset, or the shares of a global batch would not add up.
  const uint64_t length = static_cast<uint64_t>(images_->length());
  if (comm_.broadcast(length) != length)
    throw Error("rank " + std::to_string(comm_.rank()) + " sees " + std::to_string(length) +
                " training samples, rank 0 a different number: every rank needs the same --train_data_dir content");

  noise_scheduler_ = schedulers::make_scheduler("ddpm", models_.scheduler_config, {});
  const std::string& prediction = noise_scheduler_->prediction_type();
  if (prediction != "epsilon" && prediction != "v_prediction")
    throw Error("Unknown prediction type " + prediction + " (epsilon and v_prediction are trained)");

  // Step arithmetic of diffusers' script, for the global batch of all ranks.
  const int64_t world = comm_.size();
  const int64_t global_batch = static_cast<int64_t>(o.train_batch_size) * world;
  const int64_t batches_per_epoch = ceil_div(images_->length(), global_batch);
  updates_per_epoch_ = ceil_div(batches_per_epoch, o.gradient_accumulation_steps);
  max_train_steps_ = o.max_train_steps   ? *o.max_train_steps
                     : o.num_train_epochs ? *o.num_train_epochs * updates_per_epoch_
                                          : kDefaultMaxTrainSteps;
  double lr = o.learning_rate;
  if (o.scale_lr) lr *= static_cast<double>(o.gradient_accumulation_steps) * o.train_batch_size * world;
  lr_schedule_ = std::make_unique<LrSchedule>(LrScheduleConfig{o.lr_scheduler, lr, o.lr_warmup_steps,
                                                               static_cast<int>(max_train_steps_), o.lr_num_cycles,
                                                               static_cast<int>(world)});

  vectors_ = models_.text_encoder->token_embedding()
                 ->weight.detach()
                 .narrow(0, placeholder_.first_id, placeholder_.count())
                 .to(at::kFloat)
                 .clone()
                 .set_requires_grad(true);
  optimizer_ = std::make_unique<AdamW>(o.adam, vectors_.sizes());

  // The seed: given, or rank 0's random one for everybody.
  uint64_t seed = o.seed ? *o.seed : std::random_device{}() % 4294967296ull;
  state_.seed = comm_.broadcast(seed);

  if (o.bf16) unet_dtype_ = at::kBFloat16;

  if (o.resume_from_checkpoint) resume(*o.resume_from_checkpoint);
  latents_ = std::make_unique<LatentCache>(models_.vae, *images_, o.cache_latents);
  if (o.cache_latents) encode_every_image_variant();
  load_unet();

  if (comm_.is_main()) fs::create_directories(o.output_dir);
  std::ostringstream s;
  s << "***** Running training *****\n"
    << "  Num examples = " << images_->length() << " (" << images_->num_images() << " images x " << o.data.repeats
    << " repeats)\n"
    << "  Num Epochs = " << ceil_div(max_train_steps_, updates_per_epoch_) << "\n"
    << "  Instantaneous batch size per process = " << o.train_batch_size << " (" << world << " processes)\n"
    << "  Total train batch size (w. parallel, distributed & accumulation) = "
    << global_batch * o.gradient_accumulation_steps << "\n"
    << "  Gradient Accumulation steps = " << o.gradient_accumulation_steps << "\n"
    << "  Total optimization steps = " << max_train_steps_ << "\n"
    << "  Learning rate = " << lr << " (" << o.lr_scheduler << "), seed = " << state_.seed << ", "
    << (unet_dtype_ == at::kBFloat16 ? "UNet in bf16" : "float32")
    << (o.weights ? ", frozen weights stored " + nn::weight_format_name(*o.weights) : std::string()) << ", prediction " << prediction
    << (o.gradient_checkpointing ? ", gradient checkpointing" : "");
  log(s.str());
}

// Rank 0 reads the checkpoint and sends it to the others, so only rank 0's machine needs to see output_dir.
// An error there (bad or mismatched checkpoint) stops the whole job through the caller's abort.
void Trainer::resume(const std::string& spec) {
  TrainingState saved;
  bool found = false;
  if (comm_.is_main()) {
    const auto dir = resolve_checkpoint(options_.output_dir, spec);
    if (dir) {
      log("Resuming from checkpoint " + dir->string());
      saved = load_checkpoint(*dir, signature());
      found = true;
    } else {
      log("Checkpoint '" + spec + "' does not exist. Starting a new training run.");
    }
  }
  if (comm_.broadcast(found ? 1 : 0) == 0) return;
  for (int64_t* value : {&saved.global_step, &saved.epoch, &saved.index, &saved.adam_steps})
    *value = static_cast<int64_t>(comm_.broadcast(static_cast<uint64_t>(*value)));
  saved.seed = comm_.broadcast(saved.seed);
  for (at::Tensor* tensor : {&saved.vectors, &saved.exp_avg, &saved.exp_avg_sq}) {
    if (!comm_.is_main()) *tensor = at::zeros(vectors_.sizes(), at::TensorOptions().dtype(at::kFloat));
    *tensor = tensor->contiguous();
    comm_.broadcast(*tensor);
  }
  const auto& o = options_;
  if (o.seed && *o.seed != saved.seed)
    log("note: --seed " + std::to_string(*o.seed) + " differs from the checkpoint's seed " +
        std::to_string(saved.seed) + "; the resumed run will not continue the same sample stream");
  {
    at::NoGradGuard no_grad;
    vectors_.copy_(saved.vectors);
  }
  optimizer_->restore(saved.adam_steps, saved.exp_avg, saved.exp_avg_sq);
  state_.global_step = saved.global_step;
  state_.epoch = saved.epoch;
  state_.index = saved.index;
  state_.seed = o.seed ? *o.seed : saved.seed;
}

void Trainer::log(const std::string& message) const {
  if (!comm_.is_main()) return;
  if (hooks_.log)
    hooks_.log(message);
  else
    std::cerr << message << "\n";
}

RunSignature Trainer::signature() const {
  return {options_.placeholder_token, placeholder_.count(),
          static_cast<int64_t>(options_.train_batch_size) * comm_.size(), options_.gradient_accumulation_steps,
          images_->length()};
}

const std::vector<int64_t>& Trainer::permutation(int64_t epoch) {
  if (epoch != permutation_epoch_) {
    permutation_ = epoch_permutation(state_.seed, epoch, images_->length());
    permutation_epoch_ = epoch;
  }
  return permutation_;
}

at::Tensor Trainer::caption_ids(int template_index) {
  const auto& templates = caption_templates(options_.property);
  if (caption_ids_.empty()) caption_ids_.resize(templates.size());
  at::Tensor& ids = caption_ids_.at(static_cast<size_t>(template_index));
  if (!ids.defined()) {
    const auto v = models_.tokenizer->encode_padded(format_caption(templates[template_index], placeholder_.caption_text()));
    ids = at::tensor(v, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  }
  return ids;
}

at::Tensor Trainer::sample_loss(int64_t epoch, int64_t index_in_epoch, bool with_grad) {
  const int64_t n = images_->length();
  const int64_t dataset_index = permutation(epoch)[static_cast<size_t>(index_in_epoch)];
  const int image = static_cast<int>(dataset_index % images_->num_images());
  const auto shape = latents_->latent_shape();
  const std::vector<int64_t> latent_shape{1, shape[0], shape[1], shape[2]};
  const auto& templates = caption_templates(options_.property);
  const SampleDraws d = draw_sample(state_.seed, static_cast<uint64_t>(epoch * n + index_in_epoch),
                                    static_cast<int>(templates.size()), kFlipProbability,
                                    noise_scheduler_->num_train_timesteps(), latent_shape);

  std::optional<at::NoGradGuard> no_grad;
  if (!with_grad) no_grad.emplace();
  const SampleInputs inputs{latents_->get(image, d.flip), d.latent_eps, d.noise, d.timestep, caption_ids(d.template_index)};
  return train::sample_loss(models_, *noise_scheduler_, vectors_, placeholder_.first_id, inputs, unet_dtype_);
}

double Trainer::evaluate_loss(const std::vector<int64_t>& positions, const at::Tensor& vectors) {
  if (positions.empty()) return 0.0;
  if (vectors.defined() && !vectors.sizes().equals(vectors_.sizes()))
    throw Error("evaluate_loss: vectors of the wrong shape");
  at::Tensor current = vectors_;
  if (vectors.defined()) vectors_ = vectors.detach().to(at::kFloat);
  double sum = 0;
  for (int64_t p : positions) sum += sample_loss(p / images_->length(), p % images_->length(), false).item<double>();
  vectors_ = current;
  return sum / static_cast<double>(positions.size());
}

void Trainer::write_vectors_to_table() {
  at::NoGradGuard no_grad;
  auto& weight = models_.text_encoder->token_embedding()->weight;
  weight.narrow(0, placeholder_.first_id, placeholder_.count()).copy_(vectors_.detach().to(weight.scalar_type()));
}

void Trainer::run() {
  const auto& o = options_;
  const fs::path log_path = o.output_dir / "train_log.jsonl";
  std::ofstream log_file;
  if (comm_.is_main()) {
    truncate_log(log_path, state_.global_step);
    log_file.open(log_path, std::ios::app);
    if (!log_file) throw Error("cannot write " + log_path.string());
  }

  // Every step allocates the same activations: freed blocks stay in the heap and serve the next one, instead
  // of being unmapped and faulted in again (glibc maps blocks over 32 MiB afresh).
  runtime::FreedMemoryReuse reuse;
  while (state_.global_step < max_train_steps_) {
    StepReport report;
    std::string profile;  // the last update's tables, with --profile
    if (o.profile && state_.global_step + 1 == max_train_steps_)
      profile = profile_table(bench::profile_ops([&] { report = update(); }));
    else
      report = update();
    if (comm_.is_main()) {
      log_file << nlohmann::json{{"step", report.step}, {"loss", report.loss}, {"lr", report.lr},
                                 {"seconds", report.seconds}, {"encode_seconds", report.encode_seconds},
                                 {"peak_rss_bytes", report.peak_rss_bytes}}.dump()
               << "\n";
      log_file.flush();
      if (hooks_.on_step) hooks_.on_step(report);
      if (!profile.empty()) log(profile);
      save_outputs_at_step();
    }
  }
  if (comm_.is_main()) save_final_outputs();
}

// After the images are encoded (with the latents cached), so that the encoder's activations and the UNet's
// weights are never resident together.
void Trainer::load_unet() {
  // The weights go where the steps' activations will (runtime/span_arena.h): glibc's heap would keep the
  // holes loading leaves between them resident beside the arena (0.15 GiB for SD 1.5), and the arena fills
  // its own holes with the steps' blocks.
  std::optional<runtime::SpanArenaRouting> in_arena;
  if (runtime::optimizations().reuse_memory) in_arena.emplace();
  models_.load_unet();
  {
    // Convolution weights in the layout their forward reads, so no layout copy of them is kept: channels last
    // for the frozen-weight path, NCHW for plain autograd. Not HWIO (the direct kernel's, which the VAE
    // encoder gets): oneDNN's backward-data re-lays out an HWIO weight at every call (1.3–1.5× slower steps
    // at 256 px), and tide's own transposed products on it were no faster than oneDNN's backward on
    // channels-last weights.
    runtime::Optimizations unet_layout = runtime::optimizations();
    unet_layout.channels_last = unet_layout.channels_last && unet_layout.frozen_backward;
    unet_layout.direct_conv = false;
    runtime::OptimizationsGuard guard(unet_layout);
    nn::store_conv_weights_for_current_layout(*models_.unet);
  }
  if (unet_dtype_ == at::kBFloat16) nn::set_compute_dtype(*models_.unet, at::kBFloat16);
  models_.unet->gradient_checkpointing = options_.gradient_checkpointing;
}

void Trainer::encode_every_image_variant() {
  // Before the UNet is loaded, and before the steps' freed-memory reuse begins, whose heap would keep the
  // encoder's activations resident for every later step (SD 1.5 at 512 px: 0.2-0.5 GiB). Training would
  // encode them all sooner or later anyway.
  const auto start = std::chrono::steady_clock::now();
  const int before = latents_->encoder_runs();
  for (int image = 0; image < images_->num_images(); ++image)
    for (const bool flip : {false, true}) latents_->get(image, flip);
  // The VAE then only holds memory (SD 1.5: 0.31 GiB in float32), unless the full pipeline written at the end
  // takes its weights from memory (a model that is no folder).
  const bool let_go = !(options_.save_as_full_pipeline && models_.folder.empty());
  if (let_go) {
    latents_->release_encoder();
    models_.vae = models::AutoencoderKL(nullptr);
  }
  runtime::return_free_memory();
  if (latents_->encoder_runs() > before)
    log("Encoded the latents of " + std::to_string(latents_->encoder_runs() - before) + " image variants (each image, "
        "flipped and not) in " + runtime::format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()) +
        (let_go ? "; the VAE is let go" : ""));
}

StepReport Trainer::update() {
  const auto& o = options_;
  const int64_t n = images_->length();
  const int64_t batch = o.train_batch_size;
  const int64_t global_batch = batch * comm_.size();
  const auto start = std::chrono::steady_clock::now();
  const double encode_start = latents_->encoder_seconds();
  const bool rss_window = runtime::reset_peak_rss_window();
  if (vectors_.grad().defined()) vectors_.mutable_grad().zero_();
  double loss_sum = 0;
  int64_t samples = 0;
  // One update: up to gradient_accumulation_steps global batches; an epoch's end closes the group early,
  // as accelerate syncs gradients at the end of the dataloader.
  for (int micro = 0; micro < o.gradient_accumulation_steps; ++micro) {
    const int64_t in_batch = std::min(global_batch, n - state_.index);
    const int64_t lo = state_.index + comm_.rank() * batch;
    const int64_t hi = std::min(lo + batch, state_.index + in_batch);
    const double scale = 1.0 / (static_cast<double>(in_batch) * o.gradient_accumulation_steps);
    for (int64_t i = lo; i < hi; ++i) {
      const at::Tensor loss = sample_loss(state_.epoch, i, true);
      RECORD_USER_SCOPE("stage:backward");  // a stage of --profile
      (loss * scale).backward();
      loss_sum += loss.item<double>();
    }
    samples += in_batch;
    state_.index += in_batch;
    if (state_.index >= n) {
      ++state_.epoch;
      state_.index = 0;
      break;
    }
  }
  RECORD_USER_SCOPE("stage:update");
  at::Tensor grad = vectors_.grad().defined() ? vectors_.grad().contiguous() : at::zeros_like(vectors_.detach());
  comm_.allreduce_sum(grad);
  at::Tensor loss_total = at::full({1}, loss_sum, at::TensorOptions().dtype(at::kDouble));
  comm_.allreduce_sum(loss_total);

  const double lr = lr_schedule_->lr(state_.global_step);
  {
    at::NoGradGuard no_grad;
    optimizer_->step(vectors_, grad, lr);
  }
  ++state_.global_step;
  state_.adam_steps = optimizer_->steps();
  state_.lr_scheduler_steps = state_.global_step * comm_.size();

  return {state_.global_step, max_train_steps_, loss_total.item<double>() / static_cast<double>(samples), lr,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          latents_->encoder_seconds() - encode_start,
          rss_window ? runtime::window_peak_rss_bytes() : runtime::peak_rss_bytes()};
}

void Trainer::save_outputs_at_step() {
  const auto& o = options_;
  const int64_t step = state_.global_step;
  const std::string ext = o.safe_serialization ? ".safetensors" : ".bin";
  if (o.save_steps > 0 && step % o.save_steps == 0)
    text::write_embedding_file(o.output_dir / ("learned_embeds-steps-" + std::to_string(step) + ext), o.placeholder_token,
                               vectors_, !o.safe_serialization);
  if (o.checkpointing_steps > 0 && step % o.checkpointing_steps == 0) {
    TrainingState s = state_;
    s.vectors = vectors_.detach().clone();
    s.exp_avg = optimizer_->exp_avg();
    s.exp_avg_sq = optimizer_->exp_avg_sq();
    log("Saved state to " + save_checkpoint(o.output_dir, s, signature(), o.checkpoints_total_limit).string());
  }
  if (o.validation_prompt && o.validation_steps > 0 && step % o.validation_steps == 0 && hooks_.on_validation) {
    write_vectors_to_table();
    hooks_.on_validation(step, models_, placeholder_);
  }
}

void Trainer::save_final_outputs() {
  const auto& o = options_;
  const fs::path path = o.output_dir / (o.safe_serialization ? "learned_embeds.safetensors" : "learned_embeds.bin");
  text::write_embedding_file(path, o.placeholder_token, vectors_, !o.safe_serialization);
  log("Saved the learned embedding to " + path.string());
  if (o.save_as_full_pipeline) {
    write_vectors_to_table();
    std::vector<std::pair<std::string, int64_t>> added;
    for (int64_t i = 0; i < placeholder_.count(); ++i)
      added.emplace_back(placeholder_.tokens[static_cast<size_t>(i)], placeholder_.first_id + i);
    export_full_pipeline(models_.folder, o.output_dir, models_, added);
    log("Saved the full pipeline to " + o.output_dir.string());
  }
}

}  // namespace tide::train
