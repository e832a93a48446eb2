#include "tide/nn/checkpoint.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace tide::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Keeps the segment in the autograd context (whose saved data holds only IValues).
struct SegmentHolder : torch::CustomClassHolder {
  explicit SegmentHolder(Segment s) : segment(std::move(s)) {}
  Segment segment;
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  // Runs with gradients off (Function::apply): nothing inside the segment is recorded.
  // `inputs` as a TensorList: autograd takes each tensor of a TensorList as an input (not those of a vector).
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const Segment& segment) {
    ctx->save_for_backward(inputs.vec());
    c10::List<bool> needs;
    for (const auto& t : inputs) needs.push_back(t.requires_grad());
    ctx->saved_data["needs"] = needs;
    ctx->saved_data["segment"] = c10::IValue::make_capsule(c10::make_intrusive<SegmentHolder>(segment));
    return segment(inputs.vec());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "gradient checkpointing: second-order gradients are not supported (backward with create_graph)");
    const variable_list saved = ctx->get_saved_variables();
    const c10::List<bool> needs = ctx->saved_data["needs"].toBoolList();
    const auto holder = ctx->saved_data["segment"].toCapsule();
    const Segment& segment = static_cast<SegmentHolder*>(holder.get())->segment;
    variable_list inputs(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) inputs[i] = saved[i].detach().requires_grad_(needs[i]);

    variable_list outputs;
    {
      c10::AutoGradMode recording(true);  // the recompute builds the graph the stored one left out
      outputs = segment(inputs);
    }
    variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i)
      if (grads[i].defined() && outputs[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    variable_list wanted_inputs;
    std::vector<size_t> wanted_index;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (needs[i]) {
        wanted_inputs.push_back(inputs[i]);
        wanted_index.push_back(i);
      }
    variable_list result(inputs.size() + 1);  // + the segment argument
    if (roots.empty() || wanted_inputs.empty()) return result;
    const variable_list input_grads =
        torch::autograd::grad(roots, wanted_inputs, root_grads, /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
    for (size_t j = 0; j < wanted_index.size(); ++j) result[wanted_index[j]] = input_grads[j];
    return result;
  }
};

}  // namespace

std::vector<at::Tensor> checkpoint(const Segment& segment, const std::vector<at::Tensor>& inputs) {
  bool any = false;
  for (const auto& t : inputs) {
    TORCH_CHECK(t.defined(), "checkpoint: undefined input");
    any = any || t.requires_grad();
  }
  if (!c10::GradMode::is_enabled() || !any) return segment(inputs);
  return CheckpointFunction::apply(at::TensorList(inputs), segment);
}

}  // namespace tide::nn
