// Many pictures from one file (tide generate --prompts): one prompt per line, or JSON lines with per-picture
// settings. Every line gets a fixed name and seed, so the same file gives the same pictures however the lines
// are shared out (over MPI ranks) and a rerun can skip what exists.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "tide/pipeline/generation.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/train/communicator.h"

namespace tide::pipeline {

struct BatchItem {
  int index = 0;          // 0, 1, ... over the file's pictures lines (blank lines and # comments skipped)
  int line = 0;           // 1-based line number, for messages
  GenerationRequest request;
  std::string name;       // output file stem: NNNNN, or the line's "name"
  std::string error;      // a line that could not be read: why (the others still run)
  // The LoRAs merged while this item runs (the caller's: --lora plus the line's <lora:> tags); the pipeline's
  // are switched when they differ from the previous item's.
  std::vector<adapters::LoraSpec> loras;
};

// Reads the file. A plain line is a prompt; a line starting with '{' is a JSON object with "prompt" and any of
// "negative_prompt", "seed", "width", "height", "steps", "guidance", "scheduler", "num_images", "clip_skip",
// "name". Other settings come from `base`; a line without "seed" gets base.seed + its index. An unreadable
// file is a tide::Error; an unreadable line becomes an item with `error` set.
std::vector<BatchItem> read_prompt_batch(const std::filesystem::path& file, const GenerationRequest& base);

// The output files of an item: DIR/NAME.png, or DIR/NAME-0.png, DIR/NAME-1.png, ... for several images.
std::vector<std::filesystem::path> batch_outputs(const BatchItem& item, const std::filesystem::path& dir);

struct BatchOutcome {
  int done = 0, skipped = 0, failed = 0;  // over all ranks
};

// Runs the items this rank owns (index % ranks == rank) with one pipeline: `write` saves an item's images (to
// batch_outputs()); with `resume` an item whose outputs all exist is skipped. A failing item (bad line, bad
// settings, a write error) is reported and counted; the others still run. Rank 0 speaks for all: its `report`
// gets one line per item of every rank as they finish, "[k/N] line L (NAME): done (rank r)" (other ranks'
// `report` is not called). Returns the totals of all ranks (every rank must call this).
BatchOutcome run_prompt_batch(StableDiffusionPipeline& pipe, const std::vector<BatchItem>& items,
                              train::Communicator& communicator, const std::filesystem::path& dir, bool resume,
                              const std::function<void(const BatchItem&, const GenerationResult&)>& write,
                              const std::function<void(const std::string&)>& report);

}  // namespace tide::pipeline
