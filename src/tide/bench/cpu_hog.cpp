#include "tide/bench/cpu_hog.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "tide/runtime/error.h"

namespace tide::bench {
namespace {

[[noreturn]] void spin_until_killed(pid_t parent) {
  // Only async-signal-safe calls after fork() in a multithreaded process.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);  // the parent died before prctl took effect
  volatile unsigned long long counter = 0;
  for (;;) counter = counter + 1;
}

}  // namespace

CpuHog::CpuHog(int processes) {
  const pid_t parent = getpid();
  for (int i = 0; i < processes; ++i) {
    const pid_t child = fork();
    if (child == 0) spin_until_killed(parent);
    if (child < 0) {
      const std::string why = std::strerror(errno);
      this->~CpuHog();
      throw Error("cannot start a CPU hog process: " + why);
    }
    children_.push_back(child);
  }
}

CpuHog::~CpuHog() {
  for (pid_t child : children_) kill(child, SIGKILL);
  for (pid_t child : children_) waitpid(child, nullptr, 0);
  children_.clear();
}

}  // namespace tide::bench
