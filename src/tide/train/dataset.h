// diffusers' TextualInversionDataset: the images of a folder, each seen `repeats` times per epoch, turned into
// the UNet's training pixels exactly as there — RGB, optional center crop, Pillow bicubic resize to
// resolution², optional horizontal flip, x / 127.5 - 1 (computed in double, stored as float32).
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <vector>

namespace tide::train {

struct DatasetOptions {
  std::filesystem::path dir;
  int resolution = 512;
  int repeats = 100;
  bool center_crop = false;
};

class TrainingImages {
 public:
  // Lists and decodes every image of the folder up front, so a bad file fails before training starts.
  explicit TrainingImages(DatasetOptions options);

  int num_images() const { return static_cast<int>(files_.size()); }
  // Dataset length: images × repeats; dataset index i shows image i % num_images.
  int64_t length() const { return static_cast<int64_t>(files_.size()) * options_.repeats; }
  const std::vector<std::filesystem::path>& files() const { return files_; }
  const std::vector<std::filesystem::path>& skipped_files() const { return skipped_; }

  // The resized uint8 [res, res, 3] image (before the flip).
  const at::Tensor& resized(int image) const { return resized_.at(image); }
  // float32 [1, 3, res, res] in [-1, 1]: what the VAE encoder gets.
  at::Tensor pixels(int image, bool flip) const;

 private:
  DatasetOptions options_;
  std::vector<std::filesystem::path> files_, skipped_;
  std::vector<at::Tensor> resized_;
};

// img[(h - c) // 2 : (h + c) // 2, (w - c) // 2 : (w + c) // 2] with c = min(h, w), as diffusers crops.
at::Tensor center_crop(const at::Tensor& rgb8);

// uint8 [H, W, 3] -> float32 [1, 3, H, W]: (x / 127.5 - 1.0) in double, then float32, like numpy there.
at::Tensor to_unit_range(const at::Tensor& rgb8);

}  // namespace tide::train
