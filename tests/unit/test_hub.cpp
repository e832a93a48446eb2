// Hub downloads against a local fake Hub (tests/hub_server.h): the HF cache layout, reuse of
// cached files, offline mode, variants, resume after a dropped connection, checksums, tokens, 404s.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>

#include "hub_server.h"
#include "test_support.h"
#include "tide/io/safetensors.h"
#include "tide/hub/hub.h"
#include "tide/hub/hub_cache.h"
#include "tide/pipeline/model_source.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"
#include "tide/runtime/sha256.h"

namespace {
using tide::testing::read_bytes;
namespace fs = std::filesystem;
namespace hub = tide::hub;
using tide::testing::HubServer;
using tide::testing::TempDir;

const std::string kRepo = "tide-test/tiny-sd";
const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";


// The bytes of a small safetensors file.
std::string safetensors_bytes(const fs::path& scratch, at::ScalarType dtype, int64_t n, int seed) {
  at::manual_seed(seed);
  const fs::path file = scratch / ("w" + std::to_string(seed) + ".safetensors");
  tide::io::write_safetensors(file, {{"weight", at::randn({n, 32}).to(dtype)}, {"bias", at::randn({32}).to(dtype)}});
  return read_bytes(file);
}

// A diffusers-style repo: what the pipeline needs, plus what it must never download.
HubServer::Repo make_repo(const fs::path& scratch) {
  HubServer::Repo repo;
  repo.commit = kCommit;
  repo.refs["v1.0"] = kCommit;
  const nlohmann::json index = {{"_class_name", "StableDiffusionPipeline"},
                                {"_diffusers_version", "0.27.0"},
                                {"unet", {"diffusers", "UNet2DConditionModel"}},
                                {"vae", {"diffusers", "AutoencoderKL"}},
                                {"text_encoder", {"transformers", "CLIPTextModel"}},
                                {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                {"scheduler", {"diffusers", "PNDMScheduler"}},
                                {"safety_checker", {"stable_diffusion", "StableDiffusionSafetyChecker"}},
                                {"feature_extractor", {"transformers", "CLIPImageProcessor"}},
                                {"image_encoder", {nullptr, nullptr}}};
  auto& f = repo.files;
  auto text = [&](const std::string& path, const std::string& content) { f[path] = {content, false}; };
  auto lfs = [&](const std::string& path, const std::string& content) { f[path] = {content, true}; };
  text("model_index.json", index.dump(2));
  text("README.md", "# tiny\n");
  text(".gitattributes", "*.safetensors filter=lfs\n");
  lfs("v1-5-pruned-emaonly.ckpt", std::string(3000, 'c'));
  text("unet/config.json", R"({"sample_size": 8})");
  lfs("unet/diffusion_pytorch_model.safetensors", safetensors_bytes(scratch, at::kFloat, 64, 1));
  lfs("unet/diffusion_pytorch_model.fp16.safetensors", safetensors_bytes(scratch, at::kHalf, 64, 2));
  lfs("unet/diffusion_pytorch_model.non_ema.safetensors", safetensors_bytes(scratch, at::kFloat, 64, 3));
  lfs("unet/diffusion_pytorch_model.bin", std::string(2000, 'b'));
  lfs("unet/model.onnx", std::string(2000, 'o'));
  text("vae/config.json", R"({"latent_channels": 4})");
  lfs("vae/diffusion_pytorch_model-00001-of-00002.safetensors", safetensors_bytes(scratch, at::kFloat, 16, 4));
  lfs("vae/diffusion_pytorch_model-00002-of-00002.safetensors", safetensors_bytes(scratch, at::kFloat, 16, 5));
  text("vae/diffusion_pytorch_model.safetensors.index.json",
       R"({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors"}})");
  text("text_encoder/config.json", R"({"hidden_size": 32})");
  lfs("text_encoder/model.safetensors", safetensors_bytes(scratch, at::kFloat, 32, 6));
  lfs("text_encoder/model.fp16.safetensors", safetensors_bytes(scratch, at::kHalf, 32, 7));
  lfs("text_encoder/pytorch_model.bin", std::string(2000, 'p'));
  for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    text(std::string("tokenizer/") + name, std::string("{\"file\": \"") + name + "\"}");
  text("tokenizer/tokenizer.json", "{}");
  text("scheduler/scheduler_config.json", R"({"num_train_timesteps": 1000})");
  text("safety_checker/config.json", "{}");
  lfs("safety_checker/model.safetensors", safetensors_bytes(scratch, at::kFloat, 8, 8));
  text("feature_extractor/preprocessor_config.json", "{}");
  text("image_encoder/config.json", "{}");
  return repo;
}

