#include "tide/bench/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

namespace tide::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Recorder {
  int depth = 0;
  Clock::time_point start;
  std::map<std::string, OpTime> ops;
};
thread_local Recorder* g_recorder = nullptr;

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
  if (g_recorder && g_recorder->depth++ == 0) g_recorder->start = Clock::now();
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!g_recorder || --g_recorder->depth != 0) return;
  OpTime& op = g_recorder->ops[fn.name()];
  op.name = fn.name();
  op.seconds += std::chrono::duration<double>(Clock::now() - g_recorder->start).count();
  ++op.calls;
}

}  // namespace

std::vector<OpTime> profile_ops(const std::function<void()>& fn) {
  Recorder recorder;
  g_recorder = &recorder;
  const auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).scopes({at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE}));
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

std::string op_table(const std::vector<OpTime>& ops, double share) {
  double total = 0;
  for (const auto& op : ops) total += op.seconds;
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%-40s %9s %6s %7s\n", "operator", "seconds", "share", "calls");
  o << line;
  double shown = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const bool last = i + 1 == ops.size();  // the time outside operators, always shown
    if (!last && i >= 3 && shown >= share * total) continue;
    shown += ops[i].seconds;
    std::snprintf(line, sizeof line, "%-40s %9.3f %5.1f%% %7d\n", ops[i].name.c_str(), ops[i].seconds,
                  total > 0 ? 100 * ops[i].seconds / total : 0.0, ops[i].calls);
    o << line;
  }
  std::snprintf(line, sizeof line, "%-40s %9.3f\n", "total", total);
  o << line;
  return o.str();
}

}  // namespace tide::bench
