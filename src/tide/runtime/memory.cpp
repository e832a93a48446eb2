#include "tide/runtime/memory.h"

#include <mutex>

#include "tide/runtime/optimizations.h"
#include "tide/runtime/span_arena.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <atomic>
#include <fstream>
#include <string>

namespace tide::runtime {
namespace {

// The peak before the last reset: resetting the high-water mark also resets ru_maxrss.
std::atomic<int64_t> g_peak_before_reset{0};

int64_t rusage_peak_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

// A "VmXXX:   123 kB" line of /proc/self/status, in bytes; 0 if absent.
int64_t status_bytes(const std::string& wanted) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == wanted) {
      int64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    status.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

int64_t peak_rss_bytes() { return std::max(rusage_peak_bytes(), g_peak_before_reset.load()); }

bool reset_peak_rss_window() {
  const int64_t peak = peak_rss_bytes();
  int64_t previous = g_peak_before_reset.load();
  while (previous < peak && !g_peak_before_reset.compare_exchange_weak(previous, peak)) {
  }
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";  // 5: reset the peak resident set size to the current one
  clear.flush();
  return static_cast<bool>(clear);
}

int64_t window_peak_rss_bytes() { return status_bytes("VmHWM:"); }
int64_t current_rss_bytes() { return status_bytes("VmRSS:"); }

void return_free_memory() {
  span_arena().release_free_pages();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

void hand_freed_memory_back_promptly() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // fixed, so glibc no longer raises it as blocks are freed
  mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
}

namespace {
std::mutex g_reuse_mutex;
int g_reuse_scopes = 0;  // open FreedMemoryReuse scopes, in all threads
}  // namespace

FreedMemoryReuse::FreedMemoryReuse() {
#if defined(__GLIBC__)
  if (!optimizations().reuse_memory) return;
  active_ = true;
  span_arena().route_large_blocks(true);
  std::lock_guard<std::mutex> lock(g_reuse_mutex);
  if (g_reuse_scopes++ > 0) return;
  mallopt(M_MMAP_MAX, 0);                // every block from the heap
  mallopt(M_TRIM_THRESHOLD, INT32_MAX);  // and the heap's free top kept
#endif
}

FreedMemoryReuse::~FreedMemoryReuse() {
#if defined(__GLIBC__)
  if (!active_) return;
  span_arena().route_large_blocks(false);
  std::lock_guard<std::mutex> lock(g_reuse_mutex);
  if (--g_reuse_scopes > 0) return;
  // glibc's defaults once its dynamic threshold has grown to the top: blocks over 32 MiB mapped, free
  // heap top over twice that trimmed.
  mallopt(M_MMAP_MAX, 65536);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  return_free_memory();
#endif
}

}  // namespace tide::runtime
