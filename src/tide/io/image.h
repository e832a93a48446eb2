// 8-bit RGB images: PNG writing (with text chunks for the generation parameters) and reading,
// and the conversion from the VAE's [-1, 1] output the way diffusers does it.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <string>

namespace tide::io {

// VAE output [N, 3, H, W] in about [-1, 1] -> uint8 [N, H, W, 3]: (x/2 + 0.5).clamp(0, 1), then
// round(x * 255) like diffusers' numpy_to_pil.
at::Tensor to_rgb8(const at::Tensor& decoded);

// Writes a uint8 [H, W, 3] tensor as PNG, atomically, with tEXt chunks (e.g. {"parameters": "..."}).
void write_png(const std::filesystem::path& path, const at::Tensor& rgb8,
               const std::map<std::string, std::string>& text = {});

// The same PNG bytes in memory (HTTP responses).
std::string encode_png(const at::Tensor& rgb8, const std::map<std::string, std::string>& text = {});

struct PngImage {
  at::Tensor rgb8;  // uint8 [H, W, 3]
  std::map<std::string, std::string> text;
};
// Reads any PNG (grey, palette, 16-bit and alpha are converted to 8-bit RGB). Errors name the file.
PngImage read_png(const std::filesystem::path& path);
// The same from PNG bytes in memory; `name` is used in error messages.
PngImage decode_png(const std::string& bytes, const std::string& name = "PNG data");

}  // namespace tide::io
