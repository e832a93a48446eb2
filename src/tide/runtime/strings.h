// Small string helpers shared by the file readers and name mappers (C++17's std::string has no ends_with).
#pragma once
#include <string>
#include <string_view>

namespace tide {

inline bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// `s` without leading and trailing whitespace (std::isspace: space, \t, \n, \v, \f, \r).
std::string trim(std::string_view s);

// The value of the environment variable `name`, "" when it is unset.
std::string env_or_empty(const char* name);

}  // namespace tide
