#include "tide/server/openai_stream.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>

#include "tide/io/image.h"
#include "tide/server/base64.h"
#include "tide/server/latent_preview.h"

namespace tide::server::openai {
using nlohmann::json;

std::vector<int> preview_steps(int steps, int partial_images) {
  std::vector<int> out;
  for (int j = 0; j < partial_images; ++j) {
    const int step = static_cast<int>(std::ceil(double(j + 1) * steps / (partial_images + 1)));
    if (step >= 1 && step <= steps && (out.empty() || out.back() != step)) out.push_back(step);
  }
  return out;
}

std::string sse_event(const std::string& name, const json& data) {
  return "event: " + name + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

struct ImageStream::Previews {
  struct Preview {
    int image, index;
    at::Tensor latents;
  };
  std::mutex mutex;
  std::condition_variable arrived;
  std::deque<Preview> waiting;
};

ImageStream::ImageStream(ApiContext& ctx, ImagesRequest request)
    : ctx_(ctx), request_(std::move(request)), previews_(std::make_shared<Previews>()) {}

std::variant<std::shared_ptr<ImageStream>, HttpReply> ImageStream::start(ApiContext& ctx, ImagesRequest request) {
  std::shared_ptr<ImageStream> stream(new ImageStream(ctx, std::move(request)));
  JobSpec spec = stream->request_.spec;
  if (stream->request_.partial_images > 0) {
    // The worker only copies the latents of the chosen steps; the HTTP thread makes the pictures.
    const int partial_images = stream->request_.partial_images;
    spec.on_step = [previews = stream->previews_, partial_images](int image, int step, int steps, const at::Tensor& latents) {
      const auto chosen = preview_steps(steps, partial_images);
      const auto it = std::find(chosen.begin(), chosen.end(), step);
      if (it == chosen.end()) return;
      {
        std::lock_guard<std::mutex> lock(previews->mutex);
        previews->waiting.push_back({image, static_cast<int>(it - chosen.begin()), latents.detach().clone()});
      }
      previews->arrived.notify_all();
    };
  }
  auto submitted = submit(ctx, spec);
  if (auto* reply = std::get_if<HttpReply>(&submitted)) return *reply;
  stream->job_ = std::get<std::shared_ptr<Job>>(submitted);
  return stream;
}

void ImageStream::abandon() {
  if (job_) ctx_.queue.interrupt(job_->id());
}

void ImageStream::run(const std::function<bool(const std::string&)>& write) {
  const auto& r = request_.spec.request;
  auto common = [&](const std::string& type, const std::string& size) {
    return json{{"type", type},         {"created_at", static_cast<int64_t>(std::time(nullptr))},
                {"size", size},         {"quality", "auto"},
                {"background", "opaque"}, {"output_format", "png"}};
  };
  auto last_write = std::chrono::steady_clock::now();
  auto send = [&](const std::string& text) {
    last_write = std::chrono::steady_clock::now();
    if (write(text)) return true;
    abandon();
    return false;
  };
  for (;;) {
    // Checked before the previews are taken, so that every preview of a finished job is sent before its end.
    std::optional<JobOutcome> outcome = job_->wait_for(std::chrono::milliseconds(0));
    std::deque<Previews::Preview> ready;
    {
      std::unique_lock<std::mutex> lock(previews_->mutex);
      if (!outcome && previews_->waiting.empty())
        previews_->arrived.wait_for(lock, std::chrono::milliseconds(200), [&] { return !previews_->waiting.empty(); });
      ready.swap(previews_->waiting);
    }
    for (const auto& p : ready) {
      at::Tensor picture;
      {
        c10::InferenceMode inference;
        const ProgressSnapshot progress = ctx_.queue.progress();
        const int upscale = r.width > 0 ? std::max<int>(1, r.width / static_cast<int>(p.latents.size(3))) : 8;
        picture = latent_preview(p.latents, progress.job_id == job_->id() && progress.xl, upscale);
      }
      json event = common("image_generation.partial_image",
                          std::to_string(picture.size(1)) + "x" + std::to_string(picture.size(0)));
      event["b64_json"] = base64_encode(io::encode_png(picture));
      event["partial_image_index"] = p.index;
      event["image_index"] = p.image;  // tide: which of the n pictures
      if (!send(sse_event("image_generation.partial_image", event))) return;
    }
    if (outcome) {
      if (!outcome->error.empty() || outcome->images.empty()) {
        const bool bad = outcome->bad_request;
        const std::string message = outcome->error.empty() ? "the job was cancelled" : outcome->error;
        send(sse_event("error", {{"type", "error"},
                                 {"error", {{"type", bad ? "invalid_request_error" : "server_error"},
                                            {"message", message}, {"code", nullptr}, {"param", nullptr}}}}));
        return;
      }
      for (size_t i = 0; i < outcome->images.size(); ++i) {
        const auto& image = outcome->images[i];
        json event = common("image_generation.completed",
                            std::to_string(image.rgb8.size(1)) + "x" + std::to_string(image.rgb8.size(0)));
        event["b64_json"] = base64_encode(result_png(ctx_, request_.spec, *outcome, image, request_.sampler));
        // tide computes no tokens; the fields are there for clients that read them.
        event["usage"] = {{"input_tokens", 0},
                          {"input_tokens_details", {{"image_tokens", 0}, {"text_tokens", 0}}},
                          {"output_tokens", 0},
                          {"total_tokens", 0}};
        event["image_index"] = i;
        event["seed"] = image.seed;
        if (!send(sse_event("image_generation.completed", event))) return;
      }
      return;
    }
    // A comment now and then: a client that has gone is noticed while the job still waits or runs.
    if (std::chrono::steady_clock::now() - last_write > std::chrono::seconds(5) && !send(": waiting\n\n")) return;
  }
}

}  // namespace tide::server::openai
