// Textual-inversion training end to end on a tiny random pipeline, in-process: the loss on the training
// samples falls, only the placeholder vectors change, outputs and checkpoints are written, and a run stopped
// after a checkpoint and resumed equals one that never stopped.
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/cpu_features.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"
#include "tide/text/embeddings.h"
#include "tide/train/trainer.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::TempDir;

// Two small images with distinct patterns (PNG, written like user data).
void write_training_images(const fs::path& dir) {
  fs::create_directories(dir);
  const at::Tensor y = at::arange(20).reshape({20, 1, 1}), x = at::arange(24).reshape({1, 24, 1});
  const at::Tensor c = at::arange(3).reshape({1, 1, 3});
  io::write_png(dir / "0.png", ((x * 10 + c * 60) % 256).expand({20, 24, 3}).to(at::kByte).contiguous());
  io::write_png(dir / "1.png", ((y * 12 + x * 3 + c * 40) % 256).to(at::kByte).contiguous());
}

struct Quiet {
  std::vector<std::string> lines;
  train::TrainHooks hooks() {
    train::TrainHooks h;
    h.log = [this](const std::string& s) { lines.push_back(s); };
    return h;
  }
};

class TrainLoop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    at::set_num_threads(1);
    dir_ = new TempDir();
    tide::testing::make_tiny_pipeline(dir_->path() / "model");
    write_training_images(dir_->path() / "images");
  }
  static void TearDownTestSuite() { delete dir_; }

  train::TrainOptions options(const std::string& out) const {
    train::TrainOptions o;
    o.model = dir_->path() / "model";
    o.data = {dir_->path() / "images", 16, 2, false};
    o.placeholder_token = "<tiny>";
    o.initializer_token = "c";
    o.train_batch_size = 2;
    o.max_train_steps = 6;
    o.learning_rate = 5e-2;
    o.seed = 42;
    o.save_steps = 0;
    o.checkpointing_steps = 0;
    o.output_dir = dir_->path() / out;
    return o;
  }
  static TempDir* dir_;
};
TempDir* TrainLoop::dir_ = nullptr;

TEST_F(TrainLoop, LossFallsOnlyPlaceholderChangesAndOutputsAreWritten) {
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto o = options("run");
  o.max_train_steps = 30;
  o.learning_rate = 0.5;
  o.num_vectors = 2;
  o.save_steps = 15;
  o.save_as_full_pipeline = true;
  train::Trainer trainer(o, *comm, quiet.hooks());
  const at::Tensor table = trainer.models().text_encoder->token_embedding()->weight.detach().clone();
  const at::Tensor initial = trainer.vectors().detach().clone();
  // The training samples of the first epochs (fixed noise, timesteps, templates): the loss on exactly these
  // is what training lowers. In a random tiny UNet the text conditioning explains little of the loss, so the
  // fall is small in absolute terms; it is deterministic, and a control proves it is learned: moving the
  // vectors as far in a random direction does not lower the loss as much.
  std::vector<int64_t> positions(16);
  std::iota(positions.begin(), positions.end(), 0);
  const double loss_before = trainer.evaluate_loss(positions);
  trainer.run();
  const at::Tensor learned_vectors = trainer.vectors().detach();
  const double loss_after = trainer.evaluate_loss(positions);
  at::manual_seed(1);
  const at::Tensor direction = at::randn(initial.sizes());
  const at::Tensor random_move = initial + direction * ((learned_vectors - initial).norm() / direction.norm());
  const double loss_random = trainer.evaluate_loss(positions, random_move);
  EXPECT_LT(loss_after, loss_before - 1e-4) << "before " << loss_before << " after " << loss_after;
  EXPECT_LT(loss_after - loss_before, 0.5 * (loss_random - loss_before))
      << "before " << loss_before << " after " << loss_after << " random move " << loss_random;
  EXPECT_EQ(trainer.global_step(), 30);
  EXPECT_FALSE(trainer.vectors().equal(initial));
  // The VAE encoder ran once per image variant (2 images x at most 2 flips).
  EXPECT_LE(trainer.latent_cache().encoder_runs(), 4);

  // Frozen parts bit-identical; the table's rows other than the placeholder unchanged.
  trainer.write_vectors_to_table();
  const at::Tensor after = trainer.models().text_encoder->token_embedding()->weight.detach();
  const int64_t first = trainer.placeholder().first_id;
  EXPECT_TRUE(after.narrow(0, 0, first).equal(table.narrow(0, 0, first)));
  for (const auto& p : trainer.models().unet->parameters()) EXPECT_FALSE(p.requires_grad());

  const auto learned = text::read_embedding_file(o.output_dir / "learned_embeds.safetensors");
  EXPECT_EQ(learned.token, "<tiny>");
  EXPECT_TRUE(learned.vectors.equal(trainer.vectors().detach()));
  EXPECT_TRUE(fs::exists(o.output_dir / "learned_embeds-steps-15.safetensors"));
  std::ifstream log(o.output_dir / "train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines) {
    const auto json = nlohmann::json::parse(line);
    EXPECT_EQ(json["step"].get<int>(), lines + 1);
    EXPECT_TRUE(json.contains("loss") && json.contains("lr") && json.contains("seconds"));
  }
  EXPECT_EQ(lines, 30);

  // The full pipeline folder: loads with the added tokens and the trained rows.
  const fs::path full = o.output_dir;
  auto tok = text::ClipTokenizer::from_folder(full / "tokenizer");
  EXPECT_EQ(tok.token_id("<tiny>_1"), std::optional<int64_t>(first + 1));
  auto models = train::load_training_models(full);
  EXPECT_TRUE(models.text_encoder->token_embedding()->weight.narrow(0, first, 2).equal(trainer.vectors().detach()));
  EXPECT_TRUE(fs::exists(full / "unet/diffusion_pytorch_model.safetensors"));
}

