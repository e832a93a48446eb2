// libFuzzer entry for the fuzz targets (tests/fuzz/fuzz_targets.cpp), built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/fuzz.sh. TIDE_FUZZ_TARGET names the target; when TIDE_FUZZ_SEEDS names
// a folder, the target's built-in seeds are written into it first (libFuzzer then reads them as corpus).
// A tide::Error is the parser refusing bad input; anything else escapes and libFuzzer reports it as a crash.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_targets.h"
#include "tide/runtime/error.h"

namespace {
const tide::fuzz::Target* target = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* name = std::getenv("TIDE_FUZZ_TARGET");
  for (const auto& t : tide::fuzz::targets())
    if (name && std::string(name) == t.name) target = &t;
  if (!target) {
    std::fprintf(stderr, "set TIDE_FUZZ_TARGET to one of:");
    for (const auto& t : tide::fuzz::targets()) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  if (const char* dir = std::getenv("TIDE_FUZZ_SEEDS")) {
    int i = 0;
    for (const auto& seed : target->seeds())
      std::ofstream(std::filesystem::path(dir) / ("seed-" + std::to_string(i++)), std::ios::binary) << seed;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    target->run(data, size);
  } catch (const tide::Error&) {
  }
  return 0;
}
