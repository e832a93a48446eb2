// tide train-ti as a user runs it: flags, errors, data-parallel runs under mpirun that match a single process
// with the same global batch, resuming from a checkpoint, and generating with the learned embedding.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "cli_runner.h"
#include "test_support.h"
#include "tide/io/image.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/threads.h"
#include "tide/text/embeddings.h"
#include "tide/train/checkpoint.h"
#include "tiny_pipeline.h"

namespace {
namespace fs = std::filesystem;
using tide::testing::TempDir;

using CommandResult = tide::testing::Run;
using tide::testing::quote;
using tide::testing::run_command;

// Open MPI refuses root unless told; CI runs as root.
const char* kMpirun = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe";

// mpirun to start ranks, and a tide built with MPI (TIDE_WITH_MPI) to be them.
bool have_mpirun() { return tide::built_with_mpi() && std::system("command -v mpirun > /dev/null 2>&1") == 0; }

class CliTrainTi : public tide::testing::TinyPipelineSuite {
 protected:
  static void SetUpTestSuite() {
    TinyPipelineSuite::SetUpTestSuite();
    const fs::path images = dir_->path() / "images";
    fs::create_directories(images);
    const at::Tensor x = at::arange(20).reshape({1, 20, 1}), y = at::arange(18).reshape({18, 1, 1});
    const at::Tensor c = at::arange(3).reshape({1, 1, 3});
    tide::io::write_png(images / "a.png", ((x * 11 + y * 5 + c * 70) % 256).to(at::kByte).contiguous());
    tide::io::write_png(images / "b.png", ((x * y + c * 30) % 256).to(at::kByte).contiguous());
  }

