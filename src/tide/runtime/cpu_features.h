// What the CPU offers, read at run time (/proc/cpuinfo flags on Linux), for bench reports and to
// decide whether bf16 can run.
#pragma once
#include <set>
#include <string>
#include <vector>

namespace tide::runtime {

// The vector and matrix features tide cares about that this CPU has, in a fixed order:
// avx2, fma, avx512f, avx512_bf16, avx512_vnni, amx_tile, amx_bf16. Capped like oneDNN by DNNL_MAX_CPU_ISA
// (or ONEDNN_MAX_CPU_ISA): with AVX2 the AVX-512 and AMX features are hidden from tide's kernels, the peak
// measurement and bf16 detection as well, so the AVX2 paths can be measured and tested on any newer CPU.
std::vector<std::string> cpu_features();
bool has_cpu_feature(const std::string& name);
// False when DNNL_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA names an ISA below AVX-512 (for kernels that detect the
// CPU themselves).
bool max_isa_allows_avx512();

// CPUs where bf16 matrix products are native (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower
// than float32. TIDE_NO_BF16=1 makes this false (to try the float32 fallback on a bf16 machine).
bool bf16_supported();

// The flags of the first "flags" line of /proc/cpuinfo-formatted text.
std::set<std::string> cpuinfo_flags(const std::string& cpuinfo);
bool cpuinfo_has_native_bf16(const std::set<std::string>& flags);

std::string cpu_model_name();

}  // namespace tide::runtime
