// What the CPU offers, read at run time (/proc/cpuinfo flags on Linux), for bench reports and to
// decide whether bf16 can run.
#pragma once
#include <string>
#include <vector>

namespace tide::runtime {

// The vector and matrix features tide cares about that this CPU has, in a fixed order:
// avx2, fma, avx512f, avx512_bf16, avx512_vnni, amx_tile, amx_bf16.
std::vector<std::string> cpu_features();
bool has_cpu_feature(const std::string& name);

// CPUs where bf16 matrix products are native (AMX or AVX512-BF16).
bool bf16_supported();

std::string cpu_model_name();

}  // namespace tide::runtime