  // Common flags: tiny model, 16 px, one thread per process, fixed seed, no periodic saves.
  static std::string train_args(const fs::path& out, const std::string& extra, const fs::path& model = {}) {
    return std::string(" train-ti --pretrained_model_name_or_path ") + quote(model.empty() ? dir_->path() / "model" : model) +
           " --train_data_dir " + quote(dir_->path() / "images") +
           " --placeholder_token '<tiny>' --initializer_token c --resolution 16 --repeats 3 --seed 7"
           " --learning_rate 0.01 --save_steps 0 --checkpointing_steps 0 --threads 1 --output_dir " +
           quote(out) + " " + extra;
  }
  static CommandResult tide(const std::string& args) { return run_command(std::string(TIDE_BINARY) + args); }
  static at::Tensor learned(const fs::path& out) {
    return tide::text::read_embedding_file(out / "learned_embeds.safetensors").vectors;
  }
};

TEST_F(CliTrainTi, HelpListsDiffusersFlags) {
  const auto help = tide(" train-ti --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag :
       {"--pretrained-model-name-or-path", "--train-data-dir", "--learnable-property", "--placeholder-token",
        "--initializer-token", "--resolution", "--train-batch-size", "--seed", "--gradient-accumulation-steps",
        "--max-train-steps", "--num-train-epochs", "--learning-rate", "--scale-lr", "--lr-scheduler",
        "--lr-warmup-steps", "--lr-num-cycles", "--adam-beta1", "--adam-beta2", "--adam-weight-decay",
        "--adam-epsilon", "--output-dir", "--mixed-precision", "--save-as-full-pipeline", "--repeats",
        "--center-crop", "--gradient-checkpointing", "--num-vectors", "--validation-prompt",
        "--num-validation-images", "--validation-steps", "--checkpointing-steps", "--checkpoints-total-limit",
        "--resume-from-checkpoint", "--save-steps", "--no-safe-serialization", "--threads", "--without", "--weights",
        "cosine_with_restarts"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
  EXPECT_NE(tide(" --help").output.find("train-ti"), std::string::npos);
}

TEST_F(CliTrainTi, ClearErrors) {
  TempDir out;
  auto bad_init = tide(train_args(out.path(), "--initializer_token cat --max_train_steps 1"));
  EXPECT_EQ(bad_init.code, 1);
  EXPECT_NE(bad_init.output.find("single token"), std::string::npos) << bad_init.output;
  auto taken = tide(train_args(out.path(), "--placeholder_token a --max_train_steps 1"));
  EXPECT_EQ(taken.code, 1);
  EXPECT_NE(taken.output.find("already contains the token a"), std::string::npos) << taken.output;
  auto missing = tide(" train-ti --train_data_dir x --placeholder_token '<t>' --initializer_token c");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.output.find("--pretrained_model_name_or_path is required"), std::string::npos) << missing.output;
  auto precision = tide(train_args(out.path(), "--mixed_precision fp32"));
  EXPECT_EQ(precision.code, 1);
  EXPECT_NE(precision.output.find("--mixed_precision must be no, fp16 or bf16, got 'fp32'"), std::string::npos)
      << precision.output;
}

// --without blocked_attention trains with plain attention (autograd keeps the probabilities) instead of the
// blocked kernel and its strip-wise backward: the same embedding.
TEST_F(CliTrainTi, WithoutBlockedAttentionLearnsTheSameEmbedding) {
  TempDir blocked, plain;
  const std::string flags = "--train_batch_size 2 --max_train_steps 2";
  auto a = tide(train_args(blocked.path(), flags));
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = tide(train_args(plain.path(), flags + " --without blocked_attention"));
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_TENSOR_NEAR(learned(plain.path()), learned(blocked.path()), 1e-5);
  auto unknown = tide(train_args(plain.path() / "x", "--max_train_steps 1 --without attention"));
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.output.find("unknown optimization 'attention'"), std::string::npos) << unknown.output;
}

// --gradient_checkpointing recomputes the UNet's blocks in the backward pass: the same embedding. --profile
// prints the last update's time by stage and by operator, backward nodes included.
TEST_F(CliTrainTi, GradientCheckpointingLearnsTheSameEmbeddingAndProfileBreaksTheStepDown) {
  TempDir kept, recomputed;
  const std::string flags = "--train_batch_size 2 --max_train_steps 2";
  auto a = tide(train_args(kept.path(), flags + " --profile"));
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = tide(train_args(recomputed.path(), flags + " --gradient_checkpointing"));
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_NE(b.output.find("gradient checkpointing"), std::string::npos) << b.output;
  EXPECT_TENSOR_NEAR(learned(recomputed.path()), learned(kept.path()), 1e-5);

  EXPECT_EQ(b.output.find("profile of the last update"), std::string::npos);
  const size_t table = a.output.find("profile of the last update, by stage:");
  ASSERT_NE(table, std::string::npos) << a.output;
  const std::string profile = a.output.substr(table);
  for (const char* row : {"\ntext_encoder ", "\nunet ", "\nbackward ", "\nupdate ", "\ntotal ",
                          "by operator (stage/operator):", "\nunet/", "\nbackward/"})
    EXPECT_NE(profile.find(row), std::string::npos) << row << " missing in:\n" << profile;
}

TEST_F(CliTrainTi, TwoRanksWithBatchOneEqualOneProcessWithBatchTwo) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed or tide built without MPI";
  TempDir single, ranks;
  // 6 samples per epoch, global batch 2: 5 updates cross an epoch boundary.
  const std::string steps = "--max_train_steps 5 --lr_scheduler linear --lr_warmup_steps 1";
  auto one = tide(train_args(single.path(), "--train_batch_size 2 --checkpointing_steps 3 " + steps));
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = run_command(std::string(kMpirun) + " -n 2 " + TIDE_BINARY +
                         train_args(ranks.path(), "--train_batch_size 1 " + steps));
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("2 processes"), std::string::npos) << two.output;
  const at::Tensor a = learned(single.path()), b = learned(ranks.path());
  EXPECT_TENSOR_NEAR(b, a, 1e-5);
  // Two ranks resuming the single process's checkpoint-3 (rank 0 reads it and sends it to rank 1) finish
  // where it finished.
  TempDir resumed;
  fs::copy(single.path() / "checkpoint-3", resumed.path() / "checkpoint-3", fs::copy_options::recursive);
  auto rest = run_command(std::string(kMpirun) + " -n 2 " + TIDE_BINARY +
                          train_args(resumed.path(), "--train_batch_size 1 --resume_from_checkpoint latest " + steps));
  ASSERT_EQ(rest.code, 0) << rest.output;
  EXPECT_NE(rest.output.find("Resuming from checkpoint"), std::string::npos) << rest.output;
  EXPECT_TENSOR_NEAR(learned(resumed.path()), a, 1e-5);
  // They did train: the vectors moved away from the initializer.
  auto init = tide(train_args(single.path() / "zero", "--train_batch_size 2 --max_train_steps 1 --learning_rate 0"));
  ASSERT_EQ(init.code, 0) << init.output;
  EXPECT_GT(tide::testing::max_abs_diff(a, learned(single.path() / "zero")), 1e-3);
}

