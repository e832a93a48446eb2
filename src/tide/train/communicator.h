// The processes that train together. Under `mpirun` every rank is one MPI process; without it MPI runs as a
// singleton (world size 1). The trainer only needs these few collectives, so tests can run it in-process
// with the single-process implementation.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tide::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool is_main() const { return rank() == 0; }
  // Element-wise sum over all ranks, in place (float32 or float64, contiguous CPU tensor).
  virtual void allreduce_sum(at::Tensor& tensor) = 0;
  // Rank 0's value on every rank.
  virtual uint64_t broadcast(uint64_t value) = 0;
  // Rank 0's values into `tensor` on every rank, in place (same shape everywhere; float32 or float64, contiguous).
  virtual void broadcast(at::Tensor& tensor) = 0;
  virtual void barrier() = 0;
  // Progress lines for rank 0 to print, so that one process speaks for all: any rank sends (rank 0's own
  // lines are kept for itself); rank 0 takes those that have arrived, waiting until it has `at_least` in all
  // since its last call. Only rank 0 may call take_reports().
  virtual void report_to_main(const std::string& line) = 0;
  virtual std::vector<std::string> take_reports(size_t at_least = 0) = 0;
  // Stops every rank: after an error on one rank the others would wait forever in a collective.
  [[noreturn]] virtual void abort(int code) = 0;
};

// World size 1, no MPI.
std::unique_ptr<Communicator> make_single_process_communicator();

// MPI_COMM_WORLD; calls MPI_Init on first use and MPI_Finalize at exit. Errors in MPI calls are fatal for the
// whole job (MPI_ERRORS_ARE_FATAL): a rank that dies takes the job down instead of leaving it hanging.
// In a build without MPI (tide::built_with_mpi() false) it throws a tide::Error saying to run without mpirun.
std::unique_ptr<Communicator> make_mpi_communicator();

// Whether this process was started by mpirun / mpiexec (Open MPI, MPICH or Slurm environment variables).
bool launched_by_mpirun();

// This process's place among the ranks on its machine, from the launcher's environment (Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK/_SIZE, MPICH's MPI_LOCALRANKID/MPI_LOCALNRANKS): {local rank, local ranks};
// {0, 1} when the launcher does not say.
std::pair<int, int> local_rank_and_size();

}  // namespace tide::train
