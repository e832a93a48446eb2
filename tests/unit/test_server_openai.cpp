// tide serve's OpenAI images API and API-key authentication, against a real server on a loopback port.
#include <gtest/gtest.h>

#include "server_harness.h"

namespace {
using nlohmann::json;
using namespace tide::testing;

class ServerOpenAI : public TinyModelsSuite {};

TEST_F(ServerOpenAI, GenerationsGiveThePipelinesPictures) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  const json request = {{"model", "tiny"}, {"prompt", "a red fox"}, {"n", 2}, {"size", "32x32"},
                        {"response_format", "b64_json"}, {"seed", 7}, {"steps", 3}, {"sampler", "Euler"}};
  const auto reply = post_json(*client, "/v1/images/generations", request.dump());
  ASSERT_EQ(reply.status, 200) << reply.raw;
  ASSERT_EQ(reply.body["data"].size(), 2u);
  EXPECT_GT(reply.body["created"].get<int64_t>(), 0);
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(dir_->path() / "models" / "tiny");
  for (int i = 0; i < 2; ++i) {
    tide::pipeline::GenerationRequest r;
    r.prompt = "a red fox";
    r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
    r.width = r.height = 32;
    r.steps = 3;
    r.guidance = 7;  // the endpoint's default cfg_scale
    r.seed = 7 + i;
    r.scheduler = "euler";
    const auto png = decode_b64_png(reply.body["data"][i]["b64_json"]);
    EXPECT_TRUE(at::equal(png.rgb8, direct_image(*pipe, r))) << "image " << i;
    EXPECT_EQ(reply.body["data"][i]["seed"], 7 + i);
    EXPECT_NE(png.text.at("parameters").find("Seed: " + std::to_string(7 + i)), std::string::npos);
  }
}

TEST_F(ServerOpenAI, BadRequestsGetOpenAIErrors) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto expect = [&](const std::string& body, int status, const std::string& text) {
    const auto reply = post_json(*client, "/v1/images/generations", body);
    EXPECT_EQ(reply.status, status) << body << " -> " << reply.raw;
    ASSERT_TRUE(reply.body.contains("error")) << reply.raw;
    EXPECT_NE(reply.body["error"]["message"].get<std::string>().find(text), std::string::npos) << reply.raw;
  };
  expect("{\"prompt\": ", 400, "parse");
  expect(R"({"size": "32x32"})", 400, "prompt is required");
  expect(R"({"prompt": "x", "response_format": "png"})", 400, "b64_json or url");
  expect(R"({"prompt": "x", "size": "big"})", 400, "WIDTHxHEIGHT");
  expect(R"({"prompt": "x", "size": "9000x9000"})", 400, "at most 2048");
  expect(R"({"prompt": "x", "n": 0})", 400, "n must be between");
  expect(R"({"prompt": "x", "n": "two"})", 400, "'n'");
  expect(R"({"prompt": "x", "model": "dall-e-3"})", 404, "tiny");
  expect(R"({"prompt": "x", "sampler": "DPM++ SDE"})", 400, "not found");
  expect(R"({"prompt": "x", "stream": "yes"})", 400, "'stream'");

  const auto models = get_json(*client, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["object"], "list");
  ASSERT_EQ(models.body["data"].size(), 1u);
  EXPECT_EQ(models.body["data"][0]["id"], "tiny");
}

TEST_F(ServerOpenAI, AnApiKeyIsRequiredOnEveryApiRoute) {
  tide::server::ServerOptions options;
  options.api_key = "s3cret-key";
  ServerHarness harness(dir_->path() / "models", options);
  auto client = harness.client();
  for (const char* path : {"/sdapi/v1/sd-models", "/sdapi/v1/progress", "/v1/models", "/sdapi/v1/options"}) {
    EXPECT_EQ(get_json(*client, path).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Bearer wrong"}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Bearer s3cret-key-longer"}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Basic czNjcmV0LWtleQ=="}}).status, 401) << path;
    EXPECT_EQ(get_json(*client, path, {{"Authorization", "Bearer s3cret-key"}}).status, 200) << path;
  }
  const std::string body = json({{"prompt", "x"}, {"steps", 1}, {"width", 32}, {"height", 32}}).dump();
  EXPECT_EQ(post_json(*client, "/sdapi/v1/txt2img", body).status, 401);
  EXPECT_EQ(post_json(*client, "/sdapi/v1/interrupt", "").status, 401);
  EXPECT_EQ(post_json(*client, "/sdapi/v1/txt2img", body, {{"Authorization", "Bearer s3cret-key"}}).status, 200);
  // The page itself holds no data; it asks for the key when the API answers 401.
  const auto page = client->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_TRUE(tide::server::constant_time_equal("abc", "abc"));
  EXPECT_FALSE(tide::server::constant_time_equal("abc", "abd"));
  EXPECT_FALSE(tide::server::constant_time_equal("abc", "abcd"));
}

TEST(ServerBase64, RoundTripsAndRejectsJunk) {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(tide::server::base64_decode(tide::server::base64_encode(s)), s);
  EXPECT_EQ(tide::server::base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(tide::server::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(tide::server::base64_decode("data:image/png;base64,Zm9v"), "foo");
  EXPECT_THROW(tide::server::base64_decode("Zm9v!"), tide::Error);
}

}  // namespace
