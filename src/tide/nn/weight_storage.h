// How the weights of Linear and Conv2d layers are kept in memory (`--weights`): float32, float16 or bfloat16
// (widened to the compute dtype where a layer uses them, so no float32 copy of the model exists), or int8
// with one float32 scale per output channel (w[o, ...] ≈ q[o, ...] · scale[o], symmetric) computed by the
// int8 kernels where the CPU has them and dequantized per call elsewhere. The storage is chosen before the
// weights are loaded: the loader converts each tensor as it copies it in.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>

namespace torch::nn {
class Module;
}

namespace tide::nn {

enum class WeightFormat { kFloat32, kFloat16, kBFloat16, kInt8 };

// "f32" | "float32" | "fp32", "f16" | "fp16" | "float16", "bf16" | "bfloat16", "int8"; anything else is a
// tide::Error naming `flag`.
WeightFormat parse_weight_format(const std::string& name, const std::string& flag = "--weights");
std::string weight_format_name(WeightFormat format);  // "f32", "f16", "bf16", "int8"

// What `--weights format` stores a layer (module path `layer`, e.g. "conv_in") of a pipeline component
// ("unet", "vae", "text_encoder", "text_encoder_2") as: `format`, except that int8 keeps in float32 what is
// tiny and sensitive — the UNet's first and last convolutions and its time and added embeddings — and stores
// the VAE, which runs once per image, in float16.
WeightFormat storage_for_layer(WeightFormat format, const std::string& component, const std::string& layer);

// The name of the buffer holding an int8 weight's per-channel scales: "<weight name>_scale".
std::string scale_name(const std::string& weight_name);

// Stores the weight of every Linear and Conv2d under `root` in `format_of(module path)` (e.g. "conv_in",
// "down_blocks.0.attentions.0.proj_in"). Meant for a module whose weights are loaded next: values are not
// converted (int8 layers get a `weight_scale` buffer of ones).
void set_weight_storage(torch::nn::Module& root, const std::function<WeightFormat(const std::string&)>& format_of);
// The same for a module whose weights are loaded: their values are converted (int8: quantized per channel).
void convert_weight_storage(torch::nn::Module& root, const std::function<WeightFormat(const std::string&)>& format_of);

// Makes `root` compute in `dtype` (float32 or bf16): every floating parameter and buffer becomes `dtype`,
// except the weights a format stores narrower (float16, bfloat16 or int8 with their scales), which stay
// as they are and are widened per call.
void set_compute_dtype(torch::nn::Module& root, at::ScalarType dtype);

// The weights of one layer in `dtype`, for computing: `weight` itself when it is stored that way, else a
// widened (float16/bfloat16) or dequantized (int8, with `scale` [out]) temporary.
at::Tensor weight_for_compute(const at::Tensor& weight, const at::Tensor& scale, at::ScalarType dtype);

}  // namespace tide::nn
