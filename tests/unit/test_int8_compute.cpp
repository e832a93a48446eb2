// Int8 weights and W8A8 kernels: per-channel quantization round trip against float64; Int8Linear and Int8Conv2d
// against the float64 reference of the same integer arithmetic (odd channel counts, batch 1 and 3, 1x1 and 3x3,
// stride 2, tiny maps, NCHW and channels-last) and against the float64 product of the unquantized operands within
// a quantization error bound; the per-row (per-token) quantization of linear layers the same way, with rows of
// ranges far apart; concurrent forward calls on one object. Every test names the int8 path it ran on
// (int8_compute_path(): DNNL_MAX_CPU_ISA=AVX2 forces the vpmaddubsw path, CTest runs that too).
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <iostream>
#include <thread>

#include "test_support.h"
#include "tide/kernels/int8_compute.h"
#include "tide/runtime/error.h"

namespace {

using namespace tide::kernels;

std::string path_note() {
  return "int8 path " + int8_compute_path() + (kernels_halve_weights() ? ", halved weights" : ", 8-bit weights");
}

// Activations as SD layers see them: centred (after GroupNorm) or mostly positive with a negative tail (after
// SiLU / GELU), and all zero.
at::Tensor activations(at::IntArrayRef shape, int kind, at::Generator& gen) {
  const at::Tensor r = at::randn(shape, gen);
  if (kind == 0) return r * 2.5;
  if (kind == 1) return at::silu(r * 3) + 0.01;
  return at::zeros(shape);
}

// Largest |got − want| relative to the output's magnitude; the kernels round the exact integer sums to float32
// once and multiply by the float32 scale once, so this is a few float32 ulps.
double kernel_vs_reference_error(const at::Tensor& got, const at::Tensor& want) {
  return tide::testing::max_abs_diff(got.to(at::kDouble), want) / (want.abs().max().item<double>() + 1e-30);
}

// The weights as the kernels use them, dequantized, float64.
at::Tensor kernel_weights_dequantized(const tide::kernels::QuantizedWeight& stored) {
  const auto k = weights_for_kernels(stored.q, stored.scale);
  return dequantize_per_channel(k.q, k.scale).to(at::kDouble);
}

TEST(Int8Quantize, RoundTripWithinHalfAScaleStep) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const std::vector<std::vector<int64_t>> shapes{{1}, {5}, {1, 1}, {7, 13}, {3, 17, 3, 3}, {33, 5, 1, 1}};
  for (const auto& shape : shapes) {
    for (auto dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
      at::Tensor w = (at::randn(shape, gen) * 0.3).to(dtype);
      if (shape[0] > 2) w[1].zero_();  // a row of zeros
      const auto qw = quantize_per_channel(w);
      ASSERT_EQ(qw.q.scalar_type(), at::kChar);
      ASSERT_EQ(qw.q.sizes(), w.sizes());
      ASSERT_EQ(qw.scale.scalar_type(), at::kFloat);
      ASSERT_EQ(qw.scale.sizes(), at::IntArrayRef({shape[0]}));
      const at::Tensor wd = w.to(at::kDouble).reshape({shape[0], -1});
      const at::Tensor q = qw.q.reshape({shape[0], -1});
      const at::Tensor s = qw.scale.to(at::kDouble);
      for (int64_t o = 0; o < shape[0]; ++o) {
        const double amax = wd[o].abs().max().item<double>();
        if (amax == 0) {
          EXPECT_EQ(s[o].item<double>(), 1.0) << "zero row";
          EXPECT_EQ(q[o].abs().max().item<int>(), 0);
          continue;
        }
        EXPECT_NEAR(s[o].item<double>(), amax / 127, amax / 127 * 1e-7);
        EXPECT_EQ(q[o].abs().max().item<int>(), 127) << "the largest weight uses the full range";
        const double err = (wd[o] - q[o].to(at::kDouble) * s[o]).abs().max().item<double>();
        EXPECT_LE(err, s[o].item<double>() / 2 * (1 + 1e-6)) << "row " << o;
      }
      const at::Tensor deq = dequantize_per_channel(qw.q, qw.scale);
      ASSERT_EQ(deq.scalar_type(), at::kFloat);
      EXPECT_TRUE(deq.reshape({shape[0], -1}).equal((q.to(at::kFloat) * qw.scale.unsqueeze(1))));
    }
  }
}

