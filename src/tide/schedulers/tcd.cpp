// TCDScheduler (diffusers 0.35), Trajectory Consistency Distillation: each step predicts the sample at
// an intermediate timestep s = floor((1 - gamma) · t_prev) and, except at the last step, moves it to
// t_prev with a fresh draw from the generator. gamma (diffusers' `eta`) = 0 is deterministic.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class Tcd final : public Scheduler {
 public:
  Tcd(const Config& c, double eta) : eta_(eta) {
    name_ = "tcd";
    if (!(eta >= 0 && eta <= 1)) throw Error("tcd: eta (gamma) must lie in [0, 1], got " + std::to_string(eta));
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    // An explicit null means "no distillation schedule": every training timestep is a candidate.
    original_steps_ = c.json().contains("original_inference_steps") && c.json().at("original_inference_steps").is_null()
                          ? 0
                          : c.get_int("original_inference_steps", 50);
    if (original_steps_ < 0) c.fail("original_inference_steps", "must be positive");

    auto alphas = ddim_alphas(c, BetaDefaults{0.00085, 0.012, "scaled_linear"});
    alphas_cumprod_ = alphas.alphas_cumprod;
    final_alpha_cumprod_ = alphas.final_alpha_cumprod;  // the "previous" alpha product of the last step
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    timesteps_ = consistency_timesteps(num_train_timesteps_, original_steps_, n, "tcd");
    num_inference_steps_ = n;
    step_index_ = -1;
    last_denoised_ = at::Tensor();
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator& generator) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const int64_t t = std::llround(timestep);
    const int64_t prev_t =
        step_index_ + 1 < static_cast<int>(timesteps_.size()) ? std::llround(timesteps_[step_index_ + 1]) : 0;
    // (1 - eta) * prev_t is a float32 tensor product in diffusers.
    const int64_t s = static_cast<int64_t>(std::floor(static_cast<float>(1.0 - eta_) * static_cast<float>(prev_t)));

    const at::Tensor alpha_prod_t = alphas_cumprod_[t];
    const at::Tensor alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
    const at::Tensor alpha_prod_s = alphas_cumprod_[s];

    const Prediction p = predict_original_and_epsilon(prediction_type_, model_output, sample, alpha_prod_t);
    const at::Tensor pred_noised = alpha_prod_s.sqrt() * p.original + at::rsub(alpha_prod_s, 1).sqrt() * p.epsilon;

    at::Tensor prev = pred_noised;
    if (eta_ > 0 && step_index_ != num_inference_steps_ - 1) {
      const at::Tensor noise = at::randn(model_output.sizes(), generator, pred_noised.options());
      const at::Tensor ratio = alpha_prod_t_prev / alpha_prod_s;
      prev = ratio.sqrt() * pred_noised + at::rsub(ratio, 1).sqrt() * noise;
    }
    last_denoised_ = pred_noised;
    ++step_index_;
    return prev;
  }

 private:
  double eta_;
  int original_steps_ = 50;
  at::Tensor final_alpha_cumprod_;
};

}  // namespace

std::unique_ptr<Scheduler> make_tcd(const Config& config, double eta) { return std::make_unique<Tcd>(config, eta); }

}  // namespace tide::schedulers::detail
