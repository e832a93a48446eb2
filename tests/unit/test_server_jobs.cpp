// tide serve's own job API (/api/jobs: create, read, events, cancel) and /metrics, against a real server on a
// loopback port over the tiny model. The worker is held at a step by the queue's step observer, so nothing here
// depends on timing.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <regex>
#include <set>

#include "server_harness.h"

namespace {
using nlohmann::json;
using namespace tide::testing;

struct SseEvent {
  std::string name;
  json data;
};

// "event: NAME\ndata: JSON\n\n" blocks; comment lines (": ...") are skipped.
std::vector<SseEvent> parse_events(const std::string& text) {
  std::vector<SseEvent> events;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) break;
    SseEvent e;
    std::stringstream block(text.substr(start, end - start));
    for (std::string line; std::getline(block, line);) {
      if (line.rfind("event: ", 0) == 0) e.name = line.substr(7);
      if (line.rfind("data: ", 0) == 0) e.data = json::parse(line.substr(6));
    }
    if (!e.name.empty()) events.push_back(e);
    start = end + 2;
  }
  return events;
}

// name{labels} -> value, after checking every line of the exposition: samples are `name{labels} value`, and each
// metric family has its # HELP and # TYPE lines before its samples.
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> samples;
  std::set<std::string> helped, typed;
  const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$)");
  const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped)$)");
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (line.empty()) continue;
    if (std::regex_match(line, m, help)) {
      helped.insert(m[1]);
    } else if (std::regex_match(line, m, type)) {
      typed.insert(m[1]);
    } else if (std::regex_match(line, m, sample)) {
      std::string family = m[1];
      for (const char* suffix : {"_sum", "_count", "_bucket"}) {
        const std::string s = suffix;
        if (!typed.count(family) && family.size() > s.size() && family.compare(family.size() - s.size(), s.size(), s) == 0)
          family = family.substr(0, family.size() - s.size());
      }
      EXPECT_TRUE(helped.count(family)) << "no # HELP before " << line;
      EXPECT_TRUE(typed.count(family)) << "no # TYPE before " << line;
      samples[std::string(m[1]) + std::string(m[2])] = std::stod(m[4]);
    } else {
      ADD_FAILURE() << "not a line of the exposition format: '" << line << "'";
    }
  }
  return samples;
}

class ServerJobs : public TinyModelsSuite {
 protected:
  static json job(int steps, int images = 1, uint64_t seed = 1) {
    return {{"prompt", "a red fox"}, {"seed", seed}, {"steps", steps}, {"width", 32}, {"height", 32},
            {"num_images", images}, {"scheduler", "euler"}, {"guidance", 7}};
  }
  // POSTs a job, expects 202, returns its id.
  static std::string submit(httplib::Client& client, const json& body) {
    const auto reply = post_json(client, "/api/jobs", body.dump());
    EXPECT_EQ(reply.status, 202) << reply.raw;
    return reply.body.value("id", "");
  }
  static JsonReply wait_for(ServerHarness& harness, httplib::Client& client, const std::string& id) {
    auto job = harness.server().queue().find(id);
    EXPECT_TRUE(job) << id;
    if (job) job->wait();
    return get_json(client, "/api/jobs/" + id);
  }
  static std::map<std::string, double> metrics(httplib::Client& client) {
    const auto res = client.Get("/metrics");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
    return parse_metrics(res->body);
  }
};

