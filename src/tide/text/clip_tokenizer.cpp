#include "tide/text/clip_tokenizer.h"

#include <re2/re2.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tide/io/json_file.h"
#include "tide/runtime/strings.h"
#include "tide/text/clip_unicode.h"
#include "tide/runtime/error.h"

namespace tide::text {
namespace {

using unicode::append_utf8;
using unicode::decode_utf8;
using unicode::encode_utf8;

// Splits a UTF-8 string into its characters.
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The text clean-up of transformers' BasicTokenizer(strip_accents=False, do_split_on_punc=False)
// and the regex of CLIPTokenizer.

// "text" -> words joined by single spaces, lower-cased (Python: " ".join(BasicTokenizer.tokenize(text))).
std::string basic_clean(const std::string& text) {
  // _clean_text: drop NUL, U+FFFD and every "C*" character (control, format, private use,
  // unassigned) except \t \n \r; those and every Zs space become a plain space.
  static const RE2 drop(R"([^\p{L}\p{M}\p{N}\p{P}\p{S}\p{Z}\t\n\r]|\x{FFFD})");
  static const RE2 space(R"([\t\n\r\p{Zs}])");
  std::string s = encode_utf8(decode_utf8(text));
  RE2::GlobalReplace(&s, drop, "");
  RE2::GlobalReplace(&s, space, " ");

  std::u32string spaced;  // _tokenize_chinese_chars: CJK ideographs become words of their own
  for (const char32_t c : decode_utf8(s)) {
    if (unicode::is_cjk(c)) {
      spaced += U' ';
      spaced += c;
      spaced += U' ';
    } else {
      spaced += c;
    }
  }
  const std::u32string normalized = unicode::nfc(spaced);

  // str.split() (what whitespace is left: spaces, U+2028, U+2029), lower() per word, " ".join.
  std::u32string joined, word;
  auto flush = [&] {
    if (word.empty()) return;
    if (!joined.empty()) joined += U' ';
    joined += unicode::python_lower(word);
    word.clear();
  };
  for (const char32_t c : normalized) {
    if (c == U' ' || c == 0x2028 || c == 0x2029)
      flush();
    else
      word += c;
  }
  flush();
  return encode_utf8(joined);
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others map to U+0100...
const std::vector<std::string>& byte_symbols() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[b], printable ? char32_t(b) : char32_t(256 + extra++));
    }
    return t;
  }();
  return table;
}

const char* const kStartOfText = "<|startoftext|>";
const char* const kEndOfText = "<|endoftext|>";

// A special token in tokenizer_config.json / special_tokens_map.json: "text" or {"content": "text", ...}.
std::optional<std::string> token_entry(const nlohmann::json& j, const std::filesystem::path& file) {
  if (j.is_null()) return std::nullopt;
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  throw Error(file.string() + ": a token must be a string or an object with a string \"content\", found " + j.dump());
}

nlohmann::json read_optional_json(const std::filesystem::path& path) {
  return std::filesystem::exists(path) ? io::read_json(path) : nlohmann::json::object();
}

}  // namespace

