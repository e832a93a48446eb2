// CLIP's byte-level BPE tokenizer, id for id like transformers' CLIPTokenizer when ftfy is not
// installed (the usual diffusers setup): BasicTokenizer clean-up (control characters dropped,
// CJK characters split, NFC, lower case), CLIP's pre-tokenizer regex, then BPE with the merges.
#pragma once
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace tide::text {

class ClipTokenizer {
 public:
  // Loads vocab.json + merges.txt, and tokenizer_config.json / special_tokens_map.json /
  // added_tokens.json when present (model_max_length, default 77; bos/eos/unk/pad tokens given
  // as a string or as {"content": ...}; pad defaults to "<|endoftext|>"; saved added tokens).
  // Errors (missing file, bad JSON, bad merges line) throw tide::Error naming the file.
  static ClipTokenizer from_folder(const std::filesystem::path& dir);

  // <|startoftext|> + tokens + <|endoftext|>, neither truncated nor padded.
  std::vector<int64_t> encode(const std::string& text) const;

  // What the SD pipelines feed the text encoder: at most max_length - 2 text tokens between
  // BOS and EOS, then pad_id up to max_length.
  std::vector<int64_t> encode_padded(const std::string& text) const;

  // The text tokens alone (no BOS/EOS), as transformers' tokenize() + convert_tokens_to_ids().
  std::vector<int64_t> tokenize(const std::string& text) const;

  // Adds a token (a textual-inversion placeholder) with the next free id and returns that id.
  // Like transformers' added tokens it is cut out of the text (case-sensitive, anywhere) before
  // any other processing. Throws tide::Error if the token is empty or already known.
  // Not thread-safe: add tokens before encoding from several threads.
  int64_t add_token(const std::string& token);

  // Pads with `token` instead of the configured pad token (SDXL's second tokenizer pads with "!").
  void set_pad_token(const std::string& token) { pad_id_ = register_added(token); }

  // The id of a vocabulary or added token.
  std::optional<int64_t> token_id(const std::string& token) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int max_length() const { return max_length_; }
  // Number of ids, added tokens included (transformers' len(tokenizer)): the embedding table size.
  size_t vocab_size() const;

 private:
  ClipTokenizer() = default;
  // Registers a token that must never be split (special or added) under an existing or new id.
  int64_t register_added(const std::string& token);
  // Cuts `text` on added tokens (leftmost, longest first); pairs of (piece, is_added).
  std::vector<std::pair<std::string, bool>> split_on_added(const std::string& text) const;
  // transformers' CLIPTokenizer._tokenize for a piece without added tokens.
  void tokenize_piece(const std::string& text, std::vector<int64_t>& ids) const;
  std::vector<std::string> bpe(const std::string& word) const;
  int64_t lookup(const std::string& token) const;

  std::unordered_map<std::string, int64_t> encoder_;  // vocab.json
  std::unordered_map<std::string, int> merge_ranks_;  // "first second" -> rank
  std::unordered_map<std::string, int64_t> added_;    // special + added tokens -> id
  size_t max_added_len_ = 0;
  int64_t next_id_ = 0;
  int64_t bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
  int max_length_ = 77;

  // BPE results per byte-encoded word; encode() is const and may run on several threads.
  // A copy of the tokenizer starts with an empty cache of its own.
  struct BpeCache {
    BpeCache() = default;
    BpeCache(const BpeCache&) {}
    BpeCache& operator=(const BpeCache&) {
      std::lock_guard<std::mutex> lock(mutex);
      map.clear();
      return *this;
    }
    std::unordered_map<std::string, std::vector<std::string>> map;
    std::mutex mutex;
  };
  mutable BpeCache cache_;
};

}  // namespace tide::text
