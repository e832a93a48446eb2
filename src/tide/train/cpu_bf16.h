// Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): only then does --mixed_precision bf16
// pay off; elsewhere bf16 is emulated and slower than float32, so training stays in float32.
#pragma once
#include <string>

namespace tide::train {

// Reads the flags of /proc/cpuinfo (false when unreadable).
bool cpu_has_native_bf16();
// The same from the text of a /proc/cpuinfo (for tests).
bool cpuinfo_has_native_bf16(const std::string& cpuinfo);

}  // namespace tide::train