ClipTokenizer ClipTokenizer::from_folder(const std::filesystem::path& dir) {
  ClipTokenizer tok;
  const auto vocab_path = dir / "vocab.json";
  const nlohmann::json vocab = io::read_json(vocab_path);
  if (!vocab.is_object() || vocab.empty()) throw Error(vocab_path.string() + ": expected a non-empty object token -> id");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Error(vocab_path.string() + ": id of token '" + token + "' is not a non-negative integer: " + id.dump());
    tok.encoder_[token] = id.get<int64_t>();
    tok.next_id_ = std::max(tok.next_id_, id.get<int64_t>() + 1);
  }

  // merges.txt as CLIPTokenizer reads it: read().strip().split("\n")[1 : 49152 - 256 - 2 + 1],
  // i.e. the "#version" line is skipped and at most 48894 merges are used.
  const auto merges_path = dir / "merges.txt";
  std::ifstream in(merges_path, std::ios::binary);
  if (!in) throw Error("cannot open " + merges_path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = trim(buffer.str());  // Python's str.strip()
  std::istringstream lines(text);
  std::string line;
  constexpr int kMaxLine = 49152 - 256 - 2 + 1;
  for (int n = 0; n < kMaxLine && std::getline(lines, line); ++n) {
    if (n == 0) continue;
    std::istringstream parts(line);
    std::string a, b, extra;
    if (!(parts >> a >> b) || (parts >> extra))
      throw Error(merges_path.string() + ": line " + std::to_string(n + 1) + ": expected two symbols, found '" +
                  line + "'");
    tok.merge_ranks_[a + " " + b] = n - 1;  // a repeated pair keeps its last rank, as dict(zip(...)) does
  }

  const auto config_path = dir / "tokenizer_config.json";
  const auto map_path = dir / "special_tokens_map.json";
  const nlohmann::json config = read_optional_json(config_path);
  const nlohmann::json map = read_optional_json(map_path);
  if (!config.is_object()) throw Error(config_path.string() + ": expected a JSON object");
  if (!map.is_object()) throw Error(map_path.string() + ": expected a JSON object");

  // model_max_length: transformers writes a huge sentinel when it was never set; keep 77 then.
  if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
    const double n = config["model_max_length"].get<double>();
    if (n < 2) throw Error(config_path.string() + ": model_max_length must be at least 2");
    if (n <= 1e6) tok.max_length_ = static_cast<int>(n);
  }

  // Tokens saved with the tokenizer (textual inversion): "added_tokens_decoder" {id: {"content": ...}}
  // in tokenizer_config.json, or the older added_tokens.json {token: id}.
  auto add_saved = [&](const std::string& token, const nlohmann::json& id, const std::filesystem::path& file) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Error(file.string() + ": bad id for added token '" + token + "': " + id.dump());
    tok.added_[token] = id.get<int64_t>();
    tok.max_added_len_ = std::max(tok.max_added_len_, token.size());
    tok.next_id_ = std::max(tok.next_id_, id.get<int64_t>() + 1);
  };
  if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
    for (const auto& [id, entry] : config["added_tokens_decoder"].items()) {
      nlohmann::json parsed_id;
      try {
        parsed_id = std::stoll(id);
      } catch (const std::exception&) {
        throw Error(config_path.string() + ": added_tokens_decoder key is not an id: '" + id + "'");
      }
      if (auto content = token_entry(entry, config_path)) add_saved(*content, parsed_id, config_path);
    }
  } else if (std::filesystem::exists(dir / "added_tokens.json")) {
    const auto path = dir / "added_tokens.json";
    const nlohmann::json added = io::read_json(path);
    if (!added.is_object()) throw Error(path.string() + ": expected an object token -> id");
    for (const auto& [token, id] : added.items()) add_saved(token, id, path);
  }

  // Special tokens: special_tokens_map.json wins over tokenizer_config.json. Like transformers they
  // become added tokens too (cut out of the text before BPE): with pad "!" every "!" is id 0.
  auto special = [&](const char* key, const char* fallback) {
    for (const auto* source : {&map, &config}) {
      auto it = source->find(key);
      if (it != source->end())
        if (auto token = token_entry(*it, source == &map ? map_path : config_path)) return *token;
    }
    return std::string(fallback);
  };
  tok.bos_id_ = tok.register_added(special("bos_token", kStartOfText));
  tok.eos_id_ = tok.register_added(special("eos_token", kEndOfText));
  tok.unk_id_ = tok.register_added(special("unk_token", kEndOfText));
  tok.pad_id_ = tok.register_added(special("pad_token", kEndOfText));
  for (const auto* source : {&map, &config}) {
    auto it = source->find("additional_special_tokens");
    if (it == source->end() || !it->is_array()) continue;
    for (const auto& entry : *it)
      if (auto token = token_entry(entry, source == &map ? map_path : config_path)) tok.register_added(*token);
    break;
  }
  return tok;
}

int64_t ClipTokenizer::register_added(const std::string& token) {
  if (auto it = added_.find(token); it != added_.end()) return it->second;
  auto it = encoder_.find(token);
  const int64_t id = it != encoder_.end() ? it->second : next_id_++;
  added_[token] = id;
  max_added_len_ = std::max(max_added_len_, token.size());
  return id;
}

