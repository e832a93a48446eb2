#include "tide/io/gguf.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <set>

#include "tide/io/tensor_shape_limits.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::io {
namespace {

struct TypeTraits {
  uint32_t id;
  const char* name;
  int64_t block_elements;
  int64_t block_bytes;
  bool supported;
};
// ggml.c's type_traits (blck_size, type_size); QK_K = 256 for the K and IQ families.
constexpr TypeTraits kTypes[] = {
    {0, "F32", 1, 4, true},          {1, "F16", 1, 2, true},          {2, "Q4_0", 32, 18, true},
    {3, "Q4_1", 32, 20, true},       {6, "Q5_0", 32, 22, true},       {7, "Q5_1", 32, 24, true},
    {8, "Q8_0", 32, 34, true},       {9, "Q8_1", 32, 36, false},      {10, "Q2_K", 256, 84, true},
    {11, "Q3_K", 256, 110, true},    {12, "Q4_K", 256, 144, true},    {13, "Q5_K", 256, 176, true},
    {14, "Q6_K", 256, 210, true},    {15, "Q8_K", 256, 292, false},   {16, "IQ2_XXS", 256, 66, false},
    {17, "IQ2_XS", 256, 74, false},  {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
    {20, "IQ4_NL", 32, 18, false},   {21, "IQ3_S", 256, 110, false},  {22, "IQ2_S", 256, 82, false},
    {23, "IQ4_XS", 256, 136, false}, {24, "I8", 1, 1, true},          {25, "I16", 1, 2, true},
    {26, "I32", 1, 4, true},         {27, "I64", 1, 8, true},         {28, "F64", 1, 8, true},
    {29, "IQ1_M", 256, 56, false},   {30, "BF16", 1, 2, true},        {34, "TQ1_0", 256, 54, false},
    {35, "TQ2_0", 256, 66, false},
};

const TypeTraits* traits(uint32_t type) {
  for (const auto& t : kTypes)
    if (t.id == type) return &t;
  return nullptr;
}

// Metadata value types (gguf.h `enum gguf_type`).
enum ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
// Bytes of a scalar value type; 0 for strings and arrays (variable) and unknown ids.
uint64_t scalar_size(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

constexpr int kMaxArrayDepth = 8;         // arrays of arrays nest at most this deep
constexpr size_t kMaxShownElements = 64;  // longer arrays are shown cut short in metadata()

float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// Bounds-checked little-endian reading of the header; every failure names the file and what was being read.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, std::string where) : data_(data), size_(size), where_(std::move(where)) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > left())
      throw Error(where_ + ": truncated GGUF file: " + what + " needs " + std::to_string(bytes) + " bytes at offset " +
                  std::to_string(pos_) + ", the file has " + std::to_string(left()) + " left");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  void skip(uint64_t bytes, const std::string& what) {
    need(bytes, what);
    pos_ += bytes;
  }
  std::string string(const std::string& what) {
    const uint64_t length = read<uint64_t>("the length of " + what);
    need(length, what + " (" + std::to_string(length) + " bytes)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string where_;
};

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Reads one value of `type` and returns it as text (strings unquoted at the top level, quoted inside arrays).
std::string read_value(Reader& r, uint32_t type, const std::string& key, int depth, bool quote_strings) {
  const std::string what = "the value of '" + key + "'";
  switch (type) {
    case kU8:
      return std::to_string(r.read<uint8_t>(what));
    case kI8:
      return std::to_string(r.read<int8_t>(what));
    case kU16:
      return std::to_string(r.read<uint16_t>(what));
    case kI16:
      return std::to_string(r.read<int16_t>(what));
    case kU32:
      return std::to_string(r.read<uint32_t>(what));
    case kI32:
      return std::to_string(r.read<int32_t>(what));
    case kU64:
      return std::to_string(r.read<uint64_t>(what));
    case kI64:
      return std::to_string(r.read<int64_t>(what));
    case kF32: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.9g", r.read<float>(what));
      return buf;
    }
    case kF64: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.17g", r.read<double>(what));
      return buf;
    }
    case kBool:
      return r.read<uint8_t>(what) ? "true" : "false";
    case kString: {
      std::string s = r.string(what);
      return quote_strings ? json_quote(s) : s;
    }
    case kArray: {
      if (depth >= kMaxArrayDepth)
        throw Error("metadata '" + key + "' nests arrays more than " + std::to_string(kMaxArrayDepth) + " deep");
      const uint32_t element = r.read<uint32_t>("the element type of '" + key + "'");
      const uint64_t count = r.read<uint64_t>("the length of '" + key + "'");
      // Every element takes at least this many bytes, so a count past the end of the file is refused here.
      const uint64_t min_bytes = element == kString ? 8 : element == kArray ? 12 : scalar_size(element);
      if (min_bytes == 0)
        throw Error("metadata '" + key + "' is an array of unknown value type " + std::to_string(element));
      if (count > r.left() / min_bytes)
        throw Error("metadata '" + key + "' claims " + std::to_string(count) + " elements, more than the file holds");
      std::string text = "[";
      for (uint64_t i = 0; i < count; ++i) {
        if (i == kMaxShownElements && element != kArray && element != kString) {
          r.skip((count - i) * min_bytes, what);
          text += ", ...";
          break;
        }
        std::string item = read_value(r, element, key, depth + 1, true);
        if (i < kMaxShownElements)
          text += (i ? ", " : "") + item;
        else if (i == kMaxShownElements)
          text += ", ...";
      }
      return text + "]" + (count > kMaxShownElements ? " (" + std::to_string(count) + " elements)" : "");
    }
    default:
      throw Error("metadata '" + key + "' has unknown value type " + std::to_string(type));
  }
}

// ggml-quants.c get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) from 12 packed bytes.
std::pair<uint8_t, uint8_t> k_scale_min(int j, const uint8_t* q) {
  if (j < 4) return {static_cast<uint8_t>(q[j] & 63), static_cast<uint8_t>(q[j + 4] & 63)};
  return {static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)),
          static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4))};
}

}  // namespace

