// An LCM-LoRA style run: a kohya LoCon file (attention, feed-forward, proj_in/out, resnet convs, time_emb_proj,
// shortcuts, text encoder) merged into sd1-tiny and sampled with the LCM scheduler in 4 steps at guidance 1.
// diffusers has no reference run of this combination, so the reference is the same pipeline with the file's
// deltas merged here, by the kohya rule the fixture documents (features/README.md "lora"), without tide's
// LoRA code; both must give the same latents (tests/cli/test_cli_fewstep.cpp runs the same from the CLI).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/io/safetensors.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;

constexpr const char* kCase = "lora_sd1_locon_m06";
constexpr double kMultiplier = 0.6;
constexpr uint64_t kSeed = 302;
constexpr const char* kPrompt = "a green dragon flying over a village";
// The two merges differ only in float32 rounding of the deltas (~1e-7 of a weight); 4 LCM steps keep that
// far below this, while the LoRA moves the latents by ~20% of their range.
constexpr double kRelativeTolerance = 1e-5;

fs::path case_dir() { return tide::testing::feature_case("lora", kCase); }
fs::path lora_file() { return case_dir() / "lora.safetensors"; }


pipeline::GenerationRequest lcm_request() {
  pipeline::GenerationRequest r;
  r.prompt = kPrompt;
  r.width = 64;
  r.height = 64;
  r.steps = 4;
  r.guidance = 1;
  r.seed = kSeed;
  r.scheduler = "lcm";
  return r;
}

std::unique_ptr<pipeline::StableDiffusionPipeline> load_sd1_tiny() {
  return pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir("sd1-tiny"));
}

// "unet.down_blocks.0.resnets.0.conv1.weight" -> that parameter, for the UNet and the text encoder.
std::map<std::string, at::Tensor> parameters_by_name(pipeline::StableDiffusionPipeline& pipe) {
  std::map<std::string, at::Tensor> out;
  const std::map<std::string, torch::nn::Module*> components = {{"unet", pipe.unet().get()},
                                                                {"text_encoder", pipe.text_encoder().get()}};
  for (const auto& [component, module] : components)
    for (const auto& p : module->named_parameters(/*recurse=*/true)) out.emplace(component + "." + p.key(), p.value());
  return out;
}

// kohya's LoRAModule.merge_to delta for one file entry, multiplier included: m · alpha/rank · up @ down, the
// convolutions' factors flattened to matrices and the product reshaped to the weight's [out, in, kh, kw].
at::Tensor kohya_delta(const at::Tensor& down, const at::Tensor& up, double alpha, double multiplier,
                       at::IntArrayRef weight_shape) {
  const int64_t rank = down.size(0);
  const at::Tensor up2 = up.to(at::kDouble).reshape({up.size(0), rank});  // [out, r]
  const at::Tensor down2 = down.to(at::kDouble).reshape({rank, -1});      // [r, in · kh · kw]
  return (at::matmul(up2, down2) * (multiplier * alpha / rank)).reshape(weight_shape);
}

// Merges every entry of the LoCon file into `pipe` (W' = W + delta), finding each entry's module through the
// case's `modules` list. Returns the deltas added, by parameter name.
std::map<std::string, at::Tensor> merge_by_hand(pipeline::StableDiffusionPipeline& pipe, const nlohmann::json& c,
                                                double multiplier) {
  io::SafetensorsFile file(lora_file());
  auto params = parameters_by_name(pipe);
  std::map<std::string, at::Tensor> deltas;
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  for (const auto& m : c["modules"]) {
    const std::string name = m["lora_name"].get<std::string>();
    const std::string param = m["module"].get<std::string>() + ".weight";
    const at::Tensor down = file.tensor(name + ".lora_down.weight");
    const at::Tensor up = file.tensor(name + ".lora_up.weight");
    const double alpha = file.tensor(name + ".alpha").to(at::kDouble).item<double>();
    used.insert({name + ".lora_down.weight", name + ".lora_up.weight", name + ".alpha"});
    EXPECT_NEAR(alpha / down.size(0), m["scale"].get<double>(), 1e-12) << name;
    auto it = params.find(param);
    if (it == params.end()) {
      ADD_FAILURE() << name << ": no parameter " << param;
      continue;
    }
    at::Tensor& weight = it->second;
    const at::Tensor delta = kohya_delta(down, up, alpha, multiplier, weight.sizes());
    const bool channels_last =
        weight.dim() == 4 && !weight.is_contiguous() && weight.is_contiguous(at::MemoryFormat::ChannelsLast);
    const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    const at::Tensor merged = (weight.detach().to(at::kDouble) + delta).to(weight.scalar_type());
    // New storage, not an in-place add: convolutions keep other-layout copies of a weight keyed on its address.
    weight.set_data(merged.contiguous(layout).clone(layout));
    deltas.emplace(param, delta.to(at::kFloat));
  }
  EXPECT_EQ(used.size(), file.entries().size()) << "tensors of the file the case's module list does not name";
  return deltas;
}