TEST_F(ServerJobs, AJobGivesThePipelinesPicturesAndTxt2imgsPixels) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  json body = job(3, 2, 7);
  body["model"] = "tiny";
  const auto created = post_json(*client, "/api/jobs", body.dump());
  ASSERT_EQ(created.status, 202) << created.raw;
  const std::string id = created.body["id"];
  EXPECT_EQ(created.header("Location"), "/api/jobs/" + id);
  EXPECT_EQ(created.body["links"]["self"], "/api/jobs/" + id);
  EXPECT_EQ(created.body["links"]["events"], "/api/jobs/" + id + "/events");
  EXPECT_EQ(created.body["seed"], 7);

  const auto done = wait_for(harness, *client, id);
  ASSERT_EQ(done.status, 200) << done.raw;
  EXPECT_EQ(done.body["status"], "done");
  EXPECT_TRUE(done.body["queue_position"].is_null());
  EXPECT_EQ(done.body["seeds"], json({7, 8}));
  EXPECT_EQ(done.body["progress"]["fraction"], 1.0);
  EXPECT_EQ(done.body["progress"]["image_count"], 2);
  EXPECT_EQ(done.body["request"]["width"], 32);
  EXPECT_EQ(done.body["request"]["scheduler"], "euler");
  ASSERT_EQ(done.body["images"].size(), 2u);

  // The same settings through A1111's txt2img, and straight through the pipeline.
  const json a1111 = {{"prompt", "a red fox"}, {"seed", 7}, {"steps", 3}, {"width", 32}, {"height", 32},
                      {"batch_size", 2}, {"sampler_name", "Euler"}, {"cfg_scale", 7}};
  const auto txt2img = post_json(*client, "/sdapi/v1/txt2img", a1111.dump());
  ASSERT_EQ(txt2img.status, 200) << txt2img.raw;
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(dir_->path() / "models" / "tiny");
  for (int i = 0; i < 2; ++i) {
    const auto png = decode_b64_png(done.body["images"][i]);
    EXPECT_TRUE(at::equal(png.rgb8, decode_b64_png(txt2img.body["images"][i]).rgb8)) << "image " << i;
    tide::pipeline::GenerationRequest r;
    r.prompt = "a red fox";
    r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
    r.width = r.height = 32;
    r.steps = 3;
    r.guidance = 7;
    r.seed = 7 + i;
    r.scheduler = "euler";
    EXPECT_TRUE(at::equal(png.rgb8, direct_image(*pipe, r))) << "image " << i;
    const std::string parameters = png.text.at("parameters");
    EXPECT_NE(parameters.find("Seed: " + std::to_string(7 + i)), std::string::npos) << parameters;
    EXPECT_NE(parameters.find("Sampler: Euler,"), std::string::npos) << parameters;
    EXPECT_EQ(done.body["infotexts"][i], parameters);
  }
}

TEST_F(ServerJobs, ARandomSeedIsReportedAndUsed) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  json body = job(1);
  body.erase("seed");
  const auto created = post_json(*client, "/api/jobs", body.dump());
  ASSERT_EQ(created.status, 202) << created.raw;
  ASSERT_TRUE(created.body["seed"].is_number_unsigned()) << created.raw;
  const auto done = wait_for(harness, *client, created.body["id"]);
  EXPECT_EQ(done.body["seeds"][0], created.body["seed"]);
  EXPECT_EQ(done.body["request"]["seed"], created.body["seed"]);
}

