// Memory figures of this process.
#pragma once
#include <cstdint>

namespace tide::runtime {

// The most resident memory this process has used so far, in bytes (getrusage's ru_maxrss, and the peaks
// of the windows closed by reset_peak_rss_window()).
int64_t peak_rss_bytes();

// Starts a new high-water mark of resident memory at the current RSS (Linux: /proc/self/clear_refs), so
// that window_peak_rss_bytes() tells the most used from now on, e.g. by one stage of a run. False where
// that is not possible; window_peak_rss_bytes() then keeps counting from the start of the process.
bool reset_peak_rss_window();
// The most resident memory since the last reset_peak_rss_window() (VmHWM), in bytes; 0 if unknown.
int64_t window_peak_rss_bytes();
// Resident memory now (VmRSS), in bytes; 0 if unknown.
int64_t current_rss_bytes();

// Hands the allocators' free memory back to the system (glibc: malloc_trim; the span arena's free pages).
// The denoising loop's freed activations otherwise stay resident in the heap while the VAE decoder maps its
// own, larger ones, and the process peak is their sum.
void return_free_memory();

// For programs that prefer a small footprint (tide generate): glibc maps every block over 1 MiB on its own and
// trims the heap's free top beyond 1 MiB, so freed memory goes back to the system at once, until a
// FreedMemoryReuse scope opens (it keeps every block in the heap for its duration, then restores glibc's
// defaults). The heap otherwise keeps what loading, the first UNet call's packed int8 weights and the plain
// ones freed then split it into: SD 1.5 int8 at 512 px peaked at 2.0 GiB in tide generate for 1.35 GiB in use,
// 1.4 GiB with this. (With reuse_memory off as well, 1.32 GiB, for a loop 20% slower from page faults.)
// Process-wide: for a program's start, not the library's hot path.
void hand_freed_memory_back_promptly();

// For a loop that allocates the same activations on every iteration (the denoising loop), while the
// `reuse_memory` optimization is on: freed blocks of any size stay in the heap and serve the next
// iteration. By default glibc maps every block over 32 MiB afresh and unmaps it when freed (the UNet's
// GEGLU and attention temporaries at 512 px), so each UNet call faulted in ~3 GiB of zeroed pages
// (780k page faults per SD 1.5 call at 512). Tensors of 256 KiB and more are placed best-fit in
// runtime/span_arena.h's arena meanwhile, which leaves far smaller holes between the blocks a training step
// keeps than glibc's heap (SD 1.5 at 512 px: 0.07 against 0.5-0.7 GiB at the step's peak). At scope exit
// large blocks are mapped again as before and the memory kept by the loop is handed back
// (return_free_memory). glibc's settings are process-wide, so scopes are
// counted: the first one to open sets them and the last one to close restores them, and two pipelines
// in two threads may each hold one.
class FreedMemoryReuse {
 public:
  FreedMemoryReuse();
  ~FreedMemoryReuse();
  FreedMemoryReuse(const FreedMemoryReuse&) = delete;
  FreedMemoryReuse& operator=(const FreedMemoryReuse&) = delete;

 private:
  bool active_ = false;
};

}  // namespace tide::runtime
