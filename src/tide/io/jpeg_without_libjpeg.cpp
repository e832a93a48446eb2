// Builds without libjpeg (TIDE_WITH_JPEG=OFF, or libjpeg not found): JPEG inputs are refused with what to do
// instead; PNG is unaffected. Replaces jpeg_libjpeg.cpp.
#include "tide/io/jpeg.h"

#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"

namespace tide {
bool built_with_jpeg() { return false; }
}  // namespace tide

namespace tide::io {
namespace {

[[noreturn]] void no_jpeg_support(const std::string& name) {
  throw Error("cannot read JPEG " + name +
              ": this build of tide has no JPEG support (it was built without libjpeg); convert the image to PNG, or "
              "rebuild tide with libjpeg (libjpeg62-turbo-dev, TIDE_WITH_JPEG=ON)");
}

}  // namespace

at::Tensor read_jpeg(const std::filesystem::path& path) { no_jpeg_support(path.string()); }

at::Tensor decode_jpeg(const std::string& bytes, const std::string& name) { no_jpeg_support(name); }

}  // namespace tide::io
