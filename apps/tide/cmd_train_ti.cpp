// tide train-ti: Textual Inversion training with the flags of diffusers' textual_inversion.py, data-parallel
// under mpirun (one process per rank; rank 0 prints and writes).
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "args.h"
#include "commands.h"
#include "tide/io/image.h"
#include "tide/pipeline/model_source.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/cpu_features.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"
#include "tide/runtime/progress.h"
#include "tide/runtime/threads.h"
#include "tide/text/embeddings.h"
#include "tide/train/communicator.h"
#include "tide/train/lr_schedule.h"
#include "tide/train/trainer.h"

namespace tide::cli {
namespace fs = std::filesystem;
namespace {

Args make_args() {
  std::string schedules;
  for (const auto& n : train::lr_schedule_names()) schedules += (schedules.empty() ? "" : ", ") + n;
  std::string optimization_names;
  for (const auto& n : runtime::Optimizations::names())
    optimization_names += (optimization_names.empty() ? "" : ",") + n;
  Args args("train-ti",
            "tide train-ti --pretrained_model_name_or_path MODEL --train_data_dir DIR --placeholder_token TOKEN "
            "--initializer_token WORD [options]",
            "Learns a textual-inversion embedding for a new token from a few images, like diffusers'\n"
            "examples/textual_inversion/textual_inversion.py (same flags and defaults). Data-parallel under\n"
            "mpirun: every rank takes train_batch_size samples of each global batch; rank 0 prints and writes.");
  args.option("pretrained_model_name_or_path", "MODEL",
              "SD 1.x / 2.x model: a diffusers folder, a single-file .safetensors checkpoint or a Hugging Face Hub id "
              "(org/name[@revision]), as tide generate --model takes it")
      .option("revision", "REV", "Hub ids: the branch, tag or commit to use", "main")
      .option("variant", "NAME", "read weight files of this variant, e.g. fp16")
      .option("tokenizer_name", "DIR",
              "tokenizer folder (or a model folder with tokenizer/) instead of the model's own; single-file "
              "checkpoints need one or take their family's reference tokenizer from the Hub")
      .option("train_data_dir", "DIR", "folder with the training images (PNG, JPEG)")
      .option("learnable_property", "object|style", "caption templates to use", "object")
      .option("placeholder_token", "TOKEN", "the new token that stands for the concept, e.g. <cat-toy>")
      .option("initializer_token", "WORD", "a single-token word the new vectors start from")
      .option("num_vectors", "N", "vectors learned for the concept (tokens TOKEN, TOKEN_1, ...)", "1")
      .option("repeats", "N", "how many times each image is seen per epoch", "100")
      .option("resolution", "PX", "training images are resized to PX x PX (Pillow bicubic)", "512")
      .flag("center_crop", "center-crop images to a square before resizing")
      .option("train_batch_size", "N", "samples per process in each batch", "16")
      .option("gradient_accumulation_steps", "N", "batches accumulated before each update", "1")
      .option("max_train_steps", "N", "optimizer updates: the length of the run", "5000")
      .option("num_train_epochs", "N",
              "as in diffusers, recomputed from --max_train_steps (which always has a value), so it does not "
              "change the run", "100")
      .option("learning_rate", "LR", "initial learning rate (after warmup)", "1e-4")
      .flag("scale_lr", "multiply the learning rate by batch size x accumulation x processes")
      .option("lr_scheduler", "NAME", "one of: " + schedules, "constant")
      .option("lr_warmup_steps", "N", "warmup updates of the lr schedule", "500")
      .option("lr_num_cycles", "N", "hard restarts of cosine_with_restarts", "1")
      .option("adam_beta1", "B", "AdamW beta1", "0.9")
      .option("adam_beta2", "B", "AdamW beta2", "0.999")
      .option("adam_weight_decay", "W", "AdamW weight decay (applied to the learned vectors)", "1e-2")
      .option("adam_epsilon", "E", "AdamW epsilon", "1e-08")
      .option("seed", "N", "seed of all training randomness (keyed per sample)", "random, printed")
      .option("output_dir", "DIR", "where embeddings, checkpoints, logs and validation images go",
              "text-inversion-model")
      .option("mixed_precision", "no|fp16|bf16",
              "as diffusers casts the frozen models: bf16 runs the UNet in bfloat16 on CPUs with AVX512-BF16/AMX; "
              "elsewhere, and for fp16, the frozen weights are kept in that type (--weights) and computing stays float32",
              "no")
      .option("weights", "f32|f16|bf16",
              "how the frozen text encoder, UNet and VAE keep their Linear and Conv2d weights in memory: f16 or bf16 "
              "halve them (SD 1.5: 2 GB less), widened to the compute dtype per layer when used; the results then "
              "differ from f32 by the weights' rounding (not at all for a model stored in that format). The learned "
              "vectors stay float32",
              "f32")
      .flag("save_as_full_pipeline", "also write a complete diffusers folder with the new token to output_dir")
      .option("save_steps", "N", "write learned_embeds-steps-N every N updates", "500")
      .option("checkpointing_steps", "N", "write checkpoint-N (resumable) every N updates", "500")
      .option("checkpoints_total_limit", "N", "keep at most N checkpoints (oldest removed)", "all")
      .option("resume_from_checkpoint", "PATH|latest", "continue from a checkpoint folder or the latest one")
      .flag("no_safe_serialization", "write .bin (torch pickle) instead of .safetensors embeddings")
      .flag("gradient_checkpointing", "keep only the inputs of the UNet's resnets and transformers and recompute "
                                      "each in the backward pass: less memory for about one more UNet forward per sample")
      .option("validation_prompt", "TEXT", "prompt rendered every --validation_steps (rank 0)")
      .option("num_validation_images", "N", "images per validation", "4")
      .option("validation_steps", "N", "updates between validations", "100")
      .option("threads", "N", "CPU threads per process", "the cores this process may use")
      .option("cpus", "LIST", "run only on these CPUs, like taskset -c (e.g. 0-7). Under mpirun without it, ranks "
                              "that share one machine's CPUs unbound (--bind-to none) split them: each is pinned to "
                              "its own consecutive share", "all this process may use")
      // diffusers' flags that have no meaning here: accepted so that existing command lines run, with a note.
      .option("dataloader_num_workers", "N", "accepted for compatibility: tide reads images in the training process")
      .option("logging_dir", "DIR", "accepted for compatibility: the log is output_dir/train_log.jsonl")
      .option("report_to", "NAME", "accepted for compatibility: the log is output_dir/train_log.jsonl (no tensorboard/wandb)")
      .flag("allow_tf32", "accepted for compatibility: a GPU setting, without effect on CPUs")
      .flag("enable_xformers_memory_efficient_attention",
            "accepted for compatibility: tide always uses its own memory-efficient attention")
      .option("local_rank", "N", "accepted for compatibility: under mpirun the rank comes from MPI")
      .option("validation_epochs", "N", "deprecated in diffusers: validation every N epochs (converted to steps)")
      .flag("push_to_hub", "not supported: tide never uploads; upload output_dir yourself (huggingface-cli upload)")
      .option("hub_token", "TOKEN", "only with --push_to_hub, which tide does not support")
      .option("hub_model_id", "ID", "only with --push_to_hub, which tide does not support")
      .option("random_weights", "PRESET", "benchmarks: random sd15/sd21 weights; the model folder gives only tokenizer/")
      .flag("no_latent_cache", "benchmarks: run the VAE encoder for every sample instead of once per image variant")
      .flag("profile", "benchmarks: time the last update by stage (text encoder, UNet, backward, update) and by "
                       "operator, and print the tables (use --max_train_steps 3 or more: the first updates warm up)")
      .option("without", "NAMES", "benchmarks: switch these optimizations off (comma-separated: " + optimization_names +
              "), e.g. blocked_attention to train with plain attention");
  return args;
}

train::TrainOptions options_from(const Args& args) {
  for (const char* required : {"pretrained_model_name_or_path", "train_data_dir", "placeholder_token", "initializer_token"})
    if (!args.has(required)) throw Error(std::string("tide train-ti: --") + required + " is required");
  train::TrainOptions o;
  o.model = args.get("pretrained_model_name_or_path");
  if (args.has("variant")) o.variant = args.get("variant");
  if (args.has("revision")) o.revision = args.get("revision");
  if (args.has("tokenizer_name")) o.tokenizer = args.get("tokenizer_name");
  if (args.get_flag("push_to_hub"))
    throw Error("tide train-ti: --push_to_hub is not supported: tide never uploads; upload " + args.get("output_dir") +
                " yourself, e.g. with huggingface-cli upload");
  o.data.dir = args.get("train_data_dir");
  o.data.resolution = args.get_int("resolution");
  o.data.repeats = args.get_int("repeats");
  o.data.center_crop = args.get_flag("center_crop");
  o.property = train::parse_learnable_property(args.get("learnable_property"));
  o.placeholder_token = args.get("placeholder_token");
  o.initializer_token = args.get("initializer_token");
  o.num_vectors = args.get_int("num_vectors");
  o.train_batch_size = args.get_int("train_batch_size");
  o.gradient_accumulation_steps = args.get_int("gradient_accumulation_steps");
  // diffusers' script: max_train_steps defaults to 5000, never None, so the epoch count follows from it.
  o.max_train_steps = args.get_int("max_train_steps");
  if (args.has("num_train_epochs") && !args.has("max_train_steps"))
    std::cerr << "note: --num_train_epochs does not set the length of the run (as in diffusers); "
                 "--max_train_steps does (default 5000)\n";
  o.learning_rate = args.get_double("learning_rate");
  o.scale_lr = args.get_flag("scale_lr");
  o.lr_scheduler = args.get("lr_scheduler");
  o.lr_warmup_steps = args.get_int("lr_warmup_steps");
  o.lr_num_cycles = args.get_int("lr_num_cycles");
  o.adam.beta1 = args.get_double("adam_beta1");
  o.adam.beta2 = args.get_double("adam_beta2");
  o.adam.weight_decay = args.get_double("adam_weight_decay");
  o.adam.eps = args.get_double("adam_epsilon");
  if (args.has("seed")) o.seed = args.get_u64("seed");
  o.output_dir = args.get("output_dir");
  o.save_as_full_pipeline = args.get_flag("save_as_full_pipeline");
  o.save_steps = args.get_int("save_steps");
  o.checkpointing_steps = args.get_int("checkpointing_steps");
  if (args.has("checkpoints_total_limit")) o.checkpoints_total_limit = args.get_int("checkpoints_total_limit");
  if (args.has("resume_from_checkpoint")) o.resume_from_checkpoint = args.get("resume_from_checkpoint");
  o.safe_serialization = !args.get_flag("no_safe_serialization");
  if (args.has("validation_prompt")) o.validation_prompt = args.get("validation_prompt");
  o.num_validation_images = args.get_int("num_validation_images");
  o.validation_steps = args.get_int("validation_steps");
  if (args.has("random_weights")) o.random_weights = args.get("random_weights");
  if (args.has("validation_epochs")) o.validation_epochs = args.get_int("validation_epochs");
  o.cache_latents = !args.get_flag("no_latent_cache");
  o.profile = args.get_flag("profile");
  o.gradient_checkpointing = args.get_flag("gradient_checkpointing");
  if (args.has("weights")) {
    o.weights = nn::parse_weight_format(args.get("weights"), "tide train-ti: --weights");
    if (*o.weights == nn::WeightFormat::kInt8)
      throw Error("tide train-ti: --weights must be f32, f16 or bf16 (int8 is for generating), got int8");
  }
  return o;
}

// Validation images like diffusers' log_validation: the model's pipeline with the current vectors, DPM-Solver++
// (2M) at 25 steps, seeded with --seed; written as output_dir/validation/step-<k>-<i>.png.
class Validator {
 public:
  Validator(const train::TrainOptions& options, uint64_t seed) : options_(options), seed_(seed) {}

