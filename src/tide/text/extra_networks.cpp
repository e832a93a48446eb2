#include "tide/text/extra_networks.h"

#include <cctype>
#include <cstdlib>
#include <map>

#include "tide/runtime/error.h"

namespace tide::text {
namespace {

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

double parse_number(const std::string& value, const std::string& tag) {
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size())
    throw Error("prompt: '" + value + "' in " + tag + " is not a number");
  return v;
}

}  // namespace

PromptWithLoras extract_lora_tags(const std::string& prompt) {
  PromptWithLoras out;
  size_t i = 0;
  while (i < prompt.size()) {
    // `<(\w+):([^>]+)>`
    size_t j = i + 1;
    if (prompt[i] == '<') {
      while (j < prompt.size() && is_word_char(prompt[j])) ++j;
    }
    const size_t close = j < prompt.size() && prompt[j] == ':' ? prompt.find('>', j + 1) : std::string::npos;
    if (prompt[i] != '<' || j == i + 1 || close == std::string::npos || close == j + 1) {
      out.prompt += prompt[i++];
      continue;
    }
    const std::string kind = prompt.substr(i + 1, j - i - 1), tag = prompt.substr(i, close + 1 - i);
    if (kind != "lora" && kind != "lyco")
      throw Error("prompt: " + tag + ": tide applies <lora:...> tags only, not <" + kind + ":...>");
    std::vector<std::string> positional;
    std::map<std::string, std::string> named;
    size_t start = j + 1;
    while (true) {
      const size_t colon = prompt.find(':', start);
      const size_t end = colon == std::string::npos || colon > close ? close : colon;
      const std::string item = prompt.substr(start, end - start);
      const size_t eq = item.find('=');
      if (eq == std::string::npos) positional.push_back(item);
      else named[item.substr(0, eq)] = item.substr(eq + 1);
      if (end == close) break;
      start = end + 1;
    }
    if (positional.empty() || positional[0].empty()) throw Error("prompt: " + tag + " names no LoRA");
    LoraTag lora;
    lora.name = positional[0];
    lora.text_encoder_weight = positional.size() > 1 ? parse_number(positional[1], tag) : 1.0;
    if (named.count("te")) lora.text_encoder_weight = parse_number(named["te"], tag);
    lora.unet_weight = positional.size() > 2 ? parse_number(positional[2], tag) : lora.text_encoder_weight;
    if (named.count("unet")) lora.unet_weight = parse_number(named["unet"], tag);
    out.loras.push_back(lora);
    i = close + 1;
  }
  return out;
}

}  // namespace tide::text
