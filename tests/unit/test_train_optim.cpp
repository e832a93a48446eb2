// The optimizer side of textual inversion: diffusers' learning-rate schedules against their formulas, and
// AdamW against torch's update rule worked out by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "tide/runtime/error.h"
#include "tide/train/adamw.h"
#include "tide/train/lr_schedule.h"

namespace {
using namespace tide::train;

LrSchedule schedule(const std::string& name, int warmup = 10, int total = 100, int cycles = 1, int world = 1) {
  return LrSchedule({name, 2.0, warmup, total, cycles, world});
}

TEST(LrSchedule, ConstantAndWarmup) {
  EXPECT_DOUBLE_EQ(schedule("constant").lr(0), 2.0);
  EXPECT_DOUBLE_EQ(schedule("constant").lr(5000), 2.0);
  const auto w = schedule("constant_with_warmup");
  EXPECT_DOUBLE_EQ(w.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(w.lr(5), 1.0);
  EXPECT_DOUBLE_EQ(w.lr(10), 2.0);
  EXPECT_DOUBLE_EQ(w.lr(99), 2.0);
}

TEST(LrSchedule, LinearCosinePolynomialFormulas) {
  const double pi = std::acos(-1.0);
  const auto linear = schedule("linear");
  EXPECT_DOUBLE_EQ(linear.lr(3), 2.0 * 3 / 10);
  EXPECT_DOUBLE_EQ(linear.lr(10), 2.0);
  EXPECT_DOUBLE_EQ(linear.lr(55), 2.0 * 45 / 90);
  EXPECT_DOUBLE_EQ(linear.lr(100), 0.0);
  EXPECT_DOUBLE_EQ(linear.lr(150), 0.0);

  const auto cosine = schedule("cosine");  // half a period from warmup to the end
  EXPECT_DOUBLE_EQ(cosine.lr(10), 2.0);
  EXPECT_NEAR(cosine.lr(55), 2.0 * 0.5 * (1 + std::cos(pi * 0.5)), 1e-15);
  EXPECT_NEAR(cosine.lr(100), 0.0, 1e-15);
  EXPECT_NEAR(cosine.lr(32), 2.0 * 0.5 * (1 + std::cos(pi * 22.0 / 90)), 1e-15);

  const auto restarts = schedule("cosine_with_restarts", 10, 100, 2);
  const double p = 30.0 / 90;  // progress at step 40: two cycles -> (2p mod 1)
  EXPECT_NEAR(restarts.lr(40), 2.0 * 0.5 * (1 + std::cos(pi * std::fmod(2 * p, 1.0))), 1e-15);
  EXPECT_NEAR(restarts.lr(55), 2.0, 1e-12);  // progress 0.5: the restart
  EXPECT_DOUBLE_EQ(restarts.lr(100), 0.0);

  const auto poly = schedule("polynomial");
  const double lr_end = 1e-7;
  EXPECT_NEAR(poly.lr(55), (2.0 - lr_end) * 0.5 + lr_end, 1e-15);
  EXPECT_NEAR(poly.lr(100), lr_end, 1e-15);
  EXPECT_NEAR(poly.lr(200), lr_end, 1e-15);
}

TEST(LrSchedule, WorldSizeStepsLikeAccelerateAndErrors) {
  // accelerate builds the schedule with N x the steps and steps it N times per update: the same lr per update.
  for (const char* name : {"constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"})
    for (int update : {0, 3, 10, 57, 99}) EXPECT_NEAR(schedule(name, 10, 100, 3, 4).lr(update), schedule(name, 10, 100, 3).lr(update), 1e-12) << name;
  EXPECT_THROW(schedule("exponential"), tide::Error);
  EXPECT_THROW(LrSchedule({"polynomial", 1e-8, 0, 10, 1, 1}), tide::Error);  // lr must exceed lr_end
}

TEST(AdamW, TwoStepsMatchTorchFormula) {
  AdamWConfig config;  // diffusers' defaults: 0.9, 0.999, 1e-2, 1e-8
  AdamW adam(config, {1, 2});
  at::Tensor p = at::tensor({0.5f, -1.0f}).reshape({1, 2});
  const std::vector<std::vector<double>> grads = {{0.1, -0.2}, {-0.3, 0.4}};
  const double lr = 0.05;
  std::vector<double> ref = {0.5, -1.0}, m = {0, 0}, v = {0, 0};
  for (int step = 1; step <= 2; ++step) {
    const auto& g = grads[static_cast<size_t>(step - 1)];
    at::Tensor grad = at::tensor({static_cast<float>(g[0]), static_cast<float>(g[1])}).reshape({1, 2});
    adam.step(p, grad, lr);
    for (int i = 0; i < 2; ++i) {
      ref[i] *= 1 - lr * config.weight_decay;
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const double mhat_step = lr / (1 - std::pow(0.9, step));
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.999, step)) + config.eps;
      ref[i] -= mhat_step * m[i] / denom;
    }
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(p[0][i].item<double>(), ref[i], 1e-6) << "step " << step;
  }
  EXPECT_EQ(adam.steps(), 2);
  // Restoring the state continues identically.
  AdamW resumed(config, {1, 2});
  resumed.restore(adam.steps(), adam.exp_avg(), adam.exp_avg_sq());
  at::Tensor a = p.clone(), b = p.clone();
  const at::Tensor g = at::tensor({0.01f, 0.02f}).reshape({1, 2});
  adam.step(a, g, lr);
  resumed.step(b, g, lr);
  EXPECT_TRUE(a.equal(b));
  EXPECT_THROW(resumed.restore(1, at::zeros({3}), at::zeros({3})), tide::Error);
}

}  // namespace
