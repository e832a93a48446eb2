#include "tide/runtime/threads.h"

#include <ATen/Parallel.h>
#include <sched.h>

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

int configure_threads(int threads) {
  const int count = threads > 0 ? threads : usable_cores();
  at::set_num_threads(count);
  return count;
}

}  // namespace tide::runtime
