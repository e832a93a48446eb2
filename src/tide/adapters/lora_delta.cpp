#include "tide/adapters/lora_delta.h"

#include <numeric>

#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::adapters {
namespace {

at::Tensor factor(const LoraLayer& layer, const char* role) { return layer.factors.at(role).to(at::kFloat); }
bool has(const LoraLayer& layer, const char* role) { return layer.factors.count(role) != 0; }

// [rows, rest] view of a factor stored as a matrix or as a (1x1 or kxk) convolution weight.
at::Tensor as_matrix(const at::Tensor& t) { return t.dim() == 2 ? t : t.reshape({t.size(0), -1}); }

void expect(bool ok, const std::string& where, const std::string& what) {
  if (!ok) throw Error(where + ": " + what);
}

// LyCORIS functional/general.py rebuild_tucker: t [r1, r2, k, k], wa [r1, out], wb [r2, in] -> [out, in, k, k].
at::Tensor rebuild_tucker(const at::Tensor& t, const at::Tensor& wa, const at::Tensor& wb, const std::string& where) {
  expect(t.dim() >= 2 && wa.dim() == 2 && wb.dim() == 2 && t.size(0) == wa.size(0) && t.size(1) == wb.size(0), where,
         "Tucker factors of shapes " + shape_string(t.sizes()) + ", " + shape_string(wa.sizes()) + ", " +
             shape_string(wb.sizes()) + " do not fit together");
  return at::einsum("ij...,ip,jr->pr...", {t, wa, wb});
}

at::Tensor matmul_checked(const at::Tensor& a, const at::Tensor& b, const std::string& where, const char* what) {
  expect(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), where,
         std::string(what) + ": factors of shapes " + shape_string(a.sizes()) + " and " + shape_string(b.sizes()) +
             " cannot be multiplied");
  return a.mm(b);
}

at::Tensor lora_product(const LoraLayer& layer, const std::string& where) {
  const at::Tensor down = as_matrix(factor(layer, "down"));  // [r, in·kh·kw]
  const at::Tensor up = as_matrix(factor(layer, "up"));      // [out, r]
  if (!has(layer, "mid")) return matmul_checked(up, down, where, "lora_up @ lora_down");
  // kohya / A1111 rebuild_cp_decomposition: mid [r, r, kh, kw] between a 1x1 down and a 1x1 up.
  const at::Tensor mid = factor(layer, "mid");
  expect(mid.dim() == 4 && mid.size(0) == up.size(1) && mid.size(1) == down.size(0), where,
         "lora_mid " + shape_string(mid.sizes()) + " does not fit lora_up " + shape_string(up.sizes()) +
             " and lora_down " +
             shape_string(down.sizes()));
  return at::einsum("nmkl,in,mj->ijkl", {mid, up, down});  // [out, in, kh, kw]
}

at::Tensor loha_product(const LoraLayer& layer, const std::string& where) {
  auto half = [&](const char* a, const char* b, const char* t) {
    if (has(layer, t)) return rebuild_tucker(factor(layer, t), factor(layer, a), factor(layer, b), where);
    return matmul_checked(factor(layer, a), factor(layer, b), where, a);
  };
  const at::Tensor w1 = half("hada_w1_a", "hada_w1_b", "hada_t1");
  const at::Tensor w2 = half("hada_w2_a", "hada_w2_b", "hada_t2");
  expect(w1.sizes() == w2.sizes(), where,
         "the two LoHa products differ in shape: " + shape_string(w1.sizes()) + " and " + shape_string(w2.sizes()));
  return w1 * w2;
}

at::Tensor lokr_product(const LoraLayer& layer, const std::vector<int64_t>& weight_shape, const std::string& where) {
  at::Tensor w1 = has(layer, "lokr_w1") ? factor(layer, "lokr_w1")
                                        : matmul_checked(factor(layer, "lokr_w1_a"), factor(layer, "lokr_w1_b"), where,
                                                         "lokr_w1_a @ lokr_w1_b");
  at::Tensor w2;
  if (has(layer, "lokr_w2")) {
    w2 = factor(layer, "lokr_w2");
  } else if (has(layer, "lokr_t2")) {
    w2 = rebuild_tucker(factor(layer, "lokr_t2"), factor(layer, "lokr_w2_a"), factor(layer, "lokr_w2_b"), where);
  } else {
    w2 = matmul_checked(factor(layer, "lokr_w2_a"), factor(layer, "lokr_w2_b"), where, "lokr_w2_a @ lokr_w2_b");
  }
  // A convolution's w2 made of two matrices is (out_k, in_n·kh·kw): viewed as (out_k, in_n, kh, kw).
  if (weight_shape.size() == 4 && w2.dim() == 2) {
    const int64_t k = weight_shape[2] * weight_shape[3];
    expect(w2.size(1) % k == 0, where,
           "lokr w2 " + shape_string(w2.sizes()) + " does not fit a " + shape_string(weight_shape) + " convolution");
    w2 = w2.reshape({w2.size(0), w2.size(1) / k, weight_shape[2], weight_shape[3]});
  }
  expect(w1.dim() == 2, where, "lokr w1 must be a matrix, got " + shape_string(w1.sizes()));
  while (w1.dim() < w2.dim()) w1 = w1.unsqueeze(-1);
  return at::kron(w1, w2);
}

}  // namespace

double lora_scale(const LoraLayer& layer) {
  int64_t rank = 0;
  switch (layer.kind) {
    case LoraKind::kLora:
      rank = layer.factors.at("down").size(0);
      break;
    case LoraKind::kLoha:
      rank = layer.factors.at("hada_w1_b").size(0);
      break;
    case LoraKind::kLokr:
      // Both Kronecker factors full: LyCORIS resets alpha to the rank (scale 1) whatever is stored.
      if (has(layer, "lokr_w1_b")) rank = layer.factors.at("lokr_w1_b").size(0);
      else if (has(layer, "lokr_w2_b")) rank = layer.factors.at("lokr_w2_b").size(0);
      else return 1.0;
      break;
    case LoraKind::kFull:
      return 1.0;
  }
  if (!layer.alpha || *layer.alpha == 0 || rank == 0) return 1.0;
  return *layer.alpha / static_cast<double>(rank);
}

at::Tensor lora_delta(const LoraLayer& layer, const std::vector<int64_t>& weight_shape, const std::string& where) {
  at::Tensor delta;
  switch (layer.kind) {
    case LoraKind::kLora: delta = lora_product(layer, where); break;
    case LoraKind::kLoha: delta = loha_product(layer, where); break;
    case LoraKind::kLokr: delta = lokr_product(layer, weight_shape, where); break;
    case LoraKind::kFull: delta = factor(layer, "diff"); break;
  }
  const int64_t numel = std::accumulate(weight_shape.begin(), weight_shape.end(), int64_t{1}, std::multiplies<>());
  expect(!weight_shape.empty() && delta.dim() >= 1 && delta.size(0) == weight_shape[0] && delta.numel() == numel, where,
         std::string(lora_kind_name(layer.kind)) + " delta of shape " + shape_string(delta.sizes()) +
             " does not fit the layer's weight " + shape_string(weight_shape) + " (a LoRA for another model?)");
  const double scale = lora_scale(layer);
  delta = delta.reshape(weight_shape);
  return scale == 1.0 ? delta.contiguous() : delta * scale;
}

}  // namespace tide::adapters
