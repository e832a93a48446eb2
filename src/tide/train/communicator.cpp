#include "tide/train/communicator.h"

#include <cstdlib>
#include <iostream>
#include <utility>

#include "tide/runtime/error.h"

namespace tide::train {
namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(at::Tensor&) override {}
  uint64_t broadcast(uint64_t value) override { return value; }
  void broadcast(at::Tensor&) override {}
  void barrier() override {}
  void report_to_main(const std::string& line) override { reports_.push_back(line); }
  std::vector<std::string> take_reports(size_t) override { return std::exchange(reports_, {}); }
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  std::vector<std::string> reports_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_process_communicator() { return std::make_unique<SingleProcess>(); }

std::pair<int, int> local_rank_and_size() {
  auto read = [](const char* name) -> int {
    const char* value = std::getenv(name);
    if (!value || !*value) return -1;
    char* end = nullptr;
    const long n = std::strtol(value, &end, 10);
    return *end == '\0' && n >= 0 && n < (1 << 20) ? static_cast<int>(n) : -1;
  };
  for (const auto& [rank_var, size_var] : {std::pair{"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
                                           std::pair{"MPI_LOCALRANKID", "MPI_LOCALNRANKS"}}) {
    const int rank = read(rank_var), size = read(size_var);
    if (rank >= 0 && size > rank) return {rank, size};
  }
  return {0, 1};
}

bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

}  // namespace tide::train
