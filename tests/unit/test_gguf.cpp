// GGUF files: every supported ggml type read back against an independent per-block decoding written here,
// shapes and metadata types, hostile files (truncated, flipped, huge counts) giving tide::Error, the
// stable-diffusion.cpp name variants, and a tiny SD 1.x model written as GGUF (F16, Q8_0) read through the
// single-file loader and generating the image its safetensors file generates.
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "test_support.h"
#include "tide/io/gguf.h"
#include "tide/io/gguf_writer.h"
#include "tide/io/json_file.h"
#include "tide/pipeline/gguf_checkpoint.h"
#include "tide/pipeline/model_source.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"
#include "tiny_pipeline.h"

namespace {
using tide::testing::read_bytes;
using tide::testing::write_bytes;
namespace fs = std::filesystem;
using tide::io::GgmlType;
using tide::io::GgufFile;
using tide::io::GgufTensorToWrite;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "(no error)";
}


// GGUF bytes built by hand, for layouts the writer never produces.
struct Bytes {
  std::string s;
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& f64(double v) { return raw(&v, 8); }
  Bytes& str(const std::string& v) {
    u64(v.size());
    s += v;
    return *this;
  }
  Bytes& raw(const void* p, size_t n) {
    s.append(static_cast<const char*>(p), n);
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    s += "GGUF";
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  // One tensor info: dims in ggml order (ne[0] first).
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (auto e : ne) u64(e);
    return u32(type).u64(offset);
  }
  Bytes& pad(size_t alignment = 32) {
    s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
};

// ---- An independent reading of ggml's blocks: the i-th quant of a block from its bit layout (ggml-common.h) ----

float half_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

struct BlockLayout {
  int bytes;
  bool has_min;  // q4_1, q5_1: x = q*d + m; else x = (q - zero)*d
  int zero;      // q4_0: 8, q5_0: 16, q8_0: 0 (signed bytes)
};
BlockLayout layout(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
      return {18, false, 8};
    case GgmlType::Q4_1:
      return {20, true, 0};
    case GgmlType::Q5_0:
      return {22, false, 16};
    case GgmlType::Q5_1:
      return {24, true, 0};
    case GgmlType::Q8_0:
      return {34, false, 0};
    default:
      throw std::runtime_error("no layout");
  }
}

// The unsigned (or, for q8_0, signed) quant of element i (0..31) of a block.
int quant(GgmlType t, const uint8_t* b, int i) {
  if (t == GgmlType::Q8_0) return static_cast<int8_t>(b[2 + i]);
  const bool five = t == GgmlType::Q5_0 || t == GgmlType::Q5_1;
  const int head = (t == GgmlType::Q4_1 || t == GgmlType::Q5_1 ? 4 : 2) + (five ? 4 : 0);
  const uint8_t byte = b[head + (i % 16)];
  int q = i < 16 ? (byte & 15) : (byte >> 4);  // elements 0..15 in the low nibbles, 16..31 in the high ones
  if (five) {
    const uint8_t* qh = b + (t == GgmlType::Q5_1 ? 4 : 2);
    q |= ((qh[i / 8] >> (i % 8)) & 1) << 4;  // bit i of the little-endian 32-bit word
  }
  return q;
}

// ggml's float arithmetic (T = float: bit-exact reference) or the float64 dequantization of the same block.
template <typename T>
std::vector<T> decode(GgmlType t, const uint8_t* blocks, int64_t count) {
  const BlockLayout l = layout(t);
  std::vector<T> out(count);
  for (int64_t k = 0; k < count / 32; ++k) {
    const uint8_t* b = blocks + k * l.bytes;
    const T d = half_at(b);
    const T m = l.has_min ? T(half_at(b + 2)) : T(0);
    for (int i = 0; i < 32; ++i) {
      const int q = quant(t, b, i) - l.zero;
      out[k * 32 + i] = l.has_min ? T(q) * d + m : T(q) * d;
    }
  }
  return out;
}

// Bytes of tensor `name` in the file.
std::vector<uint8_t> stored_bytes(const fs::path& file, const std::string& name) {
  const GgufFile gguf(file);
  const auto& info = gguf.info(name);
  const std::string bytes = read_bytes(file);
  return std::vector<uint8_t>(bytes.begin() + info.offset, bytes.begin() + info.offset + info.nbytes);
}

const std::vector<GgmlType> kBlockTypes = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1};

TEST(GgufTypes, QuantizedTensorsReadBackAsGgmlDequantizes) {
  tide::testing::TempDir tmp;
  at::manual_seed(3);
  // Rows of 64: two blocks each; one row all zeros (d = 0), one with a single large value.
  at::Tensor x = at::randn({5, 64});
  x[1].zero_();
  x[2][7] = 40.0f;
  for (GgmlType type : kBlockTypes) {
    const std::string name = tide::io::ggml_type_name(static_cast<uint32_t>(type));
    SCOPED_TRACE(name);
    const fs::path file = tmp / (name + ".gguf");
    tide::io::write_gguf(file, {{"w", x, type}});
    const GgufFile gguf(file);
    ASSERT_EQ(gguf.info("w").type, static_cast<uint32_t>(type));
    const at::Tensor read = gguf.tensor("w");
    ASSERT_EQ(read.scalar_type(), at::kFloat);
    ASSERT_EQ(read.sizes(), x.sizes());
    const auto bytes = stored_bytes(file, "w");
    ASSERT_EQ(bytes.size(), static_cast<size_t>(x.numel() / 32 * layout(type).bytes));

    // Bit-exact against the reference arithmetic, within 1e-6 of the float64 dequantization.
    const auto exact = decode<float>(type, bytes.data(), x.numel());
    const auto wide = decode<double>(type, bytes.data(), x.numel());
    const float* r = read.data_ptr<float>();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      mismatches += std::memcmp(&r[i], &exact[i], 4) != 0;
      EXPECT_NEAR(r[i], wide[i], 1e-6 * std::max(1.0, std::fabs(wide[i]))) << i;
    }
    EXPECT_EQ(mismatches, 0);

    // Each value within its block's quantization step of the original (d itself rounded to f16).
    const float* xs = x.data_ptr<float>();
    double worst = 0;
    for (int64_t k = 0; k < x.numel() / 32; ++k) {
      const uint8_t* b = bytes.data() + k * layout(type).bytes;
      const double d = std::fabs(half_at(b));
      const double m = layout(type).has_min ? std::fabs(half_at(b + 2)) : 0.0;
      for (int i = 0; i < 32; ++i) {
        const double err = std::fabs(wide[k * 32 + i] - xs[k * 32 + i]);
        worst = std::max(worst, err / std::max(d, 1e-30));
        EXPECT_LE(err, d * 1.01 + m * 2e-3 + 1e-7) << "block " << k << " element " << i;
      }
    }
    EXPECT_EQ(read[1].abs().max().item<float>(), 0.0f);  // an all-zero block stays zero
    std::printf("[   INFO   ] %s: worst error %.3f quantization steps\n", name.c_str(), worst);
  }
}

