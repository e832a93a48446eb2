#include "tide/runtime/threads.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include <thread>

namespace tide::runtime {

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int default_threads() {
  // OMP_NUM_THREADS, when set, is the usual way to share a machine between processes.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, usable_cores());
  }
  return usable_cores();
}

int configure_threads(int threads) {
  const int count = threads > 0 ? threads : default_threads();
  at::set_num_threads(count);
  return count;
}

}  // namespace tide::runtime
