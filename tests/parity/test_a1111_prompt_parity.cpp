// AUTOMATIC1111's prompt syntax against A1111's own code (features/a1111): the parser on every string of
// parser/case.json, and the whole conditioning (chunks, weights, clip skip, padding) then the run.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/io/safetensors.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/text/a1111_prompt.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::feature_case;
using tide::testing::feature_cases;

std::vector<text::WeightedText> pieces_of(const nlohmann::json& list) {
  std::vector<text::WeightedText> out;
  for (const auto& p : list) out.push_back({p[0].get<std::string>(), p[1].get<double>()});
  return out;
}

std::string show(const std::vector<text::WeightedText>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += "[" + p.text + ": " + std::to_string(p.weight) + "] ";
  return s;
}

TEST(A1111PromptParity, ParserAndChunksMatchA1111) {
  TIDE_REQUIRE_FIXTURES();
  const auto c = io::read_json(feature_case("a1111", "parser") / "case.json");
  const auto tokenizer = text::ClipTokenizer::from_folder(tide::testing::pipeline_dir("sd1-tiny") / "tokenizer");
  text::ChunkingOptions options;
  options.comma_id = *tokenizer.token_id(",</w>");
  int checked = 0;
  for (const auto& s : c["strings"]) {
    const std::string prompt = s["prompt"].get<std::string>();
    SCOPED_TRACE("prompt: " + prompt);
    const auto parsed = text::parse_prompt_attention(prompt);
    // Weights compared exactly: A1111 multiplies them in the same order, in doubles.
    EXPECT_EQ(parsed, pieces_of(s["parse_prompt_attention"])) << show(parsed);
    const auto chunked = text::chunk_prompt(parsed, tokenizer, options);
    const auto& expected = s["sd1_chunks"];
    ASSERT_EQ(chunked.chunks.size(), expected.size());
    for (size_t k = 0; k < expected.size(); ++k) {
      EXPECT_EQ(chunked.chunks[k].tokens, expected[k]["tokens"].get<std::vector<int64_t>>()) << "chunk " << k;
      EXPECT_EQ(chunked.chunks[k].multipliers, expected[k]["multipliers"].get<std::vector<double>>()) << "chunk " << k;
    }
    EXPECT_EQ(chunked.token_count, s["sd1_token_count"].get<int>());
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

// A cond case: A1111's conditioning on the case's pipeline with its final layer norm overridden (see the
// fixture README: with the tiny encoders' unit norm, mean restoration would divide rounding residues).
class A1111ConditioningParity : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(A1111ConditioningParity);

TEST_P(A1111ConditioningParity, ConditioningAndRunMatch) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path dir = feature_case("a1111", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(c["pipeline"].get<std::string>()));
  {
    io::SafetensorsFile override_file(dir / "te_final_layer_norm_override.safetensors");
    at::NoGradGuard no_grad;
    auto& norm = pipe->text_encoder()->text_model->final_layer_norm;
    norm->weight.copy_(override_file.tensor("text_model.final_layer_norm.weight"));
    norm->bias.copy_(override_file.tensor("text_model.final_layer_norm.bias"));
  }
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.prompt_syntax = pipeline::PromptSyntax::kA1111;
  r.clip_skip = c["a1111_opts"]["CLIP_stop_at_last_layers"].get<int>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  r.scheduler = tide::testing::scheduler_cli_name(c["scheduler"].get<std::string>(), c["scheduler_kwargs"]);

  // Parsing and chunks of both prompts.
  EXPECT_EQ(text::parse_prompt_attention(r.prompt), pieces_of(c["cond_parsed"]));
  text::ChunkingOptions options;
  options.comma_id = c["ids"]["comma_token"].get<int64_t>();
  const auto chunks = text::chunk_prompt(text::parse_prompt_attention(r.prompt), pipe->tokenizer(), options);
  const at::Tensor tokens = io::read_npy(dir / "cond_chunk_tokens.npy");
  ASSERT_EQ(static_cast<int64_t>(chunks.chunks.size()), tokens.size(0));
  for (size_t k = 0; k < chunks.chunks.size(); ++k)
    EXPECT_TRUE(at::equal(at::tensor(chunks.chunks[k].tokens, at::kLong), tokens[k])) << "chunk " << k;
  EXPECT_EQ(chunks.token_count, c["cond_token_count"].get<int>());

  // Encodings (chunks weighted, mean restored, side by side), then padded to one length for the batch.
  const auto cond = pipe->encode_prompt(r.prompt, r.prompt_syntax, r.clip_skip);
  EXPECT_TENSOR_NEAR(cond.context, io::read_npy(dir / "cond.npy"), 1e-4);
  const auto uncond = pipe->encode_prompt(r.negative_prompt.value_or(""), r.prompt_syntax, r.clip_skip);
  EXPECT_TENSOR_NEAR(uncond.context, io::read_npy(dir / "uncond.npy"), 1e-4);
  EXPECT_TENSOR_NEAR(pipe->encode_prompt("", r.prompt_syntax, r.clip_skip).context, io::read_npy(dir / "empty_cond.npy"), 1e-4);
  const auto conditioning = pipe->condition(r);
  const auto halves = conditioning.context.chunk(2);  // [uncond, cond]
  EXPECT_TENSOR_NEAR(halves[0], io::read_npy(dir / "uncond_padded.npy"), 1e-4);
  EXPECT_TENSOR_NEAR(halves[1], io::read_npy(dir / "cond_padded.npy"), 1e-4);

  // The run on that conditioning.
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  double worst_step = 0;
  auto result = pipe->generate(r, conditioning, [&](const pipeline::StepInfo& s) {
    worst_step = std::max(worst_step, tide::testing::max_abs_diff(s.latents, steps[s.index]));
  });
  EXPECT_LE(worst_step, 1e-3);
  EXPECT_TENSOR_NEAR(result.latents, io::read_npy(dir / "latents_final.npy"), 1e-3);
  const auto reference = io::read_png(dir / "image_0.png").rgb8;
  const at::Tensor diff = (reference.to(at::kInt) - result.images[0].to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 2);
  std::printf("%s: %d/%d chunks, conditioning max diff %.3g, worst per-step latent diff %.3g, max pixel diff %d\n",
              GetParam().c_str(), int(cond.context.size(1) / 77), int(uncond.context.size(1) / 77),
              tide::testing::max_abs_diff(halves[1], io::read_npy(dir / "cond_padded.npy")), worst_step,
              diff.max().item<int>());
}

std::vector<std::string> conditioning_cases() {
  std::vector<std::string> ids;
  for (const auto& id : feature_cases("a1111"))
    if (fs::exists(feature_case("a1111", id) / "cond.npy")) ids.push_back(id);
  return ids;
}

INSTANTIATE_TEST_SUITE_P(Cases, A1111ConditioningParity, ::testing::ValuesIn(conditioning_cases()),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

TEST(A1111PromptParityCases, FixturesHoldCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(conditioning_cases().empty()) << "no conditioning case in features/a1111";
}

}  // namespace
