// W8A8 linear layers and convolutions through oneDNN 2.x (the library libtorch itself links): per call, one pass
// for the activations' range, one quantizing reorder (float32 → u8 with scale and zero point, which also turns
// an NCHW input channels-last), one int8 primitive (matmul or convolution) that applies the scales and the bias
// on its way out: dst = Σ (src − zero_point)·wei · weight_scale[o] · activation_scale + bias[o] (in float32).
#include "tide/kernels/int8_compute.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "tide/kernels/map_dense.h"
#include "tide/kernels/onednn.h"
#include "tide/runtime/error.h"

namespace tide::kernels {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

// Attributes of the int8 products. The weight scales are fixed output scales (per output channel, `scale_mask`);
// the activation scale, known only per call, is a binary post-op multiplying by a run-time scalar; the source
// zero point is given at run time. So dst = (weight_scale[o] · (Σ (src − zero_point)·wei + bias'[o])) · a_scale,
// where oneDNN 2.x adds the bias before the output scale: bias' = bias / (weight_scale · a_scale), a run-time
// operand too. Measured alternatives: run-time output scales (convolutions do not accept them; a matmul with
// them falls back from its brgemm kernels to the slow gemm path) and per-channel binary multiply and add
// post-ops (1.5-2x slower matmuls and 1x1 convolutions). A scratchpad each call brings (so concurrent calls
// never share one).
dnnl::primitive_attr int8_product_attr(const at::Tensor& weight_scales, int scale_mask, const memory::desc& scalar) {
  dnnl::primitive_attr attr;
  const float* w = weight_scales.data_ptr<float>();
  attr.set_output_scales(scale_mask, std::vector<float>(w, w + weight_scales.numel()));
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, scalar);
  attr.set_post_ops(ops);
  attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// float32 → u8: dst = saturate(round(src · (1/scale) + zero_point)), scale and zero point given at run time; one
// scale for the whole tensor, or (`per_row`) one per row of a matrix.
dnnl::reorder::primitive_desc quantize_reorder_pd(const memory::desc& src_f32, const memory::desc& dst_u8,
                                                  bool per_row = false) {
  dnnl::primitive_attr attr;
  attr.set_output_scales(per_row ? 1 << 0 : 0, {DNNL_RUNTIME_F32_VAL});
  attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return dnnl::reorder::primitive_desc(cpu_engine(), src_f32, cpu_engine(), dst_u8, attr);
}

// Quantizes `x` (float32, any strides described by src_md) into `xq` (u8, dst_md): x · inverse_scales + zero_point,
// with `count` inverse scales (1, or one per row for a reorder built per row).
void quantize_activations(const dnnl::reorder& reorder, const memory::desc& scratchpad, const memory::desc& src_md,
                          const at::Tensor& x, const memory::desc& dst_md, const at::Tensor& xq,
                          const float* inverse_scales, int64_t count, int32_t zero_point) {
  execute(reorder, scratchpad,
          {{DNNL_ARG_FROM, memory(src_md, cpu_engine(), x.data_ptr())},
           {DNNL_ARG_TO, memory(dst_md, cpu_engine(), xq.data_ptr())},
           {DNNL_ARG_ATTR_OUTPUT_SCALES,
            memory({{count}, dt::f32, tag::x}, cpu_engine(), const_cast<float*>(inverse_scales))},
           {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, memory({{1}, dt::s32, tag::x}, cpu_engine(), &zero_point)}});
}

// The same with one scale and zero point for the whole tensor.
void quantize_activations(const dnnl::reorder& reorder, const memory::desc& scratchpad, const memory::desc& src_md,
                          const at::Tensor& x, const memory::desc& dst_md, const at::Tensor& xq,
                          const ActivationQuantization& aq) {
  const float inverse_scale = 1.f / aq.scale;
  quantize_activations(reorder, scratchpad, src_md, x, dst_md, xq, &inverse_scale, 1, aq.zero_point);
}

// A per-row product's attributes: the weight scales as fixed output scales and the source zero point; the rows'
// scales and the bias are applied afterwards (scale_rows_add_bias): oneDNN 2.x has no per-row scale, and a binary
// post-op per row sends the matmul to its reference kernel (measured: ref_int8 instead of brgemm).
dnnl::primitive_attr row_product_attr(const at::Tensor& weight_scales) {
  dnnl::primitive_attr attr;
  const float* w = weight_scales.data_ptr<float>();
  attr.set_output_scales(1 << 1, std::vector<float>(w, w + weight_scales.numel()));
  attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// y[m, :] = y[m, :] · row_scale[m] + bias (bias: float32 [n] or undefined); y float32 [m, n] contiguous.
void scale_rows_add_bias(const at::Tensor& y, const at::Tensor& row_scale, const at::Tensor& bias) {
  const int64_t n = y.size(1);
  float* out = y.data_ptr<float>();
  const float* scale = row_scale.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  at::parallel_for(0, y.size(0), std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(n, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      float* row = out + m * n;
      const float s = scale[m];
      if (b)
        for (int64_t o = 0; o < n; ++o) row[o] = row[o] * s + b[o];
      else
        for (int64_t o = 0; o < n; ++o) row[o] *= s;
    }
  });
}

// Runs an int8 product built with int8_product_attr. `bias_over_scale`: bias / weight_scale (float32, or
// undefined), divided here by this call's activation scale.
void execute_product(const dnnl::primitive& p, const memory::desc& scratchpad, const memory::desc& src_md,
                     const at::Tensor& xq, const memory& weights, const memory::desc& dst_md, const at::Tensor& y,
                     const memory::desc& scalar_md, const memory::desc& bias_md, const at::Tensor& bias_over_scale,
                     const ActivationQuantization& aq) {
  float activation_scale = aq.scale;
  int32_t zero_point = aq.zero_point;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(src_md, cpu_engine(), xq.data_ptr())},
      {DNNL_ARG_WEIGHTS, weights},
      {DNNL_ARG_DST, memory(dst_md, cpu_engine(), y.data_ptr())},
      {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, memory(scalar_md, cpu_engine(), &activation_scale)},
      {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, memory({{1}, dt::s32, tag::x}, cpu_engine(), &zero_point)}};
  at::Tensor bias;
  if (bias_over_scale.defined()) {
    bias = bias_over_scale / aq.scale;  // float32 [out]
    args.emplace(DNNL_ARG_BIAS, memory(bias_md, cpu_engine(), bias.data_ptr()));
  }
  execute(p, scratchpad, std::move(args));
}

