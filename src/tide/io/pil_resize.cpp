#include "tide/io/pil_resize.h"

#include <algorithm>
#include <cmath>

#include "tide/runtime/error.h"

namespace tide::io {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {  // truncated sinc, support 3
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

// Pillow's normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point.
std::vector<std::vector<int32_t>> fixed_point(const ResampleCoefficients& c) {
  std::vector<std::vector<int32_t>> out(c.w.size());
  for (size_t i = 0; i < c.w.size(); ++i)
    for (double w : c.w[i])
      out[i].push_back(w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPrecisionBits))
                             : static_cast<int32_t>(0.5 + w * (1 << kPrecisionBits)));
  return out;
}

// Pillow's clip8: the accumulator already holds the +0.5 rounding term.
inline uint8_t clip8(int32_t sum) { return static_cast<uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255)); }

}  // namespace

ResampleCoefficients resample_coefficients(int in_size, int out_size, ResampleFilter filter) {
  const bool lanczos = filter == ResampleFilter::kLanczos;
  const double support_1 = lanczos ? 3.0 : 2.0;  // the filter's support at scale 1
  const double scale = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_1 * filterscale;
  ResampleCoefficients c;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.w.resize(out_size);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation, as in C
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    std::vector<double> k(static_cast<size_t>(std::max(xmax, 0)));
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double arg = (x + xmin - center + 0.5) * ss;
      k[x] = lanczos ? lanczos_filter(arg) : bicubic_filter(arg);
      ww += k[x];
    }
    if (ww != 0.0)
      for (double& w : k) w /= ww;
    c.first[xx] = xmin;
    c.count[xx] = xmax;
    c.w[xx] = std::move(k);
  }
  return c;
}

at::Tensor pil_resize(const at::Tensor& rgb8, int out_width, int out_height, ResampleFilter filter) {
  if (rgb8.scalar_type() != at::kByte || rgb8.dim() != 3 || rgb8.size(2) < 1 || rgb8.size(2) > 4)
    throw Error("resize: expected a uint8 [H, W, C] image");
  if (out_width < 1 || out_height < 1) throw Error("resize: the output size must be positive");
  const at::Tensor in = rgb8.contiguous();
  const int h = static_cast<int>(in.size(0)), w = static_cast<int>(in.size(1)), ch = static_cast<int>(in.size(2));
  if (h == out_height && w == out_width) return in.clone();  // Image.resize returns a copy

  // Rows the vertical pass reads; the horizontal pass only computes those (as Pillow does).
  const ResampleCoefficients vert = resample_coefficients(h, out_height, filter);
  const int row_first = vert.first[0];
  const int row_last = vert.first[out_height - 1] + vert.count[out_height - 1];

  // Horizontal pass -> uint8 [row_last - row_first, out_width, ch].
  at::Tensor tmp;
  int tmp_first = 0;  // input row of tmp's row 0
  if (w != out_width) {
    const ResampleCoefficients horiz = resample_coefficients(w, out_width, filter);
    const auto kk = fixed_point(horiz);
    tmp = at::empty({row_last - row_first, out_width, ch}, in.options());
    const uint8_t* src = in.data_ptr<uint8_t>();
    uint8_t* dst = tmp.data_ptr<uint8_t>();
    for (int y = row_first; y < row_last; ++y)
      for (int xx = 0; xx < out_width; ++xx)
        for (int c = 0; c < ch; ++c) {
          int32_t sum = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < horiz.count[xx]; ++x)
            sum += src[(static_cast<int64_t>(y) * w + horiz.first[xx] + x) * ch + c] * kk[xx][x];
          dst[(static_cast<int64_t>(y - row_first) * out_width + xx) * ch + c] = clip8(sum);
        }
    tmp_first = row_first;
  } else {
    tmp = in;
  }
  if (h == out_height) return tmp.contiguous();

  // Vertical pass.
  const auto kk = fixed_point(vert);
  at::Tensor out = at::empty({out_height, out_width, ch}, in.options());
  const uint8_t* src = tmp.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int yy = 0; yy < out_height; ++yy)
    for (int xx = 0; xx < out_width; ++xx)
      for (int c = 0; c < ch; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (int y = 0; y < vert.count[yy]; ++y)
          sum += src[(static_cast<int64_t>(vert.first[yy] + y - tmp_first) * out_width + xx) * ch + c] * kk[yy][y];
        dst[(static_cast<int64_t>(yy) * out_width + xx) * ch + c] = clip8(sum);
      }
  return out;
}

}  // namespace tide::io