// Ranks that mpirun starts unbound on one machine (--bind-to none) would each run threads on all its CPUs;
// they split them instead. --cpus pins a process by hand; a CPU it may not use is a clear error.
TEST_F(CliTrainTi, RanksSharingAMachineSplitItsCpusAndCpusPins) {
  auto pinned = tide(train_args(dir_->path() / "pinned", "--train_batch_size 1 --max_train_steps 1 --cpus 0"));
  ASSERT_EQ(pinned.code, 0) << pinned.output;
  EXPECT_NE(pinned.output.find("threads each on CPUs 0"), std::string::npos) << pinned.output;
  auto bad = tide(train_args(dir_->path() / "bad", "--max_train_steps 1 --cpus 100000"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("--cpus"), std::string::npos) << bad.output;

  if (!have_mpirun())
    GTEST_SKIP() << "mpirun not installed or tide built without MPI: the split under mpirun was not exercised";
  const auto cpus = tide::runtime::allowed_cpus();
  if (cpus.size() < 2 || cpus.size() != std::thread::hardware_concurrency())
    GTEST_SKIP() << "needs 2 or more CPUs, all usable by this process: the split under mpirun was not exercised";
  TempDir out;
  auto two = run_command(std::string(kMpirun) + " -n 2 --bind-to none " + TIDE_BINARY +
                         train_args(out.path(), "--train_batch_size 1 --max_train_steps 1"));
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("2 ranks on this machine share its " + std::to_string(cpus.size()) + " CPUs"),
            std::string::npos) << two.output;
}

TEST_F(CliTrainTi, ARankThatFailsStopsTheJob) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed or tide built without MPI";
  TempDir out;
  auto r = run_command(std::string(kMpirun) + " -n 2 " + TIDE_BINARY +
                       train_args(out.path(), "--train_batch_size 1 --max_train_steps 1 --resolution 15"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("error on rank"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("multiple of the VAE scale factor"), std::string::npos) << r.output;
}

TEST_F(CliTrainTi, ResumeFromCheckpointEqualsUninterruptedRun) {
  TempDir straight, resumed;
  const std::string flags = "--train_batch_size 2 --max_train_steps 4 --checkpointing_steps 2 "
                            "--lr_scheduler cosine --lr_warmup_steps 1";
  auto full = tide(train_args(straight.path(), flags));
  ASSERT_EQ(full.code, 0) << full.output;
  ASSERT_TRUE(fs::is_directory(straight.path() / "checkpoint-2"));
  ASSERT_TRUE(fs::is_directory(straight.path() / "checkpoint-4"));
  // A run that stopped right after checkpoint-2: only that checkpoint is there.
  fs::copy(straight.path() / "checkpoint-2", resumed.path() / "checkpoint-2", fs::copy_options::recursive);
  auto rest = tide(train_args(resumed.path(), flags + " --resume_from_checkpoint latest"));
  ASSERT_EQ(rest.code, 0) << rest.output;
  EXPECT_NE(rest.output.find("Resuming from checkpoint"), std::string::npos) << rest.output;
  EXPECT_TRUE(learned(resumed.path()).equal(learned(straight.path())));
}

TEST_F(CliTrainTi, GenerateWithTheLearnedEmbedding) {
  TempDir out;
  auto trained = tide(train_args(out.path(), "--train_batch_size 2 --max_train_steps 3 --num_vectors 2 "
                                             "--learning_rate 0.5 --no_safe_serialization --validation_prompt "
                                             "'a <tiny>' --validation_steps 3 --num_validation_images 1"));
  ASSERT_EQ(trained.code, 0) << trained.output;
  ASSERT_TRUE(fs::exists(out.path() / "learned_embeds.bin"));
  EXPECT_TRUE(fs::exists(out.path() / "validation" / "step-3-0.png")) << trained.output;
  auto gen = [&](const std::string& prompt, const std::string& embedding, const std::string& file) {
    return tide(" generate --model " + quote(dir_->path() / "model") + " --prompt '" + prompt +
                "' --steps 2 --seed 3 --threads 1 --output " + quote(out.path() / file) +
                (embedding.empty() ? "" : " --embedding " + quote(fs::path(embedding))));
  };
  const std::string emb = (out.path() / "learned_embeds.bin").string();
  ASSERT_EQ(gen("a photo of <tiny>", emb, "with.png").code, 0);
  ASSERT_EQ(gen("a photo of <tiny>", "", "without.png").code, 0);
  ASSERT_EQ(gen("a photo of a dog", emb, "dog-with.png").code, 0);
  ASSERT_EQ(gen("a photo of a dog", "", "dog-without.png").code, 0);
  auto img = [&](const char* f) { return tide::io::read_png(out.path() / f).rgb8; };
  EXPECT_FALSE(img("with.png").equal(img("without.png")));
  EXPECT_TRUE(img("dog-with.png").equal(img("dog-without.png")));
  auto bad = gen("x", (out.path() / "nope.safetensors").string(), "x.png");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("not found"), std::string::npos) << bad.output;
}

