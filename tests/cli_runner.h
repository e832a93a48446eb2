// Runs the tide binary as a user would, for the CLI tests, and the tiny model they share.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "test_support.h"
#include "tiny_pipeline.h"

namespace tide::testing {

struct Run {
  int code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line and collects what it prints.
inline Run run_command(const std::string& command_line) {
  const std::string command = command_line + " 2>&1";
  Run r{-1, ""};
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// `env` is a shell prefix such as "HF_HUB_OFFLINE=1 " for this run only.
inline Run run_tide(const std::string& args, const std::string& env = "") {
  return run_command(env + std::string(TIDE_BINARY) + " " + args);
}

inline std::string quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// A test suite whose tests share one tiny random pipeline folder, model(), built once per suite.
class TinyPipelineSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    make_tiny_pipeline(dir_->path() / "model");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::filesystem::path model() { return dir_->path() / "model"; }
  static inline TempDir* dir_ = nullptr;
};

}  // namespace tide::testing
