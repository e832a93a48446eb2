// Writing GGUF files (v3, little-endian) and ggml's reference quantizers: how tide produces the files
// stable-diffusion.cpp reads, and how its tests make GGUF inputs with known contents.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tide/io/gguf.h"

namespace tide::io {

// ggml-quants.c quantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0}_ref: `count` floats (a multiple of 32) to blocks.
std::vector<uint8_t> quantize_ggml_blocks(GgmlType type, const float* x, int64_t count);

struct GgufTensorToWrite {
  std::string name;
  at::Tensor tensor;  // any floating dtype for F32/F16/BF16 and the block types; integer types as they are
  GgmlType type = GgmlType::F32;
};

// Writes the tensors in order (dims reversed into ggml order, each tensor's data aligned to `alignment`) with
// `metadata` as string values (and general.alignment as u32 when it is not 32), atomically. Rows (the last
// dimension) not a multiple of a block type's block size throw tide::Error, as ggml refuses them.
void write_gguf(const std::filesystem::path& path, const std::vector<GgufTensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata = {}, uint32_t alignment = 32);

}  // namespace tide::io
