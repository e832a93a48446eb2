#include "tide/hub/hub.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "tide/io/json_file.h"
#include "tide/hub/hub_cache.h"
#include "tide/hub/hub_download.h"
#include "tide/hub/http.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::hub {
namespace fs = std::filesystem;
using detail::Session;
namespace {

// Components diffusers may list that tide never runs.
const std::set<std::string> kSkippedComponents = {"safety_checker", "feature_extractor", "image_encoder"};
// Non-weight files a component needs: model/scheduler configs and the CLIP BPE tokenizer.
const std::set<std::string> kComponentFiles = {"config.json",          "scheduler_config.json", "vocab.json",
                                                "merges.txt",           "tokenizer_config.json",
                                                "special_tokens_map.json"};

bool env_truthy(const char* name) {
  std::string v = env_or_empty(name);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::toupper(c); });
  return v == "1" || v == "ON" || v == "YES" || v == "TRUE";
}

std::string find_token() {
  const std::string token = trim(env_or_empty("HF_TOKEN"));
  if (!token.empty()) return token;
  const std::string token_path = env_or_empty("HF_TOKEN_PATH");
  const fs::path file = !token_path.empty() ? fs::path(token_path) : hf_home() / "token";
  std::ifstream in(file);
  std::string line;
  if (in && std::getline(in, line)) return trim(line);
  return "";
}

bool is_weight_file(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".safetensors") || (ends_with(".json") && name.find(".safetensors.index") != std::string::npos);
}

// A sibling of the repo, with what the model info API says about it (with ?blobs=true).
struct Sibling {
  std::string path;
  std::string etag;  // lfs.sha256 or blobId: lets a blob already in the cache be linked without a request
};

struct RepoInfo {
  std::string commit;
  std::map<std::string, Sibling> siblings;
};

// Thrown when the Hub cannot be reached at all (the cache may still serve the model).
struct Unreachable : Error {
  using Error::Error;
};

