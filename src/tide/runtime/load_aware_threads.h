// Sharing the machine with other processes. OpenMP threads meet at a barrier after every parallel loop; when
// another process keeps a core busy, the kernel deschedules one of tide's threads for a whole time slice and
// its partners wait for it (libgomp spins first), so running one thread per core falls off a cliff as soon
// as the machine is not idle: sd15 at 256x256 took 40.7 s with 2 threads beside one busy core, 30.8 s with
// 1 thread (18.4 s with 2 threads when quiet), and its text encoder 1.9 s instead of 0.7 s.
//
// LoadAwareThreads picks the thread count from what other processes actually use: the busy time /proc/stat
// reports for this process's CPUs, minus this process's own CPU time, over the time since it last looked.
// The pipeline asks it before every stage and denoising step, so the count follows the load as it changes.
#pragma once
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tide::runtime {

// One look at the machine.
struct CpuTimes {
  double wall_s = 0;  // a steady clock
  double busy_s = 0;  // busy time of the CPUs looked at, all processes together (see busy_seconds)
  double own_s = 0;   // this process's CPU time, all its threads
};

// Busy seconds of `cpus` in /proc/stat's text: user + nice + system + irq + softirq ticks of their "cpuN"
// lines, divided by `ticks_per_second`. Idle, iowait and steal are not busy: steal (a hypervisor running
// someone else) slows every thread alike, so it is no reason for fewer threads. Niced processes count: they
// yield most of a core to a normal-priority thread but still take time slices from it, and every slice a
// thread waits stalls its partners at the next barrier. A CPU without a line counts as idle; a malformed
// line is a tide::Error.
double busy_seconds(const std::string& proc_stat, const std::vector<int>& cpus, long ticks_per_second);

// The CPUs other processes left free between two looks: `cpus` minus (busy - own) per second, in [0, cpus].
double free_cpus(const CpuTimes& before, const CpuTimes& after, int cpus);

// Threads for `free` CPUs: the nearest whole number, at least 1 and at most `limit`.
int threads_for_free_cpus(double free, int limit);

class LoadAwareThreads {
 public:
  // Looks at `cpus` (the ones this process may run on) through `proc_stat`.
  explicit LoadAwareThreads(std::vector<int> cpus = {}, std::filesystem::path proc_stat = "/proc/stat");

  // The thread count for the next piece of work, at most `limit`, set on the calling thread
  // (at::set_num_threads) when it differs. It looks at the machine again when at least 0.25 s passed since
  // the last look (shorter intervals hold too few clock ticks); the first look, or one after 30 s without
  // any, samples the machine for 0.1 s first. Safe to call from several threads.
  int apply(int limit);

  // The fewest and most threads apply() chose so far (0 before the first call), for reports.
  int fewest() const;
  int most() const;

  CpuTimes look() const;  // the machine now

 private:
  std::vector<int> cpus_;
  std::filesystem::path proc_stat_;
  long ticks_per_second_;
  mutable std::mutex mutex_;
  std::optional<CpuTimes> last_;
  std::optional<double> free_;  // the CPUs the last interval left free
  int fewest_ = 0, most_ = 0;
};

// Sets the calling thread's count for the next piece of work: what `load` chooses (at most `limit`) or,
// without one, `limit` itself. Returns the count.
int apply_thread_count(LoadAwareThreads* load, int limit);

}  // namespace tide::runtime
