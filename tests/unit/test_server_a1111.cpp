// tide serve's AUTOMATIC1111 API against a real server on a loopback port: txt2img pictures equal the pipeline's
// own for the same settings, seeds, infotexts, the lists clients probe, png-info and the 422s of bad requests.
#include <gtest/gtest.h>

#include "server_harness.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace tide::testing;

class ServerA1111 : public TinyModelsSuite {
 protected:
  static void SetUpTestSuite() {
    TinyModelsSuite::SetUpTestSuite();
    harness_ = new ServerHarness(models());
    pipe_ = tide::pipeline::StableDiffusionPipeline::from_folder(dir_->path() / "models" / "tiny").release();
  }
  static void TearDownTestSuite() {
    delete harness_;
    delete pipe_;
    TinyModelsSuite::TearDownTestSuite();
  }
  static tide::pipeline::GenerationRequest a1111_request(const std::string& prompt, uint64_t seed) {
    tide::pipeline::GenerationRequest r;
    r.prompt = prompt;
    r.negative_prompt = "blurry";
    r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
    r.width = r.height = 32;
    r.steps = 3;
    r.guidance = 5;
    r.seed = seed;
    r.scheduler = "euler";
    return r;
  }
  static inline ServerHarness* harness_ = nullptr;
  static inline tide::pipeline::StableDiffusionPipeline* pipe_ = nullptr;
};

