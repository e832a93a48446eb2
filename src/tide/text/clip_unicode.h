// The Unicode pieces CLIP's text clean-up needs, without ICU: UTF-8 conversion, Python's
// str.lower(), a practical NFC, and the CJK ideograph test of transformers' BasicTokenizer.
#pragma once
#include <string>

namespace tide::text::unicode {

// Invalid UTF-8 (bad or truncated sequences, overlong forms, surrogates) decodes to U+FFFD.
std::u32string decode_utf8(const std::string& text);
std::string encode_utf8(const std::u32string& text);
void append_utf8(std::string& out, char32_t c);

// One character's simple lower-case mapping (Unicode 14, as Python 3.11's str.lower()).
char32_t to_lower(char32_t c);
// Python's str.lower() of a word: simple mappings, U+0130 -> "i\u0307" and the Greek final sigma.
std::u32string python_lower(const std::u32string& word);

// unicodedata.normalize("NFC", text) (decomposition, mark reordering, composition) within the
// tables: Latin, Greek, Cyrillic, kana voicing marks and Hangul. Marks of other scripts count as
// starters and their compositions are not made; CJK compatibility ideographs stay as they are.
std::u32string nfc(const std::u32string& text);

// BasicTokenizer._is_chinese_char: the CJK ideograph blocks.
bool is_cjk(char32_t c);

}  // namespace tide::text::unicode
