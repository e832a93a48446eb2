#include "tide/train/templates.h"

#include "tide/runtime/error.h"

namespace tide::train {

LearnableProperty parse_learnable_property(const std::string& name) {
  if (name == "object") return LearnableProperty::object;
  if (name == "style") return LearnableProperty::style;
  throw Error("--learnable_property must be 'object' or 'style', got '" + name + "'");
}

const std::vector<std::string>& caption_templates(LearnableProperty property) {
  static const std::vector<std::string> object = {
      "a photo of a {}",
      "a rendering of a {}",
      "a cropped photo of the {}",
      "the photo of a {}",
      "a photo of a clean {}",
      "a photo of a dirty {}",
      "a dark photo of the {}",
      "a photo of my {}",
      "a photo of the cool {}",
      "a close-up photo of a {}",
      "a bright photo of the {}",
      "a cropped photo of a {}",
      "a photo of the {}",
      "a good photo of the {}",
      "a photo of one {}",
      "a close-up photo of the {}",
      "a rendition of the {}",
      "a photo of the clean {}",
      "a rendition of a {}",
      "a photo of a nice {}",
      "a good photo of a {}",
      "a photo of the nice {}",
      "a photo of the small {}",
      "a photo of the weird {}",
      "a photo of the large {}",
      "a photo of a cool {}",
      "a photo of a small {}",
  };
  static const std::vector<std::string> style = {
      "a painting in the style of {}",
      "a rendering in the style of {}",
      "a cropped painting in the style of {}",
      "the painting in the style of {}",
      "a clean painting in the style of {}",
      "a dirty painting in the style of {}",
      "a dark painting in the style of {}",
      "a picture in the style of {}",
      "a cool painting in the style of {}",
      "a close-up painting in the style of {}",
      "a bright painting in the style of {}",
      "a cropped painting in the style of {}",
      "a good painting in the style of {}",
      "a close-up painting in the style of {}",
      "a rendition in the style of {}",
      "a nice painting in the style of {}",
      "a small painting in the style of {}",
      "a weird painting in the style of {}",
      "a large painting in the style of {}",
  };
  return property == LearnableProperty::style ? style : object;
}

std::string format_caption(const std::string& caption_template, const std::string& placeholder) {
  const size_t at = caption_template.find("{}");
  if (at == std::string::npos) return caption_template;
  return caption_template.substr(0, at) + placeholder + caption_template.substr(at + 2);
}

}  // namespace tide::train
