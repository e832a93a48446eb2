#include "tide/server/latent_preview.h"

namespace tide::server {

at::Tensor latent_preview(const at::Tensor& latents, bool xl, int upscale) {
  at::NoGradGuard no_grad;
  at::Tensor x = latents.detach().select(0, 0).to(at::kFloat);  // [C, h, w]
  at::Tensor rgb;
  if (x.size(0) == 4) {
    // Least-squares fits of decoded RGB on latent channels (the factors A1111 and ComfyUI ship).
    static const float kSd[4][3] = {
        {0.3512f, 0.2297f, 0.3227f}, {0.3250f, 0.4974f, 0.2350f}, {-0.2829f, 0.1762f, 0.2721f}, {-0.2120f, -0.2616f, -0.7177f}};
    static const float kXl[4][3] = {
        {0.3651f, 0.4232f, 0.4341f}, {-0.2533f, -0.0042f, 0.1068f}, {0.1076f, 0.1111f, -0.0362f}, {-0.3165f, -0.2492f, -0.2188f}};
    at::Tensor factors = at::from_blob(const_cast<float*>(&(xl ? kXl : kSd)[0][0]), {4, 3}, at::kFloat).clone();
    rgb = at::matmul(x.permute({1, 2, 0}), factors);  // [h, w, 3], about [-1, 1]
    if (xl) rgb = rgb + at::tensor({0.1084f, -0.0175f, -0.0011f});
  } else {
    rgb = x.mean(0).unsqueeze(-1).expand({x.size(1), x.size(2), 3});  // [h, w, 3]
  }
  rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(at::kByte);
  if (upscale > 1) rgb = rgb.repeat_interleave(upscale, 0).repeat_interleave(upscale, 1);
  return rgb.contiguous();
}

}  // namespace tide::server
