// What the CPU offers, read at run time (/proc/cpuinfo flags on Linux), for bench reports and to
// decide whether bf16 can run.
#pragma once
#include <set>
#include <string>
#include <vector>

namespace tide::runtime {

// The vector and matrix features tide cares about that this CPU has, in a fixed order:
// avx2, fma, avx512f, avx512_bf16, avx512_vnni, amx_tile, amx_bf16.
std::vector<std::string> cpu_features();
bool has_cpu_feature(const std::string& name);

// CPUs where bf16 matrix products are native (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower
// than float32. TIDE_NO_BF16=1 makes this false (to try the float32 fallback on a bf16 machine).
bool bf16_supported();

// The flags of the first "flags" line of /proc/cpuinfo-formatted text.
std::set<std::string> cpuinfo_flags(const std::string& cpuinfo);
bool cpuinfo_has_native_bf16(const std::set<std::string>& flags);

std::string cpu_model_name();

}  // namespace tide::runtime