// While it is built, the trainer caches both orientations of every image and lets the VAE go (before it loads
// the UNet); the vectors learned are those of a run that encodes every sample afresh with the VAE kept.
TEST_F(TrainLoop, VaeLetGoOnceEveryImageVariantIsCachedLearnsTheSame) {
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto o = options("vae-let-go");
  o.max_train_steps = 8;
  train::Trainer cached(o, *comm, quiet.hooks());
  EXPECT_EQ(cached.latent_cache().encoder_runs(), 4);
  EXPECT_FALSE(cached.models().vae);
  EXPECT_TRUE(cached.models().unet);
  EXPECT_FALSE(cached.models().unet_loader);
  cached.run();
  EXPECT_EQ(cached.latent_cache().encoder_runs(), 4);
  EXPECT_TRUE(cached.latent_cache().holds_every_variant());
  EXPECT_FALSE(cached.models().vae);

  o.output_dir = o.output_dir.string() + "-uncached";
  o.cache_latents = false;
  train::Trainer uncached(o, *comm, quiet.hooks());
  uncached.run();
  EXPECT_TRUE(uncached.models().vae);
  EXPECT_GT(uncached.latent_cache().encoder_runs(), 4);
  EXPECT_TENSOR_NEAR(cached.vectors().detach(), uncached.vectors().detach(), 1e-6);
}

// Loaded for later, the UNet is absent until load_unet(), then equals the one loaded with the rest.
TEST_F(TrainLoop, UnetLoadedLaterEqualsOneLoadedWithTheRest) {
  const std::string model = (dir_->path() / "model").string();
  auto later = train::load_training_models(model, {}, train::UnetLoading::kLater);
  EXPECT_FALSE(later.unet);
  ASSERT_TRUE(later.vae && later.text_encoder && later.unet_loader);
  later.load_unet();
  ASSERT_TRUE(later.unet);
  EXPECT_FALSE(later.unet_loader);
  const auto now = train::load_training_models(model);
  const auto loaded = later.unet->named_parameters(), expected = now.unet->named_parameters();
  ASSERT_EQ(loaded.size(), expected.size());
  for (const auto& p : expected) {
    EXPECT_TRUE(loaded[p.key()].equal(p.value())) << p.key();
    EXPECT_FALSE(loaded[p.key()].requires_grad()) << p.key();
  }
  const at::Tensor first = later.unet->parameters()[0];
  later.load_unet();  // nothing once it is there
  EXPECT_TRUE(later.unet->parameters()[0].is_same(first));
}

