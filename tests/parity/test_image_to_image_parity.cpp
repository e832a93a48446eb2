// Image-to-image and inpainting parity with diffusers: every case of features/img2img and features/inpaint
// (StableDiffusion(XL)Img2ImgPipeline, StableDiffusion(XL)InpaintPipeline) run through tide's pipeline
// from the stored init image and mask, compared file by file: preprocessed image and mask, encoded
// latents, noised start latents (generator draw order), every step's latents, final latents and pixels.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/pipeline/image_conditioning.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;

struct FeatureCase {
  std::string kind, id;
};
void PrintTo(const FeatureCase& c, std::ostream* os) { *os << c.kind << "/" << c.id; }

std::vector<FeatureCase> cases_of(const std::string& kind) {
  std::vector<FeatureCase> out;
  for (const auto& id : tide::testing::feature_cases(kind)) out.push_back({kind, id});
  return out;
}

pipeline::StableDiffusionPipeline& load_pipeline(const std::string& name) {
  static std::map<std::string, std::unique_ptr<pipeline::StableDiffusionPipeline>> cache;
  auto& p = cache[name];
  if (!p) p = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(name));
  return *p;
}

// max |a - b| relative to max |b|.
double relative_diff(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = std::max(expected.abs().max().item<double>(), 1e-12);
  return tide::testing::max_abs_diff(actual, expected) / scale;
}

// The request a user would make for this case (init image and mask as stored PNGs).
pipeline::GenerationRequest request_for(const nlohmann::json& c, const fs::path& dir) {
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  const auto& kwargs = c["scheduler_kwargs"];
  r.scheduler = schedulers::scheduler_name_for_class(c["scheduler"].get<std::string>(), kwargs);
  r.scheduler_options.karras = kwargs.value("use_karras_sigmas", false);
  if (!c["eta"].is_null()) r.scheduler_options.eta = c["eta"].get<double>();
  r.strength = c["strength"].get<double>();
  r.init_image = io::read_png(dir / "init_image.png").rgb8;
  if (fs::exists(dir / "mask.png")) {
    r.mask = io::read_png(dir / "mask.png").rgb8;
    // the inpaint pipelines take height/width (img2img ones take the image's size)
    r.height = c["height"].get<int>();
    r.width = c["width"].get<int>();
  }
  return r;
}

