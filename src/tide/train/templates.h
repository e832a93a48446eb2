// The caption templates of diffusers' textual_inversion.py (imagenet_templates_small and
// imagenet_style_templates_small), in the same order: a sample's template is chosen by index.
#pragma once
#include <string>
#include <vector>

namespace tide::train {

enum class LearnableProperty { object, style };

// "object" | "style"; anything else is a tide::Error listing both.
LearnableProperty parse_learnable_property(const std::string& name);

const std::vector<std::string>& caption_templates(LearnableProperty property);

// Replaces the "{}" of `caption_template` with `placeholder` (Python's str.format with one argument).
std::string format_caption(const std::string& caption_template, const std::string& placeholder);

}  // namespace tide::train
