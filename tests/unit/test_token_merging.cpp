// ToMe's matching against a plain reference: with fixed destinations (each 2x2 cell's top-left token), the
// r sources most similar to their best destination are averaged into it and, after unmerging, every token holds its
// own value, its destination's average, or (a destination) the average of itself and its sources.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "tide/nn/token_merging.h"

namespace {
using namespace tide;

// float64, and float32 (whose similarities go through oneDNN's product).
class TokenMergingDtypes : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(TokenMergingDtypes, MergeThenUnmergeEqualsThePlainReference) {
  const int64_t h = 6, w = 8, n = h * w, c = 5;
  const double tolerance = GetParam() == at::kDouble ? 1e-12 : 1e-6;
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, n, c}, at::kDouble).to(GetParam());
  nn::TokenMergingOptions o;
  o.ratio = 0.4;
  o.use_rand = false;
  nn::TokenMerging tome(o, 0);
  tome.set_latent_size(h, w);
  const auto m = tome.match(x);
  ASSERT_TRUE(m.active());
  const at::Tensor merged = m.merge(x);
  const int64_t r = static_cast<int64_t>(n * 0.4);
  EXPECT_EQ(merged.sizes(), (at::IntArrayRef{2, n - r, c}));
  const at::Tensor restored = m.unmerge(merged);

  // The reference, token by token and image by image (each image of the batch finds its own matches).
  std::vector<int64_t> dst, src;
  for (int64_t i = 0; i < n; ++i) ((i / w) % 2 == 0 && (i % w) % 2 == 0 ? dst : src).push_back(i);
  const at::Tensor unit = x.to(at::kDouble) / x.to(at::kDouble).norm(2, -1, true);
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<std::pair<double, int64_t>> best;  // (similarity to its best destination, source)
    std::map<int64_t, int64_t> target;             // source -> destination
    for (int64_t s : src) {
      double top = -2;
      for (int64_t d : dst) {
        const double sim = unit[b][s].dot(unit[b][d]).item<double>();
        if (sim > top) top = sim, target[s] = d;
      }
      best.emplace_back(top, s);
    }
    std::sort(best.rbegin(), best.rend());
    std::map<int64_t, std::vector<int64_t>> groups;
    for (int64_t k = 0; k < r; ++k) groups[target[best[k].second]].push_back(best[k].second);
    at::Tensor expected = x[b].to(at::kDouble);
    for (int64_t d : dst) {
      at::Tensor sum = x[b][d].clone();
      for (int64_t s : groups[d]) sum += x[b][s];
      expected[d] = sum / double(1 + groups[d].size());
      for (int64_t s : groups[d]) expected[s] = expected[d];
    }
    EXPECT_TRUE(at::allclose(restored[b].to(at::kDouble), expected, tolerance, tolerance)) << "batch " << b;
  }
}
INSTANTIATE_TEST_SUITE_P(TokenMerging, TokenMergingDtypes, ::testing::Values(at::kDouble, at::kFloat),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(TokenMerging, RandomDestinationsComeFromTheSeededGeneratorInOrder) {
  nn::TokenMergingOptions o;
  o.ratio = 0.5;
  const at::Tensor x = at::randn({2, 64, 4});
  nn::TokenMerging a(o, 11), b(o, 11), other(o, 12);
  for (auto* t : {&a, &b, &other}) t->set_latent_size(8, 8);
  const auto first = a.match(x), same = b.match(x), different = other.match(x);
  EXPECT_TRUE(at::equal(first.rand_idx, same.rand_idx));
  EXPECT_FALSE(at::equal(first.rand_idx, different.rand_idx));
  EXPECT_FALSE(at::equal(a.match(x).rand_idx, first.rand_idx));  // the next call draws anew
  // An odd batch (no guidance, one image) takes the top-left token of each cell and draws nothing.
  const auto odd = a.match(x.narrow(0, 0, 1));
  EXPECT_TRUE(at::equal(odd.rand_idx, at::zeros_like(odd.rand_idx)));
}

TEST(TokenMerging, OnlyBlocksUpToMaxDownsample) {
  nn::TokenMergingOptions o;
  o.ratio = 0.5;
  nn::TokenMerging tome(o, 0);
  tome.set_latent_size(16, 16);
  EXPECT_TRUE(tome.match(at::randn({2, 256, 4})).active());
  EXPECT_FALSE(tome.match(at::randn({2, 64, 4})).active());  // downsampled twice
  o.max_downsample = 2;
  nn::TokenMerging deeper(o, 0);
  deeper.set_latent_size(16, 16);
  EXPECT_TRUE(deeper.match(at::randn({2, 64, 4})).active());
  o.ratio = 0.01;  // r = int(16 * 0.01) = 0: nothing to merge
  nn::TokenMerging tiny(o, 0);
  tiny.set_latent_size(4, 4);
  EXPECT_FALSE(tiny.match(at::randn({2, 16, 4})).active());
}

}  // namespace
