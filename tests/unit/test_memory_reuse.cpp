// FreedMemoryReuse: inside its scope a freed large block serves the next allocation of that size without
// new page faults; outside it (or with the optimization off) glibc maps such blocks afresh every time, and
// after hand_freed_memory_back_promptly() blocks of a few MiB too.
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

// Page faults taken by allocating, touching and freeing a block of `bytes` (by default larger than glibc's
// largest mmap threshold).
long faults_of_a_large_temporary(size_t bytes = size_t(96) << 20) {
  const size_t kBytes = bytes;
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

// tide generate's setting: blocks of a few MiB, which glibc would otherwise soon keep in the heap (its mmap
// threshold rises to 32 MiB as mapped blocks are freed), go back to the system at once, until a reuse scope.
TEST(FreedMemoryReuse, MidSizedBlocksGoBackPromptlyOutsideTheScope) {
  constexpr size_t kMidSized = size_t(4) << 20;
  faults_of_a_large_temporary(size_t(16) << 20);  // a freed mapped 16 MiB block raises glibc's threshold to it
  faults_of_a_large_temporary(kMidSized);
  const long kept = faults_of_a_large_temporary(kMidSized);
  tide::runtime::hand_freed_memory_back_promptly();
  faults_of_a_large_temporary(kMidSized);
  const long mapped = faults_of_a_large_temporary(kMidSized);
  EXPECT_LE(kept, 64) << "glibc kept the block in the heap";
  EXPECT_GE(mapped, 256);  // 1024 pages of 4 KiB mapped afresh each time
  {
    tide::runtime::FreedMemoryReuse reuse;
    faults_of_a_large_temporary(kMidSized);
    EXPECT_LE(faults_of_a_large_temporary(kMidSized), 64);
  }
}

}  // namespace
