// --weights: int8 per-channel quantization against a float64 reference, 16-bit and int8 layers against
// float32, and whole tiny pipelines stored, written (tide quantize) and read back in every format.
#include <gtest/gtest.h>

#include <set>

#include <c10/core/GradMode.h>

#include "test_support.h"
#include "tiny_pipeline.h"
#include "tide/io/safetensors.h"
#include "tide/kernels/conv_forward_kernel.h"
#include "tide/kernels/int8_compute.h"
#include "tide/kernels/weight_quantization.h"
#include "tide/nn/layers.h"
#include "tide/nn/transformer_2d.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/model_writer.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"

namespace {
namespace fs = std::filesystem;
using tide::nn::WeightFormat;
using tide::testing::TempDir;

using tide::testing::relative_l2_error;

TEST(WeightQuantization, MatchesFloat64ReferencePerChannel) {
  at::manual_seed(1);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{7, 13}, {5, 3, 3, 3}, {1, 1}, {33, 65, 1, 1}}) {
    at::Tensor w = at::randn(shape) * 3;
    w[0].mul_(100);  // channels of very different ranges get their own scales
    const auto q = tide::kernels::quantize_per_channel(w);
    ASSERT_EQ(q.q.scalar_type(), at::kChar);
    ASSERT_EQ(q.q.sizes(), w.sizes());
    ASSERT_EQ(q.scale.sizes(), at::IntArrayRef({shape[0]}));
    // Reference in float64: scale = max|w| / 127, q = round(w / scale).
    const at::Tensor w64 = w.to(at::kDouble).reshape({shape[0], -1});
    const at::Tensor scale64 = w64.abs().amax(1) / 127.0;
    EXPECT_TENSOR_NEAR(q.scale.to(at::kDouble), scale64, 1e-7 * scale64.max().item<double>());
    const at::Tensor q64 = at::round(w64 / scale64.unsqueeze(1));
    EXPECT_EQ(tide::testing::max_abs_diff(q.q.reshape({shape[0], -1}), q64), 0.0) << "shape " << shape.size();
    // Dequantized within half a step of each channel.
    const at::Tensor err = (tide::kernels::dequantize_per_channel(q.q, q.scale).to(at::kDouble).reshape({shape[0], -1}) - w64).abs();
    EXPECT_TRUE((err <= scale64.unsqueeze(1) * 0.5 * (1 + 1e-6)).all().item<bool>());
    EXPECT_LE(q.q.abs().max().item<int>(), 127);
  }
}

