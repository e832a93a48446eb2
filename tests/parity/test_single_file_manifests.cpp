// Single-file name tables and built-in presets against the tensor manifests of the full-size models
// (fixtures/manifests: `<name> <dtype> [<shape>]` per line), shapes only — no full-size weights are read —
// and real tensors through the fixture's tiny SD1, SD2 and SDXL pipelines.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/clip_text.h"
#include "tide/models/presets.h"
#include "tide/models/unet2d_condition.h"
#include "tide/pipeline/single_file.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using tide::io::WeightSource;
using tide::pipeline::Family;
using Shapes = std::map<std::string, std::vector<int64_t>>;

Shapes read_manifest(const fs::path& file) {
  std::ifstream in(file);
  EXPECT_TRUE(in.good()) << file;
  Shapes shapes;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name, dtype, shape;
    if (!(fields >> name >> dtype >> shape)) continue;
    std::vector<int64_t> dims;
    std::istringstream list(shape.substr(1, shape.size() - 2));  // "[77,768]"
    for (std::string dim; std::getline(list, dim, ',');) dims.push_back(std::stoll(dim));
    shapes[name] = dims;
  }
  return shapes;
}

fs::path manifest(const std::string& name) { return tide::testing::fixtures_dir() / "manifests" / name; }

// Tensors with only a shape: the tables are checked without reading anything.
WeightSource fake_source(const Shapes& shapes) {
  WeightSource source;
  for (const auto& [name, shape] : shapes)
    source.add_derived(name, {shape, at::kHalf, [name = name]() -> at::Tensor {
                                ADD_FAILURE() << "tensor " << name << " was read";
                                return {};
                              }});
  return source;
}

Shapes shapes_of(const WeightSource& source) {
  Shapes shapes;
  for (const auto& name : source.names()) shapes[name] = source.shape(name);
  return shapes;
}

// Names only in `actual` / only in `expected`, and shape differences, a few of each.
void expect_same_shapes(const Shapes& actual, const Shapes& expected, const std::string& what) {
  std::vector<std::string> problems;
  for (const auto& [name, shape] : expected) {
    auto it = actual.find(name);
    if (it == actual.end())
      problems.push_back("missing " + name);
    else if (it->second != shape)
      problems.push_back("shape differs: " + name);
  }
  for (const auto& [name, shape] : actual)
    if (!expected.count(name)) problems.push_back("unexpected " + name);
  std::string list;
  for (size_t i = 0; i < problems.size() && i < 10; ++i) list += "\n  " + problems[i];
  EXPECT_TRUE(problems.empty()) << what << ": " << problems.size() << " problem(s)" << list;
}

std::map<std::string, json> preset_configs(const std::string& preset, Family family) {
  std::map<std::string, json> configs;
  for (const auto& c : tide::pipeline::family_components(family)) configs[c] = tide::models::presets::preset_config(preset, c);
  return configs;
}

TEST(SingleFileManifests, Sd15SingleFileMapsOntoTheDiffusersManifests) {
  TIDE_REQUIRE_FIXTURES();
  const WeightSource checkpoint = fake_source(read_manifest(manifest("sd15-single.txt")));
  ASSERT_EQ(tide::pipeline::detect_family(checkpoint), Family::SD1);
  const auto configs = tide::pipeline::single_file_configs(checkpoint, Family::SD1);
  EXPECT_TRUE(tide::pipeline::unmapped_tensors(checkpoint, Family::SD1, configs).empty());
  const auto components = tide::pipeline::components_from_single_file(checkpoint, Family::SD1, configs);
  for (const auto& c : tide::pipeline::family_components(Family::SD1))
    expect_same_shapes(shapes_of(components.at(c)), read_manifest(manifest("sd15/" + c + ".txt")), "sd15 " + c);

  // And back: the diffusers manifests written as a single file give exactly the converter's file.
  std::map<std::string, WeightSource> diffusers;
  for (const auto& c : tide::pipeline::family_components(Family::SD1))
    diffusers[c] = fake_source(read_manifest(manifest("sd15/" + c + ".txt")));
  expect_same_shapes(shapes_of(tide::pipeline::single_file_source(Family::SD1, diffusers, configs)),
                     read_manifest(manifest("sd15-single.txt")), "sd15 single file");
}

