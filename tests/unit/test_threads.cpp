// Thread defaults: the affinity mask, and OMP_NUM_THREADS when a user or a test runner sets it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "tide/runtime/threads.h"

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
    EXPECT_EQ(tide::runtime::default_threads(), cores);
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

}  // namespace
