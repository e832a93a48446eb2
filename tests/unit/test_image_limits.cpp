// Image headers that claim huge sizes are refused before anything is allocated for them; damaged JPEGs are
// refused or read quietly, never printed about.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/image_limits.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"
#include "tide/train/image_files.h"

namespace {

void put_be(std::string& s, size_t at, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
}

// A valid PNG whose IHDR (with a correct CRC) claims width x height.
std::string png_claiming(uint32_t width, uint32_t height) {
  std::string png = tide::io::encode_png(at::zeros({2, 2, 3}, at::kByte));
  // 8-byte signature, then the IHDR chunk: length (4), "IHDR" (4), width (4), height (4), 5 bytes, CRC (4).
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  put_be(png, 16, width, 4);
  put_be(png, 20, height, 4);
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17);
  put_be(png, 29, crc, 4);
  return png;
}

std::string error_of(const std::string& bytes) {
  try {
    tide::train::decode_rgb_image(bytes, "request image");
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ImageLimits, HugePngHeadersAreRefusedByName) {
  EXPECT_EQ(tide::train::decode_rgb_image(png_claiming(2, 2), "x").sizes(), (at::IntArrayRef{2, 2, 3}));
  for (const auto& [w, h] : {std::pair<uint32_t, uint32_t>{100000, 100000}, {65536, 8192}, {70000, 1}}) {
    const std::string message = error_of(png_claiming(w, h));
    EXPECT_NE(message.find("larger than tide reads"), std::string::npos) << w << "x" << h << ": " << message;
    EXPECT_NE(message.find("request image"), std::string::npos) << message;
  }
}

TEST(ImageLimits, HugeJpegHeadersAreRefusedByName) {
  if (!tide::built_with_jpeg()) GTEST_SKIP() << "built without libjpeg: JPEG inputs are refused as a whole";
  std::string jpeg = tide::testing::read_bytes(std::string(TIDE_TEST_DATA) + "/orange_2x2.jpg");
  const size_t sof = jpeg.find("\xFF\xC0", 2);
  ASSERT_NE(sof, std::string::npos);
  // SOF0: marker (2), length (2), precision (1), height (2), width (2).
  put_be(jpeg, sof + 5, 65500, 2);
  put_be(jpeg, sof + 7, 65500, 2);
  const std::string message = error_of(jpeg);
  EXPECT_NE(message.find("larger than tide reads"), std::string::npos) << message;
  EXPECT_NE(message.find("request image"), std::string::npos) << message;
}

TEST(DamagedJpeg, ACutFileIsAnErrorAndHarmlessDamageIsReadQuietly) {
  if (!tide::built_with_jpeg()) GTEST_SKIP() << "built without libjpeg: JPEG inputs are refused as a whole";
  const std::string jpeg = tide::testing::read_bytes(std::string(TIDE_TEST_DATA) + "/orange_2x2.jpg");
  const at::Tensor intact = tide::train::decode_rgb_image(jpeg, "x");
  ::testing::internal::CaptureStderr();
  // Cut inside the file: libjpeg would fill the rest with grey and print a warning; tide refuses it.
  const std::string message = error_of(jpeg.substr(0, jpeg.size() / 2));
  // Stray bytes before the end marker: a warning libjpeg would print; the picture is intact.
  std::string stray = jpeg;
  ASSERT_EQ(stray.substr(stray.size() - 2), "\xFF\xD9");
  stray.insert(stray.size() - 2, "\x12\x34");
  at::Tensor read_with_stray_bytes;
  EXPECT_NO_THROW(read_with_stray_bytes = tide::train::decode_rgb_image(stray, "x"));
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(message.find("request image"), std::string::npos) << message;
  EXPECT_NE(message.find("Premature end"), std::string::npos) << message;
  EXPECT_TRUE(read_with_stray_bytes.defined() && at::equal(read_with_stray_bytes, intact));
  EXPECT_EQ(printed, "") << "the JPEG reader printed to stderr";
}

TEST(ImageLimits, TheLimitItself) {
  using tide::io::check_image_size;
  EXPECT_NO_THROW(check_image_size(16384, 16384, "x"));
  EXPECT_NO_THROW(check_image_size(65536, 4096, "x"));
  EXPECT_THROW(check_image_size(16385, 16384, "x"), tide::Error);
  EXPECT_THROW(check_image_size(65537, 1, "x"), tide::Error);
  EXPECT_THROW(check_image_size(0, 5, "x"), tide::Error);
}

}  // namespace
