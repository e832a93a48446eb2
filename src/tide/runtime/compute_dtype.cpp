#include "tide/runtime/compute_dtype.h"

#include "tide/runtime/cpu_features.h"
#include "tide/runtime/error.h"

namespace tide::runtime {

c10::ScalarType parse_compute_dtype(const std::string& name, const std::string& flag) {
  if (name == "float32" || name == "f32" || name == "fp32") return c10::ScalarType::Float;
  if (name == "bf16" || name == "bfloat16") return c10::ScalarType::BFloat16;
  throw Error(flag + " must be float32 or bf16, got '" + name + "'");
}

c10::ScalarType usable_compute_dtype(c10::ScalarType requested, std::string* note) {
  if (requested != c10::ScalarType::BFloat16 || bf16_supported()) return requested;
  if (note) *note = "bf16 needs a CPU with AVX512-BF16 or AMX (this one has neither); running float32";
  return c10::ScalarType::Float;
}

std::string compute_dtype_name(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::BFloat16 ? "bf16" : "float32";
}

}  // namespace tide::runtime