std::string ggml_type_name(uint32_t type) {
  const auto* t = traits(type);
  return t ? t->name : "type " + std::to_string(type);
}

bool ggml_type_supported(uint32_t type) {
  const auto* t = traits(type);
  return t && t->supported;
}

std::string ggml_supported_types() {
  std::string list;
  for (const auto& t : kTypes)
    if (t.supported) list += (list.empty() ? "" : ", ") + std::string(t.name);
  return list;
}

GgmlBlock ggml_block(uint32_t type) {
  const auto* t = traits(type);
  return t ? GgmlBlock{t->block_elements, t->block_bytes} : GgmlBlock{};
}

at::ScalarType ggml_read_dtype(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F16:
      return at::kHalf;
    case GgmlType::BF16:
      return at::kBFloat16;
    case GgmlType::F64:
      return at::kDouble;
    case GgmlType::I8:
      return at::kChar;
    case GgmlType::I16:
      return at::kShort;
    case GgmlType::I32:
      return at::kInt;
    case GgmlType::I64:
      return at::kLong;
    default:
      return at::kFloat;
  }
}

// ggml-quants.c dequantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0,q2_K..q6_K}: the same integer arithmetic and the same
// float products in the same order (`x*d`, `x*d + m`, `dl*q - ml`), so the values are bit-identical to ggml's.
void dequantize_ggml_blocks(uint32_t type, const uint8_t* blocks, int64_t count, float* out) {
  const GgmlBlock block = ggml_block(type);
  if (block.elements <= 1 || count % block.elements != 0)
    throw Error("cannot dequantize " + std::to_string(count) + " elements of GGUF type " + ggml_type_name(type));
  const int64_t n_blocks = count / block.elements;
  auto run = [&](auto&& one_block) {
    at::parallel_for(0, n_blocks, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) one_block(blocks + i * block.bytes, out + i * block.elements);
    });
  };
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::Q8_0:  // half d; int8 qs[32]
      return run([](const uint8_t* b, float* y) {
        const float d = half_to_float(b);
        for (int j = 0; j < 32; ++j) y[j] = static_cast<int8_t>(b[2 + j]) * d;
      });
    case GgmlType::Q4_0:  // half d; qs[16]: low nibbles are elements 0..15, high nibbles 16..31
      return run([](const uint8_t* b, float* y) {
        const float d = half_to_float(b);
        for (int j = 0; j < 16; ++j) {
          y[j] = ((b[2 + j] & 0x0F) - 8) * d;
          y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
        }
      });
    case GgmlType::Q4_1:  // half d, half m; qs[16]
      return run([](const uint8_t* b, float* y) {
        const float d = half_to_float(b), m = half_to_float(b + 2);
        for (int j = 0; j < 16; ++j) {
          y[j] = (b[4 + j] & 0x0F) * d + m;
          y[j + 16] = (b[4 + j] >> 4) * d + m;
        }
      });
    case GgmlType::Q5_0:  // half d; u32 qh (fifth bits); qs[16]
      return run([](const uint8_t* b, float* y) {
        const float d = half_to_float(b);
        uint32_t qh;
        std::memcpy(&qh, b + 2, 4);
        for (int j = 0; j < 16; ++j) {
          const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
          y[j] = (((b[6 + j] & 0x0F) | h0) - 16) * d;
          y[j + 16] = (((b[6 + j] >> 4) | h1) - 16) * d;
        }
      });
    case GgmlType::Q5_1:  // half d, half m; u32 qh; qs[16]
      return run([](const uint8_t* b, float* y) {
        const float d = half_to_float(b), m = half_to_float(b + 2);
        uint32_t qh;
        std::memcpy(&qh, b + 4, 4);
        for (int j = 0; j < 16; ++j) {
          const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
          y[j] = ((b[8 + j] & 0x0F) | h0) * d + m;
          y[j + 16] = ((b[8 + j] >> 4) | h1) * d + m;
        }
      });
    // K-quants: super-blocks of 256 with 6-bit (Q4_K, Q5_K, Q3_K), 4-bit (Q2_K) or 8-bit (Q6_K) sub-block scales.
    case GgmlType::Q2_K:  // scales[16] (4-bit scale | 4-bit min); qs[64]; half d, dmin
      return run([](const uint8_t* b, float* y) {
        const uint8_t* scales = b;
        const uint8_t* q = b + 16;
        const float d = half_to_float(b + 80), min = half_to_float(b + 82);
        int is = 0;
        for (int n = 0; n < 256; n += 128, q += 32)
          for (int shift = 0; shift < 8; shift += 2)
            for (int half = 0; half < 2; ++half) {
              const uint8_t sc = scales[is++];
              const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
              for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l + 16 * half] >> shift) & 3) - ml;
            }
      });
    case GgmlType::Q3_K:  // hmask[32]; qs[64]; scales[12] (16 x 6 bits); half d
      return run([](const uint8_t* b, float* y) {
        const uint8_t* hm = b;
        const uint8_t* q = b + 32;
        const uint8_t* packed = b + 96;
        const float d_all = half_to_float(b + 108);
        uint32_t aux[4];
        std::memcpy(aux, packed, 12);
        const uint32_t tmp = aux[2], kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
        aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        int8_t scales[16];
        std::memcpy(scales, aux, 16);
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < 256; n += 128, q += 32)
          for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int half = 0; half < 2; ++half) {
              const float dl = d_all * (scales[is++] - 32);
              for (int l = 0; l < 16; ++l) {
                const int i = l + 16 * half;
                *y++ = dl * (static_cast<int8_t>((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4));
              }
            }
      });
    case GgmlType::Q4_K:  // half d, dmin; scales[12] (8 x 6-bit scale and min); qs[128]
    case GgmlType::Q5_K:  // half d, dmin; scales[12]; qh[32] (fifth bits); qs[128]
      return run([type](const uint8_t* b, float* y) {
        const bool five = static_cast<GgmlType>(type) == GgmlType::Q5_K;
        const float d = half_to_float(b), min = half_to_float(b + 2);
        const uint8_t* scales = b + 4;
        const uint8_t* qh = b + 16;
        const uint8_t* q = b + (five ? 48 : 16);
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, q += 32, u1 <<= 2, u2 <<= 2) {
          const auto [sc1, m1] = k_scale_min(is, scales);
          const auto [sc2, m2] = k_scale_min(is + 1, scales);
          const float d1 = d * sc1, dm1 = min * m1, d2 = d * sc2, dm2 = min * m2;
          for (int l = 0; l < 32; ++l) *y++ = d1 * ((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - dm1;
          for (int l = 0; l < 32; ++l) *y++ = d2 * ((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - dm2;
        }
      });
    case GgmlType::Q6_K:  // ql[128] (low 4 bits); qh[64] (high 2 bits); int8 scales[16]; half d
      return run([](const uint8_t* b, float* y) {
        const uint8_t* ql = b;
        const uint8_t* qh = b + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
        const float d = half_to_float(b + 208);
        for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int8_t q1 = static_cast<int8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int8_t q3 = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
          }
      });
    default:
      throw Error("GGUF type " + ggml_type_name(type) +
                  " cannot be dequantized by tide yet; supported: " + ggml_supported_types());
  }
}

