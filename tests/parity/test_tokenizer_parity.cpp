// ClipTokenizer against transformers' CLIPTokenizer (reference fixtures): the 21 tokenizer cases
// and the token ids of every pipeline and component case.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/text/clip_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using tide::text::ClipTokenizer;
using Ids = std::vector<int64_t>;

std::string describe(const Ids& ids) {
  std::string s;
  for (const int64_t id : ids) s += std::to_string(id) + " ";
  return s;
}

TEST(TokenizerParity, ClipTokenizerCases) {
  TIDE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::from_folder(tide::testing::fixtures_dir() / "tokenizer-clip");
  const auto cases = tide::io::read_json(tide::testing::fixtures_dir() / "reference" / "tokenizer" /
                                         "clip_tokenizer_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 21u);
  int matched = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const Ids expected = c["ids_transformers"].get<Ids>();
    const Ids padded = c["transformers_padded_77"].get<Ids>();
    const Ids ids = tok.encode(text);
    EXPECT_EQ(ids, expected) << "text: " << text << "\n got:      " << describe(ids)
                             << "\n expected: " << describe(expected);
    EXPECT_EQ(tok.encode_padded(text), padded) << "text: " << text;
    matched += ids == expected;
  }
  EXPECT_EQ(matched, 21);
}

// The ids of one .npy file (shape [rows, 77]) against the tokenizer, row by row.
void expect_ids(const fs::path& file, const ClipTokenizer& tok, const std::string& text) {
  const at::Tensor t = tide::io::read_npy(file).to(at::kLong).contiguous();
  ASSERT_EQ(t.dim(), 2) << file;
  const Ids ids = tok.encode_padded(text);
  for (int64_t row = 0; row < t.size(0); ++row) {
    const int64_t* p = t[row].data_ptr<int64_t>();
    EXPECT_EQ(Ids(p, p + t.size(1)), ids) << file << " row " << row << ", text: \"" << text << "\"";
  }
}

// Every reference case of a pipeline family ("sd1_", "sd2_", "sdxl_"): prompt ids from input_ids /
// te_input_ids, negative-prompt ids from uncond_input_ids ("" when there is no negative prompt),
// with tokenizer for the plain files and tokenizer_2 for the "_2" ones.
int check_family(const std::string& prefix) {
  std::map<std::string, ClipTokenizer> tokenizers;  // by folder
  auto tokenizer = [&](const fs::path& dir) -> const ClipTokenizer& {
    auto it = tokenizers.find(dir.string());
    if (it == tokenizers.end()) it = tokenizers.emplace(dir.string(), ClipTokenizer::from_folder(dir)).first;
    return it->second;
  };
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(tide::testing::fixtures_dir() / "reference"))
    if (entry.path().filename().string().rfind(prefix, 0) == 0) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  int files = 0;
  for (const fs::path& dir : dirs) {
    SCOPED_TRACE(dir.filename().string());
    const auto config = tide::io::read_json(dir / "case.json");
    const fs::path pipeline = tide::testing::pipeline_dir(config["pipeline"].get<std::string>());
    const std::string prompt = config["prompt"].get<std::string>();
    const std::string negative = config.value("negative_prompt", nlohmann::json()).is_string()
                                     ? config["negative_prompt"].get<std::string>()
                                     : std::string();
    for (const std::string suffix : {"", "_2"}) {
      const ClipTokenizer* tok = nullptr;
      const fs::path tok_dir = pipeline / ("tokenizer" + suffix);
      for (const auto& [name, text] : {std::pair<std::string, std::string>{"input_ids", prompt},
                                       {"te_input_ids", prompt},
                                       {"uncond_input_ids", negative}}) {
        const fs::path file = dir / (name + suffix + ".npy");
        if (!fs::exists(file)) continue;
        if (!tok) tok = &tokenizer(tok_dir);
        expect_ids(file, *tok, text);
        ++files;
      }
    }
  }
  return files;
}

TEST(TokenizerParity, Sd1PipelineIds) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_GT(check_family("sd1_"), 0);
}

TEST(TokenizerParity, Sd2PipelineIdsPadWithExclamationMark) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_GT(check_family("sd2_"), 0);
  const ClipTokenizer tok = ClipTokenizer::from_folder(tide::testing::pipeline_dir("sd2-tiny") / "tokenizer");
  EXPECT_EQ(tok.pad_id(), 0);
}

TEST(TokenizerParity, SdxlPipelineIdsBothTokenizers) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_GT(check_family("sdxl_"), 0);
}

// A known transformers behaviour (diffusers issue #4153): with pad token "!" the pad token is also an
// added token, so every "!" of the prompt becomes id 0 on its own, unlike open_clip.
TEST(TokenizerParity, PadTokenExclamationMarkIsCutOutOfTheText) {
  TIDE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::from_folder(tide::testing::pipeline_dir("sdxl-tiny") / "tokenizer_2");
  Ids expected(77, 0);
  expected[0] = 49406;
  expected[7] = 49407;
  EXPECT_EQ(tok.encode_padded("! !! !!!"), expected);
  const ClipTokenizer plain = ClipTokenizer::from_folder(tide::testing::fixtures_dir() / "tokenizer-clip");
  EXPECT_EQ(plain.encode("! !! !!!"), (Ids{49406, 256, 748, 995, 49407}));  // open_clip's ids in that issue
}

}  // namespace
