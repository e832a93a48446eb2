#include "tide/pipeline/image_conditioning.h"

#include <algorithm>
#include <string>
#include <vector>

#include "tide/io/pil_blur.h"
#include "tide/io/pil_resize.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {
namespace {

std::string size_text(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

void check_uint8_image(const at::Tensor& t, const char* what, bool grey_allowed) {
  const bool shape_ok = (t.dim() == 3 && (t.size(2) == 3 || (grey_allowed && t.size(2) == 1))) ||
                        (grey_allowed && t.dim() == 2);
  if (t.scalar_type() != at::kByte || !shape_ok || t.numel() == 0)
    throw Error(std::string(what) + " must be a uint8 [H, W, 3]" + (grey_allowed ? " or [H, W]" : "") + " image");
}

// Pillow's RGB -> "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
at::Tensor to_grey(const at::Tensor& hwc) {
  if (hwc.size(2) == 1) return hwc.select(2, 0);
  const at::Tensor c = hwc.to(at::kInt);
  const at::Tensor sum = c.select(2, 0) * 19595 + c.select(2, 1) * 38470 + c.select(2, 2) * 7471 + 0x8000;
  return at::div(sum, 65536, "floor").to(at::kByte);  // >> 16
}

// VAE posterior sample with eps drawn from the generator, times the scaling factor: [1, 4, h, w].
at::Tensor encode_sample(models::AutoencoderKL& vae, const at::Tensor& image, at::Generator& generator) {
  const auto moments = vae->encode(image);
  const at::Tensor eps = at::randn(moments.mean.sizes(), generator, at::kFloat);
  return vae->config().scaling_factor * moments.sample(eps);
}

}  // namespace

double default_strength(bool xl, bool inpaint) {
  if (!xl) return 0.8;
  return inpaint ? 0.9999 : 0.3;
}

at::Tensor preprocess_image(const at::Tensor& rgb8, int width, int height) {
  check_uint8_image(rgb8, "the init image", false);
  at::Tensor img = rgb8;
  if (img.size(0) != height || img.size(1) != width) img = io::pil_resize_lanczos(img, width, height);
  // float32 like numpy: x / 255, then 2x - 1
  const at::Tensor unit = img.to(at::kFloat) / 255.0f;
  return (2.0f * unit - 1.0f).permute({2, 0, 1}).unsqueeze(0).contiguous();  // [1, 3, H, W]
}

at::Tensor preprocess_mask(const at::Tensor& mask8, int width, int height, double blur_radius) {
  check_uint8_image(mask8, "the mask", true);
  at::Tensor m = mask8.dim() == 2 ? mask8.unsqueeze(2) : mask8;
  if (m.size(0) != height || m.size(1) != width) m = io::pil_resize_lanczos(m, width, height);
  at::Tensor grey = to_grey(m.contiguous());  // [H, W] uint8
  if (blur_radius > 0) grey = io::pil_gaussian_blur(grey, blur_radius);
  const at::Tensor unit = grey.to(at::kFloat) / 255.0f;
  return (unit >= 0.5f).to(at::kFloat).unsqueeze(0).unsqueeze(0);  // [1, 1, H, W]
}

void resolve_image_inputs(GenerationRequest& r, int f, bool xl, int64_t unet_in_channels) {
  const bool inpainting_unet = unet_in_channels == 9;
  if (!r.init_image.defined()) {
    if (r.mask.defined()) throw Error("a mask needs an init image to inpaint");
    if (r.strength) throw Error("strength applies only with an init image");
    if (inpainting_unet)
      throw Error("this is an inpainting model (9-channel UNet): give it an init image and a mask");
    return;
  }
  check_uint8_image(r.init_image, "the init image", false);
  if (unet_in_channels != 4 && unet_in_channels != 9)
    throw Error("image-to-image needs a UNet with 4 (or 9 for inpainting) input channels, this one has " +
                std::to_string(unet_in_channels));
  if (inpainting_unet && !r.mask.defined())
    throw Error("this is an inpainting model (9-channel UNet): give it a mask as well as the init image");
  const int64_t h = r.init_image.size(0), w = r.init_image.size(1);
  if (r.mask.defined()) {
    check_uint8_image(r.mask, "the mask", true);
    if (r.mask.size(0) != h || r.mask.size(1) != w)
      throw Error("the mask is " + size_text(r.mask.size(1), r.mask.size(0)) + " but the init image is " +
                  size_text(w, h) + "; they must be the same size");
  } else if (r.width == 0 && r.height == 0) {
    // img2img: the init image's size rounded down to a multiple of the VAE factor
    r.width = static_cast<int>(w - w % f);
    r.height = static_cast<int>(h - h % f);
    if (r.width == 0 || r.height == 0)
      throw Error("the init image is " + size_text(w, h) + ", smaller than the VAE factor " + std::to_string(f));
  }
  if (!r.strength) r.strength = default_strength(xl, r.mask.defined());
  if (!(*r.strength > 0 && *r.strength <= 1))
    throw Error("strength must be in (0, 1], got " + std::to_string(*r.strength));
  if (!(r.mask_blur >= 0)) throw Error("the mask blur must be a non-negative radius");
  if (r.mask_blur > 0 && !r.mask.defined()) throw Error("mask blur needs a mask");
  if (r.steps >= 1 && first_timestep_index(r.steps, *r.strength, 1) >= static_cast<size_t>(r.steps))
    throw Error("strength " + std::to_string(*r.strength) + " with " + std::to_string(r.steps) +
                " steps runs no denoising step (int(steps * strength) is 0); raise the strength or the steps");
}

size_t first_timestep_index(int steps, double strength, int scheduler_order) {
  const int init_timestep = std::min(static_cast<int>(steps * strength), steps);  // float product, truncated
  const int t_start = std::max(steps - init_timestep, 0);
  return static_cast<size_t>(t_start) * scheduler_order;
}

DenoiseStart prepare_image_start(const GenerationRequest& r, schedulers::Scheduler& scheduler,
                                 models::AutoencoderKL& vae, int64_t unet_in_channels, at::Generator& generator) {
  if (!r.init_image.defined() || !r.strength) throw Error("prepare_image_start: the request has no init image");
  DenoiseStart s;
  const auto& timesteps = scheduler.timesteps();
  s.first = first_timestep_index(r.steps, *r.strength, scheduler.order());
  if (s.first >= timesteps.size()) throw Error("strength " + std::to_string(*r.strength) + " runs no step");
  scheduler.set_begin_index(static_cast<int>(s.first));
  const double t0 = timesteps[s.first];

  const int f = static_cast<int>(vae->config().scale_factor());
  const int64_t n = r.num_images;
  const std::vector<int64_t> latent_shape = {n, vae->config().latent_channels, r.height / f, r.width / f};
  s.init_image = preprocess_image(r.init_image, r.width, r.height);  // [1, 3, H, W]
  const bool inpaint = r.mask.defined();
  const bool strength_max = *r.strength == 1.0;

  // Draw 1: the init image's posterior (not for a 9-channel UNet at full strength: pure noise then).
  if (!inpaint || unet_in_channels == 4 || !strength_max)
    s.image_latents = encode_sample(vae, s.init_image, generator).repeat({n, 1, 1, 1});  // [N, 4, h, w]
  // Draw 2: the noise.
  s.noise = at::randn(latent_shape, generator, at::kFloat);
  s.latents = inpaint && strength_max ? s.noise * scheduler.init_noise_sigma()
                                      : scheduler.add_noise(s.image_latents, s.noise, t0);
  if (!inpaint) return s;

  // Draw 3: the masked image's posterior, drawn even for a 4-channel UNet that never uses it.
  s.mask_condition = preprocess_mask(r.mask, r.width, r.height, r.mask_blur);  // [1, 1, H, W]
  s.masked_image = s.init_image * (s.mask_condition < 0.5f);
  s.masked_image_latents = encode_sample(vae, s.masked_image, generator).repeat({n, 1, 1, 1});
  // F.interpolate(mask, size=(h, w)), mode "nearest": [1, 1, h, w]
  const std::vector<int64_t> latent_size = {r.height / f, r.width / f};
  s.mask_latents = at::upsample_nearest2d(s.mask_condition, latent_size, c10::nullopt, c10::nullopt).repeat({n, 1, 1, 1});
  s.concat_mask = unet_in_channels == 9;
  s.blend_mask = unet_in_channels == 4;
  return s;
}

at::Tensor DenoiseStart::unet_input(const at::Tensor& scaled_latents, bool guided) const {
  if (!concat_mask) return scaled_latents;
  const at::Tensor mask = guided ? at::cat({mask_latents, mask_latents}) : mask_latents;
  const at::Tensor masked = guided ? at::cat({masked_image_latents, masked_image_latents}) : masked_image_latents;
  return at::cat({scaled_latents, mask.to(scaled_latents.scalar_type()), masked.to(scaled_latents.scalar_type())},
                 1);  // [B, 9, h, w]
}

at::Tensor DenoiseStart::after_step(const schedulers::Scheduler& scheduler, const at::Tensor& latents,
                                    size_t i) const {
  if (!blend_mask) return latents;
  const auto& timesteps = scheduler.timesteps();
  const at::Tensor init_proper =
      i + 1 < timesteps.size() ? scheduler.add_noise(image_latents, noise, timesteps[i + 1]) : image_latents;
  return (1 - mask_latents) * init_proper + mask_latents * latents;
}

}  // namespace tide::pipeline