// The weights and scales as the kernels use them (kernels_halve_weights).
// Round-half-even(q / 2) byte by byte, in q's layout: float temporaries would be 4x the weights (59 MB for one
// 1280-channel 3x3 convolution) in the middle of the first UNet call.
at::Tensor halved(const at::Tensor& q) {
  static const std::array<int8_t, 256> half = [] {
    std::array<int8_t, 256> table{};
    for (int v = -128; v < 128; ++v) table[static_cast<uint8_t>(v)] = static_cast<int8_t>(std::nearbyint(v * 0.5));
    return table;
  }();
  return map_dense<int8_t, int8_t>(q, at::kChar, [&](const int8_t* from, int8_t* to, int64_t n) {
    for (int64_t i = 0; i < n; ++i) to[i] = half[static_cast<uint8_t>(from[i])];
  });
}
at::Tensor kernel_scale(const at::Tensor& scale) {
  return kernels_halve_weights() ? scale.to(at::kFloat) * 2 : scale.to(at::kFloat);
}

// The int8 weights in the layouts primitives asked for. The layer packs them when it is built, in the layout
// of a typical shape ("provisional"); the first call whose primitive wants another layout drops that one, so a
// layer never keeps a layout no call uses; a later shape that wants yet another layout packs (and keeps) one more.
// Keeps a reference to the caller's int8 tensor (no copy, whatever its strides: convolution weights are stored
// channels last) to pack from. Guarded by the owner's mutex.
class PackedWeights {
 public:
  // `plain`: the int8 weights as the caller stores them: [O, I, kh, kw] for a convolution, or [out, in] read as a
  // matmul's [K = in, N = out] operand (`as_matmul_operand`). They are packed as the kernels use them
  // (weights_for_kernels): halved ones only for the moment of packing, so no second plain copy is kept.
  PackedWeights(at::Tensor plain, bool as_matmul_operand) : plain_(std::move(plain)), matmul_(as_matmul_operand) {}

