// tide generate --prompts: many pictures from a file, the same with one process or two MPI ranks, a bad line
// reported while the others finish, --resume skipping what exists.
#include <gtest/gtest.h>

#include <fstream>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/runtime/build_features.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::quote;
using tide::testing::run_command;
using tide::testing::run_tide;
using tide::testing::TempDir;

const char* kMpirun = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe";
// mpirun to start ranks, and a tide built with MPI (TIDE_WITH_MPI) to be them.
bool have_mpirun() { return tide::built_with_mpi() && std::system("command -v mpirun > /dev/null 2>&1") == 0; }

class CliPromptFile : public tide::testing::TinyPipelineSuite {
 protected:
  static fs::path write_prompts(const fs::path& dir, const std::string& text) {
    std::ofstream(dir / "prompts.txt") << text;
    return dir / "prompts.txt";
  }
  std::string batch(const fs::path& prompts, const fs::path& out, const std::string& extra = "") {
    return "generate --model " + quote(model()) + " --prompts " + quote(prompts) + " --output-dir " + quote(out) +
           " --seed 10 --steps 2 --width 32 --height 32 --threads 1 " + extra;
  }
  static at::Tensor pixels(const fs::path& png) { return tide::io::read_png(png).rgb8; }
};

TEST_F(CliPromptFile, LinesBecomeNumberedPicturesWithTheirOwnSeeds) {
  TempDir dir;
  const auto prompts = write_prompts(dir.path(), "# a comment\na red robot\n\n"
                                                 "{\"prompt\": \"a blue robot\", \"seed\": 99, \"name\": \"blue\"}\n"
                                                 "{\"prompt\": \"two cats\", \"num_images\": 2, \"width\": 48}\n");
  auto run = run_tide(batch(prompts, dir / "out"));
  ASSERT_EQ(run.code, 0) << run.output;
  for (const char* name : {"00000.png", "blue.png", "00002-0.png", "00002-1.png"})
    EXPECT_TRUE(fs::exists(dir / "out" / name)) << name << "\n" << run.output;
  EXPECT_EQ(pixels(dir / "out" / "00002-0.png").size(1), 48);
  // Line 0 is what --prompt makes with seed 10 + 0; the named line keeps its own seed.
  ASSERT_EQ(run_tide("generate --model " + quote(model()) + " --prompt 'a red robot' --seed 10 --steps 2 --width 32 "
                     "--height 32 --threads 1 --output " + quote(dir / "single.png")).code, 0);
  EXPECT_TRUE(at::equal(pixels(dir / "out" / "00000.png"), pixels(dir / "single.png")));
  EXPECT_NE(tide::io::read_png(dir / "out" / "blue.png").text.at("parameters").find("Seed: 99"), std::string::npos);
}

// int8 weights: a batch without per-line LoRAs keeps them only packed once packed, and later lines with other
// sizes and batch sizes still make what --prompt makes for them.
TEST_F(CliPromptFile, Int8BatchesMakeTheSinglePromptPictures) {
  TempDir dir;
  const auto prompts = write_prompts(dir.path(), "a red robot\n{\"prompt\": \"two cats\", \"num_images\": 2, \"width\": 48}\n");
  auto run = run_tide(batch(prompts, dir / "out", "--weights int8"));
  ASSERT_EQ(run.code, 0) << run.output;
  auto single = [&](const std::string& args, const fs::path& png) {
    auto r = run_tide("generate --model " + quote(model()) + " --weights int8 --steps 2 --height 32 --threads 1 " + args +
                      " --output " + quote(png));
    ASSERT_EQ(r.code, 0) << r.output;
  };
  single("--prompt 'a red robot' --seed 10 --width 32", dir / "robot.png");
  single("--prompt 'two cats' --seed 11 --width 48 --num-images 2", dir / "cats.png");
  EXPECT_TRUE(at::equal(pixels(dir / "out" / "00000.png"), pixels(dir / "robot.png")));
  EXPECT_TRUE(at::equal(pixels(dir / "out" / "00001-1.png"), pixels(dir / "cats-1.png")));
}

