// LoRA files without fixtures: name resolution (kohya underscores, SDXL's original-layout UNet names, PEFT,
// old diffusers), each format's delta on hand-computed values, exact restore, all-or-nothing errors with
// malformed files, and the command line's FILE[:WEIGHT] argument.
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <fstream>

#include "test_support.h"
#include "tide/adapters/lora_argument.h"
#include "tide/adapters/lora_delta.h"
#include "tide/adapters/lora_file.h"
#include "tide/adapters/lora_set.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/error.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using namespace tide::adapters;
using tide::testing::TempDir;

at::Tensor t2(std::vector<std::vector<float>> rows) {
  const auto n = static_cast<int64_t>(rows.size()), m = static_cast<int64_t>(rows[0].size());
  at::Tensor t = at::empty({n, m}, at::kFloat);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) t[i][j] = rows[i][j];
  return t;
}

// A stand-in UNet: a linear layer [2, 3] and a 3x3 convolution [2, 2, 3, 3], named like diffusers modules.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    proj_in = register_module("proj_in", torch::nn::Linear(3, 2));
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 2, 3)));
  }
  torch::nn::Linear proj_in{nullptr};
  torch::nn::Conv2d conv1{nullptr};
};
TORCH_MODULE(TinyNet);

std::map<std::string, at::Tensor> params(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

bool same(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  for (const auto& [k, v] : a)
    if (!at::equal(v, b.at(k))) return false;
  return a.size() == b.size();
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const tide::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST(LoraNames, KohyaNamesAreMatchedAgainstTheModelsModules) {
  LoraTargets::Shapes unet = {{"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", {4, 4}},
                              {"a.b_c", {2, 2}},
                              {"a_b.c", {2, 2}}};
  LoraTargets::Shapes te = {{"text_model.encoder.layers.0.self_attn.q_proj", {4, 4}}};
  LoraTargets sd({{"unet", unet}, {"text_encoder", te}}, nullptr, false);
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(sd.kohya_module("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"),
            P("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"));
  EXPECT_EQ(sd.kohya_module("lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
            P("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(sd.kohya_module("lora_unet_a_b_c")) << "two modules have this kohya name: never guess";
  EXPECT_FALSE(sd.kohya_module("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"));

  LoraTargets xl({{"unet", unet}, {"text_encoder", te}, {"text_encoder_2", te}}, nullptr, true);
  EXPECT_EQ(xl.kohya_module("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
            P("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj"));
  EXPECT_EQ(xl.kohya_module("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"),
            P("text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj"));
}

// kohya's SDXL files name UNet layers as the original checkpoint does (sdxl_model_util.py conversion map).
TEST(LoraNames, OriginalLayoutUNetNames) {
  const auto config = models::UNet2DConditionConfig::preset("sdxl");
  LoraTargets::Shapes unet = {{"down_blocks.1.attentions.0.proj_in", {640, 640}},
                              {"down_blocks.0.resnets.0.conv1", {320, 320, 3, 3}},
                              {"down_blocks.0.downsamplers.0.conv", {320, 320, 3, 3}},
                              {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k", {1280, 2048}},
                              {"up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k", {640, 2048}},
                              {"up_blocks.0.resnets.2.conv_shortcut", {1280, 1920, 1, 1}},
                              {"up_blocks.0.upsamplers.0.conv", {1280, 1280, 3, 3}}};
  LoraTargets t({{"unet", unet}}, &config, true);
  const std::map<std::string, std::string> expected = {
      {"lora_unet_input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in"},
      {"lora_unet_input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"},
      {"lora_unet_input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"},
      {"lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"},
      {"lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k",
       "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k"},
      {"lora_unet_output_blocks_2_0_skip_connection", "up_blocks.0.resnets.2.conv_shortcut"},
      {"lora_unet_output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"},
      {"lora_unet_down_blocks_1_attentions_0_proj_in", "down_blocks.1.attentions.0.proj_in"}};
  for (const auto& [kohya, module] : expected) {
    const auto found = t.kohya_module(kohya);
    ASSERT_TRUE(found) << kohya;
    EXPECT_EQ(found->second, module) << kohya;
  }
}

LoraLayer layer(LoraKind kind, std::map<std::string, at::Tensor> factors, std::optional<double> alpha) {
  return LoraLayer{"test", "unet", "m", kind, std::move(factors), alpha};
}

TEST(LoraDelta, EachFormatOnHandComputedValues) {
  // LoRA: up [2, 1] @ down [1, 3] * alpha / rank (0.5 / 1).
  auto lora = layer(LoraKind::kLora, {{"down", t2({{1, 2, 3}})}, {"up", t2({{1}, {2}})}}, 0.5);
  EXPECT_TRUE(at::equal(lora_delta(lora, {2, 3}, "t"), t2({{0.5, 1, 1.5}, {1, 2, 3}})));
  lora.alpha = std::nullopt;  // no alpha: scale 1
  EXPECT_TRUE(at::equal(lora_delta(lora, {2, 3}, "t"), t2({{1, 2, 3}, {2, 4, 6}})));
  lora.alpha = 0.0;  // kohya: alpha 0 means the rank
  EXPECT_EQ(lora_scale(lora), 1.0);

  // LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank (2 / 1).
  auto loha = layer(LoraKind::kLoha,
                    {{"hada_w1_a", t2({{1}, {2}})}, {"hada_w1_b", t2({{1, 1, 1}})}, {"hada_w2_a", t2({{3}, {1}})},
                     {"hada_w2_b", t2({{1, 0, 2}})}},
                    2.0);
  EXPECT_TRUE(at::equal(lora_delta(loha, {2, 3}, "t"), t2({{6, 0, 12}, {4, 0, 8}})));

  // LoKr with two full factors: kron(w1, w2), the stored alpha ignored (scale 1).
  auto lokr = layer(LoraKind::kLokr, {{"lokr_w1", t2({{1}, {2}})}, {"lokr_w2", t2({{1, 2, 3}})}}, 7.0);
  EXPECT_EQ(lora_scale(lokr), 1.0);
  EXPECT_TRUE(at::equal(lora_delta(lokr, {2, 3}, "t"), t2({{1, 2, 3}, {2, 4, 6}})));
  // w2 as two factors: alpha / rank applies (0.5 / 1).
  auto lokr2 = layer(LoraKind::kLokr, {{"lokr_w1", t2({{1}, {2}})}, {"lokr_w2_a", t2({{1}})}, {"lokr_w2_b", t2({{1, 2, 3}})}}, 0.5);
  EXPECT_TRUE(at::equal(lora_delta(lokr2, {2, 3}, "t"), t2({{0.5, 1, 1.5}, {1, 2, 3}})));

  // A 3x3 convolution (LoCon): delta[o, i, y, x] = up[o] * down[0, i, y, x] * scale.
  const at::Tensor down = at::arange(18, at::kFloat).reshape({1, 2, 3, 3});
  const at::Tensor up = t2({{2}, {-1}}).reshape({2, 1, 1, 1});
  auto conv = layer(LoraKind::kLora, {{"down", down}, {"up", up}}, 0.25);
  const at::Tensor d = lora_delta(conv, {2, 2, 3, 3}, "t");
  EXPECT_EQ(d.sizes(), (at::IntArrayRef{2, 2, 3, 3}));
  EXPECT_FLOAT_EQ(d[0][1][2][1].item<float>(), 2 * 16 * 0.25f);
  EXPECT_FLOAT_EQ(d[1][0][0][2].item<float>(), -1 * 2 * 0.25f);

  // Shapes that do not fit the weight are an error naming the layer.
  expect_error([&] { lora_delta(lora, {3, 2}, "layer X"); }, {"layer X", "[2, 3]", "[3, 2]"});
}

class LoraFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    net = TinyNet();
    kohya = write("kohya.safetensors", {{"lora_unet_proj_in.lora_down.weight", at::randn({1, 3})},
                                        {"lora_unet_proj_in.lora_up.weight", at::randn({2, 1})},
                                        {"lora_unet_proj_in.alpha", at::tensor(0.5)}});
    peft = write("peft.safetensors", {{"unet.conv1.lora_A.weight", at::randn({1, 2, 3, 3})},
                                      {"unet.conv1.lora_B.weight", at::randn({2, 1, 1, 1})}});
  }
  std::map<std::string, torch::nn::Module*> components() { return {{"unet", net.get()}}; }
  LoraTargets targets() { return LoraTargets::from_modules(components(), nullptr, false); }
  fs::path write(const std::string& name, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    const fs::path p = dir / name;
    io::write_safetensors(p, tensors);
    return p;
  }
  TempDir dir;
  TinyNet net{nullptr};
  fs::path kohya, peft;  // a kohya LoRA of proj_in (rank 1, alpha 0.5), a PEFT one of conv1 (rank 1)
};

TEST_F(LoraFiles, ReadsKohyaPeftAndOldDiffusersNames) {
  const auto kohya_lora = read_lora_file(kohya, targets());
  ASSERT_EQ(kohya_lora.layers.size(), 1u);
  EXPECT_EQ(kohya_lora.naming, "kohya");
  EXPECT_EQ(kohya_lora.layers[0].module, "proj_in");
  EXPECT_EQ(kohya_lora.layers[0].kind, LoraKind::kLora);
  EXPECT_EQ(kohya_lora.layers[0].alpha, 0.5);
  EXPECT_EQ(lora_scale(kohya_lora.layers[0]), 0.5);

  const auto peft_lora = read_lora_file(peft, targets());
  ASSERT_EQ(peft_lora.layers.size(), 1u);
  EXPECT_EQ(peft_lora.naming, "diffusers");
  EXPECT_EQ(peft_lora.layers[0].component, "unet");
  EXPECT_EQ(peft_lora.layers[0].module, "conv1");

  const auto old = read_lora_file(write("old.safetensors", {{"unet.proj_in.lora.down.weight", at::randn({1, 3})},
                                                            {"unet.proj_in.lora.up.weight", at::randn({2, 1})}}),
                                  targets());
  ASSERT_EQ(old.layers.size(), 1u);
  EXPECT_EQ(old.layers[0].module, "proj_in");
}

TEST_F(LoraFiles, SwitchingAndClearingRestoreTheBaseWeightsExactly) {
  const auto base = params(*net);
  LoraSet set;
  set.apply({{kohya, 0.7}}, components(), nullptr, false);
  auto merged = params(*net);
  EXPECT_FALSE(at::equal(merged.at("proj_in.weight"), base.at("proj_in.weight")));
  EXPECT_TRUE(at::equal(merged.at("conv1.weight"), base.at("conv1.weight")));
  EXPECT_TRUE(at::allclose(merged.at("proj_in.weight") - base.at("proj_in.weight"),
                           0.7 * lora_delta(read_lora_file(kohya, targets()).layers[0], {2, 3}, "t"), 1e-6, 1e-7));

  // Another LoRA replaces the first: proj_in is back to its base, conv1 changes.
  set.apply({{peft, 1.0}}, components(), nullptr, false);
  merged = params(*net);
  EXPECT_TRUE(at::equal(merged.at("proj_in.weight"), base.at("proj_in.weight")));
  EXPECT_FALSE(at::equal(merged.at("conv1.weight"), base.at("conv1.weight")));
  ASSERT_EQ(set.active().size(), 1u);

  set.apply({}, components(), nullptr, false);
  EXPECT_TRUE(same(params(*net), base));
  EXPECT_TRUE(set.active().empty());

  // Two LoRAs add up: +1 and -1 of one file cancel.
  set.apply({{kohya, 1.0}, {kohya, -1.0}}, components(), nullptr, false);
  EXPECT_TRUE(at::allclose(params(*net).at("proj_in.weight"), base.at("proj_in.weight"), 0, 1e-7));
  set.apply({}, components(), nullptr, false);
  EXPECT_TRUE(same(params(*net), base));
}

TEST_F(LoraFiles, Bfloat16WeightsAreMergedInFloat32AndRestoredExactly) {
  net->to(at::kBFloat16);
  const auto base = params(*net);
  LoraSet set;
  set.apply({{kohya, 1.0}, {peft, 0.5}}, components(), nullptr, false);
  const auto merged = params(*net);
  EXPECT_EQ(merged.at("proj_in.weight").scalar_type(), at::kBFloat16);
  EXPECT_FALSE(at::equal(merged.at("conv1.weight"), base.at("conv1.weight")));
  set.apply({}, components(), nullptr, false);
  EXPECT_TRUE(same(params(*net), base));
}

TEST_F(LoraFiles, AMalformedFileIsAnErrorNamingTheTensorAndChangesNothing) {
  LoraSet set;
  set.apply({{kohya, 1.0}}, components(), nullptr, false);
  const auto before = params(*net);
  struct Bad {
    std::string what;
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    std::vector<std::string> message;
  };
  const std::vector<Bad> bad = {
      {"unknown tensor", {{"lora_unet_proj_in.weird", at::zeros({1})}}, {"lora_unet_proj_in.weird", "not a LoRA tensor"}},
      {"no such layer",
       {{"lora_unet_nope.lora_down.weight", at::zeros({1, 3})}, {"lora_unet_nope.lora_up.weight", at::zeros({2, 1})}},
       {"lora_unet_nope", "no layer of this model"}},
      {"shape", {{"unet.proj_in.lora_A.weight", at::zeros({1, 4})}, {"unet.proj_in.lora_B.weight", at::zeros({2, 1})}},
       {"unet.proj_in", "[2, 4]", "[2, 3]"}},
      {"rank", {{"unet.proj_in.lora_A.weight", at::zeros({2, 3})}, {"unet.proj_in.lora_B.weight", at::zeros({2, 1})}},
       {"unet.proj_in", "cannot be multiplied"}},
      {"missing up", {{"lora_unet_proj_in.lora_down.weight", at::zeros({1, 3})}}, {"lora_unet_proj_in", "'up'"}},
      {"other family",
       {{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", at::zeros({1, 3})},
        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", at::zeros({2, 1})}},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1", "SDXL"}},
      {"dora",
       {{"lora_unet_proj_in.lora_down.weight", at::zeros({1, 3})}, {"lora_unet_proj_in.lora_up.weight", at::zeros({2, 1})},
        {"lora_unet_proj_in.dora_scale", at::zeros({2, 1})}},
       {"DoRA"}},
      {"integer", {{"lora_unet_proj_in.lora_down.weight", at::zeros({1, 3}, at::kLong)}}, {"floating-point"}},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.what);
    const fs::path p = write("bad.safetensors", b.tensors);
    // The bad file comes second: the good one before it must not be half-applied either.
    expect_error([&] { set.apply({{peft, 1.0}, {p, 1.0}}, components(), nullptr, false); }, b.message);
    EXPECT_TRUE(same(params(*net), before));
    EXPECT_EQ(set.active().size(), 1u);
  }
  expect_error([&] { set.apply({{dir / "absent.safetensors", 1.0}}, components(), nullptr, false); }, {"does not exist"});
  std::ofstream(dir / "lora.pt") << "x";
  expect_error([&] { set.apply({{dir / "lora.pt", 1.0}}, components(), nullptr, false); }, {".safetensors"});
  std::ofstream(dir / "junk.safetensors") << "not a safetensors file";
  EXPECT_THROW(set.apply({{dir / "junk.safetensors", 1.0}}, components(), nullptr, false), tide::Error);
  EXPECT_TRUE(same(params(*net), before));
}

TEST(LoraArgument, FileWeightAndFolderLookup) {
  TempDir dir;
  io::write_safetensors(dir / "pixel-art.safetensors", {{"x.alpha", at::tensor(1.0)}});
  io::write_safetensors(dir / "odd:name.safetensors", {{"x.alpha", at::tensor(1.0)}});
  const std::string file = (dir / "pixel-art.safetensors").string();

  auto a = parse_lora_argument(file + ":0.8", std::nullopt);
  EXPECT_EQ(a.file, dir / "pixel-art.safetensors");
  EXPECT_DOUBLE_EQ(a.weight, 0.8);
  EXPECT_DOUBLE_EQ(parse_lora_argument(file, std::nullopt).weight, 1.0);
  EXPECT_DOUBLE_EQ(parse_lora_argument(file + ":-1.5e-1", std::nullopt).weight, -0.15);
  // A ':' not followed by a number belongs to the path.
  EXPECT_EQ(parse_lora_argument((dir / "odd:name.safetensors").string(), std::nullopt).file, dir / "odd:name.safetensors");
  // Bare names in --lora-dir, with or without the extension.
  EXPECT_EQ(parse_lora_argument("pixel-art:0.5", dir.path()).file, dir / "pixel-art.safetensors");
  EXPECT_EQ(parse_lora_argument("pixel-art.safetensors", dir.path()).file, dir / "pixel-art.safetensors");
  EXPECT_EQ(lora_label(a), "pixel-art");

  expect_error([&] { parse_lora_argument("absent:0.5", dir.path()); }, {"absent", dir.path().string()});
  expect_error([&] { parse_lora_argument(file + ":inf", std::nullopt); }, {"finite"});
  expect_error([&] { parse_lora_argument(file + ":heavy", std::nullopt); }, {"must be a number"});
  expect_error([&] { parse_lora_argument(":0.5", std::nullopt); }, {"no file"});
  expect_error([&] { parse_lora_argument("pixel-art", dir / "nope"); }, {"not a folder"});
}

}  // namespace