  void pack_provisional(const memory::desc& layout) { provisional_ = pack(layout); }

  memory get(const memory::desc& wanted) {
    for (const auto& m : packed_)
      if (m.get_desc() == wanted) return m;
    memory found;
    if (provisional_ && provisional_.get_desc() == wanted) found = provisional_;
    if (!found) found = pack(wanted);
    provisional_ = memory();  // used now, or not the layout calls want
    packed_.push_back(found);
    return packed_.back();
  }

  // Forgets the plain weights; later layouts are packed from a packed copy, which already holds the values
  // the kernels use (halved or not).
  void drop_plain() {
    if (packed_.empty() && provisional_) packed_.push_back(provisional_);
    if (!packed_.empty()) plain_ = at::Tensor();
  }

 private:
  memory pack(const memory::desc& layout) const {
    memory packed(layout, cpu_engine());
    // From the plain weights (halved as the kernels use them), or, once they are dropped, from a packed copy.
    at::Tensor source;
    memory src = !packed_.empty() ? packed_.front() : provisional_;  // a handle, not a copy
    if (plain_.defined()) {
      source = kernels_halve_weights() ? halved(plain_) : plain_;
      src = memory(described(source), cpu_engine(), source.data_ptr());
    }
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(src, packed).execute(stream, src, packed);
    stream.wait();
    return packed;
  }

  // The tensor's own layout, as oneDNN reads it.
  memory::desc described(const at::Tensor& t) const {
    if (matmul_) return memory::desc({t.size(1), t.size(0)}, dt::s8, memory::dims{t.stride(1), t.stride(0)});
    return memory::desc(dims_of(t.sizes()), dt::s8, dims_of(t.strides()));
  }

  at::Tensor plain_;
  bool matmul_;
  memory provisional_;
  std::vector<memory> packed_;
};

void check_weights(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, int64_t dims,
                   const char* what) {
  if (q.scalar_type() != at::kChar || q.dim() != dims)
    throw Error(std::string(what) + ": int8 weights must be int8 with " + std::to_string(dims) + " dimensions, got " +
                std::string(c10::toString(q.scalar_type())) + " with " + std::to_string(q.dim()));
  if (scale.dim() != 1 || scale.size(0) != q.size(0))
    throw Error(std::string(what) + ": weight scale must have one value per output channel (" +
                std::to_string(q.size(0)) + "), got " + std::to_string(scale.numel()));
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != q.size(0)))
    throw Error(std::string(what) + ": bias must have " + std::to_string(q.size(0)) + " values, got " +
                std::to_string(bias.numel()));
}

}  // namespace

// ---- CPU paths -------------------------------------------------------------------------------------------------

namespace {
std::string detect_int8_compute_path() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx:
      return "amx";
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_vnni";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx_vnni";
    case dnnl::cpu_isa::avx512_core:
    case dnnl::cpu_isa::avx512_mic:
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    default:
      return "none";
  }
}

}  // namespace

// oneDNN fixes its ISA at first use (DNNL_MAX_CPU_ISA is read once), so the answers are fixed too: found once,
// they cost nothing on the layers' hot path.
std::string int8_compute_path() {
  static const std::string path = detect_int8_compute_path();
  return path;
}