RepoInfo fetch_repo_info(const Session& s) {
  const std::string url = s.endpoint + "/api/models/" + s.repo_id + "/revision/" + http::url_encode(s.revision, false) +
                          "?blobs=true";
  http::Request request;
  request.url = url;
  request.headers = s.headers_for(url);
  http::Response response;
  http::TransportError error;
  int failures = 0;
  while (!http::perform(request, response, error) || response.status >= 500) {
    const std::string why = response.status ? "HTTP " + std::to_string(response.status) : error.message;
    if (++failures >= std::min(s.max_attempts, 3))
      throw Unreachable("cannot reach " + s.endpoint + " (" + why + ") to download model " + s.repo_id);
    s.wait_before_retry(failures);
  }
  if (response.status != 200) s.fail(response, url, "");
  RepoInfo info;
  try {
    const auto json = nlohmann::json::parse(response.body);
    info.commit = json.at("sha").get<std::string>();
    for (const auto& sibling : json.value("siblings", nlohmann::json::array())) {
      Sibling entry{sibling.at("rfilename").get<std::string>(), ""};
      if (sibling.contains("lfs") && sibling["lfs"].is_object() && sibling["lfs"].contains("sha256"))
        entry.etag = sibling["lfs"]["sha256"].get<std::string>();
      else if (sibling.contains("blobId") && sibling["blobId"].is_string())
        entry.etag = sibling["blobId"].get<std::string>();
      info.siblings[entry.path] = entry;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("unexpected answer from " + url + ": " + e.what());
  }
  if (!is_commit_hash(info.commit)) throw Error("unexpected answer from " + url + ": no commit hash in 'sha'");
  return info;
}

// Brings one file into snapshots/{commit}: nothing to do when it is there, a symlink when its
// blob is (shared with another revision), else a download.
void ensure_file(const Session& s, const RepoCache& cache, const std::string& commit, const Sibling& sibling,
                 const std::string& label) {
  if (cache.has_file(commit, sibling.path)) return;
  if (!sibling.etag.empty() && fs::is_regular_file(cache.blob(sibling.etag))) {
    cache.link(commit, sibling.path, sibling.etag);
    return;
  }
  const detail::FileMeta meta = detail::head_file(s, commit, sibling.path);
  if (meta.etag.empty())
    throw Error("the server sent no ETag for " + sibling.path + " of model " + s.repo_id + ": is " + s.endpoint +
                " a Hugging Face Hub?");
  if (meta.etag.find('/') != std::string::npos || meta.etag.find("..") != std::string::npos)
    throw Error("unexpected ETag '" + meta.etag + "' for " + sibling.path);  // it names a file in blobs/
  if (!fs::is_regular_file(cache.blob(meta.etag))) detail::download_blob(s, cache, meta, label);
  cache.link(commit, sibling.path, meta.etag);
}

// The non-null, non-skipped components of a model_index.json.
std::vector<std::string> pipeline_components(const nlohmann::json& model_index) {
  std::vector<std::string> names;
  if (!model_index.is_object()) return names;
  for (const auto& [name, value] : model_index.items()) {
    if (name.empty() || name[0] == '_' || kSkippedComponents.count(name)) continue;
    if (value.is_array() && !value.empty() && !value[0].is_null()) names.push_back(name);
  }
  return names;
}

// model_index.json reduced to `wanted` components (all when empty).
nlohmann::json restrict_components(const nlohmann::json& model_index, const std::vector<std::string>& wanted) {
  if (wanted.empty() || !model_index.is_object()) return model_index;
  nlohmann::json reduced = nlohmann::json::object();
  for (const auto& [name, value] : model_index.items())
    if ((!name.empty() && name[0] == '_') || std::find(wanted.begin(), wanted.end(), name) != wanted.end())
      reduced[name] = value;
  return reduced;
}

// Every regular file under a snapshot folder, as repo-relative paths.
std::vector<std::string> snapshot_files(const fs::path& folder) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(folder, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (fs::is_regular_file(it->path())) files.push_back(it->path().lexically_relative(folder).generic_string());  // not resolving the links
  return files;
}

// The cached snapshot of the revision, when it holds every component of its model_index.json.
fs::path cached_snapshot(const Session& s, const RepoCache& cache, const Options& options,
                         const std::string& why_no_download) {
  const std::string hint = why_no_download + ": run once without it to download the model";
  const auto commit = cache.cached_commit(s.revision);
  if (!commit || !cache.has_file(*commit, "model_index.json"))
    throw Error("model " + s.repo_id + " (revision " + s.revision + ") is not in the Hugging Face cache " +
                cache.folder().parent_path().string() + ", and " + hint);
  const fs::path folder = cache.snapshot(*commit);
  const auto model_index = restrict_components(io::read_json(folder / "model_index.json"), options.components);
  const auto selected = select_pipeline_files(snapshot_files(folder), model_index, options.variant);
  for (const auto& component : pipeline_components(model_index)) {
    const bool present = std::any_of(selected.begin(), selected.end(),
                                     [&](const std::string& f) { return f.rfind(component + "/", 0) == 0; });
    if (!present)
      throw Error("the cached snapshot " + folder.string() + " of model " + s.repo_id + " lacks its " + component +
                  " files, and " + hint);
  }
  return folder;
}

}  // namespace

std::optional<RepoRef> parse_repo_ref(const std::string& text) {
  RepoRef ref;
  const size_t at = text.find('@');
  ref.repo_id = text.substr(0, at);
  if (at != std::string::npos) {
    ref.revision = text.substr(at + 1);
    if (ref.revision->empty()) return std::nullopt;
  }
  const size_t slash = ref.repo_id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == ref.repo_id.size() ||
      ref.repo_id.find('/', slash + 1) != std::string::npos || ref.repo_id.size() > 96)
    return std::nullopt;
  for (char c : ref.repo_id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/'))
      return std::nullopt;
  if (ref.repo_id.find("..") != std::string::npos || ref.repo_id.find("--") != std::string::npos ||
      ref.repo_id[0] == '.')
    return std::nullopt;
  return ref;
}

std::string normalize_etag(const std::string& etag) {
  std::string e = etag;
  if (e.rfind("W/", 0) == 0) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

std::string weight_variant(const std::string& file_name) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = file_name.find('.', start)) != std::string::npos; start = dot + 1)
    parts.push_back(file_name.substr(start, dot - start));
  parts.push_back(file_name.substr(start));
  std::string variant;
  for (size_t i = 1; i < parts.size(); ++i) {  // parts[0] is the stem
    std::string part = parts[i];
    const size_t shard = part.find("-0");  // "fp16-00001-of-00002"
    if (shard != std::string::npos && part.find("-of-", shard) != std::string::npos) part = part.substr(0, shard);
    if (part.empty() || part == "safetensors" || part == "index" || part == "json") continue;
    variant += (variant.empty() ? "" : ".") + part;
  }
  return variant;
}

