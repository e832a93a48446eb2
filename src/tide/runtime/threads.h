// Threads and CPU pinning. Debian's libtorch starts with one thread, so tide always sets the count
// explicitly. Matrix work gains nothing from a core's second SMT thread, so the default is one thread per
// physical core the process may run on.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace tide::runtime {

// The CPUs this process may run on (its affinity mask), ascending.
std::vector<int> allowed_cpus();

// The number of CPUs this process may run on, at least 1.
int usable_cores();

// Physical cores among `cpus`: SMT siblings (same package and core id in sysfs topology) count once.
// CPUs without topology information count as cores of their own.
int physical_cores(const std::vector<int>& cpus,
                   const std::filesystem::path& sysfs_cpus = "/sys/devices/system/cpu");

// OMP_NUM_THREADS when set (at most usable_cores()), else the physical cores of allowed_cpus().
int default_threads();

// Sets libtorch's intra-op thread count: `threads` if > 0, else default_threads(). Returns the count set.
int configure_threads(int threads);

// "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}; bad syntax or a reversed range is a tide::Error naming `flag`.
std::vector<int> parse_cpu_list(const std::string& list, const std::string& flag = "--cpus");

// The share of `cpus` (ascending) for process `rank` of `ranks` that were all given the same CPUs, e.g. by
// mpirun without binding: consecutive CPUs, split as evenly as possible (the first cpus.size() % ranks ranks
// take one more). With more ranks than CPUs, rank r gets CPU cpus[r % cpus.size()].
std::vector<int> share_of_cpus(const std::vector<int>& cpus, int rank, int ranks);

// Restricts this process to `cpus`, like `numactl -C` / `taskset -c`: call it before any parallel work, so
// that every worker thread starts inside the set. A CPU the process may not use is a tide::Error.
void pin_to_cpus(const std::vector<int>& cpus);

}  // namespace tide::runtime