bool int8_compute_available() {
  static const bool available = int8_compute_path() != "none";
  return available;
}

bool kernels_halve_weights() {
  static const bool halve = [] {
    const std::string path = int8_compute_path();
    return !(path == "amx" || path == "avx512_vnni" || path == "avx_vnni");
  }();
  return halve;
}

QuantizedWeight weights_for_kernels(const at::Tensor& q, const at::Tensor& scale) {
  return {kernels_halve_weights() ? halved(q) : q, kernel_scale(scale)};
}

ActivationQuantization choose_activation_quantization(const at::Tensor& x, int levels) {
  ActivationQuantization aq;
  aq.levels = levels;
  if (x.numel() == 0) return aq;
  // Over the elements as stored: libtorch 1.13 reduces a channels-last tensor 15× slower than a flat one.
  const at::Tensor flat = (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast))
                              ? x.as_strided({x.numel()}, {1})
                              : x.reshape(-1);
  const auto [lo_t, hi_t] = at::aminmax(flat);
  const double lo = std::min(lo_t.item<double>(), 0.0), hi = std::max(hi_t.item<double>(), 0.0);
  if (!std::isfinite(lo) || !std::isfinite(hi))
    throw Error("int8 compute: the activations have NaN or infinite values");
  // All zeros, or a range so small that 1/scale would overflow float32: scale 1, zero point 0 (every value
  // quantizes to 0, an error below 1e-30).
  if (hi - lo < 1e-30) return aq;
  aq.scale = static_cast<float>((hi - lo) / levels);
  aq.zero_point = static_cast<int32_t>(std::clamp(std::nearbyint(-lo / aq.scale), 0.0, double(levels)));
  return aq;
}

RowQuantization choose_row_quantization(const at::Tensor& x) {
  if (x.dim() != 2 || x.scalar_type() != at::kFloat || !x.is_contiguous())
    throw Error("int8 compute: row quantization takes a contiguous float32 matrix");
  const int64_t m = x.size(0), k = x.size(1);
  RowQuantization rq{at::empty({m}, at::kFloat), at::empty({m}, at::kFloat)};
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(x.data_ptr<float>());
  float* scale = rq.scale.data_ptr<float>();
  float* inverse = rq.inverse_scale.data_ptr<float>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, m, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(k, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      // The largest magnitude as the largest of the bit patterns without the sign: they order like the values,
      // the loop vectorizes as integer code, and NaN and infinities (patterns from 0x7f800000 up) survive it.
      uint32_t largest = 0;
      const uint32_t* row = bits + r * k;
      for (int64_t i = 0; i < k; ++i) largest = std::max(largest, row[i] & 0x7fffffffu);
      if (largest >= 0x7f800000u) finite.store(false, std::memory_order_relaxed);
      float magnitude;
      std::memcpy(&magnitude, &largest, sizeof magnitude);
      scale[r] = magnitude < 1e-30f ? 1.f : magnitude / 127.f;
      inverse[r] = 1.f / scale[r];
    }
  });
  if (!finite.load()) throw Error("int8 compute: the activations have NaN or infinite values");
  return rq;
}

// ---- linear ----------------------------------------------------------------------------------------------------

namespace {
struct LinearPlan {
  dnnl::reorder quantize;
  memory::desc quantize_scratchpad;
  dnnl::matmul matmul;
  memory::desc matmul_scratchpad;
  memory weights;
};
}  // namespace

struct Int8Linear::Impl {
  at::Tensor scale, bias_over_scale;  // float32 [out]; bias / scale, float32 [out] or undefined
  at::Tensor bias;                    // float32 [out] or undefined: added after the rows' scales (per_row)
  ActivationScales activations;
  mutable std::mutex mutex;
  mutable PackedWeights packed;
  mutable std::map<int64_t, std::shared_ptr<const LinearPlan>> plans;  // by rows M

