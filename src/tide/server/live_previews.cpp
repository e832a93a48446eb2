#include "tide/server/live_previews.h"

#include <c10/core/InferenceMode.h>

#include "tide/io/image.h"
#include "tide/server/latent_preview.h"

namespace tide::server {

LivePreviews::LivePreviews(const std::filesystem::path& sd_decoder, const std::filesystem::path& xl_decoder) {
  if (!sd_decoder.empty()) sd_ = models::load_autoencoder_tiny(sd_decoder);
  if (!xl_decoder.empty()) xl_ = models::load_autoencoder_tiny(xl_decoder);
}

std::string LivePreviews::png(const ProgressSnapshot& p) {
  if (!p.active || !p.latents.defined() || p.latents.dim() != 4) return "";
  c10::InferenceMode inference;
  models::AutoencoderTiny& decoder = p.xl ? xl_ : sd_;
  // A decoder for other latents (channels) falls back to the linear picture rather than failing the poll.
  if (!decoder || decoder->config().latent_channels != p.latents.size(1))
    return io::encode_png(latent_preview(p.latents, p.xl));
  const std::string key = p.job_id + "/" + std::to_string(p.image_index) + "/" + std::to_string(p.step);
  std::lock_guard<std::mutex> lock(mutex_);
  if (key != key_) {
    // Early or diverging latents can be far from the usual range; keep the decoder's input finite.
    const at::Tensor first = at::nan_to_num(p.latents.narrow(0, 0, 1).to(at::kFloat), 0.0, 1e4, -1e4);
    png_ = io::encode_png(io::to_rgb8(decoder->decode(first / decoder->config().scaling_factor))[0]);  // [H, W, 3]
    key_ = key;
  }
  return png_;
}

}  // namespace tide::server
