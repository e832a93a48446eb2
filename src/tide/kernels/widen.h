// 16-bit weights (float16, bfloat16) widened to float32 where a layer uses them (--weights f16 / bf16, the
// VAE of an int8 model), in one F16C/AVX2 pass over the threads: one 512-channel 3x3 weight into mapped memory
// in 0.57-0.66 ms against libtorch's conversion's 0.80-0.94 ms (a 2-core Xeon; into fresh pages both took
// 4-5 ms, the page faults dominating).
#pragma once

#include <ATen/ATen.h>

namespace tide::kernels {

// `narrow` (float16 or bfloat16, CPU) as float32 with the same sizes and strides (channels last and HWIO
// weights stay so), each value exactly widened; NaN stays NaN. Other dtypes: narrow.to(float32).
at::Tensor widen_to_float(const at::Tensor& narrow);

// The same conversion on `n` consecutive values, vectorized on CPUs with F16C / AVX2 unless `allow_vector` is
// false (the scalar path, for tests).
void widen_half(const at::Half* from, float* to, int64_t n, bool allow_vector = true);
void widen_bfloat16(const at::BFloat16* from, float* to, int64_t n, bool allow_vector = true);

}  // namespace tide::kernels
