#include "tide/pipeline/a1111_conditioning.h"

#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/text/a1111_prompt.h"

namespace tide::pipeline {

at::Tensor hidden_state(const models::ClipTextOutput& out, models::ClipTextModel& encoder, TextLayer layer) {
  const int layers = static_cast<int>(out.hidden_states.size()) - 1;
  if (layer.from_end < 1 || layer.from_end > layers)
    throw Error("clip skip " + std::to_string(layer.from_end) + ": the text encoder has " + std::to_string(layers) +
                " layers (clip skip counts from 1 = the last layer)");
  if (layer.from_end == 1 && layer.final_norm) return out.last_hidden_state;
  const at::Tensor& h = out.hidden_states[out.hidden_states.size() - static_cast<size_t>(layer.from_end)];
  return layer.final_norm ? encoder->text_model->final_layer_norm->forward(h) : h;  // [B, L, D]
}

at::Tensor encode_a1111_prompt(models::ClipTextModel& encoder, const text::ClipTokenizer& tokenizer,
                               const std::string& prompt, TextLayer layer, at::Tensor* pooled) {
  text::ChunkingOptions options;
  options.start_id = tokenizer.bos_id();
  options.end_id = tokenizer.eos_id();
  options.comma_id = tokenizer.token_id(",</w>").value_or(-1);
  const auto chunked = text::chunk_prompt(text::parse_prompt_attention(prompt), tokenizer, options);

  std::vector<at::Tensor> zs;
  for (size_t c = 0; c < chunked.chunks.size(); ++c) {
    const auto& chunk = chunked.chunks[c];
    at::Tensor ids = at::tensor(chunk.tokens, at::kLong).unsqueeze(0);  // [1, 77]
    // OpenCLIP's encoders (SD 2.x, SDXL's second) pad with id 0 after the first EOS, where the chunk has EOS.
    if (tokenizer.pad_id() != tokenizer.eos_id()) {
      const auto first_end = std::find(chunk.tokens.begin(), chunk.tokens.end(), tokenizer.eos_id());
      const int64_t after = (first_end - chunk.tokens.begin()) + 1;
      if (after < ids.size(1)) ids.narrow(1, after, ids.size(1) - after).fill_(tokenizer.pad_id());
    }
    const auto out = encoder->forward(ids);
    at::Tensor z = hidden_state(out, encoder, layer);  // [1, 77, D]
    if (pooled && c == 0) *pooled = out.text_embeds;
    // EmphasisOriginal: weight each token's output, then restore the chunk's mean (float32, like A1111).
    const at::Tensor multipliers =
        at::tensor(chunk.multipliers, at::kDouble).to(at::kFloat).view({1, -1, 1});  // [1, 77, 1]
    // A chunk whose weighted mean is exactly 0 (a text encoder whose final norm has no bias, given an empty
    // prompt) keeps its weighted values: A1111's 0/0 would turn the whole picture into NaN.
    const at::Tensor original_mean = z.mean();
    z = z * multipliers.expand_as(z);
    const at::Tensor new_mean = z.mean();
    zs.push_back(new_mean.item<float>() == 0.0f ? z : z * (original_mean / new_mean));
  }
  return at::cat(zs, 1);  // [1, 77 n, D]
}

void pad_to_same_length(at::Tensor& cond, at::Tensor& uncond, const at::Tensor& empty) {
  const int64_t repeats = (cond.size(1) - uncond.size(1)) / empty.size(1);
  auto pad = [&](at::Tensor& x, int64_t n) { x = at::cat({x, empty.repeat({x.size(0), n, 1})}, 1); };
  if (repeats < 0) pad(cond, -repeats);
  if (repeats > 0) pad(uncond, repeats);
}

}  // namespace tide::pipeline
