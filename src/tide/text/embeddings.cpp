#include "tide/text/embeddings.h"

#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iterator>

#include "tide/io/atomic_file.h"
#include "tide/io/safetensors.h"
#include "tide/io/torch_file.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::text {
namespace fs = std::filesystem;
namespace {

// [D] -> [1, D]; [n, D] as is; float32.
at::Tensor as_vectors(const at::Tensor& t, const fs::path& path, const std::string& name) {
  if (!t.is_floating_point() || t.dim() < 1 || t.dim() > 2 || t.numel() == 0)
    throw Error(path.string() + ": embedding '" + name + "' must be a float tensor [n, dim] or [dim], found " +
                shape_string(t.sizes()));
  at::Tensor v = t.detach().to(at::kFloat).contiguous().clone();
  return v.dim() == 1 ? v.unsqueeze(0) : v;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open embedding file " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TextualInversionEmbedding from_safetensors(const fs::path& path, const std::optional<std::string>& token) {
  io::SafetensorsFile file(path);
  const auto& entries = file.entries();
  if (entries.size() == 1) {
    const std::string& key = entries[0].name;
    // A1111 names an embedding after its file; diffusers files carry the token as the key.
    std::string name = token ? *token : key == "emb_params" ? path.stem().string() : key;
    return {name, as_vectors(file.tensor(key), path, key)};
  }
  if (entries.size() == 2 && file.contains("clip_l") && file.contains("clip_g")) {  // SDXL: one per text encoder
    TextualInversionEmbedding e{token ? *token : path.stem().string(), as_vectors(file.tensor("clip_l"), path, "clip_l"),
                                as_vectors(file.tensor("clip_g"), path, "clip_g")};
    if (e.vectors.size(0) != e.vectors_2.size(0))
      throw Error(path.string() + ": clip_l and clip_g hold different numbers of vectors (" +
                  std::to_string(e.vectors.size(0)) + " and " + std::to_string(e.vectors_2.size(0)) + ")");
    return e;
  }
  throw Error(path.string() + ": not a textual-inversion embedding: expected one tensor ({token: [n, dim]} or "
              "{\"emb_params\": [n, dim]}), found " + std::to_string(entries.size()) + " (SDXL files hold exactly clip_l and clip_g)");
}

// A tensor entry of a dict read from a torch file, or of an inert object's state (the original textual inversion
// code saves `string_to_param` as a torch.nn.ParameterDict, whose tensors are in its `_parameters`).
io::PickleRef dict_of(const io::PickleRef& v) {
  using Kind = io::PickleValue::Kind;
  if (v && v->is(Kind::kObject) && v->state) {
    const auto params = v->state->find("_parameters");
    return params ? params : v->state;
  }
  return v;
}

TextualInversionEmbedding from_pickle(const fs::path& path, const std::optional<std::string>& token) {
  using Kind = io::PickleValue::Kind;
  const io::PickleRef value = io::load_torch_file(path);
  if (value->is(Kind::kTensor)) {
    if (!token) throw Error(path.string() + " holds a bare tensor: give its token as FILE:TOKEN");
    return {*token, as_vectors(value->tensor, path, *token)};
  }
  if (!value->is(Kind::kDict)) throw Error(path.string() + ": expected a dict of tensors");
  if (value->entries.size() == 1) {  // diffusers: {token: tensor}
    const auto& [key, entry] = value->entries.front();
    if (!key->is(Kind::kString)) throw Error(path.string() + ": the key of its entry is not a string");
    if (!entry->is(Kind::kTensor)) throw Error(path.string() + ": the entry '" + key->text + "' is not a tensor");
    return {token ? *token : key->text, as_vectors(entry->tensor, path, key->text)};
  }
  if (const auto params = dict_of(value->find("string_to_param"))) {  // A1111 / original textual inversion
    const auto star = params->is(Kind::kDict) ? params->find("*") : nullptr;
    if (!star || !star->is(Kind::kTensor)) throw Error(path.string() + ": 'string_to_param' must be a dict with a '*' tensor");
    std::string name = path.stem().string();
    if (const auto stored = value->find("name"); stored && stored->is(Kind::kString)) name = stored->text;
    return {token ? *token : name, as_vectors(star->tensor, path, "string_to_param.*")};
  }
  throw Error(path.string() + ": not a textual-inversion embedding: expected {token: tensor} or an A1111 dict with "
              "'string_to_param'");
}

}  // namespace

