// GGUF files (ggml's format, what stable-diffusion.cpp and llama.cpp write): a validated, memory-mapped
// reader that dequantizes ggml blocks to float tensors one tensor at a time.
// Layout (v2, v3; little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata
// (string key, u32 value type, value), tensor infos (string name, u32 n_dims, u64 ne[n_dims] with ne[0] the
// fastest dimension, u32 ggml type, u64 offset into the data section), padding to `general.alignment`
// (default 32), the data section. Strings are u64 length + bytes; arrays are u32 element type + u64 count.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tide/io/weights.h"

namespace tide::io {

// ggml's type ids (ggml.h `enum ggml_type`): the ones tide reads, and names for the others' messages.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

// "Q8_0", "F16", ... ("type 99" for ids ggml does not define).
std::string ggml_type_name(uint32_t type);
// Whether tide can read tensors of this type, and the list of those types (for messages and docs).
bool ggml_type_supported(uint32_t type);
std::string ggml_supported_types();
// Elements per block and bytes per block (1 and the element size for plain types); 0, 0 for unknown ids.
struct GgmlBlock {
  int64_t elements = 0;
  int64_t bytes = 0;
};
GgmlBlock ggml_block(uint32_t type);
// The dtype a tensor of this type reads as: F16, BF16, F32, F64 and integers keep theirs, blocks give float32.
at::ScalarType ggml_read_dtype(uint32_t type);

// Dequantizes `blocks` (bytes of `count` elements, a multiple of the block size) of a block type (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) into float32 `out`, exactly as ggml's dequantize_row_* does.
void dequantize_ggml_blocks(uint32_t type, const uint8_t* blocks, int64_t count, float* out);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // torch order: ne reversed
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Maps the file and validates everything before any tensor is read: magic, version 2 or 3, counts and
  // string lengths inside the file, dims (at most 4, non-negative, no overflow), rows a multiple of the block
  // size, known types, aligned offsets with the data inside the file, unique names. Throws tide::Error naming
  // the file and what is wrong.
  explicit GgufFile(const std::filesystem::path& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo& info(const std::string& name) const;
  // Metadata values as text: strings as they are, numbers and booleans printed, arrays as JSON (long ones cut
  // short with their length).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor in ggml_read_dtype(type), copied or dequantized out of the mapping. Unsupported types (IQ and
  // ternary types, Q8_1, Q8_K) throw tide::Error naming the tensor and the type.
  at::Tensor tensor(const std::string& name) const;

 private:
  void parse();
  std::filesystem::path path_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Whether the file starts with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// All tensors of a GGUF file as Derived entries read on demand (the file stays mapped while any is alive),
// its metadata as the source's metadata.
WeightSource gguf_weight_source(const std::filesystem::path& path);

}  // namespace tide::io
