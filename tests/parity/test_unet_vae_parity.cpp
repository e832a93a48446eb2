// UNet2DConditionModel and AutoencoderKL against diffusers 0.35 outputs for the tiny pipelines
// ($TIDE_FIXTURES/reference), and the full-size SD 1.5 / 2.1 / XL parameter layouts against the
// checkpoint manifests ($TIDE_FIXTURES/manifests).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/io/weights.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/unet2d_condition.h"
#include "tide/nn/layers.h"

namespace {

using tide::io::read_npy;
using tide::models::AutoencoderKL;
using tide::models::AutoencoderKLConfig;
using tide::models::UNet2DConditionConfig;
using tide::models::UNet2DConditionModel;
using tide::testing::pipeline_dir;
using tide::testing::reference_case;

constexpr double kTolerance = 1e-4;

UNet2DConditionModel load_unet(const std::string& pipeline) {
  const auto dir = pipeline_dir(pipeline) / "unet";
  tide::nn::NoInitGuard no_init;  // every parameter is loaded next
  UNet2DConditionModel unet(UNet2DConditionConfig::from_json(tide::io::read_json(dir / "config.json")));
  tide::io::load_module_weights(*unet, tide::io::WeightSource::from_component_dir(dir), "unet");
  unet->eval();
  return unet;
}

AutoencoderKL load_vae(const std::string& pipeline) {
  const auto dir = pipeline_dir(pipeline) / "vae";
  tide::nn::NoInitGuard no_init;
  AutoencoderKL vae(AutoencoderKLConfig::from_json(tide::io::read_json(dir / "config.json")));
  tide::io::load_module_weights(*vae, tide::io::WeightSource::from_component_dir(dir), "vae");
  vae->eval();
  return vae;
}

at::Tensor optional_npy(const std::filesystem::path& path) {
  return std::filesystem::exists(path) ? read_npy(path) : at::Tensor();
}

using ComponentCase = tide::testing::ReferenceCase;

class UnetVaeComponents : public ::testing::TestWithParam<ComponentCase> {};
// Without fixtures there are no cases: the *Cases tests below report the skip.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(UnetVaeComponents);

TEST_P(UnetVaeComponents, UnetOutput) {
  TIDE_REQUIRE_FIXTURES();
  torch::NoGradGuard no_grad;
  const auto dir = reference_case(GetParam().id);
  UNet2DConditionModel unet = load_unet(GetParam().pipeline);
  const double timestep = read_npy(dir / "unet_timestep.npy").to(at::kDouble).item<double>();
  const at::Tensor out = unet->forward(read_npy(dir / "unet_sample.npy"), timestep,
                                       read_npy(dir / "unet_encoder_hidden_states.npy"),
                                       optional_npy(dir / "unet_text_embeds.npy"), optional_npy(dir / "unet_time_ids.npy"));
  const at::Tensor expected = read_npy(dir / "unet_out.npy");
  EXPECT_TENSOR_NEAR(out, expected, kTolerance);
  std::cout << "[ unet max abs diff " << GetParam().id << ": " << tide::testing::max_abs_diff(out, expected) << " ]\n";
}

TEST_P(UnetVaeComponents, VaeDecode) {
  TIDE_REQUIRE_FIXTURES();
  torch::NoGradGuard no_grad;
  const auto dir = reference_case(GetParam().id);
  AutoencoderKL vae = load_vae(GetParam().pipeline);
  const at::Tensor out = vae->decode(read_npy(dir / "vae_decode_in.npy"));
  const at::Tensor expected = read_npy(dir / "vae_decode_out.npy");
  EXPECT_TENSOR_NEAR(out, expected, kTolerance);
  std::cout << "[ vae decode max abs diff " << GetParam().id << ": " << tide::testing::max_abs_diff(out, expected)
            << " ]\n";
}

TEST_P(UnetVaeComponents, VaeEncode) {
  TIDE_REQUIRE_FIXTURES();
  torch::NoGradGuard no_grad;
  const auto dir = reference_case(GetParam().id);
  AutoencoderKL vae = load_vae(GetParam().pipeline);
  const auto moments = vae->encode(read_npy(dir / "vae_encode_in.npy"));
  const at::Tensor mean = read_npy(dir / "vae_encode_mean.npy"), logvar = read_npy(dir / "vae_encode_logvar.npy");
  EXPECT_TENSOR_NEAR(moments.mean, mean, kTolerance);
  EXPECT_TENSOR_NEAR(moments.logvar, logvar, kTolerance);
  std::cout << "[ vae encode max abs diff " << GetParam().id << ": mean "
            << tide::testing::max_abs_diff(moments.mean, mean) << ", logvar "
            << tide::testing::max_abs_diff(moments.logvar, logvar) << " ]\n";
}

// Every component dump of the reference set, found when the tests run.
INSTANTIATE_TEST_SUITE_P(Tiny, UnetVaeComponents, ::testing::ValuesIn(tide::testing::reference_cases("unet_out.npy")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param.id); });

