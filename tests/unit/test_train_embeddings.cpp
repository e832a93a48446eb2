// Textual-inversion embedding files (diffusers and A1111 layouts, safetensors and torch zip pickles),
// installing them in a tokenizer + text encoder, multi-vector prompt expansion, and the placeholder set-up
// of training with its errors.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/error.h"
#include "tide/text/embeddings.h"
#include "tide/train/placeholder.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::TempDir;

void write_pickle(const fs::path& path, const c10::IValue& value) {
  const auto bytes = torch::jit::pickle_save(value);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(EmbeddingFiles, DiffusersSafetensorsAndPickleRoundTrip) {
  TempDir dir;
  const at::Tensor v = at::randn({3, 8});
  text::write_embedding_file(dir / "learned_embeds.safetensors", "<cat-toy>", v);
  const auto st = text::read_embedding_file(dir / "learned_embeds.safetensors");
  EXPECT_EQ(st.token, "<cat-toy>");
  EXPECT_TRUE(st.vectors.equal(v));
  EXPECT_EQ(io::SafetensorsFile(dir / "learned_embeds.safetensors").metadata().at("format"), "pt");

  text::write_embedding_file(dir / "learned_embeds.bin", "<cat-toy>", v, /*pickle=*/true);
  const auto bin = text::read_embedding_file(dir / "learned_embeds.bin");
  EXPECT_EQ(bin.token, "<cat-toy>");
  EXPECT_TRUE(bin.vectors.equal(v));
  // The token can be overridden; a single vector [D] reads as [1, D].
  io::write_safetensors(dir / "one.safetensors", {{"<one>", at::ones({8})}});
  const auto one = text::read_embedding_file(dir / "one.safetensors", std::string("<uno>"));
  EXPECT_EQ(one.token, "<uno>");
  EXPECT_EQ(one.vectors.sizes(), (at::IntArrayRef{1, 8}));
}

TEST(EmbeddingFiles, A1111Layouts) {
  TempDir dir;
  const at::Tensor v = at::randn({2, 8});
  io::write_safetensors(dir / "my-style.safetensors", {{"emb_params", v}});
  const auto st = text::read_embedding_file(dir / "my-style.safetensors");
  EXPECT_EQ(st.token, "my-style");  // named after the file, as A1111 does
  EXPECT_TRUE(st.vectors.equal(v));

  c10::Dict<std::string, at::Tensor> params;
  params.insert("*", v);
  c10::Dict<std::string, int64_t> string_to_token;
  string_to_token.insert("*", 265);
  c10::impl::GenericDict pt(c10::StringType::get(), c10::AnyType::get());
  pt.insert(std::string("string_to_token"), string_to_token);
  pt.insert(std::string("string_to_param"), params);
  pt.insert(std::string("name"), std::string("painted"));
  pt.insert(std::string("step"), int64_t{3000});
  write_pickle(dir / "painted.pt", pt);
  const auto a1111 = text::read_embedding_file(dir / "painted.pt");
  EXPECT_EQ(a1111.token, "painted");
  EXPECT_TRUE(a1111.vectors.equal(v));

  write_pickle(dir / "bare.pt", v);
  EXPECT_THROW(text::read_embedding_file(dir / "bare.pt"), Error);  // a bare tensor needs a token
  EXPECT_EQ(text::read_embedding_file(dir / "bare.pt", std::string("<bare>")).token, "<bare>");
}

TEST(EmbeddingFiles, SdxlPairOfVectors) {
  TempDir dir;
  const at::Tensor l = at::randn({2, 4}), g = at::randn({2, 8});
  io::write_safetensors(dir / "xl-style.safetensors", {{"clip_l", l}, {"clip_g", g}});
  const auto e = text::read_embedding_file(dir / "xl-style.safetensors");
  EXPECT_TRUE(e.is_xl());
  EXPECT_EQ(e.token, "xl-style");  // named after the file, as A1111 does
  EXPECT_TRUE(e.vectors.equal(l));
  EXPECT_TRUE(e.vectors_2.equal(g));
  EXPECT_EQ(text::read_embedding_file(dir / "xl-style.safetensors", std::string("<s0>")).token, "<s0>");
}

TEST(EmbeddingFiles, BadFilesAreClearErrors) {
  TempDir dir;
  io::write_safetensors(dir / "two.safetensors", {{"a", at::ones({1, 4})}, {"b", at::ones({1, 4})}});
  io::write_safetensors(dir / "xl.safetensors", {{"clip_l", at::ones({1, 4})}, {"clip_g", at::ones({2, 8})}});
  io::write_safetensors(dir / "cube.safetensors", {{"<c>", at::ones({1, 2, 4})}});
  tide::testing::write_text(dir / "legacy.pt", std::string("\x80\x02garbage", 9));
  tide::testing::write_text(dir / "junk.safetensors", "not a file format");
  for (const char* name : {"two.safetensors", "xl.safetensors", "cube.safetensors", "legacy.pt", "junk.safetensors",
                           "missing.safetensors"}) {
    try {
      text::read_embedding_file(dir / name);
      ADD_FAILURE() << name << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(EmbeddingFiles, ArgumentParsing) {
  auto [file, token] = text::parse_embedding_argument("emb.safetensors:<tok>");
  EXPECT_EQ(file, "emb.safetensors");
  EXPECT_EQ(token, std::optional<std::string>("<tok>"));
  std::tie(file, token) = text::parse_embedding_argument("dir/emb.pt");
  EXPECT_EQ(file, "dir/emb.pt");
  EXPECT_FALSE(token);
}

class TinyTextModel : public ::testing::Test {
 protected:
  void SetUp() override {
    tide::testing::make_tiny_pipeline(dir_.path() / "model");
    tokenizer_ = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(dir_ / "model/tokenizer"));
    const auto config = models::ClipTextConfig::from_json(io::read_json(dir_ / "model/text_encoder/config.json"));
    encoder_ = models::ClipTextModel(config);
  }
  TempDir dir_;
  std::unique_ptr<text::ClipTokenizer> tokenizer_;
  models::ClipTextModel encoder_{nullptr};
};

TEST_F(TinyTextModel, InstallMultiVectorEmbeddingAndExpandPrompts) {
  const int64_t vocab = static_cast<int64_t>(tokenizer_->vocab_size());
  const at::Tensor before = encoder_->token_embedding()->weight.detach().clone();
  const at::Tensor v = at::randn({3, 16});
  const int64_t first = text::install_embedding(*tokenizer_, encoder_, {"<cat>", v});
  EXPECT_EQ(first, vocab);
  EXPECT_EQ(tokenizer_->token_id("<cat>_2"), std::optional<int64_t>(vocab + 2));
  const at::Tensor& w = encoder_->token_embedding()->weight;
  ASSERT_EQ(w.size(0), vocab + 3);
  EXPECT_TRUE(w.narrow(0, vocab, 3).equal(v));
  EXPECT_TRUE(w.narrow(0, 0, vocab).equal(before));  // every other row unchanged

  EXPECT_EQ(text::expand_multi_vector_tokens("a <cat> on a <cat>", *tokenizer_, {"<cat>"}),
            "a <cat> <cat>_1 <cat>_2 on a <cat> <cat>_1 <cat>_2");
  EXPECT_EQ(text::expand_multi_vector_tokens("a dog", *tokenizer_, {"<cat>"}), "a dog");
  const auto ids = tokenizer_->encode_padded(text::expand_multi_vector_tokens("a <cat>", *tokenizer_, {"<cat>"}));
  EXPECT_EQ(std::count_if(ids.begin(), ids.end(), [&](int64_t id) { return id >= vocab; }), 3);

  EXPECT_THROW(text::install_embedding(*tokenizer_, encoder_, {"<cat>", v}), Error);  // already there
  EXPECT_THROW(text::install_embedding(*tokenizer_, encoder_, {"<dog>", at::randn({1, 7})}), Error);  // width
  EXPECT_THROW(text::install_embedding(*tokenizer_, encoder_, {"a", at::randn({1, 16})}), Error);  // vocabulary
}

TEST_F(TinyTextModel, PlaceholderSetupAndErrors) {
  const auto p = train::add_placeholder(*tokenizer_, encoder_, "<sks>", "c", 2);
  EXPECT_EQ(p.tokens, (std::vector<std::string>{"<sks>", "<sks>_1"}));
  EXPECT_EQ(p.caption_text(), "<sks> <sks>_1");
  const at::Tensor& w = encoder_->token_embedding()->weight;
  EXPECT_TRUE(w[p.first_id].equal(w[p.initializer_id]));
  EXPECT_TRUE(w[p.first_id + 1].equal(w[p.initializer_id]));

  // The embeddings with the placeholder rows from separate vectors: gradients reach only those.
  const at::Tensor vectors = at::randn({2, 16}).set_requires_grad(true);
  const at::Tensor ids = at::tensor({int64_t{3}, p.first_id, p.first_id + 1, int64_t{5}}).unsqueeze(0);
  const at::Tensor emb = train::embed_with_vectors(encoder_, ids, vectors, p.first_id);
  EXPECT_TRUE(emb[0][1].equal(vectors[0].detach()));
  EXPECT_TRUE(emb[0][0].equal(w[3].detach()));
  emb.sum().backward();
  EXPECT_TRUE(vectors.grad().equal(at::ones({2, 16})));
  EXPECT_FALSE(w.grad().defined());

  EXPECT_THROW(train::add_placeholder(*tokenizer_, encoder_, "<new>", "cat", 1), Error);  // 3 tokens here
  EXPECT_THROW(train::add_placeholder(*tokenizer_, encoder_, "<new>", "", 1), Error);
  EXPECT_THROW(train::add_placeholder(*tokenizer_, encoder_, "<sks>", "c", 1), Error);  // exists
  EXPECT_THROW(train::add_placeholder(*tokenizer_, encoder_, "a", "c", 1), Error);      // in the vocabulary
  EXPECT_THROW(train::add_placeholder(*tokenizer_, encoder_, "<x>", "c", 0), Error);
  try {
    train::add_placeholder(*tokenizer_, encoder_, "<new>", "cat", 1);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("single token"), std::string::npos) << e.what();
  }
}

}  // namespace
