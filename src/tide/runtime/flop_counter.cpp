#include "tide/runtime/flop_counter.h"

namespace tide::runtime {
namespace {
thread_local FlopCount* g_current = nullptr;
}

FlopCount::FlopCount() : outer_(g_current) { g_current = this; }
FlopCount::~FlopCount() {
  g_current = outer_;
  if (outer_) outer_->flops_ += flops_;
}

void FlopCount::add_macs(double macs) {
  if (g_current) g_current->flops_ += 2.0 * macs;
}

}  // namespace tide::runtime
