// The weight change of one LoRA layer, per format, at multiplier 1:
//   LoRA / LoCon (kohya networks/lora.py): up @ down * alpha / rank (Tucker lora_mid: CP rebuild)
//   LoHa (LyCORIS loha.py forward, A1111 network_hada.py): (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank
//   LoKr (LyCORIS lokr.py forward, A1111 network_lokr.py): kron(w1, w2) * alpha / rank, scale 1 when both
//   factors are full matrices
// An absent or zero alpha means alpha = rank (scale 1).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tide/adapters/lora_file.h"

namespace tide::adapters {

// The scale the format applies to the product of the factors (alpha / rank, or 1).
double lora_scale(const LoraLayer& layer);

// The delta of `layer` for a weight of `weight_shape`, float32 in that shape (scale included, multiplier
// not). Factors that do not make a delta of that shape are a tide::Error naming `where` and the shapes.
at::Tensor lora_delta(const LoraLayer& layer, const std::vector<int64_t>& weight_shape, const std::string& where);

}  // namespace tide::adapters
