#include "tide/nn/resnet.h"

#include "tide/nn/in_place.h"

namespace tide::nn {

namespace {
GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return GroupNorm(groups, channels, eps);
}
Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return Conv2d(in, out, kernel, 1, kernel / 2);
}
}  // namespace

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetOptions& o) : output_scale_factor_(o.output_scale_factor) {
  norm1 = register_module("norm1", group_norm(o.groups, o.in_channels, o.eps));
  conv1 = register_module("conv1", conv(o.in_channels, o.out_channels, 3));
  if (o.temb_channels > 0)
    time_emb_proj = register_module("time_emb_proj", Linear(o.temb_channels, o.out_channels));
  norm2 = register_module("norm2", group_norm(o.groups, o.out_channels, o.eps));
  conv2 = register_module("conv2", conv(o.out_channels, o.out_channels, 3));
  if (o.in_channels != o.out_channels)
    conv_shortcut = register_module("conv_shortcut", conv(o.in_channels, o.out_channels, 1));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = conv1->forward(norm1->forward_silu(x));  // [B, Cout, H, W]
  if (time_emb_proj && temb.defined()) {
    const at::Tensor t = time_emb_proj->forward(at::silu(temb));  // [B, Cout] (temb is shared by all blocks)
    h = add_to_temporary(h, t.unsqueeze(-1).unsqueeze(-1));
  }
  h = conv2->forward(norm2->forward_silu(h));
  const at::Tensor shortcut = conv_shortcut ? conv_shortcut->forward(x) : x;
  at::Tensor out = add_to_temporary(h, shortcut);
  if (output_scale_factor_ != 1.0) out = can_overwrite(out) ? out.div_(output_scale_factor_) : out / output_scale_factor_;
  return out;
}

}  // namespace tide::nn
