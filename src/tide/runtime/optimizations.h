// The speed-ups tide applies on top of plain libtorch module code, each switchable so that `tide bench
// --compare-plain` can measure it against the straightforward path (what diffusers runs) in one process.
#pragma once
#include <string>
#include <vector>

namespace tide::runtime {

struct Optimizations {
  bool blocked_attention = true;  // fused blocked attention kernel (kernels/attention_cpu.h)
  bool channels_last = true;      // NHWC activations and conv weights for oneDNN
  bool in_place = true;           // SiLU, residual adds and GEGLU write into their temporary operand (nn/in_place.h)
  bool winograd = true;           // 3×3 convolutions on large maps as Winograd F(2×2, 3×3) (kernels/winograd_conv.h)
  bool winograd_f4 = true;        // with winograd: F(4×4, 3×3) tiles where they pay (1.3–2× faster than F(2×2), several
                                  // times its rounding error; kernels/winograd_tile.h)
  bool reuse_memory = true;       // the denoising loop's freed activations kept for its next step (runtime/memory.h)
  bool int8_kernels = true;       // int8 weights computed by W8A8 kernels where the CPU pays (kernels/int8_compute.h);
                                  // off: dequantized per call
  bool frozen_backward = true;    // training: convolutions with frozen weights run their inference path and a
                                  // backward for the input only (kernels/conv_input_gradient.h)
  bool direct_conv = true;        // with channels_last: float convolution weights stored HWIO and computed by
                                  // tide's direct kernel where Winograd does not pay (kernels/direct_conv.h)
  bool geglu_kernel = true;       // GEGLU's value · gelu(gate), and its backward in training, in one AVX2 pass
                                  // (kernels/geglu_cpu.h); off: libtorch's gelu and a product
  bool onednn_matmul = true;      // float32 linear layers (and their input gradients in training) through
                                  // oneDNN's matmul instead of the BLAS call at::linear makes, and with
                                  // channels_last 1×1 convolutions on small maps too (kernels/matmul_f32.h)
  bool half_attention = true;     // attention whose q/k/v projections hold int8 weights: its two products with
                                  // float16 multiplies where the CPU has AVX512-FP16 (kernels/attention_f16.h)

  static Optimizations plain() { return {false, false, false, false, false, false, false, false, false, false, false, false}; }
  // "blocked_attention", ... : the ones switched on.
  std::vector<std::string> enabled() const;
  // Every switch's name.
  static std::vector<std::string> names();
  // These with the named ones (comma-separated list) switched off; throws tide::Error on an unknown name.
  Optimizations without(const std::string& comma_separated) const;
};

// The calling thread's setting, which the models read at every forward call: all on in a new thread. A
// pipeline installs its own for each call (OptimizationsGuard), so pipelines with different settings can
// run in different threads of one process.
Optimizations& optimizations();

// Sets this thread's optimizations for a scope and restores the previous ones.
class OptimizationsGuard {
 public:
  explicit OptimizationsGuard(const Optimizations& scoped) : previous_(optimizations()) { optimizations() = scoped; }
  ~OptimizationsGuard() { optimizations() = previous_; }
  OptimizationsGuard(const OptimizationsGuard&) = delete;
  OptimizationsGuard& operator=(const OptimizationsGuard&) = delete;

 private:
  Optimizations previous_;
};

}  // namespace tide::runtime
