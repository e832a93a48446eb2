// Generated PNGs kept in memory for a while, for OpenAI's response_format "url": each gets an unguessable id
// and is served at /v1/images/files/ID.png until it expires or is pushed out by newer ones.
#pragma once
#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

namespace tide::server {

class ImageStore {
 public:
  using Clock = std::chrono::steady_clock;
  // Keeps at most `capacity` images (the oldest leave first), each for `lifetime`.
  ImageStore(size_t capacity, std::chrono::seconds lifetime);

  // Stores the bytes; returns the id (32 hex digits from the OS's random source).
  std::string put(std::string png);
  // The bytes of a stored, unexpired image; nullopt for unknown or expired ids.
  std::optional<std::string> get(const std::string& id);
  size_t size();

  // Test hook: the clock the store reads (now by default), to expire images without waiting.
  void set_clock_offset(std::chrono::seconds offset);

 private:
  struct Entry {
    std::string id, png;
    Clock::time_point expires;
  };
  void drop_expired(Clock::time_point now);  // with mutex_ held
  Clock::time_point now() const;

  const size_t capacity_;
  const std::chrono::seconds lifetime_;
  std::mutex mutex_;
  std::deque<Entry> entries_;  // oldest first
  std::chrono::seconds offset_{0};
};

}  // namespace tide::server
