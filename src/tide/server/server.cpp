#include "tide/server/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <iostream>
#include <thread>
#include <variant>

#include "tide/runtime/error.h"
#include "tide/server/a1111_api.h"
#include "tide/server/access_control.h"
#include "tide/server/api_context.h"
#include "tide/server/jobs_api.h"
#include "tide/server/metrics.h"
#include "tide/server/openai_api.h"
#include "tide/server/openai_stream.h"
#include "tide/server/web_page.h"

namespace tide::server {

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::string& other = a.size() == b.size() ? b : a;  // same length, so the loop never reads past the end
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ other[i]);
  return diff == 0;
}

struct Server::Impl {
  Impl(ServerOptions o, RegistryOptions r)
      : options(std::move(o)),
        registry(std::move(r)),
        queue(registry, options.max_queue),
        previews(options.preview_decoder, options.preview_decoder_xl),
        images(options.url_image_capacity, options.url_image_lifetime),
        loras(options.lora_dirs),
        context{registry, queue, options.limits, options.output_dir, options.command_line, previews, &images, &loras} {}
  ServerOptions options;
  ModelRegistry registry;
  JobQueue queue;
  LivePreviews previews;
  ImageStore images;
  LoraLibrary loras;
  ApiContext context;
  httplib::Server http;
  std::atomic<bool> stopped{false}, run_started{false}, run_ended{false};
};

namespace {

void send(httplib::Response& res, const HttpReply& reply) {
  res.status = reply.status;
  for (const auto& [key, value] : reply.headers) res.set_header(key, value);
  res.set_content(reply.body, reply.content_type.c_str());
}

bool is_api_path(const std::string& path) { return path != "/" && path != "/favicon.ico" && path != "/health"; }

// response_format "url" images: their 128-bit random id is what guards them, so a page's <img> can load them
// without credentials.
bool is_image_file_path(const std::string& path) { return path.rfind("/v1/images/files/", 0) == 0; }

// "http://HOST" from the request's Host header (the local address when there is none): the base of URLs
// handed back to the client.
std::string base_url(const httplib::Request& req) {
  std::string host = req.get_header_value("Host");
  const bool plain = !host.empty() && std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_';
  });
  if (!plain) host = (req.local_addr.find(':') != std::string::npos ? "[" + req.local_addr + "]" : req.local_addr) + ":" +
                     std::to_string(req.local_port);
  return "http://" + host;
}

// OpenAI's generations: a JSON answer, or with `stream: true` server-sent events as the job goes.
void images_generations(ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto parsed = openai::parse_images_generations(ctx, req.body);
  if (auto* reply = std::get_if<HttpReply>(&parsed)) return send(res, *reply);
  auto& request = std::get<openai::ImagesRequest>(parsed);
  if (!request.stream) return send(res, openai::images_generations(ctx, request, base_url(req)));
  auto started = openai::ImageStream::start(ctx, std::move(request));
  if (auto* reply = std::get_if<HttpReply>(&started)) return send(res, *reply);
  auto stream = std::get<std::shared_ptr<openai::ImageStream>>(started);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t, httplib::DataSink& sink) {
        stream->run([&sink](const std::string& text) { return sink.is_writable() && sink.write(text.data(), text.size()); });
        sink.done();
        return true;
      },
      [stream](bool success) {
        if (!success) stream->abandon();
      });
}

}  // namespace

