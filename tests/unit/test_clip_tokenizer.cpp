// ClipTokenizer on a tiny vocabulary written to a temporary folder: no fixture files needed.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.h"
#include "tide/runtime/error.h"
#include "tide/text/clip_tokenizer.h"

namespace {

using tide::text::ClipTokenizer;
using Ids = std::vector<int64_t>;

// GPT-2 / CLIP bytes_to_unicode, written independently of the tokenizer: byte -> UTF-8 symbol.
std::vector<std::string> byte_symbols() {
  std::vector<std::string> out(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const unsigned cp = printable ? b : 256 + extra++;
    if (cp < 0x80) {
      out[b] = std::string(1, static_cast<char>(cp));
    } else {
      out[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return out;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Every byte symbol alone and with "</w>", a few merged words, then the special tokens.
class TinyTokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    nlohmann::json vocab = nlohmann::json::object();
    int64_t next = 0;
    for (const auto& s : byte_symbols()) vocab[s] = next++;
    for (const auto& s : byte_symbols()) vocab[s + "</w>"] = next++;
    for (const char* s : {"he", "ll", "hell", "hello</w>", "ca", "cat</w>"}) vocab[s] = next++;
    vocab["<|startoftext|>"] = next++;
    vocab["<|endoftext|>"] = next++;
    write_file(dir_ / "vocab.json", vocab.dump());
    write_file(dir_ / "merges.txt", "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\nc a\nca t</w>\n");
  }
  ClipTokenizer load() const { return ClipTokenizer::from_folder(dir_.path()); }
  int64_t id(const ClipTokenizer& tok, const std::string& token) const {
    auto found = tok.token_id(token);
    EXPECT_TRUE(found.has_value()) << token;
    return found.value_or(-1);
  }

  tide::testing::TempDir dir_;
};

TEST_F(TinyTokenizer, SpecialIdsAndDefaults) {
  const ClipTokenizer tok = load();
  EXPECT_EQ(tok.bos_id(), 518);
  EXPECT_EQ(tok.eos_id(), 519);
  EXPECT_EQ(tok.pad_id(), 519);  // pad defaults to <|endoftext|>
  EXPECT_EQ(tok.max_length(), 77);
  EXPECT_EQ(tok.vocab_size(), 520u);
}

TEST_F(TinyTokenizer, EmptyPromptIsBosEosThenPadding) {
  const ClipTokenizer tok = load();
  EXPECT_EQ(tok.encode(""), (Ids{518, 519}));
  EXPECT_EQ(tok.encode("   \t\n "), (Ids{518, 519}));
  const Ids padded = tok.encode_padded("");
  ASSERT_EQ(padded.size(), 77u);
  EXPECT_EQ(padded[0], 518);
  for (size_t i = 1; i < padded.size(); ++i) EXPECT_EQ(padded[i], 519) << i;
}

TEST_F(TinyTokenizer, BpeMergesAndEndOfWord) {
  const ClipTokenizer tok = load();
  const int64_t hello = id(tok, "hello</w>"), cat = id(tok, "cat</w>");
  EXPECT_EQ(tok.encode("hello cat"), (Ids{518, hello, cat, 519}));
  // "hellos": o is not word-final, so "hell o</w>" does not apply.
  EXPECT_EQ(tok.tokenize("hellos"), (Ids{id(tok, "hell"), id(tok, "o"), id(tok, "s</w>")}));
  EXPECT_EQ(tok.tokenize("a"), (Ids{id(tok, "a</w>")}));
}

TEST_F(TinyTokenizer, LowerCaseWhitespaceAndControlCharacters) {
  const ClipTokenizer tok = load();
  const Ids expected = tok.encode("hello cat");
  EXPECT_EQ(tok.encode("HeLLo CAT"), expected);
  EXPECT_EQ(tok.encode("  hello\t\n\r cat  "), expected);
  const char with_controls[] = "hel\x01lo\x7f c\0at";
  EXPECT_EQ(tok.encode(std::string(with_controls, sizeof(with_controls) - 1)), expected);  // controls dropped
  EXPECT_EQ(tok.encode("hello\u00a0cat"), expected);                          // no-break space is a space
  EXPECT_EQ(tok.encode("hel\u200blo cat"), expected);                         // format characters dropped
}

TEST_F(TinyTokenizer, PunctuationDigitsAndContractions) {
  const ClipTokenizer tok = load();
  const int64_t cat = id(tok, "cat</w>");
  EXPECT_EQ(tok.tokenize("cat,cat!!"), (Ids{cat, id(tok, ",</w>"), cat, id(tok, "!"), id(tok, "!</w>")}));
  EXPECT_EQ(tok.tokenize("cat's"), (Ids{cat, id(tok, "'"), id(tok, "s</w>")}));
  EXPECT_EQ(tok.tokenize("a12"), (Ids{id(tok, "a</w>"), id(tok, "1</w>"), id(tok, "2</w>")}));
  EXPECT_EQ(tok.tokenize("(cat)"), (Ids{id(tok, "(</w>"), cat, id(tok, ")</w>")}));
}

TEST_F(TinyTokenizer, UnicodeLowerCaseNormalizationAndCjk) {
  const ClipTokenizer tok = load();
  EXPECT_EQ(tok.encode("ÉCOLE Ångström"), tok.encode("école ångström"));
  EXPECT_EQ(tok.encode("ПРИВЕТ МИР"), tok.encode("привет мир"));
  // Python's final sigma: a capital sigma ending a word lower-cases to U+03C2.
  EXPECT_EQ(tok.encode("ΣΑΣ ΟΔΟΣ"), tok.encode("\u03c3\u03b1\u03c2 \u03bf\u03b4\u03bf\u03c2"));
  EXPECT_EQ(tok.encode("ＡＢＣ"), tok.encode("ａｂｃ"));
  EXPECT_EQ(tok.encode("cafe\u0301"), tok.encode("caf\u00e9"));  // NFC
  EXPECT_EQ(tok.encode("漢字"), tok.encode("漢 字"));             // CJK ideographs are words of their own
  EXPECT_NE(tok.encode("한국어"), tok.encode("한 국 어"));          // Hangul is not split
}

TEST_F(TinyTokenizer, ArbitraryBytesDoNotCrash) {
  const ClipTokenizer tok = load();
  const std::vector<std::string> inputs = {
      "\xff\xfe\xfd", "\x80\x80", "\xe2\x82", "\xf0\x9f\x98", "caf\xc3", "\xed\xa0\x80",  // invalid UTF-8
      "a dog 🐶 with a 🎩 hat ❤️", "東京の夜景, 漢字 and 한국어", "\u0301\u0302 leading marks",
      std::string(1000, '!'), std::string("\0\0\0", 3), "<|startoftext|><|endoftext|>", "\U0010FFFF\uE000\uFFFF",
  };
  for (const std::string& text : inputs) {
    const Ids ids = tok.encode(text);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids.front(), tok.bos_id());
    EXPECT_EQ(ids.back(), tok.eos_id());
    for (const int64_t i : ids) EXPECT_TRUE(i >= 0 && i < static_cast<int64_t>(tok.vocab_size())) << text;
    EXPECT_EQ(tok.encode_padded(text).size(), 77u);
  }
}

TEST_F(TinyTokenizer, LongPromptIsTruncatedKeepingBosAndEos) {
  const ClipTokenizer tok = load();
  std::string text;
  for (int i = 0; i < 100; ++i) text += "cat ";
  const int64_t cat = id(tok, "cat</w>");
  EXPECT_EQ(tok.encode(text).size(), 102u);
  const Ids padded = tok.encode_padded(text);
  ASSERT_EQ(padded.size(), 77u);
  EXPECT_EQ(padded.front(), tok.bos_id());
  EXPECT_EQ(padded.back(), tok.eos_id());
  for (size_t i = 1; i < 76; ++i) EXPECT_EQ(padded[i], cat) << i;
}

TEST_F(TinyTokenizer, SpecialTokensInTextAreKept) {
  const ClipTokenizer tok = load();
  const int64_t cat = id(tok, "cat</w>");
  EXPECT_EQ(tok.tokenize("<|startoftext|>cat<|endoftext|>"), (Ids{518, cat, 519}));
  EXPECT_EQ(tok.tokenize("<|ENDOFTEXT|>"), (Ids{519}));  // lower-cased, then the regex keeps it whole
}

TEST_F(TinyTokenizer, AddTokenIsMatchedBeforeBpe) {
  ClipTokenizer tok = load();
  const ClipTokenizer original = tok;
  const int64_t toy = tok.add_token("<cat-toy>");
  EXPECT_EQ(toy, 520);
  EXPECT_EQ(tok.vocab_size(), 521u);
  EXPECT_EQ(tok.token_id("<cat-toy>"), toy);
  const int64_t cat = id(tok, "cat</w>"), a = id(tok, "a</w>");
  EXPECT_EQ(tok.encode("a <cat-toy> cat"), (Ids{518, a, toy, cat, 519}));
  EXPECT_EQ(tok.tokenize("a<cat-toy>cat"), (Ids{a, toy, cat}));  // cut out anywhere, like transformers
  EXPECT_EQ(tok.tokenize("<CAT-TOY>").size(), 7u);  // case-sensitive: "<", "cat", "-", "t o y", ">" by BPE
  EXPECT_EQ(tok.add_token("<cat-toy>2"), 521);
  EXPECT_EQ(tok.tokenize("<cat-toy>2 <cat-toy>"), (Ids{521, toy}));  // longest match first
  EXPECT_FALSE(original.token_id("<cat-toy>").has_value());         // copies are independent

  EXPECT_THROW(tok.add_token("<cat-toy>"), tide::Error);
  EXPECT_THROW(tok.add_token("cat</w>"), tide::Error);  // already in the vocabulary
  EXPECT_THROW(tok.add_token(""), tide::Error);
}

TEST_F(TinyTokenizer, PadTokenAsObjectAndMaxLengthFromConfig) {
  write_file(dir_ / "tokenizer_config.json",
             R"({"model_max_length": 10, "pad_token": {"__type": "AddedToken", "content": "!", "lstrip": false}})");
  const ClipTokenizer tok = load();
  const int64_t bang = id(tok, "!");
  EXPECT_EQ(tok.pad_id(), bang);
  EXPECT_EQ(tok.max_length(), 10);
  const int64_t cat = id(tok, "cat</w>");
  EXPECT_EQ(tok.encode_padded("cat"), (Ids{518, cat, 519, bang, bang, bang, bang, bang, bang, bang}));
  // The pad token is an added token: every "!" is cut out whole (transformers does the same).
  EXPECT_EQ(tok.tokenize("cat!!"), (Ids{cat, bang, bang}));
  EXPECT_EQ(tok.encode_padded("cat cat cat cat cat cat cat cat cat").back(), 519);
}

TEST_F(TinyTokenizer, SpecialTokensMapWinsAndSavedAddedTokensLoad) {
  write_file(dir_ / "tokenizer_config.json", R"({"pad_token": "!"})");
  write_file(dir_ / "special_tokens_map.json", R"({"pad_token": {"content": "<|endoftext|>"}})");
  write_file(dir_ / "added_tokens.json", R"({"<sks>": 520})");
  const ClipTokenizer tok = load();
  EXPECT_EQ(tok.pad_id(), 519);
  EXPECT_EQ(tok.token_id("<sks>"), 520);
  EXPECT_EQ(tok.vocab_size(), 521u);
  EXPECT_EQ(tok.tokenize("a <sks>"), (Ids{id(tok, "a</w>"), 520}));
}

TEST_F(TinyTokenizer, FileErrorsNameTheFile) {
  auto expect_error = [&](const std::string& needle) {
    try {
      load();
      ADD_FAILURE() << "no error, expected one naming " << needle;
    } catch (const tide::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  write_file(dir_ / "merges.txt", "#version: 0.2\nh e\nthree symbols here\n");
  expect_error("merges.txt");
  std::filesystem::remove(dir_ / "merges.txt");
  expect_error("merges.txt");
  write_file(dir_ / "vocab.json", "{not json");
  expect_error("vocab.json");
  std::filesystem::remove(dir_ / "vocab.json");
  expect_error("vocab.json");
  EXPECT_THROW(ClipTokenizer::from_folder(dir_ / "missing"), tide::Error);
}

TEST_F(TinyTokenizer, BadConfigIsAnError) {
  write_file(dir_ / "tokenizer_config.json", R"({"pad_token": 5})");
  EXPECT_THROW(load(), tide::Error);
  write_file(dir_ / "tokenizer_config.json", "[1, 2]");
  EXPECT_THROW(load(), tide::Error);
}

}  // namespace
