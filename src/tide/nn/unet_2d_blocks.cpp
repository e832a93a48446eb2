#include "tide/nn/unet_2d_blocks.h"

#include "tide/nn/checkpoint.h"

namespace tide::nn {

namespace {

// With gradient checkpointing each resnet and each transformer is a segment of its own, as diffusers
// checkpoints them: the backward then recomputes one layer's activations at a time, not a block's (SD 1.5
// at 512 px: the last up block's three resnets and transformers held ~0.5 GiB at once).
at::Tensor run_resnet(ResnetBlock2D& resnet, const at::Tensor& x, const at::Tensor& skip, const at::Tensor& temb,
                      bool checkpointed) {
  if (!checkpointed) return resnet->forward(skip.defined() ? at::cat({x, skip}, 1) : x, temb);  // [B, Cout, H, W]
  // The skip is concatenated inside the segment, so that the concatenation is not kept as well.
  std::vector<at::Tensor> inputs{x, temb};
  if (skip.defined()) inputs.push_back(skip);
  return checkpoint([r = resnet.ptr()](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{r->forward(in.size() == 3 ? at::cat({in[0], in[2]}, 1) : in[0], in[1])};
  }, inputs)[0];
}

at::Tensor run_transformer(Transformer2DModel& transformer, const at::Tensor& x, const at::Tensor& context,
                           bool checkpointed) {
  if (!checkpointed) return transformer->forward(x, context);
  return checkpoint([t = transformer.ptr()](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{t->forward(in[0], in[1])};
  }, {x, context})[0];  // [B, C, H, W]
}

ResnetBlock2D make_resnet(const UNetBlockOptions& o, int64_t in, int64_t out) {
  ResnetOptions r;
  r.in_channels = in;
  r.out_channels = out;
  r.temb_channels = o.temb_channels;
  r.groups = o.groups;
  r.eps = o.eps;
  r.output_scale_factor = o.output_scale_factor;
  return ResnetBlock2D(r);
}

Transformer2DModel make_transformer(const UNetBlockOptions& o, int64_t channels, int64_t layers) {
  Transformer2DOptions t;
  t.channels = channels;
  t.heads = o.heads;
  t.num_layers = layers;
  t.cross_attention_dim = o.cross_attention_dim;
  t.norm_num_groups = o.groups;
  t.use_linear_projection = o.use_linear_projection;
  t.upcast_attention = o.upcast_attention;
  return Transformer2DModel(t);
}

}  // namespace

UNetDownBlockImpl::UNetDownBlockImpl(const UNetBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    resnets_.push_back(make_resnet(o, i == 0 ? o.in_channels : o.out_channels, o.out_channels));
    resnets->push_back(resnets_.back());
    if (o.cross_attention) {
      attentions_.push_back(make_transformer(o, o.out_channels, o.transformer_layers.at(i)));
      attentions->push_back(attentions_.back());
    }
  }
  if (o.add_sample) {
    downsampler_ = Downsample2D(o.out_channels, o.downsample_padding);
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(downsampler_));
  }
}

at::Tensor UNetDownBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                                      std::vector<at::Tensor>& skips, bool checkpointed) {
  at::Tensor h = x;
  for (size_t i = 0; i < resnets_.size(); ++i) {
    h = run_resnet(resnets_[i], h, {}, temb, checkpointed);  // [B, Cout, H, W]
    if (!attentions_.empty()) h = run_transformer(attentions_[i], h, context, checkpointed);
    skips.push_back(h);
  }
  if (downsampler_) {
    h = downsampler_->forward(h);  // [B, Cout, H/2, W/2]
    skips.push_back(h);
  }
  return h;
}

UNetMidBlockCrossAttnImpl::UNetMidBlockCrossAttnImpl(const UNetBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets_.push_back(make_resnet(o, o.in_channels, o.in_channels));
  resnets->push_back(resnets_.back());
  for (int64_t layers : o.transformer_layers) {
    attentions_.push_back(make_transformer(o, o.in_channels, layers));
    attentions->push_back(attentions_.back());
    resnets_.push_back(make_resnet(o, o.in_channels, o.in_channels));
    resnets->push_back(resnets_.back());
  }
}

at::Tensor UNetMidBlockCrossAttnImpl::forward(const at::Tensor& x, const at::Tensor& temb,
                                              const at::Tensor& context, bool checkpointed) {
  at::Tensor h = run_resnet(resnets_[0], x, {}, temb, checkpointed);
  for (size_t i = 0; i < attentions_.size(); ++i) {
    h = run_transformer(attentions_[i], h, context, checkpointed);
    h = run_resnet(resnets_[i + 1], h, {}, temb, checkpointed);
  }
  return h;  // [B, C, H, W]
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    // The last resnet takes the skip from the block's input level, the others from its own level.
    const int64_t skip_channels = i == o.num_layers - 1 ? o.in_channels : o.out_channels;
    const int64_t resnet_in = i == 0 ? o.prev_output_channels : o.out_channels;
    resnets_.push_back(make_resnet(o, resnet_in + skip_channels, o.out_channels));
    resnets->push_back(resnets_.back());
    if (o.cross_attention) {
      attentions_.push_back(make_transformer(o, o.out_channels, o.transformer_layers.at(i)));
      attentions->push_back(attentions_.back());
    }
  }
  if (o.add_sample) {
    upsampler_ = Upsample2D(o.out_channels);
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(upsampler_));
  }
}

at::Tensor UNetUpBlockImpl::forward(const at::Tensor& x, std::vector<at::Tensor>& skips, const at::Tensor& temb,
                                    const at::Tensor& context, const std::vector<int64_t>& upsample_size,
                                    at::Tensor* last_layer_input, bool checkpointed) {
  at::Tensor h = x;
  for (size_t i = 0; i < resnets_.size(); ++i) {
    const at::Tensor skip = skips.back();  // [B, Cskip, H, W]
    skips.pop_back();
    if (last_layer_input && i + 1 == resnets_.size()) *last_layer_input = h;
    h = run_resnet(resnets_[i], h, skip, temb, checkpointed);  // [B, Cout, H, W]
    if (!attentions_.empty()) h = run_transformer(attentions_[i], h, context, checkpointed);
  }
  if (upsampler_) h = upsampler_->forward(h, upsample_size);  // [B, Cout, 2H, 2W]
  return h;
}

at::Tensor UNetUpBlockImpl::forward_last_layer(const at::Tensor& last_layer_input, const at::Tensor& skip,
                                               const at::Tensor& temb, const at::Tensor& context,
                                               const std::vector<int64_t>& upsample_size) {
  const size_t i = resnets_.size() - 1;
  at::Tensor h = resnets_[i]->forward(at::cat({last_layer_input, skip}, 1), temb);  // [B, Cout, H, W]
  if (!attentions_.empty()) h = attentions_[i]->forward(h, context);
  if (upsampler_) h = upsampler_->forward(h, upsample_size);
  return h;
}

}  // namespace tide::nn
