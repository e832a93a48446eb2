// Base64 (RFC 4648, standard alphabet, padded): how the HTTP APIs carry PNG bytes inside JSON.
#pragma once
#include <string>

namespace tide::server {

std::string base64_encode(const std::string& bytes);
// Accepts a `data:...;base64,` prefix, whitespace and missing padding; other characters are a tide::Error.
std::string base64_decode(const std::string& text);

}  // namespace tide::server
