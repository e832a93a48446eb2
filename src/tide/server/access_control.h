// Who may call the API: the Bearer API key and A1111's --api-auth HTTP Basic credentials, checked before any
// route runs.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace tide::server {

struct ServerOptions;

// "alice:pw1,bob:pw2" (A1111's --api-auth form) -> {"alice:pw1", "bob:pw2"}; tide::Error for an entry without
// a user name and ':' (`flag` names the option in the message).
std::vector<std::string> parse_api_auth(const std::string& list, const std::string& flag = "--api-auth");

// True when the API needs credentials at all (an API key or Basic credentials are configured).
bool requires_authentication(const ServerOptions& options);

// Whether an `Authorization` header value passes: `Bearer KEY` with the API key, or `Basic base64(user:pass)`
// with one of the configured credentials. Every comparison takes time that depends on lengths only.
bool authorized(const ServerOptions& options, const std::string& authorization);

// The `WWW-Authenticate` challenges of a 401: Basic (realm "tide") and/or Bearer, as configured.
std::vector<std::string> authentication_challenges(const ServerOptions& options);

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// CORS headers for a request from `origin` (its Origin header; "" when none): for a configured origin the
// exact origin echoed back (never `*`, as credentials are allowed), plus `Vary: Origin` whenever origins are
// configured; nothing otherwise. `preflight` adds what an OPTIONS preflight answer needs.
HeaderList cors_headers(const ServerOptions& options, const std::string& origin, bool preflight);

}  // namespace tide::server