TEST(WeightQuantization, ZeroRowsAndBadValues) {
  at::Tensor w = at::randn({4, 6});
  w[2].zero_();
  const auto q = tide::kernels::quantize_per_channel(w);
  EXPECT_EQ(q.scale[2].item<float>(), 1.0f);
  EXPECT_EQ(q.q[2].abs().sum().item<int64_t>(), 0);
  w[1][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(tide::kernels::quantize_per_channel(w, "layer.weight"), tide::Error);
  EXPECT_THROW(tide::kernels::dequantize_per_channel(q.q, at::ones({3})), tide::Error);
  EXPECT_THROW(tide::kernels::dequantize_per_channel(at::ones({4, 6}), q.scale), tide::Error);
  EXPECT_THROW(tide::nn::parse_weight_format("int4"), tide::Error);
  EXPECT_EQ(tide::nn::parse_weight_format("fp16"), WeightFormat::kFloat16);
}

// A Linear and a Conv2d stored in `format` compute what float32 layers holding the stored values compute;
// int8 layers with their W8A8 kernels compute what the kernels' float64 reference computes.
TEST(WeightStorage, LayersComputeWithTheStoredValues) {
  c10::NoGradGuard no_grad;
  at::manual_seed(2);
  for (WeightFormat format : {WeightFormat::kFloat16, WeightFormat::kBFloat16, WeightFormat::kInt8}) {
    SCOPED_TRACE(tide::nn::weight_format_name(format));
    tide::nn::Linear linear(24, 10);
    // Reading and writing more channels than the convolutions int8 keeps weight-only (nn/layers.cpp), so its W8A8
    // kernel runs.
    tide::nn::Conv2d conv(656, 336, 3, 1, 1);
    const at::Tensor x = at::randn({2, 7, 24}), image = at::randn({2, 656, 9, 11});
    const at::Tensor y32 = linear->forward(x), z32 = conv->forward(image);
    tide::nn::convert_weight_storage(*linear, [&](const std::string&) { return format; });
    tide::nn::convert_weight_storage(*conv, [&](const std::string&) { return format; });
    const at::Tensor w_lin = tide::nn::weight_for_compute(linear->weight, linear->weight_scale, at::kFloat);
    const at::Tensor w_conv = tide::nn::weight_for_compute(conv->weight, conv->weight_scale, at::kFloat);
    EXPECT_NE(linear->weight.scalar_type(), at::kFloat);
    {
      // Widened or dequantized per call: exactly the float32 layer with the stored (rounded) values ...
      tide::runtime::OptimizationsGuard weight_only(tide::runtime::Optimizations().without("int8_kernels"));
      EXPECT_TENSOR_NEAR(linear->forward(x), at::linear(x, w_lin, linear->bias), 1e-5);
      // (the convolution through a float32 kernel of tide's own, Winograd here, which rounds otherwise)
      const at::Tensor z_stored = at::conv2d(image, w_conv, conv->bias, 1, 1);
      EXPECT_TENSOR_NEAR(conv->forward(image), z_stored, 1e-4 * z_stored.abs().max().item<double>());
    }
    // ... which are close to the float32 ones: relative error of the format's rounding (and, int8, of the
    // activations' quantization).
    const double tol = format == WeightFormat::kFloat16 ? 2e-3 : format == WeightFormat::kBFloat16 ? 2e-2 : 3e-2;
    EXPECT_LT(relative_l2_error(linear->forward(x), y32), tol);
    EXPECT_LT(relative_l2_error(conv->forward(image), z32), tol);
    if (format != WeightFormat::kInt8) continue;
    if (!tide::kernels::int8_compute_available()) {
      tide::testing::note_path_not_exercised("W8A8 int8 layers", "no int8 arithmetic on this CPU");
      continue;
    }
    std::printf("[   INFO   ] int8 layers on the %s path\n", tide::kernels::int8_compute_path().c_str());
    const at::Tensor lin_ref = tide::kernels::int8_linear_reference(x, linear->weight, linear->weight_scale, linear->bias);
    const at::Tensor conv_ref =
        tide::kernels::int8_conv2d_reference(image, conv->weight, conv->weight_scale, conv->bias, 1, 1);
    EXPECT_TENSOR_NEAR(linear->forward(x), lin_ref, 1e-5 * lin_ref.abs().max().item<double>());
    EXPECT_TENSOR_NEAR(conv->forward(image), conv_ref, 1e-5 * conv_ref.abs().max().item<double>());
  }
}

// One-shot runs keep an int8 layer's weights only in its kernel's packed layout after the first call: the same
// outputs, other shapes still right (packed from the packed copy), the plain storage gone, and the paths that
// would need it refused.
TEST(WeightStorage, Int8LayersKeptOnlyPackedComputeTheSameAndGiveThePlainWeightsUp) {
  c10::NoGradGuard no_grad;
  at::manual_seed(4);
  if (!tide::kernels::int8_compute_available()) {
    tide::testing::note_path_not_exercised("int8 weights kept only packed", "no int8 arithmetic on this CPU");
    return;
  }
  tide::nn::Linear linear(24, 10);
  tide::nn::Conv2d conv(656, 336, 3, 1, 1);
  tide::nn::convert_weight_storage(*linear, [](const std::string&) { return WeightFormat::kInt8; });
  tide::nn::convert_weight_storage(*conv, [](const std::string&) { return WeightFormat::kInt8; });
  const at::Tensor lin_q = linear->weight.clone(), conv_q = conv->weight.clone();
  const at::Tensor x = at::randn({2, 7, 24}), image = at::randn({2, 656, 9, 11});
  const at::Tensor lin_before = linear->forward(x), conv_before = conv->forward(image);

  tide::nn::keep_int8_weights_packed_only(*linear);
  tide::nn::keep_int8_weights_packed_only(*conv);
  EXPECT_TRUE(at::equal(linear->forward(x), lin_before));
  EXPECT_TRUE(at::equal(conv->forward(image), conv_before));
  for (const at::Tensor* w : {&linear->weight, &conv->weight}) {
    EXPECT_EQ(w->storage().nbytes(), 1u) << "the plain int8 weights are still held";
    EXPECT_EQ(w->scalar_type(), at::kChar);
  }
  EXPECT_EQ(linear->weight.sizes(), lin_q.sizes());
  EXPECT_EQ(conv->weight.sizes(), conv_q.sizes());
  EXPECT_TRUE(at::equal(linear->forward(x), lin_before)) << "a later call";

  // Shapes never seen before: right against the reference of the original weights.
  const at::Tensor x2 = at::randn({33, 24}), image2 = at::randn({1, 656, 5, 7});
  const at::Tensor lin_ref = tide::kernels::int8_linear_reference(x2, lin_q, linear->weight_scale, linear->bias);
  const at::Tensor conv_ref = tide::kernels::int8_conv2d_reference(image2, conv_q, conv->weight_scale, conv->bias, 1, 1);
  EXPECT_TENSOR_NEAR(linear->forward(x2), lin_ref, 1e-5 * lin_ref.abs().max().item<double>());
  EXPECT_TENSOR_NEAR(conv->forward(image2), conv_ref, 1e-5 * conv_ref.abs().max().item<double>());

  tide::runtime::OptimizationsGuard weight_only(tide::runtime::Optimizations().without("int8_kernels"));
  EXPECT_THROW(linear->forward(x), tide::Error);
  EXPECT_THROW(conv->forward(image), tide::Error);
}

// SD's first level (convolutions reading 320 channels, or writing 320 on the up path) and, where the kernels halve
// the weights, its second (reading 640) lose too much to per-tensor activation quantization: those convolutions
// stay weight-only, exactly the dequantized float layer.
TEST(WeightStorage, Int8KeepsTheHighResolutionConvolutionsWeightOnly) {
  c10::NoGradGuard no_grad;
  at::manual_seed(3);
  if (!tide::kernels::int8_compute_available())
    tide::testing::note_path_not_exercised("W8A8 int8 layers", "no int8 arithmetic on this CPU");
  const int64_t widest = tide::kernels::kernels_halve_weights() ? 640 : 320;
  const std::vector<std::pair<int64_t, int64_t>> in_out{
      {320, 640}, {widest, 640}, {widest + 16, 640}, {widest + 16, 320}, {widest + 16, 336}};
  for (const auto& [in, out] : in_out) {
    SCOPED_TRACE(std::to_string(in) + " → " + std::to_string(out) + " channels");
    tide::nn::Conv2d conv(in, out, 3, 1, 1);
    tide::nn::convert_weight_storage(*conv, [](const std::string&) { return WeightFormat::kInt8; });
    const at::Tensor image = at::randn({1, in, 6, 5});
    const at::Tensor y = conv->forward(image);
    const at::Tensor weight_only =
        at::conv2d(image, tide::nn::weight_for_compute(conv->weight, conv->weight_scale, at::kFloat), conv->bias, 1, 1);
    const double scale = weight_only.abs().max().item<double>();
    if (in <= widest || out <= 320 || !tide::kernels::int8_compute_available()) {
      EXPECT_TENSOR_NEAR(y, weight_only, 1e-5 * scale);
    } else {
      const at::Tensor w8a8 = tide::kernels::int8_conv2d_reference(image, conv->weight, conv->weight_scale, conv->bias, 1, 1);
      EXPECT_TENSOR_NEAR(y, w8a8, 1e-5 * scale);
      EXPECT_GT(tide::testing::max_abs_diff(y, weight_only), 1e-4 * scale) << "W8A8 should differ from weight-only";
    }
  }
}

// A weight-only int8 convolution computes exactly what a float32 model of its dequantized weights computes, with
// the same float32 kernel: Winograd F(4×4), 1×1 as a product on small maps. Strided ones take oneDNN (nn/layers.cpp).
TEST(WeightStorage, Int8WeightOnlyConvolutionsTakeTheFloat32Kernels) {
  c10::NoGradGuard no_grad;
  at::manual_seed(4);
  struct Case {
    int64_t in, out, kernel, stride, padding, size;
  };
  for (const Case c : {Case{320, 16, 3, 1, 1, 16}, Case{64, 24, 1, 1, 0, 8}}) {
    SCOPED_TRACE(std::to_string(c.kernel) + "x" + std::to_string(c.kernel) + " stride " + std::to_string(c.stride));
    tide::nn::Conv2d int8(c.in, c.out, c.kernel, c.stride, c.padding);
    tide::nn::convert_weight_storage(*int8, [](const std::string&) { return WeightFormat::kInt8; });
    tide::nn::store_conv_weights_for_current_layout(*int8);
    tide::nn::Conv2d float32(c.in, c.out, c.kernel, c.stride, c.padding);
    float32->weight.set_data(tide::nn::weight_for_compute(int8->weight, int8->weight_scale, at::kFloat).contiguous());
    float32->bias.set_data(int8->bias.clone());
    tide::nn::store_conv_weights_for_current_layout(*float32);

    const at::Tensor x = at::randn({2, c.in, c.size, c.size}).contiguous(at::MemoryFormat::ChannelsLast);
    const auto kernel = tide::kernels::conv2d_forward_kernel(x, float32->weight, c.stride, c.padding, true, true, true, true);
    if (kernel == tide::kernels::ConvKernel::onednn)
      tide::testing::note_path_not_exercised("float32 convolution kernels for weight-only int8", "no AVX2 on this CPU");
    EXPECT_TRUE(at::equal(int8->forward(x), float32->forward(x))) << tide::kernels::conv_kernel_name(kernel);
  }
  tide::nn::Conv2d strided(320, 16, 3, 2, 1);
  tide::nn::convert_weight_storage(*strided, [](const std::string&) { return WeightFormat::kInt8; });
  tide::nn::store_conv_weights_for_current_layout(*strided);
  const at::Tensor x = at::randn({2, 320, 32, 32}).contiguous(at::MemoryFormat::ChannelsLast);  // 512 output pixels
  const at::Tensor w = tide::nn::weight_for_compute(strided->weight, strided->weight_scale, at::kFloat);
  EXPECT_TRUE(at::equal(strided->forward(x), at::conv2d(x, w.contiguous(at::MemoryFormat::ChannelsLast), strided->bias, 2, 1)))
      << "stride 2 beyond small maps: oneDNN's kernel";
}

// In a transformer, the layers whose inputs one activation scale represents badly stay weight-only int8: the
// projections in and out (linear in SD 2.x / XL); the feed-forward's last layer quantizes its input per token; the
// attention's run W8A8 with one scale per tensor.
TEST(WeightStorage, Int8KeepsTheTransformersProjectionsWeightOnly) {
  tide::nn::Transformer2DOptions options;
  options.channels = 32;
  options.heads = 2;
  options.cross_attention_dim = 16;
  options.use_linear_projection = true;
  tide::nn::Transformer2DModel transformer(options);
  std::set<std::string> weight_only, per_tensor, per_row;
  for (const auto& item : transformer->named_modules()) {
    const auto* linear = dynamic_cast<const tide::nn::LinearImpl*>(item.value().get());
    if (!linear) continue;
    if (!linear->int8_activations) weight_only.insert(item.key());
    else if (linear->int8_activation_scales == tide::kernels::ActivationScales::per_row) per_row.insert(item.key());
    else per_tensor.insert(item.key());
  }
  EXPECT_EQ(weight_only, (std::set<std::string>{"proj_in", "proj_out"}));
  EXPECT_EQ(per_row, (std::set<std::string>{"transformer_blocks.0.ff.net.2"}));
  EXPECT_TRUE(per_tensor.count("transformer_blocks.0.attn1.to_q") && per_tensor.count("transformer_blocks.0.attn2.to_k") &&
              per_tensor.count("transformer_blocks.0.attn1.to_out.0") && per_tensor.count("transformer_blocks.0.ff.net.0.proj"));
}

// A linear layer computes with the quantization its owner asked for: per row, each token at its own range, so
// tokens far smaller than the others keep their precision (one scale per tensor rounds them to almost nothing).
TEST(WeightStorage, Int8LinearQuantizesItsInputAsAsked) {
  if (!tide::kernels::int8_compute_available()) {
    tide::testing::note_path_not_exercised("W8A8 linear layers", "no int8 kernels on this CPU");
    GTEST_SKIP() << "no int8 kernels on this CPU";
  }
  using tide::kernels::ActivationScales;
  c10::InferenceMode guard;
  // Every other token 1000x smaller, like tokens of one image that the GEGLU barely lets through. [2, 10, 96]
  const at::Tensor x = at::randn({2, 10, 96}) * at::pow(10.0, -3 * (at::arange(10) % 2)).reshape({1, 10, 1});
  const at::Tensor small = x.slice(1, 1, 10, 2);
  double small_token_error[2];
  for (const auto scales : {ActivationScales::per_tensor, ActivationScales::per_row}) {
    tide::nn::Linear linear(96, 24);
    const at::Tensor w = linear->weight.clone(), b = linear->bias.clone();
    tide::nn::convert_weight_storage(*linear, [](const std::string&) { return WeightFormat::kInt8; });
    linear->int8_activation_scales = scales;
    const at::Tensor y = linear->forward(x);  // [2, 10, 24]
    const at::Tensor want = tide::kernels::int8_linear_reference(x, linear->weight, linear->weight_scale, b, scales);
    EXPECT_LE(tide::testing::max_abs_diff(y.to(at::kDouble), want), 1e-5 * want.abs().max().item<double>());
    const at::Tensor exact_small = at::matmul(small, w.t());  // without the bias, which dwarfs these tokens
    small_token_error[int(scales == ActivationScales::per_row)] =
        ((y.slice(1, 1, 10, 2) - b - exact_small).norm() / exact_small.norm()).item<double>();
  }
  EXPECT_GT(small_token_error[0], 0.3) << "one scale per tensor";
  EXPECT_LT(small_token_error[1], 0.05) << "one scale per token";
}

TEST(WeightStorage, ComputeDtypeLeavesNarrowWeightsAlone) {
  tide::nn::Linear a(8, 4), b(8, 4);
  tide::nn::convert_weight_storage(*b, [](const std::string&) { return WeightFormat::kInt8; });
  tide::nn::set_compute_dtype(*a, at::kBFloat16);
  tide::nn::set_compute_dtype(*b, at::kBFloat16);
  EXPECT_EQ(a->weight.scalar_type(), at::kBFloat16);  // float32-stored weights follow the compute dtype
  EXPECT_EQ(b->weight.scalar_type(), at::kChar);
  EXPECT_EQ(b->weight_scale.scalar_type(), at::kFloat);
  EXPECT_EQ(b->bias.scalar_type(), at::kBFloat16);
  EXPECT_EQ(b->forward(at::randn({3, 8}).to(at::kBFloat16)).scalar_type(), at::kBFloat16);
  EXPECT_THROW(tide::nn::convert_weight_storage(*b, [](const std::string&) { return WeightFormat::kFloat16; }), tide::Error);
}

TEST(WeightStorage, Int8KeepsTheSensitiveLayersInFloat) {
  using tide::nn::storage_for_layer;
  EXPECT_EQ(storage_for_layer(WeightFormat::kInt8, "unet", "conv_in"), WeightFormat::kFloat32);
  EXPECT_EQ(storage_for_layer(WeightFormat::kInt8, "unet", "time_embedding.linear_1"), WeightFormat::kFloat32);
  EXPECT_EQ(storage_for_layer(WeightFormat::kInt8, "unet", "down_blocks.0.resnets.0.conv1"), WeightFormat::kInt8);
  EXPECT_EQ(storage_for_layer(WeightFormat::kInt8, "vae", "decoder.conv_in"), WeightFormat::kFloat16);
  EXPECT_EQ(storage_for_layer(WeightFormat::kInt8, "text_encoder", "text_model.encoder.layers.0.mlp.fc1"), WeightFormat::kInt8);
  EXPECT_EQ(storage_for_layer(WeightFormat::kFloat16, "unet", "conv_in"), WeightFormat::kFloat16);
}

// The tiny pipeline, generated with a few steps.
tide::pipeline::GenerationResult generate(tide::pipeline::StableDiffusionPipeline& pipe) {
  tide::pipeline::GenerationRequest request;
  request.prompt = "a red fox";
  request.steps = 3;
  request.seed = 7;
  return pipe.generate(pipe.resolve(request));
}

std::unique_ptr<tide::pipeline::StableDiffusionPipeline> load(const fs::path& folder, std::optional<WeightFormat> weights) {
  tide::pipeline::LoadOptions options;
  options.weights = weights;
  return tide::pipeline::StableDiffusionPipeline::from_folder(folder, options);
}

at::ScalarType stored(tide::pipeline::StableDiffusionPipeline& pipe, const std::string& layer) {
  for (const auto& p : pipe.unet()->named_parameters())
    if (p.key() == layer + ".weight") return p.value().scalar_type();
  throw std::runtime_error("no layer " + layer);
}

// The first Linear/Conv2d layers of the UNet that int8 quantizes.
const char* kQuantizedLayer = "down_blocks.0.resnets.0.conv1";

TEST(WeightStoragePipeline, SixteenBitFileGivesTheFloat32Picture) {
  TempDir dir;
  const fs::path base = tide::testing::make_tiny_pipeline(dir / "base");
  const fs::path f16 = dir / "f16";
  {
    auto pipe = load(base, WeightFormat::kFloat16);
    EXPECT_EQ(stored(*pipe, kQuantizedLayer), at::kHalf);
    EXPECT_EQ(pipe->unet_dtype(), at::kFloat);
    tide::pipeline::write_pipeline_folder(*pipe, tide::pipeline::parts_from_folder(base), f16);
  }
  // Kept in 16 bits (--weights f16), or read into float32 (the default): the same values widened once.
  auto as_stored = load(f16, WeightFormat::kFloat16);
  auto widened = load(f16, std::nullopt);
  EXPECT_EQ(stored(*as_stored, kQuantizedLayer), at::kHalf);
  EXPECT_EQ(stored(*widened, kQuantizedLayer), at::kFloat);
  const auto a = generate(*as_stored), b = generate(*widened);
  EXPECT_TRUE(at::equal(a.latents, b.latents)) << "max diff " << tide::testing::max_abs_diff(a.latents, b.latents);
  EXPECT_TRUE(at::equal(a.images, b.images));
  // And near the float32 model's picture.
  auto f32 = load(base, std::nullopt);
  EXPECT_LT(relative_l2_error(a.latents, generate(*f32).latents), 1e-2);
}

TEST(WeightStoragePipeline, Int8RoundTripsThroughAQuantizedFolder) {
  TempDir dir;
  const fs::path base = tide::testing::make_tiny_pipeline(dir / "base");
  const fs::path int8 = dir / "int8";
  auto quantized = load(base, WeightFormat::kInt8);
  EXPECT_EQ(stored(*quantized, kQuantizedLayer), at::kChar);
  EXPECT_EQ(stored(*quantized, "conv_in"), at::kFloat);
  EXPECT_EQ(quantized->vae()->named_parameters()["decoder.conv_in.weight"].scalar_type(), at::kHalf);
  tide::pipeline::write_pipeline_folder(*quantized, tide::pipeline::parts_from_folder(base), int8, {{"tide.quantization", "{}"}});
  EXPECT_THROW(tide::pipeline::write_pipeline_folder(*quantized, tide::pipeline::parts_from_folder(base), int8), tide::Error);

  // The file holds int8 weights and their scales; loaded as stored, the layers are int8 again with the same values.
  const auto file = tide::io::WeightSource::from_component_dir(int8 / "unet");
  EXPECT_EQ(file.dtype(std::string(kQuantizedLayer) + ".weight"), at::kChar);
  EXPECT_TRUE(file.contains(std::string(kQuantizedLayer) + ".weight_scale"));
  auto reloaded = load(int8, std::nullopt);
  EXPECT_EQ(stored(*reloaded, kQuantizedLayer), at::kChar);
  for (const auto& p : quantized->unet()->named_parameters())
    EXPECT_TRUE(at::equal(p.value(), reloaded->unet()->named_parameters()[p.key()])) << p.key();
  for (const auto& b : quantized->unet()->named_buffers())
    EXPECT_TRUE(at::equal(b.value(), reloaded->unet()->named_buffers()[b.key()])) << b.key();
  const auto a = generate(*quantized), b = generate(*reloaded);
  EXPECT_TRUE(at::equal(a.images, b.images));

  // int8 changes the picture only a little; read into float32, the int8 file gives the dequantized weights.
  auto f32 = load(base, std::nullopt);
  const auto reference = generate(*f32);
  const double err = relative_l2_error(a.latents, reference.latents);
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.05);
  auto dequantized = load(int8, WeightFormat::kFloat32);
  EXPECT_EQ(stored(*dequantized, kQuantizedLayer), at::kFloat);
  // (Without the int8 kernels, and with float32 attention: an int8 UNet's attention multiplies in float16 where the
  // CPU has AVX512-FP16, which is not what this compares.)
  quantized->set_compute_settings({tide::runtime::Optimizations().without("int8_kernels,half_attention"), 0});
  EXPECT_LT(relative_l2_error(generate(*dequantized).latents, generate(*quantized).latents), 1e-4);
}

