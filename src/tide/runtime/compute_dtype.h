// The dtype the UNet computes in (`--dtype`): float32, or bfloat16 on CPUs that multiply bf16 natively
// (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower than float32, so tide says so and stays in
// float32 rather than silently running slower.
#pragma once
#include <c10/core/ScalarType.h>

#include <string>

namespace tide::runtime {

// "float32" | "f32" | "fp32" -> Float, "bf16" | "bfloat16" -> BFloat16; anything else is a tide::Error
// naming `flag`.
c10::ScalarType parse_compute_dtype(const std::string& name, const std::string& flag = "--dtype");

// `requested`, or Float when it is BFloat16 and this CPU has no native bf16; `note` then says why.
c10::ScalarType usable_compute_dtype(c10::ScalarType requested, std::string* note);

// "float32" / "bf16": the names the CLI, bench reports and PNG parameters use.
std::string compute_dtype_name(c10::ScalarType dtype);

}  // namespace tide::runtime
