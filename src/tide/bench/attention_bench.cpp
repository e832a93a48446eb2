#include "tide/bench/attention_bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <ctime>
#include <optional>

#include "tide/kernels/attention_autograd.h"
#include "tide/kernels/attention_cpu.h"
#include "tide/kernels/attention_f16.h"
#include "tide/nn/attention.h"
#include "tide/runtime/error.h"
#include "tide/runtime/memory.h"
#include "tide/runtime/optimizations.h"

namespace tide::bench {

AttentionBenchResult run_attention_bench(const AttentionBenchSettings& s) {
  if (s.batch < 1 || s.heads < 1 || s.tokens < 1 || s.head_dim < 1 || s.context_tokens < 0 || s.runs < 1 ||
      s.strip_rows < 0)
    throw Error(
        "tide bench --attention: batch, heads, tokens, head dim and runs must be positive, strip rows not negative");
  if (s.half_products && (s.backward || !kernels::attention_half_products_available()))
    throw Error(s.backward ? "tide bench --attention --half: forward only (training keeps float32 products)"
                           : "tide bench --attention --half: this CPU lacks AVX512-FP16 (or DNNL_MAX_CPU_ISA caps it)");
  std::optional<c10::InferenceMode> inference;
  if (!s.backward) inference.emplace();
  const int64_t lk = s.context_tokens > 0 ? s.context_tokens : s.tokens;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  // As the attention module makes them: projections [B, L, H·d] split into heads [B, H, L, d] (strided).
  // With backward, the projections are the leaves the gradients go to.
  auto projection = [&](int64_t l) {
    return at::randn({s.batch, l, s.heads, s.head_dim}, gen, at::kFloat).requires_grad_(s.backward);
  };
  const at::Tensor qp = projection(s.tokens), kp = projection(lk), vp = projection(lk);
  const at::Tensor q = qp.transpose(1, 2), k = kp.transpose(1, 2), v = vp.transpose(1, 2);
  const at::Tensor grad_out = s.backward ? at::randn({s.batch, s.heads, s.tokens, s.head_dim}, gen) : at::Tensor();

  // Forward only: the outputs. With backward: the gradients to q, k, v.
  auto blocked_call = [&]() -> std::vector<at::Tensor> {
    if (!s.backward) return {kernels::blocked_attention(q, k, v, 0, /*allow_avx512=*/true, s.half_products)};
    return torch::autograd::grad({kernels::blocked_attention_autograd(q, k, v, s.strip_rows)}, {qp, kp, vp},
                                 {grad_out});
  };
  auto plain_call = [&]() -> std::vector<at::Tensor> {
    runtime::OptimizationsGuard guard(runtime::Optimizations::plain());
    const at::Tensor out = nn::scaled_dot_product_attention(q, k, v);
    if (!s.backward) return {out};
    return torch::autograd::grad({out}, {qp, kp, vp}, {grad_out});
  };

  AttentionBenchResult r;
  r.flops = (s.backward ? 12.0 : 4.0) * double(s.batch * s.heads) * double(s.tokens) * double(lk) * double(s.head_dim);
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  double cpu = 0, peak = 0;  // CPU seconds and added resident bytes of the last timed call
  auto timed = [&](std::vector<at::Tensor>& results, auto&& fn) {
    results.clear();  // the previous call's results do not count against this one
    runtime::return_free_memory();
    runtime::reset_peak_rss_window();
    const double rss_start = double(runtime::current_rss_bytes());
    const double cpu_start = cpu_now();
    const auto start = std::chrono::steady_clock::now();
    results = fn();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cpu = cpu_now() - cpu_start;
    peak = double(runtime::window_peak_rss_bytes()) - rss_start;
    return wall;
  };
  std::vector<at::Tensor> blocked, plain;
  for (int i = 0; i < s.warmup + s.runs; ++i) {
    const double tb = timed(blocked, blocked_call);
    const double cb = cpu, pb = peak;
    const double tp = timed(plain, plain_call);
    if (i >= s.warmup) {
      r.blocked_s.push_back(tb);
      r.plain_s.push_back(tp);
      r.blocked_cpu_s.push_back(cb);
      r.plain_cpu_s.push_back(cpu);
      r.blocked_peak_bytes.push_back(pb);
      r.plain_peak_bytes.push_back(peak);
    }
  }
  for (size_t i = 0; i < blocked.size(); ++i)
    r.max_abs_diff = std::max(r.max_abs_diff, (blocked[i] - plain[i]).abs().max().item<double>());
  return r;
}

}  // namespace tide::bench
