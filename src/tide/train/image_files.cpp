#include "tide/train/image_files.h"

#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <memory>

#include "tide/io/image.h"
#include "tide/runtime/error.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

std::string lower_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr info) {
  auto* err = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, err->message);
  std::longjmp(err->jump, 1);
}

// The two libjpeg phases live in functions without C++ objects: libjpeg reports errors by longjmp, which
// must not skip destructors. Each returns false with err.message set on failure.
bool start_jpeg(jpeg_decompress_struct& cinfo, JpegError& err, FILE* file, const std::string* bytes) {
  if (setjmp(err.jump)) return false;
  jpeg_create_decompress(&cinfo);
  if (file)
    jpeg_stdio_src(&cinfo, file);
  else
    jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes->data()), static_cast<unsigned long>(bytes->size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err.message, sizeof(err.message), "CMYK JPEGs are not supported; convert the image to RGB");
    return false;
  }
  cinfo.out_color_space = JCS_RGB;  // grey and YCbCr both convert
  jpeg_start_decompress(&cinfo);
  return true;
}

bool decode_jpeg(jpeg_decompress_struct& cinfo, JpegError& err, uint8_t* data) {
  if (setjmp(err.jump)) return false;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = data + static_cast<size_t>(cinfo.output_scanline) * cinfo.output_width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  return true;
}

// From a file or, when `file` is null, from `bytes`; errors name `name`.
at::Tensor read_jpeg(FILE* file, const std::string* bytes, const std::string& name) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_jpeg_error;
  at::Tensor image;
  bool ok = start_jpeg(cinfo, err, file, bytes);
  if (ok) {
    image = at::empty({cinfo.output_height, cinfo.output_width, 3}, at::kByte);
    ok = decode_jpeg(cinfo, err, image.data_ptr<uint8_t>());
  }
  jpeg_destroy_decompress(&cinfo);
  if (!ok) throw Error("cannot read JPEG " + name + ": " + err.message);
  return image;
}

at::Tensor read_jpeg(const fs::path& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Error("cannot open " + path.string());
  return read_jpeg(file.get(), nullptr, path.string());
}

}  // namespace

bool is_image_file(const fs::path& path) {
  const std::string ext = lower_extension(path);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

at::Tensor read_rgb_image(const fs::path& path) {
  const std::string ext = lower_extension(path);
  if (ext == ".png") return io::read_png(path).rgb8;
  if (ext == ".jpg" || ext == ".jpeg") return read_jpeg(path);
  throw Error(path.string() + ": unsupported image format (PNG and JPEG are read)");
}

at::Tensor decode_rgb_image(const std::string& bytes, const std::string& name) {
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return io::decode_png(bytes, name).rgb8;
  if (bytes.size() >= 3 && bytes.compare(0, 3, "\xff\xd8\xff") == 0) return read_jpeg(nullptr, &bytes, name);
  throw Error(name + ": neither PNG nor JPEG data");
}

std::vector<fs::path> list_image_files(const fs::path& dir, std::vector<fs::path>* skipped) {
  if (!fs::is_directory(dir)) throw Error("training data folder " + dir.string() + " does not exist");
  std::vector<fs::path> images;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (is_image_file(entry.path()))
      images.push_back(entry.path());
    else if (skipped)
      skipped->push_back(entry.path());
  }
  std::sort(images.begin(), images.end());
  if (skipped) std::sort(skipped->begin(), skipped->end());
  return images;
}

}  // namespace tide::train
