// Runs the tide binary as a user would, for the CLI tests.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace tide::testing {

struct Run {
  int code;
  std::string output;  // stdout and stderr together
};

// `env` is a shell prefix such as "HF_HUB_OFFLINE=1 " for this run only.
inline Run run_tide(const std::string& args, const std::string& env = "") {
  const std::string command = env + std::string(TIDE_BINARY) + " " + args + " 2>&1";
  Run r{-1, ""};
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline std::string quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

}  // namespace tide::testing
