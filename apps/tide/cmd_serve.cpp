// tide serve: a web page and HTTP APIs (AUTOMATIC1111's /sdapi/v1, OpenAI's /v1/images) over warm models.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "args.h"
#include "commands.h"
#include "thread_flags.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"
#include "tide/runtime/strings.h"
#include "tide/server/access_control.h"
#include "tide/server/server.h"

namespace tide::cli {
namespace fs = std::filesystem;
namespace {

std::string read_api_key(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error("tide serve: cannot read --api-key-file " + file.string());
  std::stringstream s;
  s << in.rdbuf();
  const std::string key = trim(s.str());
  if (key.empty()) throw Error("tide serve: --api-key-file " + file.string() + " is empty");
  return key;
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

int positive(const Args& args, const std::string& name) {
  const int v = args.get_int(name);
  if (v < 1) throw Error("tide serve: --" + name + " must be at least 1, got " + std::to_string(v));
  return v;
}

}  // namespace

int run_serve(int argc, char** argv) {
  Args args("serve", "tide serve --models DIR [--port 7860] [options]",
            "Serves a web page and HTTP APIs for text-to-image: AUTOMATIC1111's /sdapi/v1 (txt2img, progress, interrupt,\n"
            "models, samplers, options, png-info, ...) and OpenAI's /v1/images/generations. Models load on first use\n"
            "and stay warm; one job computes at a time, the others wait in a bounded queue.");
  args.option("models", "DIR",
              "a folder of models: diffusers folders and .safetensors/.ckpt checkpoints in it are listed by name "
              "(folder or file name without extension); repeatable")
      .option("model", "MODEL",
              "the model used when a request names none: a name in --models, or a diffusers folder, checkpoint file "
              "or Hub id (also listed)",
              "the first listed")
      .flag("no-hf-cache", "do not list the diffusers models found in the Hugging Face cache")
      .option("embeddings", "DIR", "textual-inversion embeddings usable in prompts by file name; repeatable")
      .option("lora-dir", "DIR",
              "LoRA .safetensors files (subfolders too) that <lora:NAME:WEIGHT> prompt tags apply to their request, "
              "NAME being the file name without extension, as A1111's Lora folder; repeatable")
      .option("host", "ADDRESS",
              "address to listen on; any but loopback needs --api-key-file, --api-auth or --insecure-no-auth",
              "127.0.0.1")
      .option("port", "N", "TCP port (0: any free port, printed)", "7860")
      .option("api-key-file", "FILE", "require `Authorization: Bearer KEY` on every API route, KEY read from FILE")
      .option("api-auth", "USER:PASSWORD",
              "require HTTP Basic authentication with these credentials on every API route (as A1111's --api-auth); "
              "comma-separated or repeatable; with --api-key-file either is accepted")
      .option("cors-origin", "ORIGIN",
              "let web pages from this origin (e.g. https://app.example, exact match) call the API from a browser; "
              "repeatable",
              "no cross-origin access")
      .flag("insecure-no-auth", "allow a non-loopback --host without an API key or --api-auth")
      .option("max-queue", "N", "jobs that may wait behind the running one; more get HTTP 503", "16")
      .option("max-loaded", "N", "models kept loaded; beyond, the least recently used is dropped", "1")
      .option("max-memory", "GB",
              "memory budget: after loading a model, the least recently used others are dropped while the process "
              "holds more than this (the model in use always stays)", "none")
      .option("max-size", "PX", "largest width and height a request may ask for", "2048")
      .option("max-steps", "N", "most steps a request may ask for", "150")
      .option("max-images", "N", "most images per request (batch_size x n_iter, or n)", "16")
      .option("max-body", "MB", "largest request body, in MiB", "32")
      .option("output-dir", "DIR", "where A1111's save_images writes PNGs", "nowhere")
      .option("image-url-lifetime", "SECONDS",
              "how long a picture answered with OpenAI's response_format \"url\" stays at its /v1/images/files/ID.png "
              "address (kept in memory, at most 256 pictures: the oldest leave first); 1 to 604800 (a week)",
              "600")
      .option("preview-decoder", "DIR",
              "live previews of SD 1.x/2.x models decoded at full size by this tiny autoencoder (a diffusers "
              "AutoencoderTiny folder, e.g. madebyollin/taesd), once per step",
              "a linear latent-to-RGB picture at 1/8 size")
      .option("preview-decoder-xl", "DIR", "the same for SDXL models (e.g. madebyollin/taesdxl)",
              "a linear latent-to-RGB picture at 1/8 size")
      .option("variant", "NAME", "read weight files of this variant, e.g. fp16 (*.fp16.safetensors)")
      .option("weights", "FORMAT",
              "how loaded models keep their weights: f32, f16, bf16 or int8 (as in tide generate --weights)",
              "f32; int8 for folders written by tide quantize")
      .option("tokenizer", "DIR", "single-file checkpoints: tokenizer folder (or a model folder with tokenizer/)",
              "the family's reference model on the Hub, cached or downloaded");
  add_thread_flags(args);
  if (!args.parse(argc, argv)) return 0;

  server::RegistryOptions registry;
  for (const auto& dir : args.get_all("models")) registry.model_dirs.push_back(dir);
  for (const auto& dir : args.get_all("embeddings")) registry.embedding_dirs.push_back(dir);
  registry.include_hf_cache = !args.get_flag("no-hf-cache");
  registry.max_loaded = static_cast<size_t>(positive(args, "max-loaded"));
  if (args.has("max-memory")) {
    const double gb = args.get_double("max-memory");
    if (!(gb > 0 && gb < 1e6)) throw Error("tide serve: --max-memory must be a positive number of GB");
    registry.memory_budget_bytes = static_cast<int64_t>(gb * (1ull << 30));
  }
  if (args.has("variant")) registry.load.variant = args.get("variant");
  if (args.has("tokenizer")) registry.load.tokenizer = args.get("tokenizer");
  if (args.has("weights")) registry.load.weights = nn::parse_weight_format(args.get("weights"), "tide serve: --weights");

  server::ServerOptions options;
  options.host = args.get("host");
  options.port = args.get_int("port");
  if (options.port < 0 || options.port > 65535)
    throw Error("tide serve: --port must be between 0 and 65535, got " + std::to_string(options.port));
  if (args.has("api-key-file")) options.api_key = read_api_key(args.get("api-key-file"));
  for (const auto& list : args.get_all("api-auth"))
    for (auto& pair : server::parse_api_auth(list, "tide serve: --api-auth")) options.api_auth.push_back(pair);
  for (const auto& origin : args.get_all("cors-origin")) {
    if (origin.empty() || origin == "*" || origin.back() == '/')
      throw Error("tide serve: --cors-origin wants an exact origin such as https://app.example (no '*', no trailing /), got '" +
                  origin + "'");
    options.cors_origins.push_back(origin);
  }
  if (!is_loopback(options.host) && options.api_key.empty() && options.api_auth.empty() && !args.get_flag("insecure-no-auth"))
    throw Error("tide serve: --host " + options.host +
                " lets other machines in: give --api-key-file or --api-auth (or --insecure-no-auth to serve without)");
  for (const auto& dir : args.get_all("lora-dir")) {
    if (!fs::is_directory(dir)) throw Error("tide serve: --lora-dir " + dir + " is not a folder");
    options.lora_dirs.push_back(dir);
  }
  options.max_queue = static_cast<size_t>(positive(args, "max-queue"));
  options.limits.max_side = positive(args, "max-size");
  options.limits.max_steps = positive(args, "max-steps");
  options.limits.max_images = positive(args, "max-images");
  options.max_body_bytes = static_cast<size_t>(positive(args, "max-body")) << 20;
  if (args.has("output-dir")) {
    options.output_dir = args.get("output-dir");
    if (!fs::is_directory(options.output_dir))
      throw Error("tide serve: --output-dir " + options.output_dir.string() + " is not a folder");
  }
  if (args.has("image-url-lifetime")) {
    const int seconds = args.get_int("image-url-lifetime");
    if (seconds < 1 || seconds > 604800)
      throw Error("tide serve: --image-url-lifetime must be between 1 and 604800 seconds, got " + std::to_string(seconds));
    options.url_image_lifetime = std::chrono::seconds(seconds);
  }
  if (args.has("preview-decoder")) options.preview_decoder = args.get("preview-decoder");
  if (args.has("preview-decoder-xl")) options.preview_decoder_xl = args.get("preview-decoder-xl");
  options.command_line = {{"models", args.get_all("models")}, {"listen", !is_loopback(options.host)},
                          {"port", options.port}, {"api", true}, {"nowebui", false},
                          {"api_auth", !options.api_key.empty() || !options.api_auth.empty()},
                          {"lora_dir", args.get_all("lora-dir")}, {"max_queue", options.max_queue}};

  // Every thread started from here on (HTTP pool, generation worker, OpenMP) inherits the blocked signals, so
  // SIGINT/SIGTERM reach only the watcher below, which shuts the server down in order.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // sent by this process when the server ends by itself
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int threads = apply_thread_flags(args, "tide serve");
  registry.compute.threads = threads;  // the worker thread computes with these, whatever its own defaults
  registry.compute.adapt_to_load = threads_adapt_to_load(args);
  registry.compute.optimizations = runtime::optimizations();

  std::string first_model;
  if (args.has("model")) {
    first_model = args.get("model");
    // A path or Hub id that is not a listed name joins the list.
    server::ModelRegistry probe(registry);
    if (!probe.find(first_model)) registry.extra_models.push_back(first_model);
  }
  server::Server server(options, registry);
  if (server.registry().models().empty())
    throw Error("tide serve: no models: give --models DIR (diffusers folders, .safetensors or .ckpt files in it) or --model");
  if (!first_model.empty()) server.registry().set_current(first_model);
  const int port = server.bind();

  std::thread watcher([&] {
    int received = 0;
    sigwait(&signals, &received);
    if (received == SIGUSR1) return;  // the server ended by itself
    std::cerr << "\n" << (received == SIGINT ? "SIGINT" : "SIGTERM") << ": stopping (the running job is interrupted)\n";
    server.stop();
  });
  std::cerr << "tide serve: " << server.registry().models().size() << " model(s), " << threads << " thread(s)\n";
  std::cout << "listening on http://" << (options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host)
            << ":" << port << "/" << std::endl;
  server.run();
  // run() returns after stop(); wake the watcher if it is still waiting.
  pthread_kill(watcher.native_handle(), SIGUSR1);
  watcher.join();
  std::cerr << "tide serve: stopped\n";
  return 0;
}

}  // namespace tide::cli
