// OpenAI's images API: POST /v1/images/generations and GET /v1/models, as OpenAI clients call them. tide's
// extensions in the request: seed, negative_prompt, steps, cfg_scale, sampler, scheduler. Errors have OpenAI's
// shape: {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <string>

#include "tide/server/api_context.h"

namespace tide::server::openai {

HttpReply images_generations(ApiContext& ctx, const std::string& body);
HttpReply models(ApiContext& ctx);

}  // namespace tide::server::openai