TEST_F(ServerA1111, Txt2ImgGivesThePipelinesPicturesWithSeedsAndInfotexts) {
  auto client = harness_->client();
  const json request = {{"prompt", "a (red:1.2) robot"}, {"negative_prompt", "blurry"}, {"seed", 42}, {"steps", 3},
                        {"cfg_scale", 5}, {"width", 32}, {"height", 32}, {"batch_size", 2}, {"sampler_name", "Euler"},
                        {"override_settings", {{"sd_model_checkpoint", "tiny"}}}, {"some_future_field", 1}};
  const auto reply = post_json(*client, "/sdapi/v1/txt2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  ASSERT_EQ(reply.body["images"].size(), 2u);
  const json info = json::parse(reply.body["info"].get<std::string>());
  EXPECT_EQ(info["all_seeds"], json({42, 43}));
  EXPECT_EQ(info["seed"], 42);
  EXPECT_EQ(info["sd_model_name"], "tiny");
  EXPECT_EQ(info["sampler_name"], "Euler");
  EXPECT_EQ(info["width"], 32);
  EXPECT_FALSE(info["interrupted"].get<bool>());
  EXPECT_TRUE(info["warnings"].empty());
  EXPECT_EQ(reply.body["parameters"]["seed"], 42);
  EXPECT_EQ(reply.body["parameters"]["n_iter"], 1);  // A1111's default filled in
  for (int i = 0; i < 2; ++i) {
    const auto png = decode_b64_png(reply.body["images"][i]);
    // Image i is the picture of seed 42 + i on its own, as `tide generate --seed` makes it.
    const at::Tensor expected = direct_image(*pipe_, a1111_request("a (red:1.2) robot", 42 + i));
    ASSERT_EQ(png.rgb8.sizes(), expected.sizes());
    EXPECT_TRUE(at::equal(png.rgb8, expected)) << "image " << i << " differs from the pipeline's";
    const std::string text = png.text.at("parameters");
    EXPECT_EQ(text, info["infotexts"][i].get<std::string>());
    EXPECT_NE(text.find("a (red:1.2) robot\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: " +
                        std::to_string(42 + i) + ", Size: 32x32, Model: tiny"),
              std::string::npos)
        << text;
  }
  // The two seeds give different pictures.
  EXPECT_FALSE(at::equal(decode_b64_png(reply.body["images"][0]).rgb8, decode_b64_png(reply.body["images"][1]).rgb8));
}

TEST_F(ServerA1111, SamplerAndScheduleNamesMapOntoTidesSchedulers) {
  auto client = harness_->client();
  auto run = [&](const json& extra) {
    json request = {{"prompt", "a fox"}, {"seed", 5}, {"steps", 3}, {"cfg_scale", 5}, {"width", 32}, {"height", 32}};
    if (extra.is_object()) request.update(extra);  // run({}) passes null
    const auto reply = post_json(*client, "/sdapi/v1/txt2img", request.dump());
    EXPECT_EQ(reply.status, 200) << reply.raw;
    return reply.status == 200 ? decode_b64_png(reply.body["images"][0]) : tide::io::PngImage{};
  };
  auto expected = [&](const std::string& scheduler, bool karras) {
    auto r = a1111_request("a fox", 5);
    r.negative_prompt = "";
    r.scheduler = scheduler;
    r.scheduler_options.karras = karras;
    return direct_image(*pipe_, r);
  };
  // Current A1111: sampler + schedule type; "Automatic" is Karras for DPM++ 2M, as in A1111 >= 1.9.
  const auto dpm = run({{"sampler_name", "DPM++ 2M"}, {"scheduler", "Karras"}});
  EXPECT_TRUE(at::equal(dpm.rgb8, expected("dpm++2m", true)));
  EXPECT_NE(dpm.text.at("parameters").find("Sampler: DPM++ 2M, Schedule type: Karras"), std::string::npos);
  EXPECT_TRUE(at::equal(run({{"sampler_name", "DPM++ 2M"}}).rgb8, expected("dpm++2m", true)));
  EXPECT_TRUE(at::equal(run({{"sampler_name", "DPM++ 2M"}, {"scheduler", "Uniform"}}).rgb8, expected("dpm++2m", false)));
  // Legacy names carry the schedule; sampler_index is the older field.
  EXPECT_TRUE(at::equal(run({{"sampler_index", "DPM++ 2M Karras"}}).rgb8, expected("dpm++2m", true)));
  EXPECT_TRUE(at::equal(run({{"sampler_name", "Euler a"}}).rgb8, expected("euler-a", false)));
  EXPECT_TRUE(at::equal(run({{"sampler_name", "UniPC"}}).rgb8, expected("unipc", false)));
  EXPECT_TRUE(at::equal(run({{"sampler_name", "DDIM"}}).rgb8, expected("ddim", false)));
  // The API's default sampler is Euler.
  EXPECT_TRUE(at::equal(run({}).rgb8, expected("euler", false)));
  // A1111's Token Merging setting: tomesd without random destinations.
  const auto merged = run({{"override_settings", {{"token_merging_ratio", 0.5}}}});
  auto r = a1111_request("a fox", 5);
  r.negative_prompt = "";
  r.tome.ratio = 0.5;
  r.tome.use_rand = false;
  EXPECT_TRUE(at::equal(merged.rgb8, direct_image(*pipe_, r)));
  EXPECT_FALSE(at::equal(merged.rgb8, expected("euler", false)));
  EXPECT_NE(merged.text.at("parameters").find("Token merging ratio: 0.5"), std::string::npos);
}

TEST_F(ServerA1111, SeedMinusOneDrawsASeedThatReproducesThePicture) {
  auto client = harness_->client();
  json request = {{"prompt", "a fox"}, {"seed", -1}, {"steps", 2}, {"width", 32}, {"height", 32}};
  const auto first = post_json(*client, "/sdapi/v1/txt2img", request.dump());
  ASSERT_EQ(first.status, 200) << first.raw;
  const json info = json::parse(first.body["info"].get<std::string>());
  const int64_t seed = info["seed"].get<int64_t>();
  EXPECT_GE(seed, 0);
  EXPECT_EQ(info["all_seeds"][0].get<int64_t>(), seed);
  EXPECT_NE(info["infotexts"][0].get<std::string>().find("Seed: " + std::to_string(seed) + ","), std::string::npos);
  request["seed"] = seed;
  const auto again = post_json(*client, "/sdapi/v1/txt2img", request.dump());
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.body["images"][0], first.body["images"][0]);  // the same PNG bytes
}

