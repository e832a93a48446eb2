#include "tide/bench/attention_bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <ctime>

#include "tide/kernels/attention_cpu.h"
#include "tide/nn/attention.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"

namespace tide::bench {

AttentionBenchResult run_attention_bench(const AttentionBenchSettings& s) {
  if (s.batch < 1 || s.heads < 1 || s.tokens < 1 || s.head_dim < 1 || s.context_tokens < 0 || s.runs < 1)
    throw Error("tide bench --attention: batch, heads, tokens, head dim and runs must be positive");
  c10::InferenceMode inference;
  const int64_t lk = s.context_tokens > 0 ? s.context_tokens : s.tokens;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  // As the attention module makes them: projections [B, L, H·d] split into heads [B, H, L, d] (strided).
  auto heads = [&](int64_t l) {
    return at::randn({s.batch, l, s.heads, s.head_dim}, gen, at::kFloat).transpose(1, 2);
  };
  const at::Tensor q = heads(s.tokens), k = heads(lk), v = heads(lk);

  AttentionBenchResult r;
  r.flops = 4.0 * double(s.batch * s.heads) * double(s.tokens) * double(lk) * double(s.head_dim);
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  double cpu = 0;  // CPU seconds of the last timed call
  auto timed = [&](auto&& fn) {
    const double cpu_start = cpu_now();
    const auto start = std::chrono::steady_clock::now();
    fn();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cpu = cpu_now() - cpu_start;
    return wall;
  };
  at::Tensor blocked, plain;
  for (int i = 0; i < s.warmup + s.runs; ++i) {
    const double tb = timed([&] { blocked = kernels::blocked_attention(q, k, v); });
    const double cb = cpu;
    double tp;
    {
      runtime::OptimizationsGuard guard(runtime::Optimizations::plain());
      tp = timed([&] { plain = nn::scaled_dot_product_attention(q, k, v); });
    }
    if (i >= s.warmup) {
      r.blocked_s.push_back(tb);
      r.plain_s.push_back(tp);
      r.blocked_cpu_s.push_back(cb);
      r.plain_cpu_s.push_back(cpu);
    }
  }
  r.max_abs_diff = (blocked - plain).abs().max().item<double>();
  return r;
}

}  // namespace tide::bench
