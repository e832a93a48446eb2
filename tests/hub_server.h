// A tiny HTTP/1.1 server on 127.0.0.1 (ephemeral port, one thread per connection, every
// connection closed after one response) that serves model repositories the way the Hugging Face
// Hub does, for the download tests:
//   GET  /api/models/{org}/{name}/revision/{rev}   {"sha": commit, "siblings": [{rfilename, size, blobId, lfs}]}
//   HEAD/GET /{org}/{name}/resolve/{rev}/{path}    X-Repo-Commit, ETag; LFS files: 302 to /cdn/{sha256}
//                                                  with X-Linked-Etag and X-Linked-Size
//   GET  /cdn/{sha256}                             the LFS bytes, with Range support (206)
// plus switches to misbehave: drop connections mid-body, corrupt LFS bytes, require a token.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tide/runtime/sha256.h"

namespace tide::testing {

class HubServer {
 public:
  struct File {
    std::string bytes;
    bool lfs = false;  // served through a redirect to /cdn/{sha256}, like weights on the Hub
  };
  struct Repo {
    std::string commit;                        // 40 hex characters
    std::map<std::string, std::string> refs;   // branch/tag → commit (besides "main")
    std::map<std::string, File> files;
  };
  // One request as the server saw it.
  struct Logged {
    std::string method, path, range;
    int status = 0;
  };

  HubServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(listen_fd_, 64) != 0)
      throw std::runtime_error("hub test server: cannot listen on 127.0.0.1");
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~HubServer() {
    stop_ = true;
    acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lock(mutex_);  // not held while joining: workers take it too
      workers.swap(workers_);
    }
    for (auto& t : workers) t.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  void add_repo(const std::string& id, Repo repo) {
    std::lock_guard<std::mutex> lock(mutex_);
    repo.refs["main"] = repo.commit;
    for (const auto& [path, file] : repo.files)
      if (file.lfs) cdn_[runtime::sha256_hex(file.bytes)] = file.bytes;
    repos_[id] = std::move(repo);
  }

  // The LFS sha256 or (for other files) a stand-in for the git blob id, as the Hub's ETag.
  static std::string etag_of(const File& f) {
    const std::string sha = runtime::sha256_hex(f.bytes);
    return f.lfs ? sha : sha.substr(0, 40);
  }

  // Switches (set them between downloads).
  std::atomic<int> drop_next{0};             // the next N CDN bodies: half sent, then the connection closed
  std::atomic<bool> corrupt{false};          // LFS bodies with wrong bytes (same length)
  std::atomic<bool> absolute_redirects{false};
  std::atomic<bool> ignore_range{false};     // answer ranged requests with the whole file (200)
  std::atomic<bool> hang_up_cdn{false};      // close CDN connections without answering
  void require_token(const std::string& token) {
    std::lock_guard<std::mutex> lock(mutex_);
    token_ = token;
  }

