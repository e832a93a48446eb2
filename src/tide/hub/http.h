// A minimal blocking HTTP client over libcurl for the Hub downloads: one request per call,
// redirects NOT followed (the caller reads the Hub's headers on the redirect itself), response
// headers collected with lower-case names, the body either kept in memory or streamed to a sink.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tide::hub::http {

struct Request {
  std::string method = "GET";  // GET or HEAD
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // Receives the body of a 2xx response (other bodies are kept in Response::body, for error
  // messages). Returning false aborts the transfer.
  std::function<bool(const char* data, size_t size)> sink;
  long connect_timeout_seconds = 10;
  long stall_timeout_seconds = 30;  // abort when no byte arrives for this long
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // of the last response, names in lower case
  std::string body;
  std::string header(const std::string& lower_name) const;
};

// A transport failure (no HTTP status to act on): refused, reset, dropped mid-body, timed out.
struct TransportError {
  int curl_code = 0;
  std::string message;
};

// Performs the request. Returns false and fills `error` on a transport failure. In a build without libcurl
// (tide::built_with_curl() false) it throws a tide::Error saying the build cannot download.
bool perform(const Request& request, Response& response, TransportError& error);

// "http://host:port/a/b?x" + "/c" → "http://host:port/c"; absolute locations are returned as they are.
std::string resolve_location(const std::string& base_url, const std::string& location);
// "http://host:port/path" → "http://host:port"
std::string origin_of(const std::string& url);
// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string url_encode(const std::string& text, bool keep_slash);

}  // namespace tide::hub::http