std::vector<std::string> select_pipeline_files(const std::vector<std::string>& files, const nlohmann::json& model_index,
                                               const std::string& variant) {
  std::vector<std::string> selected;
  if (std::find(files.begin(), files.end(), "model_index.json") != files.end()) selected.push_back("model_index.json");
  for (const auto& component : pipeline_components(model_index)) {
    const std::string prefix = component + "/";
    std::vector<std::string> weights;
    bool has_variant = false;
    for (const auto& file : files) {
      if (file.rfind(prefix, 0) != 0) continue;
      const std::string name = file.substr(prefix.size());
      if (name.find('/') != std::string::npos) continue;  // only the component folder itself
      if (kComponentFiles.count(name)) selected.push_back(file);
      if (!is_weight_file(name)) continue;
      weights.push_back(file);
      if (!variant.empty() && weight_variant(name) == variant) has_variant = true;
    }
    // The requested variant where this component has it, else the plain weights.
    const std::string wanted = has_variant ? variant : "";
    for (const auto& file : weights)
      if (weight_variant(file.substr(prefix.size())) == wanted) selected.push_back(file);
  }
  return selected;
}

fs::path snapshot_download(const std::string& repo_id, const Options& options) {
  if (!parse_repo_ref(repo_id) || repo_id.find('@') != std::string::npos)
    throw Error("'" + repo_id + "' is not a Hugging Face model id (org/name)");
  Session s;
  s.repo_id = repo_id;
  s.revision = options.revision.empty() ? "main" : options.revision;
  s.endpoint = !options.endpoint.empty() ? options.endpoint
               : !env_or_empty("HF_ENDPOINT").empty() ? env_or_empty("HF_ENDPOINT")
                                             : "https://huggingface.co";
  while (!s.endpoint.empty() && s.endpoint.back() == '/') s.endpoint.pop_back();
  s.token = options.token ? *options.token : find_token();
  s.progress = options.progress;
  s.max_attempts = std::max(1, options.max_attempts);
  s.retry_wait_seconds = options.retry_wait_seconds;
  const RepoCache cache(options.cache_dir.empty() ? default_cache_dir() : options.cache_dir, repo_id);

  if (options.offline ? *options.offline : env_truthy("HF_HUB_OFFLINE"))
    return cached_snapshot(s, cache, options, "HF_HUB_OFFLINE=1 forbids downloading");

  RepoInfo info;
  try {
    info = fetch_repo_info(s);
  } catch (const Unreachable& e) {
    try {  // like huggingface_hub: an unreachable Hub is not fatal when the cache has the model
      const fs::path folder = cached_snapshot(s, cache, options, "the Hub cannot be reached");
      std::fprintf(stderr, "tide: %s; using the cached snapshot %s\n", e.what(), folder.string().c_str());
      return folder;
    } catch (const Error&) {
      throw Error(std::string(e.what()) + ", which is not a local folder either, nor in the cache: check the " +
                  "network or HF_ENDPOINT");
    }
  }
  if (!info.siblings.count("model_index.json"))
    throw Error("model " + repo_id + " (revision " + s.revision + ") has no model_index.json: tide reads diffusers " +
                "pipelines, and this repository is not one");

  ensure_file(s, cache, info.commit, info.siblings.at("model_index.json"), "model_index.json");
  const auto model_index =
      restrict_components(io::read_json(cache.snapshot(info.commit) / "model_index.json"), options.components);
  std::vector<std::string> names;
  for (const auto& [path, sibling] : info.siblings) names.push_back(path);
  const auto selected = select_pipeline_files(names, model_index, options.variant);
  for (size_t i = 0; i < selected.size(); ++i) {
    const std::string label = "[" + std::to_string(i + 1) + "/" + std::to_string(selected.size()) + "] " + selected[i];
    ensure_file(s, cache, info.commit, info.siblings.at(selected[i]), label);
  }
  // Last: a ref never names a snapshot that is still missing files.
  cache.write_ref(s.revision, info.commit);
  return cache.snapshot(info.commit);
}

}  // namespace tide::hub
