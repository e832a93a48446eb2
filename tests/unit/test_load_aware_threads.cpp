// Load-aware thread counts: the /proc/stat accounting on made-up numbers, the chooser on a fake /proc/stat
// whose counters the test moves, and the real machine with every core kept busy by a CPU hog.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "test_support.h"
#include "tide/bench/cpu_hog.h"
#include "tide/runtime/error.h"
#include "tide/runtime/load_aware_threads.h"
#include "tide/runtime/threads.h"

namespace {

using tide::runtime::CpuTimes;
using tide::runtime::LoadAwareThreads;

const char* kStat =
    "cpu  900 90 300 5000 40 10 20 70 0 0\n"
    "cpu0 100 10 50 2000 20 5 5 30 0 0\n"
    "cpu1 300 30 100 1000 10 3 7 20 0 0\n"
    "cpu2 500 50 150 2000 10 2 8 20 0 0\n"
    "intr 12345 0 0\n"
    "ctxt 999\n";

TEST(LoadAwareThreads, BusyTimeCountsUserNiceSystemIrqSoftirqOfTheChosenCpus) {
  // cpu0: 100 + 10 + 50 + 5 + 5 = 170 ticks; cpu2: 500 + 50 + 150 + 2 + 8 = 710; idle, iowait, steal left out.
  EXPECT_DOUBLE_EQ(tide::runtime::busy_seconds(kStat, {0}, 100), 1.70);
  EXPECT_DOUBLE_EQ(tide::runtime::busy_seconds(kStat, {0, 2}, 100), 8.80);
  EXPECT_DOUBLE_EQ(tide::runtime::busy_seconds(kStat, {7}, 100), 0.0);  // no such line: idle
  EXPECT_THROW(tide::runtime::busy_seconds("cpu0 1 2 x\n", {0}, 100), tide::Error);
  EXPECT_THROW(tide::runtime::busy_seconds(kStat, {0}, 0), tide::Error);
}

TEST(LoadAwareThreads, FreeCpusAreThoseNeitherThisProcessNorOthersUsed) {
  const CpuTimes before{10.0, 100.0, 5.0};
  // 2 s on 4 CPUs: 6 busy CPU-seconds, 2 of them ours -> others used 2 CPUs -> 2 free.
  EXPECT_DOUBLE_EQ(tide::runtime::free_cpus(before, {12.0, 106.0, 7.0}, 4), 2.0);
  // Only this process was busy: all free (it may use them all).
  EXPECT_DOUBLE_EQ(tide::runtime::free_cpus(before, {12.0, 104.0, 9.0}, 4), 4.0);
  // Own time a little above the tick-counted busy time (clock granularity) is not negative load.
  EXPECT_DOUBLE_EQ(tide::runtime::free_cpus(before, {12.0, 103.9, 9.0}, 4), 4.0);
  // Others busier than the CPUs (counters read at slightly different moments): none free, never negative.
  EXPECT_DOUBLE_EQ(tide::runtime::free_cpus(before, {12.0, 120.0, 5.0}, 4), 0.0);
  EXPECT_DOUBLE_EQ(tide::runtime::free_cpus(before, before, 4), 4.0);  // no time passed: nothing known
}

TEST(LoadAwareThreads, ThreadsAreTheNearestWholeFreeCpusWithinOneAndTheLimit) {
  EXPECT_EQ(tide::runtime::threads_for_free_cpus(1.4, 2), 1);
  EXPECT_EQ(tide::runtime::threads_for_free_cpus(1.6, 2), 2);
  EXPECT_EQ(tide::runtime::threads_for_free_cpus(0.0, 8), 1);
  EXPECT_EQ(tide::runtime::threads_for_free_cpus(7.9, 4), 4);
  EXPECT_EQ(tide::runtime::threads_for_free_cpus(3.0, 0), 1);
}

void write_stat(const std::filesystem::path& file, long busy0, long busy1) {
  std::ofstream(file) << "cpu  0 0 0 0 0 0 0 0 0 0\n"
                      << "cpu0 " << busy0 << " 0 0 1000 0 0 0 0 0 0\n"
                      << "cpu1 " << busy1 << " 0 0 1000 0 0 0 0 0 0\n";
}

TEST(LoadAwareThreads, FollowsTheLoadOfAFakeMachine) {
  tide::testing::TempDir dir;
  const auto stat = dir.path() / "stat";
  write_stat(stat, 0, 0);
  const int before = at::get_num_threads();
  {
    LoadAwareThreads threads({0, 1}, stat);
    // Nobody else busy: the limit.
    EXPECT_EQ(threads.apply(2), 2);
    EXPECT_EQ(at::get_num_threads(), 2);
    // Other processes take 100 s of CPU time on each CPU over the next fraction of a second: all busy.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    write_stat(stat, 10000, 10000);
    EXPECT_EQ(threads.apply(2), 1);
    EXPECT_EQ(at::get_num_threads(), 1);
    // Asked again at once: too few ticks for a new look, the same answer.
    write_stat(stat, 10000, 10000);
    EXPECT_EQ(threads.apply(2), 1);
    // Quiet again.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(threads.apply(2), 2);
    EXPECT_EQ(threads.fewest(), 1);
    EXPECT_EQ(threads.most(), 2);
    EXPECT_EQ(threads.apply(1), 1);  // never above the limit
  }
  at::set_num_threads(before);
}

TEST(LoadAwareThreads, AnUnreadableStatFileIsAClearError) {
  LoadAwareThreads threads({0}, "/nonexistent/stat");
  try {
    threads.apply(2);
    FAIL() << "no error";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/stat"), std::string::npos) << e.what();
  }
}

TEST(LoadAwareThreads, OneThreadWhenEveryCoreIsBusyOnThisMachine) {
  const int cores = tide::runtime::usable_cores();
  const int before = at::get_num_threads();
  {
    tide::bench::CpuHog hog(cores);
    ASSERT_EQ(hog.processes(), cores);
    LoadAwareThreads threads;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the hog is running
    threads.apply(cores);                                          // first look: a 0.1 s sample
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_EQ(threads.apply(cores), 1) << "every one of " << cores << " cores was kept busy by another process";
  }
  at::set_num_threads(before);
}

TEST(LoadAwareThreads, TheHogsProcessesEndWithIt) {
  std::vector<pid_t> pids;
  {
    tide::bench::CpuHog hog(2);
    pids = hog.pids();
    ASSERT_EQ(pids.size(), 2u);
    for (pid_t pid : pids) EXPECT_EQ(kill(pid, 0), 0) << "hog process " << pid << " is not running";
  }
  for (pid_t pid : pids) EXPECT_NE(kill(pid, 0), 0) << "hog process " << pid << " outlived the hog";
}

}  // namespace
