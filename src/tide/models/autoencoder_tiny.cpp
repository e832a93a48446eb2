#include "tide/models/autoencoder_tiny.h"

#include "tide/io/json_file.h"
#include "tide/io/weights.h"
#include "tide/nn/layers.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::models {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw Error("AutoencoderTiny config: " + what);
}

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, bool bias = true) {
  return nn::Conv2d(in, out, 3, stride, 1, bias);
}

}  // namespace

void AutoencoderTinyConfig::validate() const {
  require(in_channels > 0 && out_channels > 0 && latent_channels > 0, "channel counts must be positive");
  require(!encoder_block_out_channels.empty() && encoder_block_out_channels.size() == num_encoder_blocks.size(),
          "encoder_block_out_channels " + shape_string(encoder_block_out_channels) + " and num_encoder_blocks " +
              shape_string(num_encoder_blocks) + " must have the same, non-zero length");
  require(!decoder_block_out_channels.empty() && decoder_block_out_channels.size() == num_decoder_blocks.size(),
          "decoder_block_out_channels " + shape_string(decoder_block_out_channels) + " and num_decoder_blocks " +
              shape_string(num_decoder_blocks) + " must have the same, non-zero length");
  // The convs between groups keep the channel count (diffusers builds them so), so all groups must agree.
  for (size_t i = 1; i < encoder_block_out_channels.size(); ++i)
    require(encoder_block_out_channels[i] == encoder_block_out_channels[0],
            "encoder_block_out_channels " + shape_string(encoder_block_out_channels) + " must all be equal");
  for (size_t i = 1; i < decoder_block_out_channels.size(); ++i)
    require(decoder_block_out_channels[i] == decoder_block_out_channels[0],
            "decoder_block_out_channels " + shape_string(decoder_block_out_channels) + " must all be equal");
  for (int64_t c : encoder_block_out_channels) require(c > 0, "block channels must be positive");
  for (int64_t c : decoder_block_out_channels) require(c > 0, "block channels must be positive");
  for (int64_t n : num_encoder_blocks) require(n >= 0, "num_encoder_blocks must not be negative");
  for (int64_t n : num_decoder_blocks) require(n >= 0, "num_decoder_blocks must not be negative");
  require(upsampling_scaling_factor >= 1, "upsampling_scaling_factor must be at least 1");
  require(scaling_factor > 0, "scaling_factor must be positive");
}

AutoencoderTinyConfig AutoencoderTinyConfig::from_json(const nlohmann::json& j) {
  using io::json_get;
  const std::string cls = json_get<std::string>(j, "_class_name", "AutoencoderTiny");
  if (cls != "AutoencoderTiny")
    throw Error("not an AutoencoderTiny (TAESD) config: _class_name is " + cls);
  AutoencoderTinyConfig c;
  c.in_channels = json_get<int64_t>(j, "in_channels", c.in_channels);
  c.out_channels = json_get<int64_t>(j, "out_channels", c.out_channels);
  c.encoder_block_out_channels = json_get(j, "encoder_block_out_channels", c.encoder_block_out_channels);
  c.decoder_block_out_channels = json_get(j, "decoder_block_out_channels", c.decoder_block_out_channels);
  c.num_encoder_blocks = json_get(j, "num_encoder_blocks", c.num_encoder_blocks);
  c.num_decoder_blocks = json_get(j, "num_decoder_blocks", c.num_decoder_blocks);
  c.latent_channels = json_get<int64_t>(j, "latent_channels", c.latent_channels);
  c.upsampling_scaling_factor = json_get<int64_t>(j, "upsampling_scaling_factor", c.upsampling_scaling_factor);
  c.scaling_factor = json_get<double>(j, "scaling_factor", c.scaling_factor);
  c.shift_factor = json_get<double>(j, "shift_factor", c.shift_factor);
  c.latent_magnitude = json_get<double>(j, "latent_magnitude", c.latent_magnitude);
  c.latent_shift = json_get<double>(j, "latent_shift", c.latent_shift);
  const std::string act = json_get<std::string>(j, "act_fn", "relu");
  if (act != "relu") throw Error("AutoencoderTiny config: act_fn \"" + act + "\" is not supported (supported: relu)");
  const std::string upsample = json_get<std::string>(j, "upsample_fn", "nearest");
  if (upsample != "nearest")
    throw Error("AutoencoderTiny config: upsample_fn \"" + upsample + "\" is not supported (supported: nearest)");
  c.validate();
  return c;
}

namespace taesd {

BlockImpl::BlockImpl(int64_t in_channels, int64_t out_channels) {
  // nn.Sequential(conv, ReLU, conv, ReLU, conv): tensors under conv.0, conv.2, conv.4.
  auto seq = register_module("conv", std::make_shared<torch::nn::Module>());
  conv0 = seq->register_module("0", conv3x3(in_channels, out_channels));
  conv2 = seq->register_module("2", conv3x3(out_channels, out_channels));
  conv4 = seq->register_module("4", conv3x3(out_channels, out_channels));
  if (in_channels != out_channels) skip = register_module("skip", nn::Conv2d(in_channels, out_channels, 1, 1, 0, false));
}

at::Tensor BlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = at::relu(conv0->forward(x));
  h = at::relu(conv2->forward(h));
  h = conv4->forward(h);
  return at::relu(h + (skip ? skip->forward(x) : x));
}

void LayersImpl::add_conv(nn::Conv2d conv) {
  register_module(std::to_string(layers_.size()), conv);
  layers_.push_back({Layer::Kind::kConv, conv, nullptr, 1});
}

void LayersImpl::add_relu() { layers_.push_back({Layer::Kind::kRelu, nullptr, nullptr, 1}); }

