// --threads and --cpus, as `tide generate` and `tide bench` take them.
#pragma once
#include <string>

#include "args.h"

namespace tide::cli {

Args& add_thread_flags(Args& args);

// Pins to --cpus (before any parallel work) and sets the thread count: --threads, else OMP_NUM_THREADS,
// else the physical cores available. Returns the count; bad values are tide::Errors naming `command`.
int apply_thread_flags(const Args& args, const std::string& command);

// Whether the count adapts to the load (runtime/load_aware_threads.h): when neither --threads nor
// OMP_NUM_THREADS fixes it.
bool threads_adapt_to_load(const Args& args);

// "2 threads", "up to 2 threads (fewer while other processes keep CPUs busy)", "... on CPUs 0-1" for the
// run's summary line.
std::string thread_summary(const Args& args, int threads);

}  // namespace tide::cli
