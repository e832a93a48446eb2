// JPEG decoding with libjpeg(-turbo) (builds with JPEG; jpeg_without_libjpeg.cpp stands in for it otherwise).
#include "tide/io/jpeg.h"

#include <jpeglib.h>
// after jpeglib.h, which it needs
#include <jerror.h>

#include <csetjmp>
#include <cstdio>
#include <memory>

#include "tide/io/image_limits.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"

namespace tide {
bool built_with_jpeg() { return true; }
}  // namespace tide

namespace tide::io {
namespace {

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

// libjpeg prints its warnings to stderr and decodes on; a library must not print. A file that ends early would
// silently become grey below the cut, so that warning is an error (as PIL's "image file is truncated"); the
// others (an unknown JFIF revision, stray bytes between markers) leave the picture intact and are dropped.
void on_jpeg_message(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) on_jpeg_error(info);
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
  try {  // before libjpeg allocates for the whole image (progressive JPEGs keep all their coefficients)
    check_image_size(cinfo.image_width, cinfo.image_height, "the image");
  } catch (const Error& e) {
    std::snprintf(err.message, sizeof(err.message), "%s", e.what());
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
  err.mgr.emit_message = on_jpeg_message;
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

}  // namespace

at::Tensor read_jpeg(const std::filesystem::path& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Error("cannot open " + path.string());
  return read_jpeg(file.get(), nullptr, path.string());
}

at::Tensor decode_jpeg(const std::string& bytes, const std::string& name) { return read_jpeg(nullptr, &bytes, name); }

}  // namespace tide::io
