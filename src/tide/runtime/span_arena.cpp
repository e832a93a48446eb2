#include "tide/runtime/span_arena.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

namespace tide::runtime {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kCommitStep = size_t{64} << 20;  // mprotect calls are few and large

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

struct SpanArena::State {
  std::mutex mutex;
  char* base = nullptr;
  size_t reserved = 0;
  size_t committed = 0;  // [0, committed) readable and writable
  size_t top = 0;        // [0, top) given out at least once; [top, committed) never touched
  std::set<std::pair<size_t, size_t>> free_by_size;  // (length, offset): best fit, lowest address on ties
  std::map<size_t, size_t> free_by_offset;            // offset -> length: neighbours to merge with
  std::unordered_map<size_t, size_t> in_use_spans;  // offset -> length of blocks given out
  int64_t in_use = 0;
  int64_t peak_in_use = 0;
  std::atomic<int> routing{0};

  void add_free(size_t offset, size_t length) {
    free_by_size.emplace(length, offset);
    free_by_offset.emplace(offset, length);
  }
  void remove_free(size_t offset, size_t length) {
    free_by_size.erase({length, offset});
    free_by_offset.erase(offset);
  }
  void advise_free(size_t offset, size_t length) { madvise(base + offset, length, MADV_DONTNEED); }
  bool contains(const void* p) const {
    const char* c = static_cast<const char*>(p);
    return base != nullptr && c >= base && c < base + reserved;
  }

  // The offset of a span of `length` bytes, or SIZE_MAX when the range cannot hold it. Caller holds mutex.
  size_t take(size_t length) {
    const auto fit = free_by_size.lower_bound({length, 0});
    if (fit != free_by_size.end()) {
      const auto [span_length, offset] = *fit;
      remove_free(offset, span_length);
      if (span_length > length) add_free(offset + length, span_length - length);
      return offset;
    }
    // Nothing fits: grow at the top, starting inside the free span that ends there, if any.
    size_t start = top;
    if (!free_by_offset.empty()) {
      const auto last = std::prev(free_by_offset.end());
      if (last->first + last->second == top) start = last->first;
    }
    const size_t end = start + length;
    if (end > reserved) return SIZE_MAX;
    if (end > committed) {
      const size_t grown = std::min(reserved, round_up(end, kCommitStep));
      if (mprotect(base + committed, grown - committed, PROT_READ | PROT_WRITE) != 0) return SIZE_MAX;
      committed = grown;
    }
    if (start < top) remove_free(start, top - start);
    top = end;
    return start;
  }