TEST_F(ServerA1111, BadRequestsGet422WithTheFieldNamed) {
  auto client = harness_->client();
  const auto not_json = post_json(*client, "/sdapi/v1/txt2img", "{\"prompt\": ");
  EXPECT_EQ(not_json.status, 422);
  ASSERT_TRUE(not_json.body.contains("detail")) << not_json.raw;

  auto expect_422 = [&](const json& request, const std::string& text) {
    const auto reply = post_json(*client, "/sdapi/v1/txt2img", request.dump());
    EXPECT_EQ(reply.status, 422) << request.dump() << " -> " << reply.raw;
    EXPECT_NE(reply.raw.find(text), std::string::npos) << request.dump() << " -> " << reply.raw;
  };
  expect_422({{"prompt", "x"}, {"steps", "many"}}, "\"steps\"");
  expect_422({{"prompt", "x"}, {"steps", 0}}, "steps must be between 1 and");
  expect_422({{"prompt", "x"}, {"width", 100000}}, "width must be between 1 and 2048");
  expect_422({{"prompt", "x"}, {"cfg_scale", "strong"}}, "cfg_scale");
  expect_422({{"prompt", json::array({"a", "b"})}}, "\"prompt\"");  // numbers become strings, as in pydantic
  expect_422({{"prompt", "x"}, {"batch_size", 16}, {"n_iter", 2}}, "at most 16");
  // Unknown samplers name what exists.
  expect_422({{"prompt", "x"}, {"sampler_name", "DPM++ 2M SDE"}}, "Euler a");
  expect_422({{"prompt", "x"}, {"sampler_name", "Euler a"}, {"scheduler", "Karras"}}, "no Karras schedule");
  expect_422({{"prompt", "x"}, {"scheduler", "Exponential"}}, "Automatic, Uniform, Karras");
  expect_422({{"prompt", "x"}, {"override_settings", {{"sd_model_checkpoint", "nope"}}}}, "known models: tiny");
  // Found by the pipeline: the tiny model's VAE factor is 2.
  expect_422({{"prompt", "x"}, {"width", 33}, {"height", 32}, {"steps", 1}}, "multiples of 2");
  // The server keeps serving.
  const auto ok = post_json(*client, "/sdapi/v1/txt2img",
                            json({{"prompt", "x"}, {"steps", 1}, {"width", 32}, {"height", 32}}).dump());
  EXPECT_EQ(ok.status, 200);
}

