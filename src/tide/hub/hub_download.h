// Internals of hub.cpp: one file's metadata (HEAD on its resolve URL) and the resumable,
// verified download of its blob. Not a public API.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tide/hub/hub_cache.h"
#include "tide/hub/http.h"

namespace tide::hub::detail {

// What one snapshot_download call talks to, and how.
struct Session {
  std::string repo_id, revision, endpoint;
  std::string token;  // "" = anonymous
  bool progress = true;
  int max_attempts = 5;
  double retry_wait_seconds = 1.0;

  // Accept-Encoding: identity (byte counts must match the sizes), plus the token for the Hub
  // itself only: never sent to a CDN on another host.
  std::vector<std::string> headers_for(const std::string& url) const;
  // Turns an HTTP error status into a tide::Error that says what to do. `file` is "" for the API.
  [[noreturn]] void fail(const http::Response& response, const std::string& url, const std::string& file) const;
  // Sleeps before retry number `failures` (1, 2, ...).
  void wait_before_retry(int failures) const;
};

struct FileMeta {
  std::string commit;    // X-Repo-Commit
  std::string etag;      // X-Linked-Etag (LFS: the sha256) or ETag (git blob id), normalized
  std::string location;  // where the bytes are: the resolve URL itself or the CDN it redirects to
  std::optional<uint64_t> size;  // X-Linked-Size or Content-Length
};

// HEAD {endpoint}/{repo}/resolve/{commit}/{path}; follows the Hub's own relative redirects (a
// renamed repo) but stops at the redirect that carries X-Linked-Etag (the LFS file's CDN address).
FileMeta head_file(const Session& session, const std::string& commit, const std::string& path);

// Downloads meta.location to blobs/{etag} through blobs/{etag}.incomplete: resumes a partial
// file with a Range request, retries dropped connections, checks size and (LFS) sha256, and
// only then renames. A mismatch deletes the partial file. `label` names the file in messages.
void download_blob(const Session& session, const RepoCache& cache, const FileMeta& meta, const std::string& label);

bool is_sha256_hex(const std::string& text);

}  // namespace tide::hub::detail
