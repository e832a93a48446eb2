// Noise schedulers with diffusers' arithmetic: for the same inputs and generator they give the same
// timesteps, sigmas, scaled inputs and latents as diffusers 0.35 (float32 where diffusers computes in
// float32 tensors, float64 where it computes in numpy or Python floats).
// Schedulers know nothing about models: the caller runs the UNet for every entry of timesteps().
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tide::schedulers {

struct SchedulerOptions {
  bool karras = false;  // use_karras_sigmas (euler, lms, heun, dpm++2m, dpm++3m, unipc)
  double eta = 0.0;     // ddim: weight of the noise drawn in each step; tcd: gamma, in [0, 1]
  // timestep_spacing override ("leading", "trailing", "linspace"; "" = the config's), as
  // <Scheduler>.from_config(config, timestep_spacing=...). lcm and tcd have their own schedule.
  std::string timestep_spacing;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // The CLI name of this scheduler ("euler", "dpm++2m", ...).
  const std::string& name() const { return name_; }

  // Computes the schedule for `num_inference_steps` steps and resets the stepping state.
  virtual void set_timesteps(int num_inference_steps) = 0;

  // The timestep of every UNet call in order (Heun: 2 per step except the first; PNDM with PRK
  // skipped: N+1), exactly the values diffusers passes to the UNet.
  const std::vector<double>& timesteps() const { return timesteps_; }
  // scheduler.sigmas after set_timesteps; empty for schedulers without sigmas (ddim, ddpm, pndm).
  std::vector<double> sigmas() const;
  // The factor for the initial noise (float32 value where diffusers keeps a float32 tensor).
  double init_noise_sigma() const { return init_noise_sigma_; }

  // The UNet input for the call at `timestep`; identity for most schedulers.
  virtual at::Tensor scale_model_input(const at::Tensor& sample, double timestep);
  // One step for the UNet call at `timestep` (always the next element of timesteps(), in order).
  // Stochastic schedulers (euler-a, ddpm, ddim with eta > 0) draw their noise from `generator`
  // like diffusers' randn_tensor on CPU.
  virtual at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                          at::Generator& generator) = 0;

  // The second output of the last step(): LCM's `denoised` (what LatentConsistencyModelPipeline decodes),
  // TCD's pred_noised_sample; undefined for the other schedulers.
  const at::Tensor& last_denoised() const { return last_denoised_; }
  // diffusers' scheduler.order: UNet calls per step in timesteps() (Heun: 2). A run that starts midway
  // (image-to-image) starts at timesteps()[t_start * order()].
  virtual int order() const { return 1; }
  // diffusers' set_begin_index: the step index of the first call of a schedule that starts midway, and the
  // sigma add_noise uses before the first step. Call it after set_timesteps; set_timesteps clears it.
  // Schedulers that step by timestep alone (ddim, ddpm, pndm) do not need it.
  void set_begin_index(int index);
  int begin_index() const { return begin_index_; }

  // Inference add_noise (image-to-image, inpainting), each family with its diffusers formula in float32:
  // sigma schedulers (euler, euler-a, heun, lms) `original + sigma * noise`; dpm++ and unipc
  // `alpha_t * original + sigma_t * noise` with alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t;
  // ddim, ddpm, pndm `sqrt(acp[t]) * original + sqrt(1 - acp[t]) * noise`. The sigma is that of the current
  // step index once stepping has begun (inpainting re-noises at timesteps[i + 1] after step i), else of
  // the begin index, else of `timestep`'s position in timesteps().
  at::Tensor add_noise(const at::Tensor& original, const at::Tensor& noise, double timestep) const;

  // Training: DDPMScheduler.add_noise / get_velocity with int64 timesteps [B].
  at::Tensor add_noise(const at::Tensor& original, const at::Tensor& noise, const at::Tensor& timesteps) const;
  at::Tensor get_velocity(const at::Tensor& sample, const at::Tensor& noise, const at::Tensor& timesteps) const;

  const std::string& prediction_type() const { return prediction_type_; }
  int num_train_timesteps() const { return num_train_timesteps_; }
  // float32 [num_train_timesteps], as diffusers' scheduler.alphas_cumprod.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }

 protected:
  // Step index of the first call like diffusers' _init_step_index: the position of `timestep` in
  // timesteps_ (the second one when it occurs twice). `fallback_to_last`: DPM/UniPC use the last
  // index when the timestep is absent; the others treat it as an error.
  // With a begin index (set_begin_index) the first call starts there instead.
  void init_step_index(double timestep, bool fallback_to_last);
  // diffusers' index_for_timestep: the position of `timestep` (the second one when it occurs twice), -1 if absent.
  int index_for_timestep(double timestep) const;
  // Checks that a step is called after set_timesteps and not past the end.
  void require_step_available() const;

  std::string name_;
  std::string prediction_type_;
  int num_train_timesteps_ = 1000;
  at::Tensor alphas_cumprod_;  // float32
  std::vector<double> timesteps_;
  at::Tensor sigmas_;  // float32 [len], undefined when the scheduler has none
  double init_noise_sigma_ = 1.0;
  int num_inference_steps_ = 0;
  int step_index_ = -1;  // -1 until the first scale_model_input/step after set_timesteps
  at::Tensor last_denoised_;
  int begin_index_ = -1;  // -1: none (set_begin_index); the sigma schedulers' set_timesteps reset it
  // Which add_noise formula the family uses (see add_noise).
  enum class NoiseForm { kAlphasCumprod, kSigma, kAlphaSigma };
  NoiseForm noise_form_ = NoiseForm::kAlphasCumprod;
};

// name: one of scheduler_names(), or "" for the config's own `_class_name`.
// scheduler_config: the model's scheduler_config.json (it may belong to another scheduler class: each
// scheduler reads the keys its diffusers class knows and uses that class's defaults for the rest).
// Unknown names, unsupported options or config values give a tide::Error saying what is valid.
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const nlohmann::json& scheduler_config,
                                          const SchedulerOptions& options);

std::vector<std::string> scheduler_names();

// The CLI name for a diffusers scheduler class name ("" when there is none). DPMSolverMultistepScheduler
// maps to dpm++2m or dpm++3m after the config's solver_order.
std::string scheduler_name_for_class(const std::string& class_name, const nlohmann::json& scheduler_config);

}  // namespace tide::schedulers
