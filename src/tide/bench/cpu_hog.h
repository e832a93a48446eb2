// A CPU hog beside a benchmark: child processes that each keep one core busy, to show how tide behaves on a
// machine that is not idle (a laptop, a shared server). Separate processes, not threads, so that their CPU
// time is someone else's, as it would be.
#pragma once
#include <sys/types.h>

#include <vector>

namespace tide::bench {

class CpuHog {
 public:
  // Starts `processes` busy processes (0: none); each dies with this one. A failed fork is a tide::Error.
  explicit CpuHog(int processes);
  ~CpuHog();  // stops them
  CpuHog(const CpuHog&) = delete;
  CpuHog& operator=(const CpuHog&) = delete;

  int processes() const { return static_cast<int>(children_.size()); }
  const std::vector<pid_t>& pids() const { return children_; }

 private:
  std::vector<pid_t> children_;
};

}  // namespace tide::bench
