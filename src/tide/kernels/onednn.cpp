#include "tide/kernels/onednn.h"

#include <algorithm>

namespace tide::kernels {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);  // immutable once built
  return engine;
}

dnnl::memory::dims dims_of(at::IntArrayRef a) { return dnnl::memory::dims(a.begin(), a.end()); }

void execute(const dnnl::primitive& p, const dnnl::memory::desc& scratchpad, std::unordered_map<int, dnnl::memory> args) {
  at::Tensor scratch = at::empty({std::max<int64_t>(scratchpad.get_size(), 1)}, at::kByte);  // 64-byte aligned
  args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchpad, cpu_engine(), scratch.data_ptr()));
  dnnl::stream stream(cpu_engine());
  p.execute(stream, args);
  stream.wait();
}

}  // namespace tide::kernels
