// `tide serve` under load, as a process: 8 clients send 200 txt2img requests at a server whose queue holds 4.
// Every request must end as 200 with exactly its own images (its seed, its count: none lost, duplicated or
// swapped between clients) or as 503 with Retry-After; /metrics must count what the clients saw, and the
// server's resident memory must come back to where it was before the load.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "cli_runner.h"
#include "serve_process.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/server/base64.h"

namespace {
using nlohmann::json;
using tide::testing::ServeProcess;

constexpr int kClients = 8;
constexpr int kRequestsPerClient = 25;
constexpr int kMaxQueue = 4;
constexpr int kSteps = 2;
constexpr int kSize = 32;

// Resident memory of process `pid` (VmRSS), in bytes; 0 if unknown.
int64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

// The value of one sample line of a Prometheus text page ("name value" or "name{labels} value"); -1 if absent.
double metric(const std::string& page, const std::string& name) {
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

// The request of client `client`'s `index`-th call: a seed no other request uses, one or two images.
json txt2img_request(int client, int index) {
  return {{"prompt", "a fox"}, {"seed", 1000 + client * kRequestsPerClient * 2 + index * 2},
          {"batch_size", 1 + index % 2}, {"steps", kSteps}, {"width", kSize}, {"height", kSize}};
}

// What one client saw.
struct ClientTally {
  int ok = 0, refused = 0, images = 0;
  std::vector<std::string> problems;  // anything but a right 200 or a 503 with Retry-After
  std::vector<int64_t> seeds;         // of the images it received
};

// Checks a 200 reply against its request: the asked number of PNGs of the asked size, and the request's seeds.
void check_images(const json& request, const std::string& body, ClientTally& tally) {
  const json reply = json::parse(body);
  const json info = json::parse(reply.at("info").get<std::string>());
  const int64_t seed = request["seed"];
  const size_t count = request["batch_size"];
  std::ostringstream problem;
  if (reply["images"].size() != count) problem << reply["images"].size() << " images for " << count << "; ";
  if (info["seed"] != seed) problem << "info seed " << info["seed"] << "; ";
  json expected_seeds = json::array();
  for (size_t i = 0; i < count; ++i) expected_seeds.push_back(seed + static_cast<int64_t>(i));
  if (info["all_seeds"] != expected_seeds) problem << "all_seeds " << info["all_seeds"] << "; ";
  for (const auto& image : reply["images"]) {
    const auto png = tide::io::decode_png(tide::server::base64_decode(image.get<std::string>()));
    if (png.rgb8.size(0) != kSize || png.rgb8.size(1) != kSize) problem << "image " << png.rgb8.sizes() << "; ";
  }
  if (!problem.str().empty()) {
    tally.problems.push_back("seed " + std::to_string(seed) + ": " + problem.str());
    return;
  }
  ++tally.ok;
  tally.images += static_cast<int>(count);
  for (const auto& s : info["all_seeds"]) tally.seeds.push_back(s.get<int64_t>());
}

ClientTally run_client(int port, int client) {
  ClientTally tally;
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(10, 0);
  http.set_read_timeout(60, 0);  // a request waits for at most the running job and 4 queued ones
  for (int i = 0; i < kRequestsPerClient; ++i) {
    const json request = txt2img_request(client, i);
    const auto reply = http.Post("/sdapi/v1/txt2img", request.dump(), "application/json");
    if (!reply) {
      tally.problems.push_back("seed " + request["seed"].dump() + ": " + httplib::to_string(reply.error()));
    } else if (reply->status == 503) {
      if (reply->has_header("Retry-After")) ++tally.refused;
      else tally.problems.push_back("503 without Retry-After: " + reply->body);
    } else if (reply->status == 200) {
      try {
        check_images(request, reply->body, tally);
      } catch (const std::exception& e) {
        tally.problems.push_back("seed " + request["seed"].dump() + ": unreadable reply: " + e.what());
      }
    } else {
      tally.problems.push_back("status " + std::to_string(reply->status) + ": " + reply->body);
    }
  }
  return tally;
}

class CliServeLoad : public tide::testing::TinyPipelineSuite {};

TEST_F(CliServeLoad, EveryRequestGetsItsImagesOrA503AndMemoryComesBack) {
  ServeProcess serve({"--models", model().parent_path().string(), "--port", "0", "--threads", "1", "--max-queue",
                      std::to_string(kMaxQueue)});
  ASSERT_GT(serve.port(), 0) << "tide serve did not print its address";
  httplib::Client http("127.0.0.1", serve.port());
  http.set_read_timeout(60, 0);

  // One request first: it loads the model, so the memory sampled after it is the server's working size.
  const json warm_up = {{"prompt", "a fox"}, {"seed", 1}, {"steps", kSteps}, {"width", kSize}, {"height", kSize}};
  const auto first = http.Post("/sdapi/v1/txt2img", warm_up.dump(), "application/json");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  const int64_t rss_before = resident_bytes(serve.pid());
  ASSERT_GT(rss_before, 0);

  std::vector<std::future<ClientTally>> clients;
  for (int c = 0; c < kClients; ++c) clients.push_back(std::async(std::launch::async, run_client, serve.port(), c));
  // The bound on the whole load: past it the server is killed, so every client's next call fails and ends it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  for (auto& c : clients) {
    if (c.wait_until(deadline) != std::future_status::ready) {
      ADD_FAILURE() << "the load did not finish in 180 s";
      serve.stop(SIGKILL);
      break;
    }
  }
  ClientTally all;
  std::multiset<int64_t> seeds;
  for (auto& c : clients) {
    ClientTally t = c.get();
    all.ok += t.ok;
    all.refused += t.refused;
    all.images += t.images;
    for (auto& p : t.problems) all.problems.push_back(std::move(p));
    seeds.insert(t.seeds.begin(), t.seeds.end());
  }
  for (const auto& p : all.problems) ADD_FAILURE() << p;
  ASSERT_TRUE(all.problems.empty()) << all.problems.size() << " requests went wrong";
  EXPECT_EQ(all.ok + all.refused, kClients * kRequestsPerClient);
  EXPECT_GT(all.ok, 0);
  EXPECT_GT(all.refused, 0) << "8 clients and a queue of 4: some requests must have been refused";
  EXPECT_EQ(std::set<int64_t>(seeds.begin(), seeds.end()).size(), seeds.size()) << "an image was returned twice";
  std::cout << "load: " << all.ok << " x 200, " << all.refused << " x 503, " << all.images << " images\n";

  // /metrics counts the warm-up and what the clients received; nothing failed, was cancelled or still waits.
  const auto scraped = http.Get("/metrics");
  ASSERT_TRUE(scraped);
  ASSERT_EQ(scraped->status, 200);
  const std::string& page = scraped->body;
  EXPECT_EQ(metric(page, "tide_jobs_total{status=\"done\"}"), all.ok + 1) << page;
  EXPECT_EQ(metric(page, "tide_jobs_total{status=\"failed\"}"), 0) << page;
  EXPECT_EQ(metric(page, "tide_jobs_total{status=\"cancelled\"}"), 0) << page;
  EXPECT_EQ(metric(page, "tide_images_total"), all.images + 1) << page;
  EXPECT_EQ(metric(page, "tide_steps_total"), (all.images + 1) * kSteps) << page;
  EXPECT_EQ(metric(page, "tide_queue_waiting"), 0) << page;
  EXPECT_EQ(metric(page, "tide_jobs_running"), 0) << page;

  const int64_t rss_after = resident_bytes(serve.pid());
  std::cout << "resident memory: " << rss_before / 1024 << " KiB before the load, " << rss_after / 1024 << " KiB after\n";
  EXPECT_LE(std::abs(double(rss_after - rss_before)), 0.10 * double(rss_before))
      << "resident memory went from " << rss_before << " to " << rss_after << " bytes";
  EXPECT_EQ(serve.stop(SIGTERM), 0);
}

}  // namespace