  Impl(const at::Tensor& q, at::Tensor s, const at::Tensor& b, ActivationScales a)
      : scale(std::move(s)),
        bias_over_scale(b.defined() && a == ActivationScales::per_tensor ? b / scale : at::Tensor()),
        bias(a == ActivationScales::per_row ? b : at::Tensor()),
        activations(a),
        // q [out, in] read as the matmul's [K, N] operand: K = in with stride 1, N = out with stride in.
        packed(q, /*as_matmul_operand=*/true) {}

  dnnl::matmul::primitive_desc product_pd(int64_t m, int64_t k, int64_t n) const {
    const memory::desc src({m, k}, dt::u8, tag::ab), weights({k, n}, dt::s8, tag::any), dst({m, n}, dt::f32, tag::ab);
    if (activations == ActivationScales::per_row)
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), row_product_attr(scale), cpu_engine());
    const auto desc = bias_over_scale.defined() ? dnnl::matmul::desc(src, weights, {{1, n}, dt::f32, tag::ab}, dst)
                                                : dnnl::matmul::desc(src, weights, dst);
    return dnnl::matmul::primitive_desc(desc, int8_product_attr(scale, 1 << 1, {{1, 1}, dt::f32, tag::ab}),
                                        cpu_engine());
  }

  std::shared_ptr<const LinearPlan> plan(int64_t m, int64_t k, int64_t n) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = plans[m];
    if (slot) return slot;
    try {
      slot = make_plan(m, k, n);
    } catch (const dnnl::error& e) {
      throw Error("int8 linear: oneDNN has no int8 kernel for " + std::to_string(m) + " rows of " + std::to_string(k) +
                  " → " + std::to_string(n) + ": " + e.what());
    }
    return slot;
  }

  std::shared_ptr<const LinearPlan> make_plan(int64_t m, int64_t k, int64_t n) const {
    auto p = std::make_shared<LinearPlan>();
    const auto quantize_pd = quantize_reorder_pd({{m, k}, dt::f32, tag::ab}, {{m, k}, dt::u8, tag::ab},
                                                 activations == ActivationScales::per_row);
    p->quantize = dnnl::reorder(quantize_pd);
    p->quantize_scratchpad = quantize_pd.scratchpad_desc();
    const auto pd = product_pd(m, k, n);
    p->matmul = dnnl::matmul(pd);
    p->matmul_scratchpad = pd.scratchpad_desc();
    p->weights = packed.get(pd.weights_desc());
    return p;
  }
};

Int8Linear::Int8Linear(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, int64_t typical_rows,
                       ActivationScales activations) {
  check_weights(q, scale, bias, 2, "int8 linear");
  in_ = q.size(1);
  out_ = q.size(0);
  impl_ = std::make_unique<Impl>(q, kernel_scale(scale).contiguous(),
                                 bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor(), activations);
  try {
    impl_->packed.pack_provisional(impl_->product_pd(typical_rows, in_, out_).weights_desc());
  } catch (const dnnl::error&) {
    // no kernel for that shape: the first call packs
  }
}

Int8Linear::~Int8Linear() = default;

void Int8Linear::drop_plain_weights() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->packed.drop_plain();
}