Server::Server(ServerOptions options, RegistryOptions registry)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(registry))) {
  auto& http = impl_->http;
  auto& ctx = impl_->context;
  Impl* impl = impl_.get();
  // Handlers of txt2img wait for their job: enough threads that waiting requests never starve /progress.
  const size_t threads = impl_->options.max_queue + 8;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(impl_->options.max_body_bytes);

  http.set_pre_routing_handler([impl](const httplib::Request& req, httplib::Response& res) {
    const ServerOptions& o = impl->options;
    // CORS: allowed origins get their headers on every answer, 401s included; a preflight needs no credentials
    // (browsers send none with it).
    const bool preflight = req.method == "OPTIONS" && !o.cors_origins.empty() && is_api_path(req.path);
    for (const auto& [key, value] : cors_headers(o, req.get_header_value("Origin"), preflight)) res.set_header(key, value);
    if (preflight) {
      res.status = 204;
      res.set_header("Allow", "GET, POST, OPTIONS");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!requires_authentication(o) || !is_api_path(req.path) || is_image_file_path(req.path) ||
        authorized(o, req.get_header_value("Authorization")))
      return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    for (const auto& challenge : authentication_challenges(o)) res.set_header("WWW-Authenticate", challenge);
    const std::string how = o.api_key.empty()    ? "Authorization: Basic (--api-auth user:password)"
                            : o.api_auth.empty() ? "Authorization: Bearer <API key>"
                                                 : "Authorization: Bearer <API key>, or Basic (--api-auth user:password)";
    res.set_content(nlohmann::json{{"detail", "Not authenticated: send " + how}}.dump(), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content(nlohmann::json{{"detail", message}}.dump(), "application/json");
  });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(kWebPage, "text/html; charset=utf-8"); });
  http.Get("/health", [impl](const httplib::Request&, httplib::Response& res) {
    send(res, json_reply({{"status", "ok"}, {"queued", impl->queue.waiting()}, {"loaded", impl->registry.loaded_names()}}));
  });

  // AUTOMATIC1111
  http.Post("/sdapi/v1/txt2img", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, a1111::txt2img(ctx, req.body));
  });
  http.Post("/sdapi/v1/img2img", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, a1111::img2img(ctx, req.body));
  });
  http.Get("/sdapi/v1/progress", [&ctx](const httplib::Request& req, httplib::Response& res) {
    const std::string skip = req.get_param_value("skip_current_image");
    send(res, a1111::progress(ctx, skip == "true" || skip == "True" || skip == "1", req.get_param_value("id_task")));
  });
  http.Post("/sdapi/v1/interrupt", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, a1111::interrupt(ctx, req.body));
  });
  http.Post("/sdapi/v1/skip", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::skip(ctx)); });
  http.Get("/sdapi/v1/sd-models", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::sd_models(ctx)); });
  http.Post("/sdapi/v1/refresh-checkpoints", [&ctx](const httplib::Request&, httplib::Response& res) {
    send(res, a1111::refresh_checkpoints(ctx));
  });
  http.Get("/sdapi/v1/samplers", [](const httplib::Request&, httplib::Response& res) { send(res, a1111::samplers()); });
  http.Get("/sdapi/v1/schedulers", [](const httplib::Request&, httplib::Response& res) { send(res, a1111::schedulers()); });
  http.Get("/sdapi/v1/embeddings", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::embeddings(ctx)); });
  http.Get("/sdapi/v1/options", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::get_options(ctx)); });
  http.Post("/sdapi/v1/options", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, a1111::set_options(ctx, req.body));
  });
  http.Get("/sdapi/v1/cmd-flags", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::cmd_flags(ctx)); });
  http.Post("/sdapi/v1/png-info", [](const httplib::Request& req, httplib::Response& res) { send(res, a1111::png_info(req.body)); });
  http.Get("/sdapi/v1/memory", [](const httplib::Request&, httplib::Response& res) { send(res, a1111::memory()); });
  http.Get("/sdapi/v1/loras", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, a1111::loras(ctx)); });
  http.Post("/sdapi/v1/refresh-loras", [&ctx](const httplib::Request&, httplib::Response& res) {
    if (ctx.loras) ctx.loras->refresh();
    send(res, json_reply(nullptr));
  });
  for (const char* path : {"/sdapi/v1/sd-vae", "/sdapi/v1/upscalers", "/sdapi/v1/latent-upscale-modes",
                           "/sdapi/v1/prompt-styles", "/sdapi/v1/face-restorers", "/sdapi/v1/hypernetworks",
                           "/sdapi/v1/realesrgan-models", "/sdapi/v1/sd-modules", "/sdapi/v1/extensions"})
    http.Get(path, [](const httplib::Request&, httplib::Response& res) { send(res, a1111::empty_list()); });
  http.Get("/sdapi/v1/scripts", [](const httplib::Request&, httplib::Response& res) {
    send(res, json_reply({{"txt2img", nlohmann::json::array()}, {"img2img", nlohmann::json::array()}}));
  });

  // OpenAI
  http.Post("/v1/images/generations", [&ctx](const httplib::Request& req, httplib::Response& res) {
    images_generations(ctx, req, res);
  });
  http.Get(R"(/v1/images/files/([0-9a-f]{32})\.png)", [impl](const httplib::Request& req, httplib::Response& res) {
    const auto png = impl->images.get(req.matches[1]);
    if (!png) return send(res, json_reply({{"error", {{"message", "no such image (images are kept for a while only)"}}}}, 404));
    res.set_content(*png, "image/png");
  });
  http.Get("/v1/models", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, openai::models(ctx)); });

  // tide's job API and Prometheus metrics
  http.Post("/api/jobs", [&ctx](const httplib::Request& req, httplib::Response& res) { send(res, jobs::create(ctx, req.body)); });
  http.Get(R"(/api/jobs/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, jobs::get(ctx, req.matches[1]));
  });
  http.Delete(R"(/api/jobs/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    send(res, jobs::cancel(ctx, req.matches[1]));
  });
  http.Get(R"(/api/jobs/([^/]+)/events)", [&ctx](const httplib::Request& req, httplib::Response& res) {
    auto stream = jobs::open_events(ctx, req.matches[1]);
    if (!stream) return send(res, jobs::not_found(req.matches[1]));
    res.set_header("Cache-Control", "no-cache");
    // Called until done() or a failed write (the client left) or the server stops; each call waits at most 1 s.
    res.set_chunked_content_provider("text/event-stream", [stream](size_t, httplib::DataSink& sink) {
      bool ended = false;
      const std::string text = stream->next(std::chrono::seconds(1), ended);
      if (!text.empty() && !sink.write(text.data(), text.size())) return false;
      if (ended) sink.done();
      return true;
    });
  });
  http.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) { send(res, metrics::scrape(ctx)); });
}

Server::~Server() { stop(); }

int Server::bind() {
  const auto& o = impl_->options;
  const int port = o.port == 0 ? impl_->http.bind_to_any_port(o.host) : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0)
    throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port) + " (address in use, or not an address of this host)");
  return port;
}

void Server::run() {
  impl_->run_started = true;
  if (!impl_->stopped) impl_->http.listen_after_bind();
  impl_->run_ended = true;
}

bool Server::running() const { return impl_->http.is_running(); }

void Server::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->queue.shutdown();  // first: handlers waiting for jobs get their answers, so the HTTP threads can end
  // httplib's stop() only acts on a server already listening: wait for run() to get there (or to give up).
  while (impl_->run_started && !impl_->run_ended && !impl_->http.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->http.stop();
}

ModelRegistry& Server::registry() { return impl_->registry; }
JobQueue& Server::queue() { return impl_->queue; }
ImageStore& Server::images() { return impl_->images; }

}  // namespace tide::server
