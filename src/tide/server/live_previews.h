// The progress preview /sdapi/v1/progress shows (and the web page with it): the running picture's latest
// latents decoded at full size by a tiny autoencoder, as A1111's "TAESD" live-preview mode does (TAESD for
// SD 1.x/2.x, TAESDXL for SDXL: `tide serve --preview-decoder DIR --preview-decoder-xl DIR`), or, for a family
// without one, the linear latent-to-RGB picture at the latent's size. Each step is decoded once, however
// many clients poll for it.
#pragma once
#include <filesystem>
#include <mutex>
#include <string>

#include "tide/models/autoencoder_tiny.h"
#include "tide/server/job_queue.h"

namespace tide::server {

class LivePreviews {
 public:
  LivePreviews() = default;
  // Diffusers AutoencoderTiny folders; an empty path leaves that family with the linear preview. A folder that
  // is missing or not an AutoencoderTiny is a tide::Error.
  LivePreviews(const std::filesystem::path& sd_decoder, const std::filesystem::path& xl_decoder);

  // PNG bytes of the first image of `p.latents` ("" when no job is running or no step is done yet).
  std::string png(const ProgressSnapshot& p);

  bool decodes(bool xl) const { return static_cast<bool>(xl ? xl_ : sd_); }

 private:
  models::AutoencoderTiny sd_{nullptr}, xl_{nullptr};
  std::mutex mutex_;   // one decode at a time; the others wait for its picture
  std::string key_;    // job, picture and step of `png_`
  std::string png_;
};

}  // namespace tide::server
