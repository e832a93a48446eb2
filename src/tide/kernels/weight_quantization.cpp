#include "tide/kernels/weight_quantization.h"

#include <c10/core/GradMode.h>

#include "tide/runtime/error.h"

namespace tide::kernels {
namespace {

// [out] -> [out, 1, ...] to broadcast over a weight of `dim` dimensions.
at::Tensor per_row(const at::Tensor& v, int64_t dim) {
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[0] = v.size(0);
  return v.view(shape);
}

}  // namespace

QuantizedWeight quantize_per_channel(const at::Tensor& w, const std::string& what) {
  c10::NoGradGuard no_grad;
  if (!w.defined() || w.dim() < 1 || w.numel() == 0) throw Error(what + ": cannot quantize an empty weight");
  if (!at::isFloatingType(w.scalar_type()))
    throw Error(what + ": only floating-point weights can be quantized, got " + std::string(c10::toString(w.scalar_type())));
  const at::Tensor w32 = w.detach().to(at::kFloat).contiguous();
  if (!at::isfinite(w32).all().item<bool>()) throw Error(what + " holds a NaN or infinite value; it cannot be quantized");
  // Scales in float32, computed in float64 so that max|w| / 127 is the correctly rounded quotient.
  at::Tensor absmax = w32.abs().reshape({w32.size(0), -1}).amax(1).to(at::kDouble);
  at::Tensor scale = at::where(absmax > 0, absmax / 127.0, at::ones_like(absmax)).to(at::kFloat);
  at::Tensor q = at::round(w32.to(at::kDouble) / per_row(scale.to(at::kDouble), w32.dim())).clamp(-127, 127).to(at::kChar);
  return {q, scale};
}

at::Tensor dequantize_per_channel(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype) {
  if (q.scalar_type() != at::kChar) throw Error("dequantize: the weight is " + std::string(c10::toString(q.scalar_type())) + ", not int8");
  if (scale.dim() != 1 || scale.size(0) != q.size(0))
    throw Error("dequantize: " + std::to_string(scale.numel()) + " scales for a weight with " + std::to_string(q.size(0)) + " output channels");
  // In float32 (each product rounded once), then to `dtype`.
  at::Tensor w = q.to(at::kFloat).mul_(per_row(scale.to(at::kFloat), q.dim()));
  return dtype == at::kFloat ? w : w.to(dtype);
}

}  // namespace tide::kernels
