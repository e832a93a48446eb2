// Analytic floating-point operation count: while a FlopCount is alive (on this thread), convolutions,
// linear layers and attention products add 2 × their multiply-adds, computed from their shapes (nothing
// is measured). The benchmark runs each stage once under it to get the work behind its GFLOP/s.
#pragma once
#include <cstdint>

namespace tide::runtime {

class FlopCount {
 public:
  FlopCount();
  ~FlopCount();
  FlopCount(const FlopCount&) = delete;
  FlopCount& operator=(const FlopCount&) = delete;
  double flops() const { return flops_; }

  // Called by the layers: adds 2·macs to the innermost live FlopCount, if any.
  static void add_macs(double macs);

 private:
  double flops_ = 0;
  FlopCount* outer_;
};

}  // namespace tide::runtime