TEST_F(ServerJobs, EventsStreamEveryStepThenDone) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto& queue = harness.server().queue();
  // Live: the stream delivers step 2 while the worker is held there.
  StepGate gate(queue, 2);
  const std::string id = submit(*client, job(3, 2));
  std::promise<void> saw_step_2;
  bool signalled = false;
  std::string text;
  auto streaming = std::async(std::launch::async, [&] {
    auto c = harness.client();
    return c->Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
      text.append(data, n);
      if (!signalled && text.find("\"step\":2") != std::string::npos) {
        signalled = true;
        saw_step_2.set_value();
      }
      return true;
    });
  });
  gate.wait_reached();
  saw_step_2.get_future().wait();
  const auto running = get_json(*client, "/api/jobs/" + id);
  EXPECT_EQ(running.body["status"], "running");
  EXPECT_EQ(running.body["queue_position"], 0);
  EXPECT_EQ(running.body["progress"]["step"], 2);
  EXPECT_EQ(running.body["progress"]["steps"], 3);
  EXPECT_EQ(running.body["progress"]["image_index"], 0);
  EXPECT_DOUBLE_EQ(running.body["progress"]["fraction"].get<double>(), 2.0 / 6);
  gate.release();
  const auto result = streaming.get();  // the stream ends with the job
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");

  auto check = [&](const std::vector<SseEvent>& events) {
    ASSERT_EQ(events.size(), 7u) << text;
    double fraction = 0;
    for (int k = 0; k < 6; ++k) {
      EXPECT_EQ(events[k].name, "progress");
      EXPECT_EQ(events[k].data["image_index"], k / 3);
      EXPECT_EQ(events[k].data["step"], k % 3 + 1);
      EXPECT_EQ(events[k].data["steps"], 3);
      EXPECT_EQ(events[k].data["image_count"], 2);
      EXPECT_GT(events[k].data["fraction"].get<double>(), fraction);
      fraction = events[k].data["fraction"];
    }
    EXPECT_DOUBLE_EQ(fraction, 1.0);
    EXPECT_EQ(events[6].name, "done");
    EXPECT_EQ(events[6].data["status"], "done");
    EXPECT_EQ(events[6].data["seeds"], json({1, 2}));
    EXPECT_EQ(events[6].data["images"].size(), 2u);
  };
  check(parse_events(text));
  // After the fact: the same events at once.
  const auto replay = client->Get(("/api/jobs/" + id + "/events").c_str());
  ASSERT_TRUE(replay);
  text = replay->body;
  check(parse_events(text));
}

TEST_F(ServerJobs, AClientLeavingTheStreamDoesNotHoldTheWorker) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  std::string id;
  {
    StepGate gate(harness.server().queue(), 1);
    id = submit(*client, job(3));
    auto c = harness.client();
    std::string text;
    const auto left = c->Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
      text.append(data, n);
      return text.find("event: progress") == std::string::npos;  // leave at the first progress event
    });
    EXPECT_EQ(left.error(), httplib::Error::Canceled);  // the client left
    gate.release();
  }
  EXPECT_EQ(wait_for(harness, *client, id).body["status"], "done");
  const std::string next = submit(*client, job(1));
  EXPECT_EQ(wait_for(harness, *client, next).body["status"], "done");
}

TEST_F(ServerJobs, AStreamEndsWhenItsClientLeavesWhileTheJobWaits) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto& queue = harness.server().queue();
  queue.set_paused(true);
  const std::string id = submit(*client, job(1));
  const auto job_held = queue.find(id);
  const long before = job_held.use_count();  // here and in the queue
  {
    auto c = harness.client();
    const auto left = c->Get(("/api/jobs/" + id + "/events").c_str(), [&](const char*, size_t) { return false; });
    EXPECT_EQ(left.error(), httplib::Error::Canceled);
  }
  // The server's stream holds the job while it runs; it lets go once a write finds the client gone.
  while (job_held.use_count() > before) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(job_held->state().status, tide::server::JobStatus::kQueued);
  queue.set_paused(false);
  EXPECT_EQ(wait_for(harness, *client, id).body["status"], "done");
}

TEST_F(ServerJobs, DeleteStopsARunningJobAfterItsStep) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto& queue = harness.server().queue();
  StepGate gate(queue, 2);
  const std::string id = submit(*client, job(5, 2));
  gate.wait_reached();
  auto deleting = std::async(std::launch::async, [&] {
    auto c = harness.client();
    return to_json_reply(c->Delete(("/api/jobs/" + id).c_str()));
  });
  while (!queue.progress().interrupted) std::this_thread::yield();  // the DELETE has arrived
  gate.release();
  const auto deleted = deleting.get();
  ASSERT_EQ(deleted.status, 200) << deleted.raw;
  EXPECT_EQ(deleted.body["status"], "cancelled");
  EXPECT_TRUE(deleted.body["images"].empty());
  EXPECT_EQ(deleted.body["progress"]["step"], 2);  // it stopped after the step it was at
  EXPECT_EQ(get_json(*client, "/api/jobs/" + id).body["status"], "cancelled");
  // Deleting it again leaves it as it is.
  EXPECT_EQ(to_json_reply(client->Delete(("/api/jobs/" + id).c_str())).body["status"], "cancelled");
}