  std::vector<Logged> log() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return log_;
  }
  void clear_log() {
    std::lock_guard<std::mutex> lock(mutex_);
    log_.clear();
  }
  int count(const std::string& path_prefix) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return int(std::count_if(log_.begin(), log_.end(),
                             [&](const Logged& l) { return l.path.rfind(path_prefix, 0) == 0; }));
  }
  int api_requests() const { return count("/api/"); }
  int file_requests() const {  // resolve and CDN requests
    std::lock_guard<std::mutex> lock(mutex_);
    return int(std::count_if(log_.begin(), log_.end(), [](const Logged& l) { return l.path.rfind("/api/", 0) != 0; }));
  }

 private:
  struct Reply {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
  };

  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard<std::mutex> lock(mutex_);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static std::string url_decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }

  static void send_all(int fd, const char* data, size_t size) {
    while (size > 0) {
      const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
      if (n <= 0) return;
      data += n;
      size -= size_t(n);
    }
  }

  void serve(int fd) {
    std::string request;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, size_t(n));
    }
    std::string method, target;
    std::map<std::string, std::string> headers;
    {
      const size_t eol = request.find("\r\n");
      const std::string line = request.substr(0, eol);
      const size_t a = line.find(' '), b = line.rfind(' ');
      if (a != std::string::npos && b > a) {
        method = line.substr(0, a);
        target = line.substr(a + 1, b - a - 1);
      }
      for (size_t pos = eol + 2; eol != std::string::npos && pos < request.size();) {
        const size_t end = request.find("\r\n", pos);
        if (end == std::string::npos || end == pos) break;
        const std::string h = request.substr(pos, end - pos);
        const size_t colon = h.find(':');
        if (colon != std::string::npos) {
          std::string name = h.substr(0, colon);
          std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
          size_t v = colon + 1;
          while (v < h.size() && h[v] == ' ') ++v;
          headers[name] = h.substr(v);
        }
        pos = end + 2;
      }
    }
    const std::string path = target.substr(0, target.find('?'));
    if (hang_up_cdn && path.rfind("/cdn/", 0) == 0) {
      ::close(fd);
      return;
    }
    Reply reply = route(method, path, headers);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      log_.push_back({method, path, headers.count("range") ? headers["range"] : "", reply.status});
    }
    std::string head = "HTTP/1.1 " + std::to_string(reply.status) + " " + reason(reply.status) + "\r\n";
    for (const auto& [name, value] : reply.headers) head += name + ": " + value + "\r\n";
    head += "Content-Length: " + std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n";
    send_all(fd, head.data(), head.size());
    if (method != "HEAD") {
      size_t size = reply.body.size();
      int drops = drop_next.load();
      const bool drop = path.rfind("/cdn/", 0) == 0 && reply.status / 100 == 2 && size > 1 && drops > 0 &&
                        drop_next.compare_exchange_strong(drops, drops - 1);
      if (drop) size /= 2;  // announce everything, send half, hang up
      send_all(fd, reply.body.data(), size);
    }
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
  }

  static const char* reason(int status) {
    switch (status) {
      case 200: return "OK";
      case 206: return "Partial Content";
      case 302: return "Found";
      case 401: return "Unauthorized";
      case 404: return "Not Found";
      case 416: return "Range Not Satisfiable";
      default: return "Status";
    }
  }

  static Reply error(int status, const std::string& code, const std::string& message) {
    Reply r;
    r.status = status;
    r.headers = {{"X-Error-Code", code}, {"X-Error-Message", message}, {"Content-Type", "application/json"}};
    r.body = nlohmann::json{{"error", message}}.dump();
    return r;
  }

  // Serves `bytes` honouring "Range: bytes=N-".
  Reply body_reply(const std::string& bytes, std::map<std::string, std::string>& headers) {
    Reply r;
    r.body = bytes;
    const auto range = headers.find("range");
    if (range != headers.end() && !ignore_range && range->second.rfind("bytes=", 0) == 0) {
      const size_t from = std::stoull(range->second.substr(6));
      if (from >= bytes.size()) {
        Reply bad;
        bad.status = 416;
        bad.headers = {{"Content-Range", "bytes */" + std::to_string(bytes.size())}};
        return bad;
      }
      r.status = 206;
      r.headers.push_back({"Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(bytes.size() - 1) +
                                                "/" + std::to_string(bytes.size())});
      r.body = bytes.substr(from);
    }
    return r;
  }

  Reply route(const std::string& method, const std::string& path, std::map<std::string, std::string>& headers) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (path.rfind("/cdn/", 0) == 0) {
      auto it = cdn_.find(path.substr(5));
      if (it == cdn_.end()) return error(404, "EntryNotFound", "no such object");
      std::string bytes = it->second;
      if (corrupt)
        for (size_t i = 0; i < bytes.size(); i += 7) bytes[i] = char(bytes[i] ^ 0x5a);
      Reply r = body_reply(bytes, headers);
      r.headers.push_back({"ETag", "\"" + path.substr(5) + "\""});
      return r;
    }
    const bool api = path.rfind("/api/models/", 0) == 0;
    const std::string rest = api ? path.substr(12) : path.substr(1);
    const std::string marker = api ? "/revision/" : "/resolve/";
    const size_t at = rest.find(marker);
    if (at == std::string::npos) return error(404, "", "not found");
    const std::string repo_id = rest.substr(0, at);
    std::string tail = rest.substr(at + marker.size());
    const std::string revision = url_decode(api ? tail : tail.substr(0, tail.find('/')));
    const std::string file = api ? "" : url_decode(tail.find('/') == std::string::npos ? "" : tail.substr(tail.find('/') + 1));

    if (!token_.empty() && headers["authorization"] != "Bearer " + token_)
      return error(401, "GatedRepo", "Access to model " + repo_id + " is restricted. You must be authenticated.");
    auto repo = repos_.find(repo_id);
    if (repo == repos_.end()) return error(404, "RepoNotFound", "Repository not found");
    std::string commit = revision;
    if (auto ref = repo->second.refs.find(revision); ref != repo->second.refs.end()) commit = ref->second;
    if (commit != repo->second.commit) return error(404, "RevisionNotFound", "Invalid rev id: " + revision);

    if (api) {
      nlohmann::json siblings = nlohmann::json::array();
      for (const auto& [name, f] : repo->second.files) {
        nlohmann::json s = {{"rfilename", name}, {"size", f.bytes.size()}, {"blobId", etag_of(f).substr(0, 40)}};
        if (f.lfs) s["lfs"] = {{"sha256", etag_of(f)}, {"size", f.bytes.size()}, {"pointerSize", 134}};
        siblings.push_back(s);
      }
      Reply r;
      r.headers = {{"Content-Type", "application/json"}};
      r.body = nlohmann::json{{"id", repo_id}, {"sha", commit}, {"siblings", siblings}}.dump();
      return r;
    }
    auto f = repo->second.files.find(file);
    if (f == repo->second.files.end()) return error(404, "EntryNotFound", "Entry not found");
    const std::string etag = etag_of(f->second);
    if (f->second.lfs) {
      Reply r;
      r.status = 302;
      const std::string cdn = "/cdn/" + etag;
      r.headers = {{"Location", absolute_redirects ? endpoint() + cdn : cdn},
                   {"X-Repo-Commit", commit},
                   {"ETag", "\"" + etag.substr(0, 40) + "\""},  // the pointer file's git id
                   {"X-Linked-Etag", "\"" + etag + "\""},
                   {"X-Linked-Size", std::to_string(f->second.bytes.size())}};
      r.body = "Found. Redirecting to " + cdn;
      return r;
    }
    Reply r = body_reply(f->second.bytes, headers);
    r.headers.push_back({"X-Repo-Commit", commit});
    r.headers.push_back({"ETag", "\"" + etag + "\""});
    return r;
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::vector<std::thread> workers_;
  std::map<std::string, Repo> repos_;
  std::map<std::string, std::string> cdn_;
  std::string token_;
  std::vector<Logged> log_;
};

}  // namespace tide::testing
