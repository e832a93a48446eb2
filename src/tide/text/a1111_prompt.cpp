#include "tide/text/a1111_prompt.h"

#include <cstdlib>

#include "tide/runtime/error.h"

namespace tide::text {
namespace {

// The code point starting at byte `i` of UTF-8 `s` and its length (a stray byte counts as itself).
std::pair<uint32_t, size_t> code_point_at(const std::string& s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
  if (n == 1 || i + n > s.size()) return {b, 1};
  uint32_t cp = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return {cp, n};
}

// The code point that ends just before byte `i`.
std::pair<uint32_t, size_t> code_point_before(const std::string& s, size_t i) {
  size_t start = i - 1;
  while (start > 0 && i - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  auto [cp, n] = code_point_at(s, start);
  if (start + n != i) return {static_cast<unsigned char>(s[i - 1]), 1};
  return {cp, n};
}

// Python's `\s` for str patterns.
bool is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's `\w` for str patterns (letters and digits of any script, and `_`), closely enough for telling
// whether `BREAK` stands on its own: punctuation, symbol and emoji blocks are not word characters.
bool is_word(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  if (is_space(c)) return false;
  if (c < 0x100) return c == 0xAA || c == 0xB5 || c == 0xBA || (c >= 0xC0 && c != 0xD7 && c != 0xF7);
  if (c >= 0x0300 && c <= 0x036F) return false;  // combining marks
  if (c >= 0x2000 && c <= 0x2BFF) return false;  // punctuation, symbols, arrows, shapes
  if (c >= 0x3000 && c <= 0x303F) return false;  // CJK punctuation
  if (c >= 0xFE00 && c <= 0xFE0F) return false;  // variation selectors
  if (c >= 0xFF00 && c <= 0xFF0F) return false;  // full-width punctuation
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;  // emoji
  return true;
}

// re.split(r"\s*\bBREAK\b\s*", text).
std::vector<std::string> split_on_break(const std::string& text) {
  std::vector<std::string> parts;
  size_t from = 0, search = 0;
  while (true) {
    size_t q = text.find("BREAK", search);
    if (q == std::string::npos) break;
    const bool boundary_before = q == 0 || !is_word(code_point_before(text, q).first);
    const bool boundary_after = q + 5 == text.size() || !is_word(code_point_at(text, q + 5).first);
    if (!boundary_before || !boundary_after) {
      search = q + 1;
      continue;
    }
    size_t start = q;
    while (start > from) {
      auto [cp, n] = code_point_before(text, start);
      if (!is_space(cp)) break;
      start -= n;
    }
    size_t end = q + 5;
    while (end < text.size()) {
      auto [cp, n] = code_point_at(text, end);
      if (!is_space(cp)) break;
      end += n;
    }
    parts.push_back(text.substr(from, start - from));
    from = search = end;
  }
  parts.push_back(text.substr(from));
  return parts;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python's float() of what `[+-]?[.\d]+` matched; anything else it rejects is an error here too.
double parse_weight(const std::string& s) {
  size_t i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  size_t digits = 0, dots = 0;
  for (size_t k = i; k < s.size(); ++k) (s[k] == '.' ? dots : digits) += 1;
  if (digits == 0 || dots > 1) throw Error("prompt: '" + s + "' in '(text:" + s + ")' is not a number");
  return std::strtod(s.c_str(), nullptr);
}

}  // namespace

std::vector<WeightedText> parse_prompt_attention(const std::string& prompt) {
  std::vector<WeightedText> res;
  std::vector<size_t> round_brackets, square_brackets;
  const double round_multiplier = 1.1, square_multiplier = 1 / 1.1;
  auto multiply_range = [&](size_t start, double multiplier) {
    for (size_t p = start; p < res.size(); ++p) res[p].weight *= multiplier;
  };
  auto plain = [&](const std::string& text) {
    const auto parts = split_on_break(text);
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k > 0) res.push_back({"BREAK", -1});
      res.push_back({parts[k], 1.0});
    }
  };
  auto special = [](char c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; };