int64_t ClipTokenizer::add_token(const std::string& token) {
  if (token.empty()) throw Error("cannot add an empty token to the tokenizer");
  if (token_id(token)) throw Error("the tokenizer already contains the token '" + token + "'");
  return register_added(token);
}

std::optional<int64_t> ClipTokenizer::token_id(const std::string& token) const {
  if (auto it = added_.find(token); it != added_.end()) return it->second;
  if (auto it = encoder_.find(token); it != encoder_.end()) return it->second;
  return std::nullopt;
}

size_t ClipTokenizer::vocab_size() const { return static_cast<size_t>(next_id_); }

int64_t ClipTokenizer::lookup(const std::string& token) const {
  if (auto id = token_id(token)) return *id;
  return unk_id_;
}

std::vector<std::pair<std::string, bool>> ClipTokenizer::split_on_added(const std::string& text) const {
  std::vector<std::pair<std::string, bool>> pieces;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    size_t match = 0;
    for (size_t len = std::min(max_added_len_, text.size() - i); len > 0 && !match; --len)
      if (added_.count(text.substr(i, len))) match = len;
    if (!match) {
      ++i;
      continue;
    }
    if (i > start) pieces.emplace_back(text.substr(start, i - start), false);
    pieces.emplace_back(text.substr(i, match), true);
    i += match;
    start = i;
  }
  if (start < text.size()) pieces.emplace_back(text.substr(start), false);
  return pieces;
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& word) const {
  {
    std::lock_guard<std::mutex> lock(cache_.mutex);
    if (auto it = cache_.map.find(word); it != cache_.map.end()) return it->second;
  }
  std::vector<std::string> symbols;
  if (word == kStartOfText || word == kEndOfText) {
    symbols.push_back(word);  // CLIPTokenizer's cache is seeded with these two, unchanged
  } else {
    symbols = utf8_chars(word);
    symbols.back() += "</w>";
  }
  while (symbols.size() > 1) {
    // The adjacent pair with the lowest merge rank, then merge all its occurrences left to right.
    int best = -1;
    std::string best_key;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_ranks_.find(symbols[i] + " " + symbols[i + 1]);
      if (it != merge_ranks_.end() && (best < 0 || it->second < best)) {
        best = it->second;
        best_key = it->first;
      }
    }
    if (best < 0) break;
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] + " " + symbols[i + 1] == best_key) {
        merged.push_back(symbols[i] + symbols[i + 1]);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  std::lock_guard<std::mutex> lock(cache_.mutex);
  if (cache_.map.size() > 100000) cache_.map.clear();  // bounded memory for long-running services
  cache_.map.emplace(word, symbols);
  return symbols;
}

void ClipTokenizer::tokenize_piece(const std::string& text, std::vector<int64_t>& ids) const {
  // CLIPTokenizer.pat, compiled with re.IGNORECASE. On lower-cased text that flag only matters
  // for the literal alternatives ("'\u017F" matches "'s") and for U+0345, which folds to a letter:
  // Python's regex then matches it with no alternative, so it is dropped.
  static const RE2 pattern(
      R"(((?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}\x{345}]+))");
  const std::string clean = basic_clean(text);
  re2::StringPiece input(clean);
  std::string piece;
  const auto& symbols = byte_symbols();
  while (RE2::FindAndConsume(&input, pattern, &piece)) {
    std::string word;
    for (const char ch : piece) word += symbols[static_cast<unsigned char>(ch)];
    for (const std::string& token : bpe(word)) ids.push_back(lookup(token));
  }
}

std::vector<int64_t> ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const auto& [piece, is_added] : split_on_added(text)) {
    if (is_added)
      ids.push_back(added_.at(piece));
    else
      tokenize_piece(piece, ids);
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids{bos_id_};
  const std::vector<int64_t> body = tokenize(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode_padded(const std::string& text) const {
  std::vector<int64_t> body = tokenize(text);
  body.resize(std::min(body.size(), static_cast<size_t>(max_length_ - 2)));
  std::vector<int64_t> ids{bos_id_};
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(eos_id_);
  ids.resize(static_cast<size_t>(max_length_), pad_id_);
  return ids;
}

}  // namespace tide::text
