#include "tide/bench/peak.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>

#include "tide/runtime/cpu_features.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tide::bench {
namespace {

// Each returns the float ops done. Enough independent accumulators to cover FMA latency × ports.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iterations, float* sink) {
  constexpr int kAcc = 16;
  __m512 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
  // Summed through memory: GCC 12's _mm512_reduce_add_ps warns about an uninitialized variable in its header.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  *sink = sum;
  return 2.0 * 16 * kAcc * static_cast<double>(iterations);
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iterations, float* sink) {
  constexpr int kAcc = 12;
  __m256 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  alignas(32) float lanes[8];
  __m256 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(lanes, s);
  *sink = lanes[0] + lanes[7];
  return 2.0 * 8 * kAcc * static_cast<double>(iterations);
}
#endif

double fma_loop_scalar(int64_t iterations, float* sink) {
  float acc[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int64_t it = 0; it < iterations; ++it)
    for (float& x : acc) x = x * 0.999999f + 1e-7f;
  *sink = acc[0] + acc[7];
  return 2.0 * 8 * static_cast<double>(iterations);
}

}  // namespace

PeakResult measure_fma_peak() {
  PeakResult r;
  double (*loop)(int64_t, float*) = fma_loop_scalar;
  r.isa = "scalar";
#if defined(__x86_64__)
  if (runtime::has_cpu_feature("avx512f")) {
    loop = fma_loop_avx512;
    r.isa = "avx512";
  } else if (runtime::has_cpu_feature("avx2") && runtime::has_cpu_feature("fma")) {
    loop = fma_loop_avx2;
    r.isa = "avx2";
  }
#endif
  r.threads = at::get_num_threads();
  const int64_t iterations = 20'000'000;  // ~0.1-0.3 s per thread on a 3 GHz core
  for (int round = 0; round < 3; ++round) {
    std::vector<float> sinks(r.threads);
    std::vector<double> ops(r.threads, 0.0);
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, r.threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) ops[t] = loop(iterations, &sinks[t]);
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double total = 0;
    for (double o : ops) total += o;
    r.gflops = std::max(r.gflops, total / seconds * 1e-9);
  }
  return r;
}

}  // namespace tide::bench
