#include "tide/kernels/widen.h"

#include <ATen/Parallel.h>

#include "tide/kernels/map_dense.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TIDE_X86 1
#endif

namespace tide::kernels {
namespace {

#ifdef TIDE_X86
const bool kHasF16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");

__attribute__((target("avx2,f16c"))) int64_t widen_half_avx2(const at::Half* from, float* to, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 8));
    _mm256_storeu_ps(to + i, _mm256_cvtph_ps(a));
    _mm256_storeu_ps(to + i + 8, _mm256_cvtph_ps(b));
  }
  return i;
}

// bfloat16 is float32's upper half: zero-extend each value to 32 bits and shift it up.
__attribute__((target("avx2"))) int64_t widen_bfloat16_avx2(const at::BFloat16* from, float* to, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(a), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + i + 8), _mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
  return i;
}
#endif

template <typename Narrow>
void widen(const Narrow* from, float* to, int64_t n, bool allow_vector) {
  int64_t i = 0;
#ifdef TIDE_X86
  if (allow_vector && kHasF16c) {
    if constexpr (std::is_same_v<Narrow, at::Half>) i = widen_half_avx2(from, to, n);
    else i = widen_bfloat16_avx2(from, to, n);
  }
#endif
  for (; i < n; ++i) to[i] = static_cast<float>(from[i]);
}

template <typename Narrow>
at::Tensor widen_tensor(const at::Tensor& narrow) {
  return map_dense<Narrow, float>(narrow, at::kFloat,
                                  [](const Narrow* from, float* to, int64_t n) { widen(from, to, n, true); });
}

}  // namespace

void widen_half(const at::Half* from, float* to, int64_t n, bool allow_vector) { widen(from, to, n, allow_vector); }

void widen_bfloat16(const at::BFloat16* from, float* to, int64_t n, bool allow_vector) {
  widen(from, to, n, allow_vector);
}

at::Tensor widen_to_float(const at::Tensor& narrow) {
  if (narrow.device().is_cpu() && narrow.scalar_type() == at::kHalf) return widen_tensor<at::Half>(narrow);
  if (narrow.device().is_cpu() && narrow.scalar_type() == at::kBFloat16) return widen_tensor<at::BFloat16>(narrow);
  return narrow.to(at::kFloat);
}

}  // namespace tide::kernels
