// CLIP text encoders of the tiny pipelines against transformers' outputs (reference fixtures).
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/io/weights.h"
#include "tide/models/clip_text.h"

namespace {

using tide::models::ClipTextConfig;
using tide::models::ClipTextModel;
using tide::models::ClipTextOutput;
namespace fs = std::filesystem;

constexpr double kTol = 1e-4;

ClipTextModel load_text_encoder(const std::string& pipeline, const std::string& component) {
  const fs::path dir = tide::testing::pipeline_dir(pipeline) / component;
  ClipTextModel model(ClipTextConfig::from_json(tide::io::read_json(dir / "config.json")));
  tide::io::load_module_weights(*model, tide::io::WeightSource::from_component_dir(dir), component);
  model->eval();
  return model;
}

ClipTextOutput encode(ClipTextModel& model, const fs::path& ids_file) {
  at::NoGradGuard no_grad;
  return model->forward(tide::io::read_npy(ids_file));
}

at::Tensor npy(const fs::path& file) { return tide::io::read_npy(file); }

void check_components(const std::string& id, const std::string& pipeline) {
  const fs::path ref = tide::testing::reference_case(id);
  ClipTextModel te = load_text_encoder(pipeline, "text_encoder");
  EXPECT_FALSE(te->config().with_projection);
  const ClipTextOutput out = encode(te, ref / "te_input_ids.npy");
  EXPECT_TENSOR_NEAR(out.last_hidden_state, npy(ref / "te_last_hidden_state.npy"), kTol);
  EXPECT_TENSOR_NEAR(out.penultimate, npy(ref / "te_penultimate.npy"), kTol);
  EXPECT_TENSOR_NEAR(out.pooled, npy(ref / "te_pooler_output.npy"), kTol);
  EXPECT_FALSE(out.text_embeds.defined());
}

// Every component dump of the reference set: the first text encoder, and SDXL's second.
TEST(ClipTextParity, ComponentCases) {
  TIDE_REQUIRE_FIXTURES();
  const auto cases = tide::testing::reference_cases("te_last_hidden_state.npy");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.id);
    check_components(c.id, c.pipeline);
    const fs::path ref = tide::testing::reference_case(c.id);
    if (!fs::exists(ref / "te_input_ids_2.npy")) continue;
    ClipTextModel te2 = load_text_encoder(c.pipeline, "text_encoder_2");
    ASSERT_TRUE(te2->config().with_projection);
    const ClipTextOutput out = encode(te2, ref / "te_input_ids_2.npy");
    EXPECT_TENSOR_NEAR(out.last_hidden_state, npy(ref / "te_last_hidden_state_2.npy"), kTol);
    EXPECT_TENSOR_NEAR(out.penultimate, npy(ref / "te_penultimate_2.npy"), kTol);
    EXPECT_TENSOR_NEAR(out.text_embeds, npy(ref / "te_text_embeds_2.npy"), kTol);
  }
}

std::vector<fs::path> pipeline_cases(const std::vector<std::string>& prefixes) {
  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(tide::testing::fixtures_dir() / "reference")) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.find("_components") != std::string::npos) continue;
    for (const auto& prefix : prefixes)
      if (name.rfind(prefix, 0) == 0) cases.push_back(entry.path());
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

// SD1/SD2: prompt_embeds = text_encoder(input_ids).last_hidden_state (repeated per image).
TEST(ClipTextParity, SdPipelinePromptEmbeds) {
  TIDE_REQUIRE_FIXTURES();
  const auto cases = pipeline_cases({"sd1_", "sd2_"});
  ASSERT_FALSE(cases.empty());
  std::map<std::string, ClipTextModel> encoders;
  for (const fs::path& dir : cases) {
    SCOPED_TRACE(dir.filename().string());
    // sd1_* cases use sd1-tiny, sd2_* sd2-tiny (case.json is not strict JSON: it may hold -Infinity).
    const std::string pipeline = dir.filename().string().substr(0, 3) + "-tiny";
    if (!encoders.count(pipeline)) encoders.emplace(pipeline, load_text_encoder(pipeline, "text_encoder"));
    ClipTextModel& te = encoders.at(pipeline);
    EXPECT_TENSOR_NEAR(encode(te, dir / "input_ids.npy").last_hidden_state[0], npy(dir / "prompt_embeds.npy")[0], kTol);
    if (fs::exists(dir / "uncond_input_ids.npy"))
      EXPECT_TENSOR_NEAR(encode(te, dir / "uncond_input_ids.npy").last_hidden_state[0],
                         npy(dir / "negative_prompt_embeds.npy")[0], kTol);
  }
}

// SDXL: penultimate states of both encoders and the projected pooled output of text_encoder_2.
TEST(ClipTextParity, SdxlPipelineTextEncoderOutputs) {
  TIDE_REQUIRE_FIXTURES();
  const auto cases = pipeline_cases({"sdxl_"});
  ASSERT_FALSE(cases.empty());
  ClipTextModel te = load_text_encoder("sdxl-tiny", "text_encoder");
  ClipTextModel te2 = load_text_encoder("sdxl-tiny", "text_encoder_2");
  for (const fs::path& dir : cases) {
    SCOPED_TRACE(dir.filename().string());
    for (const std::string branch : {"cond", "uncond"}) {
      const std::string ids = branch == "cond" ? "input_ids" : "uncond_input_ids";
      if (!fs::exists(dir / ("te_penultimate_" + branch + ".npy"))) continue;
      EXPECT_TENSOR_NEAR(encode(te, dir / (ids + ".npy")).penultimate,
                         npy(dir / ("te_penultimate_" + branch + ".npy")), kTol);
      const ClipTextOutput out2 = encode(te2, dir / (ids + "_2.npy"));
      EXPECT_TENSOR_NEAR(out2.penultimate, npy(dir / ("te_penultimate_" + branch + "_2.npy")), kTol);
      EXPECT_TENSOR_NEAR(out2.text_embeds, npy(dir / ("te_text_embeds_" + branch + "_2.npy")), kTol);
    }
  }
}

}  // namespace
