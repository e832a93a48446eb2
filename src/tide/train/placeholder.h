// The placeholder token(s) being learned: added to the tokenizer (`<tok>`, `<tok>_1`, ... for several
// vectors), their rows initialised from the initializer token's embedding, and the text encoder's input
// embeddings with those rows taken from a separate trainable tensor, so that autograd reaches only them.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tide/models/clip_text.h"
#include "tide/text/clip_tokenizer.h"

namespace tide::train {

struct Placeholder {
  std::string token;                // as given (--placeholder_token)
  std::vector<std::string> tokens;  // token, token_1, ...
  int64_t first_id = 0;             // ids first_id .. first_id + tokens.size() - 1
  int64_t initializer_id = 0;
  int64_t count() const { return static_cast<int64_t>(tokens.size()); }
  // What stands for the concept in captions: the tokens joined by spaces (as diffusers' dataset does).
  std::string caption_text() const;
};

// Errors (tide::Error): num_vectors < 1, an initializer that is not exactly one token, a placeholder (or one of
// its numbered tokens) already in the vocabulary.
Placeholder add_placeholder(text::ClipTokenizer& tokenizer, models::ClipTextModel& text_encoder,
                            const std::string& token, const std::string& initializer, int num_vectors);

// ids int64 [B, L] -> token embeddings [B, L, D], rows first_id.. replaced by `vectors` [n, D].
at::Tensor embed_with_vectors(models::ClipTextModel& text_encoder, const at::Tensor& ids, const at::Tensor& vectors,
                              int64_t first_id);

}  // namespace tide::train
