// Textual-inversion embeddings: the files (diffusers' `learned_embeds.safetensors` / `.bin` = {token: [n, D]},
// A1111's `.safetensors` = {"emb_params": [n, D]} and `.pt` = {"string_to_param": {"*": [n, D]}, "name": ...}),
// and installing them in a tokenizer + text encoder like diffusers' load_textual_inversion: a multi-vector
// embedding becomes the tokens `<tok>`, `<tok>_1`, ... and a prompt's `<tok>` is expanded to all of them.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tide/models/clip_text.h"
#include "tide/text/clip_tokenizer.h"

namespace tide::text {

struct TextualInversionEmbedding {
  std::string token;     // the token that names it in prompts
  at::Tensor vectors;    // float32 [n, D], n >= 1; SDXL: for the first text encoder ("clip_l")
  at::Tensor vectors_2;  // SDXL only: float32 [n, D2] for the second text encoder ("clip_g"); else undefined
  bool is_xl() const { return vectors_2.defined(); }
};

// Reads an embedding file (by content; `.safetensors` or a torch zip pickle `.bin`/`.pt`). `token` overrides the
// token stored in the file; A1111 safetensors (`emb_params`) without one are named after the file stem, as
// A1111 does. Pickles are read by io/pickle.h's restricted unpickler (the original textual-inversion
// ParameterDict included). Unknown layouts, globals outside its allow-list and bad shapes are tide::Errors.
TextualInversionEmbedding read_embedding_file(const std::filesystem::path& path,
                                              const std::optional<std::string>& token = std::nullopt);

// Writes diffusers' format {token: [n, D]}: safetensors (with metadata {"format": "pt"} like diffusers) or,
// with `pickle`, a torch.save-compatible zip that torch.load reads. Atomic.
void write_embedding_file(const std::filesystem::path& path, const std::string& token, const at::Tensor& vectors,
                          bool pickle = false);

// The tokens a placeholder of n vectors is made of: token, token_1, ..., token_{n-1}.
std::vector<std::string> multi_vector_tokens(const std::string& token, int64_t n);

// Adds the embedding's tokens to the tokenizer, grows the text encoder's token table and writes the vectors into
// the new rows. Returns the id of the first token (the others follow). A token already known to the tokenizer,
// or vectors of the wrong width, are tide::Errors (nothing is changed then).
int64_t install_embedding(ClipTokenizer& tokenizer, models::ClipTextModel& text_encoder,
                          const TextualInversionEmbedding& embedding);

// diffusers' maybe_convert_prompt for the given installed tokens: every occurrence of a multi-vector token
// `<tok>` becomes "<tok> <tok>_1 ... <tok>_{n-1}".
std::string expand_multi_vector_tokens(const std::string& prompt, const ClipTokenizer& tokenizer,
                                       const std::vector<std::string>& tokens);

// "FILE[:TOKEN]" (the --embedding flag) -> (file, token). A colon belongs to the file name when what follows
// it is empty or the whole argument names an existing file.
std::pair<std::filesystem::path, std::optional<std::string>> parse_embedding_argument(const std::string& argument);

}  // namespace tide::text
