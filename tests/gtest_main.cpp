// The main of every test binary. Beyond gtest's own it refuses to report success for a run that tested
// nothing: a filter that matches no test (a case list from another fixture folder, a renamed test) fails,
// and a run whose every test skipped exits 77, which CTest reports as skipped (SKIP_RETURN_CODE).
#include <gtest/gtest.h>

#include <cstdio>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  const auto* unit = ::testing::UnitTest::GetInstance();
  if (status != 0) return status;
  if (unit->test_to_run_count() == 0) {
    std::fprintf(stderr, "no test ran: the filter matches no test of this binary\n");
    return 1;
  }
  if (unit->skipped_test_count() == unit->test_to_run_count()) return 77;
  return 0;
}