at::Tensor Int8Linear::forward(const at::Tensor& x) const {
  if (x.dim() < 1 || x.size(-1) != in_)
    throw Error("int8 linear: input must end in " + std::to_string(in_) + " features, got " +
                std::to_string(x.dim() ? x.size(-1) : 0));
  at::internal::lazy_init_num_threads();  // oneDNN's OpenMP team: the caller's at::get_num_threads()
  const at::Tensor x2 = x.to(at::kFloat).reshape({-1, in_}).contiguous();  // [M, in]
  const int64_t m = x2.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_;
  at::Tensor y = at::empty(out_shape, x2.options());  // [..., out]
  if (m == 0) return y;
  const auto p = impl_->plan(m, in_, out_);
  at::Tensor xq = at::empty({m, in_}, at::kByte);
  const memory::desc src_f32({m, in_}, dt::f32, tag::ab), src_u8({m, in_}, dt::u8, tag::ab);
  if (impl_->activations == ActivationScales::per_row) {
    const RowQuantization rq = choose_row_quantization(x2);
    quantize_activations(p->quantize, p->quantize_scratchpad, src_f32, x2, src_u8, xq,
                         rq.inverse_scale.data_ptr<float>(), m, kRowZeroPoint);
    int32_t zero_point = kRowZeroPoint;
    const at::Tensor y2 = y.view({m, out_});
    execute(p->matmul, p->matmul_scratchpad,
            {{DNNL_ARG_SRC, memory(src_u8, cpu_engine(), xq.data_ptr())},
             {DNNL_ARG_WEIGHTS, p->weights},
             {DNNL_ARG_DST, memory({{m, out_}, dt::f32, tag::ab}, cpu_engine(), y2.data_ptr())},
             {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, memory({{1}, dt::s32, tag::x}, cpu_engine(), &zero_point)}});
    scale_rows_add_bias(y2, rq.scale, impl_->bias);
    return y;
  }
  const ActivationQuantization aq = choose_activation_quantization(x2);
  quantize_activations(p->quantize, p->quantize_scratchpad, src_f32, x2, src_u8, xq, aq);

  execute_product(p->matmul, p->matmul_scratchpad, src_u8, xq, p->weights, {{m, out_}, dt::f32, tag::ab}, y,
                  {{1, 1}, dt::f32, tag::ab}, {{1, out_}, dt::f32, tag::ab}, impl_->bias_over_scale, aq);
  return y;
}

// ---- convolution -----------------------------------------------------------------------------------------------

namespace {
struct ConvPlan {
  dnnl::reorder quantize;
  memory::desc quantize_scratchpad, src_f32, src_u8, dst;
  dnnl::convolution_forward conv;
  memory::desc conv_scratchpad;
  memory weights;
};
using ConvKey = std::tuple<int64_t, int64_t, int64_t, bool>;  // B, H, W, input channels-last
}  // namespace

struct Int8Conv2d::Impl {
  at::Tensor scale, bias_over_scale;  // float32 [O]; bias / scale, float32 [O] or undefined
  int64_t out_channels, in_channels, kh, kw, stride, padding;
  mutable std::mutex mutex;
  mutable PackedWeights packed;
  mutable std::map<ConvKey, std::shared_ptr<const ConvPlan>> plans;

  Impl(const at::Tensor& q, at::Tensor s, const at::Tensor& b, int64_t st, int64_t pad)
      : scale(std::move(s)),
        bias_over_scale(b.defined() ? b / scale : at::Tensor()),
        out_channels(q.size(0)),
        in_channels(q.size(1)),
        kh(q.size(2)),
        kw(q.size(3)),
        stride(st),
        padding(pad),
        packed(q, /*as_matmul_operand=*/false) {}

  int64_t out_size(int64_t in, int64_t k) const { return (in + 2 * padding - k) / stride + 1; }