TEST_F(ServerJobs, DeleteRemovesAWaitingJob) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto& queue = harness.server().queue();
  queue.set_paused(true);
  const std::string first = submit(*client, job(1));
  const std::string second = submit(*client, job(1));
  EXPECT_EQ(get_json(*client, "/api/jobs/" + first).body["status"], "queued");
  EXPECT_EQ(get_json(*client, "/api/jobs/" + second).body["queue_position"], 2);
  const auto deleted = to_json_reply(client->Delete(("/api/jobs/" + first).c_str()));
  ASSERT_EQ(deleted.status, 200) << deleted.raw;
  EXPECT_EQ(deleted.body["status"], "cancelled");
  EXPECT_EQ(deleted.body["progress"]["step"], 0);
  EXPECT_EQ(deleted.body["progress"]["image_count"], 1);
  EXPECT_EQ(queue.waiting(), 1u);
  EXPECT_EQ(get_json(*client, "/api/jobs/" + second).body["queue_position"], 1);
  // Its event stream ends at once with the cancellation.
  const auto events = client->Get(("/api/jobs/" + first + "/events").c_str());
  ASSERT_TRUE(events);
  const auto parsed = parse_events(events->body);
  ASSERT_EQ(parsed.size(), 1u) << events->body;
  EXPECT_EQ(parsed[0].name, "cancelled");
  queue.set_paused(false);
  EXPECT_EQ(wait_for(harness, *client, second).body["status"], "done");
}

TEST_F(ServerJobs, UnknownIdsAre404) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  for (const auto& reply : {get_json(*client, "/api/jobs/nope"), to_json_reply(client->Delete("/api/jobs/nope")),
                            get_json(*client, "/api/jobs/nope/events")}) {
    EXPECT_EQ(reply.status, 404) << reply.raw;
    ASSERT_TRUE(reply.body.contains("error")) << reply.raw;
    EXPECT_NE(reply.body["error"]["message"].get<std::string>().find("'nope'"), std::string::npos) << reply.raw;
  }
}

TEST_F(ServerJobs, BadBodiesAre422WithTheFieldNamed) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto expect = [&](const std::string& body, const std::string& field, const std::string& text) {
    const auto reply = post_json(*client, "/api/jobs", body);
    EXPECT_EQ(reply.status, 422) << body << " -> " << reply.raw;
    ASSERT_TRUE(reply.body.contains("error")) << reply.raw;
    EXPECT_EQ(reply.body["error"]["field"], field.empty() ? json(nullptr) : json(field)) << reply.raw;
    EXPECT_NE(reply.body["error"]["message"].get<std::string>().find(text), std::string::npos) << reply.raw;
  };
  expect(R"({"prompt": )", "", "invalid JSON");
  expect(R"(["a fox"])", "", "JSON object");
  expect(R"({"prompt": ["a fox"]})", "prompt", "str type expected");
  expect(R"({"steps": "many"})", "steps", "not a valid integer");
  expect(R"({"steps": 0})", "steps", "between 1 and 150");
  expect(R"({"steps": 151})", "steps", "between 1 and 150");
  expect(R"({"width": 4096})", "width", "between 1 and 2048");
  expect(R"({"height": -8})", "height", "between 1 and 2048");
  expect(R"({"guidance": -1})", "guidance", "between 0 and 100");
  expect(R"({"cfg_scale": 101})", "cfg_scale", "between 0 and 100");
  expect(R"({"guidance": 7, "cfg_scale": 7})", "cfg_scale", "not both");
  expect(R"({"num_images": 17})", "num_images", "between 1 and 16");
  expect(R"({"seed": -2})", "seed", "-1 (random)");
  expect(R"({"scheduler": "nope"})", "scheduler", "not found");
  expect(R"({"scheduler": "ddim", "karras": true})", "karras", "Karras");
  expect(R"({"karras": "maybe"})", "karras", "boolean");
  expect(R"({"model": "sd-9"})", "model", "tiny");
  expect(R"({"prompt_syntax": "markdown"})", "prompt_syntax", "a1111");
  expect(R"({"prompt": "x", "cfg": 7})", "cfg", "unknown field 'cfg'");
  EXPECT_EQ(harness.server().queue().waiting(), 0u);
}

