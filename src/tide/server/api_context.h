// What the API handlers share: the models, the job queue, the limits and the server's settings.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tide/server/http_reply.h"
#include "tide/server/image_store.h"
#include "tide/server/job_queue.h"
#include "tide/server/live_previews.h"
#include "tide/server/lora_library.h"
#include "tide/server/model_registry.h"

namespace tide::server {

struct ApiContext {
  ModelRegistry& registry;
  JobQueue& queue;
  RequestLimits limits;
  std::filesystem::path output_dir;  // where save_images writes ("" = nowhere)
  nlohmann::json command_line;       // for /sdapi/v1/cmd-flags
  LivePreviews& previews;            // /progress's current_image
  ImageStore* images = nullptr;      // OpenAI's response_format "url" keeps its PNGs here (null: refused)
  LoraLibrary* loras = nullptr;      // what <lora:NAME:WEIGHT> prompt tags name (null: tags are refused)
};

}  // namespace tide::server
