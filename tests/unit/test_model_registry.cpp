// The server's model registry: models load on first use, stay warm, and the least recently used are dropped
// beyond --max-loaded and the memory budget.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/runtime/error.h"
#include "tide/server/model_registry.h"
#include "tiny_pipeline.h"

namespace {
using tide::testing::TempDir;

class ModelRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::filesystem::create_directories(dir_->path() / "models");
    for (const char* name : {"a", "b", "c"}) tide::testing::make_tiny_pipeline(dir_->path() / "models" / name);
  }
  static void TearDownTestSuite() { delete dir_; }
  static tide::server::RegistryOptions options(size_t max_loaded, int64_t budget) {
    tide::server::RegistryOptions o;
    o.model_dirs = {dir_->path() / "models"};
    o.max_loaded = max_loaded;
    o.memory_budget_bytes = budget;
    o.compute.threads = 1;
    return o;
  }
  static inline TempDir* dir_ = nullptr;
};

TEST_F(ModelRegistryTest, LeastRecentlyUsedBeyondMaxLoaded) {
  tide::server::ModelRegistry registry(options(2, 0));
  registry.acquire("a");
  registry.acquire("b");
  registry.acquire("a");  // a is the most recently used now
  registry.acquire("c");
  EXPECT_EQ(registry.loaded_names(), (std::vector<std::string>{"c", "a"}));
  EXPECT_THROW(registry.acquire("nope"), tide::Error);
}

// A budget below what the process holds keeps only the model just loaded; a roomy one keeps up to max_loaded.
TEST_F(ModelRegistryTest, MemoryBudgetDropsTheOthers) {
  tide::server::ModelRegistry tight(options(3, 1));
  tight.acquire("a");
  const auto b = tight.acquire("b");
  EXPECT_EQ(tight.loaded_names(), (std::vector<std::string>{"b"}));
  ASSERT_TRUE(b && b->pipeline);  // the model in use stays usable
  tide::server::ModelRegistry roomy(options(3, int64_t{1} << 50));
  roomy.acquire("a");
  roomy.acquire("b");
  EXPECT_EQ(roomy.loaded_names(), (std::vector<std::string>{"b", "a"}));
}

}  // namespace
