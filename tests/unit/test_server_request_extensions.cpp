// What the web page asks of the server beyond plain text-to-image, against a real server on a loopback port:
// tide's DeepCache field in A1111 and job requests (the library's picture for the same interval, bad values
// refused), image-to-image with a mask whose infotext records the denoising strength and mask blur, and the job
// API's infotexts written as the A1111 API's are (prompt as sent, "Lora hashes").
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "server_harness.h"
#include "tide/runtime/sha256.h"
#include "tide/server/a1111_api.h"
#include "tide/text/extra_networks.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace tide::testing;

class ServerExtensions : public TinyModelsSuite {};

// The job's final state, polled until it ended.
json wait_for_job(httplib::Client& client, const std::string& id) {
  json job;
  for (int i = 0; i < 3000; ++i) {
    job = get_json(client, "/api/jobs/" + id).body;
    if (job["status"] != "queued" && job["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return job;
}

tide::pipeline::GenerationRequest a1111_request(const std::string& prompt, uint64_t seed, int steps) {
  tide::pipeline::GenerationRequest r;
  r.prompt = prompt;
  r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
  r.width = r.height = 32;
  r.steps = steps;
  r.guidance = 7;
  r.seed = seed;
  r.scheduler = "euler";
  return r;
}

TEST_F(ServerExtensions, DeepCacheIntervalGivesTheLibrarysPictureInA1111AndJobRequests) {
  ServerHarness harness(models());
  auto client = harness.client();
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(models() / "tiny");
  tide::pipeline::GenerationRequest expected_request = a1111_request("a lantern", 17, 6);
  expected_request.cache_interval = 3;
  const at::Tensor expected = direct_image(*pipe, expected_request);
  const at::Tensor uncached = direct_image(*pipe, a1111_request("a lantern", 17, 6));
  ASSERT_FALSE(at::equal(expected, uncached)) << "DeepCache must change the picture for this test to mean anything";

  const json request = {{"prompt", "a lantern"}, {"seed", 17}, {"steps", 6}, {"cfg_scale", 7}, {"width", 32},
                        {"height", 32}, {"sampler_name", "Euler"}, {tide::server::a1111::kCacheIntervalField, 3}};
  const auto reply = post_json(*client, "/sdapi/v1/txt2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  const auto png = decode_b64_png(reply.body["images"][0]);
  EXPECT_TRUE(at::equal(png.rgb8, expected));
  EXPECT_NE(png.text.at("parameters").find(", DeepCache interval: 3,"), std::string::npos) << png.text.at("parameters");
  EXPECT_EQ(reply.body["parameters"]["tide_cache_interval"], 3);
  // Left out, it is off (and not in the infotext).
  json plain = request;
  plain.erase("tide_cache_interval");
  const auto off = post_json(*client, "/sdapi/v1/txt2img", plain.dump());
  ASSERT_EQ(off.status, 200) << off.raw;
  EXPECT_TRUE(at::equal(decode_b64_png(off.body["images"][0]).rgb8, uncached));
  EXPECT_EQ(decode_b64_png(off.body["images"][0]).text.at("parameters").find("DeepCache"), std::string::npos);

  // tide's job API: the field is cache_interval.
  const json job = {{"prompt", "a lantern"}, {"seed", 17}, {"steps", 6}, {"guidance", 7}, {"width", 32},
                    {"height", 32}, {"scheduler", "euler"}, {"cache_interval", 3}};
  const auto created = post_json(*client, "/api/jobs", job.dump());
  ASSERT_EQ(created.status, 202) << created.raw;
  const json done = wait_for_job(*client, created.body["id"]);
  ASSERT_EQ(done["status"], "done") << done.dump();
  EXPECT_TRUE(at::equal(decode_b64_png(done["images"][0]).rgb8, expected));
  EXPECT_EQ(done["request"]["cache_interval"], 3);
  EXPECT_EQ(done["infotexts"][0], png.text.at("parameters")) << "the job API writes the A1111 API's infotext";

  // Bad values: a 422 naming the field, nothing queued.
  for (const json& bad : {json(0), json(-2), json(151), json("often"), json(2.5)}) {
    json a = request;
    a["tide_cache_interval"] = bad;
    const auto refused = post_json(*client, "/sdapi/v1/txt2img", a.dump());
    EXPECT_EQ(refused.status, 422) << bad << " -> " << refused.raw;
    EXPECT_EQ(refused.body["detail"][0]["loc"][1], "tide_cache_interval") << refused.raw;
    json j = job;
    j["cache_interval"] = bad;
    const auto refused_job = post_json(*client, "/api/jobs", j.dump());
    EXPECT_EQ(refused_job.status, 422) << bad << " -> " << refused_job.raw;
    EXPECT_EQ(refused_job.body["error"]["field"], "cache_interval") << refused_job.raw;
  }
  json zero = request;
  zero["tide_cache_interval"] = 0;
  const auto limit = post_json(*client, "/sdapi/v1/txt2img", zero.dump());
  EXPECT_NE(limit.raw.find("between 1 and 150"), std::string::npos) << limit.raw;
}

TEST_F(ServerExtensions, InpaintingInfotextRecordsDenoisingStrengthAndMaskBlur) {
  ServerHarness harness(models());
  auto client = harness.client();
  const at::Tensor ramp = at::arange(32, at::kFloat) * 8;
  const at::Tensor init = at::stack({ramp.view({1, 32}).expand({32, 32}), ramp.view({32, 1}).expand({32, 32}),
                                     at::full({32, 32}, 90.0f)}, 2).to(at::kByte);  // [32, 32, 3]
  at::Tensor mask = at::zeros({32, 32, 3}, at::kByte);
  mask.narrow(1, 0, 16).fill_(255);  // the left half is repainted
  using tide::server::base64_encode;
  const json request = {{"prompt", "a boat"}, {"seed", 4}, {"steps", 5}, {"cfg_scale", 7}, {"width", 32},
                        {"height", 32}, {"sampler_name", "Euler"}, {"denoising_strength", 0.6}, {"mask_blur", 2},
                        {"init_images", {"data:image/png;base64," + base64_encode(tide::io::encode_png(init))}},
                        {"mask", base64_encode(tide::io::encode_png(mask))}};
  const auto reply = post_json(*client, "/sdapi/v1/img2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  const auto png = decode_b64_png(reply.body["images"][0]);

  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(models() / "tiny");
  tide::pipeline::GenerationRequest r = a1111_request("a boat", 4, 5);
  r.init_image = init;
  r.mask = mask;
  r.strength = 0.6;
  r.mask_blur = 2;
  EXPECT_TRUE(at::equal(png.rgb8, direct_image(*pipe, r)));
  const std::string& parameters = png.text.at("parameters");
  EXPECT_NE(parameters.find(", Denoising strength: 0.6, Mask blur: 2,"), std::string::npos) << parameters;
  EXPECT_EQ(json::parse(reply.body["info"].get<std::string>())["infotexts"][0], parameters);

  // Without a mask: image-to-image, its strength recorded and no mask blur.
  json no_mask = request;
  no_mask.erase("mask");
  const auto img2img = post_json(*client, "/sdapi/v1/img2img", no_mask.dump());
  ASSERT_EQ(img2img.status, 200) << img2img.raw;
  const std::string img2img_text = decode_b64_png(img2img.body["images"][0]).text.at("parameters");
  EXPECT_NE(img2img_text.find(", Denoising strength: 0.6,"), std::string::npos) << img2img_text;
  EXPECT_EQ(img2img_text.find("Mask blur"), std::string::npos) << img2img_text;
  // Text to image has neither.
  const auto txt2img = post_json(*client, "/sdapi/v1/txt2img", json({{"prompt", "a boat"}, {"steps", 2}, {"width", 32},
                                                                       {"height", 32}}).dump());
  ASSERT_EQ(txt2img.status, 200) << txt2img.raw;
  EXPECT_EQ(decode_b64_png(txt2img.body["images"][0]).text.at("parameters").find("Denoising"), std::string::npos);
}

// The same generation through /sdapi/v1/txt2img and /api/jobs: the same infotext, the prompt as sent with its
// <lora:...> tags and "Lora hashes" of the files, in GET /api/jobs/{id} and in the events' final `done`.
TEST(ServerJobInfotexts, RecordLoraHashesAsTheA1111ApiDoes) {
  TIDE_REQUIRE_FIXTURES();
  TempDir dir;
  fs::create_directories(dir.path() / "models");
  fs::create_directories(dir.path() / "loras");
  fs::create_directory_symlink(pipeline_dir("sd1-tiny"), dir.path() / "models" / "sd1-tiny");
  const fs::path lora_file = fixtures_dir() / "features" / "lora" / "lora_sd1_kohya_m1" / "lora.safetensors";
  fs::create_symlink(lora_file, dir.path() / "loras" / "knight.safetensors");
  tide::server::ServerOptions options;
  options.lora_dirs = {dir.path() / "loras"};
  ServerHarness harness(dir.path() / "models", options);
  auto client = harness.client();

  const std::string tagged = "a portrait of a knight <lora:knight:0.8>";
  const auto a1111 = post_json(*client, "/sdapi/v1/txt2img",
                               json({{"prompt", tagged}, {"seed", 21}, {"steps", 3}, {"cfg_scale", 7}, {"width", 64},
                                     {"height", 64}, {"sampler_name", "Euler"}}).dump());
  ASSERT_EQ(a1111.status, 200) << a1111.raw;
  const std::string expected = json::parse(a1111.body["info"].get<std::string>())["infotexts"][0];
  const std::string hashes = "Lora hashes: \"knight: " + tide::runtime::sha256_file(lora_file).substr(0, 12) + "\"";
  ASSERT_NE(expected.find(hashes), std::string::npos) << expected;
  ASSERT_EQ(expected.rfind(tagged + "\n", 0), 0u) << expected;

  const json job = {{"prompt", tagged}, {"seed", 21}, {"steps", 3}, {"guidance", 7}, {"width", 64}, {"height", 64},
                    {"scheduler", "euler"}};
  const auto created = post_json(*client, "/api/jobs", job.dump());
  ASSERT_EQ(created.status, 202) << created.raw;
  const std::string id = created.body["id"];
  const json done = wait_for_job(*client, id);
  ASSERT_EQ(done["status"], "done") << done.dump();
  EXPECT_EQ(done["infotexts"][0], expected);
  EXPECT_EQ(decode_b64_png(done["images"][0]).text.at("parameters"), expected);
  EXPECT_TRUE(at::equal(decode_b64_png(done["images"][0]).rgb8, decode_b64_png(a1111.body["images"][0]).rgb8));

  // The event stream of the ended job: its steps, then `done` with the same infotext.
  const auto events = client->Get(("/api/jobs/" + id + "/events").c_str());
  ASSERT_TRUE(events);
  const size_t at = events->body.find("event: done\ndata: ");
  ASSERT_NE(at, std::string::npos) << events->body;
  const size_t start = at + std::string("event: done\ndata: ").size();
  const json final_event = json::parse(events->body.substr(start, events->body.find('\n', start) - start));
  EXPECT_EQ(final_event["infotexts"][0], expected);

  // Without tags: no "Lora hashes", in either API.
  json untagged = job;
  untagged["prompt"] = "a knight";
  const auto plain = post_json(*client, "/api/jobs", untagged.dump());
  ASSERT_EQ(plain.status, 202) << plain.raw;
  const json plain_done = wait_for_job(*client, plain.body["id"]);
  ASSERT_EQ(plain_done["status"], "done") << plain_done.dump();
  EXPECT_EQ(plain_done["infotexts"][0].get<std::string>().find("Lora hashes"), std::string::npos);
}

}  // namespace
