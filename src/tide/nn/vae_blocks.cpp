#include "tide/nn/vae_blocks.h"

namespace tide::nn {

namespace {
ResnetBlock2D make_resnet(int64_t in, int64_t out, int64_t groups, double eps) {
  ResnetOptions r;
  r.in_channels = in;
  r.out_channels = out;
  r.groups = groups;
  r.eps = eps;
  return ResnetBlock2D(r);
}
}  // namespace

DownEncoderBlock2DImpl::DownEncoderBlock2DImpl(const VaeBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    resnets_.push_back(make_resnet(i == 0 ? o.in_channels : o.out_channels, o.out_channels, o.groups, o.eps));
    resnets->push_back(resnets_.back());
  }
  if (o.add_sample) {
    downsampler_ = Downsample2D(o.out_channels, /*padding=*/0);
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(downsampler_));
  }
}

at::Tensor DownEncoderBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (auto& resnet : resnets_) h = resnet->forward(h);  // [B, Cout, H, W]
  if (downsampler_) h = downsampler_->forward(h);        // [B, Cout, H/2, W/2]
  return h;
}

UpDecoderBlock2DImpl::UpDecoderBlock2DImpl(const VaeBlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    resnets_.push_back(make_resnet(i == 0 ? o.in_channels : o.out_channels, o.out_channels, o.groups, o.eps));
    resnets->push_back(resnets_.back());
  }
  if (o.add_sample) {
    upsampler_ = Upsample2D(o.out_channels);
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(upsampler_));
  }
}

at::Tensor UpDecoderBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (auto& resnet : resnets_) h = resnet->forward(h);  // [B, Cout, H, W]
  if (upsampler_) h = upsampler_->forward(h);            // [B, Cout, 2H, 2W]
  return h;
}

UNetMidBlock2DImpl::UNetMidBlock2DImpl(int64_t channels, int64_t groups, bool add_attention) {
  const double eps = 1e-6;
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets_.push_back(make_resnet(channels, channels, groups, eps));
  resnets->push_back(resnets_.back());
  if (add_attention) {
    AttentionOptions a;
    a.query_dim = channels;
    a.heads = 1;  // diffusers: heads = channels / attention_head_dim with attention_head_dim = channels
    a.dim_head = channels;
    a.bias = true;
    a.upcast = true;  // upcast_softmax
    a.norm_num_groups = groups;
    a.norm_eps = eps;
    a.residual_connection = true;
    attention_ = Attention(a);
    attentions = register_module("attentions", torch::nn::ModuleList(attention_));
  }
  resnets_.push_back(make_resnet(channels, channels, groups, eps));
  resnets->push_back(resnets_.back());
}

at::Tensor UNetMidBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets_[0]->forward(x);
  if (attention_) h = attention_->forward(h);  // [B, C, H, W] (H·W tokens)
  return resnets_[1]->forward(h);
}

}  // namespace tide::nn
