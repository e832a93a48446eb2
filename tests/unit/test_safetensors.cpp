// The safetensors reader must reject every malformed file with a tide::Error naming it — never crash.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "test_support.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/memory.h"
#include "tide/io/weights.h"
#include "tide/runtime/error.h"

namespace {
using tide::testing::read_bytes;
using tide::testing::write_bytes;
using tide::io::SafetensorsFile;
using tide::testing::TempDir;

// A file from a raw JSON header and `data_bytes` zero bytes.
void write_raw(const std::filesystem::path& p, const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(out.data(), &len, 8);
  write_bytes(p, out + header + std::string(data_bytes, '\0'));
}
std::string error_of(const std::filesystem::path& p) {
  try {
    SafetensorsFile f(p);
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripsAllDtypesAndMetadata) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  auto a = at::randn({3, 5});
  auto b = at::arange(7, at::kLong);
  auto c = at::randn({2, 2}).to(at::kHalf);
  auto d = at::randn({4}).to(at::kBFloat16);
  auto e = at::empty({0, 3});
  tide::io::write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"d", d}, {"e", e}}, {{"format", "pt"}});
  SafetensorsFile f(path);
  ASSERT_EQ(f.entries().size(), 5u);
  EXPECT_TRUE(at::equal(f.tensor("a"), a));
  EXPECT_TRUE(at::equal(f.tensor("b"), b));
  EXPECT_TRUE(at::equal(f.tensor("c"), c));
  EXPECT_TRUE(at::equal(f.tensor("d"), d));
  EXPECT_EQ(f.tensor("e").sizes(), e.sizes());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_THROW(f.tensor("nope"), tide::Error);
  // No temporary file left beside the output.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Safetensors, TruncatedFileIsAnErrorNamingTheTensor) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  tide::io::write_safetensors(path, {{"x", at::randn({16, 16})}});
  const std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 10));
  const std::string msg = error_of(path);
  EXPECT_NE(msg.find("'x'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("w.safetensors"), std::string::npos) << msg;
  write_bytes(path, bytes.substr(0, 5));
  EXPECT_NE(error_of(path).find("too short"), std::string::npos);
  write_bytes(path, bytes.substr(0, 20));  // header cut
  EXPECT_NE(error_of(path).find("header length"), std::string::npos);
}

TEST(Safetensors, BadHeaderIsAnError) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  write_raw(path, "{not json", 0);
  EXPECT_NE(error_of(path).find("not valid JSON"), std::string::npos);
  write_raw(path, "[1, 2]", 0);
  EXPECT_NE(error_of(path).find("not a JSON object"), std::string::npos);
  write_raw(path, R"({"x": {"dtype": "F32", "shape": [2]}})", 8);
  EXPECT_NE(error_of(path).find("data_offsets"), std::string::npos);
  write_raw(path, R"({"x": {"dtype": "F32", "shape": "two", "data_offsets": [0, 8]}})", 8);
  EXPECT_NE(error_of(path).find("malformed"), std::string::npos);
  // A header length far beyond the file.
  std::string huge(8, '\xff');
  write_bytes(path, huge + "{}");
  EXPECT_NE(error_of(path).find("header length"), std::string::npos);
  EXPECT_NE(error_of(dir / "missing.safetensors").find("cannot open"), std::string::npos);
}

TEST(Safetensors, OverlappingOffsetsAreAnError) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  write_raw(path,
            R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
            R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
            16);
  EXPECT_NE(error_of(path).find("overlap"), std::string::npos);
}

TEST(Safetensors, SizeNotMatchingDtypeAndShapeIsAnError) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  const std::string msg = error_of(path);
  EXPECT_NE(msg.find("needs 12"), std::string::npos) << msg;
  write_raw(path, R"({"a": {"dtype": "Q7", "shape": [3], "data_offsets": [0, 12]}})", 12);
  EXPECT_NE(error_of(path).find("unsupported safetensors dtype"), std::string::npos);
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [-3], "data_offsets": [0, 12]}})", 12);
  EXPECT_NE(error_of(path).find("negative"), std::string::npos);
  // Dimensions whose product wraps around to 0 bytes, or is hidden by a zero one: libtorch could not make them.
  for (const char* shape : {"[4294967296, 4294967296]", "[0, 4294967296, 4294967296]"}) {
    write_raw(path, std::string(R"({"a": {"dtype": "F32", "shape": )") + shape + R"(, "data_offsets": [0, 0]}})", 0);
    EXPECT_NE(error_of(path).find("too large for any tensor"), std::string::npos) << shape << ": " << error_of(path);
  }
}

