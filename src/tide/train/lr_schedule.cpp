#include "tide/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "tide/runtime/error.h"

namespace tide::train {
namespace {

constexpr double kPolynomialLrEnd = 1e-7;  // diffusers' default lr_end
constexpr double kPi = 3.14159265358979323846;

}  // namespace

std::vector<std::string> lr_schedule_names() {
  return {"constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"};
}

LrSchedule::LrSchedule(LrScheduleConfig config) : config_(std::move(config)) {
  const auto names = lr_schedule_names();
  if (std::find(names.begin(), names.end(), config_.name) == names.end()) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error("--lr_scheduler: unknown schedule '" + config_.name + "'; choose one of: " + list);
  }
  if (config_.name == "polynomial" && !(config_.base_lr > kPolynomialLrEnd))
    throw Error("--lr_scheduler polynomial: lr_end (1e-07) must be smaller than the learning rate (" +
                std::to_string(config_.base_lr) + ")");
  if (config_.world_size < 1) config_.world_size = 1;
}

double LrSchedule::factor(long step) const {
  const auto& c = config_;
  const long n = c.world_size;
  const long warmup = static_cast<long>(c.warmup_steps) * n;
  const long total = static_cast<long>(c.training_steps) * n;
  if (c.name == "constant") return 1.0;
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max(1L, warmup));
  if (c.name == "constant_with_warmup") return 1.0;
  if (c.name == "linear")
    return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max(1L, total - warmup)));
  if (c.name == "polynomial") {
    const double lr_init = c.base_lr;
    if (step > total) return kPolynomialLrEnd / lr_init;
    const double pct_remaining =
        1.0 - static_cast<double>(step - warmup) / static_cast<double>(std::max(1L, total - warmup));  // power 1.0
    return ((lr_init - kPolynomialLrEnd) * pct_remaining + kPolynomialLrEnd) / lr_init;
  }
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max(1L, total - warmup));
  if (c.name == "cosine") return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * 0.5 * 2.0 * progress)));
  // cosine_with_restarts
  if (progress >= 1.0) return 0.0;
  return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * std::fmod(static_cast<double>(c.num_cycles) * progress, 1.0))));
}

double LrSchedule::lr(long update) const { return config_.base_lr * factor(update * config_.world_size); }

}  // namespace tide::train
