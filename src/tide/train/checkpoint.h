// Training checkpoints: `output_dir/checkpoint-<step>/` with the placeholder vectors, the AdamW state and where
// the data stream stands (epoch, index). Written into a temporary folder and renamed, so a crash never leaves
// a partial checkpoint; the oldest are pruned beyond --checkpoints_total_limit. With the position-keyed
// randomness, resuming from one continues exactly as the run that wrote it would have.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tide::train {

struct TrainingState {
  int64_t global_step = 0;  // optimizer updates done
  int64_t epoch = 0;        // the epoch the next sample belongs to
  int64_t index = 0;        // its position in that epoch's order
  uint64_t seed = 0;
  at::Tensor vectors;       // float32 [n, D]
  at::Tensor exp_avg, exp_avg_sq;
  int64_t adam_steps = 0;
  int64_t lr_scheduler_steps = 0;  // diffusers' LambdaLR step count (updates × world size)
};

// What must agree between the run that wrote a checkpoint and the one resuming from it.
struct RunSignature {
  std::string placeholder_token;
  int64_t num_vectors = 1;
  int64_t global_batch_size = 1;  // train_batch_size × world size
  int64_t gradient_accumulation_steps = 1;
  int64_t dataset_length = 0;
};

// checkpoint-<n> folders of output_dir, by step ascending.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& output_dir);

// Writes output_dir/checkpoint-<global_step>, first removing the oldest so that at most `total_limit` remain.
std::filesystem::path save_checkpoint(const std::filesystem::path& output_dir, const TrainingState& state,
                                      const RunSignature& signature, std::optional<int> total_limit);

// `spec`: "latest" (none there: nullopt) or a checkpoint path (as given, or its name under output_dir, like
// diffusers); a named checkpoint that does not exist is a tide::Error.
std::optional<std::filesystem::path> resolve_checkpoint(const std::filesystem::path& output_dir,
                                                        const std::string& spec);

// Reads a checkpoint; a different placeholder, vector count, global batch or dataset length is a tide::Error
// saying which (resuming would not continue the same run).
TrainingState load_checkpoint(const std::filesystem::path& dir, const RunSignature& expected);

}  // namespace tide::train
