// Elementwise steps that write into an operand that is a temporary (a layer's fresh output) instead of
// allocating another activation-sized tensor: at full resolution each saved allocation is hundreds of MB
// in the VAE decoder and a page-faulting pass over it. Results are bit-identical to the allocating forms.
// Only under the in_place optimization, and never when autograd may need the operand.
#pragma once
#include <ATen/ATen.h>

namespace tide::nn {

// True when `t` may be overwritten: in_place is on and no gradient flows through `t`.
bool can_overwrite(const at::Tensor& t);

// silu(temporary)
at::Tensor silu_temporary(at::Tensor temporary);

// temporary + other (other broadcast to temporary's shape)
at::Tensor add_to_temporary(at::Tensor temporary, const at::Tensor& other);

// value · gelu(gate), GEGLU's product: gelu's fresh output takes the product.
at::Tensor gelu_gated(const at::Tensor& value, const at::Tensor& gate);

}  // namespace tide::nn
