// The Hugging Face cache layout, shared with huggingface_hub / diffusers so that models they
// downloaded are reused and the other way round:
//   {cache}/models--{org}--{name}/blobs/{etag}                 file contents, named by etag
//   {cache}/models--{org}--{name}/snapshots/{commit}/{path}    relative symlinks to the blobs
//   {cache}/models--{org}--{name}/refs/{revision}              the commit a branch or tag pointed to
//   {cache}/.locks/models--{org}--{name}/{etag}.lock           held while a blob is downloaded
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace tide::hub {

// $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::filesystem::path default_cache_dir();
// $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
std::filesystem::path hf_home();

// A 40-character lower-case hex string: a git commit hash.
bool is_commit_hash(const std::string& revision);

class RepoCache {
 public:
  RepoCache(std::filesystem::path cache_dir, const std::string& repo_id);

  const std::filesystem::path& folder() const { return folder_; }  // models--org--name
  std::filesystem::path blob(const std::string& etag) const { return folder_ / "blobs" / etag; }
  std::filesystem::path snapshot(const std::string& commit) const { return folder_ / "snapshots" / commit; }
  std::filesystem::path lock_file(const std::string& etag) const;

  // The commit `revision` resolves to in the cache: itself for a commit hash with a snapshot,
  // else the content of refs/{revision}.
  std::optional<std::string> cached_commit(const std::string& revision) const;
  // Records refs/{revision} = commit (atomically; nothing for a commit hash).
  void write_ref(const std::string& revision, const std::string& commit) const;

  // snapshots/{commit}/{path} exists and points at an existing blob (or is a regular file).
  bool has_file(const std::string& commit, const std::string& path) const;
  // Makes snapshots/{commit}/{path} a relative symlink to blobs/{etag} (replacing any old one atomically).
  void link(const std::string& commit, const std::string& path, const std::string& etag) const;

 private:
  std::filesystem::path cache_dir_, folder_;
};

// An exclusive advisory lock (flock) on a file, so that processes downloading the same model
// at once (e.g. every rank of an MPI job) write each blob only once.
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace tide::hub
