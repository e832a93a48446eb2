// A complete, tiny SD 1.x-style diffusers pipeline with random weights (`tide make-tiny`): a model a
// user can run right after building, with nothing downloaded, and the model the tests build in-process.
// Its pictures are noise-like; the point is a real folder that exercises every part of the pipeline.
#pragma once
#include <cstdint>
#include <filesystem>

namespace tide::pipeline {

// Writes the folder `dir` (model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/):
// a byte-level tokenizer, a 2-layer CLIP text encoder (width 16), a 2-level UNet (32/64 channels,
// sample size 16) and a 2-level VAE (factor 2, so 32×32 pictures by default), with weights drawn from
// a CPU generator seeded with `seed`. The folder appears whole or not at all: it is written under a
// temporary name and renamed. An existing `dir` is a tide::Error.
void write_tiny_pipeline(const std::filesystem::path& dir, uint64_t seed = 0);

}  // namespace tide::pipeline
