#include "thread_flags.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "tide/runtime/error.h"
#include "tide/runtime/threads.h"

namespace tide::cli {

Args& add_thread_flags(Args& args) {
  return args
      .option("threads", "N",
              "CPU threads, fixed for the whole run (runs then repeat bit for bit); without it the count adapts "
              "to the load: before every stage and denoising step tide looks at how much CPU time other "
              "processes took and runs with as many threads as there are free cores, because OpenMP threads "
              "beside a busy core wait for each other and run slower than one thread",
              "OMP_NUM_THREADS if set (fixed), else up to one per physical core this process may use (SMT "
              "siblings count once), fewer while other processes keep cores busy")
      .option("cpus", "LIST", "run only on these CPUs, like numactl -C / taskset -c (e.g. 0-15 or 0,2,4-7)",
              "all this process may use");
}

int apply_thread_flags(const Args& args, const std::string& command) {
  if (args.has("cpus")) runtime::pin_to_cpus(runtime::parse_cpu_list(args.get("cpus"), command + ": --cpus"));
  if (!args.has("threads")) return runtime::configure_threads(0);
  // More threads than CPUs only makes OpenMP threads wait for each other; thousands exhaust the process.
  const int limit = 4 * std::max(1u, std::thread::hardware_concurrency());
  const int threads = args.get_int("threads");
  if (threads < 1 || threads > limit)
    throw Error(command + ": --threads must be between 1 and " + std::to_string(limit) +
                " (four per CPU of this machine), got " + std::to_string(threads));
  return runtime::configure_threads(threads);
}

bool threads_adapt_to_load(const Args& args) { return !args.has("threads") && !std::getenv("OMP_NUM_THREADS"); }

std::string thread_summary(const Args& args, int threads) {
  return (threads_adapt_to_load(args) ? "up to " : "") + std::to_string(threads) +
         (threads == 1 ? " thread" : " threads") +
         (threads_adapt_to_load(args) ? " (fewer while other processes keep cores busy)" : "") +
         (args.has("cpus") ? " on CPUs " + args.get("cpus") : "");
}

}  // namespace tide::cli
