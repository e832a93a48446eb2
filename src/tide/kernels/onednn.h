// What every direct oneDNN call in tide shares: one CPU engine and a way to run a primitive on the calling
// thread. Only kernels/*.cpp include this (oneDNN's headers are private to the library).
#pragma once
#include <ATen/ATen.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

namespace tide::kernels {

// The process's CPU engine: built once, immutable afterwards (safe from any thread).
const dnnl::engine& cpu_engine();

dnnl::memory::dims dims_of(at::IntArrayRef a);

// Runs `p` to completion on the calling thread's OpenMP team, with a scratchpad of its own (primitives are
// built with scratchpad_mode::user, so concurrent calls of one primitive never share one).
void execute(const dnnl::primitive& p, const dnnl::memory::desc& scratchpad, std::unordered_map<int, dnnl::memory> args);

}  // namespace tide::kernels