TEST(Int8Quantize, RejectsWeightsItCannotQuantize) {
  EXPECT_THROW(quantize_per_channel(at::tensor({1.f, NAN})), tide::Error);
  EXPECT_THROW(quantize_per_channel(at::tensor({1.f, INFINITY})), tide::Error);
  EXPECT_THROW(quantize_per_channel(at::empty({0, 3})), tide::Error);
  EXPECT_THROW(quantize_per_channel(at::ones({3}, at::kInt)), tide::Error);
  EXPECT_THROW(quantize_per_channel(at::Tensor()), tide::Error);
}

TEST(Int8Compute, ReportsItsPath) {
  const std::string path = int8_compute_path();
  std::cout << "[ int8     ] " << path_note() << ", W8A8 pays off: " << (int8_compute_available() ? "yes" : "no")
            << std::endl;
  RecordProperty("int8_path", path);
  const std::vector<std::string> known{"amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "none"};
  EXPECT_NE(std::find(known.begin(), known.end(), path), known.end()) << path;
  const bool int32_products = path == "amx" || path == "avx512_vnni" || path == "avx_vnni";
  EXPECT_EQ(kernels_halve_weights(), !int32_products);
  EXPECT_EQ(int8_compute_available(), path != "none");
}

// Halved weights (vpmaddubsw paths): round-half-even(q / 2) in [-64, 64], twice the scale, so within one stored
// step of the stored weights and never saturating the int16 pair sums; elsewhere the stored weights themselves.
TEST(Int8Compute, WeightsForTheKernels) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto stored = quantize_per_channel(at::randn({9, 40}, gen));
  const auto k = weights_for_kernels(stored.q, stored.scale);
  ASSERT_EQ(k.q.scalar_type(), at::kChar);
  ASSERT_EQ(k.q.sizes(), stored.q.sizes());
  if (!kernels_halve_weights()) {
    EXPECT_TRUE(at::equal(k.q, stored.q)) << path_note();
    EXPECT_TRUE(at::equal(k.scale, stored.scale)) << path_note();
    tide::testing::note_path_not_exercised("halved int8 weights", "this CPU multiplies u8·s8 into int32 (" + path_note() + ")");
  } else {
    EXPECT_TRUE(at::equal(k.scale, stored.scale * 2)) << path_note();
    const at::Tensor q = stored.q.to(at::kInt), half = k.q.to(at::kInt);
    EXPECT_LE(half.abs().max().item<int>(), 64);
    EXPECT_LE((half * 2 - q).abs().max().item<int>(), 1);
    // Odd values round half to even: 3 -> 2, 5 -> 2, -3 -> -2, 127 -> 64.
    const auto odd = weights_for_kernels(at::tensor({3, 5, -3, 127, -127, 1}, at::kChar), at::ones({6}));
    EXPECT_TRUE(at::equal(odd.q, at::tensor({2, 2, -2, 64, -64, 0}, at::kChar))) << odd.q;
  }
}

TEST(Int8Compute, ActivationRangeIncludesZero) {
  const auto positive = choose_activation_quantization(at::tensor({1.f, 3.f}), 255);
  EXPECT_EQ(positive.zero_point, 0);
  EXPECT_FLOAT_EQ(positive.scale, 3.f / 255);
  const auto mixed = choose_activation_quantization(at::tensor({-1.f, 3.f}), 255);
  EXPECT_EQ(mixed.zero_point, 64);  // round(1 / (4/255)) = round(63.75)
  const auto zeros = choose_activation_quantization(at::zeros({4}), 127);
  EXPECT_EQ(zeros.scale, 1.f);
  EXPECT_EQ(zeros.zero_point, 0);
  const auto tiny = choose_activation_quantization(at::full({4}, 1e-35f), 255);  // 1/scale would overflow
  EXPECT_EQ(tiny.scale, 1.f);
  EXPECT_EQ(tiny.zero_point, 0);
  EXPECT_THROW(choose_activation_quantization(at::tensor({1.f, NAN}), 255), tide::Error);
}

struct LinearCase {
  std::vector<int64_t> batch;
  int64_t in, out;
};

