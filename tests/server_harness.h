// A tide server running in-process on a free loopback port over one tiny random model ("tiny"), for the
// server's API tests, with an httplib client to call it.
#pragma once
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"
#include "tide/server/base64.h"
#include "tide/server/server.h"
#include "tiny_pipeline.h"

namespace tide::testing {

class ServerHarness {
 public:
  explicit ServerHarness(const std::filesystem::path& models_dir, server::ServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    server::RegistryOptions registry;
    registry.model_dirs = {models_dir};
    registry.compute.threads = 1;  // the direct runs the tests compare with compute on one thread too
    server_ = std::make_unique<server::Server>(options, registry);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~ServerHarness() {
    server_->stop();
    thread_.join();
  }
  server::Server& server() { return *server_; }
  int port() const { return port_; }
  // A client with generous timeouts: a request may wait for jobs ahead of it.
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(600, 0);
    c->set_connection_timeout(10, 0);
    return c;
  }

 private:
  std::unique_ptr<server::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

// POSTs a JSON body; the reply's status and parsed body (null when not JSON).
struct JsonReply {
  int status = 0;
  nlohmann::json body;
  std::string raw;
  std::string header(const std::string& name) const { return headers.count(name) ? headers.at(name) : ""; }
  std::map<std::string, std::string> headers;
};

inline JsonReply to_json_reply(const httplib::Result& result) {
  JsonReply r;
  if (!result) return r;
  r.status = result->status;
  r.raw = result->body;
  for (const auto& [k, v] : result->headers) r.headers[k] = v;
  r.body = nlohmann::json::parse(result->body, nullptr, false);
  return r;
}

inline JsonReply post_json(httplib::Client& client, const std::string& path, const std::string& body,
                           const httplib::Headers& headers = {}) {
  return to_json_reply(client.Post(path.c_str(), headers, body, "application/json"));
}

inline JsonReply get_json(httplib::Client& client, const std::string& path, const httplib::Headers& headers = {}) {
  return to_json_reply(client.Get(path.c_str(), headers));
}

inline io::PngImage decode_b64_png(const std::string& b64) { return io::decode_png(server::base64_decode(b64)); }

// The picture the pipeline makes for `request` on one thread, without the server.
inline at::Tensor direct_image(pipeline::StableDiffusionPipeline& pipe, pipeline::GenerationRequest request) {
  pipe.set_compute_settings({pipe.compute_settings().optimizations, 1});
  request.num_images = 1;
  return pipe.generate(request).images[0];
}

// Holds the generation worker at one step of every job until release().
class StepGate {
 public:
  StepGate(tide::server::JobQueue& queue, int step) : queue_(queue) {
    queue_.set_step_observer([this, step](const std::string&, int at) {
      if (at != step) return;
      std::unique_lock<std::mutex> lock(mutex_);
      reached_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    });
  }
  ~StepGate() {
    release();
    queue_.set_step_observer(nullptr);
  }
  void wait_reached() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return reached_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  tide::server::JobQueue& queue_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool reached_ = false, released_ = false;
};

// A test suite whose tests share one models folder holding the tiny pipeline as models/tiny.
class TinyModelsSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::filesystem::create_directories(dir_->path() / "models");
    make_tiny_pipeline(dir_->path() / "models" / "tiny");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path models() { return dir_->path() / "models"; }
  static inline TempDir* dir_ = nullptr;
};

}  // namespace tide::testing
