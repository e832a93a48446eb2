// Models from the Hub as a user names them, against a local server that serves a tiny pipeline the
// way the Hub does: `tide generate --model org/name`, `tide pull`, offline reuse of the cache, and
// single-file checkpoints that take their tokenizer from the family's reference model.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "cli_runner.h"
#include "hub_server.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/runtime/build_features.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::HubServer;
using tide::testing::quote;
using tide::testing::run_tide;
using tide::testing::TempDir;

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

// Every file of a model folder, weights served through the LFS redirect like the Hub does.
HubServer::Repo repo_of_folder(const fs::path& folder) {
  HubServer::Repo repo;
  repo.commit = kCommit;
  for (const auto& e : fs::recursive_directory_iterator(folder)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    repo.files[e.path().lexically_relative(folder).generic_string()] = {bytes.str(), e.path().extension() == ".safetensors"};
  }
  return repo;
}

std::set<std::string> files_under(const fs::path& folder) {
  std::set<std::string> out;
  if (!fs::exists(folder)) return out;
  for (const auto& e : fs::recursive_directory_iterator(folder))
    if (!e.is_directory()) out.insert(e.path().lexically_relative(folder).generic_string());
  return out;
}

class CliHub : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tide::built_with_curl())
      GTEST_SKIP() << "built without libcurl (TIDE_WITH_CURL=OFF): no downloads, test_build_features checks the error";
    tide::testing::make_tiny_pipeline(dir.path() / "model");
    server.add_repo("tiny-org/tiny-sd", repo_of_folder(dir.path() / "model"));
    // Single SD 1.x files take their tokenizer from this repository.
    server.add_repo("stable-diffusion-v1-5/stable-diffusion-v1-5", repo_of_folder(dir.path() / "model"));
  }
  std::string env(bool offline = false) const {
    return "HF_ENDPOINT=" + server.endpoint() + " HF_HUB_CACHE=" + quote(cache()) + (offline ? " HF_HUB_OFFLINE=1 " : " ");
  }
  fs::path cache() const { return dir.path() / "cache"; }
  // The pixels `tide generate` makes from `model`.
  at::Tensor generate(const std::string& model, const std::string& name, const std::string& environment = "") {
    const fs::path out = dir.path() / name;
    auto run = run_tide("generate --model " + model + " --prompt 'a red robot' --steps 3 --seed 7 --width 32"
                        " --height 32 --threads 1 --output " + quote(out), environment);
    EXPECT_EQ(run.code, 0) << run.output;
    return run.code == 0 ? tide::io::read_png(out).rgb8 : at::Tensor();
  }
  TempDir dir;
  HubServer server;
};

TEST_F(CliHub, GeneratesFromAHubIdAndReusesTheCacheOffline) {
  const at::Tensor local = generate(quote(dir.path() / "model"), "local.png");
  ASSERT_TRUE(local.defined());
  const at::Tensor hub = generate("tiny-org/tiny-sd", "hub.png", env());
  ASSERT_TRUE(hub.defined());
  EXPECT_TRUE(at::equal(hub, local));
  const fs::path snapshot = cache() / "models--tiny-org--tiny-sd" / "snapshots" / kCommit;
  EXPECT_TRUE(fs::exists(snapshot / "unet" / "diffusion_pytorch_model.safetensors"));

  server.clear_log();
  const at::Tensor offline = generate("tiny-org/tiny-sd", "offline.png", env(/*offline=*/true));
  ASSERT_TRUE(offline.defined());
  EXPECT_TRUE(at::equal(offline, local));
  EXPECT_EQ(server.log().size(), 0u) << "HF_HUB_OFFLINE=1 must not touch the network";

  // tide pull prints the snapshot folder; nothing new is downloaded.
  server.clear_log();
  auto pull = run_tide("pull tiny-org/tiny-sd", env());
  EXPECT_EQ(pull.code, 0) << pull.output;
  EXPECT_NE(pull.output.find(snapshot.string()), std::string::npos) << pull.output;
  EXPECT_EQ(server.file_requests(), 0);
}

TEST_F(CliHub, ClearErrorsForUnknownModelsAndAnEmptyOfflineCache) {
  auto missing = run_tide("generate --model tiny-org/no-such-model --prompt x --steps 1", env());
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("no-such-model"), std::string::npos) << missing.output;
  auto offline = run_tide("pull tiny-org/tiny-sd", env(/*offline=*/true));
  EXPECT_EQ(offline.code, 1);
  EXPECT_NE(offline.output.find("HF_HUB_OFFLINE"), std::string::npos) << offline.output;
  EXPECT_TRUE(files_under(cache() / "models--tiny-org--tiny-sd" / "blobs").empty());
}

TEST_F(CliHub, SingleFileTakesOnlyTheTokenizerFromTheReferenceModel) {
  auto convert = run_tide("convert --model " + quote(dir.path() / "model") + " --output " +
                          quote(dir.path() / "tiny.safetensors"));
  ASSERT_EQ(convert.code, 0) << convert.output;
  const at::Tensor local = generate(quote(dir.path() / "model"), "local.png");
  const at::Tensor single = generate(quote(dir.path() / "tiny.safetensors"), "single.png", env());
  ASSERT_TRUE(single.defined());
  EXPECT_TRUE(at::equal(single, local));
  // Only the tokenizer (and the index that names it) came down, no weights.
  const auto fetched = files_under(cache() / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / kCommit);
  EXPECT_TRUE(fetched.count("tokenizer/vocab.json"));
  for (const auto& f : fetched) EXPECT_TRUE(f == "model_index.json" || f.rfind("tokenizer/", 0) == 0) << f;

  // Without the Hub and with an empty cache the message says how to give a tokenizer.
  auto no_tokenizer = run_tide("generate --model " + quote(dir.path() / "tiny.safetensors") + " --prompt x --steps 1",
                               "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" + quote(dir.path() / "empty") + " ");
  EXPECT_EQ(no_tokenizer.code, 1);
  EXPECT_NE(no_tokenizer.output.find("--tokenizer"), std::string::npos) << no_tokenizer.output;
}

}  // namespace