// SD2 and SDXL have no single-file manifest: write the diffusers manifests in the original layout, detect
// the family from that, and map back.
void round_trip_manifests(const std::string& preset, Family family) {
  std::map<std::string, WeightSource> diffusers;
  for (const auto& c : tide::pipeline::family_components(family))
    diffusers[c] = fake_source(read_manifest(manifest(preset + "/" + c + ".txt")));
  const auto configs = preset_configs(preset, family);
  const WeightSource single = fake_source(shapes_of(tide::pipeline::single_file_source(family, diffusers, configs)));
  ASSERT_EQ(tide::pipeline::detect_family(single), family) << preset;
  EXPECT_TRUE(tide::pipeline::unmapped_tensors(single, family, configs).empty()) << preset;
  const auto back = tide::pipeline::components_from_single_file(single, family);  // preset configs
  for (const auto& c : tide::pipeline::family_components(family))
    expect_same_shapes(shapes_of(back.at(c)), shapes_of(diffusers.at(c)), preset + " " + c);
}

TEST(SingleFileManifests, Sd21RoundTripsThroughTheOriginalLayout) {
  TIDE_REQUIRE_FIXTURES();
  round_trip_manifests("sd21", Family::SD2);
  std::map<std::string, WeightSource> diffusers;
  for (const auto& c : tide::pipeline::family_components(Family::SD2))
    diffusers[c] = fake_source(read_manifest(manifest("sd21/" + c + ".txt")));
  const auto single = shapes_of(tide::pipeline::single_file_source(Family::SD2, diffusers, preset_configs("sd21", Family::SD2)));
  EXPECT_EQ(single.at("cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"),
            (std::vector<int64_t>{3072, 1024}));
  EXPECT_EQ(single.at("cond_stage_model.model.positional_embedding"), (std::vector<int64_t>{77, 1024}));
  EXPECT_EQ(single.at("first_stage_model.encoder.mid.attn_1.proj_out.weight"), (std::vector<int64_t>{512, 512, 1, 1}));
  EXPECT_EQ(single.at("model.diffusion_model.output_blocks.8.2.conv.weight"), (std::vector<int64_t>{640, 640, 3, 3}));
}

TEST(SingleFileManifests, SdxlRoundTripsThroughTheOriginalLayout) {
  TIDE_REQUIRE_FIXTURES();
  round_trip_manifests("sdxl", Family::SDXL);
  std::map<std::string, WeightSource> diffusers;
  for (const auto& c : tide::pipeline::family_components(Family::SDXL))
    diffusers[c] = fake_source(read_manifest(manifest("sdxl/" + c + ".txt")));
  const auto single =
      shapes_of(tide::pipeline::single_file_source(Family::SDXL, diffusers, preset_configs("sdxl", Family::SDXL)));
  EXPECT_EQ(single.at("conditioner.embedders.1.model.text_projection"), (std::vector<int64_t>{1280, 1280}));
  EXPECT_EQ(single.at("conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias"),
            (std::vector<int64_t>{3840}));
  EXPECT_EQ(single.at("model.diffusion_model.label_emb.0.0.weight"), (std::vector<int64_t>{1280, 2816}));
  EXPECT_EQ(single.at("model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"),
            (std::vector<int64_t>{1280, 2048}));
  EXPECT_TRUE(single.count("conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight"));
}

