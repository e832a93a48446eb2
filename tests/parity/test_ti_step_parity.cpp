// One textual-inversion training step against diffusers' textual_inversion.py (features/ti_step): tide's own
// data path (Pillow bicubic resize, flip, [-1, 1] pixels), latent cache, caption, sample_loss, backward and
// AdamW give diffusers' pixels, latent distribution, loss, placeholder-row gradient and updated row, with
// the random draws (latent ε, noise, timestep) taken from the reference.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/schedulers/scheduler.h"
#include "tide/train/adamw.h"
#include "tide/train/dataset.h"
#include "tide/train/latent_cache.h"
#include "tide/train/placeholder.h"
#include "tide/train/sample_loss.h"
#include "tide/train/templates.h"
#include "tide/train/training_models.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::feature_case;

// max |a - b| relative to max |expected|: the step's gradients are small (~1e-2), so absolute tolerances
// would say nothing.

class TiStepParity : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TiStepParity);

TEST_P(TiStepParity, OneStepMatchesDiffusers) {
  const fs::path dir = feature_case("ti_step", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto models = train::load_training_models((tide::testing::fixtures_dir() / "pipelines" / c["pipeline"].get<std::string>()).string());

  // The placeholder row starts as a copy of the initializer token's.
  auto placeholder = train::add_placeholder(*models.tokenizer, models.text_encoder, c["placeholder_token"],
                                            c["initializer_token"], 1);
  EXPECT_EQ(placeholder.first_id, c["placeholder_token_id"].get<int64_t>());
  EXPECT_EQ(placeholder.initializer_id, c["initializer_token_id"].get<int64_t>());
  const at::Tensor row_before = models.text_encoder->token_embedding()->weight[placeholder.first_id].detach().clone();
  EXPECT_TENSOR_NEAR(row_before, io::read_npy(dir / "embedding_row_before.npy"), 0.0);

  // Pixels: the training image resized (Pillow bicubic), flipped as the case says, scaled to [-1, 1].
  tide::testing::TempDir images_dir;
  fs::copy_file(dir / "train_image.png", images_dir / "train_image.png");
  train::DatasetOptions data;
  data.dir = images_dir.path();
  data.resolution = c["resolution"].get<int>();
  data.repeats = 1;
  const train::TrainingImages images(data);
  const bool flip = c["flip"].get<bool>();
  EXPECT_TENSOR_NEAR(images.pixels(0, flip), io::read_npy(dir / "pixel_values.npy"), 1e-6);

  // Latent distribution of the VAE encoder. Its float32 reductions are summed in an order that depends on the
  // thread count (1.6e-5 seen with 2 threads), so it gets the step's tolerance, 1e-4.
  train::LatentCache cache(models.vae, images);
  const auto moments = cache.get(0, flip);
  EXPECT_LE(tide::testing::relative_max_error(moments.mean, io::read_npy(dir / "latent_dist_mean.npy")), 1e-4);
  EXPECT_LE(tide::testing::relative_max_error(moments.std, at::exp(0.5 * io::read_npy(dir / "latent_dist_logvar.npy"))), 1e-4);

  // Caption from the template, tokenized.
  const auto& templates = train::caption_templates(train::LearnableProperty::object);
  const std::string text = train::format_caption(templates.at(c["template_index"].get<size_t>()), placeholder.caption_text());
  EXPECT_EQ(text, c["text"].get<std::string>());
  const at::Tensor ids = at::tensor(models.tokenizer->encode_padded(text), at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::equal(ids, io::read_npy(dir / "input_ids.npy").to(at::kLong)));

  // The loss and the placeholder row's gradient.
  auto noise_scheduler = schedulers::make_scheduler("ddpm", models.scheduler_config, {});
  at::Tensor vectors = row_before.unsqueeze(0).clone().set_requires_grad(true);  // [1, D]
  const train::SampleInputs sample{moments, io::read_npy(dir / "latent_sample_eps.npy"), io::read_npy(dir / "noise.npy"),
                                   io::read_npy(dir / "timesteps.npy").to(at::kLong).item<int64_t>(), ids};
  const at::Tensor loss = train::sample_loss(models, *noise_scheduler, vectors, placeholder.first_id, sample);
  const double expected_loss = io::read_npy(dir / "loss.npy").item<double>();
  EXPECT_NEAR(loss.item<double>(), expected_loss, 1e-5 * std::abs(expected_loss));
  loss.backward();
  const at::Tensor grad = vectors.grad()[0];
  EXPECT_LE(tide::testing::relative_max_error(grad, io::read_npy(dir / "embedding_row_grad.npy")), 1e-4)
      << "gradient " << grad << "\nexpected " << io::read_npy(dir / "embedding_row_grad.npy");

  // AdamW's first step on the row.
  train::AdamWConfig adam;  // diffusers' defaults: betas (0.9, 0.999), weight decay 1e-2, eps 1e-8
  train::AdamW optimizer(adam, vectors.sizes());
  at::Tensor param = vectors.detach().clone();
  {
    at::NoGradGuard no_grad;
    optimizer.step(param, vectors.grad(), c["lr"].get<double>());
  }
  EXPECT_TENSOR_NEAR(optimizer.exp_avg()[0], io::read_npy(dir / "adam_exp_avg_row.npy"),
                     1e-4 * io::read_npy(dir / "adam_exp_avg_row.npy").abs().max().item<double>());
  EXPECT_TENSOR_NEAR(param[0], io::read_npy(dir / "embedding_row_after.npy"), 1e-7);
}

INSTANTIATE_TEST_SUITE_P(Cases, TiStepParity, ::testing::ValuesIn(tide::testing::feature_cases("ti_step")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

TEST(TiStepParityCases, FixturesHoldCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(tide::testing::feature_cases("ti_step").empty()) << "no case in features/ti_step";
}

}  // namespace
