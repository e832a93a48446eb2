#include "tide/server/latent_preview.h"

#include "tide/pipeline/latent_preview.h"

namespace tide::server {

at::Tensor latent_preview(const at::Tensor& latents, bool xl, int upscale) {
  at::NoGradGuard no_grad;
  const at::Tensor x = latents.detach().select(0, 0).to(at::kFloat);  // [C, h, w]
  at::Tensor rgb;
  if (x.size(0) == 4) {
    rgb = pipeline::latent_preview_rgb8(x, xl);  // the per-family linear map tide generate --preview uses
  } else {
    rgb = ((x.mean(0).unsqueeze(-1).expand({x.size(1), x.size(2), 3}) + 1) / 2).clamp(0, 1).mul(255).round().to(at::kByte);
  }
  if (upscale > 1) rgb = rgb.repeat_interleave(upscale, 0).repeat_interleave(upscale, 1);
  return rgb.contiguous();
}

}  // namespace tide::server
