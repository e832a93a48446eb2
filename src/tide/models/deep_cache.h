// DeepCache (Ma et al., "DeepCache: Accelerating Diffusion Models for Free"), its uniform schedule with cache
// branch 0: every `interval`-th UNet call runs in full and keeps what enters the last layer of the UNet's last
// up block; the calls in between run only conv_in, that last layer (fed the kept features and the fresh
// conv_in skip) and the output head, reusing the slowly changing deep features. Off by default: the picture
// changes, by an amount bench/ measures per interval.
#pragma once
#include <ATen/ATen.h>

namespace tide::models {

class DeepCache {
 public:
  explicit DeepCache(int interval) : interval_(interval) {}
  // Before UNet call `index` (0, 1, ...) of a generation: whether that call may reuse the kept features.
  void begin_call(int index) { reuse_ = interval_ > 1 && index % interval_ != 0 && features_.defined(); }
  bool reuse() const { return reuse_; }
  at::Tensor& features() { return features_; }
  int interval() const { return interval_; }

 private:
  int interval_;
  bool reuse_ = false;
  at::Tensor features_;  // [B, C, h, w] the last up block's last-layer input from the last full call
};

// Makes `cache` the calling thread's DeepCache for UNet calls until destroyed (nullptr: none).
class DeepCacheScope {
 public:
  explicit DeepCacheScope(DeepCache* cache);
  ~DeepCacheScope();
  DeepCacheScope(const DeepCacheScope&) = delete;
  DeepCacheScope& operator=(const DeepCacheScope&) = delete;

 private:
  DeepCache* previous_;
};

DeepCache* current_deep_cache();

}  // namespace tide::models
