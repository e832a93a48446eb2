// --dtype: parsing, the float32 fallback on CPUs without native bf16, and the cpuinfo flags it reads.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tide/runtime/compute_dtype.h"
#include "tide/runtime/cpu_features.h"
#include "tide/runtime/error.h"

namespace {
using namespace tide::runtime;

TEST(CpuFeatures, ReadsCpuinfoFlags) {
  const auto flags = cpuinfo_flags("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\nflags\t: other\n");
  EXPECT_EQ(flags.count("avx512_bf16"), 1u);
  EXPECT_EQ(flags.count("other"), 0u);  // the first processor's line only
  EXPECT_TRUE(cpuinfo_has_native_bf16(flags));
  EXPECT_TRUE(cpuinfo_has_native_bf16(cpuinfo_flags("flags\t: fpu amx_bf16 amx_tile\n")));
  EXPECT_FALSE(cpuinfo_has_native_bf16(cpuinfo_flags("flags\t: fpu sse avx2 avx512f\n")));
  EXPECT_FALSE(cpuinfo_has_native_bf16(cpuinfo_flags("")));
}

TEST(ComputeDtype, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(parse_compute_dtype("float32"), c10::ScalarType::Float);
  EXPECT_EQ(parse_compute_dtype("f32"), c10::ScalarType::Float);
  EXPECT_EQ(parse_compute_dtype("bf16"), c10::ScalarType::BFloat16);
  EXPECT_EQ(parse_compute_dtype("bfloat16"), c10::ScalarType::BFloat16);
  try {
    parse_compute_dtype("f16", "tide generate: --dtype");
    FAIL() << "f16 was accepted";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--dtype must be float32 or bf16, got 'f16'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(compute_dtype_name(c10::ScalarType::BFloat16), "bf16");
  EXPECT_EQ(compute_dtype_name(c10::ScalarType::Float), "float32");
}

TEST(ComputeDtype, Bf16OnlyWhereTheCpuHasItNative) {
  std::string note;
  EXPECT_EQ(usable_compute_dtype(c10::ScalarType::Float, &note), c10::ScalarType::Float);
  EXPECT_TRUE(note.empty());
  ::setenv("TIDE_NO_BF16", "1", 1);
  EXPECT_FALSE(bf16_supported());
  EXPECT_EQ(usable_compute_dtype(c10::ScalarType::BFloat16, &note), c10::ScalarType::Float);
  EXPECT_NE(note.find("AVX512-BF16 or AMX"), std::string::npos) << note;
  ::unsetenv("TIDE_NO_BF16");
  note.clear();
  const bool native = cpuinfo_has_native_bf16(cpuinfo_flags([] {
    std::string flags = "flags :";
    for (const auto& f : cpu_features()) flags += " " + f;
    return flags;
  }()));
  EXPECT_EQ(bf16_supported(), native);
  EXPECT_EQ(usable_compute_dtype(c10::ScalarType::BFloat16, &note),
            native ? c10::ScalarType::BFloat16 : c10::ScalarType::Float);
  EXPECT_EQ(note.empty(), native);
}

}  // namespace
