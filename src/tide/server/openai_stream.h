// OpenAI's streamed image generation (`stream: true`) as server-sent events: per picture, `partial_images`
// previews spread over its steps (the cheap latent preview of A1111's progress, no VAE run), each an
// `image_generation.partial_image` event, then one `image_generation.completed` event with the final PNG.
// A failed job ends the stream with an `error` event.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tide/server/openai_api.h"

namespace tide::server::openai {

// The steps after which a picture of `steps` steps sends its previews: `partial_images` (at most 3) spread
// evenly, the last one before the end; fewer when there are fewer steps.
std::vector<int> preview_steps(int steps, int partial_images);

// One SSE message: "event: NAME\ndata: JSON\n\n".
std::string sse_event(const std::string& name, const nlohmann::json& data);

class ImageStream {
 public:
  // Submits the request's job; the 503 reply when the queue is full.
  static std::variant<std::shared_ptr<ImageStream>, HttpReply> start(ApiContext& ctx, ImagesRequest request);
  // Writes the events as they come until the job has ended. `write` returns false when the client has gone:
  // the job is then interrupted and run() returns.
  void run(const std::function<bool(const std::string&)>& write);
  // Interrupts the job (the client went away before or while it ran).
  void abandon();

 private:
  struct Previews;  // what the worker hands over: latents of the preview steps
  ImageStream(ApiContext& ctx, ImagesRequest request);
  ApiContext& ctx_;
  ImagesRequest request_;
  std::shared_ptr<Previews> previews_;
  std::shared_ptr<Job> job_;
};

}  // namespace tide::server::openai
