#include "tide/bench/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>

namespace tide::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kStagePrefix = "stage:";

struct Recorder {
  int depth = 0;
  Clock::time_point start;
  std::vector<std::string> stages;  // the open stage scopes, innermost last
  std::map<std::string, OpTime> ops;
};
thread_local Recorder* g_recorder = nullptr;

bool is_stage(std::string_view name) { return name.substr(0, kStagePrefix.size()) == kStagePrefix; }

// "autograd::engine::evaluate_function: torch::autograd::CppNode<tide::...::FrozenConv2dFunction>" ->
// "FrozenConv2dFunction"; "autograd::engine::evaluate_function: AddmmBackward0" -> "AddmmBackward0".
std::string short_name(std::string name) {
  constexpr std::string_view backward = "autograd::engine::evaluate_function: ";
  if (name.rfind(backward, 0) == 0) name = name.substr(backward.size());
  if (name.rfind("torch::autograd::CppNode<", 0) == 0 && name.back() == '>') {
    name.pop_back();
    name = name.substr(name.rfind(':') + 1);
  }
  return name;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (!g_recorder) return nullptr;
  if (is_stage(fn.name())) {
    if (g_recorder->depth == 0) g_recorder->stages.emplace_back(std::string(fn.name()).substr(kStagePrefix.size()));
    return nullptr;
  }
  if (g_recorder->depth++ == 0) g_recorder->start = Clock::now();
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!g_recorder) return;
  if (is_stage(fn.name())) {
    if (g_recorder->depth == 0 && !g_recorder->stages.empty()) g_recorder->stages.pop_back();
    return;
  }
  if (--g_recorder->depth != 0) return;
  const std::string name =
      (g_recorder->stages.empty() ? "" : g_recorder->stages.back() + "/") + short_name(fn.name());
  OpTime& op = g_recorder->ops[name];
  op.name = name;
  op.seconds += std::chrono::duration<double>(Clock::now() - g_recorder->start).count();
  ++op.calls;
}

}  // namespace

std::vector<OpTime> profile_ops(const std::function<void()>& fn) {
  Recorder recorder;
  g_recorder = &recorder;
  const auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION,
                                                         at::RecordScope::USER_SCOPE}));
  const auto start = Clock::now();
  try {
    fn();
  } catch (...) {
    at::removeCallback(handle);
    g_recorder = nullptr;
    throw;
  }
  const double total = std::chrono::duration<double>(Clock::now() - start).count();
  at::removeCallback(handle);
  g_recorder = nullptr;

  std::vector<OpTime> out;
  double in_ops = 0;
  for (auto& [name, op] : recorder.ops) {
    in_ops += op.seconds;
    out.push_back(op);
  }
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  out.push_back({"(not in an operator)", std::max(0.0, total - in_ops), 0});
  return out;
}

std::vector<OpTime> stage_times(const std::vector<OpTime>& ops) {
  std::map<std::string, OpTime> stages;
  for (const auto& op : ops) {
    const size_t slash = op.name.find('/');
    const std::string stage = slash == std::string::npos ? "other" : op.name.substr(0, slash);
    OpTime& s = stages[stage];
    s.name = stage;
    s.seconds += op.seconds;
    s.calls += op.calls;
  }
  std::vector<OpTime> out;
  for (auto& [name, s] : stages) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return out;
}

std::string op_table(const std::vector<OpTime>& ops, double share) {
  double total = 0;
  for (const auto& op : ops) total += op.seconds;
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%-52s %9s %6s %7s\n", "operator", "seconds", "share", "calls");
  o << line;
  double shown = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const bool last = i + 1 == ops.size();  // the time outside operators, always shown
    if (!last && i >= 3 && shown >= share * total) continue;
    shown += ops[i].seconds;
    std::snprintf(line, sizeof line, "%-52s %9.3f %5.1f%% %7d\n", ops[i].name.c_str(), ops[i].seconds,
                  total > 0 ? 100 * ops[i].seconds / total : 0.0, ops[i].calls);
    o << line;
  }
  std::snprintf(line, sizeof line, "%-52s %9.3f\n", "total", total);
  o << line;
  return o.str();
}

}  // namespace tide::bench