TEST(WeightStoragePipeline, DamagedQuantizedFilesAreRefused) {
  TempDir dir;
  const fs::path base = tide::testing::make_tiny_pipeline(dir / "base");
  const fs::path int8 = dir / "int8";
  {
    auto quantized = load(base, WeightFormat::kInt8);
    tide::pipeline::write_pipeline_folder(*quantized, tide::pipeline::parts_from_folder(base), int8);
  }
  const fs::path unet_file = int8 / "unet" / "diffusion_pytorch_model.safetensors";
  const auto original = tide::io::WeightSource::from_file(unet_file);
  auto rewrite = [&](const std::function<void(std::string, at::Tensor&, std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& name : original.names()) {
      at::Tensor t = original.tensor(name).clone();
      edit(name, t, tensors);
    }
    fs::remove(unet_file);
    tide::io::write_safetensors(unet_file, tensors);
  };
  const std::string scale = std::string(kQuantizedLayer) + ".weight_scale";
  for (const std::string damage : {"zero scale", "nan scale", "missing scale", "short scale"}) {
    rewrite([&](std::string name, at::Tensor& t, std::vector<std::pair<std::string, at::Tensor>>& out) {
      if (name == scale) {
        if (damage == "missing scale") return;
        if (damage == "zero scale") t[0] = 0.0f;
        if (damage == "nan scale") t[1] = std::numeric_limits<float>::quiet_NaN();
        if (damage == "short scale") t = t.narrow(0, 0, t.size(0) - 1).clone();
      }
      out.emplace_back(name, t);
    });
    for (std::optional<WeightFormat> weights : {std::optional<WeightFormat>(), std::optional<WeightFormat>(WeightFormat::kFloat32)}) {
      try {
        load(int8, weights);
        ADD_FAILURE() << damage << ": loaded";
      } catch (const tide::Error& e) {
        EXPECT_NE(std::string(e.what()).find(kQuantizedLayer), std::string::npos) << damage << ": " << e.what();
      }
    }
  }
}

