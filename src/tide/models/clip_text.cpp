#include "tide/models/clip_text.h"

#include <cmath>
#include <limits>

#include "tide/io/json_file.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::models {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw Error("CLIP text config: " + what);
}

}  // namespace

void ClipTextConfig::validate() const {
  require(vocab_size > 0, "vocab_size must be positive, got " + std::to_string(vocab_size));
  require(hidden_size > 0, "hidden_size must be positive, got " + std::to_string(hidden_size));
  require(intermediate_size > 0, "intermediate_size must be positive, got " + std::to_string(intermediate_size));
  require(num_hidden_layers > 0, "num_hidden_layers must be positive, got " + std::to_string(num_hidden_layers));
  require(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
          "hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
              std::to_string(num_attention_heads));
  require(max_position_embeddings > 0,
          "max_position_embeddings must be positive, got " + std::to_string(max_position_embeddings));
  require(!with_projection || projection_dim > 0,
          "projection_dim must be positive, got " + std::to_string(projection_dim));
  require(layer_norm_eps > 0 && std::isfinite(layer_norm_eps), "layer_norm_eps must be positive");
  require(hidden_act == "quick_gelu" || hidden_act == "gelu" || hidden_act == "gelu_new" ||
              hidden_act == "gelu_pytorch_tanh",
          "unsupported hidden_act '" + hidden_act + "' (expected quick_gelu, gelu, gelu_new or gelu_pytorch_tanh)");
}

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& json) {
  using io::json_get;
  if (!json.is_object()) throw Error("CLIP text config: expected a JSON object");
  ClipTextConfig c;
  c.vocab_size = json_get<int64_t>(json, "vocab_size", c.vocab_size);
  c.hidden_size = json_get<int64_t>(json, "hidden_size", c.hidden_size);
  c.intermediate_size = json_get<int64_t>(json, "intermediate_size", c.intermediate_size);
  c.projection_dim = json_get<int64_t>(json, "projection_dim", c.projection_dim);
  c.num_hidden_layers = json_get<int64_t>(json, "num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = json_get<int64_t>(json, "num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = json_get<int64_t>(json, "max_position_embeddings", c.max_position_embeddings);
  c.hidden_act = json_get<std::string>(json, "hidden_act", c.hidden_act);
  c.layer_norm_eps = json_get<double>(json, "layer_norm_eps", c.layer_norm_eps);
  c.eos_token_id = json_get<int64_t>(json, "eos_token_id", c.eos_token_id);
  for (const auto& arch : json_get<std::vector<std::string>>(json, "architectures", {}))
    if (arch == "CLIPTextModelWithProjection") c.with_projection = true;
  c.validate();
  return c;
}

namespace clip {

AttentionImpl::AttentionImpl(const ClipTextConfig& config)
    : heads_(config.num_attention_heads),
      head_dim_(config.head_dim()),
      scale_(1.0 / std::sqrt(static_cast<double>(config.head_dim()))) {
  const int64_t d = config.hidden_size;
  q_proj = register_module("q_proj", nn::Linear(d, d));
  k_proj = register_module("k_proj", nn::Linear(d, d));
  v_proj = register_module("v_proj", nn::Linear(d, d));
  out_proj = register_module("out_proj", nn::Linear(d, d));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const int64_t b = x.size(0), l = x.size(1);
  auto heads = [&](const at::Tensor& t) { return t.view({b, l, heads_, head_dim_}).transpose(1, 2); };
  const at::Tensor q = heads(q_proj->forward(x) * scale_);  // [B, H, L, hd]
  const at::Tensor k = heads(k_proj->forward(x));
  const at::Tensor v = heads(v_proj->forward(x));
  const at::Tensor probs = at::softmax(at::matmul(q, k.transpose(-1, -2)) + mask, -1);  // [B, H, L, L]
  const at::Tensor out = at::matmul(probs, v).transpose(1, 2).reshape({b, l, heads_ * head_dim_});
  return out_proj->forward(out);  // [B, L, D]
}

MlpImpl::MlpImpl(const ClipTextConfig& config) : act_(config.hidden_act) {
  fc1 = register_module("fc1", nn::Linear(config.hidden_size, config.intermediate_size));
  fc2 = register_module("fc2", nn::Linear(config.intermediate_size, config.hidden_size));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  at::Tensor h = fc1->forward(x);  // [B, L, intermediate]
  if (act_ == "quick_gelu")
    h = h * at::sigmoid(h * 1.702);
  else if (act_ == "gelu")
    h = at::gelu(h);
  else
    h = at::gelu(h, "tanh");
  return fc2->forward(h);  // [B, L, D]
}

EncoderLayerImpl::EncoderLayerImpl(const ClipTextConfig& config) {
  const auto norm = torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps);
  self_attn = register_module("self_attn", Attention(config));
  layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(norm));
  mlp = register_module("mlp", Mlp(config));
  layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(norm));
}

at::Tensor EncoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const at::Tensor h = x + self_attn->forward(layer_norm1->forward(x), mask);  // [B, L, D]
  return h + mlp->forward(layer_norm2->forward(h));
}

