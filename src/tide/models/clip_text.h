// CLIP text encoder: transformers' `CLIPTextModel` and `CLIPTextModelWithProjection`
// (models/clip/modeling_clip.py). Parameter names equal the checkpoint's tensor names
// (`text_model.encoder.layers.0.self_attn.q_proj.weight`, `text_projection.weight`, ...).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tide/nn/layers.h"  // Linear: weights storable as f16, bf16 or int8

namespace tide::models {

// transformers' CLIPTextConfig (defaults as there), plus whether the checkpoint has `text_projection`.
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t projection_dim = 512;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu | gelu_new | gelu_pytorch_tanh
  double layer_norm_eps = 1e-5;
  int64_t eos_token_id = 49407;  // 2 = legacy configs: pool at argmax(input_ids)
  bool with_projection = false;  // architectures == ["CLIPTextModelWithProjection"]

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // Throws tide::Error naming the first invalid value.
  void validate() const;
  // From a text encoder's config.json (throws tide::Error on wrong types or invalid values).
  static ClipTextConfig from_json(const nlohmann::json& json);
};

struct ClipTextOutput {
  at::Tensor last_hidden_state;  // [B, L, D] final layer norm applied
  at::Tensor penultimate;        // [B, L, D] hidden_states[-2] (input of the last layer, no final norm)
  at::Tensor pooled;             // [B, D] pooler_output: last_hidden_state at the EOS position
  at::Tensor text_embeds;        // [B, P] text_projection(pooled); undefined without projection
  // transformers' hidden_states: the embeddings, then every layer's output (no final norm); [-1] is the last
  // layer's, [-2] == penultimate. Clip skip picks one of them.
  std::vector<at::Tensor> hidden_states;  // num_hidden_layers + 1 of [B, L, D]
};

namespace clip {

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ClipTextConfig& config);
  // x [B, L, D], mask [L, L] additive (0 / -inf) -> [B, L, D]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask);

  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t heads_, head_dim_;
  double scale_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ClipTextConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, L, D] -> [B, L, D]

  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(Mlp);

class EncoderLayerImpl : public torch::nn::Module {
 public:
  explicit EncoderLayerImpl(const ClipTextConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask);  // [B, L, D] -> [B, L, D]

  Attention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(EncoderLayer);

// `text_model.embeddings`
class EmbeddingsImpl : public torch::nn::Module {
 public:
  explicit EmbeddingsImpl(const ClipTextConfig& config);
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(Embeddings);

// `text_model.encoder`
class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const ClipTextConfig& config);
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(Encoder);

// `text_model`
class TextTransformerImpl : public torch::nn::Module {
 public:
  explicit TextTransformerImpl(const ClipTextConfig& config);
  Embeddings embeddings{nullptr};
  Encoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(TextTransformer);

}  // namespace clip

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);

  // input_ids int64 [B, L], L <= max_position_embeddings (77 for SD).
  ClipTextOutput forward(const at::Tensor& input_ids);
  // inputs_embeds [B, L, D] = token embeddings (position embeddings are added here); input_ids [B, L] only
  // choose the pooled position. forward(ids) == forward_embeddings(token_embedding()(ids), ids).
  ClipTextOutput forward_embeddings(const at::Tensor& inputs_embeds, const at::Tensor& input_ids);

  // The token embedding table [vocab_size, D] (textual inversion reads and writes rows of it).
  torch::nn::Embedding& token_embedding() { return text_model->embeddings->token_embedding; }
  // Grows (or shrinks) the table to `num_tokens` rows, keeping the existing rows; new rows are zero
  // and are for the caller to fill. Updates config().vocab_size.
  void resize_token_embeddings(int64_t num_tokens);
  const ClipTextConfig& config() const { return config_; }

  clip::TextTransformer text_model{nullptr};
  nn::Linear text_projection{nullptr};  // only with config.with_projection

 private:
  void check_ids(const at::Tensor& input_ids) const;
  ClipTextConfig config_;
};
TORCH_MODULE(ClipTextModel);

}  // namespace tide::models
