// Runs a fuzz target: `tide_fuzz TARGET [--seconds S] [--corpus DIR] [--seed N]` runs the target's seeds and
// corpus, then random mutations of them (bit flips, special bytes and tokens, truncation, deletion, duplication,
// splicing) for S seconds, and fails on any exception other than tide::Error; a crash fails the process.
// An input that runs longer than --input-seconds (default 20) or asks for more than 6 GiB of address space
// (a parser must refuse absurd sizes before allocating) fails too, with the input saved, instead of the test
// being killed with no trace. CTest runs every target so (fuzz.<target>).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
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

// Where the input being run goes when it runs too long (written by the SIGALRM handler: no allocation there).
const std::string* running_input = nullptr;
char timeout_path[512];

void on_input_timeout(int) {
  static const char message[] = "input ran past --input-seconds (a hang); saved to ";
  if (write(2, message, sizeof message - 1) < 0 || write(2, timeout_path, std::strlen(timeout_path)) < 0) {}
  const int fd = open(timeout_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0 && running_input) {
    if (write(fd, running_input->data(), running_input->size()) < 0) {}
    close(fd);
  }
  if (write(2, "\n", 1) < 0) {}
  _exit(1);
}

// Runs one input; false when the target failed in a way that is a bug.
bool run_one(const Target& target, const std::string& input, unsigned input_seconds, std::string* why) {
  running_input = &input;
  alarm(input_seconds);
  bool ok = true;
  try {
    target.run(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  } catch (const tide::Error&) {
  } catch (const std::exception& e) {
    *why = e.what();
    ok = false;
  }
  alarm(0);
  running_input = nullptr;
  return ok;
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
    std::fprintf(stderr, "usage: tide_fuzz TARGET [--seconds S] [--corpus DIR] [--seed N] [--input-seconds S]\ntargets:");
    for (const auto& t : tide::fuzz::targets()) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  const Target& target = *find_target(argv[1]);
  double seconds = 10;
  unsigned input_seconds = 20;
  uint64_t seed = 1;
  std::vector<fs::path> corpora;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (flag == "--corpus") corpora.emplace_back(argv[i + 1]);
    else if (flag == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--input-seconds") input_seconds = static_cast<unsigned>(std::max(1L, std::atol(argv[i + 1])));
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
  std::snprintf(timeout_path, sizeof timeout_path, "%s/tide-fuzz-%s-timeout.bin",
                fs::temp_directory_path().string().c_str(), target.name);
  std::signal(SIGALRM, on_input_timeout);
  const rlimit address_space{6ull << 30, 6ull << 30};
  setrlimit(RLIMIT_AS, &address_space);
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
    if (!run_one(target, input, input_seconds, &why)) return fail(input, why);
  }
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const std::string input = mutate(pool, rng);
    ++executions;
    if (!run_one(target, input, input_seconds, &why)) return fail(input, why);
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %ld executions in %.1f s (%.0f/s), %zu corpus inputs, no failure\n", target.name, executions,
              elapsed, executions / elapsed, corpus_size);
  return 0;
}