GgufFile::GgufFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string();
  int fd = ::open(where.c_str(), O_RDONLY);
  if (fd < 0) throw Error("cannot open " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where + " is not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    throw Error(where + " is empty, not a GGUF file");
  }
  void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error("cannot map " + where + ": " + std::strerror(errno));
  map_ = static_cast<const uint8_t*>(map);
  try {
    parse();
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), size_);
    throw;
  }
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

void GgufFile::parse() {
  const std::string where = path_.string();
  Reader r(map_, size_, where);
  if (size_ < 4 || std::memcmp(map_, "GGUF", 4) != 0) throw Error(where + " is not a GGUF file (no GGUF magic)");
  r.skip(4, "the magic");
  version_ = r.read<uint32_t>("the version");
  if (version_ == 0x02000000u || version_ == 0x03000000u)
    throw Error(where + " is a big-endian GGUF file; tide reads little-endian GGUF files");
  if (version_ == 1) throw Error(where + " is GGUF version 1 (from 2023), which tide does not read; convert it again");
  if (version_ != 2 && version_ != 3)
    throw Error(where + " is GGUF version " + std::to_string(version_) + "; tide reads versions 2 and 3");
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");
  // A metadata entry takes at least 13 bytes (key length, type, one byte), a tensor info 24.
  if (n_kv > r.left() / 13)
    throw Error(where + ": GGUF header claims " + std::to_string(n_kv) + " metadata entries, more than the file holds");
  if (n_tensors > r.left() / 24)
    throw Error(where + ": GGUF header claims " + std::to_string(n_tensors) + " tensors, more than the file holds");

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.string("metadata key " + std::to_string(i));
    if (metadata_.count(key)) throw Error(where + ": metadata key '" + key + "' appears twice");
    const uint32_t type = r.read<uint32_t>("the type of '" + key + "'");
    if (key == "general.alignment") {  // ggml stores it as u32; other integer types are read as well
      const uint64_t bytes = scalar_size(type);
      if (type == kF32 || type == kF64 || type == kBool || bytes == 0)
        throw Error(where + ": general.alignment is not an integer");
      uint64_t value = 0;
      r.need(bytes, "general.alignment");
      const std::string text = read_value(r, type, key, 0, false);
      std::memcpy(&value, map_ + r.pos() - bytes, bytes);  // little-endian: the low bytes
      if (value == 0 || (value & (value - 1)) != 0 || value > (1u << 30))
        throw Error(where + ": general.alignment " + text + " is not a power of two (up to 2^30)");
      alignment_ = value;
      metadata_[key] = text;
      continue;
    }
    try {
      metadata_[key] = read_value(r, type, key, 0, false);
    } catch (const Error& e) {
      const std::string message = e.what();
      throw Error(message.compare(0, where.size(), where) == 0 ? message : where + ": " + message);
    }
  }

  struct Pending {
    GgufTensorInfo info;
    uint64_t relative_offset;
  };
  std::vector<Pending> pending;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo info;
    info.name = r.string("the name of tensor " + std::to_string(i));
    if (index_.count(info.name)) throw Error(where + ": tensor '" + info.name + "' appears twice");
    const std::string what = "tensor '" + info.name + "'";
    const uint32_t n_dims = r.read<uint32_t>("the dimension count of " + what);
    if (n_dims > 4) throw Error(where + ": " + what + " has " + std::to_string(n_dims) + " dimensions; GGUF allows 4");
    std::vector<int64_t> ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t extent = r.read<uint64_t>("the dimensions of " + what);
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw Error(where + ": " + what + " has a negative dimension");
      ne[d] = static_cast<int64_t>(extent);
      if (ne[d] != 0 && numel > std::numeric_limits<int64_t>::max() / ne[d])
        throw Error(where + ": " + what + " has dimensions whose product overflows");
      numel *= ne[d];
    }
    info.shape.assign(ne.rbegin(), ne.rend());
    info.type = r.read<uint32_t>("the type of " + what);
    const auto* t = traits(info.type);
    if (!t) throw Error(where + ": " + what + " has unknown ggml type id " + std::to_string(info.type));
    const int64_t row = n_dims ? ne[0] : 1;
    if (row % t->block_elements != 0)
      throw Error(where + ": " + what + " of type " + t->name + " has rows of " + std::to_string(row) +
                  " elements, not a multiple of its block size " + std::to_string(t->block_elements));
    const int64_t n_blocks = numel / t->block_elements;
    if (n_blocks > std::numeric_limits<int64_t>::max() / t->block_bytes)
      throw Error(where + ": " + what + " is too large");
    // With a zero dimension the checks above pass whatever the others are; libtorch still multiplies those.
    if (!tensor_shape_fits(info.shape, 8))  // 8: the widest dtype a tensor reads as (F64, I64)
      throw Error(where + ": " + what + " has dimensions whose product overflows");
    info.nbytes = static_cast<uint64_t>(n_blocks * t->block_bytes);
    const uint64_t offset = r.read<uint64_t>("the offset of " + what);
    if (offset % alignment_ != 0)
      throw Error(where + ": " + what + " starts at data offset " + std::to_string(offset) +
                  ", not a multiple of the alignment " + std::to_string(alignment_));
    index_[info.name] = pending.size();
    pending.push_back({std::move(info), offset});
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = r.pos();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (!pending.empty() && data_start > size_)
    throw Error(where + ": truncated GGUF file: the data section would start at byte " + std::to_string(data_start) +
                " of " + std::to_string(size_));
  const uint64_t data_size = data_start <= size_ ? size_ - data_start : 0;
  for (auto& p : pending) {
    if (p.relative_offset > data_size || p.info.nbytes > data_size - p.relative_offset)
      throw Error(where + ": tensor '" + p.info.name + "' (" + ggml_type_name(p.info.type) + " " +
                  shape_string(p.info.shape) + ", " + std::to_string(p.info.nbytes) + " bytes at data offset " +
                  std::to_string(p.relative_offset) + ") lies outside the file's " + std::to_string(data_size) +
                  " data bytes: truncated or damaged file");
    p.info.offset = data_start + p.relative_offset;
    tensors_.push_back(std::move(p.info));
  }
}

