#include "tide/server/image_store.h"

#include <cstdio>
#include <random>

namespace tide::server {

ImageStore::ImageStore(size_t capacity, std::chrono::seconds lifetime) : capacity_(capacity), lifetime_(lifetime) {}

ImageStore::Clock::time_point ImageStore::now() const { return Clock::now() + offset_; }

void ImageStore::drop_expired(Clock::time_point t) {
  while (!entries_.empty() && entries_.front().expires <= t) entries_.pop_front();
}

std::string ImageStore::put(std::string png) {
  // 128 bits from /dev/urandom: the id is the only thing that guards the picture.
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) {
    char part[9];
    std::snprintf(part, sizeof(part), "%08x", static_cast<unsigned>(random()));
    id += part;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const auto t = now();
  drop_expired(t);
  if (capacity_ == 0) return id;
  while (entries_.size() >= capacity_) entries_.pop_front();
  entries_.push_back({id, std::move(png), t + lifetime_});
  return id;
}

std::optional<std::string> ImageStore::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  drop_expired(now());
  for (const auto& e : entries_)
    if (e.id == id) return e.png;
  return std::nullopt;
}

size_t ImageStore::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  drop_expired(now());
  return entries_.size();
}

void ImageStore::set_clock_offset(std::chrono::seconds offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  offset_ = offset;
}

}  // namespace tide::server
