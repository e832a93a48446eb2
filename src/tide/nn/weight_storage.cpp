#include "tide/nn/weight_storage.h"

#include <torch/nn/module.h>

#include <set>

#include "tide/kernels/weight_quantization.h"
#include "tide/kernels/widen.h"
#include "tide/nn/layers.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {

WeightFormat parse_weight_format(const std::string& name, const std::string& flag) {
  if (name == "f32" || name == "fp32" || name == "float32") return WeightFormat::kFloat32;
  if (name == "f16" || name == "fp16" || name == "float16") return WeightFormat::kFloat16;
  if (name == "bf16" || name == "bfloat16") return WeightFormat::kBFloat16;
  if (name == "int8") return WeightFormat::kInt8;
  throw Error(flag + " must be f32, f16, bf16 or int8, got '" + name + "'");
}

std::string weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kFloat32: return "f32";
    case WeightFormat::kFloat16: return "f16";
    case WeightFormat::kBFloat16: return "bf16";
    case WeightFormat::kInt8: return "int8";
  }
  return "?";
}

WeightFormat storage_for_layer(WeightFormat format, const std::string& component, const std::string& layer) {
  if (format != WeightFormat::kInt8) return format;
  if (component == "vae") return WeightFormat::kFloat16;
  const bool kept = layer == "conv_in" || layer == "conv_out" || layer.rfind("time_embedding.", 0) == 0 ||
                    layer.rfind("add_embedding.", 0) == 0;
  return component == "unet" && kept ? WeightFormat::kFloat32 : WeightFormat::kInt8;
}

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale"; }

namespace {

at::ScalarType storage_dtype(WeightFormat format) {
  switch (format) {
    case WeightFormat::kFloat16: return at::kHalf;
    case WeightFormat::kBFloat16: return at::kBFloat16;
    case WeightFormat::kInt8: return at::kChar;
    default: return at::kFloat;
  }
}

// Gives `weight` storage of `format`'s dtype (and `weight_scale` its int8 scales): uninitialized, or holding the
// weight's values converted (`convert`).
// Weights not loaded yet get storage in `layout`, the one their layer computes with, so that loading writes each
// value once where it stays (re-laying out a loaded model would hold two copies of a layer's weights at a time
// and leave the old ones as free heap: 0.6 GB more at the peak for SD 1.5 in f16).
template <typename Layer>
void store(Layer& layer, WeightFormat format, bool convert, const std::string& name, at::MemoryFormat layout) {
  c10::NoGradGuard no_grad;
  const at::ScalarType dtype = storage_dtype(format);
  const bool int8 = format == WeightFormat::kInt8;
  // torch::nn::Module cannot drop a buffer; models are built anew for another format.
  if (!int8 && layer.weight_scale.defined()) throw Error(name + ": a layer stored as int8 cannot be stored as " + weight_format_name(format));
  layer.stored_dtype = dtype;
  if (layer.weight.scalar_type() == dtype) {
    if (!convert && !layer.weight.is_contiguous(layout))
      layer.weight.set_data(at::empty(layer.weight.sizes(), layer.weight.options().memory_format(layout)));
    return;
  }
  if (int8) {
    layer.weight.set_requires_grad(false);  // integers cannot require gradients
    const auto memory_format = convert ? layer.weight.suggest_memory_format() : layout;
    at::Tensor scale = at::ones({layer.weight.size(0)});
    at::Tensor q = at::empty(layer.weight.sizes(), layer.weight.options().dtype(at::kChar).memory_format(memory_format));
    if (convert) {
      auto quantized = kernels::quantize_per_channel(layer.weight, name + ".weight");
      q.copy_(quantized.q);
      scale = quantized.scale;
    }
    layer.weight.set_data(q);
    layer.weight_scale = layer.register_buffer("weight_scale", scale);
  } else if (convert) {
    layer.weight.set_data(layer.weight.to(dtype));
  } else {
    layer.weight.set_data(at::empty(layer.weight.sizes(), layer.weight.options().dtype(dtype).memory_format(layout)));
  }
}

void store_all(torch::nn::Module& root, const std::function<WeightFormat(const std::string&)>& format_of, bool convert) {
  const auto conv_layout =
      runtime::optimizations().channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (const auto& item : root.named_modules("", /*include_self=*/true)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(item.value().get()))
      store(*linear, format_of(item.key()), convert, item.key(), at::MemoryFormat::Contiguous);
    if (auto* conv = dynamic_cast<Conv2dImpl*>(item.value().get()))
      store(*conv, format_of(item.key()), convert, item.key(), conv_layout);
  }
}

}  // namespace

void set_weight_storage(torch::nn::Module& root, const std::function<WeightFormat(const std::string&)>& format_of) {
  store_all(root, format_of, /*convert=*/false);
}

void convert_weight_storage(torch::nn::Module& root, const std::function<WeightFormat(const std::string&)>& format_of) {
  store_all(root, format_of, /*convert=*/true);
}

void set_compute_dtype(torch::nn::Module& root, at::ScalarType dtype) {
  std::set<const c10::TensorImpl*> kept;  // weights (and scales) stored in a format of their own
  auto keep = [&](const auto& layer) {
    if (layer.stored_dtype == at::kFloat) return;
    kept.insert(layer.weight.unsafeGetTensorImpl());
    if (layer.weight_scale.defined()) kept.insert(layer.weight_scale.unsafeGetTensorImpl());
  };
  for (const auto& module : root.modules(/*include_self=*/true)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(module.get())) keep(*linear);
    if (auto* conv = dynamic_cast<Conv2dImpl*>(module.get())) keep(*conv);
  }
  c10::NoGradGuard no_grad;
  auto convert = [&](at::Tensor& t) {
    if (t.is_floating_point() && t.scalar_type() != dtype && !kept.count(t.unsafeGetTensorImpl())) t.set_data(t.to(dtype));
  };
  for (auto& item : root.named_parameters(/*recurse=*/true)) convert(item.value());
  for (auto& item : root.named_buffers(/*recurse=*/true)) convert(item.value());
}

at::Tensor weight_for_compute(const at::Tensor& weight, const at::Tensor& scale, at::ScalarType dtype) {
  if (weight.scalar_type() == at::kChar) return kernels::dequantize_per_channel(weight, scale, dtype);
  if (weight.scalar_type() == dtype) return weight;
  return dtype == at::kFloat ? kernels::widen_to_float(weight) : weight.to(dtype);
}

}  // namespace tide::nn