// Per tensor and per row (token), against the float64 reference of the same integer arithmetic and against the
// product of the unquantized operands within the quantization's step (per row: each row's own).
TEST(Int8Linear, MatchesItsReferenceAndTheFloatProduct) {
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const std::vector<LinearCase> cases{{{1}, 1, 1},       {{3}, 7, 13},     {{2, 5}, 33, 17},   {{1}, 320, 2560},
                                      {{3, 4}, 100, 37}, {{77}, 768, 320}, {{130}, 1280, 320}, {{5}, 16, 48},
                                      {{9}, 2560, 64}};
  for (const auto scales : {ActivationScales::per_tensor, ActivationScales::per_row}) {
    const bool per_row = scales == ActivationScales::per_row;
    for (const auto& c : cases) {
      const at::Tensor w = at::randn({c.out, c.in}, gen) / std::sqrt(double(c.in));
      const at::Tensor bias = at::randn({c.out}, gen);
      const auto qw = quantize_per_channel(w);
      const at::Tensor w_hat = kernel_weights_dequantized(qw);
      for (bool with_bias : {true, false}) {
        const at::Tensor b = with_bias ? bias : at::Tensor();
        const Int8Linear layer(qw.q, qw.scale, b, /*typical_rows=*/64, scales);
        for (int kind : {0, 1, 2}) {
          std::vector<int64_t> shape = c.batch;
          shape.push_back(c.in);
          at::Tensor x = activations(shape, kind, gen);
          // Per row: rows of ranges a thousand times apart, as tokens of one image can be.
          if (per_row) x = x * at::pow(10.0, -3 * at::rand(shape, gen).narrow(-1, 0, 1));
          const at::Tensor y = layer.forward(x);
          std::vector<int64_t> out_shape = c.batch;
          out_shape.push_back(c.out);
          ASSERT_EQ(y.sizes(), at::IntArrayRef(out_shape));
          ASSERT_EQ(y.scalar_type(), at::kFloat);
          const std::string what = path_note() + (per_row ? ", per-row" : ", per-tensor") + " linear " +
                                   std::to_string(c.in) + "→" + std::to_string(c.out) + " rows " +
                                   std::to_string(x.numel() / c.in) + " kind " + std::to_string(kind) +
                                   (with_bias ? " bias" : "");
          const at::Tensor ref = int8_linear_reference(x, qw.q, qw.scale, b, scales);
          EXPECT_LE(kernel_vs_reference_error(y, ref), 1e-6) << what;
          if (kind == 2) continue;
          // Against the product of the unquantized operands: |x·w − x̂·ŵ| ≤ Σ |x||w − ŵ| + Σ |ŵ||x − x̂| with ŵ
          // the weights the kernels use and |x − x̂| ≤ step: per tensor a whole step (half of rounding, up to
          // half lost to the zero point's rounding at the clamped end); per row half the row's step and a hair
          // of float32 rounding.
          const at::Tensor x2 = x.reshape({-1, c.in});  // [M, in]
          const at::Tensor step =
              per_row ? 0.5001 * choose_row_quantization(x2.contiguous()).scale.to(at::kDouble).unsqueeze(1)
                      : at::full({1, 1}, double(choose_activation_quantization(x).scale), at::kDouble);
          at::Tensor exact = at::matmul(x2.to(at::kDouble), w.to(at::kDouble).t());  // [M, out]
          if (with_bias) exact = exact + bias.to(at::kDouble);
          const at::Tensor bound = at::matmul(x2.to(at::kDouble).abs(), (w.to(at::kDouble) - w_hat).abs().t()) +
                                   step * w_hat.abs().sum(1).unsqueeze(0);
          const double floor = per_row ? 1e-3 : 1;  // per row, some outputs are a thousandth of the others
          const at::Tensor excess =
              (y.reshape({-1, c.out}).to(at::kDouble) - exact).abs() - bound - 1e-5 * (exact.abs() + floor);
          EXPECT_LE(excess.max().item<double>(), 0) << what;
        }
      }
    }
  }
}

TEST(Int8Compute, RowQuantizationTakesEachRowsLargestMagnitude) {
  const auto rq = choose_row_quantization(at::tensor({-2.f, 1.f, 0.f, 0.f, 1e-35f, -1e-35f, 0.5f, 0.25f}).reshape({4, 2}));
  const std::vector<float> want{2.f / 127, 1.f, 1.f, 0.5f / 127};  // zero and tiny rows: scale 1
  for (int r = 0; r < 4; ++r) {
    EXPECT_FLOAT_EQ(rq.scale[r].item<float>(), want[r]) << "row " << r;
    EXPECT_EQ(rq.inverse_scale[r].item<float>(), 1.f / rq.scale[r].item<float>()) << "row " << r;
  }
  // Every row length around the vector width, the largest magnitude anywhere in the row, either sign.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int64_t k : {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 1029}) {
    const at::Tensor x = at::randn({13, k}, gen) * at::rand({13, 1}, gen) * 10;
    const at::Tensor expected = at::abs(x).amax(1) / 127;
    EXPECT_TRUE(at::equal(choose_row_quantization(x).scale, expected)) << "row length " << k;
  }
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    at::Tensor x = at::randn({5, 37});
    x[3][36] = bad;
    EXPECT_THROW(choose_row_quantization(x), tide::Error) << bad;
  }
  EXPECT_THROW(choose_row_quantization(at::randn({4, 6}).t()), tide::Error);  // not contiguous
}

