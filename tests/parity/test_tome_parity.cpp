// Token Merging against tomesd itself (features/tome): the first merged block's matching (indices tomesd
// computed, draw for draw from one generator) and output, then whole runs with ToMe on.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/nn/token_merging.h"
#include "tide/nn/transformer_2d.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::feature_case;
using tide::testing::feature_cases;
using tide::testing::max_abs_diff;

nn::TokenMergingOptions tome_options(const nlohmann::json& args) {
  nn::TokenMergingOptions o;
  o.ratio = args["ratio"].get<double>();
  o.max_downsample = args["max_downsample"].get<int>();
  o.sx = args["sx"].get<int>();
  o.sy = args["sy"].get<int>();
  o.use_rand = args["use_rand"].get<bool>();
  o.merge_attn = args["merge_attn"].get<bool>();
  o.merge_crossattn = args["merge_crossattn"].get<bool>();
  o.merge_mlp = args["merge_mlp"].get<bool>();
  return o;
}

class TomeParity : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TomeParity);

TEST_P(TomeParity, MatchesTomesd) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path dir = feature_case("tome", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(c["pipeline"].get<std::string>()));
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  r.num_images = c["num_images_per_prompt"].get<int>();
  r.scheduler = tide::testing::scheduler_cli_name(c["scheduler"].get<std::string>(), c["scheduler_kwargs"]);
  r.tome = tome_options(c["tome_args"]);
  r.tome_seed = c["tome_global_seed"].get<uint64_t>();
  const int64_t f = pipe->vae_scale_factor();

  // The first merged block of the first UNet call: tomesd's indices, then the block's output.
  if (fs::exists(dir / "tome_block0_input.npy")) {
    const at::Tensor input = io::read_npy(dir / "tome_block0_input.npy");  // [B, N, C]
    nn::TokenMerging tome(r.tome, *r.tome_seed);
    tome.set_latent_size(r.height / f, r.width / f);
    const auto m = tome.match(input);
    ASSERT_TRUE(m.active());
    auto expected = [&](const std::string& name) { return io::read_npy(dir / ("tome_block0_" + name + ".npy")); };
    // The cells' destinations and the src/dst split are exact; torch's argsort is not stable, so among sources
    // of equal similarity the order may differ: the unmerged set and the merged (source, destination) pairs
    // must be equal.
    for (const auto& [name, actual] : std::vector<std::pair<std::string, at::Tensor>>{
             {"rand_idx", m.rand_idx}, {"a_idx", m.a_idx}, {"b_idx", m.b_idx}})
      EXPECT_TRUE(at::equal(actual, expected(name))) << name;
    EXPECT_TRUE(at::equal(std::get<0>(m.unm_idx.sort(1)), std::get<0>(expected("unm_idx").sort(1)))) << "unmerged set";
    auto pairs = [](const at::Tensor& src, const at::Tensor& dst) {  // [B, r, 1] each -> sorted src * 1e6 + dst
      return std::get<0>((src * 1000000 + dst).sort(1));
    };
    EXPECT_TRUE(at::equal(pairs(m.src_idx, m.dst_idx), pairs(expected("src_idx"), expected("dst_idx")))) << "merged pairs";

    const std::string block_name = c["tome_first_unet_call"][0]["block"].get<std::string>();
    auto* block = pipe->unet()->named_modules()[block_name]->as<nn::BasicTransformerBlockImpl>();
    ASSERT_NE(block, nullptr) << block_name;
    at::Tensor context = io::read_npy(dir / "prompt_embeds.npy");
    if (r.guidance > 1) context = at::cat({io::read_npy(dir / "negative_prompt_embeds.npy"), context});
    nn::TokenMerging fresh(r.tome, *r.tome_seed);
    fresh.set_latent_size(r.height / f, r.width / f);
    nn::TokenMergingScope scope(&fresh);
    c10::InferenceMode inference;
    EXPECT_TENSOR_NEAR(block->forward(input, context), io::read_npy(dir / "tome_block0_output.npy"), 1e-4);
  }

  // The whole run. ToMe's choices are hard: a float-level difference can flip one and the trajectory jumps
  // (the fixtures' own 1-vs-2-thread figures show it), so the final latents get a tolerance well below what
  // ToMe itself changes.
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  std::vector<double> per_step;
  auto result = pipe->generate(r, [&](const pipeline::StepInfo& s) { per_step.push_back(max_abs_diff(s.latents, steps[s.index])); });
  ASSERT_FALSE(per_step.empty());
  // tide's UNet rounds differently from torch's (~1e-6); where two sources are that close to the r-th most
  // similar, one block takes the other and the run moves by a fraction of ToMe's own effect (seen in
  // tome_sd1_r05_rand_md1: 0.044 after the first step). The tolerance is a quarter of that effect, so a run
  // without ToMe, or with other choices throughout, fails; the first block above is checked exactly.
  const double effect = c["effect_vs_unpatched"]["latents_final_max_abs_diff"].get<double>();
  const double tolerance = effect / 4;
  EXPECT_LE(per_step[0], tolerance) << "first step";
  const double final_diff = max_abs_diff(result.latents, io::read_npy(dir / "latents_final.npy"));
  EXPECT_LE(final_diff, tolerance) << "ToMe itself changes the latents by " << effect;
  std::printf("%s: first step %.3g, final latents %.3g (tolerance %.3g, ToMe's effect %.3g)\n", GetParam().c_str(),
              per_step[0], final_diff, tolerance, effect);
  if (final_diff < 1e-3) {
    for (int i = 0; i < r.num_images; ++i) {
      const auto reference = io::read_png(dir / ("image_" + std::to_string(i) + ".png")).rgb8;
      EXPECT_LE((reference.to(at::kInt) - result.images[i].to(at::kInt)).abs().max().item<int>(), 2) << "image " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TomeParity, ::testing::ValuesIn(feature_cases("tome")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

TEST(TomeParityCases, FixturesHoldCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(feature_cases("tome").empty()) << "no case in features/tome";
}

}  // namespace