TEST_F(TrainLoop, StoppedAndResumedEqualsUninterrupted) {
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto o = options("straight");
  o.lr_scheduler = "linear";  // the schedule's position must be restored too
  o.lr_warmup_steps = 2;
  o.checkpointing_steps = 2;
  train::Trainer straight(o, *comm, quiet.hooks());
  straight.run();

  // Same run, killed after checkpoint-2 (its hook throws at step 3, before step 3 is saved anywhere).
  auto k = options("killed");
  k.lr_scheduler = "linear";
  k.lr_warmup_steps = 2;
  k.checkpointing_steps = 2;
  k.checkpoints_total_limit = 1;
  auto hooks = quiet.hooks();
  hooks.on_step = [](const train::StepReport& r) {
    if (r.step == 3) throw std::runtime_error("killed");
  };
  {
    train::Trainer killed(k, *comm, hooks);
    EXPECT_THROW(killed.run(), std::runtime_error);
  }
  ASSERT_EQ(train::list_checkpoints(k.output_dir).size(), 1u);
  k.resume_from_checkpoint = "latest";
  train::Trainer resumed(k, *comm, quiet.hooks());
  EXPECT_EQ(resumed.global_step(), 2);
  resumed.run();
  EXPECT_TRUE(resumed.vectors().equal(straight.vectors()));
  // checkpoints_total_limit 1 keeps only the newest.
  const auto kept = train::list_checkpoints(k.output_dir);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].filename(), "checkpoint-6");

  // Resuming with a different global batch is refused; a missing named checkpoint is an error.
  auto other = k;
  other.train_batch_size = 1;
  other.resume_from_checkpoint = "checkpoint-6";
  EXPECT_THROW(train::Trainer(other, *comm, quiet.hooks()), Error);
  other.resume_from_checkpoint = "checkpoint-99";
  EXPECT_THROW(train::Trainer(other, *comm, quiet.hooks()), Error);
}

TEST_F(TrainLoop, GradientAccumulationEqualsTheLargerBatch) {
  // batch 1 x 2 accumulation == batch 2: the same samples, the same averaged gradient.
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto a = options("accumulated");
  a.train_batch_size = 1;
  a.gradient_accumulation_steps = 2;
  a.max_train_steps = 3;
  auto b = options("batched");
  b.max_train_steps = 3;
  train::Trainer ta(a, *comm, quiet.hooks()), tb(b, *comm, quiet.hooks());
  ta.run();
  tb.run();
  EXPECT_TENSOR_NEAR(ta.vectors().detach(), tb.vectors().detach(), 1e-6);
}

TEST_F(TrainLoop, BlockedAttentionGivesPlainAttentionsLossAndGradient) {
  // The UNet's attention with gradients: the blocked kernel with its strip-wise backward by default, plain
  // baddbmm/softmax/bmm (whose autograd keeps the probabilities) without it. One update from the same
  // vectors: the same loss and the same gradient.
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto step = [&](const runtime::Optimizations& optimizations, const std::string& out, double& loss) {
    runtime::OptimizationsGuard guard(optimizations);
    auto o = options(out);
    o.max_train_steps = 1;
    auto hooks = quiet.hooks();
    hooks.on_step = [&](const train::StepReport& r) { loss = r.loss; };
    train::Trainer trainer(o, *comm, hooks);
    trainer.run();
    return trainer.vectors().grad().clone();
  };
  double blocked_loss = 0, plain_loss = 0;
  const at::Tensor blocked = step(runtime::Optimizations(), "blocked", blocked_loss);
  const at::Tensor plain = step(runtime::Optimizations().without("blocked_attention"), "plain", plain_loss);
  ASSERT_TRUE(blocked.defined() && plain.defined());
  EXPECT_GT(plain.abs().max().item<double>(), 0);
  EXPECT_NEAR(blocked_loss, plain_loss, 1e-6 * plain_loss);
  EXPECT_TENSOR_NEAR(blocked, plain, 1e-5 * plain.abs().max().item<double>());
}

