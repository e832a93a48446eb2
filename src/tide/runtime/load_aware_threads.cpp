#include "tide/runtime/load_aware_threads.h"

#include <ATen/Parallel.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "tide/runtime/error.h"
#include "tide/runtime/threads.h"

namespace tide::runtime {
namespace {

constexpr double kMinInterval = 0.25;  // s: /proc/stat counts in 10 ms ticks
constexpr double kStaleAfter = 30.0;   // s without a look: the last interval says little about now
constexpr auto kFirstSample = std::chrono::milliseconds(100);

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double own_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

double busy_seconds(const std::string& proc_stat, const std::vector<int>& cpus, long ticks_per_second) {
  if (ticks_per_second <= 0) throw Error("busy_seconds: clock ticks per second must be positive");
  const std::unordered_set<int> wanted(cpus.begin(), cpus.end());
  std::istringstream lines(proc_stat);
  std::string line;
  unsigned long long ticks = 0;
  while (std::getline(lines, line)) {
    // "cpuN user nice system idle iowait irq softirq steal guest guest_nice"; the "cpu " line is the total.
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] < '0' || line[3] > '9') continue;
    std::istringstream fields(line.substr(3));
    int cpu = -1;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
    if (!(fields >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq))
      throw Error("/proc/stat: cannot read the line '" + line + "'");
    if (wanted.count(cpu)) ticks += user + nice + system + irq + softirq;
  }
  return static_cast<double>(ticks) / static_cast<double>(ticks_per_second);
}

double free_cpus(const CpuTimes& before, const CpuTimes& after, int cpus) {
  const double wall = after.wall_s - before.wall_s;
  if (!(wall > 0)) return cpus;
  const double others = std::max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall;
  return std::clamp(cpus - others, 0.0, static_cast<double>(cpus));
}

int threads_for_free_cpus(double free, int limit) {
  return std::clamp(static_cast<int>(std::lround(free)), 1, std::max(1, limit));
}

LoadAwareThreads::LoadAwareThreads(std::vector<int> cpus, std::filesystem::path proc_stat)
    : cpus_(cpus.empty() ? allowed_cpus() : std::move(cpus)),
      proc_stat_(std::move(proc_stat)),
      ticks_per_second_(std::max(1L, sysconf(_SC_CLK_TCK))) {}

CpuTimes LoadAwareThreads::look() const {
  std::ifstream in(proc_stat_);
  if (!in) throw Error("cannot read " + proc_stat_.string() + " to see how busy the CPUs are");
  std::stringstream text;
  text << in.rdbuf();
  CpuTimes t;
  t.wall_s = steady_seconds();
  t.busy_s = busy_seconds(text.str(), cpus_, ticks_per_second_);
  t.own_s = own_cpu_seconds();
  return t;
}

int LoadAwareThreads::apply(int limit) {
  int count;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const double now = steady_seconds();
    if (!last_ || now - last_->wall_s > kStaleAfter) {
      last_ = look();
      free_.reset();
      std::this_thread::sleep_for(kFirstSample);
    }
    if (!free_ || steady_seconds() - last_->wall_s >= kMinInterval) {
      const CpuTimes current = look();
      free_ = free_cpus(*last_, current, static_cast<int>(cpus_.size()));
      last_ = current;
    }
    count = threads_for_free_cpus(*free_, limit);
    fewest_ = fewest_ == 0 ? count : std::min(fewest_, count);
    most_ = std::max(most_, count);
  }
  if (count != at::get_num_threads()) at::set_num_threads(count);
  return count;
}

int LoadAwareThreads::fewest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fewest_;
}

int LoadAwareThreads::most() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return most_;
}

int apply_thread_count(LoadAwareThreads* load, int limit) {
  if (load) return load->apply(limit);
  if (at::get_num_threads() != limit) at::set_num_threads(limit);
  return limit;
}

}  // namespace tide::runtime
