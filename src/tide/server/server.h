// tide serve's HTTP server: the web page at /, AUTOMATIC1111's /sdapi/v1 API, OpenAI's /v1 images API and
// /health, over the model registry and the job queue. Requests are served by a pool of threads; generation
// runs on the job queue's one worker thread.
#pragma once
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tide/server/http_reply.h"
#include "tide/server/image_store.h"
#include "tide/server/job_queue.h"
#include "tide/server/model_registry.h"

namespace tide::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 7860;              // 0: any free port (bind() says which)
  std::string api_key;          // "": no authentication; else `Authorization: Bearer KEY` on every API route
  // "user:password" pairs (A1111's --api-auth): HTTP Basic authentication on every API route. With api_key
  // too, either is accepted.
  std::vector<std::string> api_auth;
  // Browser origins (e.g. "https://app.example") allowed to call the API cross-origin; exact matches only.
  // Empty: no CORS headers at all.
  std::vector<std::string> cors_origins;
  size_t max_queue = 16;        // jobs waiting behind the running one; beyond: 503
  RequestLimits limits;
  std::filesystem::path output_dir;  // A1111's save_images writes here ("" = nowhere)
  size_t max_body_bytes = 32u << 20;
  // OpenAI's response_format "url": pictures are kept in memory this long, at most this many (oldest leave first).
  std::chrono::seconds url_image_lifetime{600};
  size_t url_image_capacity = 256;
  // Folders of LoRA .safetensors files that <lora:NAME:WEIGHT> prompt tags name (A1111's Lora folder).
  std::vector<std::filesystem::path> lora_dirs;
  nlohmann::json command_line = nlohmann::json::object();  // /sdapi/v1/cmd-flags
  // Tiny autoencoders (diffusers AutoencoderTiny folders) for the progress previews of SD 1.x/2.x and of SDXL
  // models; "" = the linear latent preview (server/live_previews.h).
  std::filesystem::path preview_decoder, preview_decoder_xl;
};

class Server {
 public:
  Server(ServerOptions options, RegistryOptions registry);
  ~Server();
  // Binds host:port; returns the port. A port in use is a tide::Error.
  int bind();
  // Serves until stop() (from another thread or a signal-watching thread).
  void run();
  // Cancels waiting jobs, interrupts the running one, answers the requests in flight, then stops serving.
  void stop();
  // True while run() is accepting connections.
  bool running() const;

  ModelRegistry& registry();
  JobQueue& queue();
  ImageStore& images();  // response_format "url" pictures

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Compares two strings in time that depends on their lengths only, not on where they differ.
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace tide::server