TEST_F(CliTrainTi, VPredictionModelAndFullPipelineOutput) {
  TIDE_REQUIRE_FIXTURES();
  const fs::path model = tide::testing::pipeline_dir("sd2-tiny");  // v_prediction, full CLIP vocabulary
  TempDir out;
  auto trained = tide(" train-ti --pretrained-model-name-or-path " + quote(model) + " --train-data-dir " +
                      quote(dir_->path() / "images") +
                      " --placeholder-token '<tiny2>' --initializer-token toy --resolution 32 --repeats 2 --seed 5"
                      " --train-batch-size 1 --max-train-steps 2 --learning-rate 0.5 --save-steps 0"
                      " --checkpointing-steps 0 --threads 1 --save-as-full-pipeline --output-dir " + quote(out.path()));
  ASSERT_EQ(trained.code, 0) << trained.output;
  EXPECT_NE(trained.output.find("prediction v_prediction"), std::string::npos) << trained.output;
  EXPECT_NE(trained.output.find("step 2/2"), std::string::npos) << trained.output;  // the plain progress line
  // The saved pipeline and the base model + learned_embeds draw the same image for the placeholder prompt.
  auto gen = [&](const fs::path& m, const std::string& extra, const std::string& file) {
    return tide(" generate --model " + quote(m) + " --prompt 'a <tiny2> on a table' --steps 2 --seed 3 --threads 1"
                " --output " + quote(out.path() / file) + extra);
  };
  auto full = gen(out.path(), "", "full.png");
  ASSERT_EQ(full.code, 0) << full.output;
  auto with = gen(model, " --embedding " + quote(out.path() / "learned_embeds.safetensors"), "with.png");
  ASSERT_EQ(with.code, 0) << with.output;
  EXPECT_TRUE(tide::io::read_png(out.path() / "full.png").rgb8.equal(tide::io::read_png(out.path() / "with.png").rgb8));
}

TEST_F(CliTrainTi, KilledAndResumedEqualsUninterruptedRun) {
  TempDir straight, killed;
  const std::string flags = "--train_batch_size 2 --max_train_steps 8 --checkpointing_steps 2 "
                            "--lr_scheduler linear --lr_warmup_steps 2";
  auto full = tide(train_args(straight.path(), flags));
  ASSERT_EQ(full.code, 0) << full.output;
  // SIGKILL as soon as checkpoint-2 exists (wherever the run then is: mid-step, mid-write of a checkpoint).
  const std::string args = train_args(killed.path(), flags);
  const std::string script = std::string(TIDE_BINARY) + args + " > /dev/null 2>&1 & pid=$!; while [ ! -d " +
                             quote(killed.path() / "checkpoint-2") + " ] && kill -0 $pid 2>/dev/null; do sleep 0.005; "
                             "done; kill -9 $pid 2>/dev/null; wait $pid";
  std::ofstream(killed.path() / "kill.sh") << script << "\n";
  run_command("bash " + quote(killed.path() / "kill.sh"));
  ASSERT_FALSE(tide::train::list_checkpoints(killed.path()).empty());
  EXPECT_FALSE(fs::exists(killed.path() / "learned_embeds.safetensors")) << "the run ended before the kill";
  auto rest = tide(train_args(killed.path(), flags + " --resume_from_checkpoint latest"));
  ASSERT_EQ(rest.code, 0) << rest.output;
  EXPECT_TRUE(learned(killed.path()).equal(learned(straight.path())));
  // The log holds each step once, in order.
  std::ifstream log(killed.path() / "train_log.jsonl");
  int64_t expected = 1;
  for (std::string line; std::getline(log, line); ++expected) EXPECT_EQ(nlohmann::json::parse(line)["step"], expected);
  EXPECT_EQ(expected, 9);
}

