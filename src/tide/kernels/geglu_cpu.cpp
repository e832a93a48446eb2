#include "tide/kernels/geglu_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tide/kernels/exp_avx2.h"
#include "tide/kernels/gemm_cpu.h"

namespace tide::kernels {
namespace {

constexpr float kSqrtHalf = 0.70710678118654752f;          // 1/√2
constexpr float kInvSqrtTwoPi = 0.39894228040143268f;     // 1/√(2π)
constexpr float kP = 0.3275911f, kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f,
                kA4 = -1.453152027f, kA5 = 1.061405429f;  // Abramowitz & Stegun 7.1.26

// 1 + erf(x/√2) (twice the normal CDF) and exp(-x²/2), one element.
inline void cdf2_and_gauss(float x, float& cdf2, float& gauss) {
  const float z = x * kSqrtHalf, a = std::fabs(z), t = 1.0f / (1.0f + kP * a);
  const float r = (((kA5 * t + kA4) * t + kA3) * t + kA2) * t + kA1;
  gauss = std::exp(-z * z);
  const float tail = t * r * gauss;  // 1 - erf(|z|)
  cdf2 = z < 0 ? tail : 2.0f - tail;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline void cdf2_and_gauss(__m256 x, __m256& cdf2, __m256& gauss) {
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(kSqrtHalf));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(kP), a, _mm256_set1_ps(1.0f)));
  __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(kA5), t, _mm256_set1_ps(kA4));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kA3));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kA2));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kA1));
  gauss = exp_nonpositive(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z)));
  const __m256 tail = _mm256_mul_ps(_mm256_mul_ps(t, r), gauss);
  const __m256 negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  cdf2 = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), tail), tail, negative);
}

// out[i] = value[i] · gelu(gate[i]) for i < n.
__attribute__((target("avx2,fma"))) void forward_row(const float* value, const float* gate, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    __m256 cdf2, gauss;
    cdf2_and_gauss(x, cdf2, gauss);
    const __m256 gelu = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), cdf2);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(gelu, _mm256_loadu_ps(value + i)));
  }
  for (; i < n; ++i) {
    float cdf2, gauss;
    cdf2_and_gauss(gate[i], cdf2, gauss);
    out[i] = 0.5f * gate[i] * cdf2 * value[i];
  }
}

// d_value[i] = gelu(gate[i]) · grad[i], d_gate[i] = gelu'(gate[i]) · value[i] · grad[i], where
// gelu'(x) = ½(1 + erf(x/√2)) + x · exp(-x²/2)/√(2π).
__attribute__((target("avx2,fma"))) void backward_row(const float* value, const float* gate, const float* grad,
                                                      float* d_value, float* d_gate, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i), g = _mm256_loadu_ps(grad + i);
    __m256 cdf2, gauss;
    cdf2_and_gauss(x, cdf2, gauss);
    const __m256 cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), cdf2);
    _mm256_storeu_ps(d_value + i, _mm256_mul_ps(_mm256_mul_ps(x, cdf), g));
    const __m256 slope = _mm256_fmadd_ps(_mm256_mul_ps(x, _mm256_set1_ps(kInvSqrtTwoPi)), gauss, cdf);
    _mm256_storeu_ps(d_gate + i, _mm256_mul_ps(slope, _mm256_mul_ps(_mm256_loadu_ps(value + i), g)));
  }
  for (; i < n; ++i) {
    float cdf2, gauss;
    cdf2_and_gauss(gate[i], cdf2, gauss);
    const float cdf = 0.5f * cdf2;
    d_value[i] = gate[i] * cdf * grad[i];
    d_gate[i] = (cdf + gate[i] * kInvSqrtTwoPi * gauss) * value[i] * grad[i];
  }
}
#endif

}  // namespace

bool geglu_kernel_supported(const at::Tensor& projected) {
#if defined(__x86_64__)
  return projected.defined() && projected.device().is_cpu() && projected.scalar_type() == at::kFloat &&
         projected.dim() >= 1 && projected.size(-1) % 2 == 0 && projected.is_contiguous() && gemm_f32_available();
#else
  return false;
#endif
}

at::Tensor geglu_forward(const at::Tensor& projected) {
  TORCH_CHECK(geglu_kernel_supported(projected), "geglu_forward: needs a contiguous float32 CPU tensor [..., 2n] and AVX2/FMA");
  const int64_t n = projected.size(-1) / 2, rows = n == 0 ? 0 : projected.numel() / (2 * n);
  std::vector<int64_t> shape = projected.sizes().vec();
  shape.back() = n;
  at::Tensor out = at::empty(shape, projected.options());
#if defined(__x86_64__)
  const float* p = projected.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) forward_row(p + r * 2 * n, p + r * 2 * n + n, o + r * n, n);
  });
#endif
  return out;
}

at::Tensor geglu_backward(const at::Tensor& projected, const at::Tensor& grad_in) {
  TORCH_CHECK(geglu_kernel_supported(projected), "geglu_backward: needs a contiguous float32 CPU tensor [..., 2n] and AVX2/FMA");
  const int64_t n = projected.size(-1) / 2, rows = n == 0 ? 0 : projected.numel() / (2 * n);
  std::vector<int64_t> shape = projected.sizes().vec();
  shape.back() = n;
  TORCH_CHECK(grad_in.scalar_type() == at::kFloat && grad_in.sizes() == at::IntArrayRef(shape),
              "geglu_backward: the gradient must be float32 with the output's shape");
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor d = at::empty_like(projected);
#if defined(__x86_64__)
  const float* p = projected.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* dp = d.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      backward_row(p + r * 2 * n, p + r * 2 * n + n, g + r * n, dp + r * 2 * n, dp + r * 2 * n + n, n);
  });
#endif
  return d;
}

}  // namespace tide::kernels
