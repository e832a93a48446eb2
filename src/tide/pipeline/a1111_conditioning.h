// Text conditioning read the way AUTOMATIC1111's webui reads prompts (sd_hijack_clip.py, sd_emphasis.py,
// sd_samplers_cfg_denoiser.py): the prompt's chunks of 75 tokens encoded one by one, each token's output
// scaled by its weight with the chunk's mean restored, the chunks side by side; and the hidden state clip
// skip picks, for both syntaxes.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "tide/models/clip_text.h"
#include "tide/text/clip_tokenizer.h"

namespace tide::pipeline {

// Which hidden state of a CLIP text encoder conditions the UNet.
struct TextLayer {
  int from_end = 1;         // 1: the last layer's output, 2: the one before, ... (A1111's "clip skip")
  bool final_norm = true;   // apply the encoder's final layer norm to it (SD 1.x/2.x), or not (SDXL)
};

// The chosen hidden state of an encoder output; a layer past the first is a tide::Error.
at::Tensor hidden_state(const models::ClipTextOutput& out, models::ClipTextModel& encoder, TextLayer layer);

// An A1111 prompt through one text encoder: [1, 77 × chunks, D]. `pooled`, when given, receives the
// projected pooled output of the first chunk (SDXL's second encoder), as A1111 takes it.
at::Tensor encode_a1111_prompt(models::ClipTextModel& encoder, const text::ClipTokenizer& tokenizer,
                               const std::string& prompt, TextLayer layer, at::Tensor* pooled = nullptr);

// A1111's pad_cond_uncond: when the prompt and the negative prompt have different numbers of chunks, the
// shorter gets copies of the empty prompt's encoding `empty` [B, 77, D] appended, so both fit one batch.
void pad_to_same_length(at::Tensor& cond, at::Tensor& uncond, const at::Tensor& empty);

}  // namespace tide::pipeline
