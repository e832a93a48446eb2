// exp of 8 floats at a time for the CPU kernels that need it inside their own loops (the attention softmax,
// GEGLU's GELU).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

namespace tide::kernels {

// Cephes' expf for x <= 0, the constants every vector width uses (kernels/gemm_avx512.cpp has the 16-lane one):
// range reduction by ln 2 (split in two parts for precision), a degree-5 polynomial, rel. error ~1e-7. Clamped at
// kExpMin so that results stay normal floats (denormals are slow).
inline constexpr float kExpMin = -87.0f, kLog2e = 1.44269504088896341f, kLn2High = 0.693359375f,
                       kLn2Low = -2.12194440e-4f;
inline constexpr float kExpPolynomial[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// exp for x <= 0, 8 lanes.
__attribute__((target("avx2,fma"))) inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(kExpMin));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kLn2High), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kLn2Low), x);
  __m256 y = _mm256_set1_ps(kExpPolynomial[0]);
  for (int i = 1; i < 6; ++i) y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kExpPolynomial[i]));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

}  // namespace tide::kernels
#endif
