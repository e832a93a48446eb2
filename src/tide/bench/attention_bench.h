// Attention alone, blocked kernel vs plain (baddbmm, softmax, bmm as diffusers' AttnProcessor), alternating
// in one process on the same inputs. Defaults: SD 1.5's first level at 512×512 with guidance
// (batch 2, 8 heads of 40, 4096 tokens, self-attention). With `backward`, each call is forward and backward
// as a training step runs them: the blocked kernel with its strip-wise backward vs plain autograd.
#pragma once
#include <cstdint>
#include <vector>

namespace tide::bench {

struct AttentionBenchSettings {
  int64_t batch = 2, heads = 8, tokens = 4096, head_dim = 40;
  int64_t context_tokens = 0;  // keys/values; 0: self-attention (= tokens)
  int runs = 5, warmup = 1;
  bool backward = false;   // forward + backward of sum(out ∘ w) to q, k, v
  int64_t strip_rows = 0;  // backward: query rows per strip; 0 = the kernel's choice
  bool half_products = false;  // forward: the blocked kernel's products with float16 multiplies (as int8 UNets run
                               // it; kernels/attention_f16.h), an error on CPUs without AVX512-FP16
};

struct AttentionBenchResult {
  std::vector<double> blocked_s, plain_s;
  // CPU time of the process over each timed call (all threads): on a machine shared with other jobs the
  // wall time depends on the others, this less so.
  std::vector<double> blocked_cpu_s, plain_cpu_s;
  // Resident memory each call added at its peak (above the resident memory before it), in bytes.
  std::vector<double> blocked_peak_bytes, plain_peak_bytes;
  // Per call: the forward's two L×L×d products; with backward six, as plain attention runs them (the blocked
  // backward recomputes the scores, a seventh, not counted).
  double flops = 0;
  double max_abs_diff = 0;   // blocked vs plain outputs (with backward: gradients)
};

AttentionBenchResult run_attention_bench(const AttentionBenchSettings& settings);

}  // namespace tide::bench
