// A1111 sampler / schedule names onto tide's schedulers, and infotexts written and read back.
#include <gtest/gtest.h>

#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"
#include "tide/server/a1111_samplers.h"
#include "tide/server/infotext.h"

namespace {
using tide::server::choose_sampler;

TEST(ServerSamplers, A1111NamesMapOntoTidesSchedulers) {
  struct Case {
    std::string sampler, schedule, scheduler;
    bool karras;
  };
  const std::vector<Case> cases = {
      {"Euler a", "", "euler-a", false},         {"k_euler_a", "Automatic", "euler-a", false},
      {"Euler", "", "euler", false},             {"Euler", "Karras", "euler", true},
      {"LMS", "uniform", "lms", false},          {"LMS Karras", "", "lms", true},
      {"Heun", "", "heun", false},               {"DPM++ 2M", "", "dpm++2m", true},
      {"DPM++ 2M", "Automatic", "dpm++2m", true}, {"DPM++ 2M", "Uniform", "dpm++2m", false},
      {"DPM++ 2M Karras", "", "dpm++2m", true},  {"dpm++ 2m karras", "karras", "dpm++2m", true},
      {"DDIM", "", "ddim", false},               {"PLMS", "", "pndm", false},
      {"UniPC", "", "unipc", false},             {"DDPM", "", "ddpm", false},
      {"", "", "euler", false},                  {"dpm++3m", "Karras", "dpm++3m", true},
  };
  const auto names = tide::schedulers::scheduler_names();
  for (const auto& c : cases) {
    const auto choice = choose_sampler(c.sampler, c.schedule);
    EXPECT_EQ(choice.scheduler, c.scheduler) << c.sampler << " / " << c.schedule;
    EXPECT_EQ(choice.karras, c.karras) << c.sampler << " / " << c.schedule;
    EXPECT_EQ(choice.schedule_label, c.karras ? "Karras" : "") << c.sampler;
    EXPECT_NE(std::find(names.begin(), names.end(), choice.scheduler), names.end());
  }
  for (const auto& s : tide::server::a1111_samplers())
    EXPECT_NE(std::find(names.begin(), names.end(), s.scheduler), names.end()) << s.name;
}

TEST(ServerSamplers, NamesTideLacksAreErrorsThatListWhatExists) {
  for (const auto& [sampler, schedule, text] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"DPM++ SDE", "", "Euler a, Euler, LMS"},
           {"DPM++ 2M SDE Karras", "", "not found"},
           {"Euler a", "Karras", "no Karras schedule"},
           {"DDIM Karras", "", "no Karras schedule"},
           {"Euler", "Exponential", "Automatic, Uniform, Karras"},
           {"DPM++ 2M Karras", "Uniform", "contradicts"}}) {
    try {
      choose_sampler(sampler, schedule);
      ADD_FAILURE() << sampler << " / " << schedule << " was accepted";
    } catch (const tide::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  }
}

TEST(ServerInfotext, WritesA1111sFormAndReadsItBack) {
  tide::pipeline::GenerationRequest r;
  r.prompt = "a fox, (red:1.2)\nsecond line";
  r.negative_prompt = "blurry";
  r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
  r.steps = 20;
  r.guidance = 7;
  r.width = 512;
  r.height = 768;
  r.clip_skip = 2;
  const std::string text = tide::server::infotext(r, 1234, "DPM++ 2M", "Karras", "sd15");
  EXPECT_EQ(text.rfind(
                "a fox, (red:1.2)\nsecond line\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: "
                "Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model: sd15, Clip skip: 2, Version: tide ",
                0),
            0u)
      << text;
  const auto parsed = tide::server::parse_infotext(text);
  EXPECT_EQ(parsed["Prompt"], "a fox, (red:1.2)\nsecond line");
  EXPECT_EQ(parsed["Negative prompt"], "blurry");
  EXPECT_EQ(parsed["Steps"], "20");
  EXPECT_EQ(parsed["Sampler"], "DPM++ 2M");
  EXPECT_EQ(parsed["Schedule type"], "Karras");
  EXPECT_EQ(parsed["CFG scale"], "7");
  EXPECT_EQ(parsed["Seed"], "1234");
  EXPECT_EQ(parsed["Size"], "512x768");
  EXPECT_EQ(parsed["Clip skip"], "2");
  // A1111 quotes values with commas.
  const auto quoted = tide::server::parse_infotext("p\nSteps: 2, Lora hashes: \"a: 1, b: 2\", Seed: 3");
  EXPECT_EQ(quoted["Lora hashes"], "a: 1, b: 2");
  EXPECT_EQ(quoted["Seed"], "3");
  EXPECT_EQ(tide::server::format_number(7.5), "7.5");
}

// The keys tide generate writes for DeepCache, image to image and inpainting, and A1111's "Lora hashes" (quoted:
// the value holds commas), each read back by png-info as the web page does.
TEST(ServerInfotext, RecordsDeepCacheDenoisingStrengthMaskBlurAndLoraHashes) {
  tide::pipeline::GenerationRequest r;
  r.prompt = "a boat <lora:ink:0.8>";
  r.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
  r.steps = 10;
  r.guidance = 7;
  r.width = r.height = 64;
  r.cache_interval = 3;
  r.init_image = at::zeros({64, 64, 3}, at::kByte);
  r.strength = 0.6;
  r.mask = at::zeros({64, 64}, at::kByte);
  r.mask_blur = 4;
  const std::string text = tide::server::infotext(r, 5, "Euler", "", "sd15", "ink: 0123456789ab, b: ba9876543210");
  EXPECT_EQ(text.rfind("a boat <lora:ink:0.8>\nSteps: 10, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, Model: sd15, "
                       "DeepCache interval: 3, Denoising strength: 0.6, Mask blur: 4, "
                       "Lora hashes: \"ink: 0123456789ab, b: ba9876543210\", Version: tide ",
                       0),
            0u)
      << text;
  const auto parsed = tide::server::parse_infotext(text);
  EXPECT_EQ(parsed["DeepCache interval"], "3");
  EXPECT_EQ(parsed["Denoising strength"], "0.6");
  EXPECT_EQ(parsed["Mask blur"], "4");
  EXPECT_EQ(parsed["Lora hashes"], "ink: 0123456789ab, b: ba9876543210");
  // Off and absent: none of these keys.
  tide::pipeline::GenerationRequest plain;
  plain.prompt = "a boat";
  plain.prompt_syntax = tide::pipeline::PromptSyntax::kA1111;
  const std::string none = tide::server::infotext(plain, 5, "Euler", "", "sd15");
  for (const char* key : {"DeepCache", "Denoising", "Mask blur", "Lora hashes"})
    EXPECT_EQ(none.find(key), std::string::npos) << key << " in " << none;
}

}  // namespace
