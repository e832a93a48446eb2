#include "tide/hub/hub_download.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "tide/hub/hub.h"
#include "tide/runtime/error.h"
#include "tide/runtime/progress.h"
#include "tide/runtime/sha256.h"

namespace tide::hub::detail {
namespace fs = std::filesystem;
namespace {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

// One file's bar: bytes, speed, ETA; rewritten in place on a terminal, silent otherwise.
class ByteProgress {
 public:
  ByteProgress(std::string label, std::optional<uint64_t> total, uint64_t start, bool enabled)
      : label_(std::move(label)), total_(total), start_bytes_(start),
        active_(enabled && runtime::Progress::on_terminal()), start_(std::chrono::steady_clock::now()) {
    if (label_.size() > 48) label_ = "..." + label_.substr(label_.size() - 45);
  }

  void update(uint64_t done, bool force = false) {
    if (!active_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double speed = elapsed > 0 ? double(done - std::min(done, start_bytes_)) / elapsed : 0;
    std::string line = "\r" + label_ + " ";
    if (total_ && *total_ > 0) {
      const int width = 20;
      const int filled = int(std::min<uint64_t>(width, width * done / *total_));
      line += "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "] " +
              format_bytes(double(done)) + "/" + format_bytes(double(*total_));
    } else {
      line += format_bytes(double(done));
    }
    line += "  " + format_bytes(speed) + "/s";
    if (total_ && speed > 0 && done < *total_)
      line += "  ETA " + runtime::format_duration(double(*total_ - done) / speed);
    std::fprintf(stderr, "%s\x1b[K", line.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

  // Ends the line (so that a warning or the next file starts on its own line).
  void finish() {
    if (active_ && drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string label_;
  std::optional<uint64_t> total_;
  uint64_t start_bytes_;
  bool active_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_{};
};

bool retryable_status(long status) { return status == 429 || status >= 500; }

std::string error_detail(const http::Response& response) {
  std::string message = response.header("x-error-message");
  if (message.empty() && !response.body.empty() && response.body.size() < 300 &&
      response.header("content-type").find("html") == std::string::npos)
    message = response.body;
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
  return message.empty() ? "" : " (the server says: " + message + ")";
}

}  // namespace

bool is_sha256_hex(const std::string& text) {
  if (text.size() != 64) return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::vector<std::string> Session::headers_for(const std::string& url) const {
  std::vector<std::string> headers = {"Accept-Encoding: identity"};
  if (!token.empty() && http::origin_of(url) == http::origin_of(endpoint))
    headers.push_back("Authorization: Bearer " + token);
  return headers;
}

void Session::wait_before_retry(int failures) const {
  const double seconds = std::min(8.0, retry_wait_seconds * double(1 << std::min(failures - 1, 10)));
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

void Session::fail(const http::Response& response, const std::string& url, const std::string& file) const {
  const long status = response.status;
  const std::string code = response.header("x-error-code");
  const std::string at = " (revision " + revision + ")";
  if (status == 401 || status == 403) {
    if (code == "RepoNotFound")
      throw Error("model " + repo_id + " not found on " + endpoint + ": check the name; if it is private, set HF_TOKEN" +
                  " to a token that can read it");
    throw Error("model " + repo_id + " is gated or private: accept its license on the Hub and set HF_TOKEN " +
                "to a token of that account (" + endpoint + "/" + repo_id + "); " +
                (token.empty() ? std::string("no token is set")
                               : "the token given was refused (HTTP " + std::to_string(status) + ")") +
                error_detail(response));
  }
  if (status == 404) {
    if (code == "RevisionNotFound") throw Error("revision " + revision + " of model " + repo_id + " not found on " + endpoint);
    if (code == "RepoNotFound" || (file.empty() && code != "EntryNotFound"))
      throw Error("model " + repo_id + " not found on " + endpoint + " (nor a local folder of that name)");
    throw Error("file " + file + " not found in model " + repo_id + at + " on " + endpoint);
  }
  throw Error(endpoint + " answered HTTP " + std::to_string(status) + " for " + url + error_detail(response));
}

FileMeta head_file(const Session& session, const std::string& commit, const std::string& path) {
  std::string url = session.endpoint + "/" + session.repo_id + "/resolve/" + http::url_encode(commit, false) + "/" +
                    http::url_encode(path, true);
  FileMeta meta;
  int failures = 0;
  for (int hops = 0; hops < 10;) {
    http::Request request;
    request.method = "HEAD";
    request.url = url;
    request.headers = session.headers_for(url);
    http::Response response;
    http::TransportError error;
    if (!http::perform(request, response, error) || retryable_status(response.status)) {
      const std::string why = response.status ? "HTTP " + std::to_string(response.status) : error.message;
      if (++failures >= session.max_attempts)
        throw Error("cannot reach " + http::origin_of(url) + " for " + path + ": " + why + " (after " +
                    std::to_string(failures) + " attempts)");
      session.wait_before_retry(failures);
      continue;
    }
    if (meta.commit.empty()) meta.commit = response.header("x-repo-commit");
    const std::string linked_etag = response.header("x-linked-etag");
    meta.etag = normalize_etag(linked_etag.empty() ? response.header("etag") : linked_etag);
    if (!response.header("x-linked-size").empty()) meta.size = std::stoull(response.header("x-linked-size"));
    const long status = response.status;
    if (status >= 300 && status < 400) {
      const std::string location = response.header("location");
      if (location.empty()) session.fail(response, url, path);
      const std::string next = http::resolve_location(url, location);
      // The LFS redirect (it carries the linked etag) or one to another host: the bytes are there.
      if (!linked_etag.empty() || http::origin_of(next) != http::origin_of(url)) {
        meta.location = next;
        return meta;
      }
      url = next;
      ++hops;
      continue;
    }
    if (status < 200 || status >= 300) session.fail(response, url, path);
    if (!meta.size && !response.header("content-length").empty()) meta.size = std::stoull(response.header("content-length"));
    meta.location = url;
    return meta;
  }
  throw Error("too many redirects for " + path + " of model " + session.repo_id);
}

void download_blob(const Session& session, const RepoCache& cache, const FileMeta& meta, const std::string& label) {
  const fs::path blob = cache.blob(meta.etag);
  fs::create_directories(blob.parent_path());
  FileLock lock(cache.lock_file(meta.etag));
  if (fs::exists(blob)) return;  // another process finished it while this one waited for the lock
  const fs::path partial = blob.string() + ".incomplete";
  const bool check_sha = is_sha256_hex(meta.etag);  // LFS: the etag is the content's sha256

  runtime::Sha256 hasher;
  uint64_t have = 0;
  std::error_code ec;
  if (fs::exists(partial)) {
    have = fs::file_size(partial);
    if (meta.size && have > *meta.size) {
      fs::remove(partial);
      have = 0;
    } else if (have > 0 && check_sha) {  // resuming an earlier run: hash what is already there
      std::FILE* in = std::fopen(partial.c_str(), "rb");
      if (!in) throw Error("cannot read the partial download " + partial.string());
      std::vector<char> buf(1 << 20);
      size_t n;
      uint64_t read = 0;
      while (read < have && (n = std::fread(buf.data(), 1, std::min<uint64_t>(buf.size(), have - read), in)) > 0) {
        hasher.update(buf.data(), n);
        read += n;
      }
      std::fclose(in);
      have = read;
    }
  }

  if (meta.size && *meta.size == 0) {  // nothing to fetch, but the blob must exist
    std::FILE* empty = std::fopen(partial.c_str(), "wb");
    if (!empty) throw Error("cannot write " + partial.string() + ": " + std::strerror(errno));
    std::fclose(empty);
  }

  ByteProgress progress(label, meta.size, have, session.progress);
  std::string url = meta.location;
  int failures = 0, redirects = 0;
  while (!(meta.size && have == *meta.size)) {
    std::FILE* out = std::fopen(partial.c_str(), have > 0 ? "r+b" : "wb");
    if (!out) throw Error("cannot write " + partial.string() + ": " + std::strerror(errno));
    std::fseek(out, long(have), SEEK_SET);
    http::Request request;
    request.url = url;
    request.headers = session.headers_for(url);
    if (have > 0) request.headers.push_back("Range: bytes=" + std::to_string(have) + "-");
    http::Response response;
    const uint64_t before = have;
    bool first = true;
    int write_errno = 0;
    request.sink = [&](const char* data, size_t size) {
      if (first && response.status == 200 && have > 0) {
        // The server ignored the Range and sends everything: start over.
        if (::ftruncate(::fileno(out), 0) != 0 || std::fseek(out, 0, SEEK_SET) != 0) {
          write_errno = errno;
          return false;
        }
        have = 0;
        hasher = runtime::Sha256();
      }
      first = false;
      if (std::fwrite(data, 1, size, out) != size) {
        write_errno = errno ? errno : EIO;
        return false;
      }
      if (check_sha) hasher.update(data, size);
      have += size;
      progress.update(have);
      return true;
    };
    http::TransportError error;
    const bool transferred = http::perform(request, response, error);
    if (std::fclose(out) != 0 && !write_errno) write_errno = errno ? errno : EIO;
    if (write_errno)
      throw Error("cannot write " + partial.string() + ": " + std::strerror(write_errno) + " (is the disk full?)");

    std::string why;
    if (!transferred) {
      why = error.message;
    } else if (response.status == 416) {  // the partial file does not fit the remote one: start over
      fs::remove(partial, ec);
      have = 0;
      hasher = runtime::Sha256();
      why = "HTTP 416 for a resumed download";
    } else if (retryable_status(response.status)) {
      why = "HTTP " + std::to_string(response.status);
    } else if (response.status >= 300 && response.status < 400 && !response.header("location").empty() &&
               ++redirects < 10) {
      url = http::resolve_location(url, response.header("location"));  // a CDN may redirect once more
      continue;
    } else if (response.status < 200 || response.status >= 300) {
      progress.finish();
      session.fail(response, url, label);
    } else if (!meta.size || have >= *meta.size) {
      break;  // complete (or longer than announced, which the check below reports)
    } else {
      why = "the server closed the transfer early";
    }
    if (have > before) failures = 0;  // progress was made: each stall gets a fresh set of attempts
    progress.finish();
    if (++failures >= session.max_attempts)
      throw Error("download of " + label + " failed after " + std::to_string(failures) + " attempts: " + why +
                  ". The " + std::to_string(have) + " bytes received are kept in " + partial.string() +
                  "; running again resumes there");
    std::fprintf(stderr, "tide: download of %s interrupted (%s); resuming at %s (attempt %d of %d)\n", label.c_str(),
                 why.c_str(), format_bytes(double(have)).c_str(), failures + 1, session.max_attempts);
    session.wait_before_retry(failures);
  }
  progress.update(have, true);
  progress.finish();

  // Verify before the blob gets its final name; a bad file is deleted, never kept.
  if (meta.size && have != *meta.size) {
    fs::remove(partial, ec);
    throw Error("download of " + label + " has " + std::to_string(have) + " bytes but the Hub announced " +
                std::to_string(*meta.size) + "; the bad file was deleted, run again");
  }
  if (check_sha) {
    const std::string digest = hasher.hex_digest();
    if (digest != meta.etag) {
      fs::remove(partial, ec);
      throw Error("checksum mismatch for " + label + " of model " + session.repo_id + ": sha256 " + digest +
                  ", expected " + meta.etag + "; the corrupted download was deleted, run again");
    }
  }
  fs::rename(partial, blob, ec);
  if (ec) throw Error("cannot move " + partial.string() + " to " + blob.string() + ": " + ec.message());
}

}  // namespace tide::hub::detail
