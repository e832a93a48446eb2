// Thread count: Debian's libtorch starts with one thread, so tide always sets it explicitly.
#pragma once

namespace tide::runtime {

// The number of CPUs this process may run on (its affinity mask), at least 1.
int usable_cores();

// OMP_NUM_THREADS when set (at most usable_cores()), else usable_cores().
int default_threads();

// Sets libtorch's intra-op thread count: `threads` if > 0, else default_threads(). Returns the count set.
int configure_threads(int threads);

}  // namespace tide::runtime
