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

// Hands the allocator's free memory back to the system (glibc: malloc_trim). The denoising loop's freed
// activations otherwise stay resident in the heap while the VAE decoder maps its own, larger ones, and
// the process peak is their sum.
void return_free_memory();

}  // namespace tide::runtime
