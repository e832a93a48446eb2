// AUTOMATIC1111's prompt syntax without fixtures: the parser's rules, chunking on a character-level
// tokenizer, and the conditioning's properties on a tiny random pipeline.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tiny_pipeline.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"
#include "tide/text/a1111_prompt.h"

namespace {
using namespace tide;
using text::WeightedText;
using Pieces = std::vector<WeightedText>;

TEST(A1111Prompt, WeightsFromBrackets) {
  EXPECT_EQ(text::parse_prompt_attention("an (important) word"), (Pieces{{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}}));
  EXPECT_EQ(text::parse_prompt_attention("[weak] (strong:1.5)"), (Pieces{{"weak", 1 / 1.1}, {" ", 1.0}, {"strong", 1.5}}));
  EXPECT_EQ(text::parse_prompt_attention("((a:1.5):1.2)"), (Pieces{{"a", 1.5 * 1.2}}));
  EXPECT_EQ(text::parse_prompt_attention("(open"), (Pieces{{"open", 1.1}}));  // unclosed: to the end
  EXPECT_EQ(text::parse_prompt_attention("\\(x\\) \\\\"), (Pieces{{"(x) \\", 1.0}}));
  EXPECT_EQ(text::parse_prompt_attention("(a : 2 )"), (Pieces{{"a ", 2.0}}));
  EXPECT_EQ(text::parse_prompt_attention("a:1.5) b"), (Pieces{{"a:1.5) b", 1.0}}));  // no open bracket: text
  EXPECT_EQ(text::parse_prompt_attention(""), (Pieces{{"", 1.0}}));
}

TEST(A1111Prompt, BreakOnlyAsAWordOfItsOwn) {
  EXPECT_EQ(text::parse_prompt_attention("a  BREAK\tb"), (Pieces{{"a", 1.0}, {"BREAK", -1}, {"b", 1.0}}));
  EXPECT_EQ(text::parse_prompt_attention("BREAKfast, xBREAK, break"), (Pieces{{"BREAKfast, xBREAK, break", 1.0}}));
  EXPECT_EQ(text::parse_prompt_attention("caf\xC3\xA9" "BREAK"), (Pieces{{"caf\xC3\xA9" "BREAK", 1.0}}));  // é is a letter
  EXPECT_EQ(text::parse_prompt_attention("\xE3\x80\x82" "BREAK x"), (Pieces{{"\xE3\x80\x82", 1.0}, {"BREAK", -1}, {"x", 1.0}}));
  // Inside brackets BREAK is weighted text, not a chunk break.
  EXPECT_EQ(text::parse_prompt_attention("(a BREAK b)"), (Pieces{{"a", 1.1}, {"BREAK", -1.1}, {"b", 1.1}}));
}

TEST(A1111Prompt, AWeightThatIsNoNumberIsAnError) {
  EXPECT_THROW(text::parse_prompt_attention("(a:1.2.3)"), Error);
  EXPECT_THROW(text::parse_prompt_attention("(a:.)"), Error);
  // A sign without digits is no weight at all: A1111 keeps it as text.
  EXPECT_EQ(text::parse_prompt_attention("(a:-)"), (Pieces{{"a:-", 1.1}}));
}

class A1111Chunks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new tide::testing::TempDir();
    tide::testing::make_tiny_pipeline(dir_->path() / "model");
    tokenizer_ = new text::ClipTokenizer(text::ClipTokenizer::from_folder(dir_->path() / "model" / "tokenizer"));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  text::ChunkingOptions options() const {
    text::ChunkingOptions o;
    o.start_id = tokenizer_->bos_id();
    o.end_id = tokenizer_->eos_id();
    o.comma_id = *tokenizer_->token_id(",</w>");
    return o;
  }
  static std::string words(const std::string& word, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += (i ? " " : "") + word;
    return s;
  }
  static inline tide::testing::TempDir* dir_ = nullptr;
  static inline text::ClipTokenizer* tokenizer_ = nullptr;
};

