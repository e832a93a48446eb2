// The shapes a model file may declare: libtorch allocates a tensor only when the product of its non-zero
// dimensions, times the element size, fits in int64 (it multiplies them before a zero dimension makes the
// tensor empty, and throws its own error otherwise), so readers refuse the others with a clear message.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

namespace tide::io {

// Every dimension non-negative and the non-zero ones' product × element_size within int64.
inline bool tensor_shape_fits(const std::vector<int64_t>& shape, int64_t element_size) {
  int64_t bytes = element_size;
  for (const int64_t d : shape) {
    if (d < 0) return false;
    if (d == 0) continue;
    if (bytes > std::numeric_limits<int64_t>::max() / d) return false;
    bytes *= d;
  }
  return true;
}

}  // namespace tide::io
