// What an API handler answers, independent of the HTTP library: the server copies it into the response.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace tide::server {

struct HttpReply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::map<std::string, std::string> headers;
};

inline HttpReply json_reply(const nlohmann::json& value, int status = 200) {
  HttpReply r;
  r.status = status;
  r.body = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

// Limits on one request, configurable with tide serve's flags; beyond them: HTTP 422 / 400.
struct RequestLimits {
  int max_side = 2048;   // pixels, width and height each
  int max_steps = 150;
  int max_images = 16;   // pictures per job (batch_size × n_iter, or n)
};

}  // namespace tide::server
