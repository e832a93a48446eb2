// runtime/span_arena.h: where large blocks land, how free spans merge, when pages go back to the system,
// and that blocks stay intact under concurrent use.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "tide/runtime/span_arena.h"

namespace {

using tide::runtime::SpanArena;
constexpr size_t kMiB = size_t{1} << 20;

// Pages of [p, p + n) resident now.
size_t resident_pages(const void* p, size_t n) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_core((n + page - 1) / page);
  if (mincore(const_cast<void*>(p), n, in_core.data()) != 0) return SIZE_MAX;
  size_t count = 0;
  for (unsigned char c : in_core) count += c & 1;
  return count;
}

TEST(SpanArena, SmallestFittingSpanFirstAndNeighboursMerge) {
  SpanArena arena(256 * kMiB);
  arena.route_large_blocks(true);
  std::vector<c10::DataPtr> blocks;
  for (size_t mib : {1, 2, 1, 1, 1, 1, 1}) blocks.push_back(arena.allocate(mib * kMiB));  // A B C D E F G
  auto* base = static_cast<char*>(blocks[0].get());
  for (size_t i = 0; i < blocks.size(); ++i) ASSERT_TRUE(arena.owns(blocks[i].get())) << i;
  EXPECT_EQ(static_cast<char*>(blocks[1].get()), base + 1 * kMiB);  // laid out in order
  EXPECT_EQ(static_cast<char*>(blocks[6].get()), base + 7 * kMiB);

  blocks[1].clear();  // a 2 MiB hole at 1 MiB
  blocks[4].clear();  // a 1 MiB hole at 5 MiB
  // 1 MiB takes the 1 MiB hole, not the first (larger) one; 2 MiB then takes the 2 MiB hole.
  c10::DataPtr one = arena.allocate(kMiB);
  EXPECT_EQ(static_cast<char*>(one.get()), base + 5 * kMiB);
  c10::DataPtr two = arena.allocate(2 * kMiB);
  EXPECT_EQ(static_cast<char*>(two.get()), base + 1 * kMiB);

  // C and D freed next to each other make one 2 MiB span, which a 2 MiB block then fits exactly.
  blocks[2].clear();
  blocks[3].clear();
  EXPECT_EQ(arena.stats().free_spans, 1);
  EXPECT_EQ(arena.stats().free_bytes, static_cast<int64_t>(2 * kMiB));
  c10::DataPtr merged = arena.allocate(2 * kMiB - 4096);
  EXPECT_EQ(static_cast<char*>(merged.get()), base + 3 * kMiB);

  // A free span that ends at the top grows in place rather than being skipped.
  blocks[6].clear();  // G, the topmost, 1 MiB at 7 MiB
  c10::DataPtr grown = arena.allocate(3 * kMiB);
  EXPECT_EQ(static_cast<char*>(grown.get()), base + 7 * kMiB);
  EXPECT_EQ(arena.stats().top_bytes, static_cast<int64_t>(10 * kMiB));

  blocks.clear();
  one.clear();
  two.clear();
  merged.clear();
  grown.clear();
  const auto s = arena.stats();
  EXPECT_EQ(s.in_use_bytes, 0);
  EXPECT_EQ(s.free_spans, 1);  // everything merged back into one span
  EXPECT_EQ(s.free_bytes, static_cast<int64_t>(10 * kMiB));
  EXPECT_EQ(s.peak_in_use_bytes, static_cast<int64_t>(10 * kMiB - 4096));  // with `grown`
  arena.route_large_blocks(false);
}