struct ConvCase {
  int64_t b, in, out, k, stride, padding, h, w;
};

TEST(Int8Conv2d, MatchesItsReferenceAndTheFloatConvolution) {
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const std::vector<ConvCase> cases{
      {1, 3, 5, 3, 1, 1, 7, 5},  {3, 17, 9, 3, 1, 1, 9, 9},   {1, 32, 48, 3, 2, 1, 9, 8},   {3, 20, 13, 1, 1, 0, 6, 7},
      {1, 4, 4, 3, 1, 1, 1, 1},  {2, 13, 7, 3, 2, 1, 2, 3},   {1, 64, 64, 3, 1, 1, 16, 16}, {2, 40, 80, 1, 1, 0, 5, 5},
      {1, 8, 16, 3, 1, 0, 4, 6}, {1, 320, 320, 3, 1, 1, 8, 8}};
  for (const auto& c : cases) {
    const at::Tensor w = at::randn({c.out, c.in, c.k, c.k}, gen) / std::sqrt(double(c.in * c.k * c.k));
    const at::Tensor bias = at::randn({c.out}, gen);
    const auto qw = quantize_per_channel(w);
    const at::Tensor w_hat = kernel_weights_dequantized(qw);
    for (bool with_bias : {true, false}) {
      const at::Tensor b = with_bias ? bias : at::Tensor();
      const Int8Conv2d layer(qw.q, qw.scale, b, c.stride, c.padding);
      // The UNet stores its weights channels last; the kernel reads them as they are (no plain copy kept).
      const Int8Conv2d from_channels_last(qw.q.contiguous(at::MemoryFormat::ChannelsLast), qw.scale, b, c.stride,
                                          c.padding);
      for (int kind : {0, 1, 2}) {
        const at::Tensor x = activations({c.b, c.in, c.h, c.w}, kind, gen);
        for (bool channels_last : {false, true}) {
          const at::Tensor input = channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
          const at::Tensor y = layer.forward(input);
          const std::string what = path_note() + ", conv " + std::to_string(c.in) + "→" + std::to_string(c.out) + " k" +
                                   std::to_string(c.k) + " s" + std::to_string(c.stride) + " p" +
                                   std::to_string(c.padding) + " " + std::to_string(c.b) + "x" + std::to_string(c.h) +
                                   "x" + std::to_string(c.w) + " kind " + std::to_string(kind) +
                                   (channels_last ? " NHWC" : " NCHW") + (with_bias ? " bias" : "");
          EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast)) << what;
          const at::Tensor ref = int8_conv2d_reference(x, qw.q, qw.scale, b, c.stride, c.padding);
          ASSERT_EQ(y.sizes(), ref.sizes()) << what;
          EXPECT_LE(kernel_vs_reference_error(y, ref), 1e-6) << what;
          EXPECT_TRUE(at::equal(from_channels_last.forward(input), y)) << what << ", weights stored channels last";
          if (kind == 2) continue;
          const auto aq = choose_activation_quantization(x);
          const at::Tensor xd = x.to(at::kDouble);
          at::Tensor exact = at::conv2d(xd, w.to(at::kDouble), {}, c.stride, c.padding);
          if (with_bias) exact = exact + bias.to(at::kDouble).reshape({1, -1, 1, 1});
          // The linear bound, summed over each output's window (padding contributes nothing: zero is exact).
          const at::Tensor bound = at::conv2d(xd.abs(), (w.to(at::kDouble) - w_hat).abs(), {}, c.stride, c.padding) +
                                   aq.scale * at::conv2d(at::ones_like(xd), w_hat.abs(), {}, c.stride, c.padding);
          const at::Tensor excess = (y.to(at::kDouble) - exact).abs() - bound - 1e-5 * (exact.abs() + 1);
          EXPECT_LE(excess.max().item<double>(), 0) << what;
        }
      }
    }
  }
}

