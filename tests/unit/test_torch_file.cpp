// torch.save files (.pt, .ckpt, .bin) through tide's restricted unpickler: the layouts embeddings and
// checkpoints use, files named globals that must never run, and damaged files that must only give errors.
// tests/data/torch_files/make_torch_files.py wrote the files read here.
#include <torch/csrc/jit/serialization/pickle.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "test_support.h"
#include "tide/io/atomic_file.h"
#include "tide/io/torch_file.h"
#include "tide/io/weights.h"
#include "tide/runtime/error.h"
#include "tide/text/embeddings.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;

const fs::path kData = fs::path(TIDE_TEST_DATA) / "torch_files";

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(TorchFile, A1111EmbeddingWithAParameter) {
  const auto e = text::read_embedding_file(kData / "a1111_embedding.pt");
  EXPECT_EQ(e.token, "my-cat");
  EXPECT_TRUE(at::equal(e.vectors, at::arange(8, at::kFloat).div(8).view({2, 4})));
}

TEST(TorchFile, OriginalTextualInversionParameterDict) {
  const auto e = text::read_embedding_file(kData / "paramdict_embedding.pt", std::string("<cat>"));
  EXPECT_EQ(e.token, "<cat>");
  EXPECT_TRUE(at::equal(e.vectors, at::tensor({1.0f, -2.0f, 3.5f}).view({1, 3})));
}

TEST(TorchFile, CheckpointStateDictWithViewsAndHalfTensors) {
  const auto source = io::WeightSource::from_file(kData / "checkpoint.ckpt");
  EXPECT_EQ(source.names(), (std::vector<std::string>{"model.h", "model.s", "model.w", "model.w_t"}));
  const at::Tensor w = at::arange(6, at::kFloat).view({2, 3});
  EXPECT_TRUE(at::equal(source.tensor("model.w"), w));
  EXPECT_TRUE(at::equal(source.tensor("model.w_t"), w.t()));  // the same storage, strided
  EXPECT_EQ(source.dtype("model.h"), at::kHalf);
  EXPECT_TRUE(at::equal(source.tensor("model.h"), at::tensor({1.5f, -2.0f, 4.0f}).to(at::kHalf)));
  EXPECT_EQ(source.shape("model.s"), std::vector<int64_t>{});
  EXPECT_EQ(source.tensor("model.s").item<float>(), 5.0f);
}

TEST(TorchFile, GlobalsOutsideTheAllowListAreRefusedNotRun) {
  try {
    io::load_torch_file(kData / "evil.pt");
    FAIL() << "evil.pt was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("posix.system"), std::string::npos) << e.what();
  }
}

TEST(TorchFile, ReadsWhatLibtorchWrites) {
  tide::testing::TempDir dir;
  const at::Tensor a = at::randn({3, 5}), b = at::randn({4}).to(at::kBFloat16);
  c10::Dict<std::string, at::Tensor> state;
  state.insert("a", a);
  state.insert("b", b);
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("state_dict", state);
  const auto bytes = torch::jit::pickle_save(c10::IValue(root));
  io::write_file_atomically(dir / "x.ckpt", std::string(bytes.begin(), bytes.end()));
  const auto tensors = io::state_dict_tensors(io::load_torch_file(dir / "x.ckpt"), "x.ckpt");
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_EQ(tensors[0].first, "a");
  EXPECT_TRUE(at::equal(tensors[0].second, a));
  EXPECT_TRUE(at::equal(tensors[1].second, b));
  // And an embedding saved as .bin comes back.
  text::write_embedding_file(dir / "e.bin", "<tok>", a, /*pickle=*/true);
  const auto e = text::read_embedding_file(dir / "e.bin");
  EXPECT_EQ(e.token, "<tok>");
  EXPECT_TRUE(at::equal(e.vectors, a));
}

// Every truncation and many single-byte changes of a valid checkpoint: an error or a result, never a crash.
TEST(TorchFile, DamagedFilesGiveErrors) {
  tide::testing::TempDir dir;
  const std::string good = read_all(kData / "checkpoint.ckpt");
  int errors = 0, loaded = 0;
  auto attempt = [&](const std::string& bytes) {
    io::write_file_atomically(dir / "bad.ckpt", bytes);
    try {
      const auto tensors = io::state_dict_tensors(io::load_torch_file(dir / "bad.ckpt"), "bad.ckpt");
      for (const auto& [name, t] : tensors) (void)t.sum().item<double>();  // touch every element
      ++loaded;
    } catch (const Error&) {
      ++errors;
    }
  };
  for (size_t n = 0; n < good.size(); n += 7) attempt(good.substr(0, n));
  for (size_t i = 0; i < good.size(); i += 3) {
    for (const unsigned char value : {0x00, 0xFF, 0x80}) {
      std::string bad = good;
      bad[i] = static_cast<char>(value);
      attempt(bad);
    }
  }
  EXPECT_GT(errors, 100);
  std::printf("damaged checkpoints: %d errors, %d loaded\n", errors, loaded);
}

}  // namespace
