// SHA-256 (FIPS 180-4), incremental: verifies downloaded weight files against the Hub's LFS
// sha256 without a dependency on a crypto library.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace tide::runtime {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& bytes) { update(bytes.data(), bytes.size()); }
  // Lower-case hex of the digest; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

std::string sha256_hex(const std::string& bytes);
// Hashes a whole file; throws tide::Error if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace tide::runtime
