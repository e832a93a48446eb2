// HTTP over libcurl (builds with curl; http_without_curl.cpp stands in for it otherwise).
#include "tide/hub/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

#include "tide/runtime/build_features.h"
#include "tide/runtime/strings.h"
#include "tide/version.h"

namespace tide {
bool built_with_curl() { return true; }
}  // namespace tide

namespace tide::hub::http {
namespace {

struct Transfer {
  const Request* request;
  Response* response;
  bool success_status = false;  // the current response is 2xx: its body goes to the sink
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response starts (e.g. after "100 Continue"): keep only its headers.
    t->response->headers.clear();
    const size_t space = line.find(' ');
    t->response->status = space == std::string::npos ? 0 : std::atol(line.c_str() + space + 1);
    t->success_status = t->response->status >= 200 && t->response->status < 300;
    return size * count;
  }
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    t->response->headers[name] = trim(line.substr(colon + 1));
  }
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->success_status && t->request->sink) return t->request->sink(data, n) ? n : 0;
  if (t->response->body.size() < (1u << 20)) t->response->body.append(data, n);  // errors and JSON only
  return n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

bool perform(const Request& request, Response& response, TransportError& error) {
  global_init();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    error = {CURLE_FAILED_INIT, "could not start an HTTP transfer"};
    return false;
  }
  response = Response();
  Transfer transfer{&request, &response};
  curl_slist* headers = nullptr;
  for (const auto& h : request.headers) headers = curl_slist_append(headers, h.c_str());
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_guard(headers, curl_slist_free_all);

  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  if (request.method == "HEAD") curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "tide/" TIDE_VERSION);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, request.connect_timeout_seconds);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, request.stall_timeout_seconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts: safe with threads
  char message[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, message);

  const CURLcode code = curl_easy_perform(c);
  if (code == CURLE_OK) return true;
  error.curl_code = code;
  error.message = message[0] ? message : curl_easy_strerror(code);
  return false;
}

}  // namespace tide::hub::http
