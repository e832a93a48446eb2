// OpenAI's images API: POST /v1/images/generations and GET /v1/models, as OpenAI clients call them. tide's
// extensions in the request: seed, negative_prompt, steps, cfg_scale, sampler, scheduler. Errors have OpenAI's
// shape: {"error": {"message", "type", "param", "code"}}.
// response_format "url": the PNG is kept in memory (ApiContext::images) and served from
// /v1/images/files/ID.png; `stream: true` is answered as server-sent events (openai_stream.h).
#pragma once
#include <string>
#include <variant>

#include "tide/server/a1111_samplers.h"
#include "tide/server/api_context.h"

namespace tide::server::openai {

// A checked /v1/images/generations request.
struct ImagesRequest {
  JobSpec spec;
  SamplerChoice sampler;
  bool url = false;        // response_format "url" (else b64_json)
  bool stream = false;
  int partial_images = 0;  // previews per picture when streaming, 0..3
};

// The request, or the OpenAI error reply for a bad one.
std::variant<ImagesRequest, HttpReply> parse_images_generations(ApiContext& ctx, const std::string& body);
// Runs a request that is not streamed and answers it; `base_url` ("http://host:port") prefixes the URLs of
// response_format "url".
HttpReply images_generations(ApiContext& ctx, const ImagesRequest& request, const std::string& base_url);
// Both steps (b64_json and url without a base URL give relative URLs; stream is refused).
HttpReply images_generations(ApiContext& ctx, const std::string& body);
HttpReply models(ApiContext& ctx);

// What the endpoint and its stream share.
HttpReply error(int status, const std::string& message, const std::string& param = "",
                const std::string& type = "invalid_request_error", const std::string& code = "");
// Submits the request's job; a 503 reply when the queue is full.
std::variant<std::shared_ptr<Job>, HttpReply> submit(ApiContext& ctx, const JobSpec& spec);
// The PNG of a finished picture, with A1111's infotext (job_infotext) in its `parameters` chunk.
std::string result_png(ApiContext& ctx, const JobSpec& spec, const JobOutcome& outcome, const JobImage& image,
                       const SamplerChoice& sampler);

}  // namespace tide::server::openai
