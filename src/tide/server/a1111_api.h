// AUTOMATIC1111's web API (/sdapi/v1/*), as its clients use it: request fields, defaults and response shapes of
// modules/api/models.py and api.py. Unknown fields are ignored, as A1111 does; fields tide accepts but does not
// implement (hires fix, face restoration, subseeds, styles, scripts, ...) are named in info's "warnings" when set
// to anything but their defaults, never silently changing the picture. Bad values: HTTP 422 {"detail": ...}.
#pragma once
#include <string>

#include "tide/server/api_context.h"

namespace tide::server::a1111 {

// tide's extension of txt2img and img2img: DeepCache's interval N (the whole UNet every N-th step; 1, the
// default, = off), as tide generate --cache-interval. Recorded in the infotexts as "DeepCache interval: N".
inline constexpr const char kCacheIntervalField[] = "tide_cache_interval";

HttpReply txt2img(ApiContext& ctx, const std::string& body);
// /sdapi/v1/img2img: init_images, denoising_strength, mask, mask_blur, inpainting_mask_invert (PNG or JPEG).
// In both, <lora:NAME:WEIGHT> prompt tags apply LoRAs of the --lora-dir folders to that job only.
HttpReply img2img(ApiContext& ctx, const std::string& body);
// Both: text-to-image, or with image_to_image the init image (and mask) of the request.
HttpReply generate(ApiContext& ctx, const std::string& body, bool image_to_image);
// task_id: a job's id (force_task_id) to report its place in the queue, as tide's extension "queue_position".
HttpReply progress(ApiContext& ctx, bool skip_current_image, const std::string& task_id);
// body: empty, or {"id_task": ...} to cancel that job (running or waiting).
HttpReply interrupt(ApiContext& ctx, const std::string& body);
HttpReply skip(ApiContext& ctx);
HttpReply sd_models(ApiContext& ctx);
HttpReply refresh_checkpoints(ApiContext& ctx);
HttpReply samplers();
HttpReply schedulers();
HttpReply embeddings(ApiContext& ctx);
// The LoRA files prompt tags can name: [{name, alias, path, metadata}].
HttpReply loras(ApiContext& ctx);
HttpReply get_options(ApiContext& ctx);
HttpReply set_options(ApiContext& ctx, const std::string& body);
HttpReply cmd_flags(ApiContext& ctx);
HttpReply png_info(const std::string& body);
HttpReply memory();
// The lists clients probe that tide has nothing in (sd-vae, upscalers, ...): "[]" or "{}".
HttpReply empty_list();

}  // namespace tide::server::a1111
