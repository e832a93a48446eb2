// 16-bit weights widened to float32 (kernels/widen.h): every float16 and bfloat16 bit pattern against a decoding
// written out here, through the vector and the scalar paths, at lengths that leave every tail; tensors keep
// their layout (channels last, HWIO), and a layer's widened weight is libtorch's conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "test_support.h"
#include "tide/kernels/widen.h"
#include "tide/nn/weight_storage.h"

namespace {

// IEEE binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits; subnormals below exponent 1.
double decode_half(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 31, mantissa = bits & 1023;
  const double magnitude = exponent == 31  ? (mantissa ? NAN : INFINITY)
                           : exponent == 0 ? std::ldexp(mantissa, -24)
                                           : std::ldexp(1024 + mantissa, exponent - 25);
  return sign ? -magnitude : magnitude;
}

// bfloat16: float32's upper 16 bits.
float decode_bfloat16(uint16_t bits) {
  const uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

bool kernels_hwio(const at::Tensor& w) { return w.permute({2, 3, 1, 0}).is_contiguous(); }

std::vector<uint16_t> every_pattern() {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  return all;
}

void expect_widened(const std::vector<float>& got, const std::vector<uint16_t>& bits, bool half, size_t offset) {
  for (size_t i = 0; i < got.size(); ++i) {
    const uint16_t b = bits[offset + i];
    const double want = half ? decode_half(b) : double(decode_bfloat16(b));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got[i])) << "pattern " << b;
    } else {
      ASSERT_EQ(double(got[i]), want) << "pattern " << b;
      ASSERT_EQ(std::signbit(got[i]), std::signbit(want)) << "pattern " << b;  // -0 stays -0
    }
  }
}

TEST(Widen, EveryBitPatternBothPathsEveryTail) {
  const std::vector<uint16_t> bits = every_pattern();
  for (bool vector : {true, false}) {
    for (bool half : {true, false}) {
      SCOPED_TRACE(std::string(half ? "float16" : "bfloat16") + (vector ? ", vector path" : ", scalar path"));
      std::vector<float> out(bits.size());
      if (half) tide::kernels::widen_half(reinterpret_cast<const at::Half*>(bits.data()), out.data(), int64_t(out.size()), vector);
      else tide::kernels::widen_bfloat16(reinterpret_cast<const at::BFloat16*>(bits.data()), out.data(), int64_t(out.size()), vector);
      expect_widened(out, bits, half, 0);
      // Short runs from odd offsets: the vector loop's remainders, and nothing written past n.
      for (size_t offset : {size_t(1), size_t(7)}) {
        for (size_t n = 0; n <= 40; ++n) {
          std::vector<float> part(n + 1, 12345.f);
          const uint16_t* from = bits.data() + 15360 + offset;  // 1.0 onwards in float16: ordinary values
          if (half) tide::kernels::widen_half(reinterpret_cast<const at::Half*>(from), part.data(), int64_t(n), vector);
          else tide::kernels::widen_bfloat16(reinterpret_cast<const at::BFloat16*>(from), part.data(), int64_t(n), vector);
          ASSERT_EQ(part[n], 12345.f) << "wrote past " << n;
          part.pop_back();
          expect_widened(part, bits, half, 15360 + offset);
        }
      }
    }
  }
}

TEST(Widen, TensorsKeepTheirLayout) {
  at::manual_seed(5);
  for (at::ScalarType narrow : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(narrow));
    const at::Tensor w = (at::randn({37, 19, 3, 3}) * 10).to(narrow);
    const at::Tensor channels_last = w.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor hwio = w.permute({2, 3, 1, 0}).contiguous().permute({3, 2, 0, 1});
    const at::Tensor strided = w.slice(1, 0, 19, 2);  // not dense: widened from a contiguous copy
    for (const at::Tensor& t : {w, channels_last, hwio, strided}) {
      const at::Tensor f = tide::kernels::widen_to_float(t);
      EXPECT_EQ(f.scalar_type(), at::kFloat);
      EXPECT_EQ(f.sizes(), t.sizes());
      if (t.is_non_overlapping_and_dense()) {
        EXPECT_EQ(f.strides(), t.strides());
      }
      EXPECT_TRUE(at::equal(f, t.to(at::kFloat)));
    }
    EXPECT_EQ(tide::kernels::widen_to_float(at::empty({0, 4}, at::TensorOptions(narrow))).numel(), 0);
    // A layer's 16-bit weight, widened for computing.
    EXPECT_TRUE(at::equal(tide::nn::weight_for_compute(hwio, at::Tensor(), at::kFloat), hwio.to(at::kFloat)));
    EXPECT_TRUE(kernels_hwio(tide::nn::weight_for_compute(hwio, at::Tensor(), at::kFloat)));
  }
}

}  // namespace
