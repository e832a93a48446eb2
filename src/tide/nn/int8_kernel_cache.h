// The W8A8 kernel of one int8 layer (kernels/int8_compute.h), built on first use from the layer's current int8
// weights, scales and bias and rebuilt when any of them gets new storage (a LoRA merged or removed). Safe to
// use from several threads: the kernels themselves run concurrently.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

namespace tide::nn {

template <typename Kernel>
class Int8KernelCache {
 public:
  // `make()` builds the kernel when the cached one is for other tensors. New storage is always allocated
  // before the old is freed (set_data of a fresh tensor), so an address never names two generations. Once
  // the plain weights are given up (give_up_plain_weights) the kernel built is the layer's only copy and is
  // answered whatever the tensors.
  template <typename Make>
  std::shared_ptr<const Kernel> get(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias, Make make) {
    const Key key{q.data_ptr(), scale.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr};
    std::lock_guard<std::mutex> lock(mutex_);
    if (plain_given_up_) return kernel_;
    if (!kernel_ || key != key_) {
      kernel_ = make();
      key_ = key;
    }
    return kernel_;
  }

  // For one-shot runs: after the kernel has run once, give_up_plain_weights() frees the layer's plain int8
  // weights, so only the kernel's packed copy stays (keep_int8_weights_packed_only in nn/layers.h).
  void keep_packed_only() { packed_only_.store(true, std::memory_order_release); }
  // With keep_packed_only() and a kernel built: the kernel drops its reference to the plain weights and
  // `weight` keeps its shape and dtype over one byte of storage (read, it is all zeros). Else nothing.
  void give_up_plain_weights(at::Tensor& weight) {
    if (!packed_only_.load(std::memory_order_acquire) || plain_given_up()) return;  // every call: no lock
    std::lock_guard<std::mutex> lock(mutex_);
    if (plain_given_up_ || !kernel_) return;
    kernel_->drop_plain_weights();
    c10::InferenceMode ordinary_tensors(false);
    c10::NoGradGuard no_grad;
    weight.set_data(at::zeros({1}, weight.options()).expand(weight.sizes()));
    plain_given_up_.store(true, std::memory_order_release);
  }
  // Read on every call of every layer, so without the lock.
  bool plain_given_up() const { return plain_given_up_.load(std::memory_order_acquire); }

 private:
  using Key = std::array<const void*, 3>;
  std::mutex mutex_;
  Key key_{};
  std::shared_ptr<const Kernel> kernel_;
  std::atomic<bool> packed_only_{false}, plain_given_up_{false};  // each only ever turns true
};

}  // namespace tide::nn
