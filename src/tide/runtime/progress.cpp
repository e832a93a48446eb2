#include "tide/runtime/progress.h"

#include <unistd.h>

#include <cstdio>

namespace tide::runtime {

bool Progress::on_terminal() { return ::isatty(STDERR_FILENO) != 0; }

Progress::Progress(std::string label, int total)
    : label_(std::move(label)), total_(total), active_(on_terminal()), start_(std::chrono::steady_clock::now()) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string format_duration(double seconds) {
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof(buf), "%.1fs", seconds);
  } else {
    const int s = static_cast<int>(seconds + 0.5);
    if (s < 3600)
      std::snprintf(buf, sizeof(buf), "%dm%02ds", s / 60, s % 60);
    else
      std::snprintf(buf, sizeof(buf), "%dh%02dm", s / 3600, (s / 60) % 60);
  }
  return buf;
}

void Progress::update(int done, const std::string& extra) {
  if (!active_) return;
  const double elapsed = elapsed_seconds();
  const double per_item = done > 0 ? elapsed / done : 0.0;
  const int width = 24;
  const int filled = total_ > 0 ? width * done / total_ : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r%s [%s] %d/%d  %.2fs/it  ETA %s%s%s\x1b[K", label_.c_str(), bar.c_str(), done, total_,
               per_item, format_duration(per_item * (total_ - done)).c_str(), extra.empty() ? "" : "  ",
               extra.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (!active_) return;
  std::fprintf(stderr, "\n");
  active_ = false;
}

}  // namespace tide::runtime
