// The one error type of tide: a message a user can act on (names the file, the tensor,
// what was expected and what was found). The CLI prints it and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace tide {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace tide