TextualInversionEmbedding read_embedding_file(const fs::path& path, const std::optional<std::string>& token) {
  if (!fs::is_regular_file(path)) throw Error("embedding file " + path.string() + " not found");
  if (token && token->empty()) throw Error(path.string() + ": the token must not be empty");
  const std::string bytes = read_bytes(path);
  TextualInversionEmbedding embedding;
  // safetensors: an 8-byte header length, then the JSON header. Checked first: the length's low byte may be 0x80.
  const bool safetensors = bytes.size() >= 9 && bytes[8] == '{';
  if (safetensors) {
    embedding = from_safetensors(path, token);
  } else if (bytes.size() >= 4 && bytes.compare(0, 4, "PK\x03\x04") == 0) {
    embedding = from_pickle(path, token);
  } else if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x80) {
    throw Error(path.string() + ": a legacy (before torch 1.6) torch.save file; re-save it with a current torch "
                "or convert it to .safetensors");
  } else {
    embedding = from_safetensors(path, token);
  }
  if (embedding.token.empty()) throw Error(path.string() + ": the embedding has an empty token name");
  return embedding;
}

void write_embedding_file(const fs::path& path, const std::string& token, const at::Tensor& vectors, bool pickle) {
  const at::Tensor v = vectors.detach().to(at::kFloat).contiguous();
  if (!pickle) {
    io::write_safetensors(path, {{token, v}}, {{"format", "pt"}});
    return;
  }
  c10::Dict<std::string, at::Tensor> dict;
  dict.insert(token, v);
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  io::write_file_atomically(path, std::string(bytes.begin(), bytes.end()));
}

std::vector<std::string> multi_vector_tokens(const std::string& token, int64_t n) {
  std::vector<std::string> tokens{token};
  for (int64_t i = 1; i < n; ++i) tokens.push_back(token + "_" + std::to_string(i));
  return tokens;
}

int64_t install_embedding(ClipTokenizer& tokenizer, models::ClipTextModel& text_encoder,
                          const TextualInversionEmbedding& embedding) {
  const at::Tensor& v = embedding.vectors;
  const int64_t dim = text_encoder->config().hidden_size;
  if (v.dim() != 2 || v.size(1) != dim)
    throw Error("embedding '" + embedding.token + "' has vectors " + shape_string(v.sizes()) +
                " but this text encoder's width is " + std::to_string(dim) +
                " (an embedding made for another model family?)");
  const auto tokens = multi_vector_tokens(embedding.token, v.size(0));
  for (const auto& t : tokens)
    if (tokenizer.token_id(t))
      throw Error("token '" + t + "' is already in the tokenizer's vocabulary; choose another token name");
  if (tokenizer.token_id(embedding.token + "_1"))
    throw Error("multi-vector token '" + embedding.token + "_1' is already in the tokenizer's vocabulary");
  if (static_cast<int64_t>(tokenizer.vocab_size()) != text_encoder->config().vocab_size)
    throw Error("the tokenizer has " + std::to_string(tokenizer.vocab_size()) + " tokens but the text encoder " +
                std::to_string(text_encoder->config().vocab_size) + " rows");
  const int64_t first = tokenizer.add_token(tokens[0]);
  for (size_t i = 1; i < tokens.size(); ++i) tokenizer.add_token(tokens[i]);
  text_encoder->resize_token_embeddings(static_cast<int64_t>(tokenizer.vocab_size()));
  at::NoGradGuard no_grad;
  auto& weight = text_encoder->token_embedding()->weight;
  weight.narrow(0, first, v.size(0)).copy_(v.to(weight.scalar_type()));
  return first;
}

std::string expand_multi_vector_tokens(const std::string& prompt, const ClipTokenizer& tokenizer,
                                       const std::vector<std::string>& tokens) {
  std::string out = prompt;
  for (const auto& token : tokens) {
    if (token.empty() || out.find(token) == std::string::npos) continue;
    std::string replacement = token;
    for (int i = 1; tokenizer.token_id(token + "_" + std::to_string(i)); ++i)
      replacement += " " + token + "_" + std::to_string(i);
    if (replacement == token) continue;
    std::string expanded;
    size_t from = 0;
    for (size_t at = out.find(token); at != std::string::npos; at = out.find(token, from)) {
      expanded += out.substr(from, at - from) + replacement;
      from = at + token.size();
    }
    out = expanded + out.substr(from);
  }
  return out;
}

std::pair<fs::path, std::optional<std::string>> parse_embedding_argument(const std::string& argument) {
  const size_t colon = argument.rfind(':');
  if (colon == std::string::npos || fs::exists(argument)) return {fs::path(argument), std::nullopt};
  if (colon + 1 == argument.size()) return {fs::path(argument.substr(0, colon)), std::nullopt};
  return {fs::path(argument.substr(0, colon)), argument.substr(colon + 1)};
}

}  // namespace tide::text
