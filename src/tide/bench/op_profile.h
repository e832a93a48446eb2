// Where one call's time goes, operator by operator (`tide bench --profile`, `tide train-ti --profile`):
// libtorch reports each operator it dispatches, and each backward node autograd runs, through its
// RecordFunction hooks; only outermost ones are timed, so nested calls (conv2d -> convolution ->
// mkldnn_convolution) count once, under the name the model code called. A scope opened with
// RECORD_USER_SCOPE("stage:NAME") is no operator: the operators inside it are reported as "NAME/operator".
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace tide::bench {

struct OpTime {
  std::string name;  // "aten::conv2d", "tide::blocked_attention", "ConvolutionBackward0", "unet/aten::linear",
                     // or "(not in an operator)"
  double seconds = 0;
  int calls = 0;
};

// Runs `fn` once on this thread and returns the time per outermost operator, largest first; the last row
// is the time outside any operator.
std::vector<OpTime> profile_ops(const std::function<void()>& fn);

// The operators' time summed per stage ("unet/aten::conv2d" counts for "unet"; no stage: "other").
std::vector<OpTime> stage_times(const std::vector<OpTime>& ops);

// A table of the rows covering `share` of the time (at least 3), with each one's share of the total.
std::string op_table(const std::vector<OpTime>& ops, double share = 0.98);

}  // namespace tide::bench