  void operator()(int64_t step, train::TrainingModels& models, const train::Placeholder& placeholder) {
    if (options_.model.empty() || !options_.random_weights.empty()) return;
    if (!pipe_) {
      pipeline::LoadOptions load;
      load.variant = options_.variant;
      load.revision = options_.revision;
      load.tokenizer = options_.tokenizer;
      load.weights = options_.weights;
      pipe_ = pipeline::StableDiffusionPipeline::from_parts(pipeline::model_parts(options_.model, load));
      text::install_embedding(pipe_->tokenizer(), pipe_->text_encoder(), {placeholder.token, current(models, placeholder)});
    } else {
      at::NoGradGuard no_grad;
      pipe_->text_encoder()->token_embedding()->weight.narrow(0, placeholder.first_id, placeholder.count())
          .copy_(current(models, placeholder));
    }
    pipeline::GenerationRequest request;
    request.prompt = text::expand_multi_vector_tokens(*options_.validation_prompt, pipe_->tokenizer(), {placeholder.token});
    request.steps = 25;
    request.seed = seed_;
    request.num_images = options_.num_validation_images;
    request.scheduler = "dpm++2m";
    const auto result = pipe_->generate(pipe_->resolve(request));
    const fs::path dir = options_.output_dir / "validation";
    fs::create_directories(dir);
    for (int i = 0; i < request.num_images; ++i)
      io::write_png(dir / ("step-" + std::to_string(step) + "-" + std::to_string(i) + ".png"), result.images[i],
                    {{"parameters", *options_.validation_prompt + "\nSteps: 25, Sampler: dpm++2m, Seed: " +
                                        std::to_string(seed_) + ", Training step: " + std::to_string(step)}});
    std::cerr << "\nvalidation: " << request.num_images << " images in " << dir.string() << "\n";
  }