// The first UNet call of a text-to-image run: CFG batch, scheduler-scaled sample, float timestep,
// non-square sizes.
class UnetPipelineStep0 : public ::testing::TestWithParam<ComponentCase> {};
// Without fixtures there are no cases: the *Cases tests below report the skip.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(UnetPipelineStep0);

TEST_P(UnetPipelineStep0, FirstUnetCall) {
  TIDE_REQUIRE_FIXTURES();
  torch::NoGradGuard no_grad;
  const auto dir = reference_case(GetParam().id);
  UNet2DConditionModel unet = load_unet(GetParam().pipeline);
  const double timestep = read_npy(dir / "unet_call_timesteps.npy").to(at::kDouble)[0].item<double>();
  const at::Tensor out = unet->forward(read_npy(dir / "unet_step0_sample.npy"), timestep,
                                       read_npy(dir / "unet_step0_encoder_hidden_states.npy"),
                                       optional_npy(dir / "unet_step0_text_embeds.npy"),
                                       optional_npy(dir / "unet_step0_time_ids.npy"));
  const at::Tensor expected = read_npy(dir / "unet_step0_out.npy");
  EXPECT_TENSOR_NEAR(out, expected, kTolerance);
  std::cout << "[ unet step0 max abs diff " << GetParam().id << ": " << tide::testing::max_abs_diff(out, expected)
            << " ]\n";
}

INSTANTIATE_TEST_SUITE_P(Tiny, UnetPipelineStep0,
                         ::testing::ValuesIn(tide::testing::reference_cases("unet_step0_out.npy")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param.id); });

TEST(UnetVaeParityCases, FixturesHoldCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(tide::testing::reference_cases("unet_out.npy").empty());
  EXPECT_FALSE(tide::testing::reference_cases("unet_step0_out.npy").empty());
}

// ---- Full-size layouts: every parameter of the module is a checkpoint tensor of the same shape, and
// every checkpoint tensor is a parameter. ----

using Layout = std::map<std::string, std::vector<int64_t>>;

// Manifest lines: `<name> <dtype> [d0,d1,...]`.
Layout read_manifest(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  Layout out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name, dtype, shape;
    fields >> name >> dtype >> shape;
    if (name.empty()) continue;
    std::vector<int64_t> dims;
    std::string inner = shape.substr(1, shape.size() - 2);
    std::istringstream parts(inner);
    for (std::string d; std::getline(parts, d, ',');)
      if (!d.empty()) dims.push_back(std::stoll(d));
    out[name] = dims;
  }
  return out;
}

Layout module_layout(torch::nn::Module& module) {
  Layout out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

void expect_same_layout(const Layout& actual, const Layout& manifest) {
  for (const auto& [name, shape] : actual) {
    auto it = manifest.find(name);
    if (it == manifest.end()) {
      ADD_FAILURE() << "module parameter not in the checkpoint: " << name;
      continue;
    }
    EXPECT_EQ(shape, it->second) << name;
  }
  for (const auto& [name, shape] : manifest)
    if (!actual.count(name)) ADD_FAILURE() << "checkpoint tensor missing from the module: " << name;
}

int64_t parameter_count(const Layout& layout) {
  int64_t n = 0;
  for (const auto& [name, shape] : layout) {
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    n += size;
  }
  return n;
}

// Builds the full-size model without initializing it: only names and shapes are read, so the
// (up to 10 GB) parameter memory is never touched.
template <typename Model, typename Config>
Layout full_size_layout(const Config& config) {
  tide::nn::NoInitGuard no_init;
  Model model(config);
  return module_layout(*model);
}

struct ManifestCase {
  std::string preset;
  int64_t unet_parameters, vae_parameters;
};

class FullSizeLayout : public ::testing::TestWithParam<ManifestCase> {};

TEST_P(FullSizeLayout, UnetMatchesManifest) {
  TIDE_REQUIRE_FIXTURES();
  const auto manifest = read_manifest(tide::testing::fixtures_dir() / "manifests" / GetParam().preset / "unet.txt");
  const Layout layout = full_size_layout<UNet2DConditionModel>(UNet2DConditionConfig::preset(GetParam().preset));
  expect_same_layout(layout, manifest);
  EXPECT_EQ(parameter_count(layout), GetParam().unet_parameters);
}

TEST_P(FullSizeLayout, VaeMatchesManifest) {
  TIDE_REQUIRE_FIXTURES();
  const auto manifest = read_manifest(tide::testing::fixtures_dir() / "manifests" / GetParam().preset / "vae.txt");
  const Layout layout = full_size_layout<AutoencoderKL>(AutoencoderKLConfig::preset(GetParam().preset));
  expect_same_layout(layout, manifest);
  EXPECT_EQ(parameter_count(layout), GetParam().vae_parameters);
}

INSTANTIATE_TEST_SUITE_P(Presets, FullSizeLayout,
                         ::testing::Values(ManifestCase{"sd15", 859520964, 83653863},
                                           ManifestCase{"sd21", 865910724, 83653863},
                                           ManifestCase{"sdxl", 2567463684, 83653863}),
                         [](const auto& info) { return info.param.preset; });

}  // namespace