// Real tensors: the fixture's tiny pipelines written as single files (configs in the metadata) read back
// bit-identical, for all three layouts.
TEST(SingleFileManifests, TinyPipelinesRoundTripWithTheirValues) {
  TIDE_REQUIRE_FIXTURES();
  for (const std::string name : {"sd1-tiny", "sd2-tiny", "sdxl-tiny"}) {
    const fs::path dir = tide::testing::pipeline_dir(name);
    std::map<std::string, json> configs;
    std::map<std::string, WeightSource> components;
    for (const auto& c : {"unet", "vae", "text_encoder", "text_encoder_2"}) {
      if (!fs::exists(dir / c)) continue;
      configs[c] = tide::io::read_json(dir / c / "config.json");
      components[c] = WeightSource::from_component_dir(dir / c);
    }
    configs["scheduler"] = tide::io::read_json(dir / "scheduler/scheduler_config.json");
    configs["model_index"] = tide::io::read_json(dir / "model_index.json");
    const Family family = tide::pipeline::family_of_configs(configs);
    EXPECT_EQ(tide::pipeline::family_name(family), name.substr(0, name.find('-'))) << name;

    tide::testing::TempDir tmp;
    tide::pipeline::write_single_file(tmp / "model.safetensors", family, components, configs);
    const auto model = tide::pipeline::read_single_file(tmp / "model.safetensors");
    EXPECT_EQ(model.family, family) << name;
    EXPECT_EQ(model.configs, configs) << name;
    for (const auto& [c, before] : components) {
      const auto& after = model.components.at(c);
      EXPECT_EQ(after.names(), before.names()) << name << " " << c;
      for (const auto& t : before.names())
        if (after.contains(t)) {
          EXPECT_TRUE(at::equal(after.tensor(t), before.tensor(t))) << name << " " << c << " " << t;
        }
    }
  }
}

// Parameters and buffers of a module, by name.
Shapes module_shapes(torch::nn::Module& module) {
  Shapes shapes;
  for (const auto& p : module.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : module.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
  return shapes;
}

// Models built from the presets have exactly the manifests' tensors. Parameters are allocated in bfloat16
// to halve the memory (the SD 1.5 UNet is still 1.7 GB); the SDXL UNet (5 GB even so) is built at a tenth
// of its width instead, which keeps every name but not the shapes.
TEST(SingleFileManifests, PresetModelsHaveTheManifestTensors) {
  TIDE_REQUIRE_FIXTURES();
  namespace m = tide::models;
  const auto default_dtype = at::get_default_dtype();
  at::set_default_dtype(caffe2::TypeMeta::Make<at::BFloat16>());
  struct Restore {
    caffe2::TypeMeta dtype;
    ~Restore() { at::set_default_dtype(dtype); }
  } restore{default_dtype};

  for (const std::string preset : {"sd15", "sd21", "sdxl"}) {
    const Family family = preset == "sd15" ? Family::SD1 : preset == "sd21" ? Family::SD2 : Family::SDXL;
    for (const auto& c : tide::pipeline::family_components(family)) {
      const json config = m::presets::preset_config(preset, c);
      const Shapes expected = read_manifest(manifest(preset + "/" + c + ".txt"));
      if (c == "vae") {
        m::AutoencoderKL vae(m::AutoencoderKLConfig::from_json(config));
        expect_same_shapes(module_shapes(*vae), expected, preset + " vae");
      } else if (c != "unet") {
        m::ClipTextModel text(m::ClipTextConfig::from_json(config));
        expect_same_shapes(module_shapes(*text), expected, preset + " " + c);
      } else if (preset != "sdxl") {
        m::UNet2DConditionModel unet(m::UNet2DConditionConfig::from_json(config));
        expect_same_shapes(module_shapes(*unet), expected, preset + " unet");
      } else {
        json narrow = config;
        narrow["block_out_channels"] = {32, 64, 128};
        narrow["cross_attention_dim"] = 64;
        narrow["attention_head_dim"] = {1, 2, 4};
        m::UNet2DConditionModel unet(m::UNet2DConditionConfig::from_json(narrow));
        Shapes names_only;
        for (const auto& [name, shape] : module_shapes(*unet)) names_only[name] = expected.count(name) ? expected.at(name) : shape;
        expect_same_shapes(names_only, expected, "sdxl unet (names)");
      }
    }
  }
}

}  // namespace