void LayersImpl::add_block(Block block) {
  register_module(std::to_string(layers_.size()), block);
  layers_.push_back({Layer::Kind::kBlock, nullptr, block, 1});
}

void LayersImpl::add_upsample(int64_t factor) { layers_.push_back({Layer::Kind::kUpsample, nullptr, nullptr, factor}); }

at::Tensor LayersImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (auto& layer : layers_) {
    switch (layer.kind) {
      case Layer::Kind::kConv: h = layer.conv->forward(h); break;
      case Layer::Kind::kRelu: h = at::relu(h); break;
      case Layer::Kind::kBlock: h = layer.block->forward(h); break;
      case Layer::Kind::kUpsample: {
        const double f = static_cast<double>(layer.factor);  // nn.Upsample(scale_factor=f), mode nearest
        h = at::upsample_nearest2d(h, {h.size(2) * layer.factor, h.size(3) * layer.factor}, f, f);
        break;
      }
    }
  }
  return h;
}

EncoderImpl::EncoderImpl(const AutoencoderTinyConfig& c) {
  layers = register_module("layers", Layers());
  const auto& channels = c.encoder_block_out_channels;
  for (size_t i = 0; i < channels.size(); ++i) {
    // The first group starts with a conv from the image; each later one with a stride-2 conv (no bias).
    layers->add_conv(i == 0 ? conv3x3(c.in_channels, channels[i]) : conv3x3(channels[i], channels[i], 2, false));
    for (int64_t b = 0; b < c.num_encoder_blocks[i]; ++b) layers->add_block(Block(channels[i], channels[i]));
  }
  layers->add_conv(conv3x3(channels.back(), c.latent_channels));
}

at::Tensor EncoderImpl::forward(const at::Tensor& x) {
  return layers->forward(x.add(1).div(2));  // TAESD works on [0, 1] images
}

DecoderImpl::DecoderImpl(const AutoencoderTinyConfig& c) {
  layers = register_module("layers", Layers());
  const auto& channels = c.decoder_block_out_channels;
  layers->add_conv(conv3x3(c.latent_channels, channels[0]));
  layers->add_relu();
  for (size_t i = 0; i < channels.size(); ++i) {
    const bool last = i + 1 == channels.size();
    for (int64_t b = 0; b < c.num_decoder_blocks[i]; ++b) layers->add_block(Block(channels[i], channels[i]));
    if (!last) layers->add_upsample(c.upsampling_scaling_factor);
    layers->add_conv(conv3x3(channels[i], last ? c.out_channels : channels[i], 1, /*bias=*/last));
  }
}

at::Tensor DecoderImpl::forward(const at::Tensor& z) {
  const at::Tensor clamped = at::tanh(z / 3) * 3;  // soft clamp of the latents to (-3, 3)
  return layers->forward(clamped).mul(2).sub(1);   // [0, 1] -> [-1, 1]
}

}  // namespace taesd

AutoencoderTinyImpl::AutoencoderTinyImpl(const AutoencoderTinyConfig& config) : config_(config) {
  config_.validate();
  encoder = register_module("encoder", taesd::Encoder(config_));
  decoder = register_module("decoder", taesd::Decoder(config_));
}

at::Tensor AutoencoderTinyImpl::encode(const at::Tensor& x) {
  const int64_t f = config_.scale_factor();
  if (!x.defined() || x.dim() != 4 || x.size(1) != config_.in_channels || x.size(2) % f != 0 || x.size(3) % f != 0)
    throw Error("AutoencoderTiny: encode needs images [B, " + std::to_string(config_.in_channels) +
                ", H, W] with H and W multiples of " + std::to_string(f) + ", got " +
                (x.defined() ? shape_string(x.sizes()) : std::string("nothing")));
  const at::ScalarType dtype = encoder->layers->parameters().front().scalar_type();
  return encoder->forward(x.to(dtype)).to(x.scalar_type()).contiguous();  // [B, latent, H/f, W/f]
}

at::Tensor AutoencoderTinyImpl::decode(const at::Tensor& z) {
  if (!z.defined() || z.dim() != 4 || z.size(1) != config_.latent_channels)
    throw Error("AutoencoderTiny: decode needs latents [B, " + std::to_string(config_.latent_channels) +
                ", h, w], got " + (z.defined() ? shape_string(z.sizes()) : std::string("nothing")));
  const at::ScalarType dtype = decoder->layers->parameters().front().scalar_type();
  return decoder->forward(z.to(dtype)).to(z.scalar_type()).contiguous();  // [B, 3, h·f, w·f]
}

AutoencoderTiny load_autoencoder_tiny(const std::filesystem::path& folder, const std::string& variant) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(folder)) throw Error("TAESD folder " + folder.string() + " does not exist");
  if (fs::exists(folder / "model_index.json"))
    throw Error(folder.string() + " is a whole pipeline, not a tiny autoencoder; give a diffusers AutoencoderTiny "
                "folder (config.json + diffusion_pytorch_model.safetensors), e.g. madebyollin/taesd");
  const fs::path config_path = folder / "config.json";
  if (!fs::exists(config_path))
    throw Error(folder.string() + " is not a diffusers AutoencoderTiny folder (no config.json)");
  const auto json = io::read_json(config_path);
  const std::string cls = io::json_get<std::string>(json, "_class_name", "");
  if (cls != "AutoencoderTiny")
    throw Error(config_path.string() + ": _class_name is '" + cls +
                "', not AutoencoderTiny; --taesd takes a tiny autoencoder (TAESD) folder");
  AutoencoderTiny model(AutoencoderTinyConfig::from_json(json));
  io::load_module_weights(*model, io::WeightSource::from_component_dir(folder, variant), "taesd");
  model->eval();
  nn::store_conv_weights_for_current_layout(*model);
  return model;
}

}  // namespace tide::models
