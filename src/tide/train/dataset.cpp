#include "tide/train/dataset.h"

#include "tide/runtime/error.h"
#include "tide/train/image_files.h"
#include "tide/io/pil_resize.h"

namespace tide::train {

at::Tensor center_crop(const at::Tensor& rgb8) {
  const int64_t h = rgb8.size(0), w = rgb8.size(1), c = std::min(h, w);
  return rgb8.slice(0, (h - c) / 2, (h + c) / 2).slice(1, (w - c) / 2, (w + c) / 2);
}

at::Tensor to_unit_range(const at::Tensor& rgb8) {
  return (rgb8.to(at::kDouble) / 127.5 - 1.0).to(at::kFloat).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

TrainingImages::TrainingImages(DatasetOptions options) : options_(std::move(options)) {
  if (options_.resolution < 8) throw Error("--resolution must be at least 8, got " + std::to_string(options_.resolution));
  if (options_.repeats < 1) throw Error("--repeats must be at least 1, got " + std::to_string(options_.repeats));
  files_ = list_image_files(options_.dir, &skipped_);
  if (files_.empty()) throw Error("no PNG or JPEG images in the training data folder " + options_.dir.string());
  for (const auto& file : files_) {
    at::Tensor img = read_rgb_image(file);
    if (options_.center_crop) img = center_crop(img);
    resized_.push_back(io::pil_resize_bicubic(img, options_.resolution, options_.resolution));
  }
}

at::Tensor TrainingImages::pixels(int image, bool flip) const {
  at::Tensor img = resized_.at(image);
  if (flip) img = img.flip({1});  // PIL's FLIP_LEFT_RIGHT
  return to_unit_range(img);
}

}  // namespace tide::train
