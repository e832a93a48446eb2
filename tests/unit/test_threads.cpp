// Thread defaults: the affinity mask, and OMP_NUM_THREADS when a user or a test runner sets it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "tide/runtime/error.h"
#include "tide/runtime/threads.h"
#include "tide/train/communicator.h"

namespace {

// Sets OMP_NUM_THREADS for one scope and restores it.
class OmpThreadsEnv {
 public:
  explicit OmpThreadsEnv(const char* value) {
    if (const char* old = std::getenv("OMP_NUM_THREADS")) old_ = old;
    if (value) ::setenv("OMP_NUM_THREADS", value, 1);
    else ::unsetenv("OMP_NUM_THREADS");
  }
  ~OmpThreadsEnv() {
    if (old_) ::setenv("OMP_NUM_THREADS", old_->c_str(), 1);
    else ::unsetenv("OMP_NUM_THREADS");
  }

 private:
  std::optional<std::string> old_;
};

TEST(Threads, DefaultIsTheAffinityMaskUnlessOmpNumThreadsSaysLess) {
  const int cores = tide::runtime::usable_cores();
  ASSERT_GE(cores, 1);
  {
    OmpThreadsEnv env(nullptr);
    EXPECT_EQ(tide::runtime::default_threads(), tide::runtime::physical_cores(tide::runtime::allowed_cpus()));
    EXPECT_LE(tide::runtime::default_threads(), cores);
  }
  {
    OmpThreadsEnv env("1");
    EXPECT_EQ(tide::runtime::default_threads(), 1);
    EXPECT_EQ(tide::runtime::configure_threads(0), 1);
    EXPECT_EQ(tide::runtime::configure_threads(3), 3);  // an explicit count wins
  }
  {
    OmpThreadsEnv env("100000");
    EXPECT_EQ(tide::runtime::default_threads(), cores);  // never more than the cores we may use
  }
  {
    OmpThreadsEnv env("many");
    EXPECT_EQ(tide::runtime::default_threads(), cores);
  }
}

// A fake sysfs: cpu0/cpu1 are SMT siblings of core 0, cpu2 is core 1, cpu3 is core 0 of a second package,
// cpu4 has no topology files.
TEST(Threads, PhysicalCoresCountSmtSiblingsOnce) {
  tide::testing::TempDir sysfs;
  auto add = [&](int cpu, int package, int core) {
    const auto dir = sysfs.path() / ("cpu" + std::to_string(cpu)) / "topology";
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "physical_package_id") << package << "\n";
    std::ofstream(dir / "core_id") << core << "\n";
  };
  add(0, 0, 0);
  add(1, 0, 0);
  add(2, 0, 1);
  add(3, 1, 0);
  using tide::runtime::physical_cores;
  EXPECT_EQ(physical_cores({0, 1}, sysfs.path()), 1);
  EXPECT_EQ(physical_cores({0, 1, 2}, sysfs.path()), 2);
  EXPECT_EQ(physical_cores({0, 1, 2, 3}, sysfs.path()), 3);
  EXPECT_EQ(physical_cores({0, 1, 2, 3, 4}, sysfs.path()), 4);
}

TEST(Threads, ParsesCpuListsLikeNumactl) {
  using tide::runtime::parse_cpu_list;
  EXPECT_EQ(parse_cpu_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_cpu_list("0-3,8,10-11"), (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_EQ(parse_cpu_list("3,1-2,2"), (std::vector<int>{1, 2, 3}));
  for (const char* bad : {"", "a", "3-1", "1,", "-2", "1-2-3", "0x1", "99999999"})
    EXPECT_THROW(parse_cpu_list(bad), tide::Error) << bad;
  try {
    parse_cpu_list("5-2", "tide generate: --cpus");
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("range 5-2 runs backwards"), std::string::npos) << e.what();
  }
}

// Pinning to one allowed CPU shrinks the affinity mask; a CPU outside it is refused. Runs in a child
// thread so the test process keeps its own mask.
TEST(Threads, RanksSharingCpusEachTakeTheirOwnConsecutiveShare) {
  using tide::runtime::share_of_cpus;
  const std::vector<int> cpus{0, 1, 2, 3, 4, 5, 6};
  EXPECT_EQ(share_of_cpus(cpus, 0, 1), cpus);
  EXPECT_EQ(share_of_cpus(cpus, 0, 2), (std::vector<int>{0, 1, 2, 3}));  // 7 = 4 + 3
  EXPECT_EQ(share_of_cpus(cpus, 1, 2), (std::vector<int>{4, 5, 6}));
  EXPECT_EQ(share_of_cpus(cpus, 2, 3), (std::vector<int>{5, 6}));
  EXPECT_EQ(share_of_cpus({8, 9}, 1, 2), (std::vector<int>{9}));
  EXPECT_EQ(share_of_cpus({8, 9}, 3, 4), (std::vector<int>{9}));  // more ranks than CPUs: round-robin
  // Every CPU is used by exactly one of the ranks.
  for (int ranks = 1; ranks <= 7; ++ranks) {
    std::vector<int> all;
    for (int r = 0; r < ranks; ++r) {
      const auto share = share_of_cpus(cpus, r, ranks);
      all.insert(all.end(), share.begin(), share.end());
    }
    EXPECT_EQ(all, cpus) << ranks << " ranks";
  }
  EXPECT_THROW(share_of_cpus(cpus, 2, 2), tide::Error);
  EXPECT_THROW(share_of_cpus({}, 0, 1), tide::Error);
}

TEST(Threads, LocalRankComesFromTheLauncher) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"})
    unsetenv(var);
  EXPECT_EQ(tide::train::local_rank_and_size(), (std::pair<int, int>{0, 1}));
  setenv("MPI_LOCALRANKID", "1", 1);
  setenv("MPI_LOCALNRANKS", "4", 1);
  EXPECT_EQ(tide::train::local_rank_and_size(), (std::pair<int, int>{1, 4}));
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
  EXPECT_EQ(tide::train::local_rank_and_size(), (std::pair<int, int>{2, 3}));
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "x", 1);  // unreadable: the next launcher's variables
  EXPECT_EQ(tide::train::local_rank_and_size(), (std::pair<int, int>{1, 4}));
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"})
    unsetenv(var);
}

TEST(Threads, PinningRestrictsTheAffinityMask) {
  const std::vector<int> before = tide::runtime::allowed_cpus();
  std::vector<int> inside;
  std::string refused;
  std::thread([&] {
    tide::runtime::pin_to_cpus({before.back()});
    inside = tide::runtime::allowed_cpus();
    try {
      tide::runtime::pin_to_cpus({before.back() + 1});
    } catch (const tide::Error& e) {
      refused = e.what();
    }
  }).join();
  EXPECT_EQ(inside, (std::vector<int>{before.back()}));
  EXPECT_NE(refused.find("is not available to this process"), std::string::npos) << refused;
  EXPECT_EQ(tide::runtime::allowed_cpus(), before);
}

}  // namespace
