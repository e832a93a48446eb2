// JPEG decoding to 8-bit RGB like PIL's `Image.open(...).convert("RGB")`: libjpeg-turbo with Pillow's
// defaults (accurate integer DCT, fancy upsampling). Optional: in a build without libjpeg
// (tide::built_with_jpeg() false) both functions throw a tide::Error saying the build cannot read JPEG.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <string>

namespace tide::io {

// uint8 [H, W, 3]; unreadable files and CMYK JPEGs are tide::Errors naming the file.
at::Tensor read_jpeg(const std::filesystem::path& path);
// The same from the bytes of a JPEG file; `name` is used in errors.
at::Tensor decode_jpeg(const std::string& bytes, const std::string& name);

}  // namespace tide::io