TEST(WeightStoragePipeline, LorasMergeIntoInt8AndRestoreBitForBit) {
  // A LoRA on an int8 model is merged in float32 and quantized again; clearing it restores weights and scales.
  TempDir dir;
  const fs::path base = tide::testing::make_tiny_pipeline(dir / "base");
  auto pipe = load(base, WeightFormat::kInt8);
  const std::string layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  at::Tensor q_before = pipe->unet()->named_parameters()[layer + ".weight"].clone();
  at::Tensor s_before = pipe->unet()->named_buffers()[layer + ".weight_scale"].clone();
  ASSERT_EQ(q_before.scalar_type(), at::kChar);
  const int64_t out = q_before.size(0), in = q_before.size(1);
  at::manual_seed(3);
  const fs::path lora = dir / "lora.safetensors";
  tide::io::write_safetensors(lora, {{"unet." + layer + ".lora_A.weight", at::randn({2, in})},
                                     {"unet." + layer + ".lora_B.weight", at::randn({out, 2})}});
  pipe->set_loras({{lora, 1.0}});
  at::Tensor q_merged = pipe->unet()->named_parameters()[layer + ".weight"];
  EXPECT_EQ(q_merged.scalar_type(), at::kChar);
  EXPECT_FALSE(at::equal(q_merged, q_before));
  pipe->set_loras({});
  EXPECT_TRUE(at::equal(pipe->unet()->named_parameters()[layer + ".weight"], q_before));
  EXPECT_TRUE(at::equal(pipe->unet()->named_buffers()[layer + ".weight_scale"], s_before));
}

}  // namespace

namespace {

// tide generate's one-shot pipeline: int8 weights kept only packed give the same pictures, call after call, and
// LoRAs can no longer change.
TEST(WeightStoragePipeline, Int8WeightsKeptOnlyPackedGiveTheSamePictures) {
  TempDir dir;
  const fs::path base = tide::testing::make_tiny_pipeline(dir / "base");
  auto plain = load(base, WeightFormat::kInt8), packed = load(base, WeightFormat::kInt8);
  packed->keep_int8_weights_packed_only();
  const auto expected = generate(*plain);
  EXPECT_TRUE(at::equal(generate(*packed).images, expected.images));
  EXPECT_TRUE(at::equal(generate(*packed).images, expected.images)) << "the second run, packed weights only";
  if (tide::kernels::int8_compute_available()) {
    const at::Tensor to_q = packed->unet()->named_parameters()["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"];
    EXPECT_EQ(to_q.storage().nbytes(), 1u) << "a W8A8 layer kept its plain weights";
  } else {
    tide::testing::note_path_not_exercised("int8 weights kept only packed", "no int8 arithmetic on this CPU");
  }
  EXPECT_THROW(packed->set_loras({}), tide::Error);
}

}  // namespace
