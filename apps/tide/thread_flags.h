// --threads and --cpus, as `tide generate` and `tide bench` take them.
#pragma once
#include <string>

#include "args.h"

namespace tide::cli {

Args& add_thread_flags(Args& args);

// Pins to --cpus (before any parallel work) and sets the thread count: --threads, else OMP_NUM_THREADS,
// else the physical cores available. Returns the count; bad values are tide::Errors naming `command`.
int apply_thread_flags(const Args& args, const std::string& command);

// "2 threads" or "2 threads on CPUs 0-1" for the run's summary line.
std::string thread_summary(const Args& args, int threads);

}  // namespace tide::cli
