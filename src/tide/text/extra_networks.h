// AUTOMATIC1111's extra-network tags in prompts, `<lora:NAME:WEIGHT>` (modules/extra_networks.py and the
// built-in Lora extension): cut out of the prompt before it is read, and applied as LoRAs.
#pragma once
#include <string>
#include <vector>

namespace tide::text {

// One `<lora:NAME[:TE[:UNET]]>` tag (also `te=` / `unet=` named arguments, and the older `<lyco:...>`).
struct LoraTag {
  std::string name;            // looked up by file name in the LoRA folder
  double text_encoder_weight = 1.0;
  double unet_weight = 1.0;    // the text encoders' weight unless given
};

struct PromptWithLoras {
  std::string prompt;          // the prompt without its tags
  std::vector<LoraTag> loras;  // in the order they appear
};

// Removes every `<kind:args>` tag (A1111's `<(\w+):([^>]+)>`) from the prompt. lora/lyco tags are returned;
// another kind (hypernet, ...) or a weight that is not a number is a tide::Error naming the tag.
PromptWithLoras extract_lora_tags(const std::string& prompt);

}  // namespace tide::text
