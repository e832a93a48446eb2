// tide serve's job queue seen through the A1111 API: progress during a job (step i of n, preview), interrupt,
// skip, a full queue answering 503, cancelling a waiting job, two clients at once. The worker is held at a step
// by the queue's step observer, so nothing here depends on timing.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "server_harness.h"

namespace {
using nlohmann::json;
using namespace tide::testing;

class ServerQueue : public TinyModelsSuite {
 protected:
  static std::string job(int steps, int images = 1, const std::string& id = "") {
    json j = {{"prompt", "a fox"}, {"seed", 1}, {"steps", steps}, {"width", 32}, {"height", 32}, {"n_iter", images}};
    if (!id.empty()) j["force_task_id"] = id;
    return j.dump();
  }
  static std::future<JsonReply> post_async(const ServerHarness& harness, const std::string& body) {
    return std::async(std::launch::async, [&harness, body] {
      auto client = harness.client();
      return post_json(*client, "/sdapi/v1/txt2img", body);
    });
  }
};

TEST_F(ServerQueue, ProgressReportsTheStepAndAPreview) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto idle = get_json(*client, "/sdapi/v1/progress");
  EXPECT_EQ(idle.body["state"]["job_count"], 0);
  EXPECT_TRUE(idle.body["current_image"].is_null());

  StepGate gate(harness.server().queue(), 2);
  auto pending = post_async(harness, job(4, 2, "job-a"));
  gate.wait_reached();
  const auto p = get_json(*client, "/sdapi/v1/progress?id_task=job-a");
  ASSERT_EQ(p.status, 200);
  EXPECT_EQ(p.body["state"]["sampling_step"], 2);
  EXPECT_EQ(p.body["state"]["sampling_steps"], 4);
  EXPECT_EQ(p.body["state"]["job_count"], 2);
  EXPECT_EQ(p.body["state"]["job_no"], 0);
  EXPECT_EQ(p.body["state"]["job"], "job-a");
  EXPECT_DOUBLE_EQ(p.body["progress"].get<double>(), 0.25);  // step 2 of 4 of image 1 of 2
  EXPECT_GE(p.body["eta_relative"].get<double>(), 0.0);
  EXPECT_EQ(p.body["tide"]["queue_position"], 0);
  EXPECT_EQ(p.body["textinfo"], "Image 1 of 2, step 2 of 4");
  // The preview: the latents (32 px / VAE factor 2 = 16) mapped to RGB.
  ASSERT_TRUE(p.body["current_image"].is_string());
  const auto preview = decode_b64_png(p.body["current_image"]);
  EXPECT_EQ(preview.rgb8.size(0), 16);
  EXPECT_EQ(preview.rgb8.size(1), 16);
  gate.release();
  const auto done = pending.get();
  ASSERT_EQ(done.status, 200) << done.raw;
  EXPECT_EQ(done.body["images"].size(), 2u);
  EXPECT_EQ(get_json(*client, "/sdapi/v1/progress?id_task=job-a").body["tide"]["queue_position"], -1);
}

TEST_F(ServerQueue, InterruptStopsTheJobAndTheServerGoesOn) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  {
    StepGate gate(harness.server().queue(), 1);
    auto pending = post_async(harness, job(5, 3));
    gate.wait_reached();
    EXPECT_EQ(post_json(*client, "/sdapi/v1/interrupt", "").status, 200);
    EXPECT_TRUE(get_json(*client, "/sdapi/v1/progress").body["state"]["interrupted"].get<bool>());
    gate.release();
    const auto reply = pending.get();
    ASSERT_EQ(reply.status, 200) << reply.raw;
    EXPECT_TRUE(reply.body["images"].empty());  // stopped in the first of 3 pictures
    EXPECT_TRUE(json::parse(reply.body["info"].get<std::string>())["interrupted"].get<bool>());
  }
  const auto after = post_json(*client, "/sdapi/v1/txt2img", job(2));
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(after.body["images"].size(), 1u);
}

TEST_F(ServerQueue, SkipAbandonsOnePictureAndGoesOnWithTheNext) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  StepGate gate(harness.server().queue(), 1);
  auto pending = post_async(harness, job(3, 2));
  gate.wait_reached();
  EXPECT_EQ(post_json(*client, "/sdapi/v1/skip", "").status, 200);
  gate.release();
  const auto reply = pending.get();
  ASSERT_EQ(reply.status, 200) << reply.raw;
  ASSERT_EQ(reply.body["images"].size(), 1u);
  const json info = json::parse(reply.body["info"].get<std::string>());
  EXPECT_EQ(info["all_seeds"], json({2}));  // the second picture, seed 1 + 1
}

TEST_F(ServerQueue, AFullQueueAnswers503AndAWaitingJobCanBeCancelled) {
  tide::server::ServerOptions options;
  options.max_queue = 1;
  ServerHarness harness(dir_->path() / "models", options);
  auto& queue = harness.server().queue();
  queue.set_paused(true);  // nothing starts: the first job waits
  auto waiting = post_async(harness, job(2, 1, "first"));
  auto client = harness.client();
  while (queue.waiting() < 1) std::this_thread::yield();
  EXPECT_EQ(get_json(*client, "/sdapi/v1/progress?id_task=first").body["tide"]["queue_position"], 1);
  const auto full = post_json(*client, "/sdapi/v1/txt2img", job(2));
  EXPECT_EQ(full.status, 503) << full.raw;
  EXPECT_FALSE(full.header("Retry-After").empty());
  const auto openai = post_json(*client, "/v1/images/generations", R"({"prompt": "x", "size": "32x32"})");
  EXPECT_EQ(openai.status, 503);
  EXPECT_EQ(openai.body["error"]["code"], "queue_full");
  // Cancelling the waiting job answers its request at once.
  EXPECT_EQ(post_json(*client, "/sdapi/v1/interrupt", R"({"id_task": "first"})").status, 200);
  const auto cancelled = waiting.get();
  ASSERT_EQ(cancelled.status, 200) << cancelled.raw;
  EXPECT_TRUE(cancelled.body["images"].empty());
  EXPECT_TRUE(json::parse(cancelled.body["info"].get<std::string>())["interrupted"].get<bool>());
  queue.set_paused(false);
  EXPECT_EQ(post_json(*client, "/sdapi/v1/txt2img", job(1)).status, 200);
}

TEST_F(ServerQueue, TwoClientsAtOnceEachGetTheirOwnPictures) {
  ServerHarness harness(dir_->path() / "models");
  auto& queue = harness.server().queue();
  queue.set_paused(true);
  auto a = post_async(harness, json({{"prompt", "a fox"}, {"seed", 11}, {"steps", 2}, {"width", 32}, {"height", 32}}).dump());
  auto b = post_async(harness, json({{"prompt", "a fox"}, {"seed", 12}, {"steps", 2}, {"width", 32}, {"height", 32}}).dump());
  while (queue.waiting() < 2) std::this_thread::yield();
  queue.set_paused(false);
  const auto ra = a.get(), rb = b.get();
  ASSERT_EQ(ra.status, 200);
  ASSERT_EQ(rb.status, 200);
  EXPECT_EQ(json::parse(ra.body["info"].get<std::string>())["seed"], 11);
  EXPECT_EQ(json::parse(rb.body["info"].get<std::string>())["seed"], 12);
  EXPECT_NE(ra.body["images"][0], rb.body["images"][0]);
}

}  // namespace