TEST_F(ServerA1111, UnimplementedFieldsAreNamedInWarnings) {
  auto client = harness_->client();
  const json request = {{"prompt", "x"}, {"steps", 1}, {"width", 32}, {"height", 32}, {"enable_hr", true},
                        {"restore_faces", true}, {"override_settings", {{"eta_noise_seed_delta", 31337}}}};
  const auto reply = post_json(*client, "/sdapi/v1/txt2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  const std::string warnings = json::parse(reply.body["info"].get<std::string>())["warnings"].dump();
  for (const char* name : {"enable_hr", "restore_faces", "override_settings.eta_noise_seed_delta"})
    EXPECT_NE(warnings.find(name), std::string::npos) << warnings;
  // send_images false: no images, still the infotexts.
  const auto quiet = post_json(*client, "/sdapi/v1/txt2img",
                               json({{"prompt", "x"}, {"steps", 1}, {"width", 32}, {"height", 32}, {"send_images", false}}).dump());
  ASSERT_EQ(quiet.status, 200);
  EXPECT_TRUE(quiet.body["images"].empty());
  EXPECT_EQ(json::parse(quiet.body["info"].get<std::string>())["infotexts"].size(), 1u);
}

TEST_F(ServerA1111, ListsOptionsAndPngInfo) {
  auto client = harness_->client();
  const auto models = get_json(*client, "/sdapi/v1/sd-models");
  ASSERT_EQ(models.status, 200);
  ASSERT_EQ(models.body.size(), 1u);
  EXPECT_EQ(models.body[0]["model_name"], "tiny");
  EXPECT_EQ(models.body[0]["title"], "tiny");
  const auto samplers = get_json(*client, "/sdapi/v1/samplers");
  ASSERT_EQ(samplers.status, 200);
  std::vector<std::string> names;
  for (const auto& s : samplers.body) names.push_back(s["name"].get<std::string>());
  for (const char* name : {"Euler a", "Euler", "LMS", "Heun", "DPM++ 2M", "DDIM", "PLMS", "UniPC"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  EXPECT_EQ(get_json(*client, "/sdapi/v1/schedulers").body.size(), 3u);
  const auto options = get_json(*client, "/sdapi/v1/options");
  EXPECT_EQ(options.body["sd_model_checkpoint"], "tiny");
  EXPECT_EQ(post_json(*client, "/sdapi/v1/options", R"({"sd_model_checkpoint": "tiny"})").status, 200);
  const auto unknown = post_json(*client, "/sdapi/v1/options", R"({"sd_model_checkpoint": "other"})");
  EXPECT_EQ(unknown.status, 422);
  EXPECT_NE(unknown.raw.find("known models: tiny"), std::string::npos);
  for (const char* path : {"/sdapi/v1/sd-vae", "/sdapi/v1/upscalers", "/sdapi/v1/latent-upscale-modes", "/sdapi/v1/loras",
                           "/sdapi/v1/prompt-styles"}) {
    const auto list = get_json(*client, path);
    EXPECT_EQ(list.status, 200) << path;
    EXPECT_TRUE(list.body.is_array()) << path;
  }
  EXPECT_TRUE(get_json(*client, "/sdapi/v1/embeddings").body.contains("loaded"));
  EXPECT_TRUE(get_json(*client, "/sdapi/v1/memory").body["ram"]["total"].get<double>() > 0);
  EXPECT_EQ(post_json(*client, "/sdapi/v1/refresh-checkpoints", "").status, 200);

  const auto made = post_json(*client, "/sdapi/v1/txt2img",
                              json({{"prompt", "a cat, sitting"}, {"negative_prompt", "dog"}, {"seed", 9}, {"steps", 1},
                                    {"width", 32}, {"height", 32}}).dump());
  ASSERT_EQ(made.status, 200);
  const auto info = post_json(*client, "/sdapi/v1/png-info", json({{"image", "data:image/png;base64," + made.body["images"][0].get<std::string>()}}).dump());
  ASSERT_EQ(info.status, 200) << info.raw;
  EXPECT_EQ(info.body["parameters"]["Prompt"], "a cat, sitting");
  EXPECT_EQ(info.body["parameters"]["Negative prompt"], "dog");
  EXPECT_EQ(info.body["parameters"]["Seed"], "9");
  EXPECT_EQ(info.body["parameters"]["Size"], "32x32");
  EXPECT_EQ(info.body["parameters"]["Model"], "tiny");
  EXPECT_EQ(post_json(*client, "/sdapi/v1/png-info", R"({"image": "bm90IGEgcG5n"})").status, 422);
}

TEST_F(ServerA1111, TheWebPageIsServedAndCallsTheApi) {
  auto client = harness_->client();
  const auto page = client->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  for (const char* part : {"/sdapi/v1/txt2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt", "<progress", "download"})
    EXPECT_NE(page->body.find(part), std::string::npos) << part;
  EXPECT_EQ(get_json(*client, "/health").body["status"], "ok");
}

}  // namespace

namespace {

// img2img and inpainting through /sdapi/v1/img2img equal the pipeline's own runs with that image and mask.
TEST_F(ServerA1111, Img2ImgAndInpaintingGiveThePipelinesPictures) {
  auto client = harness_->client();
  const at::Tensor init = direct_image(*pipe_, a1111_request("a red robot", 5));  // [32, 32, 3]
  at::Tensor mask = at::zeros({32, 32, 3}, at::kByte);
  mask.narrow(1, 16, 16).fill_(255);  // repaint the right half
  const std::string init_b64 = tide::server::base64_encode(tide::io::encode_png(init));
  json request = {{"prompt", "a blue robot"}, {"negative_prompt", "blurry"}, {"seed", 9}, {"steps", 3},
                  {"cfg_scale", 5}, {"width", 32}, {"height", 32}, {"sampler_name", "Euler"},
                  {"init_images", {"data:image/png;base64," + init_b64}}, {"denoising_strength", 0.6}};
  auto reply = post_json(*client, "/sdapi/v1/img2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  auto expected_request = a1111_request("a blue robot", 9);
  expected_request.init_image = init;
  expected_request.strength = 0.6;
  EXPECT_TRUE(at::equal(decode_b64_png(reply.body["images"][0]).rgb8, direct_image(*pipe_, expected_request)));
  EXPECT_EQ(json::parse(reply.body["info"].get<std::string>())["denoising_strength"], 0.6);

  request["mask"] = tide::server::base64_encode(tide::io::encode_png(mask));
  request["mask_blur"] = 0;
  reply = post_json(*client, "/sdapi/v1/img2img", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  expected_request.mask = mask;
  EXPECT_TRUE(at::equal(decode_b64_png(reply.body["images"][0]).rgb8, direct_image(*pipe_, expected_request)));

  request.erase("mask");
  request["init_images"] = {"not base64!"};
  EXPECT_EQ(post_json(*client, "/sdapi/v1/img2img", request.dump()).status, 422);
  request.erase("init_images");
  EXPECT_EQ(post_json(*client, "/sdapi/v1/img2img", request.dump()).status, 422);
  request["init_images"] = {init_b64};
  request["denoising_strength"] = 1.5;
  EXPECT_EQ(post_json(*client, "/sdapi/v1/img2img", request.dump()).status, 422);
}

}  // namespace
