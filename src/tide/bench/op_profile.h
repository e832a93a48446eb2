// Where one call's time goes, operator by operator (`tide bench --profile`): libtorch reports each
// operator it dispatches through its RecordFunction hooks; only outermost ones are timed, so nested calls
// (conv2d -> convolution -> mkldnn_convolution) count once, under the name the model code called.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace tide::bench {

struct OpTime {
  std::string name;  // "aten::conv2d", "tide::blocked_attention", or "(not in an operator)"
  double seconds = 0;
  int calls = 0;
};

// Runs `fn` once on this thread and returns the time per outermost operator, largest first; the last row
// is the time outside any operator.
std::vector<OpTime> profile_ops(const std::function<void()>& fn);

// A table of the rows covering `share` of the time (at least 3), with each one's share of the total.
std::string op_table(const std::vector<OpTime>& ops, double share = 0.98);

}  // namespace tide::bench
