// tide serve at its edges, against a real server on a loopback port: HTTP Basic authentication (A1111's
// --api-auth), CORS for named origins, OpenAI's url and stream response forms, JPEG inputs to img2img and
// <lora:NAME:WEIGHT> prompt tags.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#ifndef TIDE_WITHOUT_JPEG  // a build without libjpeg (TIDE_WITH_JPEG=OFF) has no encoder for the JPEG test
#include <jpeglib.h>
#endif

#include <cstdio>

#include "server_harness.h"
#include "tide/runtime/sha256.h"
#include "tide/server/access_control.h"
#include "tide/server/latent_preview.h"
#include "tide/server/openai_stream.h"
#include "tide/text/extra_networks.h"
#include "tide/train/image_files.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace tide::testing;

class ServerEdges : public TinyModelsSuite {};

std::string basic(const std::string& pair) { return "Basic " + tide::server::base64_encode(pair); }

TEST(ServerAccess, ApiAuthListsParseLikeA1111s) {
  using tide::server::parse_api_auth;
  EXPECT_EQ(parse_api_auth("alice:pw"), std::vector<std::string>{"alice:pw"});
  EXPECT_EQ(parse_api_auth("alice:pw, bob:p:w"), (std::vector<std::string>{"alice:pw", "bob:p:w"}));
  EXPECT_THROW(parse_api_auth("alice"), tide::Error);
  EXPECT_THROW(parse_api_auth(":pw"), tide::Error);
  EXPECT_THROW(parse_api_auth("alice:pw,"), tide::Error);
}

TEST_F(ServerEdges, BasicAuthIsRequiredOnEveryApiRoute) {
  tide::server::ServerOptions options;
  options.api_auth = {"alice:wonder land", "bob:builder"};
  ServerHarness harness(models(), options);
  auto client = harness.client();
  for (const char* path : {"/sdapi/v1/sd-models", "/sdapi/v1/progress", "/v1/models", "/sdapi/v1/loras"}) {
    const auto missing = get_json(*client, path);
    EXPECT_EQ(missing.status, 401) << path;
    EXPECT_EQ(missing.header("WWW-Authenticate"), "Basic realm=\"tide\"") << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", basic("alice:wrong")}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", basic("alice:wonder land!")}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", basic("bob:wonder land")}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Basic !!not-base64"}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Bearer alice:wonder land"}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", basic("alice:wonder land")}}).status, 200) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", basic("bob:builder")}}).status, 200) << path;
  }
  // httplib's own basic-auth client sends the same header A1111 clients (requests' auth=) send.
  client->set_basic_auth("bob", "builder");
  const std::string body = json({{"prompt", "x"}, {"steps", 1}, {"width", 32}, {"height", 32}}).dump();
  EXPECT_EQ(post_json(*client, "/sdapi/v1/txt2img", body).status, 200);
  auto anonymous = harness.client();
  EXPECT_EQ(post_json(*anonymous, "/sdapi/v1/txt2img", body).status, 401);
  const auto page = anonymous->Get("/health");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
}

TEST_F(ServerEdges, BasicAuthAndTheApiKeyAreBothAccepted) {
  tide::server::ServerOptions options;
  options.api_key = "k3y";
  options.api_auth = {"alice:pw"};
  ServerHarness harness(models(), options);
  auto client = harness.client();
  const auto missing = get_json(*client, "/v1/models");
  EXPECT_EQ(missing.status, 401);
  int challenges = 0;
  auto raw = client->Get("/v1/models");
  ASSERT_TRUE(raw);
  for (const auto& [key, value] : raw->headers)
    if (key == "WWW-Authenticate") {
      ++challenges;
      EXPECT_TRUE(value == "Basic realm=\"tide\"" || value == "Bearer") << value;
    }
  EXPECT_EQ(challenges, 2);
  EXPECT_EQ(get_json(*client, "/v1/models", {{"Authorization", "Bearer k3y"}}).status, 200);
  EXPECT_EQ(get_json(*client, "/v1/models", {{"Authorization", basic("alice:pw")}}).status, 200);
  EXPECT_EQ(get_json(*client, "/v1/models", {{"Authorization", "Bearer pw"}}).status, 401);
  EXPECT_EQ(get_json(*client, "/v1/models", {{"Authorization", basic("alice:k3y")}}).status, 401);
}

