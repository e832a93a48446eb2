#include "tide/hub/hub_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "tide/io/atomic_file.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::hub {
namespace fs = std::filesystem;
namespace {

fs::path expand_home(const std::string& path) {
  if (path.rfind("~/", 0) == 0 && !env_or_empty("HOME").empty()) return fs::path(env_or_empty("HOME")) / path.substr(2);
  return path;
}

}  // namespace

fs::path hf_home() {
  if (!env_or_empty("HF_HOME").empty()) return expand_home(env_or_empty("HF_HOME"));
  if (!env_or_empty("XDG_CACHE_HOME").empty()) return expand_home(env_or_empty("XDG_CACHE_HOME")) / "huggingface";
  return expand_home("~/.cache") / "huggingface";
}

fs::path default_cache_dir() {
  if (!env_or_empty("HF_HUB_CACHE").empty()) return expand_home(env_or_empty("HF_HUB_CACHE"));
  return hf_home() / "hub";
}

bool is_commit_hash(const std::string& revision) {
  if (revision.size() != 40) return false;
  for (char c : revision)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

RepoCache::RepoCache(fs::path cache_dir, const std::string& repo_id) : cache_dir_(std::move(cache_dir)) {
  std::string name = "models--";
  for (char c : repo_id) name += c == '/' ? std::string("--") : std::string(1, c);
  folder_ = cache_dir_ / name;
}

fs::path RepoCache::lock_file(const std::string& etag) const {
  return cache_dir_ / ".locks" / folder_.filename() / (etag + ".lock");
}

std::optional<std::string> RepoCache::cached_commit(const std::string& revision) const {
  if (is_commit_hash(revision) && fs::is_directory(snapshot(revision))) return revision;
  std::optional<std::string> commit;
  std::ifstream in(folder_ / "refs" / revision);
  std::string line;
  if (in && std::getline(in, line) && is_commit_hash(line)) commit = line;
  return commit;
}

void RepoCache::write_ref(const std::string& revision, const std::string& commit) const {
  if (revision == commit) return;
  const fs::path ref = folder_ / "refs" / revision;  // "refs/pr/1" nests, as in huggingface_hub
  if (cached_commit(revision) == commit) return;
  fs::create_directories(ref.parent_path());
  io::write_file_atomically(ref, commit);
}

bool RepoCache::has_file(const std::string& commit, const std::string& path) const {
  std::error_code ec;
  return fs::is_regular_file(snapshot(commit) / path, ec);  // follows the symlink: a dangling one is false
}

void RepoCache::link(const std::string& commit, const std::string& path, const std::string& etag) const {
  const fs::path pointer = snapshot(commit) / path;
  fs::create_directories(pointer.parent_path());
  const fs::path target = fs::relative(blob(etag), pointer.parent_path());
  // A symlink under a temporary name renamed over the final one: readers never see it missing.
  const fs::path temporary = pointer.parent_path() / ("." + pointer.filename().string() + ".tmp" +
                                                      std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(temporary, ec);
  fs::create_symlink(target, temporary, ec);
  if (ec) throw Error("cannot create the symlink " + pointer.string() + " -> " + target.string() + ": " + ec.message());
  fs::rename(temporary, pointer, ec);
  if (ec) {
    fs::remove(temporary);
    throw Error("cannot create " + pointer.string() + ": " + ec.message());
  }
}

FileLock::FileLock(const fs::path& path) {
  fs::create_directories(path.parent_path());
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open the lock file " + path.string() + ": " + std::strerror(errno));
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd_);
    throw Error("cannot lock " + path.string() + ": " + std::strerror(err));
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

}  // namespace tide::hub
