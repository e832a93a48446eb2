#include "tide/io/pil_blur.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tide/runtime/error.h"

namespace tide::io {
namespace {

// ImagingLineBoxBlur8: one row, box of integer `radius` plus the fractional weight `fw` on the two
// pixels just outside it; `ww` is the weight of the inner pixels (both 8.24 fixed point).
void line_box_blur(uint8_t* out, const uint8_t* in, int lastx, int radius, int edge_a, int edge_b, uint32_t ww,
                   uint32_t fw) {
  uint32_t acc = in[0] * (radius + 1);
  for (int x = 0; x < edge_a - 1; ++x) acc += in[x];
  acc += in[lastx] * (radius - edge_a + 1);
  const auto move = [&](int subtract, int add) { acc += in[add] - in[subtract]; };
  const auto save = [&](int x, int left, int right) {
    const uint32_t bulk = acc * ww + (in[left] + in[right]) * fw;
    out[x] = static_cast<uint8_t>((bulk + (1u << 23)) >> 24);
  };
  if (edge_a <= edge_b) {
    for (int x = 0; x < edge_a; ++x) move(0, x + radius), save(x, 0, x + radius + 1);
    for (int x = edge_a; x < edge_b; ++x) move(x - radius - 1, x + radius), save(x, x - radius - 1, x + radius + 1);
    for (int x = edge_b; x <= lastx; ++x) move(x - radius - 1, lastx), save(x, x - radius - 1, lastx);
  } else {
    for (int x = 0; x < edge_b; ++x) move(0, x + radius), save(x, 0, x + radius + 1);
    for (int x = edge_b; x < edge_a; ++x) move(0, lastx), save(x, 0, lastx);
    for (int x = edge_a; x <= lastx; ++x) move(x - radius - 1, lastx), save(x, x - radius - 1, lastx);
  }
}

// ImagingHorizontalBoxBlur in place on a [rows, width] buffer.
void horizontal_box_blur(std::vector<uint8_t>& img, int rows, int width, float float_radius) {
  const int radius = static_cast<int>(float_radius);
  const uint32_t ww = static_cast<uint32_t>(static_cast<float>(1 << 24) / (float_radius * 2 + 1));
  const uint32_t fw = ((1u << 24) - (radius * 2 + 1) * ww) / 2;
  const int edge_a = std::min(radius + 1, width);
  const int edge_b = std::max(width - radius - 1, 0);
  std::vector<uint8_t> line(width);
  for (int y = 0; y < rows; ++y) {
    uint8_t* row = img.data() + static_cast<size_t>(y) * width;
    line_box_blur(line.data(), row, width - 1, radius, edge_a, edge_b, ww, fw);
    std::copy(line.begin(), line.end(), row);
  }
}

std::vector<uint8_t> transposed(const std::vector<uint8_t>& img, int rows, int cols) {
  std::vector<uint8_t> t(img.size());
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) t[static_cast<size_t>(x) * rows + y] = img[static_cast<size_t>(y) * cols + x];
  return t;
}

}  // namespace

float pil_box_radius_for_gaussian(float radius, int passes) {
  const float sigma2 = radius * radius / passes;
  const float L = static_cast<float>(std::sqrt(12.0 * sigma2 + 1.0));  // box length
  const float l = std::floor((L - 1.0) / 2.0);                           // its integer part
  float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);                    // the fractional part
  a /= 6 * (sigma2 - (l + 1) * (l + 1));
  return l + a;
}

at::Tensor pil_gaussian_blur(const at::Tensor& grey8, double radius) {
  if (grey8.scalar_type() != at::kByte || grey8.dim() != 2) throw Error("blur: expected a uint8 [H, W] image");
  if (!(radius >= 0)) throw Error("blur: the radius must be non-negative");
  const at::Tensor in = grey8.contiguous();
  if (radius == 0) return in.clone();
  constexpr int kPasses = 3;
  const int h = static_cast<int>(in.size(0)), w = static_cast<int>(in.size(1));
  const float box = pil_box_radius_for_gaussian(static_cast<float>(radius), kPasses);
  std::vector<uint8_t> img(in.data_ptr<uint8_t>(), in.data_ptr<uint8_t>() + in.numel());
  for (int i = 0; i < kPasses; ++i) horizontal_box_blur(img, h, w, box);
  // the vertical passes run as horizontal ones on the transposed image
  std::vector<uint8_t> t = transposed(img, h, w);
  for (int i = 0; i < kPasses; ++i) horizontal_box_blur(t, w, h, box);
  img = transposed(t, w, h);
  at::Tensor out = at::empty({h, w}, in.options());
  std::copy(img.begin(), img.end(), out.data_ptr<uint8_t>());
  return out;
}

}  // namespace tide::io
