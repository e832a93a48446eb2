#include "tide/io/gguf_writer.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "tide/io/atomic_file.h"
#include "tide/runtime/error.h"

namespace tide::io {
namespace {

void put_half(uint8_t* p, float value) {
  const uint16_t bits = c10::Half(value).x;  // round to nearest even, as GGML_FP32_TO_FP16
  std::memcpy(p, &bits, 2);
}

// The value with the largest magnitude (its sign kept), as the q4_0 / q5_0 quantizers pick it.
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void min_max(const float* x, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

void quantize_block(GgmlType type, const float* x, uint8_t* b) {
  switch (type) {
    case GgmlType::Q8_0: {
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
      put_half(b, d);
      for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
      return;
    }
    case GgmlType::Q4_0: {
      const float d = signed_absmax(x) / -8, id = d ? 1.0f / d : 0.0f;
      put_half(b, d);
      for (int j = 0; j < 16; ++j) {
        const uint8_t q0 = std::min<uint8_t>(15, static_cast<int8_t>(x[j] * id + 8.5f));
        const uint8_t q1 = std::min<uint8_t>(15, static_cast<int8_t>(x[16 + j] * id + 8.5f));
        b[2 + j] = q0 | (q1 << 4);
      }
      return;
    }
    case GgmlType::Q4_1: {
      float min, max;
      min_max(x, min, max);
      const float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
      put_half(b, d);
      put_half(b + 2, min);
      for (int j = 0; j < 16; ++j) {
        const uint8_t q0 = std::min<uint8_t>(15, static_cast<int8_t>((x[j] - min) * id + 0.5f));
        const uint8_t q1 = std::min<uint8_t>(15, static_cast<int8_t>((x[16 + j] - min) * id + 0.5f));
        b[4 + j] = q0 | (q1 << 4);
      }
      return;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool offset = type == GgmlType::Q5_1;
      float min = 0.0f, d;
      if (offset) {
        float max;
        min_max(x, min, max);
        d = (max - min) / 31;
      } else {
        d = signed_absmax(x) / -16;
      }
      const float id = d ? 1.0f / d : 0.0f;
      put_half(b, d);
      if (offset) put_half(b + 2, min);
      uint8_t* qs = b + (offset ? 8 : 6);
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        uint8_t q0, q1;
        if (offset) {
          q0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
          q1 = static_cast<uint8_t>((x[16 + j] - min) * id + 0.5f);
        } else {
          q0 = std::min<uint8_t>(31, static_cast<int8_t>(x[j] * id + 16.5f));
          q1 = std::min<uint8_t>(31, static_cast<int8_t>(x[16 + j] * id + 16.5f));
        }
        qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= ((q0 & 0x10u) >> 4) << j;  // the fifth bits
        qh |= ((q1 & 0x10u) >> 4) << (j + 16);
      }
      std::memcpy(b + (offset ? 4 : 2), &qh, 4);
      return;
    }
    default:
      throw Error("tide cannot quantize to GGUF type " + ggml_type_name(static_cast<uint32_t>(type)));
  }
}

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
void put_string(std::string& out, const std::string& s) {
  put_u64(out, s.size());
  out += s;
}

}  // namespace

std::vector<uint8_t> quantize_ggml_blocks(GgmlType type, const float* x, int64_t count) {
  const GgmlBlock block = ggml_block(static_cast<uint32_t>(type));
  if (block.elements != 32 || count % 32 != 0)
    throw Error("cannot quantize " + std::to_string(count) + " values to GGUF type " +
                ggml_type_name(static_cast<uint32_t>(type)));
  std::vector<uint8_t> out(static_cast<size_t>(count / 32 * block.bytes));
  for (int64_t i = 0; i < count / 32; ++i) quantize_block(type, x + i * 32, out.data() + i * block.bytes);
  return out;
}

void write_gguf(const std::filesystem::path& path, const std::vector<GgufTensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata, uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw Error("GGUF alignment " + std::to_string(alignment) + " is not a power of two");
  std::string header = "GGUF";
  put_u32(header, 3);
  put_u64(header, tensors.size());
  put_u64(header, metadata.size() + (alignment != 32 ? 1 : 0));
  if (alignment != 32) {
    put_string(header, "general.alignment");
    put_u32(header, 4);  // u32
    put_u32(header, alignment);
  }
  for (const auto& [key, value] : metadata) {
    if (key == "general.alignment") throw Error("write_gguf: pass the alignment as its own argument");
    put_string(header, key);
    put_u32(header, 8);  // string
    put_string(header, value);
  }
  auto pad = [alignment](uint64_t n) { return (n + alignment - 1) / alignment * alignment; };
  std::vector<std::string> data;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw Error("write_gguf: duplicate tensor name '" + t.name + "'");
    const uint32_t type = static_cast<uint32_t>(t.type);
    const GgmlBlock block = ggml_block(type);
    if (block.elements == 0) throw Error("write_gguf: unknown GGUF type for tensor '" + t.name + "'");
    if (t.tensor.dim() > 4) throw Error("write_gguf: tensor '" + t.name + "' has more than 4 dimensions");
    const int64_t row = t.tensor.dim() ? t.tensor.size(-1) : 1;
    if (row % block.elements != 0)
      throw Error("write_gguf: tensor '" + t.name + "' has rows of " + std::to_string(row) + " elements; " +
                  ggml_type_name(type) + " needs a multiple of " + std::to_string(block.elements));
    std::string bytes;
    if (block.elements == 1) {
      const at::Tensor c = t.tensor.detach().cpu().to(ggml_read_dtype(static_cast<uint32_t>(t.type))).contiguous();
      bytes.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
    } else {
      const at::Tensor c = t.tensor.detach().cpu().to(at::kFloat).contiguous();
      const auto q = quantize_ggml_blocks(t.type, c.data_ptr<float>(), c.numel());
      bytes.assign(reinterpret_cast<const char*>(q.data()), q.size());
    }
    put_string(header, t.name);
    put_u32(header, static_cast<uint32_t>(std::max<int64_t>(t.tensor.dim(), 1)));
    if (t.tensor.dim() == 0) put_u64(header, 1);
    for (int64_t d = t.tensor.dim() - 1; d >= 0; --d) put_u64(header, t.tensor.size(d));  // ne[0] = last dim
    put_u32(header, type);
    put_u64(header, offset);
    offset = pad(offset + bytes.size());
    data.push_back(std::move(bytes));
  }
  header.resize(pad(header.size()), '\0');
  write_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot create " + tmp.string());
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& bytes : data) {
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      const std::string padding(pad(bytes.size()) - bytes.size(), '\0');
      out.write(padding.data(), static_cast<std::streamsize>(padding.size()));
    }
    out.close();
    if (!out) throw Error("cannot write " + tmp.string() + " (disk full?)");
  });
}

}  // namespace tide::io
