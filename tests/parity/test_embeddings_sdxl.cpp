// Textual-inversion embeddings in the SDXL pipeline (the fixture sdxl-tiny): clip_l goes to the first text
// encoder, clip_g to the second; the token changes the picture, a prompt without it stays bit-identical, and
// embeddings of the wrong family are refused without changing anything.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"

namespace {
using tide::pipeline::GenerationRequest;
using tide::pipeline::StableDiffusionPipeline;
using tide::text::TextualInversionEmbedding;

at::Tensor image(StableDiffusionPipeline& pipe, const std::string& prompt) {
  GenerationRequest r;
  r.prompt = prompt;
  r.width = r.height = 32;
  r.steps = 2;
  r.seed = 5;
  return pipe.generate(pipe.resolve(r)).images[0];
}

TEST(SdxlEmbeddings, ClipLAndClipGGoToTheirEncoders) {
  TIDE_REQUIRE_FIXTURES();
  auto pipe = StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir("sdxl-tiny"));
  const int64_t d1 = pipe->text_encoder()->config().hidden_size, d2 = pipe->text_encoder_2()->config().hidden_size;
  const at::Tensor plain = image(*pipe, "a photo of a cat");

  EXPECT_THROW(pipe->install_embedding({"<sd>", at::randn({1, d1}), {}}), tide::Error);  // SD 1.x/2.x file
  EXPECT_THROW(pipe->install_embedding({"<w>", at::randn({1, d1}), at::randn({1, d2 + 1})}), tide::Error);
  EXPECT_FALSE(pipe->tokenizer().token_id("<w>").has_value()) << "a refused embedding changed the tokenizer";

  at::manual_seed(0);
  const TextualInversionEmbedding e{"<s0>", at::randn({1, d1}) * 3, at::randn({1, d2}) * 3};
  pipe->install_embedding(e);
  const int64_t id1 = *pipe->tokenizer().token_id("<s0>");
  EXPECT_TRUE(pipe->text_encoder()->token_embedding()->weight[id1].equal(e.vectors[0]));
  EXPECT_TRUE(at::equal(image(*pipe, "a photo of a cat"), plain)) << "a prompt without the token changed";
  EXPECT_FALSE(at::equal(image(*pipe, "a photo of a <s0>"), image(*pipe, "a photo of a cat")));
}

}  // namespace