// Every header whose name starts with Access-Control-.
std::vector<std::string> cors_header_names(const httplib::Result& result) {
  std::vector<std::string> names;
  for (const auto& [key, value] : result->headers)
    if (key.rfind("Access-Control-", 0) == 0) names.push_back(key);
  return names;
}

TEST_F(ServerEdges, CorsIsOffByDefault) {
  ServerHarness harness(models());
  auto client = harness.client();
  const auto get = client->Get("/sdapi/v1/sd-models", {{"Origin", "https://app.example"}});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_TRUE(cors_header_names(get).empty());
  EXPECT_FALSE(get->has_header("Vary"));
  const auto preflight = client->Options("/sdapi/v1/txt2img", {{"Origin", "https://app.example"},
                                                                {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(preflight);
  EXPECT_TRUE(cors_header_names(preflight).empty());
}

TEST_F(ServerEdges, CorsAnswersNamedOriginsOnlyAndPreflightsNeedNoCredentials) {
  tide::server::ServerOptions options;
  options.api_auth = {"alice:pw"};
  options.cors_origins = {"https://app.example", "http://localhost:3000"};
  ServerHarness harness(models(), options);
  auto client = harness.client();
  const httplib::Headers preflight_headers = {{"Origin", "http://localhost:3000"},
                                              {"Access-Control-Request-Method", "POST"},
                                              {"Access-Control-Request-Headers", "authorization, content-type"}};
  const auto preflight = client->Options("/sdapi/v1/txt2img", preflight_headers);
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->get_header_value("Access-Control-Allow-Origin"), "http://localhost:3000");
  EXPECT_EQ(preflight->get_header_value("Vary"), "Origin");
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Content-Type"), std::string::npos);

  // The actual request still needs credentials; its 401 carries the CORS headers so the page can read it.
  const auto denied = client->Get("/v1/models", {{"Origin", "https://app.example"}});
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 401);
  EXPECT_EQ(denied->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  const auto allowed = client->Get("/v1/models", {{"Origin", "https://app.example"}, {"Authorization", basic("alice:pw")}});
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 200);
  EXPECT_EQ(allowed->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_EQ(allowed->get_header_value("Vary"), "Origin");

  // Other origins, near misses included, get no CORS headers at all: never a reflected origin, never `*`.
  for (const char* origin : {"https://evil.example", "https://app.example.evil", "http://app.example", "null", "*"}) {
    const auto other = client->Get("/v1/models", {{"Origin", origin}, {"Authorization", basic("alice:pw")}});
    ASSERT_TRUE(other);
    EXPECT_EQ(other->status, 200);
    EXPECT_TRUE(cors_header_names(other).empty()) << origin;
    const auto other_preflight = client->Options("/sdapi/v1/txt2img", {{"Origin", origin}, {"Access-Control-Request-Method", "POST"}});
    ASSERT_TRUE(other_preflight);
    EXPECT_TRUE(cors_header_names(other_preflight).empty()) << origin;
  }
  const auto no_origin = client->Get("/v1/models", {{"Authorization", basic("alice:pw")}});
  ASSERT_TRUE(no_origin);
  EXPECT_TRUE(cors_header_names(no_origin).empty());
}

tide::pipeline::GenerationRequest openai_request(const std::string& prompt, uint64_t seed, int steps) {
  tide::pipeline::GenerationRequest r;
  r.prompt = prompt;
  r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
  r.width = r.height = 32;
  r.steps = steps;
  r.guidance = 7;  // the endpoint's default cfg_scale
  r.seed = seed;
  r.scheduler = "euler";
  return r;
}

TEST_F(ServerEdges, UrlResponsesServeThePictureForAWhile) {
  tide::server::ServerOptions options;
  options.api_auth = {"alice:pw"};
  options.url_image_capacity = 3;
  ServerHarness harness(models(), options);
  auto client = harness.client();
  const json request = {{"prompt", "a red fox"}, {"n", 2}, {"size", "32x32"}, {"response_format", "url"},
                        {"seed", 7}, {"steps", 3}, {"sampler", "Euler"}};
  const auto reply = post_json(*client, "/v1/images/generations", request.dump(),
                               {{"Authorization", basic("alice:pw")}, {"Host", "tide.example:8080"}});
  ASSERT_EQ(reply.status, 200) << reply.raw;
  ASSERT_EQ(reply.body["data"].size(), 2u);
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(models() / "tiny");
  std::vector<std::string> paths;
  for (int i = 0; i < 2; ++i) {
    const std::string url = reply.body["data"][i]["url"];
    EXPECT_FALSE(reply.body["data"][i].contains("b64_json"));
    const std::string prefix = "http://tide.example:8080/v1/images/files/";
    ASSERT_EQ(url.rfind(prefix, 0), 0u) << url;
    ASSERT_EQ(url.size(), prefix.size() + 32 + 4) << url;
    paths.push_back(url.substr(std::string("http://tide.example:8080").size()));
    // The id is the credential: the picture loads without the API's.
    auto anonymous = harness.client();
    const auto file = anonymous->Get(paths.back().c_str());
    ASSERT_TRUE(file);
    ASSERT_EQ(file->status, 200);
    EXPECT_EQ(file->get_header_value("Content-Type"), "image/png");
    const auto png = tide::io::decode_png(file->body);
    EXPECT_TRUE(at::equal(png.rgb8, direct_image(*pipe, openai_request("a red fox", 7 + i, 3)))) << "image " << i;
    EXPECT_NE(png.text.at("parameters").find("Seed: " + std::to_string(7 + i)), std::string::npos);
  }
  EXPECT_NE(paths[0], paths[1]);
  EXPECT_EQ(client->Get("/v1/images/files/0123456789abcdef0123456789abcdef.png")->status, 404);
  EXPECT_EQ(client->Get("/v1/images/files/nothex.png")->status, 404);
  {
    tide::server::ImageStore& store = harness.server().images();
    EXPECT_EQ(store.size(), 2u);
    // Beyond the capacity the oldest leave first.
    store.put("a");
    store.put("b");
    EXPECT_EQ(client->Get(paths[0].c_str())->status, 404);
    EXPECT_EQ(client->Get(paths[1].c_str())->status, 200);
    // After their lifetime (600 s by default) they are gone.
    store.set_clock_offset(std::chrono::seconds(599));
    EXPECT_EQ(client->Get(paths[1].c_str())->status, 200);
    store.set_clock_offset(std::chrono::seconds(601));
    EXPECT_EQ(client->Get(paths[1].c_str())->status, 404);
    EXPECT_EQ(store.size(), 0u);
  }
  const auto bad = post_json(*client, "/v1/images/generations", json({{"prompt", "x"}, {"response_format", "gif"}}).dump(),
                             {{"Authorization", basic("alice:pw")}});
  EXPECT_EQ(bad.status, 400);
}

// Server-sent events: "event: NAME" / "data: JSON" pairs.
std::vector<std::pair<std::string, json>> parse_sse(const std::string& text) {
  std::vector<std::pair<std::string, json>> events;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    const std::string block = text.substr(start, end - start);
    start = end + 2;
    std::string name, data;
    size_t line_start = 0;
    while (line_start < block.size()) {
      size_t line_end = block.find('\n', line_start);
      if (line_end == std::string::npos) line_end = block.size();
      const std::string line = block.substr(line_start, line_end - line_start);
      if (line.rfind("event: ", 0) == 0) name = line.substr(7);
      if (line.rfind("data: ", 0) == 0) data = line.substr(6);
      line_start = line_end + 1;
    }
    if (!name.empty()) events.emplace_back(name, json::parse(data));
  }
  return events;
}

TEST(ServerStream, PreviewStepsAreSpreadOverTheSteps) {
  using tide::server::openai::preview_steps;
  EXPECT_EQ(preview_steps(20, 0), std::vector<int>{});
  EXPECT_EQ(preview_steps(20, 1), std::vector<int>{10});
  EXPECT_EQ(preview_steps(20, 3), (std::vector<int>{5, 10, 15}));
  EXPECT_EQ(preview_steps(4, 2), (std::vector<int>{2, 3}));
  EXPECT_EQ(preview_steps(3, 3), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(preview_steps(1, 3), (std::vector<int>{1}));
}

TEST_F(ServerEdges, StreamSendsPartialImagesThenTheCompletedOne) {
  ServerHarness harness(models());
  auto client = harness.client();
  const json request = {{"prompt", "a red fox"}, {"size", "32x32"}, {"stream", true}, {"partial_images", 2},
                        {"seed", 11}, {"steps", 4}, {"sampler", "Euler"}};
  const auto result = client->Post("/v1/images/generations", request.dump(), "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");
  const auto events = parse_sse(result->body);
  ASSERT_EQ(events.size(), 3u) << result->body.substr(0, 500);

  // The previews are the latent previews of the latents after steps 2 and 3 of 4, at the output's size.
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(models() / "tiny");
  pipe->set_compute_settings({pipe->compute_settings().optimizations, 1});
  std::map<int, at::Tensor> latents;
  auto r = openai_request("a red fox", 11, 4);
  r.num_images = 1;
  const at::Tensor final_image = pipe->generate(r, [&](const tide::pipeline::StepInfo& step) {
                                        latents[step.index + 1] = step.latents.clone();
                                      }).images[0];
  const int upscale = 32 / static_cast<int>(latents.at(2).size(3));
  for (int k = 0; k < 2; ++k) {
    const auto& [name, data] = events[k];
    EXPECT_EQ(name, "image_generation.partial_image");
    EXPECT_EQ(data["type"], "image_generation.partial_image");
    EXPECT_EQ(data["partial_image_index"], k);
    EXPECT_EQ(data["output_format"], "png");
    EXPECT_EQ(data["size"], "32x32");
    EXPECT_GT(data["created_at"].get<int64_t>(), 0);
    const at::Tensor expected = tide::server::latent_preview(latents.at(2 + k), false, upscale);
    EXPECT_TRUE(at::equal(decode_b64_png(data["b64_json"]).rgb8, expected)) << "preview " << k;
  }
  const auto& [name, data] = events[2];
  EXPECT_EQ(name, "image_generation.completed");
  EXPECT_EQ(data["type"], "image_generation.completed");
  EXPECT_EQ(data["size"], "32x32");
  EXPECT_EQ(data["output_format"], "png");
  EXPECT_TRUE(data["usage"].contains("total_tokens"));
  EXPECT_TRUE(at::equal(decode_b64_png(data["b64_json"]).rgb8, final_image));

  // Without previews: only the completed event. Bad requests still get a JSON error, not a stream.
  const auto plain = client->Post("/v1/images/generations", json({{"prompt", "x"}, {"size", "32x32"}, {"stream", true},
                                                                  {"steps", 2}}).dump(), "application/json");
  ASSERT_TRUE(plain);
  const auto plain_events = parse_sse(plain->body);
  ASSERT_EQ(plain_events.size(), 1u);
  EXPECT_EQ(plain_events[0].first, "image_generation.completed");
  const auto bad = post_json(*client, "/v1/images/generations", json({{"prompt", "x"}, {"stream", true}, {"partial_images", 4}}).dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.body["error"]["param"], "partial_images");
}

TEST_F(ServerEdges, AStreamWhoseClientLeavesInterruptsItsJob) {
  tide::server::RegistryOptions registry_options;
  registry_options.model_dirs = {models()};
  registry_options.compute.threads = 1;
  tide::server::ModelRegistry registry(registry_options);
  tide::server::JobQueue queue(registry, 4);
  tide::server::LivePreviews previews;
  tide::server::ApiContext ctx{registry, queue, {}, {}, json::object(), previews, nullptr};
  // The worker waits after step 11 until the stream has asked for the interrupt: the job ends after step 10
  // (when the interrupt comes that fast) or 11, never runs its 20 steps.
  std::atomic<int> last_step{0};
  queue.set_step_observer([&](const std::string&, int step) {
    last_step = step;
    for (int i = 0; i < 60000 && step == 11 && !queue.progress().interrupted; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  auto parsed = tide::server::openai::parse_images_generations(
      ctx, json({{"prompt", "x"}, {"size", "32x32"}, {"stream", true}, {"partial_images", 1}, {"steps", 20}}).dump());
  auto request = std::get<tide::server::openai::ImagesRequest>(parsed);
  auto started = tide::server::openai::ImageStream::start(ctx, request);
  auto stream = std::get<std::shared_ptr<tide::server::openai::ImageStream>>(started);
  int writes = 0;
  stream->run([&](const std::string& text) {
    ++writes;
    return false;  // the client has gone
  });
  EXPECT_EQ(writes, 1);  // the preview after step 10
  queue.shutdown();
  EXPECT_GE(last_step.load(), 10);
  EXPECT_LE(last_step.load(), 11);
}

#ifndef TIDE_WITHOUT_JPEG
// uint8 [H, W, 3] -> JPEG bytes (libjpeg's defaults: 4:2:0 chroma subsampling), as a camera or browser sends.
std::string encode_jpeg(const at::Tensor& rgb8, int quality = 90) {
  const at::Tensor image = rgb8.contiguous();
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.size(1));
  cinfo.image_height = static_cast<JDIMENSION>(image.size(0));
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = image.data_ptr<uint8_t>() + static_cast<size_t>(cinfo.next_scanline) * cinfo.image_width * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string bytes(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return bytes;
}

TEST_F(ServerEdges, Img2ImgTakesJpegImagesAsTheirDecodedPixels) {
  ServerHarness harness(models());
  auto client = harness.client();
  // A smooth picture, as photos are: JPEG keeps it close.
  const at::Tensor ramp = at::arange(32, at::kFloat) * 8;
  const at::Tensor picture = at::stack({ramp.view({1, 32}).expand({32, 32}), ramp.view({32, 1}).expand({32, 32}),
                                        at::full({32, 32}, 128.0f)}, 2).to(at::kByte);  // [32, 32, 3]
  at::Tensor mask = at::zeros({32, 32, 3}, at::kByte);
  mask.narrow(1, 16, 16).fill_(255);
  const std::string init_jpeg = encode_jpeg(picture), mask_jpeg = encode_jpeg(mask);

  // The bytes decode as the same file does (the reader the training data goes through), close to the original.
  const at::Tensor init_pixels = tide::train::decode_rgb_image(init_jpeg, "init");
  const at::Tensor mask_pixels = tide::train::decode_rgb_image(mask_jpeg, "mask");
  TempDir files;
  std::ofstream(files.path() / "init.jpg", std::ios::binary) << init_jpeg;
  EXPECT_TRUE(at::equal(init_pixels, tide::train::read_rgb_image(files.path() / "init.jpg")));
  ASSERT_EQ(init_pixels.sizes(), picture.sizes());
  EXPECT_LT((init_pixels.to(at::kFloat) - picture.to(at::kFloat)).abs().mean().item<float>(), 3.0f);
  EXPECT_FALSE(at::equal(init_pixels, picture));  // lossy: the test sends different pixels than the PNG's

  json request = {{"prompt", "a blue robot"}, {"seed", 9}, {"steps", 3}, {"cfg_scale", 5}, {"width", 32},
                  {"height", 32}, {"sampler_name", "Euler"}, {"denoising_strength", 0.6}, {"mask_blur", 0}};
  auto run = [&](const std::string& init_b64, const std::string& mask_b64) {
    json r = request;
    r["init_images"] = {init_b64};
    if (!mask_b64.empty()) r["mask"] = mask_b64;
    const auto reply = post_json(*client, "/sdapi/v1/img2img", r.dump());
    EXPECT_EQ(reply.status, 200) << reply.raw;
    return reply.status == 200 ? decode_b64_png(reply.body["images"][0]).rgb8 : at::Tensor();
  };
  using tide::server::base64_encode;
  const at::Tensor from_jpeg = run("data:image/jpeg;base64," + base64_encode(init_jpeg), "");
  const at::Tensor from_png = run(base64_encode(tide::io::encode_png(init_pixels)), "");
  ASSERT_TRUE(from_jpeg.defined() && from_png.defined());
  EXPECT_TRUE(at::equal(from_jpeg, from_png));
  const at::Tensor inpaint_jpeg = run(base64_encode(init_jpeg), "data:image/jpeg;base64," + base64_encode(mask_jpeg));
  const at::Tensor inpaint_png =
      run(base64_encode(tide::io::encode_png(init_pixels)), base64_encode(tide::io::encode_png(mask_pixels)));
  ASSERT_TRUE(inpaint_jpeg.defined() && inpaint_png.defined());
  EXPECT_TRUE(at::equal(inpaint_jpeg, inpaint_png));
  EXPECT_FALSE(at::equal(inpaint_jpeg, from_jpeg));

  // Neither PNG nor JPEG, or a broken JPEG: a 422 naming the field.
  json bad = request;
  bad["init_images"] = {base64_encode("GIF89a....")};
  auto reply = post_json(*client, "/sdapi/v1/img2img", bad.dump());
  EXPECT_EQ(reply.status, 422);
  EXPECT_EQ(reply.body["detail"][0]["loc"][1], "init_images") << reply.raw;
  bad["init_images"] = {base64_encode(init_jpeg.substr(0, 40))};
  reply = post_json(*client, "/sdapi/v1/img2img", bad.dump());
  EXPECT_EQ(reply.status, 422) << reply.raw;
}

#else
TEST_F(ServerEdges, Img2ImgTakesJpegImagesAsTheirDecodedPixels) {
  GTEST_SKIP() << "built without libjpeg (TIDE_WITH_JPEG=OFF): JPEG inputs are refused, test_build_features checks how";
}
#endif

// <lora:NAME:WEIGHT> tags apply the fixture LoRAs (which fit sd1-tiny) to their own job only: the pictures equal
// the pipeline's with set_loras, and the next request without a tag gets the base model's picture again.
TEST(ServerLora, PromptTagsApplyFolderLorasToTheirJobOnly) {
  TIDE_REQUIRE_FIXTURES();
  TempDir dir;
  fs::create_directories(dir.path() / "models");
  fs::create_directories(dir.path() / "loras" / "styles");
  fs::create_directory_symlink(pipeline_dir("sd1-tiny"), dir.path() / "models" / "sd1-tiny");
  const fs::path lora_cases = fixtures_dir() / "features" / "lora";
  fs::create_symlink(lora_cases / "lora_sd1_kohya_m1" / "lora.safetensors", dir.path() / "loras" / "knight.safetensors");
  fs::create_symlink(lora_cases / "lora_sd1_locon_m06" / "lora.safetensors",
                     dir.path() / "loras" / "styles" / "locon.safetensors");
  tide::server::ServerOptions options;
  options.lora_dirs = {dir.path() / "loras"};
  ServerHarness harness(dir.path() / "models", options);
  auto client = harness.client();

  const auto listed = get_json(*client, "/sdapi/v1/loras");
  ASSERT_EQ(listed.status, 200);
  ASSERT_EQ(listed.body.size(), 2u) << listed.raw;
  EXPECT_EQ(listed.body[0]["name"], "knight");
  EXPECT_EQ(listed.body[0]["alias"], "knight");
  EXPECT_EQ(listed.body[0]["path"], (dir.path() / "loras" / "knight.safetensors").string());
  EXPECT_TRUE(listed.body[0]["metadata"].is_object());
  EXPECT_EQ(listed.body[1]["name"], "locon");

  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(pipeline_dir("sd1-tiny"));
  auto expected_for = [&](const std::string& prompt, double cfg, const std::vector<tide::adapters::LoraSpec>& loras) {
    tide::pipeline::GenerationRequest r = openai_request(tide::text::extract_lora_tags(prompt).prompt, 21, 3);
    r.width = r.height = 64;
    r.guidance = cfg;
    pipe->set_loras(loras);
    return direct_image(*pipe, r);
  };
  auto txt2img = [&](const std::string& prompt) {
    const json request = {{"prompt", prompt}, {"seed", 21}, {"steps", 3}, {"cfg_scale", 7}, {"width", 64},
                          {"height", 64}, {"sampler_name", "Euler"}};
    return post_json(*client, "/sdapi/v1/txt2img", request.dump());
  };
  const std::string tagged = "a portrait of a knight <lora:knight:0.8>, <lora:locon:0.6:0.3>";
  const auto with = txt2img(tagged);
  ASSERT_EQ(with.status, 200) << with.raw;
  const std::vector<tide::adapters::LoraSpec> both = {{dir.path() / "loras" / "knight.safetensors", 0.8, std::nullopt},
                                                      {dir.path() / "loras" / "styles" / "locon.safetensors", 0.3, 0.6}};
  const at::Tensor lora_image = decode_b64_png(with.body["images"][0]).rgb8;
  EXPECT_TRUE(at::equal(lora_image, expected_for(tagged, 7, both)));
  // The infotext keeps the prompt as sent, tags included, as A1111's does.
  EXPECT_EQ(json::parse(with.body["info"].get<std::string>())["prompt"], tagged);
  const std::string infotext = decode_b64_png(with.body["images"][0]).text.at("parameters");
  EXPECT_EQ(infotext.rfind(tagged, 0), 0u) << infotext;
  const std::string hashes = "Lora hashes: \"knight: " +
                             tide::runtime::sha256_file(lora_cases / "lora_sd1_kohya_m1" / "lora.safetensors").substr(0, 12) +
                             ", locon: " +
                             tide::runtime::sha256_file(lora_cases / "lora_sd1_locon_m06" / "lora.safetensors").substr(0, 12) +
                             "\"";
  EXPECT_NE(infotext.find(hashes), std::string::npos) << infotext;

  const auto without = txt2img("a portrait of a knight");
  ASSERT_EQ(without.status, 200) << without.raw;
  const at::Tensor base_image = decode_b64_png(without.body["images"][0]).rgb8;
  EXPECT_TRUE(at::equal(base_image, expected_for("a portrait of a knight", 7, {})));
  EXPECT_FALSE(at::equal(base_image, lora_image));

  // OpenAI prompts take the tags too.
  const json openai = {{"prompt", "a knight <lora:knight:1>"}, {"size", "64x64"}, {"seed", 21}, {"steps", 3},
                       {"sampler", "Euler"}};
  const auto generated = post_json(*client, "/v1/images/generations", openai.dump());
  ASSERT_EQ(generated.status, 200) << generated.raw;
  EXPECT_TRUE(at::equal(decode_b64_png(generated.body["data"][0]["b64_json"]).rgb8,
                        expected_for("a knight <lora:knight:1>", 7,
                                     {{dir.path() / "loras" / "knight.safetensors", 1.0, std::nullopt}})));

  // So do tide's own jobs.
  const json job = {{"prompt", tagged}, {"seed", 21}, {"steps", 3}, {"guidance", 7}, {"width", 64}, {"height", 64},
                    {"scheduler", "euler"}};
  const auto created = post_json(*client, "/api/jobs", job.dump());
  ASSERT_EQ(created.status, 202) << created.raw;
  json finished;
  for (int i = 0; i < 600; ++i) {
    finished = get_json(*client, "/api/jobs/" + created.body["id"].get<std::string>()).body;
    if (finished["status"] == "done" || finished["status"] == "failed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(finished["status"], "done") << finished.dump();
  EXPECT_TRUE(at::equal(decode_b64_png(finished["images"][0]).rgb8, lora_image));

  // Unknown names are 422/400 naming them; names are never paths.
  for (const std::string& prompt : {std::string("x <lora:nope:1>"), std::string("x <lora:../loras/knight:1>"),
                                    (dir.path() / "loras" / "knight.safetensors").string()}) {
    const auto reply = txt2img(prompt.find('<') == std::string::npos ? "x <lora:" + prompt + ":1>" : prompt);
    EXPECT_EQ(reply.status, 422) << prompt << " -> " << reply.raw;
    EXPECT_EQ(reply.body["detail"][0]["loc"][1], "prompt") << reply.raw;
    EXPECT_NE(reply.raw.find("no LoRA named"), std::string::npos) << reply.raw;
  }
  const auto unknown_openai = post_json(*client, "/v1/images/generations", json({{"prompt", "x <lora:nope:1>"}}).dump());
  EXPECT_EQ(unknown_openai.status, 400);
  EXPECT_NE(unknown_openai.body["error"]["message"].get<std::string>().find("nope"), std::string::npos);

  // A file added later is found when a tag names it.
  fs::create_symlink(lora_cases / "lora_sd1_kohya_m1" / "lora.safetensors", dir.path() / "loras" / "later.safetensors");
  EXPECT_EQ(txt2img("a portrait of a knight <lora:later:0.8>").status, 200);
}

TEST_F(ServerEdges, LoraTagsWithoutALoraFolderAreRefused) {
  ServerHarness harness(models());
  auto client = harness.client();
  EXPECT_EQ(get_json(*client, "/sdapi/v1/loras").body, json::array());
  const auto reply = post_json(*client, "/sdapi/v1/txt2img",
                               json({{"prompt", "x <lora:style:1>"}, {"steps", 1}, {"width", 32}, {"height", 32}}).dump());
  EXPECT_EQ(reply.status, 422);
  EXPECT_NE(reply.raw.find("--lora-dir"), std::string::npos) << reply.raw;
}

}  // namespace
