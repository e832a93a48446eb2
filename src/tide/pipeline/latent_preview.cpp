#include "tide/pipeline/latent_preview.h"

#include "tide/io/image.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {

at::Tensor latent_preview_rgb8(const at::Tensor& latents, bool xl) {
  if (latents.dim() != 3 || latents.size(0) != 4)
    throw Error("latent preview: expected latents [4, h, w], got " + std::to_string(latents.dim()) + " dimensions");
  // [4, 3]: latent channel -> R, G, B
  static const float sd[4][3] = {{0.3512f, 0.2297f, 0.3227f}, {0.3250f, 0.4974f, 0.2350f},
                                 {-0.2829f, 0.1762f, 0.2721f}, {-0.2120f, -0.2616f, -0.7177f}};
  static const float sdxl[4][3] = {{0.3651f, 0.4232f, 0.4341f}, {-0.2533f, -0.0042f, 0.1068f},
                                   {0.1076f, 0.1111f, -0.0362f}, {-0.3165f, -0.2492f, -0.2188f}};
  static const float sdxl_bias[3] = {0.1084f, -0.0175f, -0.0011f};
  const at::Tensor factors = at::from_blob(const_cast<float*>(&(xl ? sdxl : sd)[0][0]), {4, 3}, at::kFloat);
  at::Tensor rgb = at::matmul(latents.detach().to(at::kFloat).permute({1, 2, 0}), factors);  // [h, w, 3]
  if (xl) rgb = rgb + at::from_blob(const_cast<float*>(sdxl_bias), {3}, at::kFloat);
  return ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(at::kByte).contiguous();  // [-1, 1] -> [0, 255]
}

at::Tensor step_preview_rgb8(StableDiffusionPipeline& pipe, const at::Tensor& latents) {
  if (latents.dim() != 4 || latents.size(0) < 1)
    throw Error("step preview: expected latents [N, C, h, w], got " + std::to_string(latents.dim()) + " dimensions");
  if (!pipe.has_tiny_autoencoder()) return latent_preview_rgb8(latents[0], pipe.is_xl());
  // Random or early latents can be far from the usual range; keep the decoder's input finite.
  const at::Tensor first = at::nan_to_num(latents.narrow(0, 0, 1), 0.0, 1e4, -1e4);
  return io::to_rgb8(pipe.decode(first))[0];  // [H, W, 3]
}

}  // namespace tide::pipeline
