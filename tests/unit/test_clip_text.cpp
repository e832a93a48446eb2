// CLIP text encoder on tiny random models: shapes, causal mask, pooling rule, activations, config errors.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/models/clip_text.h"
#include "tide/runtime/error.h"

namespace {

using tide::models::ClipTextConfig;
using tide::models::ClipTextModel;
using tide::models::ClipTextOutput;

ClipTextConfig tiny_config(bool with_projection = false) {
  ClipTextConfig c;
  c.vocab_size = 100;
  c.hidden_size = 16;
  c.intermediate_size = 20;
  c.projection_dim = 8;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 12;
  c.eos_token_id = 2;
  c.with_projection = with_projection;
  return c;
}

ClipTextModel tiny_model(const ClipTextConfig& config, uint64_t seed = 0) {
  at::manual_seed(seed);
  ClipTextModel model(config);
  at::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.5);  // not the identity layer norms of the default init
  return model;
}

// [2, 12]: BOS, a few tokens, EOS (99 = the largest id), padding.
at::Tensor tiny_ids() {
  return at::tensor({98, 5, 17, 42, 99, 99, 99, 99, 99, 99, 99, 99,  //
                     98, 7, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                    at::kLong)
      .view({2, 12});
}

TEST(ClipTextUnit, Shapes) {
  at::NoGradGuard no_grad;
  ClipTextModel plain = tiny_model(tiny_config());
  ClipTextOutput out = plain->forward(tiny_ids());
  EXPECT_EQ(out.last_hidden_state.sizes(), at::IntArrayRef({2, 12, 16}));
  EXPECT_EQ(out.penultimate.sizes(), at::IntArrayRef({2, 12, 16}));
  EXPECT_EQ(out.pooled.sizes(), at::IntArrayRef({2, 16}));
  EXPECT_FALSE(out.text_embeds.defined());
  EXPECT_FALSE(plain->named_parameters().contains("text_projection.weight"));

  ClipTextModel projected = tiny_model(tiny_config(true));
  out = projected->forward(tiny_ids());
  ASSERT_TRUE(out.text_embeds.defined());
  EXPECT_EQ(out.text_embeds.sizes(), at::IntArrayRef({2, 8}));
  EXPECT_TENSOR_NEAR(out.text_embeds, at::matmul(out.pooled, projected->text_projection->weight.t()), 1e-6);

  // Shorter sequences are fine, longer than max_position_embeddings are not.
  EXPECT_EQ(projected->forward(tiny_ids().narrow(1, 0, 5)).last_hidden_state.sizes(), at::IntArrayRef({2, 5, 16}));
  EXPECT_THROW(projected->forward(at::zeros({1, 13}, at::kLong)), tide::Error);
  EXPECT_THROW(projected->forward(at::zeros({13}, at::kLong)), tide::Error);
  EXPECT_THROW(projected->forward(at::full({1, 4}, 100, at::kLong)), tide::Error);  // outside the vocabulary
}

TEST(ClipTextUnit, ParameterNamesMatchCheckpoint) {
  ClipTextModel model(tiny_config(true));
  const auto params = model->named_parameters();
  for (const char* name :
       {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.0.self_attn.k_proj.bias",
        "text_model.encoder.layers.2.self_attn.v_proj.weight", "text_model.encoder.layers.2.self_attn.out_proj.bias",
        "text_model.encoder.layers.0.layer_norm1.weight", "text_model.encoder.layers.1.layer_norm2.bias",
        "text_model.encoder.layers.0.mlp.fc1.weight", "text_model.encoder.layers.0.mlp.fc2.bias",
        "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias", "text_projection.weight"})
    EXPECT_TRUE(params.contains(name)) << name;
  EXPECT_FALSE(params.contains("text_projection.bias"));
  EXPECT_FALSE(params.contains("text_model.embeddings.position_ids"));
  EXPECT_EQ(params.size(), 2u + 3u * 16u + 2u + 1u);
}

TEST(ClipTextUnit, CausalMask) {
  at::NoGradGuard no_grad;
  ClipTextModel model = tiny_model(tiny_config());
  const at::Tensor ids = tiny_ids();
  at::Tensor changed = ids.clone();
  changed[0][3] = 11;
  const ClipTextOutput a = model->forward(ids), b = model->forward(changed);
  EXPECT_TRUE(at::equal(a.last_hidden_state.narrow(1, 0, 3), b.last_hidden_state.narrow(1, 0, 3)));
  EXPECT_TRUE(at::equal(a.penultimate.narrow(1, 0, 3), b.penultimate.narrow(1, 0, 3)));
  EXPECT_GT(tide::testing::max_abs_diff(a.last_hidden_state[0][3], b.last_hidden_state[0][3]), 1e-3);
  EXPECT_GT(tide::testing::max_abs_diff(a.last_hidden_state[0][7], b.last_hidden_state[0][7]), 1e-3);
  EXPECT_TRUE(at::equal(a.last_hidden_state[1], b.last_hidden_state[1]));  // other batch row untouched
}

TEST(ClipTextUnit, PooledIndex) {
  at::NoGradGuard no_grad;
  // Row 0: largest id (99) first at 2, eos_token_id 50 first at 4. Row 1: 99 at 6, no 50 at all (-> 0).
  const at::Tensor ids = at::tensor({98, 5, 99, 42, 50, 50, 99, 1,  //
                                     3, 4, 5, 6, 7, 8, 99, 99},
                                    at::kLong)
                             .view({2, 8});
  ClipTextConfig legacy = tiny_config();
  ClipTextModel model = tiny_model(legacy);
  ClipTextOutput out = model->forward(ids);
  EXPECT_TRUE(at::equal(out.pooled[0], out.last_hidden_state[0][2]));
  EXPECT_TRUE(at::equal(out.pooled[1], out.last_hidden_state[1][6]));

  ClipTextConfig modern = tiny_config();
  modern.eos_token_id = 50;
  model = tiny_model(modern);
  out = model->forward(ids);
  EXPECT_TRUE(at::equal(out.pooled[0], out.last_hidden_state[0][4]));
  EXPECT_TRUE(at::equal(out.pooled[1], out.last_hidden_state[1][0]));
}

TEST(ClipTextUnit, ForwardEmbeddingsEqualsForward) {
  ClipTextModel model = tiny_model(tiny_config(true));
  const at::Tensor ids = tiny_ids();
  const at::Tensor embeds = model->token_embedding()->forward(ids).detach().requires_grad_(true);
  const ClipTextOutput a = model->forward(ids), b = model->forward_embeddings(embeds, ids);
  EXPECT_TRUE(at::equal(a.last_hidden_state, b.last_hidden_state));
  EXPECT_TRUE(at::equal(a.text_embeds, b.text_embeds));
  // Gradients reach the input embeddings (textual inversion trains some rows of them).
  b.last_hidden_state.sum().backward();
  ASSERT_TRUE(embeds.grad().defined());
  EXPECT_GT(embeds.grad().abs().sum().item<double>(), 0);
  EXPECT_THROW(model->forward_embeddings(embeds.narrow(2, 0, 8), ids), tide::Error);
}

TEST(ClipTextUnit, Activations) {
  at::NoGradGuard no_grad;
  ClipTextConfig config = tiny_config();
  at::manual_seed(1);
  tide::models::clip::Mlp mlp(config);
  const at::Tensor x = at::randn({2, 3, 16});
  const at::Tensor h = mlp->fc1->forward(x);
  EXPECT_TENSOR_NEAR(mlp->forward(x), mlp->fc2->forward(h * at::sigmoid(1.702 * h)), 1e-6);

  config.hidden_act = "gelu";
  tide::models::clip::Mlp exact(config);
  exact->fc1->weight.copy_(mlp->fc1->weight);
  exact->fc1->bias.copy_(mlp->fc1->bias);
  exact->fc2->weight.copy_(mlp->fc2->weight);
  exact->fc2->bias.copy_(mlp->fc2->bias);
  const at::Tensor erf_gelu = 0.5 * h * (1 + at::erf(h / std::sqrt(2.0)));
  EXPECT_TENSOR_NEAR(exact->forward(x), exact->fc2->forward(erf_gelu), 1e-6);
  EXPECT_GT(tide::testing::max_abs_diff(exact->forward(x), mlp->forward(x)), 1e-4);
}

TEST(ClipTextUnit, ConfigFromJson) {
  const nlohmann::json json = {{"architectures", {"CLIPTextModelWithProjection"}},
                               {"hidden_act", "gelu"},
                               {"hidden_size", 32},
                               {"intermediate_size", 37},
                               {"num_attention_heads", 4},
                               {"num_hidden_layers", 5},
                               {"max_position_embeddings", 77},
                               {"layer_norm_eps", 1e-5},
                               {"projection_dim", 32},
                               {"vocab_size", 49408},
                               {"eos_token_id", 2}};
  const ClipTextConfig c = ClipTextConfig::from_json(json);
  EXPECT_TRUE(c.with_projection);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 37);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.head_dim(), 8);
  nlohmann::json plain = json;
  plain["architectures"] = {"CLIPTextModel"};
  EXPECT_FALSE(ClipTextConfig::from_json(plain).with_projection);

  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = json;
    j[key] = value;
    return j;
  };
  EXPECT_THROW(ClipTextConfig::from_json(with("hidden_act", "relu")), tide::Error);
  EXPECT_THROW(ClipTextConfig::from_json(with("num_attention_heads", 5)), tide::Error);
  EXPECT_THROW(ClipTextConfig::from_json(with("hidden_size", "32")), tide::Error);
  EXPECT_THROW(ClipTextConfig::from_json(with("num_hidden_layers", 0)), tide::Error);
  EXPECT_THROW(ClipTextConfig::from_json(with("layer_norm_eps", -1.0)), tide::Error);
  EXPECT_THROW(ClipTextConfig::from_json(nlohmann::json::array()), tide::Error);
  ClipTextConfig bad = tiny_config();
  bad.max_position_embeddings = 0;
  EXPECT_THROW(ClipTextModel{bad}, tide::Error);
}

TEST(ClipTextUnit, ResizeTokenEmbeddings) {
  ClipTextModel model = tiny_model(tiny_config());
  const at::Tensor before = model->token_embedding()->weight.clone();
  model->resize_token_embeddings(102);
  EXPECT_EQ(model->config().vocab_size, 102);
  const at::Tensor after = model->token_embedding()->weight;
  EXPECT_EQ(after.sizes(), at::IntArrayRef({102, 16}));
  EXPECT_TRUE(at::equal(after.narrow(0, 0, 100), before));
  EXPECT_TRUE(model->named_parameters().contains("text_model.embeddings.token_embedding.weight"));
  EXPECT_TRUE(at::equal(model->named_parameters()["text_model.embeddings.token_embedding.weight"], after));
  {
    at::NoGradGuard no_grad;
    after[101].fill_(1.0);
  }
  const at::Tensor ids = at::tensor({98, 101, 99}, at::kLong).view({1, 3});
  EXPECT_EQ(model->forward(ids).last_hidden_state.sizes(), at::IntArrayRef({1, 3, 16}));
}

}  // namespace
