// 16-bit weights (float16, bfloat16) widened to float32 where a layer uses them (--weights f16 / bf16, the
// VAE of an int8 model). libtorch's conversion ran at ~2.5 GB/s on a 2-core Xeon (5.5 ms for one 512-channel
// 3x3 weight), 5-7% of an f16 UNet call and VAE decode; one vectorized pass over the threads runs at memory speed.
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