const std::set<std::string> kPlainFiles = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
    "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
    "vae/diffusion_pytorch_model.safetensors.index.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "scheduler/scheduler_config.json"};

// Every file (or symlink) under a folder, relative.
std::set<std::string> files_under(const fs::path& folder) {
  std::set<std::string> out;
  for (auto it = fs::recursive_directory_iterator(folder); it != fs::recursive_directory_iterator(); ++it)
    if (!it->is_directory()) out.insert(it->path().lexically_relative(folder).generic_string());
  return out;
}

// Sets or unsets environment variables for one test and restores them afterwards.
class ScopedEnv {
 public:
  void set(const std::string& name, const std::optional<std::string>& value) {
    if (!saved_.count(name)) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value)
      ::setenv(name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "";
}

class HubDownload : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tide::built_with_curl())
      GTEST_SKIP() << "built without libcurl (TIDE_WITH_CURL=OFF): no downloads, test_build_features checks the error";
    for (const char* name : {"HF_ENDPOINT", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME"})
      env.set(name, std::nullopt);
    env.set("HF_HOME", (dir / "hf-home").string());  // no token file of the real user
    repo = make_repo(dir.path());
    server.add_repo(kRepo, repo);
  }

  hub::Options options() const {
    hub::Options o;
    o.endpoint = server.endpoint();
    o.cache_dir = cache();
    o.progress = false;
    o.retry_wait_seconds = 0.01;
    return o;
  }
  fs::path cache() const { return dir / "hub"; }
  fs::path repo_folder() const { return cache() / "models--tide-test--tiny-sd"; }
  std::string bytes_of(const std::string& path) const { return repo.files.at(path).bytes; }

  ScopedEnv env;
  TempDir dir;
  HubServer server;
  HubServer::Repo repo;
};

TEST(HubSelection, PicksPipelineFilesAndVariants) {
  TempDir dir;
  const auto repo = make_repo(dir.path());
  std::vector<std::string> names;
  for (const auto& [path, file] : repo.files) names.push_back(path);
  const auto index = nlohmann::json::parse(repo.files.at("model_index.json").bytes);

  const auto plain = hub::select_pipeline_files(names, index, "");
  EXPECT_EQ(std::set<std::string>(plain.begin(), plain.end()), kPlainFiles);

  const auto fp16 = hub::select_pipeline_files(names, index, "fp16");
  std::set<std::string> expected = kPlainFiles;
  expected.erase("unet/diffusion_pytorch_model.safetensors");
  expected.erase("text_encoder/model.safetensors");
  expected.insert("unet/diffusion_pytorch_model.fp16.safetensors");
  expected.insert("text_encoder/model.fp16.safetensors");
  EXPECT_EQ(std::set<std::string>(fp16.begin(), fp16.end()), expected);  // the vae falls back to plain shards
}

TEST(HubSelection, NamesAndEtags) {
  EXPECT_EQ(hub::weight_variant("diffusion_pytorch_model.safetensors"), "");
  EXPECT_EQ(hub::weight_variant("diffusion_pytorch_model-00001-of-00002.safetensors"), "");
  EXPECT_EQ(hub::weight_variant("diffusion_pytorch_model.safetensors.index.json"), "");
  EXPECT_EQ(hub::weight_variant("model.fp16.safetensors"), "fp16");
  EXPECT_EQ(hub::weight_variant("model.fp16-00001-of-00002.safetensors"), "fp16");
  EXPECT_EQ(hub::weight_variant("model.safetensors.index.fp16.json"), "fp16");
  EXPECT_EQ(hub::weight_variant("diffusion_pytorch_model.non_ema.safetensors"), "non_ema");
  EXPECT_EQ(hub::normalize_etag("W/\"abc\""), "abc");
  EXPECT_EQ(hub::normalize_etag("\"abc\""), "abc");

  auto ref = hub::parse_repo_ref("stable-diffusion-v1-5/stable-diffusion-v1-5@fp16");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->repo_id, "stable-diffusion-v1-5/stable-diffusion-v1-5");
  EXPECT_EQ(ref->revision.value_or(""), "fp16");
  EXPECT_FALSE(hub::parse_repo_ref("org/name")->revision);
  for (const char* bad : {"name", "/abs/path", "./a/b", "a/b/c", "a/", "org/na me", "org/name@", "../x"})
    EXPECT_FALSE(hub::parse_repo_ref(bad)) << bad;
}

