#include "tide/kernels/weight_taps.h"

namespace tide::kernels {

WeightTaps weight_taps(const at::Tensor& weight, int rows_dim, int cols_dim, bool flipped) {
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == at::kFloat, "weight_taps: a float32 [K, C, kh, kw] weight");
  WeightTaps taps{weight.data_ptr<float>(), {}, weight.stride(rows_dim), weight.stride(cols_dim)};
  // Only index 0 of a dimension of size 1 is read: its stride may be anything, so call it 1.
  if (weight.size(rows_dim) == 1) taps.row_stride = 1;
  if (weight.size(cols_dim) == 1) taps.col_stride = 1;
  const int64_t kh = weight.size(2), kw = weight.size(3);
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      taps.tap.push_back((flipped ? kh - 1 - i : i) * weight.stride(2) + (flipped ? kw - 1 - j : j) * weight.stride(3));
  return taps;
}

}  // namespace tide::kernels
