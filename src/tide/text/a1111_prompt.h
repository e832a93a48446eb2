// AUTOMATIC1111's prompt syntax, as its webui (v1.10) reads it: attention weights `(text)` ×1.1,
// `[text]` ÷1.1, `(text:1.3)`, `\(` escapes, `BREAK`, and prompts of any length cut into chunks of
// 75 tokens, each encoded on its own between BOS and EOS (modules/prompt_parser.py and
// sd_hijack_clip.py). Text only: encoding the chunks is pipeline/a1111_conditioning.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tide/text/clip_tokenizer.h"

namespace tide::text {

// One piece of a parsed prompt: its text and the weight its tokens get. A `BREAK` between chunks is
// {"BREAK", -1}.
struct WeightedText {
  std::string text;
  double weight = 1.0;
  bool operator==(const WeightedText& o) const { return text == o.text && weight == o.weight; }
};

// prompt_parser.parse_prompt_attention: brackets multiply the weights of what they enclose (unclosed ones
// up to the end), runs of equal weight are merged, an empty prompt is {{"", 1}}. A weight that is not a
// number, like `(a:1.2.3)`, is a tide::Error (A1111 fails on it too).
std::vector<WeightedText> parse_prompt_attention(const std::string& prompt);

// 77 token ids (BOS, 75 text tokens padded with EOS, EOS) and the weight of each.
struct PromptChunk {
  std::vector<int64_t> tokens;
  std::vector<double> multipliers;
};

struct ChunkingOptions {
  int64_t start_id = 49406;  // BOS
  int64_t end_id = 49407;    // EOS, also what short chunks are padded with
  int64_t comma_id = 267;    // ",</w>"
  int comma_padding_backtrack = 20;  // A1111's default
};

struct ChunkedPrompt {
  std::vector<PromptChunk> chunks;
  int token_count = 0;  // what A1111 shows as "N/75": the prompt's length in tokens, chunk padding included
};

// sd_hijack_clip.tokenize_line: each parsed piece tokenized on its own, 75 tokens a chunk; BREAK starts a
// new chunk; a chunk that fills up moves the words after its last comma (when at most 20 tokens back) to
// the next one. Always at least one chunk.
ChunkedPrompt chunk_prompt(const std::vector<WeightedText>& parsed, const ClipTokenizer& tokenizer,
                           const ChunkingOptions& options);

}  // namespace tide::text