TEST_F(A1111Chunks, ShortPromptIsOneChunkOf77) {
  const auto c = text::chunk_prompt(text::parse_prompt_attention("a (b:1.5)"), *tokenizer_, options());
  ASSERT_EQ(c.chunks.size(), 1u);
  const auto a = *tokenizer_->token_id("a</w>"), b = *tokenizer_->token_id("b</w>"), end = tokenizer_->eos_id();
  ASSERT_EQ(c.chunks[0].tokens.size(), 77u);
  EXPECT_EQ(c.chunks[0].tokens[0], tokenizer_->bos_id());
  EXPECT_EQ(c.chunks[0].tokens[1], a);
  EXPECT_EQ(c.chunks[0].tokens[2], b);
  EXPECT_EQ(c.chunks[0].tokens[3], end);
  EXPECT_EQ(c.chunks[0].tokens[76], end);
  EXPECT_EQ(c.chunks[0].multipliers[1], 1.0);
  EXPECT_EQ(c.chunks[0].multipliers[2], 1.5);
  EXPECT_EQ(c.chunks[0].multipliers[3], 1.0);
  EXPECT_EQ(c.token_count, 2);
  // An empty prompt is still one chunk.
  EXPECT_EQ(text::chunk_prompt(text::parse_prompt_attention(""), *tokenizer_, options()).chunks.size(), 1u);
}

TEST_F(A1111Chunks, LongPromptsAndBreakStartNewChunks) {
  const auto c = text::chunk_prompt(text::parse_prompt_attention(words("a", 80)), *tokenizer_, options());
  ASSERT_EQ(c.chunks.size(), 2u);
  EXPECT_EQ(c.chunks[0].tokens[75], *tokenizer_->token_id("a</w>"));  // 75 text tokens in the first
  EXPECT_EQ(c.chunks[1].tokens[5], *tokenizer_->token_id("a</w>"));   // 5 in the second
  EXPECT_EQ(c.chunks[1].tokens[6], tokenizer_->eos_id());
  EXPECT_EQ(c.token_count, 80);
  const auto b = text::chunk_prompt(text::parse_prompt_attention("a BREAK b BREAK c"), *tokenizer_, options());
  EXPECT_EQ(b.chunks.size(), 3u);
  EXPECT_EQ(b.token_count, 151);  // two full chunks, then one token
}

TEST_F(A1111Chunks, AFullChunkMovesTheWordsAfterItsLastComma) {
  // 70 × a, a comma, 10 × b: at 75 tokens the 4 b's after the comma go to the next chunk with the rest.
  const auto c = text::chunk_prompt(text::parse_prompt_attention(words("a", 70) + ", " + words("b", 10)), *tokenizer_,
                                    options());
  ASSERT_EQ(c.chunks.size(), 2u);
  EXPECT_EQ(c.chunks[0].tokens[71], *tokenizer_->token_id(",</w>"));
  EXPECT_EQ(c.chunks[0].tokens[72], tokenizer_->eos_id());
  for (int i = 1; i <= 10; ++i) EXPECT_EQ(c.chunks[1].tokens[i], *tokenizer_->token_id("b</w>")) << i;
  EXPECT_EQ(c.chunks[1].tokens[11], tokenizer_->eos_id());
  EXPECT_EQ(c.token_count, 85);
  // Without backtracking the chunk is cut at 75 tokens.
  auto no_backtrack = options();
  no_backtrack.comma_padding_backtrack = 0;
  const auto cut = text::chunk_prompt(text::parse_prompt_attention(words("a", 70) + ", " + words("b", 10)), *tokenizer_,
                                      no_backtrack);
  EXPECT_EQ(cut.chunks[0].tokens[75], *tokenizer_->token_id("b</w>"));
}

class A1111Conditioning : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new tide::testing::TempDir();
    tide::testing::make_tiny_pipeline(dir_->path() / "model");
    pipe_ = pipeline::StableDiffusionPipeline::from_folder(dir_->path() / "model").release();
    // A random encoder's final norm is weight 1, bias 0: every token's output then has mean 0 and the mean
    // restoration would divide rounding residues. Real encoders have a bias; give this one one too.
    at::NoGradGuard no_grad;
    auto& norm = pipe_->text_encoder()->text_model->final_layer_norm;
    const at::Tensor k = at::arange(norm->weight.size(0), at::kFloat);
    norm->weight.copy_(1 + 0.2 * at::sin(1.3 * k));
    norm->bias.copy_(0.1 + 0.05 * at::cos(0.7 * k));
  }
  static void TearDownTestSuite() {
    delete pipe_;
    delete dir_;
  }
  static inline tide::testing::TempDir* dir_ = nullptr;
  static inline pipeline::StableDiffusionPipeline* pipe_ = nullptr;
};

