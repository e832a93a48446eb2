// The machine's float32 FMA peak, measured: every intra-op thread runs a loop of independent vector
// fused multiply-adds that never touches memory. The yardstick for "share of peak" in bench reports.
#pragma once
#include <string>

namespace tide::bench {

struct PeakResult {
  double gflops = 0;  // float32, all threads together
  int threads = 0;
  std::string isa;    // "avx512" | "avx2" | "scalar"
};

// Best of a few ~0.2 s rounds on at::get_num_threads() threads, with the widest FMA the CPU has.
PeakResult measure_fma_peak();

}  // namespace tide::bench
