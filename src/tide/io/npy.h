// NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order): reference dumps and debug output.
#pragma once
#include <ATen/ATen.h>
#include <filesystem>

namespace tide::io {

// Reads float16/32/64, int32/64, uint8 and bool arrays into a tensor of the same dtype.
at::Tensor read_npy(const std::filesystem::path& path);

// Writes a contiguous CPU tensor (any of the dtypes above); atomically (temporary name, then rename).
void write_npy(const std::filesystem::path& path, const at::Tensor& tensor);

}  // namespace tide::io
