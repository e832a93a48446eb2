#include "tide/kernels/matmul_f32.h"

#include "tide/kernels/onednn.h"

namespace tide::kernels {
namespace {

using dnnl::memory;
using dt = memory::data_type;

// A 2-D operand as oneDNN reads it: its strides as they are where one of them is 1 (the GEMM kernels need a
// unit stride), else a contiguous copy.
at::Tensor with_unit_stride(const at::Tensor& t) {
  return (t.stride(1) == 1 || t.stride(0) == 1) && t.stride(0) > 0 && t.stride(1) > 0 ? t : t.contiguous();
}

bool cpu_float(const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; }

// Undefined, or [n] on the CPU: float32, or with `any_floating` any floating type.
bool bias_of(const at::Tensor& bias, int64_t n, bool any_floating = false) {
  return !bias.defined() || ((any_floating ? bias.device().is_cpu() && bias.is_floating_point() : cpu_float(bias)) &&
                             bias.dim() == 1 && bias.size(0) == n);
}

memory::desc described(const at::Tensor& t) { return memory::desc(dims_of(t.sizes()), dt::f32, dims_of(t.strides())); }

}  // namespace

bool matmul_f32_supported(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias) {
  return cpu_float(a) && cpu_float(b) && a.dim() >= 1 && b.dim() == 2 && a.size(-1) == b.size(0) &&
         bias_of(bias, b.size(1));
}

at::Tensor matmul_f32(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias) {
  TORCH_CHECK(matmul_f32_supported(a, b, bias), "matmul_f32: expected float32 CPU operands a [..., K], b [K, N] "
              "and bias [N], got ", a.sizes(), ", ", b.sizes(), bias.defined() ? " and a bias" : "");
  const int64_t k = b.size(0), n = b.size(1);
  std::vector<int64_t> out_sizes(a.sizes().begin(), a.sizes().end());
  out_sizes.back() = n;
  const int64_t m = c10::multiply_integers(a.sizes().begin(), a.sizes().end() - 1);
  if (m == 0 || n == 0 || k == 0) {  // nothing to multiply: at::linear's result
    at::Tensor out = at::zeros({m, n}, a.options());
    if (bias.defined()) out += bias;
    return out.view(out_sizes);
  }
  const at::Tensor rows = a.reshape({m, k});  // [M, K], a view where a's rows are evenly strided
  const at::Tensor src = with_unit_stride(rows), weights = with_unit_stride(b);
  at::Tensor out = at::empty({m, n}, a.options());  // [M, N]
  const memory::desc src_md = described(src), weights_md = described(weights), dst_md = described(out);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src_md, cpu_engine(), src.data_ptr())},
                                       {DNNL_ARG_WEIGHTS, memory(weights_md, cpu_engine(), weights.data_ptr())},
                                       {DNNL_ARG_DST, memory(dst_md, cpu_engine(), out.data_ptr())}};
  const at::Tensor bias_row = bias.defined() ? bias.contiguous().view({1, n}) : at::Tensor();  // [1, N]
  if (bias_row.defined()) args.emplace(DNNL_ARG_BIAS, memory(described(bias_row), cpu_engine(), bias_row.data_ptr()));
  const auto desc = bias_row.defined() ? dnnl::matmul::desc(src_md, weights_md, described(bias_row), dst_md)
                                       : dnnl::matmul::desc(src_md, weights_md, dst_md);
  // Built per call: a few microseconds, and oneDNN's own primitive cache serves repeated shapes.
  const dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  execute(dnnl::matmul(pd), pd.scratchpad_desc(), std::move(args));
  return out.view(out_sizes);
}

bool conv1x1_f32_supported(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // Any floating weight dtype: callers widen a 16-bit weight for conv1x1_f32, so that a layer computes the same
  // way whether its weight is stored in 16 or 32 bits. Any floating bias: widened here, as the direct and
  // Winograd kernels widen theirs (the kernel rule, conv2d_forward_kernel, does not look at the bias).
  return cpu_float(x) && weight.device().is_cpu() && weight.is_floating_point() && x.dim() == 4 &&
         weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1 && x.size(1) == weight.size(1) &&
         bias_of(bias, weight.size(0), /*any_floating=*/true);
}

bool conv1x1_as_matmul_pays_off(const at::Tensor& x) { return x.dim() == 4 && x.size(0) * x.size(2) * x.size(3) <= 512; }

at::Tensor conv1x1_f32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(conv1x1_f32_supported(x, weight, bias) && weight.scalar_type() == at::kFloat,
              "conv1x1_f32: expected float32 CPU x [B, C, H, W], float32 weight [K, ", x.dim() == 4 ? x.size(1) : -1,
              ", 1, 1] and bias [K], got ", x.sizes(), " and ", weight.sizes(), " ", weight.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = weight.size(0);
  if (B * H * W == 0) return at::empty({B, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const at::Tensor pixels = x.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});  // [B, H, W, C], dense
  const at::Tensor bias_f32 = bias.defined() ? bias.to(at::kFloat) : bias;
  const at::Tensor y = matmul_f32(pixels, weight.reshape({K, C}).t(), bias_f32);                 // [B, H, W, K]
  return y.view({B, H, W, K}).permute({0, 3, 1, 2});  // [B, K, H, W], channels last
}

}  // namespace tide::kernels