TEST_F(TrainLoop, FrozenBackwardAndCheckpointingGivePlainAutogradsUpdate) {
  // The UNet's convolutions against frozen weights (inference forward, input-only backward) and gradient
  // checkpointing (blocks recomputed in the backward pass) against plain autograd: one update from the same
  // vectors gives the same loss and gradient.
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto step = [&](const runtime::Optimizations& optimizations, bool checkpointing, const std::string& out,
                  double& loss) {
    runtime::OptimizationsGuard guard(optimizations);
    auto o = options(out);
    o.max_train_steps = 1;
    o.gradient_checkpointing = checkpointing;
    auto hooks = quiet.hooks();
    hooks.on_step = [&](const train::StepReport& r) { loss = r.loss; };
    train::Trainer trainer(o, *comm, hooks);
    trainer.run();
    return trainer.vectors().grad().clone();
  };
  double frozen_loss = 0, plain_loss = 0, checkpointed_loss = 0;
  const at::Tensor frozen = step(runtime::Optimizations(), false, "frozen", frozen_loss);
  const at::Tensor plain = step(runtime::Optimizations().without("frozen_backward"), false, "plain", plain_loss);
  const at::Tensor checkpointed = step(runtime::Optimizations(), true, "checkpointed", checkpointed_loss);
  ASSERT_TRUE(frozen.defined() && plain.defined() && checkpointed.defined());
  EXPECT_GT(plain.abs().max().item<double>(), 0);
  EXPECT_NEAR(frozen_loss, plain_loss, 1e-5 * plain_loss);
  EXPECT_NEAR(checkpointed_loss, frozen_loss, 1e-6 * plain_loss);
  EXPECT_TENSOR_NEAR(frozen, plain, 1e-5 * plain.abs().max().item<double>());
  EXPECT_TENSOR_NEAR(checkpointed, frozen, 1e-5 * plain.abs().max().item<double>());
}

TEST_F(TrainLoop, Bf16LossCurveFollowsFloat32) {
  // --mixed_precision bf16 runs the UNet in bfloat16 (8 significant bits): the losses of the same samples
  // stay within 1% of float32's, step by step, while the vectors learn (README: documented tolerance).
  if (!runtime::bf16_supported()) GTEST_SKIP() << "this CPU has no native bf16 (AVX512-BF16 or AMX): not exercised";
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto losses = [&](bool bf16) {
    auto o = options(bf16 ? "bf16" : "f32");
    o.bf16 = bf16;
    std::vector<double> out;
    auto hooks = quiet.hooks();
    hooks.on_step = [&](const train::StepReport& r) { out.push_back(r.loss); };
    train::Trainer trainer(o, *comm, hooks);
    trainer.run();
    return out;
  };
  const std::vector<double> f32 = losses(false), bf16 = losses(true);
  ASSERT_EQ(f32.size(), bf16.size());
  double worst = 0;
  for (size_t i = 0; i < f32.size(); ++i) worst = std::max(worst, std::abs(bf16[i] - f32[i]) / f32[i]);
  std::cout << "bf16 vs float32 loss, largest relative difference over " << f32.size() << " steps: " << worst << "\n";
  EXPECT_LT(worst, 0.01);
  EXPECT_GT(worst, 0.0);  // it really ran in bf16
}

TEST_F(TrainLoop, BadSettingsAreClearErrors) {
  auto comm = train::make_single_process_communicator();
  Quiet quiet;
  auto o = options("bad");
  o.initializer_token = "cat";  // three tokens in the tiny vocabulary
  EXPECT_THROW(train::Trainer(o, *comm, quiet.hooks()), Error);
  o = options("bad");
  o.placeholder_token = "a";  // already a vocabulary token
  EXPECT_THROW(train::Trainer(o, *comm, quiet.hooks()), Error);
  o = options("bad");
  o.data.resolution = 15;  // not a multiple of the VAE factor
  EXPECT_THROW(train::Trainer(o, *comm, quiet.hooks()), Error);
  o = options("bad");
  o.lr_scheduler = "sometimes";
  EXPECT_THROW(train::Trainer(o, *comm, quiet.hooks()), Error);
  o = options("bad");
  o.data.dir = dir_->path() / "no-such-folder";
  EXPECT_THROW(train::Trainer(o, *comm, quiet.hooks()), Error);
  o = options("bad");
  o.weights = nn::WeightFormat::kInt8;  // frozen weights train in f32, f16 or bf16
  try {
    train::Trainer trainer(o, *comm, quiet.hooks());
    ADD_FAILURE() << "int8 frozen weights were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not int8"), std::string::npos) << e.what();
  }
}

}  // namespace
