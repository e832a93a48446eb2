// Gradient checkpointing (torch.utils.checkpoint, as diffusers' enable_gradient_checkpointing uses it): a
// segment of the model runs without keeping its activations, and its backward runs the segment again,
// this time recording, to get them. Training then holds only the segments' inputs, for the cost of a
// second forward pass through every checkpointed segment.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace tide::nn {

using Segment = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// segment(inputs), differentiable with respect to every input that requires a gradient. The segment must
// compute from its inputs alone (other tensors it captures get no gradient) and give the same outputs when
// run again (no randomness). Without gradient mode, or when no input requires a gradient, it just runs.
// Every input must be defined.
std::vector<at::Tensor> checkpoint(const Segment& segment, const std::vector<at::Tensor>& inputs);

}  // namespace tide::nn