  // Caller holds mutex.
  void give_back(size_t offset, size_t length) {
    if (routing.load() == 0) advise_free(offset, length);  // nothing reuses it soon: hand the pages back
    auto next = free_by_offset.find(offset + length);
    if (next != free_by_offset.end()) {
      const size_t next_length = next->second;
      remove_free(offset + length, next_length);
      length += next_length;
    }
    auto after = free_by_offset.lower_bound(offset);
    if (after != free_by_offset.begin()) {
      const auto before = std::prev(after);
      if (before->first + before->second == offset) {
        const size_t before_offset = before->first, before_length = before->second;
        remove_free(before_offset, before_length);
        offset = before_offset;
        length += before_length;
      }
    }
    add_free(offset, length);
  }
};

namespace {

// Every arena alive, so that a deleter given only the data pointer (libtorch's raw_deallocate) finds the
// one that owns it. Slots are claimed once and cleared when an arena goes.
constexpr int kMaxArenas = 16;
std::atomic<SpanArena::State*> g_arenas[kMaxArenas];

SpanArena::State* owner_of(const void* p) {
  for (auto& slot : g_arenas) {
    SpanArena::State* s = slot.load(std::memory_order_acquire);
    if (s != nullptr && s->contains(p)) return s;
  }
  return nullptr;
}

}  // namespace

SpanArena::SpanArena(size_t reserve_bytes) : state_(new State) {
  const size_t length = round_up(std::max<size_t>(reserve_bytes, kPage), kPage);
  // PROT_NONE: address space only, nothing counted against memory until committed.
  void* p = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return;
  for (auto& slot : g_arenas) {
    State* empty = nullptr;
    if (slot.compare_exchange_strong(empty, state_)) {
      state_->base = static_cast<char*>(p);
      state_->reserved = length;
      return;
    }
  }
  munmap(p, length);  // too many arenas: this one forwards everything to the default allocator
}

SpanArena::~SpanArena() {
  for (auto& slot : g_arenas) {
    State* mine = state_;
    slot.compare_exchange_strong(mine, nullptr);
  }
  if (state_->base != nullptr) munmap(state_->base, state_->reserved);
  delete state_;
}

void SpanArena::free_block(void* data) {
  State* s = owner_of(data);
  if (s == nullptr) {  // a block the default allocator gave (raw_allocate of a small or unrouted one)
    c10::GetDefaultCPUAllocator()->raw_deleter()(data);
    return;
  }
  std::lock_guard<std::mutex> lock(s->mutex);
  const size_t offset = static_cast<size_t>(static_cast<char*>(data) - s->base);
  const auto used = s->in_use_spans.find(offset);
  if (used == s->in_use_spans.end()) return;  // not given out: nothing to free
  const size_t length = used->second;
  s->in_use_spans.erase(used);
  s->in_use -= static_cast<int64_t>(length);
  s->give_back(offset, length);
}

c10::DataPtr SpanArena::allocate(size_t n) const {
  c10::Allocator* fallback = c10::GetDefaultCPUAllocator();
  if (n < kSpanArenaMinBytes || state_->base == nullptr || state_->routing.load() == 0) return fallback->allocate(n);
  const size_t length = round_up(n, kPage);
  size_t offset;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    offset = state_->take(length);
    if (offset == SIZE_MAX) return fallback->allocate(n);
    state_->in_use_spans.emplace(offset, length);
    state_->in_use += static_cast<int64_t>(length);
    state_->peak_in_use = std::max(state_->peak_in_use, state_->in_use);
  }
  void* data = state_->base + offset;
  return {data, data, &SpanArena::free_block, c10::Device(c10::DeviceType::CPU)};
}

c10::DeleterFnPtr SpanArena::raw_deleter() const { return &SpanArena::free_block; }

void SpanArena::route_large_blocks(bool on) {
  if (on) {
    state_->routing.fetch_add(1);
    return;
  }
  if (state_->routing.fetch_sub(1) == 1) release_free_pages();
}

void SpanArena::release_free_pages() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (const auto& [offset, length] : state_->free_by_offset) state_->advise_free(offset, length);
}

SpanArenaStats SpanArena::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  SpanArenaStats s;
  s.reserved_bytes = static_cast<int64_t>(state_->reserved);
  s.committed_bytes = static_cast<int64_t>(state_->committed);
  s.in_use_bytes = state_->in_use;
  s.peak_in_use_bytes = state_->peak_in_use;
  s.top_bytes = static_cast<int64_t>(state_->top);
  for (const auto& [offset, length] : state_->free_by_offset) s.free_bytes += static_cast<int64_t>(length);
  s.free_spans = static_cast<int64_t>(state_->free_by_offset.size());
  return s;
}

bool SpanArena::owns(const void* p) const { return state_->contains(p); }

SpanArenaRouting::SpanArenaRouting() { span_arena().route_large_blocks(true); }
SpanArenaRouting::~SpanArenaRouting() { span_arena().route_large_blocks(false); }

SpanArena& span_arena() {
  static SpanArena* arena = [] {
    // Four times the machine's memory (at most 1 TiB) of address space: more than any process here can fill.
    const size_t memory = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    auto* a = new SpanArena(std::min<size_t>(size_t{1} << 40, 4 * memory));
    c10::SetCPUAllocator(a, /*priority=*/1);  // above the default's registration
    return a;
  }();
  return *arena;
}

}  // namespace tide::runtime
