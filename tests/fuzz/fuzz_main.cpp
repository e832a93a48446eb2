// Runs a fuzz target: `tide_fuzz TARGET [--seconds S] [--corpus DIR] [--seed N]` runs the target's seeds and
// corpus, then random mutations of them (bit flips, special bytes and tokens, truncation, deletion, duplication,
// splicing) for S seconds, and fails on any exception other than tide::Error; a crash fails the process.
// CTest runs every target so (fuzz.<target>).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz_targets.h"
#include "tide/runtime/error.h"

namespace {
namespace fs = std::filesystem;
using tide::fuzz::Target;

const Target* find_target(const std::string& name) {
  for (const auto& t : tide::fuzz::targets())
    if (name == t.name) return &t;
  return nullptr;
}

// Runs one input; false when the target failed in a way that is a bug.
bool run_one(const Target& target, const std::string& input, std::string* why) {
  try {
    target.run(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  } catch (const tide::Error&) {
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
  return true;
}

std::string mutate(const std::vector<std::string>& pool, std::mt19937_64& rng) {
  std::string s = pool[rng() % pool.size()];
  static const char* tokens[] = {"(", ")", "[", "]", ":", "\\", "BREAK", "<lora:", ">", "{", "}", "\"", ",", "\n",
                                 "\xff", "\x80", "\0", "1e308", "-1", "9999999999", "null", "[]"};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t n = s.size();
    switch (rng() % 7) {
      case 0:  // flip a bit
        if (n) s[rng() % n] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1: {  // an interesting byte
        static const unsigned char bytes[] = {0, 1, 0x7f, 0x80, 0xff, 0xfe, '0', '9'};
        if (n) s[rng() % n] = static_cast<char>(bytes[rng() % sizeof bytes]);
        break;
      }
      case 2:  // truncate
        s.resize(n ? rng() % n : 0);
        break;
      case 3: {  // delete a range
        if (!n) break;
        const size_t at = rng() % n;
        s.erase(at, 1 + rng() % std::min<size_t>(16, n - at));
        break;
      }
      case 4: {  // insert a token
        const char* t = tokens[rng() % (sizeof tokens / sizeof *tokens)];
        s.insert(n ? rng() % (n + 1) : 0, t, std::max<size_t>(1, std::strlen(t)));
        break;
      }
      case 5: {  // duplicate a range
        if (!n) break;
        const size_t at = rng() % n, len = 1 + rng() % std::min<size_t>(64, n - at);
        s.insert(rng() % (n + 1), s.substr(at, len));
        break;
      }
      default: {  // splice with another input
        const std::string& other = pool[rng() % pool.size()];
        if (other.empty()) break;
        const size_t cut = n ? rng() % n : 0;
        s = s.substr(0, cut) + other.substr(rng() % other.size());
      }
    }
  }
  if (s.size() > (1u << 20)) s.resize(1u << 20);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !find_target(argv[1])) {
    std::fprintf(stderr, "usage: tide_fuzz TARGET [--seconds S] [--corpus DIR] [--seed N]\ntargets:");
    for (const auto& t : tide::fuzz::targets()) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  const Target& target = *find_target(argv[1]);
  double seconds = 10;
  uint64_t seed = 1;
  std::vector<fs::path> corpora;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (flag == "--corpus") corpora.emplace_back(argv[i + 1]);
    else if (flag == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else return std::fprintf(stderr, "unknown flag %s\n", flag.c_str()), 2;
  }
  std::vector<std::string> pool = target.seeds();
  for (const auto& dir : corpora) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      std::ifstream in(entry.path(), std::ios::binary);
      pool.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  const size_t corpus_size = pool.size();
  if (pool.empty()) pool.emplace_back();
  std::mt19937_64 rng(seed);
  const auto start = std::chrono::steady_clock::now();
  long executions = 0;
  auto fail = [&](const std::string& input, const std::string& why) {
    const fs::path saved = fs::temp_directory_path() / (std::string("tide-fuzz-") + target.name + "-failure.bin");
    std::ofstream(saved, std::ios::binary) << input;
    std::fprintf(stderr, "%s: unexpected exception after %ld runs: %s\ninput saved to %s\n", target.name, executions,
                 why.c_str(), saved.string().c_str());
    return 1;
  };
  std::string why;
  for (const auto& input : pool) {
    ++executions;
    if (!run_one(target, input, &why)) return fail(input, why);
  }
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const std::string input = mutate(pool, rng);
    ++executions;
    if (!run_one(target, input, &why)) return fail(input, why);
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %ld executions in %.1f s (%.0f/s), %zu corpus inputs, no failure\n", target.name, executions,
              elapsed, executions / elapsed, corpus_size);
  return 0;
}
