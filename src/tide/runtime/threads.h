// Thread count: Debian's libtorch starts with one thread, so tide always sets it explicitly.
#pragma once

namespace tide::runtime {

// The number of CPUs this process may run on (its affinity mask), at least 1.
int usable_cores();

// Sets libtorch's intra-op thread count: `threads` if > 0, else usable_cores(). Returns the count set.
int configure_threads(int threads);

}  // namespace tide::runtime