TEST_F(CliPromptFile, ABadLineIsReportedAndTheOthersFinishThenResumeSkips) {
  TempDir dir;
  const auto prompts = write_prompts(dir.path(), "first\n{\"prompt\": 3}\n{not json\n"
                                                 "{\"prompt\": \"odd\", \"width\": 33}\nlast\n");
  auto run = run_tide(batch(prompts, dir / "out"));
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_NE(run.output.find("line 2"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("line 3"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("multiples of"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("2 made"), std::string::npos) << run.output;
  EXPECT_TRUE(fs::exists(dir / "out" / "00000.png"));
  EXPECT_TRUE(fs::exists(dir / "out" / "00004.png"));
  const auto before = fs::last_write_time(dir / "out" / "00000.png");
  auto again = run_tide(batch(prompts, dir / "out", "--resume"));
  EXPECT_NE(again.output.find("0 made, 2 skipped"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("[1/5] line 1 (00000): skipped, its pictures exist"), std::string::npos) << again.output;
  EXPECT_EQ(fs::last_write_time(dir / "out" / "00000.png"), before);
  auto both = run_tide("generate --model " + quote(model()) + " --prompt x --prompts " + quote(prompts));
  EXPECT_EQ(both.code, 1);
  EXPECT_NE(both.output.find("not both"), std::string::npos) << both.output;
}

// With the a1111 syntax a line's <lora:> tags apply to that line only: its picture is the one --prompt makes
// with the same tag, the next line's is the LoRA-free one, and an unknown name fails that line alone.
TEST(CliPromptFileLoras, TagsApplyPerLine) {
  TIDE_REQUIRE_FIXTURES();
  TempDir dir;
  const fs::path loras = dir / "loras";
  fs::create_directories(loras);
  fs::copy_file(tide::testing::feature_case("lora", "lora_sd1_kohya_m1") / "lora.safetensors", loras / "knight.safetensors");
  std::ofstream(dir / "prompts.txt") << "a knight <lora:knight:0.7>\na knight\na knight <lora:nobody:1>\n";
  const std::string common = "generate --model " + quote(tide::testing::pipeline_dir("sd1-tiny")) +
                             " --prompt-syntax a1111 --lora-dir " + quote(loras) +
                             " --seed 40 --steps 3 --width 64 --height 64 --threads 1 ";
  auto batch = run_tide(common + "--prompts " + quote(dir / "prompts.txt") + " --output-dir " + quote(dir / "out"));
  EXPECT_EQ(batch.code, 1) << batch.output;  // the third line fails
  EXPECT_NE(batch.output.find("line 3 (00002): "), std::string::npos) << batch.output;
  EXPECT_NE(batch.output.find("nobody"), std::string::npos) << batch.output;
  EXPECT_NE(batch.output.find("2 made"), std::string::npos) << batch.output;
  ASSERT_EQ(run_tide(common + "--prompt 'a knight <lora:knight:0.7>' --output " + quote(dir / "tagged.png")).code, 0);
  ASSERT_EQ(run_tide(common + "--prompt 'a knight' --seed 41 --output " + quote(dir / "plain.png")).code, 0);
  const auto tagged = tide::io::read_png(dir / "out" / "00000.png");
  EXPECT_TRUE(at::equal(tagged.rgb8, tide::io::read_png(dir / "tagged.png").rgb8));
  EXPECT_NE(tagged.text.at("parameters").find("<lora:knight:0.7>"), std::string::npos);
  const auto plain = tide::io::read_png(dir / "out" / "00001.png");
  EXPECT_TRUE(at::equal(plain.rgb8, tide::io::read_png(dir / "plain.png").rgb8));
  EXPECT_EQ(plain.text.at("parameters").find("<lora:"), std::string::npos);
}

TEST_F(CliPromptFile, TwoRanksMakeTheSamePicturesAsOne) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed or tide built without MPI";
  TempDir dir;
  const auto prompts = write_prompts(dir.path(), "a\nb\nc\n");
  ASSERT_EQ(run_tide(batch(prompts, dir / "one")).code, 0);
  auto two = run_command(std::string(kMpirun) + " -n 2 " + TIDE_BINARY + " " + batch(prompts, dir / "two"));
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("over 2 processes"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("3 made"), std::string::npos) << two.output;
  // Rank 0 prints every rank's lines, numbered in the order they finished; rank 1 prints none of its own.
  EXPECT_NE(two.output.find("line 2 (00001): done (rank 1)"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("line 1 (00000): done (rank 0)"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("[3/3] "), std::string::npos) << two.output;
  for (const char* name : {"00000.png", "00001.png", "00002.png"})
    EXPECT_TRUE(at::equal(pixels(dir / "one" / name), pixels(dir / "two" / name))) << name;
}

}  // namespace
