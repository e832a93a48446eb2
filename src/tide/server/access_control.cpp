#include "tide/server/access_control.h"

#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"
#include "tide/server/base64.h"
#include "tide/server/server.h"

namespace tide::server {
namespace {

// A header value starting with `scheme ` (the scheme case-insensitive, RFC 7235); the rest, or nothing.
bool strip_scheme(const std::string& header, const std::string& scheme, std::string& rest) {
  if (header.size() <= scheme.size() || header[scheme.size()] != ' ') return false;
  for (size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != std::tolower(static_cast<unsigned char>(scheme[i])))
      return false;
  rest = header.substr(scheme.size() + 1);
  return true;
}

}  // namespace

std::vector<std::string> parse_api_auth(const std::string& list, const std::string& flag) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    const std::string entry = trim(std::string_view(list).substr(start, comma - start));
    const size_t colon = entry.find(':');
    if (colon == std::string::npos || colon == 0)
      throw Error(flag + ": expected USER:PASSWORD (comma-separated for several), got '" + entry + "'");
    out.push_back(entry);
    start = comma + 1;
  }
  return out;
}

bool requires_authentication(const ServerOptions& options) {
  return !options.api_key.empty() || !options.api_auth.empty();
}

bool authorized(const ServerOptions& options, const std::string& authorization) {
  std::string rest;
  if (!options.api_key.empty() && strip_scheme(authorization, "Bearer", rest))
    return constant_time_equal(rest, options.api_key);
  if (!options.api_auth.empty() && strip_scheme(authorization, "Basic", rest)) {
    std::string pair;
    try {
      pair = base64_decode(rest);
    } catch (const Error&) {
      return false;
    }
    // Every credential is compared, so the time does not tell which one (if any) matched.
    bool match = false;
    for (const auto& credential : options.api_auth) match |= constant_time_equal(pair, credential);
    return match;
  }
  return false;
}

std::vector<std::string> authentication_challenges(const ServerOptions& options) {
  std::vector<std::string> out;
  if (!options.api_auth.empty()) out.push_back("Basic realm=\"tide\"");
  if (!options.api_key.empty()) out.push_back("Bearer");
  return out;
}

HeaderList cors_headers(const ServerOptions& options, const std::string& origin, bool preflight) {
  HeaderList out;
  if (options.cors_origins.empty()) return out;
  out.emplace_back("Vary", "Origin");  // caches must not hand one origin's answer to another
  bool allowed = false;
  for (const auto& o : options.cors_origins) allowed |= !origin.empty() && o == origin;
  if (!allowed) return out;
  out.emplace_back("Access-Control-Allow-Origin", origin);
  out.emplace_back("Access-Control-Allow-Credentials", "true");
  if (preflight) {
    out.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    out.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type");
    out.emplace_back("Access-Control-Max-Age", "600");
  }
  return out;
}

}  // namespace tide::server