void check_case(const FeatureCase& fc) {
  const fs::path dir = tide::testing::feature_case(fc.kind, fc.id);
  const auto c = io::read_json(dir / "case.json");
  auto& pipe = load_pipeline(c["pipeline"].get<std::string>());
  const auto request = pipe.resolve(request_for(c, dir));
  const auto out_hw = c["output_hw"];
  EXPECT_EQ(request.height, out_hw[0].get<int>());
  EXPECT_EQ(request.width, out_hw[1].get<int>());

  // Preparation: schedule slice, preprocessing, encodes and noise in diffusers' draw order.
  auto scheduler = pipe.make_scheduler(request);
  scheduler->set_timesteps(request.steps);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  const auto start = pipeline::prepare_image_start(request, *scheduler, pipe.vae(), pipe.unet()->config().in_channels, gen);
  EXPECT_EQ(static_cast<int>(start.first), c["loop_starts_at_index"].get<int>());
  const at::Tensor ran = io::read_npy(dir / "timesteps.npy").to(at::kDouble);
  ASSERT_EQ(ran.size(0), static_cast<int64_t>(scheduler->timesteps().size() - start.first));
  for (int64_t i = 0; i < ran.size(0); ++i)
    EXPECT_DOUBLE_EQ(scheduler->timesteps()[start.first + i], ran[i].item<double>()) << "timestep " << i;

  // Pixels in: the same 8-bit levels (Pillow's Lanczos when resized), so equal up to float rounding.
  EXPECT_TENSOR_NEAR(start.init_image, io::read_npy(dir / "init_image_tensor.npy"), 1e-6);
  if (fs::exists(dir / "image_latents.npy")) {
    ASSERT_TRUE(start.image_latents.defined()) << "diffusers encoded the init image, tide did not";
    EXPECT_LE(relative_diff(start.image_latents, io::read_npy(dir / "image_latents.npy")), 1e-5);
  } else {
    EXPECT_FALSE(start.image_latents.defined()) << "tide encoded the init image (an extra draw), diffusers did not";
  }
  EXPECT_TENSOR_NEAR(start.noise, io::read_npy(dir / "noise.npy"), 1e-6);
  const double init_diff = relative_diff(start.latents, io::read_npy(dir / "latents_init.npy"));
  EXPECT_LE(init_diff, 1e-5) << "latents entering the loop";
  if (fs::exists(dir / "mask_condition.npy")) {
    EXPECT_TENSOR_NEAR(start.mask_condition, io::read_npy(dir / "mask_condition.npy"), 0);
    EXPECT_TENSOR_NEAR(start.masked_image, io::read_npy(dir / "masked_image.npy"), 1e-6);
    EXPECT_TENSOR_NEAR(start.mask_latents, io::read_npy(dir / "mask_latents.npy"), 0);
    EXPECT_LE(relative_diff(start.masked_image_latents, io::read_npy(dir / "masked_image_latents.npy")), 1e-5);
  }

  // The whole run, step by step.
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  double worst_step = 0;
  int steps_seen = 0;
  auto result = pipe.generate(request, [&](const pipeline::StepInfo& s) {
    ASSERT_LT(s.index, steps.size(0));
    worst_step = std::max(worst_step, relative_diff(s.latents, steps[s.index]));
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, steps.size(0));
  EXPECT_EQ(result.unet_calls, c["num_unet_calls"].get<int>());
  const at::Tensor final_ref = io::read_npy(dir / "latents_final.npy");
  const double final_diff = relative_diff(result.latents, final_ref);
  EXPECT_LE(worst_step, 1e-4) << "latents after some step differ (relative to their max)";
  EXPECT_LE(final_diff, 1e-4);

  const at::Tensor image = (result.decoded / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1});  // [N, H, W, 3]
  const double image_diff = tide::testing::max_abs_diff(image, io::read_npy(dir / "image.npy"));
  EXPECT_LE(image_diff, 1e-3);
  const at::Tensor reference = io::read_png(dir / "image_0.png").rgb8;
  ASSERT_EQ(reference.sizes(), result.images[0].sizes());
  const at::Tensor diff = (reference.to(at::kInt) - result.images[0].to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 2);
  std::printf("%s/%s: latents_init rel %.3g, worst step rel %.3g, final rel %.3g, image.npy %.3g, PNG max %d (%d px)\n",
              fc.kind.c_str(), fc.id.c_str(), init_diff, worst_step, final_diff, image_diff, diff.max().item<int>(),
              static_cast<int>((diff > 0).sum().item<int64_t>()));
}

class ImageToImageParity : public ::testing::TestWithParam<FeatureCase> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ImageToImageParity);

TEST_P(ImageToImageParity, MatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  check_case(GetParam());
}

// The scheduler alone: add_noise of the stored clean latents and noise at the first timestep gives
// latents_init (where diffusers noised the image rather than starting from pure noise).
TEST_P(ImageToImageParity, SchedulerAddNoiseMatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path dir = tide::testing::feature_case(GetParam().kind, GetParam().id);
  const auto c = io::read_json(dir / "case.json");
  if (c["strength"].get<double>() == 1.0) GTEST_SKIP() << "strength 1: the loop starts from pure noise";
  auto& pipe = load_pipeline(c["pipeline"].get<std::string>());
  auto scheduler = pipe.make_scheduler(request_for(c, dir));
  scheduler->set_timesteps(c["steps"].get<int>());
  const int first = c["loop_starts_at_index"].get<int>();
  scheduler->set_begin_index(first);
  const at::Tensor noised = scheduler->add_noise(io::read_npy(dir / "image_latents.npy"), io::read_npy(dir / "noise.npy"),
                                                 scheduler->timesteps()[first]);
  EXPECT_LE(relative_diff(noised, io::read_npy(dir / "latents_init.npy")), 1e-6);
}

const auto kCaseName = [](const auto& info) { return tide::testing::case_test_name(info.param.id); };
INSTANTIATE_TEST_SUITE_P(Img2Img, ImageToImageParity, ::testing::ValuesIn(cases_of("img2img")), kCaseName);
INSTANTIATE_TEST_SUITE_P(Inpaint, ImageToImageParity, ::testing::ValuesIn(cases_of("inpaint")), kCaseName);

// The lists above are found at run time: make sure they are not silently empty.
TEST(ImageToImageParityCases, BothKindsHaveCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(cases_of("img2img").empty());
  EXPECT_FALSE(cases_of("inpaint").empty());
}

}  // namespace
