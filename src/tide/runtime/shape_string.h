// Tensor shapes in error messages, written the same everywhere: "[2, 4, 64, 64]".
#pragma once
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace tide {

// "[d0, d1, ...]" ("[]" for a 0-dim shape), also for config lists of ints. Takes at::IntArrayRef,
// std::vector<int64_t> and {a, b, c}.
std::string shape_string(c10::ArrayRef<int64_t> sizes);

}  // namespace tide