EmbeddingsImpl::EmbeddingsImpl(const ClipTextConfig& config) {
  token_embedding = register_module("token_embedding", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  position_embedding = register_module("position_embedding",
                                       torch::nn::Embedding(config.max_position_embeddings, config.hidden_size));
}

EncoderImpl::EncoderImpl(const ClipTextConfig& config) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(EncoderLayer(config));
}

TextTransformerImpl::TextTransformerImpl(const ClipTextConfig& config) {
  embeddings = register_module("embeddings", Embeddings(config));
  encoder = register_module("encoder", Encoder(config));
  final_layer_norm = register_module(
      "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
}

}  // namespace clip

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config) : config_(config) {
  config_.validate();
  text_model = register_module("text_model", clip::TextTransformer(config_));
  if (config_.with_projection)
    text_projection = register_module(
        "text_projection", nn::Linear(config_.hidden_size, config_.projection_dim, /*bias=*/false));
  // int8 weights stay weight-only here: the encoder runs once per image (its speed hardly counts), and its error
  // would reach every UNet call (sd15 preset, 256 px: UNet call error against float32 1.9% with W8A8, 1.74%
  // weight-only, 1.7% with the encoder in float32).
  for (auto& module : modules(/*include_self=*/false))
    if (auto* linear = dynamic_cast<nn::LinearImpl*>(module.get())) linear->int8_activations = false;
}

void ClipTextModelImpl::check_ids(const at::Tensor& input_ids) const {
  if (input_ids.dim() != 2 || input_ids.size(1) < 1 || input_ids.size(1) > config_.max_position_embeddings)
    throw Error("CLIP text encoder: input_ids must be [batch, length] with 1 <= length <= " +
                std::to_string(config_.max_position_embeddings) + ", got " + shape_string(input_ids.sizes()));
  if (at::isFloatingType(input_ids.scalar_type()) || input_ids.scalar_type() == at::kBool)
    throw Error("CLIP text encoder: input_ids must be integer token ids");
}

ClipTextOutput ClipTextModelImpl::forward(const at::Tensor& input_ids) {
  check_ids(input_ids);
  if (input_ids.numel() > 0) {
    const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      throw Error("CLIP text encoder: token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                  std::to_string(config_.vocab_size) + ")");
  }
  return forward_embeddings(token_embedding()->forward(input_ids.to(at::kLong)), input_ids);  // [B, L, D]
}

ClipTextOutput ClipTextModelImpl::forward_embeddings(const at::Tensor& inputs_embeds, const at::Tensor& input_ids) {
  check_ids(input_ids);
  const int64_t b = input_ids.size(0), l = input_ids.size(1), d = config_.hidden_size;
  if (inputs_embeds.dim() != 3 || inputs_embeds.size(0) != b || inputs_embeds.size(1) != l || inputs_embeds.size(2) != d)
    throw Error("CLIP text encoder: inputs_embeds must be " + shape_string({b, l, d}) + ", got " +
                shape_string(inputs_embeds.sizes()));
  auto& tm = *text_model;
  at::Tensor h = inputs_embeds + tm.embeddings->position_embedding->weight.narrow(0, 0, l);  // [B, L, D]

  // Causal mask: position i attends to positions <= i.
  const at::Tensor mask =
      at::full({l, l}, -std::numeric_limits<double>::infinity(), h.options()).triu(1);  // [L, L]

  ClipTextOutput out;
  const auto& layers = *tm.encoder->layers;
  out.hidden_states.reserve(layers.size() + 1);
  for (size_t i = 0; i < layers.size(); ++i) {
    out.hidden_states.push_back(h);
    if (i + 1 == layers.size()) out.penultimate = h;  // hidden_states[-2]
    h = layers[i]->as<clip::EncoderLayer>()->forward(h, mask);
  }
  out.hidden_states.push_back(h);
  out.last_hidden_state = tm.final_layer_norm->forward(h);  // [B, L, D]

  const at::Tensor ids = input_ids.to(h.device());
  const at::Tensor eos = config_.eos_token_id == 2 ? ids.to(at::kInt).argmax(-1)  // legacy configs
                                                   : ids.eq(config_.eos_token_id).to(at::kInt).argmax(-1);
  out.pooled = out.last_hidden_state.gather(1, eos.to(at::kLong).view({b, 1, 1}).expand({b, 1, d})).squeeze(1);  // [B, D]
  if (text_projection) out.text_embeds = text_projection->forward(out.pooled);  // [B, P]
  return out;
}

void ClipTextModelImpl::resize_token_embeddings(int64_t num_tokens) {
  if (num_tokens <= 0) throw Error("CLIP text encoder: cannot resize the token embeddings to " + std::to_string(num_tokens));
  const at::Tensor old = token_embedding()->weight;
  torch::nn::Embedding grown(num_tokens, config_.hidden_size);
  grown->to(old.device(), old.scalar_type());
  {
    at::NoGradGuard no_grad;
    grown->weight.zero_();
    const int64_t keep = std::min(num_tokens, old.size(0));
    grown->weight.narrow(0, 0, keep).copy_(old.narrow(0, 0, keep));
  }
  grown->weight.set_requires_grad(old.requires_grad());
  text_model->embeddings->token_embedding =
      text_model->embeddings->replace_module("token_embedding", grown);
  config_.vocab_size = num_tokens;
}

}  // namespace tide::models
