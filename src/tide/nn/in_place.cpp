#include "tide/nn/in_place.h"

#include <c10/core/GradMode.h>

#include "tide/runtime/optimizations.h"

namespace tide::nn {

bool can_overwrite(const at::Tensor& t) {
  return runtime::optimizations().in_place && !(c10::GradMode::is_enabled() && t.requires_grad());
}

at::Tensor silu_temporary(at::Tensor temporary) {
  return can_overwrite(temporary) ? at::silu_(temporary) : at::silu(temporary);
}

at::Tensor add_to_temporary(at::Tensor temporary, const at::Tensor& other) {
  // Writing in place needs `temporary` to have the result's shape.
  if (can_overwrite(temporary) && !(other.requires_grad() && c10::GradMode::is_enabled()) &&
      temporary.sizes() == at::infer_size(temporary.sizes(), other.sizes()))
    return temporary.add_(other);
  return temporary + other;
}

at::Tensor gelu_gated(const at::Tensor& value, const at::Tensor& gate) {
  at::Tensor g = at::gelu(gate);
  if (can_overwrite(g) && can_overwrite(value)) return g.mul_(value);
  return value * g;
}

}  // namespace tide::nn
