#include "tide/kernels/weight_quantization.h"

#include <c10/core/GradMode.h>

#include <algorithm>

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
  // A block of rows at a time: the float64 temporaries of a whole weight were 0.4 GB for SD 1.5's largest one,
  // the peak of quantizing a model as it loads.
  const at::Tensor scale64 = scale.to(at::kDouble);
  at::Tensor q = at::empty(w32.sizes(), w32.options().dtype(at::kChar));
  const int64_t rows = w32.size(0), row_size = w32.numel() / rows;
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 20) / row_size);  // about 8 MB of float64
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    q.narrow(0, r, n).copy_(
        at::round(w32.narrow(0, r, n).to(at::kDouble) / per_row(scale64.narrow(0, r, n), w32.dim())).clamp(-127, 127));
  }
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
