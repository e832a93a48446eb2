// A tensor mapped value by value into a new one with the same sizes and strides. The values of a non-overlapping,
// dense tensor fill numel() consecutive elements in some order (contiguous, channels last, HWIO), so they are
// converted in memory order over the threads and the result keeps the layout; other tensors are made contiguous.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

namespace tide::kernels {

// `convert(const From* from, To* to, int64_t n)` maps n consecutive values; it runs on chunks of 64 Ki values
// or more, from several threads at once. The result has dtype `dtype`, whose C++ type is To.
template <typename From, typename To, typename Convert>
at::Tensor map_dense(const at::Tensor& t, at::ScalarType dtype, Convert convert) {
  const at::Tensor src = t.is_non_overlapping_and_dense() ? t : t.contiguous();
  at::Tensor out = at::empty_strided(src.sizes(), src.strides(), src.options().dtype(dtype));
  const From* from = src.template data_ptr<From>();
  To* to = out.template data_ptr<To>();
  at::parallel_for(0, src.numel(), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
    convert(from + begin, to + begin, end - begin);
  });
  return out;
}

}  // namespace tide::kernels
