#include "tide/train/placeholder.h"

#include "tide/runtime/error.h"
#include "tide/text/embeddings.h"

namespace tide::train {

std::string Placeholder::caption_text() const {
  std::string text;
  for (const auto& t : tokens) text += (text.empty() ? "" : " ") + t;
  return text;
}

Placeholder add_placeholder(text::ClipTokenizer& tokenizer, models::ClipTextModel& text_encoder,
                            const std::string& token, const std::string& initializer, int num_vectors) {
  if (num_vectors < 1) throw Error("--num_vectors has to be larger or equal to 1, but is " + std::to_string(num_vectors));
  if (token.empty()) throw Error("--placeholder_token must not be empty");
  Placeholder p;
  p.token = token;
  p.tokens = text::multi_vector_tokens(token, num_vectors);
  for (const auto& t : p.tokens)
    if (tokenizer.token_id(t))
      throw Error("The tokenizer already contains the token " + t +
                  ". Please pass a different `placeholder_token` that is not already in the tokenizer.");
  const auto init_ids = tokenizer.tokenize(initializer);
  if (init_ids.size() != 1)
    throw Error("The initializer token must be a single token: '" + initializer + "' is " +
                std::to_string(init_ids.size()) + " tokens; choose a word the tokenizer keeps whole");
  p.initializer_id = init_ids[0];
  const at::Tensor init_row = text_encoder->token_embedding()->weight.detach()[p.initializer_id].to(at::kFloat);
  p.first_id = text::install_embedding(tokenizer, text_encoder,
                                       {token, init_row.unsqueeze(0).repeat({num_vectors, 1}).contiguous()});
  return p;
}

at::Tensor embed_with_vectors(models::ClipTextModel& text_encoder, const at::Tensor& ids, const at::Tensor& vectors,
                              int64_t first_id) {
  const int64_t n = vectors.size(0);
  const at::Tensor table = text_encoder->token_embedding()->weight.detach();
  const at::Tensor is_placeholder = (ids >= first_id).logical_and(ids < first_id + n);  // [B, L]
  const at::Tensor local = (ids - first_id).clamp(0, n - 1);
  const at::Tensor frozen = at::embedding(table, ids);  // [B, L, D]
  const at::Tensor learned = at::embedding(vectors.to(table.scalar_type()), local);
  return at::where(is_placeholder.unsqueeze(-1), learned, frozen);
}

}  // namespace tide::train
