// Large tensors of a FreedMemoryReuse scope (runtime/memory.h) placed best-fit in one address range.
//
// A training step keeps ~0.9 GiB of activations for its backward while its forward frees as many
// temporaries around them. glibc's heap serves large blocks from whatever it freed last and splits
// them, so the kept blocks end up scattered and, at the step's peak, 0.5–0.7 GiB of freed but resident
// holes lie between them (SD 1.5 at 512 px). This arena gives every large block the smallest free span
// that fits (the lowest such address on ties), merges neighbouring free spans, and grows one contiguous
// range only when nothing fits, which keeps the holes small: the page-heap policy of tcmalloc, for
// tensors only.
//
// Blocks under `kSpanArenaMinBytes`, and every block outside a FreedMemoryReuse scope, come from
// libtorch's default CPU allocator as before. Free spans stay resident while a scope is open (the next
// iteration reuses them without page faults) and are handed back to the system (madvise) when the last
// scope closes, or at once when a block is freed outside any scope.
#pragma once
#include <c10/core/Allocator.h>

#include <cstddef>
#include <cstdint>

namespace tide::runtime {

inline constexpr size_t kSpanArenaMinBytes = size_t{256} << 10;

// Figures of the arena, for tests and benchmarks.
struct SpanArenaStats {
  int64_t reserved_bytes = 0;   // address range the arena may grow into (0: unavailable, everything from the default)
  int64_t committed_bytes = 0;  // grown so far (readable and writable)
  int64_t in_use_bytes = 0;     // given out and not yet freed
  int64_t peak_in_use_bytes = 0;
  int64_t top_bytes = 0;        // the highest address ever given out: what the arena has touched
  int64_t free_bytes = 0;       // in free spans below the committed top
  int64_t free_spans = 0;
};

class SpanArena final : public c10::Allocator {
 public:
  // `reserve_bytes`: the address range to reserve (not memory: pages are committed as the arena grows).
  explicit SpanArena(size_t reserve_bytes);
  ~SpanArena() override;
  SpanArena(const SpanArena&) = delete;
  SpanArena& operator=(const SpanArena&) = delete;

  // From the arena while routing is on and n >= kSpanArenaMinBytes (when the range is full, or
  // committing fails, from the default allocator); otherwise from the default allocator.
  c10::DataPtr allocate(size_t n) const override;
  // Frees what allocate() gave, arena block or not, from its data pointer alone.
  c10::DeleterFnPtr raw_deleter() const override;

  // Counted: blocks are routed to the arena while at least one caller has it on. Turning the last one
  // off hands every free span's pages back to the system.
  void route_large_blocks(bool on);

  // Hands every free span's pages back to the system (they stay in the arena, and fault in again when reused).
  void release_free_pages();

  SpanArenaStats stats() const;

  // True when `p` lies in this arena's range.
  bool owns(const void* p) const;

  struct State;

 private:
  static void free_block(void* data);
  State* state_;
};

// The process's arena, installed as libtorch's CPU allocator on first use (it forwards whatever it
// does not place to libtorch's default allocator). Never destroyed: tensors may outlive every scope.
SpanArena& span_arena();

// Routes large tensors to span_arena() while it lives. Counted: scopes may nest and overlap across threads.
class SpanArenaRouting {
 public:
  SpanArenaRouting();
  ~SpanArenaRouting();
  SpanArenaRouting(const SpanArenaRouting&) = delete;
  SpanArenaRouting& operator=(const SpanArenaRouting&) = delete;
};

}  // namespace tide::runtime
