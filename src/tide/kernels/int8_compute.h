// Int8 arithmetic for linear layers and convolutions with int8 weights (W8A8): the weights are quantized once,
// symmetric per output channel; the activations are quantized on every call, per tensor, to unsigned 8 bits with
// a zero point (SD activations after SiLU/GELU are far from symmetric, so the zero point buys about a bit), or,
// for a linear layer that asks, per row with a fixed zero point;
// oneDNN multiplies them with int32 accumulation and writes float32 with the scales and the bias applied.
// Weights are reordered once into the layout oneDNN's kernel prefers; primitives are cached per input shape.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "tide/kernels/weight_quantization.h"  // the weights these kernels take

namespace tide::kernels {

// The int8 path oneDNN takes on this CPU, respecting DNNL_MAX_CPU_ISA: "amx" (AMX tiles), "avx512_vnni",
// "avx_vnni" (AVX2 with VNNI), "avx512" (AVX-512 without VNNI: vpmaddubsw), "avx2" (vpmaddubsw) or "none".
std::string int8_compute_path();

// True where W8A8 is faster than float32 on this CPU: from AVX2 up. Measured per SD 1.5 layer shape at 512x512
// (bench/README.md), one thread: convolutions 1.4-3.4x (AVX-512 without VNNI), 1.8-3.5x (AVX2), 3.3-7.4x
// (AVX512-VNNI), 4.6-13x (AMX) faster; linear layers 1.1-1.7x (AVX2) to 2-6x (AMX). Below AVX2: false.
bool int8_compute_available();

// Activations are quantized to unsigned 8 bits on every path.
inline constexpr int kActivationLevels = 255;

// Whether the kernels halve the weights on this CPU. Where it multiplies u8·s8 pairs into int32 (VNNI, AMX) they
// use the weights as stored, in [-127, 127]. On the vpmaddubsw paths (AVX2, AVX-512 without VNNI) the int16 sum
// of two u8·s8 products would saturate (2·255·127 > 32767), so there the weights enter halved, round-half-even
// (q / 2) in [-64, 64] with twice the scale (2·255·64 ≤ 32767), and the activations keep their 8 bits: the sd15
// preset's UNet call at 256 px had 2.6% relative error so, 3.9% with 7-bit activations and 8-bit weights.
bool kernels_halve_weights();

// The weights as the kernels use them on this CPU: `q` and `scale`, or halved as above (a new tensor).
QuantizedWeight weights_for_kernels(const at::Tensor& q, const at::Tensor& scale);

// Per-tensor asymmetric quantization of activations: x ≈ (xq − zero_point) · scale, xq in [0, levels]. The range
// always includes 0 (so zero padding and ReLU-like zeros are exact); an all-zero tensor (or one whose range is
// below 1e-30) gets scale 1 and zero point 0.
struct ActivationQuantization {
  float scale = 1.f;
  int32_t zero_point = 0;
  int levels = 255;
};
// Chooses the quantization of `x` from its minimum and maximum (one pass); non-finite values: tide::Error.
ActivationQuantization choose_activation_quantization(const at::Tensor& x, int levels = kActivationLevels);

// Per-row symmetric quantization of a linear layer's input [M, K]: row m ≈ (xq[m, :] − kRowZeroPoint) · scale[m],
// xq in [1, 255], scale[m] = max |x[m, :]| / 127 in float32 (1 for a row whose largest magnitude is below 1e-30),
// xq = round-half-even(x · inverse_scale[m] + kRowZeroPoint) with inverse_scale[m] = 1 / scale[m] in float32. For
// inputs whose tokens differ in range (the GEGLU output entering the feed-forward's last layer): each token gets
// the resolution of its own range, and a roughly symmetric input loses little to the fixed zero point.
inline constexpr int32_t kRowZeroPoint = 128;
struct RowQuantization {
  at::Tensor scale, inverse_scale;  // float32 [M]
};
// x: float32 [M, K], contiguous. Non-finite values: tide::Error.
RowQuantization choose_row_quantization(const at::Tensor& x);

// How a W8A8 linear layer quantizes its input on every call.
enum class ActivationScales {
  per_tensor,  // one scale and zero point for the whole input (choose_activation_quantization)
  per_row,     // one scale per row, i.e. per token (choose_row_quantization)
};

// y = x · wᵀ + bias with int8 weights (weights_for_kernels), activations quantized per call, per tensor
// (choose_activation_quantization): y[m, o] = Σ_k (xq[m, k] − zero_point)·q[o, k] · scale[o] · activation_scale + bias[o];
// or per row (choose_row_quantization): y[m, o] = Σ_k (xq[m, k] − 128)·q[o, k] · scale[o] · row_scale[m] + bias[o].
// Thread-safe: forward() may run from several threads at once on one object (the primitive cache is behind a
// mutex; execution is concurrent, each call with its own scratchpad). Computes on the caller's thread count
// (at::get_num_threads(), also in threads that libtorch has not seen yet).
class Int8Linear {
 public:
  // q: int8 [out, in]; scale: float32 [out]; bias: float [out] or undefined. Keeps a reference to q (never a
  // copy, whatever its strides; the packed weights are a second int8 copy) and packs it now in the layout oneDNN
  // prefers for `typical_rows` input rows (see Int8Conv2d).
  Int8Linear(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, int64_t typical_rows = 4096,
             ActivationScales activations = ActivationScales::per_tensor);
  ~Int8Linear();
  // x: float [..., in] (any strides) → float32 [..., out], contiguous.
  at::Tensor forward(const at::Tensor& x) const;
  // Lets go of q: the packed weights become the only copy (a later shape that wants another layout is packed
  // from them). Thread-safe.
  void drop_plain_weights() const;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  struct Impl;

