#include "tide/train/image_files.h"

#include <algorithm>

#include "tide/io/image.h"
#include "tide/io/jpeg.h"
#include "tide/runtime/error.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

std::string lower_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

}  // namespace

bool is_image_file(const fs::path& path) {
  const std::string ext = lower_extension(path);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

at::Tensor read_rgb_image(const fs::path& path) {
  const std::string ext = lower_extension(path);
  if (ext == ".png") return io::read_png(path).rgb8;
  if (ext == ".jpg" || ext == ".jpeg") return io::read_jpeg(path);
  throw Error(path.string() + ": unsupported image format (PNG and JPEG are read)");
}

at::Tensor decode_rgb_image(const std::string& bytes, const std::string& name) {
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return io::decode_png(bytes, name).rgb8;
  if (bytes.size() >= 3 && bytes.compare(0, 3, "\xff\xd8\xff") == 0) return io::decode_jpeg(bytes, name);
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
