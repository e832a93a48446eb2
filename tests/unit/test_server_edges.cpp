// tide serve at its edges, against a real server on a loopback port: HTTP Basic authentication (A1111's
// --api-auth), CORS for named origins, OpenAI's url and stream response forms, JPEG inputs to img2img and
// <lora:NAME:WEIGHT> prompt tags.
#include <gtest/gtest.h>

#include "server_harness.h"
#include "tide/server/access_control.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace tide::testing;

class ServerEdges : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    fs::create_directories(dir_->path() / "models");
    make_tiny_pipeline(dir_->path() / "models" / "tiny");
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path models() { return dir_->path() / "models"; }
  static inline TempDir* dir_ = nullptr;
};

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

}  // namespace
