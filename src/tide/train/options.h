// Settings of a textual-inversion run: diffusers' textual_inversion.py flags with their defaults.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "tide/nn/weight_storage.h"
#include "tide/train/adamw.h"
#include "tide/train/dataset.h"
#include "tide/train/templates.h"

namespace tide::train {

struct TrainOptions {
  std::string model;  // --pretrained_model_name_or_path: diffusers folder, single file or Hub id
  std::string variant;   // weight files of this variant ("fp16")
  std::string revision;  // Hub ids: branch, tag or commit
  std::filesystem::path tokenizer;  // --tokenizer_name: tokenizer folder (single files need one, or the Hub)
  DatasetOptions data;          // --train_data_dir, --resolution, --repeats, --center_crop
  LearnableProperty property = LearnableProperty::object;
  std::string placeholder_token;
  std::string initializer_token;
  int num_vectors = 1;

  int train_batch_size = 16;  // per process
  int gradient_accumulation_steps = 1;
  // diffusers: max_train_steps (default 5000) wins; num_train_epochs is used only when max_train_steps is unset.
  std::optional<int> max_train_steps;
  std::optional<int> num_train_epochs;
  double learning_rate = 1e-4;
  bool scale_lr = false;  // lr × batch × accumulation × processes
  std::string lr_scheduler = "constant";
  int lr_warmup_steps = 500;
  int lr_num_cycles = 1;
  AdamWConfig adam;
  std::optional<uint64_t> seed;  // none: random (rank 0's, shared), printed

  std::filesystem::path output_dir = "text-inversion-model";
  bool bf16 = false;  // run the UNet in bfloat16 (only where the CPU has native bf16)
  // How the frozen models' Linear and Conv2d weights are kept in memory: f16 / bf16 halve them (widened per
  // layer when used; nothing widened waits in the graph); unset: float32. Not int8.
  std::optional<nn::WeightFormat> weights;
  bool gradient_checkpointing = false;  // the UNet's blocks recompute their activations in the backward pass
  int save_steps = 500;
  int checkpointing_steps = 500;
  std::optional<int> checkpoints_total_limit;
  std::optional<std::string> resume_from_checkpoint;  // path or "latest"
  bool save_as_full_pipeline = false;
  bool safe_serialization = true;  // false: learned_embeds.bin (torch zip pickle)

  std::optional<std::string> validation_prompt;
  int num_validation_images = 4;
  int validation_steps = 100;
  // diffusers' deprecated --validation_epochs: validation_steps becomes epochs × dataset length, as there.
  std::optional<int> validation_epochs;

  // Benchmarks: build this preset with random weights instead of loading `model` (a folder whose tokenizer/
  // is used).
  std::string random_weights;
  bool cache_latents = true;  // false: run the VAE encoder for every sample (the uncached path)
  bool profile = false;       // time the last update's stages and operators and log the tables (rank 0)
};

}  // namespace tide::train
