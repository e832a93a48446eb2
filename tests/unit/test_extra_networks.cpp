// `<lora:NAME:WEIGHT>` tags as AUTOMATIC1111 reads them out of prompts.
#include <gtest/gtest.h>

#include "tide/runtime/error.h"
#include "tide/text/extra_networks.h"

namespace {
using tide::text::extract_lora_tags;

TEST(ExtraNetworks, LoraTagsAreCutOutOfThePrompt) {
  const auto p = extract_lora_tags("a castle <lora:pixel-art:0.8>, blue sky <lora:detail>");
  EXPECT_EQ(p.prompt, "a castle , blue sky ");
  ASSERT_EQ(p.loras.size(), 2u);
  EXPECT_EQ(p.loras[0].name, "pixel-art");
  EXPECT_EQ(p.loras[0].text_encoder_weight, 0.8);
  EXPECT_EQ(p.loras[0].unet_weight, 0.8);
  EXPECT_EQ(p.loras[1].name, "detail");
  EXPECT_EQ(p.loras[1].unet_weight, 1.0);
}

TEST(ExtraNetworks, SeparateTextEncoderAndUNetWeights) {
  auto p = extract_lora_tags("<lora:a:0.5:0.9>");
  EXPECT_EQ(p.loras[0].text_encoder_weight, 0.5);
  EXPECT_EQ(p.loras[0].unet_weight, 0.9);
  p = extract_lora_tags("x<lyco:b:unet=0.3:te=0.2>y");
  EXPECT_EQ(p.prompt, "xy");
  EXPECT_EQ(p.loras[0].text_encoder_weight, 0.2);
  EXPECT_EQ(p.loras[0].unet_weight, 0.3);
}

TEST(ExtraNetworks, WhatIsNoTagStaysText) {
  for (const char* text : {"a <b> c", "a < lora:x> c", "a <lora:> c", "<lora:x", "1 < 2 > 0", "<-:x>"})
    EXPECT_EQ(extract_lora_tags(text).prompt, text) << text;
}

TEST(ExtraNetworks, BadTagsAreErrors) {
  EXPECT_THROW(extract_lora_tags("<lora:x:heavy>"), tide::Error);
  EXPECT_THROW(extract_lora_tags("<hypernet:x:1>"), tide::Error);
  EXPECT_THROW(extract_lora_tags("<lora::1>"), tide::Error);
}

}  // namespace