TEST_F(ServerJobs, TheLast64EndedJobsAreKept) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  ASSERT_EQ(tide::server::JobQueue::kKeptJobs, 64u);
  std::vector<std::string> ids;
  json small = job(1);
  small["width"] = small["height"] = 8;
  for (int i = 0; i < 65; ++i) {
    ids.push_back(submit(*client, small));
    harness.server().queue().find(ids.back())->wait();
  }
  EXPECT_EQ(get_json(*client, "/api/jobs/" + ids[0]).status, 404);
  EXPECT_EQ(get_json(*client, "/api/jobs/" + ids[1]).body["status"], "done");
  EXPECT_EQ(get_json(*client, "/api/jobs/" + ids[64]).body["status"], "done");
  // A1111's jobs are not kept: they are answered in their own request.
  ASSERT_EQ(post_json(*client, "/sdapi/v1/txt2img", json({{"prompt", "x"}, {"steps", 1}, {"width", 8}, {"height", 8},
                                                          {"force_task_id", "a1111-job"}}).dump()).status, 200);
  EXPECT_EQ(get_json(*client, "/api/jobs/a1111-job").status, 404);
  EXPECT_EQ(get_json(*client, "/api/jobs/" + ids[1]).body["status"], "done");
}

TEST_F(ServerJobs, AFullQueueAnswers503WithRetryAfter) {
  tide::server::ServerOptions options;
  options.max_queue = 1;
  ServerHarness harness(dir_->path() / "models", options);
  auto client = harness.client();
  auto& queue = harness.server().queue();
  queue.set_paused(true);
  const auto first = post_json(*client, "/api/jobs", job(1).dump());
  ASSERT_EQ(first.status, 202) << first.raw;
  EXPECT_EQ(first.body["status"], "queued");
  EXPECT_EQ(first.body["queue_position"], 1);
  const auto full = post_json(*client, "/api/jobs", job(1).dump());
  EXPECT_EQ(full.status, 503) << full.raw;
  EXPECT_EQ(full.header("Retry-After"), "10");
  EXPECT_NE(full.body["error"]["message"].get<std::string>().find("queue is full"), std::string::npos) << full.raw;
  queue.set_paused(false);
  EXPECT_EQ(wait_for(harness, *client, first.body["id"]).body["status"], "done");
}

TEST_F(ServerJobs, AJobThePipelineRefusesFails) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  json body = job(1);
  body["width"] = 33;  // not a multiple of the tiny VAE's factor 2: known only once the model is loaded
  const std::string id = submit(*client, body);
  const auto failed = wait_for(harness, *client, id);
  EXPECT_EQ(failed.body["status"], "failed");
  EXPECT_NE(failed.body["error"].get<std::string>().find("multiples of 2"), std::string::npos) << failed.raw;
  EXPECT_TRUE(failed.body["images"].empty());
}