  dnnl::convolution_forward::primitive_desc product_pd(int64_t b, int64_t h, int64_t w) const {
    const memory::dims src_dims{b, in_channels, h, w};
    const memory::dims dst_dims{b, out_channels, out_size(h, kh), out_size(w, kw)};
    const dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, {src_dims, dt::u8, tag::nhwc},
        {{out_channels, in_channels, kh, kw}, dt::s8, tag::any},
        bias_over_scale.defined() ? memory::desc({out_channels}, dt::f32, tag::x) : memory::desc(),
        {dst_dims, dt::f32, tag::nhwc}, {stride, stride}, {padding, padding}, {padding, padding});
    return dnnl::convolution_forward::primitive_desc(
        desc, int8_product_attr(scale, 1 << 1, {{1, 1, 1, 1}, dt::f32, tag::nchw}), cpu_engine());
  }

  std::shared_ptr<const ConvPlan> plan(int64_t b, int64_t h, int64_t w, bool channels_last) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = plans[ConvKey(b, h, w, channels_last)];
    if (slot) return slot;
    try {
      slot = make_plan(b, h, w, channels_last);
    } catch (const dnnl::error& e) {
      throw Error("int8 conv2d: oneDNN has no int8 kernel for input [" + std::to_string(b) + ", " +
                  std::to_string(in_channels) + ", " + std::to_string(h) + ", " + std::to_string(w) + "]: " + e.what());
    }
    return slot;
  }

  std::shared_ptr<const ConvPlan> make_plan(int64_t b, int64_t h, int64_t w, bool channels_last) const {
    auto p = std::make_shared<ConvPlan>();
    const auto pd = product_pd(b, h, w);
    p->src_u8 = pd.src_desc();
    p->dst = pd.dst_desc();
    p->src_f32 = memory::desc({b, in_channels, h, w}, dt::f32, channels_last ? tag::nhwc : tag::nchw);
    const auto quantize_pd = quantize_reorder_pd(p->src_f32, p->src_u8);
    p->quantize = dnnl::reorder(quantize_pd);
    p->quantize_scratchpad = quantize_pd.scratchpad_desc();
    p->conv = dnnl::convolution_forward(pd);
    p->conv_scratchpad = pd.scratchpad_desc();
    p->weights = packed.get(pd.weights_desc());
    return p;
  }
};

Int8Conv2d::Int8Conv2d(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, int64_t stride,
                       int64_t padding, std::array<int64_t, 3> typical_input_size) {
  check_weights(q, scale, bias, 4, "int8 conv2d");
  if (stride < 1 || padding < 0)
    throw Error("int8 conv2d: stride must be at least 1 and padding at least 0, got stride " + std::to_string(stride) +
                ", padding " + std::to_string(padding));
  impl_ = std::make_unique<Impl>(q, kernel_scale(scale).contiguous(),
                                 bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor(), stride, padding);
  try {
    impl_->packed.pack_provisional(
        impl_->product_pd(typical_input_size[0], typical_input_size[1], typical_input_size[2]).weights_desc());
  } catch (const dnnl::error&) {
    // no kernel for that shape (e.g. smaller than the kernel): the first call packs
  }
}

Int8Conv2d::~Int8Conv2d() = default;

void Int8Conv2d::drop_plain_weights() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->packed.drop_plain();
}

at::Tensor Int8Conv2d::forward(const at::Tensor& x) const {
  const Impl& im = *impl_;
  if (x.dim() != 4 || x.size(1) != im.in_channels)
    throw Error("int8 conv2d: input must be [B, " + std::to_string(im.in_channels) + ", H, W], got " +
                std::to_string(x.dim()) + " dimensions" +
                (x.dim() >= 2 ? ", " + std::to_string(x.size(1)) + " channels" : ""));
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  if (h + 2 * im.padding < im.kh || w + 2 * im.padding < im.kw)
    throw Error("int8 conv2d: input " + std::to_string(h) + "x" + std::to_string(w) + " is smaller than the kernel");
  at::internal::lazy_init_num_threads();  // oneDNN's OpenMP team: the caller's at::get_num_threads()
  at::Tensor xf = x.to(at::kFloat);
  const bool channels_last = xf.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (!channels_last) xf = xf.contiguous();  // [B, I, H, W] NCHW
  at::Tensor y = at::empty({b, im.out_channels, im.out_size(h, im.kh), im.out_size(w, im.kw)},
                           xf.options().memory_format(at::MemoryFormat::ChannelsLast));  // [B, O, H', W']
  if (b == 0) return y;
  const auto p = im.plan(b, h, w, channels_last);
  const ActivationQuantization aq = choose_activation_quantization(xf);
  at::Tensor xq =
      at::empty({b, im.in_channels, h, w}, at::TensorOptions(at::kByte).memory_format(at::MemoryFormat::ChannelsLast));
  quantize_activations(p->quantize, p->quantize_scratchpad, p->src_f32, xf, p->src_u8, xq, aq);

  execute_product(p->conv, p->conv_scratchpad, p->src_u8, xq, p->weights, p->dst, y, {{1, 1, 1, 1}, dt::f32, tag::nchw},
                  {{im.out_channels}, dt::f32, tag::x}, im.bias_over_scale, aq);
  return y;
}

