// The MPI communicator (builds with MPI; communicator_without_mpi.cpp stands in for it otherwise).
#include "tide/train/communicator.h"

#include <mpi.h>

#include <cstdlib>
#include <utility>

#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"

namespace tide {
bool built_with_mpi() { return true; }
}  // namespace tide

namespace tide::train {
namespace {

class Mpi final : public Communicator {
 public:
  Mpi() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Only the main thread calls MPI; libtorch's worker threads never do.
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw Error("MPI_Init failed: cannot start MPI (is Open MPI installed and mpirun set up?)");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(at::Tensor& tensor) override {
    if (size_ == 1) return;
    MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), count(tensor), datatype(tensor), MPI_SUM, MPI_COMM_WORLD);
  }
  void broadcast(at::Tensor& tensor) override {
    if (size_ == 1) return;
    MPI_Bcast(tensor.data_ptr(), count(tensor), datatype(tensor), 0, MPI_COMM_WORLD);
  }
  uint64_t broadcast(uint64_t value) override {
    if (size_ > 1) MPI_Bcast(&value, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    return value;
  }
  void barrier() override {
    if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
  }
  void report_to_main(const std::string& line) override {
    if (rank_ == 0) return reports_.push_back(line);
    // Small messages: sent eagerly, and rank 0 receives every one before its next collective anyway.
    MPI_Send(line.data(), static_cast<int>(line.size()), MPI_CHAR, 0, kReportTag, MPI_COMM_WORLD);
  }
  std::vector<std::string> take_reports(size_t at_least) override {
    if (rank_ != 0) throw Error("MPI: only rank 0 takes the progress reports");
    for (;;) {
      int arrived = 0;
      MPI_Status status;
      if (reports_.size() >= at_least) {
        MPI_Iprobe(MPI_ANY_SOURCE, kReportTag, MPI_COMM_WORLD, &arrived, &status);
        if (!arrived) break;
      } else {
        MPI_Probe(MPI_ANY_SOURCE, kReportTag, MPI_COMM_WORLD, &status);
      }
      int length = 0;
      MPI_Get_count(&status, MPI_CHAR, &length);
      std::string line(static_cast<size_t>(length), '\0');
      MPI_Recv(line.data(), length, MPI_CHAR, status.MPI_SOURCE, kReportTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      reports_.push_back(std::move(line));
    }
    return std::exchange(reports_, {});
  }
  [[noreturn]] void abort(int code) override {
    if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 private:
  static MPI_Datatype datatype(const at::Tensor& tensor) {
    if (!tensor.is_contiguous() || !tensor.device().is_cpu()) throw Error("MPI: expected a contiguous CPU tensor");
    if (tensor.scalar_type() == at::kDouble) return MPI_DOUBLE;
    if (tensor.scalar_type() != at::kFloat) throw Error("MPI: expected a float32 or float64 tensor");
    return MPI_FLOAT;
  }
  static int count(const at::Tensor& tensor) { return static_cast<int>(tensor.numel()); }
  static constexpr int kReportTag = 7301;  // point-to-point progress lines (collectives use no tags)
  int rank_ = 0, size_ = 1;
  std::vector<std::string> reports_;  // rank 0: lines taken from the wire, not yet handed out
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<Mpi>(); }

}  // namespace tide::train
