// `tide serve` as a process: it starts on a free port, answers the A1111 API and the page, and stops cleanly
// on SIGTERM and SIGINT; bad flags are refused before it listens.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "cli_runner.h"
#include "serve_process.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/server/base64.h"

namespace {
using nlohmann::json;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::ServeProcess;

class CliServe : public tide::testing::TinyPipelineSuite {};

TEST_F(CliServe, ServesARequestAndStopsCleanlyOnSigtermAndSigint) {
  for (const int signal : {SIGTERM, SIGINT}) {
    ServeProcess serve({"--models", model().parent_path().string(), "--port", "0", "--threads", "1"});
    ASSERT_GT(serve.port(), 0) << "tide serve did not print its address";
    httplib::Client client("127.0.0.1", serve.port());
    client.set_read_timeout(300, 0);
    const auto models = client.Get("/sdapi/v1/sd-models");
    ASSERT_TRUE(models);
    EXPECT_EQ(json::parse(models->body)[0]["model_name"], "model");
    const json request = {{"prompt", "a fox"}, {"seed", 3}, {"steps", 2}, {"width", 32}, {"height", 32}};
    const auto reply = client.Post("/sdapi/v1/txt2img", request.dump(), "application/json");
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->status, 200) << reply->body;
    const json body = json::parse(reply->body);
    ASSERT_EQ(body["images"].size(), 1u);
    if (signal == SIGTERM) {
      // Same seed, same pixels: the A1111 API's defaults (Euler, CFG 7) as `tide generate` flags.
      tide::testing::TempDir out;
      const auto generated = run_tide("generate --model " + quote(model()) + " --prompt 'a fox' --prompt-syntax a1111 "
                                      "--seed 3 --steps 2 --width 32 --height 32 --scheduler euler --guidance 7 "
                                      "--threads 1 --output " + quote(out / "fox.png"));
      ASSERT_EQ(generated.code, 0) << generated.output;
      const auto served = tide::io::decode_png(tide::server::base64_decode(body["images"][0].get<std::string>()));
      EXPECT_TRUE(at::equal(served.rgb8, tide::io::read_png(out / "fox.png").rgb8));
    }
    const auto page = client.Get("/");
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, 200);
    EXPECT_EQ(serve.stop(signal), 0) << "signal " << signal;
  }
}

TEST_F(CliServe, HelpAndBadFlags) {
  const auto help = run_tide("serve --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--models", "--model", "--host", "--port", "--api-key-file", "--max-queue", "--max-loaded"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
  const auto open = run_tide("serve --models " + quote(model().parent_path()) + " --host 0.0.0.0 --port 0");
  EXPECT_EQ(open.code, 1);
  EXPECT_NE(open.output.find("--api-key-file"), std::string::npos) << open.output;
  const auto missing = run_tide("serve --models /nonexistent/models --port 0");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("is not a folder"), std::string::npos) << missing.output;
  tide::testing::TempDir empty;
  const auto none = run_tide("serve --models " + quote(empty.path()) + " --no-hf-cache --port 0");
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.output.find("no models"), std::string::npos) << none.output;
  const auto key = run_tide("serve --models " + quote(model().parent_path()) + " --api-key-file /nonexistent/key --port 0");
  EXPECT_EQ(key.code, 1);
  EXPECT_NE(key.output.find("cannot read --api-key-file"), std::string::npos) << key.output;
}

// --image-url-lifetime: how long OpenAI's response_format "url" pictures stay. Refused outside 1 s to a week; a
// picture of a 1-second server is gone once that second has passed, one of an hour's server is still there.
TEST_F(CliServe, ImageUrlLifetimeFlag) {
  const auto help = run_tide("serve --help");
  EXPECT_NE(help.output.find("--image-url-lifetime SECONDS"), std::string::npos) << help.output;
  for (const char* bad : {"0", "-5", "604801", "soon"}) {
    const auto refused = run_tide("serve --models " + quote(model().parent_path()) + " --port 0 --image-url-lifetime " + bad);
    EXPECT_EQ(refused.code, 1) << bad;
    EXPECT_NE(refused.output.find("--image-url-lifetime"), std::string::npos) << bad << ": " << refused.output;
  }
  auto url_after_two_seconds = [&](const std::string& lifetime) {
    ServeProcess serve({"--models", model().parent_path().string(), "--port", "0", "--threads", "1",
                        "--image-url-lifetime", lifetime});
    EXPECT_GT(serve.port(), 0) << "tide serve did not start with --image-url-lifetime " << lifetime;
    httplib::Client client("127.0.0.1", serve.port());
    client.set_read_timeout(300, 0);
    const json request = {{"prompt", "a fox"}, {"size", "32x32"}, {"steps", 2}, {"response_format", "url"}};
    const auto reply = client.Post("/v1/images/generations", request.dump(), "application/json");
    EXPECT_TRUE(reply && reply->status == 200) << (reply ? reply->body : "no reply");
    if (!reply || reply->status != 200) return 0;
    const std::string url = json::parse(reply->body)["data"][0]["url"];
    const std::string path = url.substr(url.find("/v1/images/files/"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past a 1-second lifetime, whatever the load
    const auto fetched = client.Get(path.c_str());
    EXPECT_EQ(serve.stop(SIGTERM), 0);
    return fetched ? fetched->status : 0;
  };
  EXPECT_EQ(url_after_two_seconds("1"), 404);
  EXPECT_EQ(url_after_two_seconds("3600"), 200);
}

}  // namespace