// --weights f16 keeps the frozen weights in 16 bits and widens them per layer: from a model stored in f16 it
// learns what float32 learns from the same values; bf16 rounds them further and moves the loss a little. int8
// is refused.
TEST_F(CliTrainTi, SixteenBitWeightsLearnWhatFloat32LearnsFromTheSameValues) {
  TempDir out;
  const fs::path model = out.path() / "f16-model";
  auto quantized = tide(" quantize --model " + quote(dir_->path() / "model") + " --weights f16 --output " + quote(model));
  ASSERT_EQ(quantized.code, 0) << quantized.output;
  const std::string flags = "--train_batch_size 2 --max_train_steps 2 ";
  auto f32 = tide(train_args(out.path() / "f32", flags, model));
  ASSERT_EQ(f32.code, 0) << f32.output;
  auto f16 = tide(train_args(out.path() / "f16", flags + "--weights f16", model));
  ASSERT_EQ(f16.code, 0) << f16.output;
  EXPECT_NE(f16.output.find("frozen weights stored f16"), std::string::npos) << f16.output;
  auto bf16 = tide(train_args(out.path() / "bf16", flags + "--weights bf16", model));
  ASSERT_EQ(bf16.code, 0) << bf16.output;
  auto init = tide(train_args(out.path() / "init", "--train_batch_size 2 --max_train_steps 1 --learning_rate 0", model));
  ASSERT_EQ(init.code, 0) << init.output;
  EXPECT_TENSOR_NEAR(learned(out.path() / "f16"), learned(out.path() / "f32"), 1e-6);
  // diffusers' --mixed_precision fp16 casts the frozen models to fp16: here that is --weights f16.
  auto fp16 = tide(train_args(out.path() / "fp16", flags + "--mixed_precision fp16", model));
  ASSERT_EQ(fp16.code, 0) << fp16.output;
  EXPECT_TRUE(learned(out.path() / "fp16").equal(learned(out.path() / "f16")));
  EXPECT_GT(tide::testing::max_abs_diff(learned(out.path() / "f32"), learned(out.path() / "init")), 1e-3);
  // bf16's rounding moves the first step's loss a little (AdamW's update, whose size is about the learning
  // rate whatever the gradient's, can still flip where a gradient is near zero; the loss cannot).
  auto first_loss = [](const fs::path& dir) {
    std::ifstream log(dir / "train_log.jsonl");
    std::string line;
    std::getline(log, line);
    return nlohmann::json::parse(line).at("loss").get<double>();
  };
  const double loss = first_loss(out.path() / "f32");
  EXPECT_NEAR(first_loss(out.path() / "f16"), loss, 1e-6 * loss);
  EXPECT_NEAR(first_loss(out.path() / "bf16"), loss, 0.01 * loss);
  EXPECT_NE(first_loss(out.path() / "bf16"), loss);

  auto int8 = tide(train_args(out.path() / "int8", flags + "--weights int8", model));
  EXPECT_EQ(int8.code, 1);
  EXPECT_NE(int8.output.find("--weights must be f32, f16 or bf16"), std::string::npos) << int8.output;
  EXPECT_FALSE(fs::exists(out.path() / "int8" / "learned_embeds.safetensors"));
}

TEST_F(CliTrainTi, MixedPrecisionBf16TrainsOrSaysWhyNot) {
  TempDir out;
  auto r = tide(train_args(out.path(), "--train_batch_size 2 --max_train_steps 2 --learning_rate 0.5 "
                                       "--mixed_precision bf16"));
  ASSERT_EQ(r.code, 0) << r.output;
  const bool bf16 = r.output.find("UNet in bf16") != std::string::npos;
  // Without native bf16 the frozen weights are kept in bf16 (as diffusers casts them) and computing is float32.
  EXPECT_TRUE(bf16 || (r.output.find("no native bf16") != std::string::npos &&
                       r.output.find("frozen weights stored bf16") != std::string::npos))
      << r.output;
  auto init = tide(train_args(out.path() / "zero", "--train_batch_size 2 --max_train_steps 1 --learning_rate 0"));
  ASSERT_EQ(init.code, 0) << init.output;
  EXPECT_GT(tide::testing::max_abs_diff(learned(out.path()), learned(out.path() / "zero")), 1e-3);
}

}  // namespace