struct TinyModule : torch::nn::Module {
  TinyModule() {
    proj = register_module("proj", torch::nn::Linear(3, 2));
  }
  torch::nn::Linear proj{nullptr};
};

// Reading a tensor leaves only the copy resident, not also the file's mapped pages (loading a 4 GB
// checkpoint would otherwise peak at twice its size); a second read still gives the same values.
TEST(Safetensors, ReadPagesLeaveTheResidentMemory) {
  tide::testing::TempDir dir;
  const auto path = dir.path() / "big.safetensors";
  const int64_t n = 16 << 20;  // 64 MiB of float32
  const at::Tensor big = at::arange(n, at::kFloat);
  tide::io::write_safetensors(path, {{"big", big}});
  tide::io::SafetensorsFile file(path);
  const int64_t before = tide::runtime::current_rss_bytes();
  at::Tensor first = file.tensor("big");
  const int64_t growth = tide::runtime::current_rss_bytes() - before;
  ASSERT_GT(before, 0) << "no VmRSS on this system";
  EXPECT_LT(growth, 96ll << 20) << "resident growth " << (growth >> 20) << " MiB for a 64 MiB tensor";
  EXPECT_TRUE(at::equal(first, big));
  EXPECT_TRUE(at::equal(file.tensor("big"), big));
}

TEST(Weights, LoadsByNameConvertsDtypeAndReportsMismatches) {
  TempDir dir;
  auto w = at::randn({2, 3}), b = at::randn({2});
  tide::io::write_safetensors(dir / "model.fp16.safetensors",
                              {{"proj.weight", w.to(at::kHalf)}, {"proj.bias", b.to(at::kHalf)}, {"extra", b}});
  EXPECT_THROW(tide::io::WeightSource::from_component_dir(dir.path()), tide::Error);  // only the variant exists
  auto source = tide::io::WeightSource::from_component_dir(dir.path(), "fp16");
  TinyModule m;
  tide::io::load_module_weights(m, source, "tiny");
  EXPECT_TRUE(at::allclose(m.proj->weight, w, 1e-2, 1e-3));

  tide::io::write_safetensors(dir / "model.safetensors", {{"proj.weight", at::randn({3, 3})}, {"proj.bias", b}});
  try {
    tide::io::load_module_weights(m, tide::io::WeightSource::from_component_dir(dir.path()), "tiny");
    FAIL() << "shape mismatch accepted";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 3]"), std::string::npos) << e.what();
  }
  tide::io::write_safetensors(dir / "model.safetensors", {{"proj.weight", w}});
  try {
    tide::io::load_module_weights(m, tide::io::WeightSource::from_component_dir(dir.path()), "tiny");
    FAIL() << "missing tensor accepted";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("proj.bias"), std::string::npos) << e.what();
  }
}

TEST(Weights, ReadsShardedCheckpoints) {
  TempDir dir;
  auto w = at::randn({2, 3}), b = at::randn({2});
  tide::io::write_safetensors(dir / "model-00001-of-00002.safetensors", {{"proj.weight", w}});
  tide::io::write_safetensors(dir / "model-00002-of-00002.safetensors", {{"proj.bias", b}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"proj.weight": "model-00001-of-00002.safetensors",)"
      << R"( "proj.bias": "model-00002-of-00002.safetensors"}})";
  TinyModule m;
  tide::io::load_module_weights(m, tide::io::WeightSource::from_component_dir(dir.path()), "tiny");
  EXPECT_TRUE(at::equal(m.proj->bias, b));
}

}  // namespace
