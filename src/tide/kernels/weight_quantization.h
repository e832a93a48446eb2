// Symmetric per-output-channel int8 weights: w[o, ...] ≈ q[o, ...] · scale[o], scale[o] = max|w[o, ...]| / 127,
// q = round-half-to-even(w / scale) in [-127, 127] (-128 is never used, so negating a weight is exact).
// A row of zeros gets scale 1 (q = 0), so no division by zero and no NaN reaches a kernel.
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

struct QuantizedWeight {
  at::Tensor q;      // int8, the shape of w
  at::Tensor scale;  // float32 [out]
};

// `w` [out, ...] in any floating dtype. A non-finite weight is a tide::Error naming `what`.
QuantizedWeight quantize_per_channel(const at::Tensor& w, const std::string& what = "weight");

// q · scale in `dtype` (float32 by default), the shape of q.
at::Tensor dequantize_per_channel(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype = at::kFloat);

}  // namespace tide::kernels