TEST(Int8Compute, ConcurrentForwardCallsOnOneObject) {
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const auto lw = quantize_per_channel(at::randn({96, 72}, gen));
  const auto cw = quantize_per_channel(at::randn({24, 16, 3, 3}, gen));
  const at::Tensor linear_bias = at::randn({96}, gen), conv_bias = at::randn({24}, gen);
  const Int8Linear linear(lw.q, lw.scale, linear_bias);
  const Int8Conv2d conv(cw.q, cw.scale, conv_bias, 1, 1);
  // Each thread its own shapes (so plans are built concurrently too) and its own inputs.
  std::vector<at::Tensor> lx, cx;
  for (int t = 0; t < 2; ++t) {
    lx.push_back(at::randn({40 + 9 * t, 72}, gen));
    cx.push_back(at::randn({1 + t, 16, 11 + 2 * t, 9}, gen));
  }
  std::vector<at::Tensor> ly(2), cy(2);
  std::vector<double> worst(2, 0.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      c10::InferenceMode thread_guard;
      for (int i = 0; i < 20; ++i) {
        const at::Tensor a = linear.forward(lx[t]), b = conv.forward(cx[t]);
        if (i == 0) {
          ly[t] = a;
          cy[t] = b;
        } else {
          worst[t] = std::max({worst[t], tide::testing::max_abs_diff(a, ly[t]), tide::testing::max_abs_diff(b, cy[t])});
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 2; ++t) {
    EXPECT_EQ(worst[t], 0.0) << path_note() << ": repeated calls in thread " << t << " differ";
    EXPECT_LE(kernel_vs_reference_error(ly[t], int8_linear_reference(lx[t], lw.q, lw.scale, linear_bias)), 1e-6)
        << path_note();
    EXPECT_LE(kernel_vs_reference_error(cy[t], int8_conv2d_reference(cx[t], cw.q, cw.scale, conv_bias, 1, 1)), 1e-6)
        << path_note();
  }
}

// oneDNN (Debian's, OpenMP) runs on omp_get_max_threads() of the calling thread: forward() must leave that at
// at::get_num_threads(), also in a thread libtorch has not run anything in yet.
extern "C" int omp_get_max_threads();

TEST(Int8Compute, ComputesOnTheCallersThreadCount) {
  c10::InferenceMode guard;
  const int before = at::get_num_threads();
  const auto qw = quantize_per_channel(at::randn({8, 8}));
  const Int8Linear linear(qw.q, qw.scale, at::Tensor());
  const at::Tensor x = at::randn({4, 8});
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    int seen = 0;
    std::thread([&] {
      c10::InferenceMode thread_guard;
      linear.forward(x);
      seen = omp_get_max_threads();
    }).join();
    EXPECT_EQ(seen, threads) << path_note();
  }
  at::set_num_threads(before);
}

TEST(Int8Compute, BadInputsAreErrors) {
  const auto qw = quantize_per_channel(at::randn({4, 6}));
  const Int8Linear linear(qw.q, qw.scale, at::Tensor());
  EXPECT_THROW(linear.forward(at::randn({2, 5})), tide::Error);
  EXPECT_THROW(linear.forward(at::full({2, 6}, NAN)), tide::Error);
  const Int8Linear per_row(qw.q, qw.scale, at::Tensor(), 4096, ActivationScales::per_row);
  EXPECT_THROW(per_row.forward(at::randn({2, 5})), tide::Error);
  EXPECT_THROW(per_row.forward(at::full({2, 6}, INFINITY)), tide::Error);
  EXPECT_THROW(Int8Linear(qw.q.to(at::kFloat), qw.scale, at::Tensor()), tide::Error);
  EXPECT_THROW(Int8Linear(qw.q, qw.scale.narrow(0, 0, 3), at::Tensor()), tide::Error);
  const auto cw = quantize_per_channel(at::randn({4, 3, 3, 3}));
  const Int8Conv2d conv(cw.q, cw.scale, at::Tensor(), 1, 0);
  EXPECT_THROW(conv.forward(at::randn({1, 2, 5, 5})), tide::Error);
  EXPECT_THROW(conv.forward(at::randn({1, 3, 2, 2})), tide::Error);  // smaller than the kernel without padding
  EXPECT_THROW(Int8Conv2d(cw.q, cw.scale, at::Tensor(), 0, 1), tide::Error);
}

}  // namespace