TEST_F(A1111Conditioning, APlainPromptReadsAsDiffusersReadsIt) {
  const auto plain = pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kPlain);
  const auto a1111 = pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kA1111);
  EXPECT_TRUE(at::equal(plain.context, a1111.context));
  // Clip skip 2 is the same layer in both syntaxes.
  EXPECT_TRUE(at::equal(pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kPlain, 2).context,
                        pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kA1111, 2).context));
  EXPECT_FALSE(at::equal(pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kPlain, 2).context, plain.context));
  EXPECT_THROW(pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kA1111, 3), Error);  // 2 layers
  EXPECT_THROW(pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kPlain, 0), Error);
}

TEST_F(A1111Conditioning, WeightsScaleTokensAndKeepTheMean) {
  const auto plain = pipe_->encode_prompt("a red fox", pipeline::PromptSyntax::kA1111).context;     // [1, 77, D]
  const auto weighted = pipe_->encode_prompt("a (red:1.8) fox", pipeline::PromptSyntax::kA1111).context;
  EXPECT_NEAR(weighted.mean().item<double>(), plain.mean().item<double>(), 1e-6);
  // Every token's vector is the unweighted one times its weight and one common factor.
  const double factor = weighted[0][1].norm().item<double>() / plain[0][1].norm().item<double>();
  // Character tokens: a</w> r e d</w> f o x</w> at 1..7; "red" weighs 1.8.
  EXPECT_NEAR(weighted[0][3].norm().item<double>() / plain[0][3].norm().item<double>(), 1.8 * factor, 1e-4);
  EXPECT_NEAR(weighted[0][6].norm().item<double>() / plain[0][6].norm().item<double>(), factor, 1e-4);
}

// A chunk whose outputs average exactly 0 (an encoder whose final norm has no bias, given an empty prompt: a
// random-weight model's negative prompt) keeps its weighted values; dividing by its 0 mean made NaN pictures.
TEST_F(A1111Conditioning, AChunkWhoseMeanIsZeroGivesNoNaN) {
  auto& norm = pipe_->text_encoder()->text_model->final_layer_norm;
  at::NoGradGuard no_grad;
  const at::Tensor weight = norm->weight.clone(), bias = norm->bias.clone();
  norm->weight.zero_();
  norm->bias.zero_();
  const at::Tensor weighted = pipe_->encode_prompt("a (red:1.5) fox", pipeline::PromptSyntax::kA1111).context;
  const at::Tensor empty = pipe_->encode_prompt("", pipeline::PromptSyntax::kA1111).context;
  norm->weight.copy_(weight);
  norm->bias.copy_(bias);
  EXPECT_TRUE(at::equal(weighted, at::zeros_like(weighted)));
  EXPECT_TRUE(at::equal(empty, at::zeros_like(empty)));
}

TEST_F(A1111Conditioning, LongPromptsGetChunksAndTheNegativeIsPadded) {
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "ab ";  // 80 tokens: 2 chunks
  pipeline::GenerationRequest r;
  r.prompt = long_prompt;
  r.negative_prompt = "blurry";
  r.prompt_syntax = pipeline::PromptSyntax::kA1111;
  r.steps = 2;
  const auto c = pipe_->condition(r);
  EXPECT_EQ(c.context.sizes(), (at::IntArrayRef{2, 154, c.context.size(2)}));
  // The negative prompt's second chunk is the empty prompt's encoding.
  const auto empty = pipe_->encode_prompt("", pipeline::PromptSyntax::kA1111).context;
  EXPECT_TRUE(at::equal(c.context[0].narrow(0, 77, 77), empty[0]));
  EXPECT_EQ(pipe_->generate(r, c).images.size(0), 1);
}

}  // namespace
