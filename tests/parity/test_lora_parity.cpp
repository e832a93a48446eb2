// LoRA files of every format, merged into the fixture pipelines, against diffusers runs of the same pipeline
// with the same modules merged (features/lora): the layer each file entry lands on and its scale, the exact
// deltas of two layers, prompt embeddings, per-step latents and pixels; then clearing the LoRA gives the
// base weights back bit for bit.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_support.h"
#include "tide/adapters/lora_delta.h"
#include "tide/adapters/lora_file.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/schedulers/scheduler.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;

pipeline::GenerationRequest request_for(const nlohmann::json& c) {
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  r.num_images = c["num_images_per_prompt"].get<int>();
  const auto& kwargs = c["scheduler_kwargs"];
  r.scheduler = schedulers::scheduler_name_for_class(c["scheduler"].get<std::string>(), kwargs);
  r.scheduler_options.karras = kwargs.value("use_karras_sigmas", false);
  return r;
}

// "component/module" -> a copy of every weight and bias of the UNet and text encoder(s).
std::map<std::string, at::Tensor> snapshot(pipeline::StableDiffusionPipeline& pipe) {
  std::map<std::string, at::Tensor> out;
  std::map<std::string, torch::nn::Module*> components = {{"unet", pipe.unet().get()},
                                                          {"text_encoder", pipe.text_encoder().get()}};
  if (pipe.is_xl()) components["text_encoder_2"] = pipe.text_encoder_2().get();
  for (const auto& [component, module] : components)
    for (const auto& p : module->named_parameters(true)) out[component + "." + p.key()] = p.value().detach().clone();
  return out;
}

void check_case(const std::string& id) {
  const fs::path dir = tide::testing::feature_case("lora", id);
  const auto c = io::read_json(dir / "case.json");
  auto pipe = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(c["pipeline"].get<std::string>()));
  const auto base = snapshot(*pipe);
  const double multiplier = c["multiplier"].get<double>();

  // Every entry of the file lands on the module diffusers / kohya / LyCORIS put it on, with their scale.
  std::map<std::string, torch::nn::Module*> components = {{"unet", pipe->unet().get()},
                                                          {"text_encoder", pipe->text_encoder().get()}};
  if (pipe->is_xl()) components["text_encoder_2"] = pipe->text_encoder_2().get();
  const auto targets = adapters::LoraTargets::from_modules(components, &pipe->unet()->config(), pipe->is_xl());
  const auto file = adapters::read_lora_file(dir / "lora.safetensors", targets);
  std::map<std::string, const adapters::LoraLayer*> by_key;
  for (const auto& layer : file.layers) by_key[layer.key] = &layer;
  const auto& modules = c["modules"];
  ASSERT_EQ(file.layers.size(), modules.size());
  std::set<std::string> changed_modules;
  for (const auto& m : modules) {
    const auto it = by_key.find(m["lora_name"].get<std::string>());
    ASSERT_NE(it, by_key.end()) << m["lora_name"];
    EXPECT_EQ(it->second->component + "." + it->second->module, m["module"].get<std::string>()) << m["lora_name"];
    EXPECT_NEAR(adapters::lora_scale(*it->second), m["scale"].get<double>(), 1e-12) << m["lora_name"];
    changed_modules.insert(m["module"].get<std::string>() + ".weight");
  }

  pipe->set_loras({{dir / "lora.safetensors", multiplier}});
  ASSERT_EQ(pipe->loras().size(), 1u);
  const auto merged = snapshot(*pipe);

  // The deltas diffusers added to two layers (multiplier included).
  for (const auto& d : c["delta_layers"]) {
    const std::string name = d["component"].get<std::string>() + "." + d["path"].get<std::string>() + ".weight";
    const at::Tensor expected = io::read_npy(dir / d["file"].get<std::string>());
    const at::Tensor ours = merged.at(name) - base.at(name);
    EXPECT_TENSOR_NEAR(ours, expected, 2e-6);
    std::printf("%s: delta of %s max diff %.3g (delta max %.3g)\n", id.c_str(), name.c_str(),
                tide::testing::max_abs_diff(ours, expected), expected.abs().max().item<double>());
  }
  // The listed modules' weights, and nothing else, changed.
  int changed = 0;
  for (const auto& [name, value] : merged) {
    const bool differs = !at::equal(value, base.at(name));
    EXPECT_EQ(differs, changed_modules.count(name) != 0) << name;
    changed += differs;
  }
  EXPECT_EQ(changed, static_cast<int>(modules.size()));

  // The run: text encoders (with their LoRA), every step's latents, pixels.
  const auto request = request_for(c);
  const auto cond = pipe->encode_prompt(request.prompt);
  EXPECT_TENSOR_NEAR(cond.context[0], io::read_npy(dir / "prompt_embeds.npy")[0], 1e-4);
  if (pipe->is_xl()) EXPECT_TENSOR_NEAR(cond.pooled[0], io::read_npy(dir / "pooled_prompt_embeds.npy")[0], 1e-4);
  if (request.negative_prompt) {
    const auto uncond = pipe->encode_prompt(*request.negative_prompt);
    EXPECT_TENSOR_NEAR(uncond.context[0], io::read_npy(dir / "negative_prompt_embeds.npy")[0], 1e-4);
  }
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  double worst_step = 0;
  auto result = pipe->generate(request, [&](const pipeline::StepInfo& s) {
    worst_step = std::max(worst_step, tide::testing::max_abs_diff(s.latents, steps[s.index]));
  });
  const at::Tensor final_latents = io::read_npy(dir / "latents_final.npy");
  const double effect = c["effect_vs_no_lora"]["latents_final_max_abs_diff"].get<double>();
  EXPECT_LE(worst_step, 1e-3) << "latents after some step differ";
  EXPECT_TENSOR_NEAR(result.latents, final_latents, 1e-3);
  const at::Tensor reference = io::read_png(dir / "image_0.png").rgb8.to(at::kInt);
  ASSERT_EQ(reference.sizes(), result.images[0].sizes());
  const at::Tensor diff = (reference - result.images[0].to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 2);
  EXPECT_LE(diff.to(at::kDouble).mean().item<double>(), 0.25);
  std::printf("%s: worst per-step latent diff %.3g, final %.3g (the LoRA moves them by %.3g); max pixel diff %d, mean %.4f\n",
              id.c_str(), worst_step, tide::testing::max_abs_diff(result.latents, final_latents), effect,
              diff.max().item<int>(), diff.to(at::kDouble).mean().item<double>());

  // No LoRA: the base weights, bit for bit.
  pipe->set_loras({});
  EXPECT_TRUE(pipe->loras().empty());
  for (const auto& [name, value] : snapshot(*pipe)) EXPECT_TRUE(at::equal(value, base.at(name))) << name << " not restored";
}

class LoraParity : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LoraParity);

TEST_P(LoraParity, MatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  check_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(LoraParityFeatures, LoraParity, ::testing::ValuesIn(tide::testing::feature_cases("lora")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

// The cases are there (and of every format), so the list above is not silently empty.
TEST(LoraParityCases, EveryFormatHasCases) {
  TIDE_REQUIRE_FIXTURES();
  std::set<std::string> formats;
  for (const auto& id : tide::testing::feature_cases("lora"))
    formats.insert(io::read_json(tide::testing::feature_case("lora", id) / "case.json")["format"].get<std::string>());
  for (const char* f : {"kohya", "locon", "loha", "lokr", "peft", "kohya_sdxl"}) EXPECT_TRUE(formats.count(f)) << f;
}

}  // namespace
