// The W8A8 kernel of one int8 layer (kernels/int8_compute.h), built on first use from the layer's current int8
// weights, scales and bias and rebuilt when any of them gets new storage (a LoRA merged or removed). Safe to
// use from several threads: the kernels themselves run concurrently.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <mutex>

namespace tide::nn {

template <typename Kernel>
class Int8KernelCache {
 public:
  // `make()` builds the kernel when the cached one is for other tensors. New storage is always allocated
  // before the old is freed (set_data of a fresh tensor), so an address never names two generations.
  template <typename Make>
  std::shared_ptr<const Kernel> get(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, Make make) {
    const Key key{q.data_ptr(), scale.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr};
    std::lock_guard<std::mutex> lock(mutex_);
    if (!kernel_ || key != key_) {
      kernel_ = make();
      key_ = key;
    }
    return kernel_;
  }

 private:
  using Key = std::array<const void*, 3>;
  std::mutex mutex_;
  Key key_{};
  std::shared_ptr<const Kernel> kernel_;
};

}  // namespace tide::nn
