#include "tide/io/image.h"

#include <png.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "tide/io/atomic_file.h"
#include "tide/io/image_limits.h"
#include "tide/runtime/error.h"

namespace tide::io {
namespace {

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

[[noreturn]] void png_error_handler(png_structp png, png_const_charp message) {
  throw Error(std::string(message));
}
void png_warning_handler(png_structp, png_const_charp) {}

}  // namespace

at::Tensor to_rgb8(const at::Tensor& decoded) {
  at::Tensor x = (decoded.to(at::kFloat) / 2 + 0.5).clamp(0, 1);  // [N, 3, H, W]
  return (x * 255).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();  // [N, H, W, 3]
}

namespace {

// Writes the PNG to an open stdio stream (a file, or open_memstream's buffer). Throws Error with libpng's reason.
void write_png_stream(FILE* file, const at::Tensor& rgb8, const std::map<std::string, std::string>& text) {
  if (rgb8.dim() != 3 || rgb8.size(2) != 3 || rgb8.scalar_type() != at::kByte)
    throw Error("write_png: expected a uint8 [H, W, 3] image");
  at::Tensor img = rgb8.contiguous();
  const auto height = static_cast<png_uint_32>(img.size(0)), width = static_cast<png_uint_32>(img.size(1));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_handler, png_warning_handler);
  png_infop info = png_create_info_struct(png);
  try {
    png_init_io(png, file);
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    std::vector<png_text> chunks;
    for (const auto& [key, value] : text) {
      png_text t{};
      t.compression = PNG_TEXT_COMPRESSION_NONE;
      t.key = const_cast<char*>(key.c_str());
      t.text = const_cast<char*>(value.c_str());
      t.text_length = value.size();
      chunks.push_back(t);
    }
    if (!chunks.empty()) png_set_text(png, info, chunks.data(), static_cast<int>(chunks.size()));
    png_write_info(png, info);
    const auto* data = img.data_ptr<uint8_t>();
    for (png_uint_32 y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(data + size_t(y) * width * 3));
    png_write_end(png, nullptr);
  } catch (...) {
    png_destroy_write_struct(&png, &info);
    throw;
  }
  png_destroy_write_struct(&png, &info);
}

// Reads a PNG from an open stdio stream positioned at its start; `name` is for messages.
PngImage read_png_stream(FILE* file, const std::string& name) {
  unsigned char signature[8] = {};
  if (std::fread(signature, 1, 8, file) != 8 || png_sig_cmp(signature, 0, 8) != 0)
    throw Error(name + " is not a PNG file");
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_handler, png_warning_handler);
  png_infop info = png_create_info_struct(png);
  PngImage result;
  try {
    png_init_io(png, file);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    check_image_size(png_get_image_width(png, info), png_get_image_height(png, info), "the image");
    // Normalise every colour type to 8-bit RGB.
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const auto width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    if (png_get_rowbytes(png, info) != size_t(width) * 3) throw Error("unexpected row layout");
    result.rgb8 = at::empty({int64_t(height), int64_t(width), 3}, at::kByte);
    std::vector<png_bytep> rows(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = result.rgb8.data_ptr<uint8_t>() + size_t(y) * width * 3;
    png_read_image(png, rows.data());
    png_read_end(png, info);
    png_textp texts = nullptr;
    int count = 0;
    png_get_text(png, info, &texts, &count);
    for (int i = 0; i < count; ++i) result.text[texts[i].key] = std::string(texts[i].text, texts[i].text_length);
  } catch (const Error& e) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error("cannot read PNG " + name + ": " + e.what());
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return result;
}

}  // namespace

void write_png(const std::filesystem::path& path, const at::Tensor& rgb8,
               const std::map<std::string, std::string>& text) {
  write_atomically(path, [&](const std::filesystem::path& tmp) {
    FilePtr file(std::fopen(tmp.c_str(), "wb"));
    if (!file) throw Error("cannot create " + tmp.string());
    try {
      write_png_stream(file.get(), rgb8, text);
    } catch (const Error& e) {
      throw Error("cannot write PNG " + path.string() + ": " + e.what());
    }
    if (std::fflush(file.get()) != 0) throw Error("cannot write " + tmp.string() + " (disk full?)");
  });
}

std::string encode_png(const at::Tensor& rgb8, const std::map<std::string, std::string>& text) {
  char* buffer = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&buffer, &size);
  if (!stream) throw Error("encode_png: out of memory");
  std::string bytes;
  try {
    write_png_stream(stream, rgb8, text);
  } catch (const Error& e) {
    std::fclose(stream);
    std::free(buffer);
    throw Error(std::string("cannot encode PNG: ") + e.what());
  }
  std::fclose(stream);  // sets buffer and size
  bytes.assign(buffer, size);
  std::free(buffer);
  return bytes;
}

PngImage read_png(const std::filesystem::path& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error("cannot open " + path.string());
  return read_png_stream(file.get(), path.string());
}

PngImage decode_png(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) throw Error(name + " is empty, not a PNG file");
  FilePtr file(fmemopen(const_cast<char*>(bytes.data()), bytes.size(), "rb"));
  if (!file) throw Error("cannot read " + name);
  return read_png_stream(file.get(), name);
}

}  // namespace tide::io
