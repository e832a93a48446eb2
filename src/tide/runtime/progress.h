// Progress of long work (denoising steps, downloads, training): a line rewritten in place when
// stderr is a terminal, silent otherwise so logs and pipes stay clean.
#pragma once
#include <chrono>
#include <string>

namespace tide::runtime {

class Progress {
 public:
  Progress(std::string label, int total);
  // Marks `done` of `total` finished; `extra` is appended (e.g. "loss 0.12").
  void update(int done, const std::string& extra = "");
  // Ends the line (terminal only).
  void finish();
  double elapsed_seconds() const;
  static bool on_terminal();

 private:
  std::string label_;
  int total_;
  bool active_;
  std::chrono::steady_clock::time_point start_;
};

// "1m05s", "12.3s"
std::string format_duration(double seconds);

}  // namespace tide::runtime