  // The alternatives of A1111's re_attention, tried in its order at each position.
  size_t i = 0;
  const size_t n = prompt.size();
  while (i < n) {
    const char c = prompt[i];
    if (c == '\\') {
      const bool escape = i + 1 < n && (prompt[i + 1] == '(' || prompt[i + 1] == ')' || prompt[i + 1] == '[' ||
                                        prompt[i + 1] == ']' || prompt[i + 1] == '\\');
      // `\(` `\)` `\[` `\]` `\\` are the character itself; a lone `\` is nothing.
      res.push_back({escape ? prompt.substr(i + 1, 1) : std::string(), 1.0});
      i += escape ? 2 : 1;
    } else if (c == '(') {
      round_brackets.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square_brackets.push_back(res.size());
      ++i;
    } else if (c == ':') {
      // `:\s*([+-]?[.\d]+)\s*\)`
      auto skip_spaces = [&](size_t k) {
        while (k < n) {
          auto [cp, len] = code_point_at(prompt, k);
          if (!is_space(cp)) break;
          k += len;
        }
        return k;
      };
      size_t j = skip_spaces(i + 1);
      const size_t sign_start = j;
      if (j < n && (prompt[j] == '+' || prompt[j] == '-')) ++j;
      const size_t number_start = j;
      while (j < n && (is_digit(prompt[j]) || prompt[j] == '.')) ++j;
      const size_t number_end = j;
      j = skip_spaces(j);
      if (number_end > number_start && j < n && prompt[j] == ')') {
        const std::string weight = prompt.substr(sign_start, number_end - sign_start);
        if (!round_brackets.empty()) {
          const double w = parse_weight(weight);
          multiply_range(round_brackets.back(), w);
          round_brackets.pop_back();
        } else {
          plain(prompt.substr(i, j + 1 - i));
        }
        i = j + 1;
      } else {
        plain(":");
        ++i;
      }
    } else if (c == ')' && !round_brackets.empty()) {
      multiply_range(round_brackets.back(), round_multiplier);
      round_brackets.pop_back();
      ++i;
    } else if (c == ']' && !square_brackets.empty()) {
      multiply_range(square_brackets.back(), square_multiplier);
      square_brackets.pop_back();
      ++i;
    } else if (c == ')' || c == ']') {
      plain(std::string(1, c));
      ++i;
    } else {
      size_t j = i;
      while (j < n && !special(prompt[j])) ++j;
      plain(prompt.substr(i, j - i));
      i = j;
    }
  }
  for (size_t pos : round_brackets) multiply_range(pos, round_multiplier);
  for (size_t pos : square_brackets) multiply_range(pos, square_multiplier);
  if (res.empty()) res.push_back({"", 1.0});

  // Merge runs of identical weights.
  for (size_t k = 0; k + 1 < res.size();) {
    if (res[k].weight == res[k + 1].weight) {
      res[k].text += res[k + 1].text;
      res.erase(res.begin() + static_cast<std::ptrdiff_t>(k) + 1);
    } else {
      ++k;
    }
  }
  return res;
}

ChunkedPrompt chunk_prompt(const std::vector<WeightedText>& parsed, const ClipTokenizer& tokenizer,
                           const ChunkingOptions& options) {
  constexpr size_t kChunkLength = 75;
  ChunkedPrompt out;
  PromptChunk chunk;
  int last_comma = -1;
  auto next_chunk = [&](bool is_last) {
    out.token_count += is_last ? static_cast<int>(chunk.tokens.size()) : static_cast<int>(kChunkLength);
    while (chunk.tokens.size() < kChunkLength) {
      chunk.tokens.push_back(options.end_id);
      chunk.multipliers.push_back(1.0);
    }
    chunk.tokens.insert(chunk.tokens.begin(), options.start_id);
    chunk.tokens.push_back(options.end_id);
    chunk.multipliers.insert(chunk.multipliers.begin(), 1.0);
    chunk.multipliers.push_back(1.0);
    last_comma = -1;
    out.chunks.push_back(std::move(chunk));
    chunk = PromptChunk();
  };

  for (const auto& piece : parsed) {
    if (piece.text == "BREAK" && piece.weight == -1) {
      next_chunk(false);
      continue;
    }
    for (const int64_t token : tokenizer.tokenize(piece.text)) {
      if (token == options.comma_id) {
        last_comma = static_cast<int>(chunk.tokens.size());
      } else if (options.comma_padding_backtrack != 0 && chunk.tokens.size() == kChunkLength && last_comma != -1 &&
                 static_cast<int>(chunk.tokens.size()) - last_comma <= options.comma_padding_backtrack) {
        // The chunk is full and a comma is near: the words after it go to the next chunk.
        const size_t cut = static_cast<size_t>(last_comma) + 1;
        std::vector<int64_t> moved_tokens(chunk.tokens.begin() + cut, chunk.tokens.end());
        std::vector<double> moved_multipliers(chunk.multipliers.begin() + cut, chunk.multipliers.end());
        chunk.tokens.resize(cut);
        chunk.multipliers.resize(cut);
        next_chunk(false);
        chunk.tokens = std::move(moved_tokens);
        chunk.multipliers = std::move(moved_multipliers);
      }
      if (chunk.tokens.size() == kChunkLength) next_chunk(false);
      chunk.tokens.push_back(token);
      chunk.multipliers.push_back(piece.weight);
    }
  }
  if (!chunk.tokens.empty() || out.chunks.empty()) next_chunk(true);
  return out;
}

}  // namespace tide::text
