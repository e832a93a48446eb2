#include "tide/runtime/threads.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

#include "tide/runtime/error.h"

namespace tide::runtime {
namespace fs = std::filesystem;

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned c = 0; c < hw; ++c) cpus.push_back(static_cast<int>(c));
  }
  return cpus;
}

int usable_cores() { return static_cast<int>(allowed_cpus().size()); }

int physical_cores(const std::vector<int>& cpus, const fs::path& sysfs_cpus) {
  std::set<std::pair<long, long>> cores;  // (package, core id); CPUs without topology: (-1 - cpu, cpu)
  for (int c : cpus) {
    const fs::path topology = sysfs_cpus / ("cpu" + std::to_string(c)) / "topology";
    long package = -1, core = -1;
    std::ifstream(topology / "physical_package_id") >> package;
    std::ifstream(topology / "core_id") >> core;
    if (package < 0 || core < 0) cores.insert({-1 - c, c});
    else cores.insert({package, core});
  }
  return std::max(1, static_cast<int>(cores.size()));
}

int default_threads() {
  // OMP_NUM_THREADS, when set, is the usual way to share a machine between processes.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, usable_cores());
  }
  return physical_cores(allowed_cpus());
}

int configure_threads(int threads) {
  const int count = threads > 0 ? threads : default_threads();
  at::set_num_threads(count);
  return count;
}

std::vector<int> parse_cpu_list(const std::string& list, const std::string& flag) {
  auto bad = [&](const std::string& why) {
    return Error(flag + " expects CPU numbers and ranges like 0-3,8, got '" + list + "' (" + why + ")");
  };
  std::set<int> cpus;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    const size_t dash = item.find('-');
    auto number = [&](const std::string& s) {
      if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos)
        throw bad("'" + s + "' is not a CPU number");
      return std::stoi(s);
    };
    const int first = number(item.substr(0, dash));
    const int last = dash == std::string::npos ? first : number(item.substr(dash + 1));
    if (last < first) throw bad("range " + item + " runs backwards");
    if (last >= CPU_SETSIZE) throw bad("CPU " + std::to_string(last) + " is beyond " + std::to_string(CPU_SETSIZE - 1));
    for (int c = first; c <= last; ++c) cpus.insert(c);
    pos = comma + 1;
  }
  return {cpus.begin(), cpus.end()};
}

std::vector<int> share_of_cpus(const std::vector<int>& cpus, int rank, int ranks) {
  if (cpus.empty() || ranks < 1 || rank < 0 || rank >= ranks) throw Error("share_of_cpus: bad rank or no CPUs");
  const int n = static_cast<int>(cpus.size());
  if (ranks >= n) return {cpus[static_cast<size_t>(rank % n)]};
  const int base = n / ranks, extra = n % ranks;
  const int first = rank * base + std::min(rank, extra);
  const int count = base + (rank < extra ? 1 : 0);
  return std::vector<int>(cpus.begin() + first, cpus.begin() + first + count);
}

void pin_to_cpus(const std::vector<int>& cpus) {
  const std::vector<int> allowed = allowed_cpus();
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) {
    if (!std::binary_search(allowed.begin(), allowed.end(), c)) {
      std::string list;
      for (int a : allowed) list += (list.empty() ? "" : ",") + std::to_string(a);
      throw Error("--cpus: CPU " + std::to_string(c) + " is not available to this process (it may use " + list + ")");
    }
    CPU_SET(c, &set);
  }
  if (cpus.empty()) throw Error("--cpus: no CPUs given");
  if (sched_setaffinity(0, sizeof(set), &set) != 0) throw Error("--cpus: the system refused to pin this process");
}

}  // namespace tide::runtime
