// Small string helpers shared by the file readers and name mappers (C++17's std::string has no ends_with).
#pragma once
#include <string_view>

namespace tide {

inline bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace tide