TEST(HubSha256, KnownVectors) {
  using tide::runtime::sha256_hex;
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  tide::runtime::Sha256 pieces;  // a million 'a', fed in uneven pieces across block boundaries
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    pieces.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(pieces.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_F(HubDownload, FillsTheHfCacheLayout) {
  const fs::path snapshot = hub::snapshot_download(kRepo, options());
  EXPECT_EQ(snapshot, repo_folder() / "snapshots" / kCommit);
  EXPECT_EQ(read_bytes(repo_folder() / "refs" / "main"), kCommit);
  EXPECT_EQ(files_under(snapshot), kPlainFiles);  // no .bin, .ckpt, .onnx, safety_checker, feature_extractor
  for (const auto& path : kPlainFiles) {
    const fs::path pointer = snapshot / path;
    ASSERT_TRUE(fs::is_symlink(pointer)) << path;
    const fs::path target = fs::read_symlink(pointer);
    EXPECT_TRUE(target.is_relative()) << target;
    const std::string etag = HubServer::etag_of(repo.files.at(path));
    EXPECT_EQ(fs::weakly_canonical(pointer.parent_path() / target), fs::weakly_canonical(repo_folder() / "blobs" / etag));
    EXPECT_EQ(read_bytes(pointer), bytes_of(path)) << path;
  }
  for (const auto& blob : files_under(repo_folder() / "blobs"))
    EXPECT_EQ(blob.find(".incomplete"), std::string::npos) << blob;
  tide::io::SafetensorsFile weights(snapshot / "unet/diffusion_pytorch_model.safetensors");
  EXPECT_TRUE(weights.contains("weight"));
}

TEST_F(HubDownload, UsesTheEnvironmentForEndpointAndCache) {
  env.set("HF_ENDPOINT", server.endpoint() + "/");
  env.set("HF_HUB_CACHE", cache().string());
  hub::Options o;
  o.progress = false;
  EXPECT_EQ(hub::snapshot_download(kRepo, o), repo_folder() / "snapshots" / kCommit);
}

TEST_F(HubDownload, SecondRunMakesNoFileRequests) {
  hub::snapshot_download(kRepo, options());
  EXPECT_GT(server.file_requests(), 0);
  server.clear_log();
  EXPECT_EQ(hub::snapshot_download(kRepo, options()), repo_folder() / "snapshots" / kCommit);
  EXPECT_EQ(server.api_requests(), 1);
  EXPECT_EQ(server.file_requests(), 0);

  // Another revision name for the same commit: new ref, still no file request.
  server.clear_log();
  auto o = options();
  o.revision = "v1.0";
  hub::snapshot_download(kRepo, o);
  EXPECT_EQ(read_bytes(repo_folder() / "refs" / "v1.0"), kCommit);
  EXPECT_EQ(server.file_requests(), 0);
}

TEST_F(HubDownload, BlobsAlreadyCachedAreLinkedWithoutDownloading) {
  hub::snapshot_download(kRepo, options());
  fs::remove_all(repo_folder() / "snapshots");  // the blobs stay
  server.clear_log();
  hub::snapshot_download(kRepo, options());
  EXPECT_EQ(server.file_requests(), 0);  // the model info's blob ids name the cached blobs
  EXPECT_EQ(files_under(repo_folder() / "snapshots" / kCommit), kPlainFiles);
}

TEST_F(HubDownload, OfflineUsesOnlyTheCache) {
  env.set("HF_HUB_OFFLINE", "1");
  const std::string missing = error_of([&] { hub::snapshot_download(kRepo, options()); });
  EXPECT_NE(missing.find("not in the Hugging Face cache"), std::string::npos) << missing;
  EXPECT_NE(missing.find("HF_HUB_OFFLINE"), std::string::npos) << missing;
  EXPECT_EQ(server.log().size(), 0u);

  env.set("HF_HUB_OFFLINE", std::nullopt);
  const fs::path online = hub::snapshot_download(kRepo, options());
  server.clear_log();
  env.set("HF_HUB_OFFLINE", "1");
  EXPECT_EQ(hub::snapshot_download(kRepo, options()), online);
  auto by_commit = options();
  by_commit.revision = kCommit;
  EXPECT_EQ(hub::snapshot_download(kRepo, by_commit), online);
  EXPECT_EQ(server.log().size(), 0u);

  auto unknown = options();
  unknown.revision = "v2";
  EXPECT_NE(error_of([&] { hub::snapshot_download(kRepo, unknown); }).find("revision v2"), std::string::npos);
}

TEST_F(HubDownload, UnreachableHubFallsBackToTheCache) {
  const fs::path online = hub::snapshot_download(kRepo, options());
  auto dead = options();
  dead.endpoint = "http://127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(hub::snapshot_download(kRepo, dead), online);
  dead.cache_dir = dir / "empty-cache";
  const std::string error = error_of([&] { hub::snapshot_download(kRepo, dead); });
  EXPECT_NE(error.find("cannot reach http://127.0.0.1:1"), std::string::npos) << error;
}

TEST_F(HubDownload, Fp16VariantWithFallback) {
  auto o = options();
  o.variant = "fp16";
  const fs::path snapshot = hub::snapshot_download(kRepo, o);
  const auto files = files_under(snapshot);
  EXPECT_TRUE(files.count("unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_TRUE(files.count("text_encoder/model.fp16.safetensors"));
  EXPECT_FALSE(files.count("unet/diffusion_pytorch_model.safetensors"));
  EXPECT_FALSE(files.count("text_encoder/model.safetensors"));
  EXPECT_TRUE(files.count("vae/diffusion_pytorch_model-00002-of-00002.safetensors"));  // no fp16 vae in the repo
  tide::io::SafetensorsFile unet(snapshot / "unet/diffusion_pytorch_model.fp16.safetensors");
  EXPECT_EQ(unet.entry("weight").dtype, at::kHalf);
}

TEST_F(HubDownload, ResumesAfterADroppedConnection) {
  server.drop_next = 1;
  const fs::path snapshot = hub::snapshot_download(kRepo, options());
  EXPECT_EQ(server.drop_next.load(), 0);
  bool resumed = false;
  for (const auto& l : server.log())
    if (l.path.rfind("/cdn/", 0) == 0 && l.range.rfind("bytes=", 0) == 0 && l.status == 206) resumed = true;
  EXPECT_TRUE(resumed) << "no ranged request after the drop";
  for (const auto& path : kPlainFiles) EXPECT_EQ(read_bytes(snapshot / path), bytes_of(path)) << path;
}

TEST_F(HubDownload, ResumesAPartialFileOfAnEarlierRun) {
  const std::string path = "unet/diffusion_pytorch_model.safetensors";
  const std::string etag = HubServer::etag_of(repo.files.at(path));
  fs::create_directories(repo_folder() / "blobs");
  const std::string bytes = bytes_of(path);
  std::ofstream(repo_folder() / "blobs" / (etag + ".incomplete"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  const fs::path snapshot = hub::snapshot_download(kRepo, options());
  EXPECT_EQ(read_bytes(snapshot / path), bytes);
  bool ranged = false;
  for (const auto& l : server.log())
    if (l.path == "/cdn/" + etag) ranged = l.range == "bytes=" + std::to_string(bytes.size() / 3) + "-";
  EXPECT_TRUE(ranged);
}

TEST_F(HubDownload, RestartsWhenTheServerIgnoresRange) {
  server.drop_next = 1;
  server.ignore_range = true;
  const fs::path snapshot = hub::snapshot_download(kRepo, options());
  for (const auto& path : kPlainFiles) EXPECT_EQ(read_bytes(snapshot / path), bytes_of(path)) << path;
}

TEST_F(HubDownload, AbsoluteRedirects) {
  server.absolute_redirects = true;
  const fs::path snapshot = hub::snapshot_download(kRepo, options());
  EXPECT_EQ(files_under(snapshot), kPlainFiles);
}

TEST_F(HubDownload, GivesUpWhenTheCdnKeepsFailing) {
  server.hang_up_cdn = true;
  auto o = options();
  o.max_attempts = 2;
  const std::string error = error_of([&] { hub::snapshot_download(kRepo, o); });
  EXPECT_NE(error.find("failed after"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(repo_folder() / "refs" / "main"));
}

TEST_F(HubDownload, ChecksumMismatchKeepsNothing) {
  server.corrupt = true;
  const std::string error = error_of([&] { hub::snapshot_download(kRepo, options()); });
  EXPECT_NE(error.find("checksum mismatch"), std::string::npos) << error;
  EXPECT_NE(error.find("deleted"), std::string::npos) << error;
  for (const auto& [path, file] : repo.files) {
    if (!file.lfs) continue;
    const std::string etag = HubServer::etag_of(file);
    EXPECT_FALSE(fs::exists(repo_folder() / "blobs" / etag)) << path;
    EXPECT_FALSE(fs::exists(repo_folder() / "blobs" / (etag + ".incomplete"))) << path;
    EXPECT_FALSE(fs::exists(fs::symlink_status(repo_folder() / "snapshots" / kCommit / path))) << path;
  }
  EXPECT_FALSE(fs::exists(repo_folder() / "refs" / "main"));

  server.corrupt = false;  // the next run succeeds
  EXPECT_EQ(files_under(hub::snapshot_download(kRepo, options())), kPlainFiles);
}

TEST_F(HubDownload, GatedModelNeedsAToken) {
  server.require_token("hf_secret");
  std::string error = error_of([&] { hub::snapshot_download(kRepo, options()); });
  EXPECT_NE(error.find("is gated or private: accept its license on the Hub and set HF_TOKEN"), std::string::npos)
      << error;
  env.set("HF_TOKEN", "hf_wrong");
  error = error_of([&] { hub::snapshot_download(kRepo, options()); });
  EXPECT_NE(error.find("refused"), std::string::npos) << error;

  env.set("HF_TOKEN", "hf_secret");
  EXPECT_EQ(files_under(hub::snapshot_download(kRepo, options())), kPlainFiles);

  // The token file of huggingface-cli login works too.
  env.set("HF_TOKEN", std::nullopt);
  fs::remove_all(cache());
  fs::create_directories(dir / "hf-home");
  std::ofstream(dir / "hf-home" / "token") << "hf_secret\n";
  EXPECT_EQ(files_under(hub::snapshot_download(kRepo, options())), kPlainFiles);
}

TEST_F(HubDownload, NotFoundErrors) {
  std::string error = error_of([&] { hub::snapshot_download("tide-test/nope", options()); });
  EXPECT_NE(error.find("model tide-test/nope not found"), std::string::npos) << error;
  auto o = options();
  o.revision = "no-such-branch";
  error = error_of([&] { hub::snapshot_download(kRepo, o); });
  EXPECT_NE(error.find("revision no-such-branch of model " + kRepo + " not found"), std::string::npos) << error;
  EXPECT_NE(error_of([&] { hub::snapshot_download("not-an-id", options()); }).find("not a Hugging Face model id"),
            std::string::npos);
}

TEST_F(HubDownload, ResolveModelTakesHubIds) {
  env.set("HF_ENDPOINT", server.endpoint());
  env.set("HF_HUB_CACHE", cache().string());
  EXPECT_EQ(tide::pipeline::resolve_model(kRepo + "@v1.0"), repo_folder() / "snapshots" / kCommit);
  EXPECT_EQ(read_bytes(repo_folder() / "refs" / "v1.0"), kCommit);
  EXPECT_EQ(tide::pipeline::resolve_model(dir.path().string()), dir.path());  // a local folder stays local
}

}  // namespace