TEST_F(ServerJobs, MetricsParseAndCountJobsImagesAndSteps) {
  ServerHarness harness(dir_->path() / "models");
  auto client = harness.client();
  auto& queue = harness.server().queue();
  const auto before = metrics(*client);
  for (const char* name : {"tide_queue_waiting", "tide_jobs_running", "tide_jobs_total{status=\"done\"}",
                           "tide_jobs_total{status=\"failed\"}", "tide_jobs_total{status=\"cancelled\"}",
                           "tide_images_total", "tide_steps_total", "tide_step_seconds_sum", "tide_step_seconds_count",
                           "tide_resident_memory_bytes", "tide_models_loaded"})
    EXPECT_TRUE(before.count(name)) << name;
  EXPECT_EQ(before.at("tide_jobs_total{status=\"done\"}"), 0);
  EXPECT_EQ(before.at("tide_models_loaded"), 0);
  EXPECT_GT(before.at("tide_resident_memory_bytes"), 0);

  // One job API job (2 pictures of 3 steps) and one A1111 job (1 of 2): both are counted.
  wait_for(harness, *client, submit(*client, job(3, 2)));
  const json a1111 = {{"prompt", "a fox"}, {"seed", 3}, {"steps", 2}, {"width", 32}, {"height", 32}};
  ASSERT_EQ(post_json(*client, "/sdapi/v1/txt2img", a1111.dump()).status, 200);
  auto after = metrics(*client);
  EXPECT_EQ(after.at("tide_jobs_total{status=\"done\"}"), 2);
  EXPECT_EQ(after.at("tide_images_total"), 3);
  EXPECT_EQ(after.at("tide_steps_total"), 8);
  EXPECT_EQ(after.at("tide_step_seconds_count"), 8);
  EXPECT_GT(after.at("tide_step_seconds_sum"), before.at("tide_step_seconds_sum"));
  EXPECT_EQ(after.at("tide_models_loaded"), 1);
  EXPECT_EQ(after.at("tide_jobs_running"), 0);

  // A cancelled waiting job and a failed one; the waiting gauge while one waits.
  queue.set_paused(true);
  const std::string waiting = submit(*client, job(1));
  EXPECT_EQ(metrics(*client).at("tide_queue_waiting"), 1);
  EXPECT_EQ(client->Delete(("/api/jobs/" + waiting).c_str())->status, 200);
  queue.set_paused(false);
  json bad = job(1);
  bad["width"] = 33;
  wait_for(harness, *client, submit(*client, bad));
  after = metrics(*client);
  EXPECT_EQ(after.at("tide_jobs_total{status=\"cancelled\"}"), 1);
  EXPECT_EQ(after.at("tide_jobs_total{status=\"failed\"}"), 1);
  EXPECT_EQ(after.at("tide_jobs_total{status=\"done\"}"), 2);
  EXPECT_EQ(after.at("tide_queue_waiting"), 0);
  EXPECT_EQ(after.at("tide_steps_total"), 8);

  // The running gauge while the worker is held at a step.
  StepGate gate(queue, 1);
  const std::string held = submit(*client, job(2));
  gate.wait_reached();
  EXPECT_EQ(metrics(*client).at("tide_jobs_running"), 1);
  gate.release();
  wait_for(harness, *client, held);
}

TEST_F(ServerJobs, TheApiKeyGuardsJobsAndMetrics) {
  tide::server::ServerOptions options;
  options.api_key = "s3cret-key";
  ServerHarness harness(dir_->path() / "models", options);
  auto client = harness.client();
  const httplib::Headers key = {{"Authorization", "Bearer s3cret-key"}};
  EXPECT_EQ(get_json(*client, "/metrics").status, 401);
  EXPECT_EQ(post_json(*client, "/api/jobs", job(1).dump()).status, 401);
  EXPECT_EQ(get_json(*client, "/api/jobs/nope").status, 401);
  EXPECT_EQ(get_json(*client, "/api/jobs/nope/events").status, 401);
  EXPECT_EQ(client->Delete("/api/jobs/nope")->status, 401);
  EXPECT_EQ(harness.server().queue().waiting(), 0u);

  EXPECT_EQ(get_json(*client, "/metrics", key).status, 200);
  const auto created = post_json(*client, "/api/jobs", job(1).dump(), key);
  ASSERT_EQ(created.status, 202) << created.raw;
  const std::string id = created.body["id"];
  harness.server().queue().find(id)->wait();
  EXPECT_EQ(get_json(*client, "/api/jobs/" + id).status, 401);
  EXPECT_EQ(get_json(*client, "/api/jobs/" + id, key).body["status"], "done");
  EXPECT_EQ(get_json(*client, "/api/jobs/nope", key).status, 404);
}

}  // namespace
