// Builds without MPI (TIDE_WITH_MPI=OFF, or no MPI found): every run is one process, and a start under
// mpirun is refused with what to do instead of ranks that would each train alone. Replaces communicator_mpi.cpp.
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"
#include "tide/train/communicator.h"

namespace tide {
bool built_with_mpi() { return false; }
}  // namespace tide

namespace tide::train {

std::unique_ptr<Communicator> make_mpi_communicator() {
  throw Error(
      "this build of tide has no MPI support (it was built without MPI), so it cannot run as several ranks under "
      "mpirun: run it as one process, without mpirun, or rebuild tide with MPI (libopenmpi-dev, TIDE_WITH_MPI=ON)");
}

}  // namespace tide::train
