// FreedMemoryReuse: inside its scope a freed large block serves the next allocation of that size without
// new page faults; outside it (or with the optimization off) glibc maps such blocks afresh every time.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstring>
#include <memory>

#include "tide/runtime/memory.h"
#include "tide/runtime/optimizations.h"

namespace {

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Page faults taken by allocating, touching and freeing a block larger than glibc's mmap threshold.
long faults_of_a_large_temporary() {
  constexpr size_t kBytes = size_t(96) << 20;
  const long before = minor_faults();
  {
    std::unique_ptr<char[]> block(new char[kBytes]);
    std::memset(block.get(), 1, kBytes);
    EXPECT_EQ(block[kBytes - 1], 1);
  }
  return minor_faults() - before;
}

TEST(FreedMemoryReuse, LargeTemporariesAreReusedInsideTheScopeOnly) {
  using tide::runtime::FreedMemoryReuse;
  faults_of_a_large_temporary();
  const long mapped = faults_of_a_large_temporary();
  ASSERT_GE(mapped, 10);  // 24576 pages of 4 KiB, or 48 huge pages
  {
    FreedMemoryReuse reuse;
    faults_of_a_large_temporary();  // the heap grows once
    EXPECT_LE(faults_of_a_large_temporary(), mapped / 10);
  }
  EXPECT_GE(faults_of_a_large_temporary(), mapped / 2);  // mapped afresh again
  {
    tide::runtime::OptimizationsGuard off(tide::runtime::Optimizations().without("reuse_memory"));
    FreedMemoryReuse reuse;
    faults_of_a_large_temporary();
    EXPECT_GE(faults_of_a_large_temporary(), mapped / 2);
  }
}

}  // namespace
