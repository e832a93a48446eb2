// HeunDiscreteScheduler (diffusers 0.35): Karras et al. Algorithm 2 with Heun's correction. Every step
// after the first takes two UNet calls at the same timestep, so timesteps and sigmas hold each
// interior value twice: [t0, t1, t1, t2, t2, ...].
#include "tide/schedulers/sigma_scheduler.h"

namespace tide::schedulers::detail {

namespace {

class Heun final : public SigmaScheduler {
 public:
  explicit Heun(const Config& c) : SigmaScheduler(c, "heun", {"epsilon", "v_prediction", "sample"}), config_(c) {
    karras_ = read_use_karras_sigmas(c);
    clip_sample_ = c.get_bool("clip_sample", false);
    clip_sample_range_ = c.get_double("clip_sample_range", 1.0);
    read_timestep_spacing(c);
    alphas_cumprod_ = alphas_cumprod_from_betas(make_betas(c, BetaDefaults{0.00085, 0.012, "linear"}, {"exp"}));
    set_timesteps(num_train_timesteps_);  // like diffusers' __init__
  }

  int order() const override { return 2; }

  void set_timesteps(int n) override {
    auto [t, train] = start_set_timesteps(n);
    std::vector<double> sigmas = np_interp_index(t, train);
    if (karras_) {
      const auto [lo, hi] = karras_range(config_, sigmas.back(), sigmas.front());
      SigmaSchedule karras = karras_schedule(lo, hi, n, train);
      sigmas = std::move(karras.sigmas);
      t = std::move(karras.timesteps);
    }
    sigmas.push_back(0.0);
    // [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0] and [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
    const at::Tensor s = float32_tensor(sigmas);
    const int64_t len = s.size(0);
    sigmas_ = at::cat({s.slice(0, 0, 1), s.slice(0, 1, len - 1).repeat_interleave(2), s.slice(0, len - 1)});
    timesteps_ = {static_cast<float>(t[0])};
    for (size_t i = 1; i < t.size(); ++i) timesteps_.insert(timesteps_.end(), 2, static_cast<float>(t[i]));
    prev_derivative_ = dt_ = first_sample_ = at::Tensor();
    finish_set_timesteps();
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator&) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const bool first_order = !dt_.defined();
    const at::Tensor sigma = first_order ? sigmas_[step_index_] : sigmas_[step_index_ - 1];
    const at::Tensor sigma_next = first_order ? sigmas_[step_index_ + 1] : sigmas_[step_index_];
    const at::Tensor sigma_hat = sigma * (0 + 1);  // gamma = 0

    const at::Tensor sigma_input = first_order ? sigma_hat : sigma_next;
    at::Tensor denoised = k_denoised(prediction_type_, model_output, sample_in, sigma_input);
    if (clip_sample_) denoised = denoised.clamp(-clip_sample_range_, clip_sample_range_);

    at::Tensor sample = sample_in, derivative, dt;
    if (first_order) {
      derivative = (sample - denoised) / sigma_hat;
      dt = sigma_next - sigma_hat;
      // kept for the second (Heun) half of the step
      prev_derivative_ = derivative;
      dt_ = dt;
      first_sample_ = sample;
    } else {
      derivative = (sample - denoised) / sigma_next;
      derivative = (prev_derivative_ + derivative) / 2;
      dt = dt_;
      sample = first_sample_;
      prev_derivative_ = dt_ = first_sample_ = at::Tensor();
    }
    const at::Tensor prev = sample + derivative * dt;
    ++step_index_;
    return prev;
  }

 private:
  Config config_;
  bool karras_ = false, clip_sample_ = false;
  double clip_sample_range_ = 1.0;
  at::Tensor prev_derivative_, dt_, first_sample_;  // defined between the two halves of a step
};

}  // namespace

std::unique_ptr<Scheduler> make_heun(const Config& config) { return std::make_unique<Heun>(config); }

}  // namespace tide::schedulers::detail