class LcmLora : public ::testing::Test {
 protected:
  void SetUp() override {
    TIDE_REQUIRE_FIXTURES();
    if (!fs::exists(lora_file())) GTEST_SKIP() << "fixture case " << kCase << " not present";
  }
};

// tide's LoRA loading and the LCM scheduler together: the same latents as the hand-merged weights, and a
// LoRA effect far above the tolerance (so a LoRA that was not applied fails).
TEST_F(LcmLora, MatchesTheMergedWeightsUnderLcm) {
  const auto c = io::read_json(case_dir() / "case.json");
  ASSERT_EQ(c["format"].get<std::string>(), "locon");
  ASSERT_EQ(c["pipeline"].get<std::string>(), "sd1-tiny");
  const auto request = lcm_request();

  auto by_hand = load_sd1_tiny();
  const auto plain = by_hand->generate(request);
  const auto base = parameters_by_name(*by_hand);
  std::map<std::string, at::Tensor> base_values;
  for (const auto& [name, value] : base) base_values.emplace(name, value.detach().clone());
  const auto deltas = merge_by_hand(*by_hand, c, kMultiplier);
  ASSERT_EQ(deltas.size(), c["modules"].size());
  // The hand merge against the deltas diffusers' side of the fixture added (multiplier included).
  for (const auto& d : c["delta_layers"]) {
    const std::string param = d["component"].get<std::string>() + "." + d["path"].get<std::string>() + ".weight";
    const at::Tensor expected = io::read_npy(case_dir() / d["file"].get<std::string>());
    EXPECT_TENSOR_NEAR(deltas.at(param), expected, 2e-6);
    const at::Tensor added = parameters_by_name(*by_hand).at(param) - base_values.at(param);
    EXPECT_TENSOR_NEAR(added, expected, 2e-6);
    std::printf("hand-merged delta of %s vs the fixture's: max diff %.3g (delta max %.3g)\n", param.c_str(),
                tide::testing::max_abs_diff(added, expected), expected.abs().max().item<double>());
  }
  const auto reference = by_hand->generate(request);

  auto with_lora = load_sd1_tiny();
  with_lora->set_loras({{lora_file(), kMultiplier}});
  ASSERT_EQ(with_lora->loras().size(), 1u);
  // Weight by weight, before running: tide's merge equals the hand merge, and touches nothing else.
  double worst_weight = 0;
  const auto ours = parameters_by_name(*with_lora), hand = parameters_by_name(*by_hand);
  for (const auto& [name, value] : ours) {
    const double diff = tide::testing::max_abs_diff(value, hand.at(name));
    worst_weight = std::max(worst_weight, diff);
    EXPECT_LE(diff, 1e-6) << name;
    if (!deltas.count(name)) {
      EXPECT_TRUE(at::equal(value, base_values.at(name))) << name << " changed";
    }
  }
  const auto result = with_lora->generate(request);

  // Guidance 1: no classifier-free batch, one UNet call of one sample per step.
  EXPECT_FALSE(with_lora->uses_classifier_free_guidance(request.guidance));
  EXPECT_EQ(with_lora->condition(with_lora->resolve(request)).context.size(0), 1) << "conditioning batched for CFG";
  EXPECT_EQ(result.unet_calls, 4);
  EXPECT_EQ(reference.unet_calls, 4);

  const int64_t f = with_lora->vae_scale_factor();
  ASSERT_EQ(result.latents.sizes(), (std::vector<int64_t>{1, 4, 64 / f, 64 / f}));
  const double error = tide::testing::relative_max_error(result.latents, reference.latents);
  const double effect = tide::testing::relative_max_error(plain.latents, reference.latents);
  EXPECT_LE(error, kRelativeTolerance) << "tide's LoRA vs the hand-merged weights under LCM";
  EXPECT_GE(effect, 1000 * kRelativeTolerance) << "the LoRA barely changes the LCM latents";
  const int pixels = (result.images.to(at::kInt) - reference.images.to(at::kInt)).abs().max().item<int>();
  EXPECT_LE(pixels, 1);
  std::printf("%s under lcm, 4 steps, guidance 1: weights max diff %.3g; latents relative error %.3g "
              "(max abs %.3g); LoRA effect %.3g relative; max pixel diff %d\n",
              kCase, worst_weight, error, tide::testing::max_abs_diff(result.latents, reference.latents), effect,
              pixels);
}

}  // namespace