TEST(SpanArena, SmallOrUnroutedBlocksComeFromTheDefaultAllocator) {
  SpanArena arena(64 * kMiB);
  c10::DataPtr unrouted = arena.allocate(4 * kMiB);
  EXPECT_FALSE(arena.owns(unrouted.get()));
  arena.route_large_blocks(true);
  c10::DataPtr small = arena.allocate(tide::runtime::kSpanArenaMinBytes - 1);
  EXPECT_FALSE(arena.owns(small.get()));
  c10::DataPtr large = arena.allocate(tide::runtime::kSpanArenaMinBytes);
  EXPECT_TRUE(arena.owns(large.get()));
  // More than the range holds: the default allocator serves it, and the block is usable.
  c10::DataPtr too_large = arena.allocate(65 * kMiB);
  ASSERT_NE(too_large.get(), nullptr);
  EXPECT_FALSE(arena.owns(too_large.get()));
  std::memset(too_large.get(), 1, 65 * kMiB);
  // Blocks freed and allocated through the raw interface (data pointer alone), from either source.
  for (size_t n : {size_t{1000}, 3 * kMiB}) {
    void* p = arena.raw_allocate(n);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(arena.owns(p), n >= tide::runtime::kSpanArenaMinBytes) << n;
    std::memset(p, 2, n);
    arena.raw_deallocate(p);
  }
  large.clear();
  EXPECT_EQ(arena.stats().in_use_bytes, 0);
  arena.route_large_blocks(false);
}

TEST(SpanArena, FreePagesStayResidentWhileRoutedAndGoBackAfter) {
  SpanArena arena(64 * kMiB);
  arena.route_large_blocks(true);
  arena.route_large_blocks(true);  // two overlapping users
  c10::DataPtr block = arena.allocate(8 * kMiB);
  char* p = static_cast<char*>(block.get());
  std::memset(p, 7, 8 * kMiB);
  const size_t pages = 8 * kMiB / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  block.clear();
  EXPECT_EQ(resident_pages(p, 8 * kMiB), pages);  // kept for the next iteration to reuse
  arena.route_large_blocks(false);
  EXPECT_EQ(resident_pages(p, 8 * kMiB), pages);  // one user left
  arena.route_large_blocks(false);
  EXPECT_EQ(resident_pages(p, 8 * kMiB), 0u);

  // Freed with routing off: handed back at once. Reused afterwards: zero pages, as fresh memory.
  arena.route_large_blocks(true);
  c10::DataPtr again = arena.allocate(8 * kMiB);
  EXPECT_EQ(again.get(), p);
  std::memset(again.get(), 9, 8 * kMiB);
  arena.route_large_blocks(false);
  EXPECT_EQ(resident_pages(p, 8 * kMiB), pages);  // still in use
  again.clear();
  EXPECT_EQ(resident_pages(p, 8 * kMiB), 0u);
}

TEST(SpanArena, ConcurrentBlocksStayIntact) {
  SpanArena arena(1024 * kMiB);
  arena.route_large_blocks(true);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<c10::DataPtr, size_t>> held;
      for (int i = 0; i < 300; ++i) {
        if (!held.empty() && (rng() % 3 == 0 || held.size() > 6)) {
          const size_t k = rng() % held.size();
          auto* bytes = static_cast<unsigned char*>(held[k].first.get());
          for (size_t j = 0; j < held[k].second; j += 4093)
            if (bytes[j] != static_cast<unsigned char>(t * 16 + held[k].second % 13)) ++failures[t];
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          const size_t n = tide::runtime::kSpanArenaMinBytes + rng() % (4 * kMiB);
          c10::DataPtr d = arena.allocate(n);
          std::memset(d.get(), t * 16 + n % 13, n);
          held.emplace_back(std::move(d), n);
        }
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  const auto s = arena.stats();
  EXPECT_EQ(s.in_use_bytes, 0);
  EXPECT_EQ(s.free_spans, 1);
  EXPECT_EQ(s.free_bytes, s.top_bytes);
  arena.route_large_blocks(false);
}

TEST(SpanArena, TensorsOfARoutingScopeLiveInTheProcessArena) {
  at::Tensor outside = at::empty({1 << 20});
  at::Tensor inside, small;
  {
    tide::runtime::SpanArenaRouting routing;
    inside = at::ones({1 << 20});  // 4 MiB
    small = at::ones({1000});
  }
  const SpanArena& arena = tide::runtime::span_arena();
  EXPECT_FALSE(arena.owns(outside.data_ptr()));
  EXPECT_TRUE(arena.owns(inside.data_ptr()));
  EXPECT_FALSE(arena.owns(small.data_ptr()));
  EXPECT_EQ(inside.sum().item<double>(), double(1 << 20));
  const int64_t before = arena.stats().in_use_bytes;
  inside = at::Tensor();
  EXPECT_EQ(arena.stats().in_use_bytes, before - static_cast<int64_t>(4 * kMiB));
}

}  // namespace