 private:
  int64_t in_, out_;
  std::unique_ptr<Impl> impl_;
};

// conv2d(x, w, bias, stride, padding) with int8 weights (groups 1, dilation 1), activations quantized per call
// like Int8Linear's (padding is a real zero: the zero point). Thread-safe like Int8Linear.
class Int8Conv2d {
 public:
  // q: int8 [O, I, kh, kw]; scale: float32 [O]; bias: float [O] or undefined. Keeps a reference to q (never a
  // copy: channels-last weights are read as they are) and packs it now in the layout oneDNN prefers for inputs of
  // `typical_input_size` {B, H, W}.
  // oneDNN picks kernels (and so weight layouts) by shape: a call whose shape wants another layout packs that one
  // once, and if no call used the typical layout, it is dropped then (so at most the layouts in use are kept).
  Int8Conv2d(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, int64_t stride, int64_t padding,
             std::array<int64_t, 3> typical_input_size = {2, 64, 64});
  ~Int8Conv2d();
  // x: float [B, I, H, W], NCHW or channels-last → float32 [B, O, H', W'], channels-last.
  at::Tensor forward(const at::Tensor& x) const;
  // As Int8Linear's.
  void drop_plain_weights() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// What the kernels compute, with at:: ops in float64 (for tests): the same weights (weights_for_kernels), the same
// activation quantization (including its float32 rounding of x · (1/scale) + zero point), exact integer sums Σ (xq − zero_point)·q, times the float32
// product weight_scale[o] · activation_scale, plus the bias. The kernels differ from it only by float32 rounding
// of the scaling and the bias (they round the int32 sums to float32 and multiply by the two scales one after
// the other).
// Per row, the same with the row quantization; the kernel rounds the int32 sums times the weight scale to float32,
// then multiplies by the row's scale and adds the bias in float32.
at::Tensor int8_linear_reference(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale,
                                 const at::Tensor& bias, ActivationScales activations = ActivationScales::per_tensor);
at::Tensor int8_conv2d_reference(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale,
                                 const at::Tensor& bias, int64_t stride, int64_t padding);

}  // namespace tide::kernels