TEST(GgufTypes, PlainTypesKeepTheirDtypeAndValues) {
  tide::testing::TempDir tmp;
  at::manual_seed(1);
  const at::Tensor f = at::randn({3, 5});
  const at::Tensor i32 = at::randint(-1000, 1000, {7}, at::kInt);
  const at::Tensor i8 = at::randint(-128, 127, {2, 3}, at::kChar);
  const at::Tensor i64 = at::randint(-100000, 100000, {4}, at::kLong);
  const at::Tensor i16 = at::randint(-3000, 3000, {4}, at::kShort);
  const at::Tensor f64 = at::randn({2, 2}, at::kDouble);
  tide::io::write_gguf(tmp / "plain.gguf", {{"f32", f, GgmlType::F32},
                                            {"f16", f, GgmlType::F16},
                                            {"bf16", f, GgmlType::BF16},
                                            {"i32", i32, GgmlType::I32},
                                            {"i8", i8, GgmlType::I8},
                                            {"i16", i16, GgmlType::I16},
                                            {"i64", i64, GgmlType::I64},
                                            {"f64", f64, GgmlType::F64}});
  const GgufFile gguf(tmp / "plain.gguf");
  EXPECT_EQ(gguf.version(), 3u);
  EXPECT_TRUE(at::equal(gguf.tensor("f32"), f));
  EXPECT_EQ(gguf.tensor("f16").scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(gguf.tensor("f16"), f.to(at::kHalf)));
  EXPECT_EQ(gguf.tensor("bf16").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(gguf.tensor("bf16"), f.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(gguf.tensor("i32"), i32));
  EXPECT_TRUE(at::equal(gguf.tensor("i8"), i8));
  EXPECT_TRUE(at::equal(gguf.tensor("i16"), i16));
  EXPECT_TRUE(at::equal(gguf.tensor("i64"), i64));
  EXPECT_TRUE(at::equal(gguf.tensor("f64"), f64));

  // The weight source sees the same, with the stored dtypes before anything is read.
  const auto source = tide::io::gguf_weight_source(tmp / "plain.gguf");
  EXPECT_EQ(source.dtype("f16"), at::kHalf);
  EXPECT_EQ(source.dtype("bf16"), at::kBFloat16);
  EXPECT_EQ(source.shape("f32"), (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(at::equal(source.tensor("f16"), f.to(at::kHalf)));
}

TEST(GgufShapes, OneToFourDimensionsInGgmlOrder) {
  tide::testing::TempDir tmp;
  at::manual_seed(2);
  std::vector<GgufTensorToWrite> tensors;
  const std::vector<std::vector<int64_t>> shapes = {{64}, {3, 32}, {2, 3, 32}, {2, 1, 3, 64}, {1, 1, 1, 32}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    tensors.push_back({"f" + std::to_string(i), at::randn(shapes[i]), GgmlType::F32});
    tensors.push_back({"q" + std::to_string(i), at::randn(shapes[i]), GgmlType::Q8_0});
  }
  tide::io::write_gguf(tmp / "shapes.gguf", tensors, {{"general.name", "shapes"}});
  const GgufFile gguf(tmp / "shapes.gguf");
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(gguf.info(t.name).shape, t.tensor.sizes().vec());
    const at::Tensor read = gguf.tensor(t.name);
    if (t.type == GgmlType::F32)
      EXPECT_TRUE(at::equal(read, t.tensor));
    else
      EXPECT_LT((read - t.tensor).abs().max().item<float>(), t.tensor.abs().max().item<float>() / 100);
  }

  // ne[0] is the fastest dimension: a hand-written [ne0 = 3, ne1 = 2] F32 tensor is torch [2, 3], row-major.
  Bytes b;
  b.header(1, 0).tensor("t", {3, 2}, 0, 0).pad();
  for (int i = 0; i < 6; ++i) b.f32(static_cast<float>(i));
  write_bytes(tmp / "order.gguf", b.s);
  const GgufFile order(tmp / "order.gguf");
  EXPECT_TRUE(at::equal(order.tensor("t"), at::arange(6, at::kFloat).view({2, 3})));
  EXPECT_EQ(order.alignment(), 32u);

  // Tensors with a zero dimension hold no bytes and read as empty tensors (found by the fuzz target).
  Bytes empty;
  empty.header(2, 0).tensor("e", {4, 0}, 0, 0).tensor("q", {0}, 8, 0).pad();
  write_bytes(tmp / "empty.gguf", empty.s);
  const GgufFile e(tmp / "empty.gguf");
  EXPECT_EQ(e.tensor("e").sizes(), (at::IntArrayRef{0, 4}));
  EXPECT_EQ(e.tensor("q").numel(), 0);
}

TEST(GgufShapes, RowsNotAMultipleOfTheBlockAreRefused) {
  tide::testing::TempDir tmp;
  for (GgmlType type : kBlockTypes) {
    const std::string message = error_of([&] {
      tide::io::write_gguf(tmp / "odd.gguf", {{"w", at::randn({4, 48}), type}});
    });
    EXPECT_NE(message.find("multiple of 32"), std::string::npos) << message;
  }
  // 64 elements as [2, 32] rows are fine, as [32, 2] they are not (ggml quantizes along ne[0]).
  EXPECT_NO_THROW(tide::io::write_gguf(tmp / "ok.gguf", {{"w", at::randn({2, 32}), GgmlType::Q4_0}}));
  EXPECT_NE(error_of([&] {
              tide::io::write_gguf(tmp / "no.gguf", {{"w", at::randn({32, 2}), GgmlType::Q4_0}});
            }),
            "(no error)");

  // A file that claims such a tensor is refused when opened.
  Bytes b;
  b.header(1, 0).tensor("w", {48, 2}, 8 /* Q8_0 */, 0).pad();
  b.s += std::string(2 * 34 * 2, '\0');
  write_bytes(tmp / "odd_rows.gguf", b.s);
  const std::string message = error_of([&] { GgufFile f(tmp / "odd_rows.gguf"); });
  EXPECT_NE(message.find("rows of 48 elements, not a multiple of its block size 32"), std::string::npos) << message;
}

TEST(GgufMetadata, EveryValueTypeIncludingNestedArrays) {
  tide::testing::TempDir tmp;
  Bytes b;
  b.header(1, 16);
  b.str("u8").u32(0).u8(200);
  b.str("i8").u32(1).u8(0xFE);
  b.str("u16").u32(2).u8(0x34).u8(0x12);
  b.str("i16").u32(3).u8(0xFF).u8(0xFF);
  b.str("u32").u32(4).u32(4000000000u);
  b.str("i32").u32(5).u32(static_cast<uint32_t>(-7));
  b.str("f32").u32(6).f32(0.5f);
  b.str("bool").u32(7).u8(1);
  b.str("general.name").u32(8).str("sd-v1-5 \"Q8_0\"");
  b.str("u64").u32(10).u64(1ull << 40);
  b.str("i64").u32(11).u64(static_cast<uint64_t>(-5));
  b.str("f64").u32(12).f64(0.25);
  b.str("strings").u32(9).u32(8).u64(2).str("a").str("b\"c");
  b.str("nested").u32(9).u32(9).u64(2).u32(4).u64(2).u32(1).u32(2).u32(8).u64(1).str("x");
  b.str("long").u32(9).u32(5).u64(100);
  for (int i = 0; i < 100; ++i) b.u32(static_cast<uint32_t>(i));
  b.str("general.alignment").u32(4).u32(64);
  b.tensor("t", {4}, 0, 0).pad(64);
  for (int i = 0; i < 4; ++i) b.f32(static_cast<float>(i));
  write_bytes(tmp / "meta.gguf", b.s);

  const GgufFile gguf(tmp / "meta.gguf");
  const auto& m = gguf.metadata();
  EXPECT_EQ(m.at("u8"), "200");
  EXPECT_EQ(m.at("i8"), "-2");
  EXPECT_EQ(m.at("u16"), "4660");
  EXPECT_EQ(m.at("i16"), "-1");
  EXPECT_EQ(m.at("u32"), "4000000000");
  EXPECT_EQ(m.at("i32"), "-7");
  EXPECT_EQ(m.at("f32"), "0.5");
  EXPECT_EQ(m.at("bool"), "true");
  EXPECT_EQ(m.at("general.name"), "sd-v1-5 \"Q8_0\"");
  EXPECT_EQ(m.at("u64"), "1099511627776");
  EXPECT_EQ(m.at("i64"), "-5");
  EXPECT_EQ(m.at("f64"), "0.25");
  EXPECT_EQ(m.at("strings"), "[\"a\", \"b\\\"c\"]");
  EXPECT_EQ(m.at("nested"), "[[1, 2], [\"x\"]]");
  EXPECT_EQ(m.at("long").substr(0, 10), "[0, 1, 2, ");
  EXPECT_NE(m.at("long").find("...] (100 elements)"), std::string::npos) << m.at("long");
  EXPECT_EQ(gguf.alignment(), 64u);
  EXPECT_TRUE(at::equal(gguf.tensor("t"), at::arange(4, at::kFloat)));
  EXPECT_EQ(tide::io::gguf_weight_source(tmp / "meta.gguf").metadata().at("general.name"), "sd-v1-5 \"Q8_0\"");

  // The writer's string metadata and alignment read back.
  tide::io::write_gguf(tmp / "w.gguf", {{"a", at::ones({3}), GgmlType::F32}}, {{"config.unet", "{\"x\": 1}"}}, 128);
  const GgufFile w(tmp / "w.gguf");
  EXPECT_EQ(w.alignment(), 128u);
  EXPECT_EQ(w.metadata().at("config.unet"), "{\"x\": 1}");
  EXPECT_EQ(w.info("a").offset % 128, 0u);
  EXPECT_TRUE(tide::io::is_gguf_file(tmp / "w.gguf"));
}

TEST(GgufTypes, IqTypesNameTheTypeWhenRead) {
  tide::testing::TempDir tmp;
  Bytes b;
  b.header(2, 0).tensor("model.diffusion_model.out.2.weight", {256, 2}, 16 /* IQ2_XXS */, 0);
  b.tensor("iq", {256}, 20 /* IQ4_NL */, 160);
  b.pad();
  b.s += std::string(160 + 8 * 18, '\0');
  write_bytes(tmp / "k.gguf", b.s);
  const GgufFile gguf(tmp / "k.gguf");  // the file itself is valid
  const std::string message = error_of([&] { gguf.tensor("model.diffusion_model.out.2.weight"); });
  EXPECT_NE(message.find("GGUF tensor model.diffusion_model.out.2.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("has type IQ2_XXS, which tide cannot read yet; supported: F32, F16, Q4_0"), std::string::npos)
      << message;
  EXPECT_NE(error_of([&] { gguf.tensor("iq"); }).find("IQ4_NL"), std::string::npos);
}

// ---- K-quants: random super-blocks (sane f16 scales) against an element-by-element decoding of the layout ----

// Scale and min of sub-block j (0..7) of Q4_K / Q5_K: 6 bits each; j < 4 in the low bits of bytes j and j + 4,
// j >= 4 in the nibbles of byte j + 4 with the top two bits of bytes j - 4 and j.
std::pair<int, int> k4_scale_min(const uint8_t* s, int j) {
  if (j < 4) return {s[j] & 63, s[j + 4] & 63};
  return {(s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)};
}
// Q3_K's sixteen 6-bit scales: low nibbles of bytes 0..7 then their high nibbles, top bits in bytes 8..11.
int k3_scale(const uint8_t* s, int is) {
  const int low = is < 8 ? (s[is] & 15) : (s[is - 8] >> 4);
  const int high = (s[8 + is % 4] >> (2 * (is / 4))) & 3;
  return (low | (high << 4)) - 32;
}

template <typename T>
T k_value(GgmlType t, const uint8_t* b, int e) {
  const int n = e / 128, r = e % 128;  // Q2_K, Q3_K, Q6_K work in halves of 128
  switch (t) {
    case GgmlType::Q2_K: {
      const int j = r / 32, half = (r % 32) / 16, l = r % 16;
      const int q = (b[16 + 32 * n + 16 * half + l] >> (2 * j)) & 3;
      const int sc = b[8 * n + 2 * j + half];
      return T(half_at(b + 80)) * T(sc & 15) * T(q) - T(half_at(b + 82)) * T(sc >> 4);
    }
    case GgmlType::Q3_K: {
      const int j = r / 32, half = (r % 32) / 16, l = r % 16, i = 16 * half + l;
      const int q = ((b[32 + 32 * n + i] >> (2 * j)) & 3) - ((b[i] >> (4 * n + j)) & 1 ? 0 : 4);
      return T(half_at(b + 108)) * T(k3_scale(b + 96, 8 * n + 2 * j + half)) * T(q);
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const int chunk = e / 64, upper = (e % 64) / 32, l = e % 32;
      const uint8_t byte = b[(five ? 48 : 16) + 32 * chunk + l];
      int q = upper ? byte >> 4 : byte & 15;
      if (five) q += ((b[16 + l] >> (2 * chunk + upper)) & 1) * 16;
      const auto [sc, m] = k4_scale_min(b + 4, 2 * chunk + upper);
      return T(half_at(b)) * T(sc) * T(q) - T(half_at(b + 2)) * T(m);
    }
    case GgmlType::Q6_K: {
      const int quarter = r / 32, l = r % 32;
      const uint8_t low_byte = b[64 * n + l + (quarter & 1 ? 32 : 0)];
      const int low = quarter < 2 ? low_byte & 15 : low_byte >> 4;
      const int high = (b[128 + 32 * n + l] >> (2 * quarter)) & 3;
      const int sc = static_cast<int8_t>(b[192 + 8 * n + l / 16 + 2 * quarter]);
      return T(half_at(b + 208)) * T(sc) * T((low | (high << 4)) - 32);
    }
    default:
      throw std::runtime_error("not a K-quant");
  }
}

TEST(GgufTypes, KQuantsReadAsGgmlDequantizes) {
  tide::testing::TempDir tmp;
  std::mt19937 rng(11);
  struct K {
    GgmlType type;
    int bytes;
    std::vector<int> halves;  // offsets of the f16 scales in a block
  };
  const std::vector<K> kinds = {{GgmlType::Q2_K, 84, {80, 82}},
                                {GgmlType::Q3_K, 110, {108}},
                                {GgmlType::Q4_K, 144, {0, 2}},
                                {GgmlType::Q5_K, 176, {0, 2}},
                                {GgmlType::Q6_K, 210, {208}}};
  for (const auto& k : kinds) {
    const std::string name = tide::io::ggml_type_name(static_cast<uint32_t>(k.type));
    SCOPED_TRACE(name);
    const int blocks = 6;  // a [3, 512] tensor
    std::string data(blocks * k.bytes, '\0');
    for (auto& c : data) c = static_cast<char>(rng() & 0xFF);
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (int i = 0; i < blocks; ++i)
      for (int off : k.halves) {
        const uint16_t bits = c10::Half(scale(rng)).x;
        std::memcpy(&data[i * k.bytes + off], &bits, 2);
      }
    Bytes b;
    b.header(1, 0).tensor("w", {512, 3}, static_cast<uint32_t>(k.type), 0).pad();
    write_bytes(tmp / (name + ".gguf"), b.s + data);
    const at::Tensor read = GgufFile(tmp / (name + ".gguf")).tensor("w");
    ASSERT_EQ(read.sizes(), (at::IntArrayRef{3, 512}));
    const float* r = read.data_ptr<float>();
    const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
    int64_t mismatches = 0;
    for (int i = 0; i < blocks; ++i)
      for (int e = 0; e < 256; ++e) {
        const float exact = k_value<float>(k.type, bytes + i * k.bytes, e);
        const double wide = k_value<double>(k.type, bytes + i * k.bytes, e);
        mismatches += std::memcmp(&r[i * 256 + e], &exact, 4) != 0;
        EXPECT_NEAR(r[i * 256 + e], wide, 1e-5 * std::max(1.0, std::fabs(wide))) << i << " " << e;
      }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(read.abs().max().item<float>(), 0.0f);
  }
  // Rows must hold whole super-blocks.
  Bytes odd;
  odd.header(1, 0).tensor("w", {128, 2}, 12, 0).pad();
  write_bytes(tmp / "odd.gguf", odd.s + std::string(288, '\0'));
  EXPECT_NE(error_of([&] { GgufFile f(tmp / "odd.gguf"); }).find("not a multiple of its block size 256"),
            std::string::npos);
}

// ---- Hostile files ----

std::string small_valid_file(const fs::path& dir) {
  at::manual_seed(4);
  tide::io::write_gguf(dir / "valid.gguf",
                       {{"a", at::randn({2, 32}), GgmlType::Q8_0},
                        {"b", at::randn({3}), GgmlType::F16},
                        {"c", at::randn({32}), GgmlType::Q5_1}},
                       {{"general.name", "x"}});
  return read_bytes(dir / "valid.gguf");
}

// Opens the file and reads every tensor: succeeds or throws tide::Error (anything else fails the test).
bool opens_and_reads(const fs::path& file) {
  try {
    const GgufFile gguf(file);
    for (const auto& t : gguf.tensors()) (void)gguf.tensor(t.name);
    return true;
  } catch (const tide::Error&) {
    return false;
  }
}

TEST(GgufHostile, TruncatedAtEveryOffset) {
  tide::testing::TempDir tmp;
  const std::string valid = small_valid_file(tmp.path());
  const GgufFile full(tmp / "valid.gguf");
  uint64_t data_end = 0;
  for (const auto& t : full.tensors()) data_end = std::max(data_end, t.offset + t.nbytes);
  int refused = 0;
  for (size_t n = 0; n < valid.size(); ++n) {
    write_bytes(tmp / "cut.gguf", valid.substr(0, n));
    const bool ok = opens_and_reads(tmp / "cut.gguf");
    EXPECT_EQ(ok, n >= data_end) << "cut at " << n;  // only the last tensor's padding may go
    refused += !ok;
  }
  EXPECT_GT(refused, 100);
  write_bytes(tmp / "cut.gguf", valid.substr(0, 20));
  EXPECT_NE(error_of([&] { GgufFile f(tmp / "cut.gguf"); }).find("truncated GGUF file"), std::string::npos);
}

TEST(GgufHostile, FlippedBytesNeverCrash) {
  tide::testing::TempDir tmp;
  const std::string valid = small_valid_file(tmp.path());
  int refused = 0;
  for (size_t i = 0; i < valid.size(); ++i) {
    for (uint8_t mask : {0xFF, 0x80, 0x01}) {
      std::string bad = valid;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      write_bytes(tmp / "flip.gguf", bad);
      refused += !opens_and_reads(tmp / "flip.gguf");
    }
  }
  EXPECT_GT(refused, 50);
}

TEST(GgufHostile, EachDamageHasAClearError) {
  tide::testing::TempDir tmp;
  auto message = [&](const std::string& bytes) {
    write_bytes(tmp / "bad.gguf", bytes);
    return error_of([&] {
      GgufFile f(tmp / "bad.gguf");
      for (const auto& t : f.tensors()) (void)f.tensor(t.name);
    });
  };
  auto expect = [&](const std::string& bytes, const std::string& part) {
    const std::string m = message(bytes);
    EXPECT_NE(m.find(part), std::string::npos) << "expected '" << part << "' in: " << m;
  };
  const std::string data(64, '\0');
  expect("GGML0000", "not a GGUF file");
  expect("", "empty");
  expect(Bytes().header(0, 0, 1).s, "version 1");
  expect(Bytes().header(0, 0, 4).s, "version 4");
  expect(Bytes().header(0, 0, 0x03000000).s, "big-endian");
  expect(Bytes().header(1ull << 62, 0).s, "tensors, more than the file holds");
  expect(Bytes().header(0, 1ull << 62).s, "metadata entries, more than the file holds");
  expect(Bytes().header(0, 1).u64(1ull << 63).s + data, "truncated GGUF file");             // key length
  expect(Bytes().header(0, 1).str("k").u32(8).u64(~0ull).s + data, "truncated GGUF file");  // string length
  expect(Bytes().header(0, 1).str("k").u32(9).u32(6).u64(1ull << 60).s + data, "more than the file holds");
  expect(Bytes().header(0, 1).str("k").u32(9).u32(9).u64(1ull << 60).s + data, "more than the file holds");
  expect(Bytes().header(0, 1).str("k").u32(99).u32(0).s + data, "unknown value type 99");
  expect(Bytes().header(0, 1).str("k").u32(9).u32(42).u64(1).u64(0).s + data, "unknown value type 42");
  {
    Bytes deep;
    deep.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
    deep.s += std::string(64, '\0');
    expect(deep.s, "nests arrays");
  }
  expect(Bytes().header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(1).s, "'k' appears twice");
  expect(Bytes().header(0, 1).str("general.alignment").u32(4).u32(0).s, "not a power of two");
  expect(Bytes().header(0, 1).str("general.alignment").u32(4).u32(48).s, "not a power of two");
  expect(Bytes().header(0, 1).str("general.alignment").u32(8).str("32").s, "not an integer");
  expect(Bytes().header(1, 0).tensor("t", {4, 4, 4, 4, 4}, 0, 0).pad().s + data, "5 dimensions");
  expect(Bytes().header(1, 0).tensor("t", {1ull << 40, 1ull << 40}, 0, 0).pad().s + data, "overflows");
  // A zero dimension makes it empty, but libtorch multiplies the others first: refused before it would throw.
  expect(Bytes().header(1, 0).tensor("t", {0, 1ull << 40, 1ull << 40}, 0, 0).pad().s + data, "overflows");
  expect(Bytes().header(1, 0).tensor("t", {~0ull}, 0, 0).pad().s + data, "negative dimension");
  expect(Bytes().header(1, 0).tensor("t", {1ull << 61}, 0, 0).pad().s + data, "too large");
  expect(Bytes().header(1, 0).tensor("t", {4}, 77, 0).pad().s + data, "unknown ggml type id 77");
  expect(Bytes().header(1, 0).tensor("t", {4}, 0, 1ull << 62).pad().s + data, "lies outside the file");
  expect(Bytes().header(1, 0).tensor("t", {4}, 0, 64).pad().s + data, "lies outside the file");
  expect(Bytes().header(1, 0).tensor("t", {4}, 0, 8).pad().s + data, "not a multiple of the alignment");
  expect(Bytes().header(1, 0).tensor("t", {1000}, 0, 0).pad().s + data, "lies outside the file");
  expect(Bytes().header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad().s + data, "'t' appears twice");
  expect(Bytes().header(1, 0).u64(1ull << 50).s + data, "truncated GGUF file");  // tensor name length
  // A file of one huge claimed tensor allocates nothing: the refusal comes before any tensor exists.
  expect(Bytes().header(1, 0).tensor("t", {1ull << 30, 1ull << 20}, 1, 0).pad().s + data, "lies outside the file");
}

// ---- stable-diffusion.cpp's name variants ----

void add(std::vector<GgufTensorToWrite>& out, const std::string& name, at::Tensor t, GgmlType type = GgmlType::F32) {
  out.push_back({name, std::move(t), type});
}

TEST(GgufNames, Sd2TextEncoderInHuggingFaceNamesWithSplitProjections) {
  // A 2024 SD 2.x file: OpenCLIP renamed to Hugging Face CLIP names with q/k/v split, UNet proj_in as 1x1 conv.
  tide::testing::TempDir tmp;
  at::manual_seed(5);
  std::vector<GgufTensorToWrite> t;
  const std::string hf = "cond_stage_model.transformer.text_model.";
  const at::Tensor q = at::randn({4, 32}), k = at::randn({4, 32}), v = at::randn({4, 32});
  const at::Tensor qb = at::randn({4}), kb = at::randn({4}), vb = at::randn({4});
  add(t, "model.diffusion_model.input_blocks.0.0.weight", at::randn({8, 4, 3, 3}), GgmlType::F16);
  const at::Tensor proj_in = at::randn({32, 32, 1, 1});
  add(t, "model.diffusion_model.input_blocks.1.1.proj_in.weight", proj_in, GgmlType::F16);
  add(t, hf + "final_layer_norm.weight", at::randn({1024}));
  add(t, hf + "embeddings.position_embedding.weight", at::randn({2, 32}));
  add(t, hf + "encoder.layers.0.self_attn.q_proj.weight", q, GgmlType::Q8_0);
  add(t, hf + "encoder.layers.0.self_attn.k_proj.weight", k, GgmlType::Q8_0);
  add(t, hf + "encoder.layers.0.self_attn.v_proj.weight", v, GgmlType::Q8_0);
  add(t, hf + "encoder.layers.0.self_attn.q_proj.bias", qb);
  add(t, hf + "encoder.layers.0.self_attn.k_proj.bias", kb);
  add(t, hf + "encoder.layers.0.self_attn.v_proj.bias", vb);
  add(t, hf + "encoder.layers.0.layer_norm1.weight", at::randn({32}));
  add(t, hf + "encoder.layers.0.mlp.fc2.bias", at::randn({32}));
  add(t, hf + "text_projection", at::randn({32, 32}));
  add(t, "first_stage_model.decoder.mid.attn_1.q.weight", at::randn({32, 32, 1, 1}), GgmlType::F16);
  tide::io::write_gguf(tmp / "sd2.gguf", t);

  const auto ck = tide::pipeline::gguf_checkpoint(tmp / "sd2.gguf");
  EXPECT_EQ(tide::pipeline::detect_family(ck), tide::pipeline::Family::SD2);
  const std::string oc = "cond_stage_model.model.";
  for (const char* name : {"ln_final.weight", "positional_embedding", "text_projection",
                           "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.mlp.c_proj.bias",
                           "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.in_proj_bias"})
    EXPECT_TRUE(ck.contains(oc + name)) << name;
  const auto raw = tide::io::gguf_weight_source(tmp / "sd2.gguf");
  const at::Tensor in_proj = ck.tensor(oc + "transformer.resblocks.0.attn.in_proj_weight");
  EXPECT_EQ(ck.shape(oc + "transformer.resblocks.0.attn.in_proj_weight"), (std::vector<int64_t>{12, 32}));
  EXPECT_TRUE(at::equal(in_proj, at::cat({raw.tensor(hf + "encoder.layers.0.self_attn.q_proj.weight"),
                                          raw.tensor(hf + "encoder.layers.0.self_attn.k_proj.weight"),
                                          raw.tensor(hf + "encoder.layers.0.self_attn.v_proj.weight")})));
  EXPECT_TRUE(at::equal(ck.tensor(oc + "transformer.resblocks.0.attn.in_proj_bias"), at::cat({qb, kb, vb})));
  EXPECT_TRUE(at::equal(ck.tensor(oc + "text_projection"), t[12].tensor));  // values unchanged
  // SD 2.x's UNet projections are linear: the 1x1 convolution reads as [C, C].
  const std::string p = "model.diffusion_model.input_blocks.1.1.proj_in.weight";
  EXPECT_EQ(ck.shape(p), (std::vector<int64_t>{32, 32}));
  EXPECT_TRUE(at::equal(ck.tensor(p), proj_in.to(at::kHalf).flatten(1)));
  // The VAE's 1x1 convolutions stay as they are (the single-file table converts them).
  EXPECT_EQ(ck.shape("first_stage_model.decoder.mid.attn_1.q.weight").size(), 4u);
}

TEST(GgufNames, SdxlEncodersFromCondStageModelNames) {
  // A 2025 SDXL file: first encoder as cond_stage_model.transformer.*, second as cond_stage_model.1.* with the
  // fused in_proj kept; and the same file with the original names (what current stable-diffusion.cpp writes).
  tide::testing::TempDir tmp;
  at::manual_seed(6);
  std::vector<GgufTensorToWrite> t;
  add(t, "model.diffusion_model.input_blocks.0.0.weight", at::randn({8, 4, 3, 3}));
  add(t, "cond_stage_model.transformer.text_model.final_layer_norm.weight", at::randn({768}));
  add(t, "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", at::randn({4, 32}));
  const std::string g = "cond_stage_model.1.transformer.text_model.";
  add(t, g + "embeddings.token_embedding.weight", at::randn({10, 32}), GgmlType::Q4_1);
  add(t, g + "encoder.layers.3.self_attn.in_proj.weight", at::randn({96, 32}), GgmlType::Q5_0);
  add(t, g + "encoder.layers.3.self_attn.out_proj.bias", at::randn({32}));
  add(t, g + "encoder.layers.3.mlp.fc1.weight", at::randn({64, 32}), GgmlType::Q4_0);
  add(t, g + "text_projection", at::randn({32, 32}));
  tide::io::write_gguf(tmp / "xl.gguf", t);
  const auto ck = tide::pipeline::gguf_checkpoint(tmp / "xl.gguf");
  EXPECT_EQ(tide::pipeline::detect_family(ck), tide::pipeline::Family::SDXL);
  EXPECT_TRUE(ck.contains("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"));
  EXPECT_TRUE(ck.contains("conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"));
  const std::string oc = "conditioner.embedders.1.model.";
  for (const char* name :
       {"token_embedding.weight", "transformer.resblocks.3.attn.in_proj_weight",
        "transformer.resblocks.3.attn.out_proj.bias", "transformer.resblocks.3.mlp.c_fc.weight", "text_projection"})
    EXPECT_TRUE(ck.contains(oc + name)) << name;
  const auto raw = tide::io::gguf_weight_source(tmp / "xl.gguf");
  EXPECT_TRUE(at::equal(ck.tensor(oc + "transformer.resblocks.3.attn.in_proj_weight"),
                        raw.tensor(g + "encoder.layers.3.self_attn.in_proj.weight")));
  EXPECT_EQ(ck.names().size(), t.size());

  // Original names pass through unchanged.
  std::vector<GgufTensorToWrite> original;
  for (const auto& name : ck.names()) add(original, name, ck.tensor(name));
  tide::io::write_gguf(tmp / "xl_original.gguf", original);
  const auto same = tide::pipeline::gguf_checkpoint(tmp / "xl_original.gguf");
  EXPECT_EQ(same.names(), ck.names());
}

TEST(GgufNames, UnetOnlyFilesAndOtherPrefixes) {
  tide::testing::TempDir tmp;
  // ComfyUI-GGUF style: the UNet alone, without prefix.
  tide::io::write_gguf(tmp / "unet.gguf", {{"input_blocks.0.0.weight", at::randn({8, 4, 3, 3}), GgmlType::F16},
                                           {"out.2.weight", at::randn({4, 8, 3, 3}), GgmlType::F16}});
  std::string message = error_of([&] { tide::pipeline::gguf_checkpoint(tmp / "unet.gguf"); });
  EXPECT_NE(message.find("holds only a UNet (2 tensors, no VAE or text encoder)"), std::string::npos) << message;
  // `diffusion_model.` prefix (stable-diffusion.cpp's --diffusion-model files).
  tide::io::write_gguf(tmp / "dm.gguf", {{"diffusion_model.input_blocks.0.0.weight", at::randn({8, 4, 3, 3})}});
  message = error_of([&] { tide::pipeline::gguf_checkpoint(tmp / "dm.gguf"); });
  EXPECT_NE(message.find("holds only a UNet (1 tensors"), std::string::npos) << message;
  // Not Stable Diffusion at all (a language model): detect_family's message, naming the file.
  tide::io::write_gguf(tmp / "llm.gguf",
                       {{"token_embd.weight", at::randn({4, 32})}, {"blk.0.attn_q.weight", at::randn({4, 32})}});
  message = error_of([&] { tide::pipeline::gguf_checkpoint(tmp / "llm.gguf"); });
  EXPECT_NE(message.find("llm.gguf is not a Stable Diffusion"), std::string::npos) << message;
  EXPECT_NE(message.find("token_embd (1)"), std::string::npos) << message;
}

// ---- A whole model ----

std::map<std::string, nlohmann::json> folder_configs(const fs::path& dir) {
  std::map<std::string, nlohmann::json> configs;
  for (const char* c : {"unet", "vae", "text_encoder"}) configs[c] = tide::io::read_json(dir / c / "config.json");
  configs["scheduler"] = tide::io::read_json(dir / "scheduler" / "scheduler_config.json");
  configs["model_index"] = tide::io::read_json(dir / "model_index.json");
  return configs;
}

TEST(GgufModel, TinySd1AsF16AndQ8_0ThroughTheSingleFileLoader) {
  tide::testing::TempDir tmp;
  const fs::path dir = tide::testing::make_tiny_pipeline(tmp / "model");
  std::map<std::string, tide::io::WeightSource> components;
  for (const char* c : {"unet", "vae", "text_encoder"})
    components[c] = tide::io::WeightSource::from_component_dir(dir / c);
  const auto configs = folder_configs(dir);
  const auto original = tide::pipeline::single_file_source(tide::pipeline::Family::SD1, components, configs);
  tide::pipeline::write_single_file(tmp / "tiny.safetensors", tide::pipeline::Family::SD1, components, configs);
  // As tide convert writes them: matrices whose rows fit the blocks in the type, the rest F16 / F32.
  tide::pipeline::write_gguf_single_file(tmp / "tiny-f16.gguf", tide::pipeline::Family::SD1, components, configs,
                                         GgmlType::F16);
  tide::pipeline::write_gguf_single_file(tmp / "tiny-q8_0.gguf", tide::pipeline::Family::SD1, components, configs,
                                         GgmlType::Q8_0);

  int quantized = 0;
  const GgufFile q8_file(tmp / "tiny-q8_0.gguf");
  for (const auto& q : q8_file.tensors()) quantized += q.type == 8;
  EXPECT_GT(quantized, 10);

  for (const char* name : {"tiny-f16.gguf", "tiny-q8_0.gguf"}) {
    SCOPED_TRACE(name);
    const auto model = tide::pipeline::read_single_file(tmp / name);
    EXPECT_EQ(model.family, tide::pipeline::Family::SD1);
    EXPECT_EQ(model.configs.at("unet"), configs.at("unet"));
    const bool q8 = std::string(name) == "tiny-q8_0.gguf";
    double worst = 0;
    for (const auto& [c, before] : components) {
      const auto& after = model.components.at(c);
      EXPECT_EQ(after.names(), before.names()) << c;
      for (const auto& n : before.names()) {
        const at::Tensor a = after.tensor(n), b = before.tensor(n);
        ASSERT_EQ(a.sizes(), b.sizes()) << c << " " << n;
        if (!b.is_floating_point()) {
          EXPECT_TRUE(at::equal(a, b)) << n;
          continue;
        }
        // F16 storage: exactly the half-precision values; Q8_0: within half a step (max|block| / 254) plus f16.
        const double scale = b.abs().max().item<double>();
        const double as_stored = std::min(tide::testing::max_abs_diff(a, b),  // 1-D tensors are kept in F32
                                          tide::testing::max_abs_diff(a, b.to(at::kHalf)));
        const double diff = tide::testing::max_abs_diff(a, b);
        if (!q8)
          EXPECT_EQ(as_stored, 0.0) << c << " " << n;
        else
          EXPECT_LE(diff, scale / 127 + 1e-3 * scale) << c << " " << n;
        worst = std::max(worst, diff / std::max(scale, 1e-12));
      }
    }
    std::printf("[   INFO   ] %s: worst relative difference to the safetensors weights %.2e\n", name, worst);
  }

  // Through model_parts (what `tide generate --model x.gguf` uses), two steps, against the safetensors file.
  tide::pipeline::LoadOptions options;
  options.tokenizer = dir;
  auto generate = [&](const fs::path& file) {
    auto pipe =
        tide::pipeline::StableDiffusionPipeline::from_parts(tide::pipeline::model_parts(file.string(), options));
    tide::pipeline::GenerationRequest r;
    r.prompt = "a red cube";
    r.width = r.height = 32;
    r.steps = 2;
    r.seed = 7;
    return pipe->generate(r).images.to(at::kFloat);
  };
  const at::Tensor reference = generate(tmp / "tiny.safetensors");
  const at::Tensor f16 = generate(tmp / "tiny-f16.gguf");
  const at::Tensor q8 = generate(tmp / "tiny-q8_0.gguf");
  const double f16_diff = (f16 - reference).abs().max().item<double>();
  const double q8_diff = (q8 - reference).abs().max().item<double>();
  const double q8_mean = (q8 - reference).abs().mean().item<double>();
  std::printf("[   INFO   ] 2-step image vs safetensors: F16 max %.0f, Q8_0 max %.0f mean %.2f (of 255)\n", f16_diff,
              q8_diff, q8_mean);
  EXPECT_LE(f16_diff, 2.0);
  EXPECT_LE(q8_diff, 4.0);
  EXPECT_LE(q8_mean, 0.5);
}

// stable-diffusion.cpp's names for an original checkpoint tensor, as its convert wrote them before it kept the
// original names (its model.cpp convert_open_clip_to_hf_clip and preprocess_tensor, 2024-2025): text encoders
// under cond_stage_model[.1].transformer.text_model.*, OpenCLIP in Hugging Face names with in_proj split into
// q/k/v (`split`, 2024) or fused, the UNet's linear projections as 1x1 convolutions (2024).
std::vector<std::pair<std::string, at::Tensor>> sdcpp_names(const std::string& name, const at::Tensor& t, bool split) {
  auto starts = [&](const std::string& p) { return name.compare(0, p.size(), p) == 0; };
  auto ends = [&](const std::string& p) {
    return name.size() >= p.size() && name.compare(name.size() - p.size(), p.size(), p) == 0;
  };
  if (starts("model.diffusion_model.")) {
    if (split && (ends("proj_in.weight") || ends("proj_out.weight")) && t.dim() == 2)
      return {{name, t.view({t.size(0), t.size(1), 1, 1})}};
    return {{name, t}};
  }
  std::string prefix, rest;
  for (const auto& [from, to] :
       std::vector<std::pair<std::string, std::string>>{{"conditioner.embedders.0.", "cond_stage_model."},
                                                        {"conditioner.embedders.1.", "cond_stage_model.1."},
                                                        {"cond_stage_model.", "cond_stage_model."}})
    if (starts(from)) {
      prefix = to;
      rest = name.substr(from.size());
      break;
    }
  if (prefix.empty()) return {{name, t}};
  static const std::map<std::string, std::string> whole = {
      {"model.ln_final.bias", "transformer.text_model.final_layer_norm.bias"},
      {"model.ln_final.weight", "transformer.text_model.final_layer_norm.weight"},
      {"model.positional_embedding", "transformer.text_model.embeddings.position_embedding.weight"},
      {"model.token_embedding.weight", "transformer.text_model.embeddings.token_embedding.weight"},
      {"model.text_projection", "transformer.text_model.text_projection"}};
  static const std::map<std::string, std::string> resblock = {{"attn.out_proj.bias", "self_attn.out_proj.bias"},
                                                              {"attn.out_proj.weight", "self_attn.out_proj.weight"},
                                                              {"ln_1.bias", "layer_norm1.bias"},
                                                              {"ln_1.weight", "layer_norm1.weight"},
                                                              {"ln_2.bias", "layer_norm2.bias"},
                                                              {"ln_2.weight", "layer_norm2.weight"},
                                                              {"mlp.c_fc.bias", "mlp.fc1.bias"},
                                                              {"mlp.c_fc.weight", "mlp.fc1.weight"},
                                                              {"mlp.c_proj.bias", "mlp.fc2.bias"},
                                                              {"mlp.c_proj.weight", "mlp.fc2.weight"}};
  if (auto it = whole.find(rest); it != whole.end()) return {{prefix + it->second, t}};
  const std::string blocks = "model.transformer.resblocks.";
  if (rest.compare(0, blocks.size(), blocks) == 0) {
    const std::string index = rest.substr(blocks.size(), rest.find('.', blocks.size()) - blocks.size());
    const std::string suffix = rest.substr(blocks.size() + index.size() + 1);
    const std::string layer = prefix + "transformer.text_model.encoder.layers." + index + ".";
    if (suffix == "attn.in_proj_weight" || suffix == "attn.in_proj_bias") {
      const std::string leaf = suffix == "attn.in_proj_weight" ? "weight" : "bias";
      if (!split) return {{layer + "self_attn.in_proj." + leaf, t}};
      const auto qkv = t.chunk(3, 0);
      return {{layer + "self_attn.q_proj." + leaf, qkv[0].contiguous()},
              {layer + "self_attn.k_proj." + leaf, qkv[1].contiguous()},
              {layer + "self_attn.v_proj." + leaf, qkv[2].contiguous()}};
    }
    if (auto it = resblock.find(suffix); it != resblock.end()) return {{layer + it->second, t}};
  }
  return {{prefix + rest, t}};
}

std::map<std::string, nlohmann::json> fixture_configs(const fs::path& dir, const std::vector<std::string>& names) {
  std::map<std::string, nlohmann::json> configs;
  for (const auto& c : names) configs[c] = tide::io::read_json(dir / c / "config.json");
  configs["scheduler"] = tide::io::read_json(dir / "scheduler" / "scheduler_config.json");
  configs["model_index"] = tide::io::read_json(dir / "model_index.json");
  return configs;
}

// The tiny SD 2.x and XL fixture models written as stable-diffusion.cpp GGUF files (F16 matrices, F32 vectors)
// under each generation of its names read back, through the single-file table, as the diffusers components.
TEST(GgufModel, TinySd2AndSdxlInStableDiffusionCppNames) {
  TIDE_REQUIRE_FIXTURES();
  tide::testing::TempDir tmp;
  struct Case {
    std::string fixture;
    tide::pipeline::Family family;
    std::string style;  // "original" (current), "fused" (2025), "split" (2024)
  };
  int checked = 0;
  for (const Case& c : std::vector<Case>{{"sd2-tiny", tide::pipeline::Family::SD2, "original"},
                                         {"sd2-tiny", tide::pipeline::Family::SD2, "fused"},
                                         {"sd2-tiny", tide::pipeline::Family::SD2, "split"},
                                         {"sdxl-tiny", tide::pipeline::Family::SDXL, "original"},
                                         {"sdxl-tiny", tide::pipeline::Family::SDXL, "fused"},
                                         {"sdxl-tiny", tide::pipeline::Family::SDXL, "split"}}) {
    SCOPED_TRACE(c.fixture + " " + c.style);
    const fs::path dir = tide::testing::pipeline_dir(c.fixture);
    ASSERT_TRUE(fs::is_directory(dir)) << dir;
    const auto names = tide::pipeline::family_components(c.family);
    std::map<std::string, tide::io::WeightSource> components;
    for (const auto& n : names) components[n] = tide::io::WeightSource::from_component_dir(dir / n);
    const auto configs = fixture_configs(dir, names);
    const auto original = tide::pipeline::single_file_source(c.family, components, configs);
    std::vector<GgufTensorToWrite> tensors;
    for (const auto& name : original.names()) {
      const at::Tensor t = original.tensor(name);
      auto renamed = c.style == "original" ? std::vector<std::pair<std::string, at::Tensor>>{{name, t}}
                                           : sdcpp_names(name, t, c.style == "split");
      for (auto& [n, v] : renamed) tensors.push_back({n, v, v.dim() >= 2 ? GgmlType::F16 : GgmlType::F32});
    }
    std::map<std::string, std::string> metadata;
    for (const auto& [component, config] : configs) metadata["config." + component] = config.dump();
    const fs::path file = tmp / (c.fixture + "-" + c.style + ".gguf");
    tide::io::write_gguf(file, tensors, metadata);
    if (c.style == "split") {  // the file really is in the old layout
      int k_proj = 0, conv_proj_in = 0;
      const GgufFile g(file);
      for (const auto& info : g.tensors()) {
        k_proj += info.name.find(".self_attn.k_proj.weight") != std::string::npos;
        conv_proj_in += info.name.find(".proj_in.weight") != std::string::npos && info.shape.size() == 4;
      }
      EXPECT_GT(k_proj, 0);
      EXPECT_GT(conv_proj_in, 0);
    }

    const auto model = tide::pipeline::read_single_file(file);
    EXPECT_EQ(model.family, c.family);
    for (const auto& n : names) {
      const auto& before = components.at(n);
      const auto& after = model.components.at(n);
      EXPECT_EQ(after.names(), before.names()) << n;
      for (const auto& t : before.names()) {
        const at::Tensor a = after.tensor(t), b = before.tensor(t);
        ASSERT_EQ(a.sizes(), b.sizes()) << n << " " << t;
        const at::Tensor expected = b.dim() >= 2 && b.is_floating_point() ? b.to(at::kHalf) : b;
        EXPECT_TRUE(at::equal(a.to(expected.scalar_type()), expected)) << n << " " << t;
        ++checked;
      }
    }
    if (c.fixture == "sdxl-tiny" && c.style == "split") {
      // And it generates what the diffusers folder generates, up to the weights' f16 rounding.
      tide::pipeline::LoadOptions options;
      options.tokenizer = dir;
      tide::pipeline::GenerationRequest r;
      r.prompt = "a red cube";
      r.width = r.height = 64;
      r.steps = 2;
      r.seed = 7;
      const at::Tensor from_folder =
          tide::pipeline::StableDiffusionPipeline::from_folder(dir)->generate(r).images.to(at::kFloat);
      const at::Tensor from_gguf =
          tide::pipeline::StableDiffusionPipeline::from_parts(tide::pipeline::model_parts(file.string(), options))
              ->generate(r)
              .images.to(at::kFloat);
      const double diff = (from_gguf - from_folder).abs().max().item<double>();
      std::printf(
          "[   INFO   ] sdxl-tiny 2-step image, GGUF (2024 names, F16) vs diffusers folder: max diff %.0f of 255\n",
          diff);
      EXPECT_LE(diff, 2.0);
      EXPECT_GT(from_folder.std().item<double>(), 1.0);  // an image with content, not a flat one
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(GgufModel, ModelSourceAcceptsGgufFiles) {
  tide::testing::TempDir tmp;
  tide::io::write_gguf(tmp / "x.gguf", {{"token_embd.weight", at::randn({4, 32})}});
  tide::pipeline::LoadOptions options;
  options.tokenizers = false;
  const std::string message = error_of([&] { tide::pipeline::model_parts((tmp / "x.gguf").string(), options); });
  EXPECT_NE(message.find("is not a Stable Diffusion"), std::string::npos) << message;  // read, not refused by name
  // A .gguf that is not one is reported as such, not as a damaged safetensors file.
  write_bytes(tmp / "z.gguf", std::string(64, 'x'));
  const std::string damaged = error_of([&] { tide::pipeline::model_parts((tmp / "z.gguf").string(), options); });
  EXPECT_NE(damaged.find("z.gguf is not a GGUF file (no GGUF magic)"), std::string::npos) << damaged;
  write_bytes(tmp / "y.onnx", "x");
  EXPECT_NE(error_of([&] { tide::pipeline::model_parts((tmp / "y.onnx").string(), options); }).find(".gguf"),
            std::string::npos);
}

}  // namespace

namespace {

// The fuzz corpus's GGUF seeds are valid files (so mutations start from inputs that reach the dequantizers
// and the name mapping), with the contents they were written with.
TEST(GgufFuzzCorpus, SeedFilesReadAndMap) {
  const fs::path dir = fs::path(TIDE_TEST_DATA) / ".." / "fuzz" / "corpus" / "gguf";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  {
    const GgufFile f(dir / "sd1_q8_0_metadata.gguf");
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.metadata().at("nested"), "[[1, 2], [\"x\"]]");
    const at::Tensor q = f.tensor("model.diffusion_model.input_blocks.0.0.weight");  // d = f16(0.01), q = 0..31
    EXPECT_FLOAT_EQ(q[1][31].item<float>(), 31 * static_cast<float>(c10::Half(0.01f)));
    const auto ck = tide::pipeline::gguf_checkpoint(dir / "sd1_q8_0_metadata.gguf");
    EXPECT_EQ(tide::pipeline::detect_family(ck), tide::pipeline::Family::SD1);
  }
  {
    const GgufFile f(dir / "sdxl_v2_fused_in_proj.gguf");
    EXPECT_EQ(f.version(), 2u);
    const auto ck = tide::pipeline::gguf_checkpoint(dir / "sdxl_v2_fused_in_proj.gguf");
    EXPECT_EQ(tide::pipeline::detect_family(ck), tide::pipeline::Family::SDXL);
    EXPECT_EQ(ck.shape("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"),
              (std::vector<int64_t>{3, 32}));
    EXPECT_EQ(ck.shape("model.diffusion_model.input_blocks.1.1.proj_in.weight"), (std::vector<int64_t>{2, 2}));
  }
  {
    const auto ck = tide::pipeline::gguf_checkpoint(dir / "sd2_split_qkv_kquant.gguf");
    EXPECT_EQ(tide::pipeline::detect_family(ck), tide::pipeline::Family::SD2);
    EXPECT_EQ(ck.tensor("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight").sizes(),
              (at::IntArrayRef{3, 32}));
    EXPECT_TRUE(at::equal(ck.tensor("cond_stage_model.model.ln_final.weight"), at::ones({1024}, at::kBFloat16)));
    EXPECT_TRUE(at::equal(ck.tensor("model.diffusion_model.input_blocks.0.0.weight"), at::zeros({256})));  // Q4_K
  }
}

}  // namespace