// ---- references ------------------------------------------------------------------------------------------------

namespace {
// (xq − zero_point) as float64, xq rounded like the quantizing reorder: float32 x · (1/scale) + zero point, to
// nearest even, clamped to [0, levels].
at::Tensor reference_quantized_activations(const at::Tensor& x, const ActivationQuantization& aq) {
  const float inverse_scale = 1.f / aq.scale;
  const at::Tensor t = x.to(at::kFloat) * inverse_scale + static_cast<float>(aq.zero_point);  // float32 rounding
  return at::round(t).clamp(0, aq.levels).to(at::kDouble) - aq.zero_point;
}
}  // namespace

at::Tensor int8_linear_reference(const at::Tensor& x, const at::Tensor& q_stored, const at::Tensor& scale_stored,
                                 const at::Tensor& bias, ActivationScales activations) {
  const auto [q, scale] = weights_for_kernels(q_stored, scale_stored);
  if (activations == ActivationScales::per_row) {
    const at::Tensor x2 = x.to(at::kFloat).reshape({-1, x.size(-1)}).contiguous();  // [M, in]
    const RowQuantization rq = choose_row_quantization(x2);
    const at::Tensor t = x2 * rq.inverse_scale.unsqueeze(1) + static_cast<float>(kRowZeroPoint);  // float32 rounding
    const at::Tensor xs = at::round(t).clamp(0, 255).to(at::kDouble) - kRowZeroPoint;          // [M, in]
    at::Tensor y = at::matmul(xs, q.to(at::kDouble).t()) * scale.to(at::kFloat).to(at::kDouble) *
                   rq.scale.to(at::kDouble).unsqueeze(1);  // exact integer sums, [M, out]
    if (bias.defined()) y = y + bias.to(at::kDouble);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = q.size(0);
    return y.reshape(shape);
  }
  const ActivationQuantization aq = choose_activation_quantization(x.to(at::kFloat));
  const at::Tensor xs = reference_quantized_activations(x, aq);                   // [..., in]
  const at::Tensor combined = (scale.to(at::kFloat) * aq.scale).to(at::kDouble);  // float32 products, [out]
  at::Tensor y = at::matmul(xs, q.to(at::kDouble).t()) * combined;                // exact integer sums, [..., out]
  if (bias.defined()) y = y + bias.to(at::kDouble);
  return y;
}

at::Tensor int8_conv2d_reference(const at::Tensor& x, const at::Tensor& q_stored, const at::Tensor& scale_stored,
                                 const at::Tensor& bias, int64_t stride, int64_t padding) {
  const auto [q, scale] = weights_for_kernels(q_stored, scale_stored);
  const ActivationQuantization aq = choose_activation_quantization(x.to(at::kFloat));
  const at::Tensor xs = reference_quantized_activations(x, aq).contiguous();  // [B, I, H, W]; padding = real zero
  const at::Tensor combined = (scale.to(at::kFloat) * aq.scale).to(at::kDouble);
  at::Tensor y = at::conv2d(xs, q.to(at::kDouble), {}, stride, padding) * combined.reshape({1, -1, 1, 1});
  if (bias.defined()) y = y + bias.to(at::kDouble).reshape({1, -1, 1, 1});
  return y;
}

}  // namespace tide::kernels
