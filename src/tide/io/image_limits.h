// The largest image tide decodes. A PNG or JPEG header can claim any size up to 2^31 on a side; without a
// limit a few bytes of header would ask for terabytes. 2^28 pixels (16384 x 16384, 768 MiB as RGB) is far
// above any picture Stable Diffusion takes.
#pragma once
#include <cstdint>
#include <string>

#include "tide/runtime/error.h"

namespace tide::io {

inline constexpr uint64_t kMaxImageSide = 1u << 16;
inline constexpr uint64_t kMaxImagePixels = uint64_t(1) << 28;

// Throws a tide::Error naming `name` when width x height is empty or larger than the limits above.
inline void check_image_size(uint64_t width, uint64_t height, const std::string& name) {
  if (width == 0 || height == 0 || width > kMaxImageSide || height > kMaxImageSide ||
      width * height > kMaxImagePixels)
    throw Error(name + ": an image of " + std::to_string(width) + "x" + std::to_string(height) +
                " pixels is empty or larger than tide reads (at most " + std::to_string(kMaxImagePixels) + " pixels)");
}

}  // namespace tide::io
