// Fuzz targets: every parser tide runs on what users and the network hand it. Each takes arbitrary bytes and
// must either succeed or throw tide::Error; any other exception, a crash or a sanitizer report is a bug.
// fuzz_main.cpp runs them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tide::fuzz {

struct Target {
  const char* name;
  void (*run)(const uint8_t* data, size_t size);
  // Valid inputs the mutations start from (the committed corpus in tests/fuzz/corpus/<name>/ adds to them).
  std::vector<std::string> (*seeds)();
};

const std::vector<Target>& targets();

}  // namespace tide::fuzz
