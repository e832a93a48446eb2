// Memory figures of this process.
#pragma once
#include <cstdint>

namespace tide::runtime {

// The most resident memory this process has used so far, in bytes (getrusage's ru_maxrss).
int64_t peak_rss_bytes();

}  // namespace tide::runtime