const GgufTensorInfo& GgufFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_.string() + " has no tensor '" + name + "'");
  return tensors_[it->second];
}

at::Tensor GgufFile::tensor(const std::string& name) const {
  const auto& t = info(name);
  if (!ggml_type_supported(t.type))
    throw Error("GGUF tensor " + name + " in " + path_.string() + " has type " + ggml_type_name(t.type) +
                ", which tide cannot read yet; supported: " + ggml_supported_types());
  const uint8_t* data = map_ + t.offset;
  const at::ScalarType dtype = ggml_read_dtype(t.type);
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(dtype));
  if (t.nbytes == 0) {
    return out;  // no elements (a zero dimension)
  } else if (ggml_block(t.type).elements == 1) {
    std::memcpy(out.data_ptr(), data, t.nbytes);  // plain types: the bytes are the tensor, row-major
  } else {
    dequantize_ggml_blocks(t.type, data, out.numel(), out.data_ptr<float>());
  }
  // The read pages leave this process's resident memory (as SafetensorsFile::tensor does): a model's file
  // would otherwise count twice until it is closed.
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(data + t.nbytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return out;
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

WeightSource gguf_weight_source(const std::filesystem::path& path) {
  auto file = std::make_shared<GgufFile>(path);  // kept alive (mapped) by the loaders below
  WeightSource source;
  for (const auto& t : file->tensors())
    source.add_derived(t.name,
                       {t.shape, ggml_read_dtype(t.type), [file, name = t.name] { return file->tensor(name); }});
  for (const auto& [key, value] : file->metadata()) source.set_metadata(key, value);
  source.set_description(path.string());
  return source;
}

}  // namespace tide::io
