// Reading training images: PNG (through tide::io) and JPEG (libjpeg-turbo, decoded with the same defaults
// as Pillow: accurate integer DCT, fancy upsampling), both as 8-bit RGB like PIL's `convert("RGB")`.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <string>
#include <vector>

namespace tide::train {

bool is_image_file(const std::filesystem::path& path);  // by extension: .png .jpg .jpeg (any case)

// uint8 [H, W, 3]; unreadable or unsupported files are tide::Errors naming the file.
at::Tensor read_rgb_image(const std::filesystem::path& path);

// The same from the bytes of a PNG or JPEG file (told apart by their signatures); `name` is used in errors.
at::Tensor decode_rgb_image(const std::string& bytes, const std::string& name);

// The image files of a folder, sorted by name; `skipped` receives the other regular files.
std::vector<std::filesystem::path> list_image_files(const std::filesystem::path& dir,
                                                    std::vector<std::filesystem::path>* skipped = nullptr);

}  // namespace tide::train