 private:
  static at::Tensor current(train::TrainingModels& models, const train::Placeholder& placeholder) {
    return models.text_encoder->token_embedding()->weight.detach().narrow(0, placeholder.first_id, placeholder.count())
        .to(at::kFloat).clone();
  }
  const train::TrainOptions& options_;
  uint64_t seed_;
  std::unique_ptr<pipeline::StableDiffusionPipeline> pipe_;
};

// One line for each given flag of diffusers' script that means nothing here.
std::vector<std::string> compatibility_notes(const Args& args) {
  std::vector<std::string> notes;
  for (const char* flag : {"dataloader_num_workers", "logging_dir", "report_to", "allow_tf32",
                           "enable_xformers_memory_efficient_attention", "local_rank", "hub_token", "hub_model_id"})
    if (args.has(flag)) notes.push_back(std::string("note: --") + flag + " has no effect in tide (tide train-ti --help says why)");
  return notes;
}

std::string format_number(const char* format, double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

// --cpus, or under mpirun the share of a machine's CPUs when its ranks were started unbound (each would
// otherwise run a thread per CPU on all of them: N ranks oversubscribing the cores N times). Ranks that
// mpirun bound (its default for up to 2 ranks: one core each) keep their binding. Returns a note for the log.
std::string place_process(const Args& args) {
  if (args.has("cpus")) {
    runtime::pin_to_cpus(runtime::parse_cpu_list(args.get("cpus"), "tide train-ti: --cpus"));
    return " on CPUs " + args.get("cpus");
  }
  if (!train::launched_by_mpirun()) return "";
  const auto [local_rank, local_ranks] = train::local_rank_and_size();
  const std::vector<int> cpus = runtime::allowed_cpus();
  const bool unbound = cpus.size() == std::max(1u, std::thread::hardware_concurrency());
  if (local_ranks < 2 || !unbound) return "";
  runtime::pin_to_cpus(runtime::share_of_cpus(cpus, local_rank, local_ranks));
  return " (" + std::to_string(local_ranks) + " ranks on this machine share its " + std::to_string(cpus.size()) +
         " CPUs unbound: each pinned to its own share)";
}

}  // namespace

int run_train_ti(int argc, char** argv) {
  Args args = make_args();
  if (!args.parse(argc, argv)) return 0;
  train::TrainOptions options = options_from(args);

  // Without a launcher the world is this one process: no MPI needed (nor its start-up cost).
  std::unique_ptr<train::Communicator> comm =
      train::launched_by_mpirun() ? train::make_mpi_communicator() : train::make_single_process_communicator();
  const bool main_rank = comm->is_main();
  const int world = comm->size();
  try {
    const std::string placement = place_process(args);  // before any parallel work: threads start inside
    const int threads = runtime::configure_threads(args.has("threads") ? args.get_int("threads") : 0);
    if (args.has("without")) runtime::optimizations() = runtime::optimizations().without(args.get("without"));
    if (main_rank)
      for (const auto& note : compatibility_notes(args)) std::cerr << note << "\n";
    // diffusers casts the frozen models to the mixed-precision dtype; where the CPU cannot compute in it, tide
    // keeps their weights in it (--weights) and computes in float32.
    const std::string precision = args.get("mixed_precision");
    if (precision == "bf16") {
      options.bf16 = runtime::bf16_supported();
      if (!options.bf16) {
        if (!options.weights) options.weights = nn::WeightFormat::kBFloat16;
        if (main_rank)
          std::cerr << "note: this CPU has no native bf16 (AVX512-BF16 or AMX): computing in float32, the frozen "
                       "weights kept in " << nn::weight_format_name(*options.weights) << "\n";
      }
    } else if (precision == "fp16") {
      if (!options.weights) options.weights = nn::WeightFormat::kFloat16;
      if (main_rank)
        std::cerr << "note: CPUs compute in float32 here: the frozen weights are kept in "
                  << nn::weight_format_name(*options.weights) << " (--mixed_precision fp16)\n";
    } else if (precision != "no") {
      throw Error("tide train-ti: --mixed_precision must be no, fp16 or bf16, got '" + precision + "'");
    }
    if (main_rank)
      std::cerr << world << (world == 1 ? " process" : " processes") << ", " << threads << " threads each"
                << placement << "\n";

    runtime::Progress progress("steps", 0);
    int64_t first_step = 0;  // a resumed run counts its speed from where it started
    train::TrainHooks hooks;
    hooks.log = [&](const std::string& line) { std::cerr << line << "\n"; };
    const bool terminal = runtime::Progress::on_terminal();
    hooks.on_step = [&](const train::StepReport& r) {
      const std::string figures = "loss " + format_number("%.4f", r.loss) + "  lr " + format_number("%.3g", r.lr);
      const int done = static_cast<int>(r.step - first_step);
      if (terminal) {
        progress.update(done, "step " + std::to_string(r.step) + "  " + figures);
        return;
      }
      // Logs and mpirun's forwarded output: one plain line per step instead of a redrawn bar.
      const double per_step = progress.elapsed_seconds() / std::max(done, 1);
      std::cerr << "step " << r.step << "/" << r.total << "  " << figures << "  " << format_number("%.2f", per_step)
                << "s/step  ETA " << runtime::format_duration(per_step * static_cast<double>(r.total - r.step))
                << "\n";
    };
    // The validator needs the run's seed, known once the trainer is set up (rank 0 may have drawn it).
    std::unique_ptr<Validator> validator;
    const train::Trainer* trainer_ptr = nullptr;
    if (options.validation_prompt)
      hooks.on_validation = [&](int64_t step, train::TrainingModels& m, const train::Placeholder& p) {
        if (!validator) validator = std::make_unique<Validator>(options, trainer_ptr->seed());
        (*validator)(step, m, p);
      };
    train::Trainer trainer(options, *comm, hooks);
    trainer_ptr = &trainer;
    first_step = trainer.global_step();
    progress = runtime::Progress("steps", static_cast<int>(trainer.max_train_steps() - first_step));
    trainer.run();
    progress.finish();
    if (main_rank)
      std::cout << (options.output_dir / (options.safe_serialization ? "learned_embeds.safetensors"
                                                                     : "learned_embeds.bin")).string()
                << "\n";
    return 0;
  } catch (const std::exception& e) {
    if (world == 1) throw;
    // Other ranks may be waiting in a collective: say what happened, then stop the whole job.
    const std::string what = dynamic_cast<const c10::Error*>(&e)
                                 ? dynamic_cast<const c10::Error*>(&e)->what_without_backtrace()
                                 : e.what();
    std::cerr << "error on rank " << comm->rank() << " of " << world << ": " << what
              << "\nstopping all ranks (MPI_Abort)\n";
    std::cerr.flush();
    comm->abort(1);
    return 1;  // not reached: abort ends the process
  }
}

}  // namespace tide::cli
