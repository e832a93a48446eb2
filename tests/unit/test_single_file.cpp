// Original single-file checkpoints: family detection, the name tables and value transforms on small
// hand-made checkpoints, built-in presets, and a tiny SD 1.x model round trip diffusers -> single -> diffusers.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.h"
#include "tide/io/gguf.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/models/presets.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using tide::io::WeightSource;
using tide::pipeline::Family;
namespace presets = tide::models::presets;

// A tensor that only has a shape: reading it is a test failure.
void add_shape(WeightSource& source, const std::string& name, std::vector<int64_t> shape) {
  source.add_derived(name, {shape, at::kHalf, [name]() -> at::Tensor {
                              ADD_FAILURE() << "tensor " << name << " was read";
                              return {};
                            }});
}

void add_value(WeightSource& source, const std::string& name, const at::Tensor& value) {
  source.add_derived(name, {value.sizes().vec(), value.scalar_type(), [value] { return value.clone(); }});
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "(no error)";
}

WeightSource sd1_like(int64_t width) {
  WeightSource ck;
  add_shape(ck, "model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3});
  add_shape(ck, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", {49408, width});
  return ck;
}

TEST(SingleFileDetect, FamiliesFromNamesAndShapes) {
  EXPECT_EQ(tide::pipeline::detect_family(sd1_like(768)), Family::SD1);

  WeightSource sd2;
  add_shape(sd2, "model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3});
  add_shape(sd2, "cond_stage_model.model.token_embedding.weight", {49408, 1024});
  add_shape(sd2, "model_ema.decay", {});
  EXPECT_EQ(tide::pipeline::detect_family(sd2), Family::SD2);

  WeightSource xl;
  add_shape(xl, "model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3});
  add_shape(xl, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", {49408, 768});
  add_shape(xl, "conditioner.embedders.1.model.token_embedding.weight", {49408, 1280});
  EXPECT_EQ(tide::pipeline::detect_family(xl), Family::SDXL);
}

TEST(SingleFileDetect, UnknownLayoutsSayWhatWasSeen) {
  WeightSource other;
  add_shape(other, "encoder.layers.0.weight", {4, 4});
  add_shape(other, "encoder.layers.1.weight", {4, 4});
  other.set_description("other.safetensors");
  const auto message = error_of([&] { tide::pipeline::detect_family(other); });
  EXPECT_NE(message.find("other.safetensors is not a Stable Diffusion"), std::string::npos) << message;
  EXPECT_NE(message.find("encoder (2)"), std::string::npos) << message;

  WeightSource component;
  add_shape(component, "conv_in.weight", {320, 4, 3, 3});
  EXPECT_NE(error_of([&] { tide::pipeline::detect_family(component); }).find("diffusers folder"), std::string::npos);

  // SD 1.x layout with a text encoder that is not CLIP ViT-L, and no config saying otherwise.
  EXPECT_NE(error_of([&] { tide::pipeline::detect_family(sd1_like(1024)); }).find("768"), std::string::npos);
  WeightSource tiny = sd1_like(16);
  tiny.set_metadata("config.text_encoder", "{}");
  EXPECT_EQ(tide::pipeline::detect_family(tiny), Family::SD1);

  WeightSource refiner;
  add_shape(refiner, "model.diffusion_model.input_blocks.0.0.weight", {384, 4, 3, 3});
  add_shape(refiner, "conditioner.embedders.0.model.token_embedding.weight", {49408, 1280});
  EXPECT_NE(error_of([&] { tide::pipeline::detect_family(refiner); }).find("refiner"), std::string::npos);
}

// Small configs: two UNet levels with one layer each, two VAE levels, two-layer text encoders.
std::map<std::string, json> tiny_configs(Family family) {
  std::map<std::string, json> c;
  c["unet"] = {{"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
               {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}},
               {"block_out_channels", {32, 64}},
               {"layers_per_block", 1}};
  c["vae"] = {{"block_out_channels", {32, 32}}, {"layers_per_block", 1}};
  c["text_encoder"] = {{"hidden_act", family == Family::SD1 ? "quick_gelu" : "gelu"}, {"num_hidden_layers", 2}};
  if (family == Family::SDXL) {
    c["unet"]["addition_embed_type"] = "text_time";
    c["text_encoder"]["hidden_act"] = "quick_gelu";
    c["text_encoder_2"] = {{"architectures", {"CLIPTextModelWithProjection"}}, {"num_hidden_layers", 2}};
  }
  return c;
}

// The diffusers name the single-file tensor `original` gets (empty: none).
std::string mapped_name(const std::string& original, Family family, const std::string& component) {
  WeightSource ck;
  add_shape(ck, original, {4, 4});
  const auto components = tide::pipeline::components_from_single_file(ck, family, tiny_configs(family));
  const auto names = components.at(component).names();
  return names.size() == 1 ? names[0] : "";
}

TEST(SingleFileTables, UnetBlockIndices) {
  const auto unet = [](const std::string& name) { return mapped_name("model.diffusion_model." + name, Family::SD1, "unet"); };
  // One layer per block: input blocks 1 (resnet + attention), 2 (downsampler), 3 (resnet); output blocks
  // 0, 1 (+ upsampler after the resnet: no attention in the first up block), 2, 3 (resnet + attention).
  EXPECT_EQ(unet("time_embed.0.weight"), "time_embedding.linear_1.weight");
  EXPECT_EQ(unet("input_blocks.0.0.bias"), "conv_in.bias");
  EXPECT_EQ(unet("input_blocks.1.0.in_layers.0.weight"), "down_blocks.0.resnets.0.norm1.weight");
  EXPECT_EQ(unet("input_blocks.1.0.emb_layers.1.bias"), "down_blocks.0.resnets.0.time_emb_proj.bias");
  EXPECT_EQ(unet("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight");
  EXPECT_EQ(unet("input_blocks.2.0.op.weight"), "down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(unet("input_blocks.3.0.skip_connection.weight"), "down_blocks.1.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(unet("input_blocks.3.1.proj_in.weight"), "");  // the second down block has no attention
  EXPECT_EQ(unet("middle_block.1.proj_out.weight"), "mid_block.attentions.0.proj_out.weight");
  EXPECT_EQ(unet("middle_block.2.out_layers.3.weight"), "mid_block.resnets.1.conv2.weight");
  EXPECT_EQ(unet("output_blocks.1.1.conv.weight"), "up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(unet("output_blocks.3.1.norm.weight"), "up_blocks.1.attentions.1.norm.weight");
  EXPECT_EQ(unet("out.2.weight"), "conv_out.weight");
  EXPECT_EQ(unet("label_emb.0.0.weight"), "");  // SD 1.x has no added embedding
  EXPECT_EQ(mapped_name("model.diffusion_model.label_emb.0.2.bias", Family::SDXL, "unet"), "add_embedding.linear_2.bias");
}

TEST(SingleFileTables, VaeLevelsRunInReverseInTheDecoder) {
  const auto vae = [](const std::string& name) { return mapped_name("first_stage_model." + name, Family::SD1, "vae"); };
  EXPECT_EQ(vae("encoder.down.0.block.0.nin_shortcut.weight"), "encoder.down_blocks.0.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(vae("encoder.down.0.downsample.conv.weight"), "encoder.down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(vae("decoder.up.1.block.1.norm2.bias"), "decoder.up_blocks.0.resnets.1.norm2.bias");
  EXPECT_EQ(vae("decoder.up.1.upsample.conv.weight"), "decoder.up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(vae("decoder.norm_out.weight"), "decoder.conv_norm_out.weight");
  EXPECT_EQ(vae("encoder.mid.attn_1.norm.bias"), "encoder.mid_block.attentions.0.group_norm.bias");
  EXPECT_EQ(vae("post_quant_conv.weight"), "post_quant_conv.weight");
}

TEST(SingleFileTables, ValueTransformsRoundTrip) {
  // SDXL exercises all three: VAE attention 1x1 convs, OpenCLIP in_proj and text_projection.
  WeightSource ck;
  const auto q = at::arange(16, at::kFloat).reshape({4, 4, 1, 1});
  const auto in_proj = at::arange(24, at::kFloat).reshape({6, 4});
  const auto in_bias = at::arange(6, at::kFloat);
  const auto projection = at::arange(12, at::kFloat).reshape({2, 6});  // [width, projection]: x @ W
  add_value(ck, "first_stage_model.decoder.mid.attn_1.q.weight", q);
  add_value(ck, "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight", in_proj);
  add_value(ck, "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias", in_bias);
  add_value(ck, "conditioner.embedders.1.model.text_projection", projection);
  add_value(ck, "conditioner.embedders.1.model.logit_scale", at::ones({}));
  add_value(ck, "conditioner.embedders.1.model.transformer.resblocks.2.ln_1.weight", at::ones({2}));  // beyond 2 layers
  add_value(ck, "conditioner.embedders.0.transformer.text_model.embeddings.position_ids", at::arange(77).unsqueeze(0));
  add_value(ck, "alphas_cumprod", at::ones({1000}));
  const auto configs = tiny_configs(Family::SDXL);

  const auto components = tide::pipeline::components_from_single_file(ck, Family::SDXL, configs);
  const auto& vae = components.at("vae");
  const auto& te2 = components.at("text_encoder_2");
  EXPECT_TRUE(at::equal(vae.tensor("decoder.mid_block.attentions.0.to_q.weight"), q.reshape({4, 4})));
  EXPECT_EQ(vae.shape("decoder.mid_block.attentions.0.to_q.weight"), (std::vector<int64_t>{4, 4}));
  const std::string layer = "text_model.encoder.layers.1.self_attn.";
  EXPECT_TRUE(at::equal(te2.tensor(layer + "q_proj.weight"), in_proj.slice(0, 0, 2)));
  EXPECT_TRUE(at::equal(te2.tensor(layer + "k_proj.weight"), in_proj.slice(0, 2, 4)));
  EXPECT_TRUE(at::equal(te2.tensor(layer + "v_proj.bias"), in_bias.slice(0, 4, 6)));
  EXPECT_EQ(te2.shape(layer + "v_proj.weight"), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(at::equal(te2.tensor("text_projection.weight"), projection.t()));
  EXPECT_EQ(te2.names().size(), 7u);  // logit_scale, the third layer and position_ids are dropped
  EXPECT_FALSE(components.at("text_encoder").contains("text_model.embeddings.position_ids"));
  EXPECT_TRUE(tide::pipeline::unmapped_tensors(ck, Family::SDXL, configs).empty());

  // Back to the original layout: the same names and values.
  const auto back = tide::pipeline::single_file_source(Family::SDXL, components, configs);
  EXPECT_TRUE(at::equal(back.tensor("first_stage_model.decoder.mid.attn_1.q.weight"), q));
  EXPECT_TRUE(at::equal(back.tensor("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"), in_proj));
  EXPECT_TRUE(at::equal(back.tensor("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias"), in_bias));
  EXPECT_TRUE(at::equal(back.tensor("conditioner.embedders.1.model.text_projection"), projection));
  EXPECT_EQ(back.names().size(), 4u);

  // Tensors nobody knows are reported, and a diffusers tensor without an original name is an error.
  add_value(ck, "conditioner.embedders.1.model.transformer.resblocks.0.attn.extra", at::ones({1}));
  add_value(ck, "something_else", at::ones({1}));
  EXPECT_EQ(tide::pipeline::unmapped_tensors(ck, Family::SDXL, configs),
            (std::vector<std::string>{"conditioner.embedders.1.model.transformer.resblocks.0.attn.extra", "something_else"}));
  auto extra = components;
  add_value(extra["unet"], "down_blocks.7.resnets.0.norm1.weight", at::ones({1}));
  const auto message = error_of([&] { tide::pipeline::single_file_source(Family::SDXL, extra, configs); });
  EXPECT_NE(message.find("down_blocks.7.resnets.0.norm1.weight"), std::string::npos) << message;
}

TEST(SingleFileTables, Int8ScalesFollowTheirWeightsThroughEveryTransform) {
  // tide quantize's int8 weights carry "<weight>_scale" [out]: split with q/k/v, unchanged by the reshape
  // of a 1x1 convolution and by the transposed projection (the scales stay a vector of the diffusers rows).
  WeightSource diffusers_vae, diffusers_te2;
  const auto q = at::arange(16, at::kChar).reshape({4, 4});
  add_value(diffusers_vae, "decoder.mid_block.attentions.0.to_q.weight", q);
  add_value(diffusers_vae, "decoder.mid_block.attentions.0.to_q.weight_scale", at::arange(1, 5, at::kFloat));
  const std::string layer = "text_model.encoder.layers.1.self_attn.";
  int k = 0;
  for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
    add_value(diffusers_te2, layer + proj + ".weight", at::full({2, 4}, ++k, at::kChar));
    add_value(diffusers_te2, layer + proj + ".weight_scale", at::full({2}, 0.5f * k, at::kFloat));
  }
  add_value(diffusers_te2, "text_projection.weight", at::arange(12, at::kChar).reshape({6, 2}));
  add_value(diffusers_te2, "text_projection.weight_scale", at::arange(6, at::kFloat) + 1);
  const auto configs = tiny_configs(Family::SDXL);
  std::map<std::string, WeightSource> components = {
      {"vae", diffusers_vae}, {"text_encoder_2", diffusers_te2}, {"unet", {}}, {"text_encoder", {}}};

  const auto original = tide::pipeline::single_file_source(Family::SDXL, components, configs);
  const std::string open_clip = "conditioner.embedders.1.model.";
  EXPECT_EQ(original.shape("first_stage_model.decoder.mid.attn_1.q.weight"), (std::vector<int64_t>{4, 4, 1, 1}));
  EXPECT_TRUE(at::equal(original.tensor("first_stage_model.decoder.mid.attn_1.q.weight_scale"), at::arange(1, 5, at::kFloat)));
  EXPECT_TRUE(at::equal(original.tensor(open_clip + "transformer.resblocks.1.attn.in_proj_weight_scale"),
                        at::tensor({0.5f, 0.5f, 1.f, 1.f, 1.5f, 1.5f})));
  EXPECT_EQ(original.dtype(open_clip + "transformer.resblocks.1.attn.in_proj_weight"), at::kChar);
  EXPECT_TRUE(at::equal(original.tensor(open_clip + "text_projection_scale"), at::arange(6, at::kFloat) + 1));
  EXPECT_EQ(original.shape(open_clip + "text_projection"), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(original.names().size(), 6u);

  // And back: every diffusers tensor, the same values.
  const auto back = tide::pipeline::components_from_single_file(original, Family::SDXL, configs);
  EXPECT_TRUE(tide::pipeline::unmapped_tensors(original, Family::SDXL, configs).empty());
  for (const auto& [name, source] : components) {
    EXPECT_EQ(back.at(name).names(), source.names()) << name;
    for (const auto& tensor : source.names())
      EXPECT_TRUE(at::equal(back.at(name).tensor(tensor), source.tensor(tensor))) << tensor;
  }

  // A GGUF file has no int8 type for them: a clear refusal, nothing written.
  tide::testing::TempDir tmp;
  const auto message = error_of([&] {
    tide::pipeline::write_gguf_single_file(tmp / "x.gguf", Family::SDXL, components, configs, tide::io::GgmlType::Q8_0);
  });
  EXPECT_NE(message.find("stored as int8"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(tmp / "x.gguf"));
}

TEST(SingleFileConfigs, PresetsUnlessTheFileCarriesItsOwn) {
  WeightSource ck = sd1_like(768);
  add_shape(ck, "model.diffusion_model.out.2.weight", {4, 320, 3, 3});
  auto configs = tide::pipeline::single_file_configs(ck, Family::SD1);
  EXPECT_EQ(configs.at("unet"), presets::preset_config("sd15", "unet"));
  EXPECT_EQ(configs.at("scheduler")["_class_name"], "PNDMScheduler");
  EXPECT_TRUE(configs.count("model_index"));

  WeightSource inpaint;
  add_shape(inpaint, "model.diffusion_model.input_blocks.0.0.weight", {320, 9, 3, 3});
  EXPECT_EQ(tide::pipeline::single_file_configs(inpaint, Family::SD1).at("unet")["in_channels"], 9);

  ck.set_metadata("config.unet", R"({"layers_per_block": 1})");
  ck.set_metadata("config.scheduler", R"({"_class_name": "DDIMScheduler"})");
  configs = tide::pipeline::single_file_configs(ck, Family::SD1);
  EXPECT_EQ(configs.at("unet"), json({{"layers_per_block", 1}}));
  EXPECT_EQ(configs.at("scheduler")["_class_name"], "DDIMScheduler");
  ck.set_metadata("config.vae", "{not json");
  EXPECT_NE(error_of([&] { tide::pipeline::single_file_configs(ck, Family::SD1); }).find("config.vae"), std::string::npos);
}

TEST(Presets, ConfigsOfTheReleasedModels) {
  EXPECT_EQ(presets::preset_names(), (std::vector<std::string>{"sd15", "sd21", "sdxl"}));
  EXPECT_EQ(presets::preset_config("sd15", "unet")["cross_attention_dim"], 768);
  EXPECT_EQ(presets::preset_config("sd21", "unet")["attention_head_dim"], json({5, 10, 20, 20}));
  EXPECT_EQ(presets::preset_config("sd21", "scheduler")["prediction_type"], "v_prediction");
  EXPECT_EQ(presets::preset_config("sd21", "text_encoder")["num_hidden_layers"], 23);
  EXPECT_EQ(presets::preset_config("sd21", "vae")["sample_size"], 768);
  EXPECT_EQ(presets::preset_config("sdxl", "unet")["transformer_layers_per_block"], json({1, 2, 10}));
  EXPECT_EQ(presets::preset_config("sdxl", "vae")["scaling_factor"], 0.13025);
  EXPECT_EQ(presets::preset_config("sdxl", "text_encoder_2")["architectures"][0], "CLIPTextModelWithProjection");
  EXPECT_EQ(presets::preset_config("sdxl", "tokenizer_2")["pad_token"], "!");
  EXPECT_EQ(presets::preset_config("sd15", "tokenizer")["pad_token"], "<|endoftext|>");
  EXPECT_EQ(presets::preset_components("sdxl").size(), 8u);
  EXPECT_NE(error_of([] { presets::preset_config("sd3", "unet"); }).find("sd3"), std::string::npos);
  EXPECT_NE(error_of([] { presets::preset_config("sd15", "text_encoder_2"); }).find("text_encoder_2"), std::string::npos);
  // The model classes accept them.
  for (const auto& name : presets::preset_names()) {
    EXPECT_NO_THROW(tide::models::UNet2DConditionConfig::from_json(presets::preset_config(name, "unet"))) << name;
    EXPECT_NO_THROW(tide::models::AutoencoderKLConfig::from_json(presets::preset_config(name, "vae"))) << name;
    EXPECT_NO_THROW(tide::models::ClipTextConfig::from_json(presets::preset_config(name, "text_encoder"))) << name;
  }
}

// The configs and weights of a diffusers folder.
std::map<std::string, json> folder_configs(const fs::path& dir, const std::vector<std::string>& components) {
  std::map<std::string, json> configs;
  for (const auto& c : components) configs[c] = tide::io::read_json(dir / c / "config.json");
  configs["scheduler"] = tide::io::read_json(dir / "scheduler" / "scheduler_config.json");
  configs["model_index"] = tide::io::read_json(dir / "model_index.json");
  return configs;
}

TEST(SingleFileRoundTrip, TinySd1DiffusersToSingleFileAndBack) {
  tide::testing::TempDir tmp;
  const fs::path dir = tide::testing::make_tiny_pipeline(tmp / "model");
  const auto names = tide::pipeline::family_components(Family::SD1);
  std::map<std::string, WeightSource> components;
  for (const auto& c : names) components[c] = WeightSource::from_component_dir(dir / c);
  const auto configs = folder_configs(dir, names);
  ASSERT_EQ(tide::pipeline::family_of_configs(configs), Family::SD1);

  const fs::path file = tmp / "tiny.safetensors";
  tide::pipeline::write_single_file(file, Family::SD1, components, configs);
  const tide::io::SafetensorsFile written(file);
  EXPECT_TRUE(written.contains("model.diffusion_model.input_blocks.1.1.proj_in.weight"));
  EXPECT_TRUE(written.contains("first_stage_model.decoder.mid.attn_1.q.weight"));
  EXPECT_TRUE(written.contains("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
  EXPECT_EQ(written.entry("first_stage_model.decoder.mid.attn_1.q.weight").shape.size(), 4u);

  const auto model = tide::pipeline::read_single_file(file);
  EXPECT_EQ(model.family, Family::SD1);
  EXPECT_EQ(model.configs, configs);
  for (const auto& c : names) {
    const auto& before = components.at(c);
    const auto& after = model.components.at(c);
    EXPECT_EQ(after.names(), before.names()) << c;
    for (const auto& name : before.names())
      EXPECT_TRUE(at::equal(after.tensor(name), before.tensor(name))) << c << " " << name;
  }
  // The models load from it.
  tide::models::UNet2DConditionModel unet(tide::models::UNet2DConditionConfig::from_json(model.configs.at("unet")));
  EXPECT_NO_THROW(tide::io::load_module_weights(*unet, model.components.at("unet"), "unet"));

  // Half precision on request.
  tide::pipeline::write_single_file(tmp / "half.safetensors", Family::SD1, components, configs, at::kHalf);
  const auto half = tide::pipeline::read_single_file(tmp / "half.safetensors");
  EXPECT_EQ(half.components.at("vae").dtype("decoder.conv_in.weight"), at::kHalf);
}

}  // namespace
