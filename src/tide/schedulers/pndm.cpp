// PNDMScheduler (diffusers 0.35): pseudo numerical methods, formula (9) of the PNDM paper. With
// skip_prk_steps (the Stable Diffusion configs) it is PLMS with a second call at the second timestep;
// otherwise 12 Runge-Kutta calls come first.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class Pndm final : public Scheduler {
 public:
  explicit Pndm(const Config& c) {
    name_ = "pndm";
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "v_prediction"});
    skip_prk_steps_ = c.get_bool("skip_prk_steps", false);
    spacing_ = c.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);
    alphas_cumprod_ = alphas_cumprod_from_betas(make_betas(c, BetaDefaults{}));
    final_alpha_cumprod_ = c.get_bool("set_alpha_to_one", false) ? at::scalar_tensor(1.0, at::kFloat)
                                                                   : alphas_cumprod_[0];
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error("pndm: the number of steps must be at least 1");
    if (!skip_prk_steps_ && n < 4) throw Error("pndm: Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 steps");
    num_inference_steps_ = n;
    const int T = num_train_timesteps_;
    std::vector<double> base;  // ascending
    if (spacing_ == "linspace") {
      base = np_linspace(0, T - 1, n);
      for (double& t : base) t = np_round(t);
    } else if (spacing_ == "leading") {
      base = reversed(leading_timesteps(T, n, steps_offset_));
    } else {
      base = reversed(trailing_timesteps(T, T, n));
    }

    prk_timesteps_.clear();
    std::vector<double> plms;
    if (skip_prk_steps_) {
      // concat(t[:-1], t[-2:-1], t[-1:]) reversed: the second timestep is called twice
      plms.assign(base.begin(), base.end() - 1);
      if (n >= 2) plms.push_back(base[n - 2]);
      plms.push_back(base[n - 1]);
      plms = reversed(plms);
    } else {
      // the last 4 timesteps with their midpoints, [t, t + half] each; then prk[:-1].repeat(2)[1:-1] reversed
      const int half = T / n / 2;
      std::vector<double> prk;
      for (int i = n - 4; i < n; ++i) prk.insert(prk.end(), {base[i], base[i] + half});
      std::vector<double> repeated;
      for (size_t i = 0; i + 1 < prk.size(); ++i) repeated.insert(repeated.end(), 2, prk[i]);
      prk_timesteps_ = reversed(std::vector<double>(repeated.begin() + 1, repeated.end() - 1));
      plms = reversed(std::vector<double>(base.begin(), base.end() - 3));
    }
    timesteps_ = prk_timesteps_;
    timesteps_.insert(timesteps_.end(), plms.begin(), plms.end());
    ets_.clear();
    counter_ = 0;
    cur_model_output_ = at::Tensor();
    cur_sample_ = at::Tensor();
    step_index_ = 0;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator&) override {
    require_step_available();
    at::Tensor prev = counter_ < static_cast<int>(prk_timesteps_.size()) && !skip_prk_steps_
                          ? step_prk(model_output, std::llround(timestep), sample)
                          : step_plms(model_output, std::llround(timestep), sample);
    ++step_index_;
    return prev;
  }

 private:
  at::Tensor step_prk(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample) {
    const int64_t diff_to_prev = counter_ % 2 ? 0 : num_train_timesteps_ / num_inference_steps_ / 2;
    const int64_t prev_timestep = timestep - diff_to_prev;
    timestep = std::llround(prk_timesteps_[counter_ / 4 * 4]);

    at::Tensor output = model_output;
    // Python's running sum starts from the integer 0
    const auto accumulate = [&](double w) {
      cur_model_output_ = cur_model_output_.defined() ? cur_model_output_ + w * model_output : 0 + w * model_output;
    };
    if (counter_ % 4 == 0) {
      accumulate(1.0 / 6);
      ets_.push_back(model_output);
      cur_sample_ = sample;
    } else if ((counter_ - 1) % 4 == 0 || (counter_ - 2) % 4 == 0) {
      accumulate(1.0 / 3);
    } else {
      output = cur_model_output_ + 1.0 / 6 * model_output;
      cur_model_output_ = at::Tensor();
    }
    const at::Tensor& cur_sample = cur_sample_.defined() ? cur_sample_ : sample;
    at::Tensor prev = prev_sample(cur_sample, timestep, prev_timestep, output);
    ++counter_;
    return prev;
  }

  at::Tensor step_plms(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample_in) {
    if (!skip_prk_steps_ && ets_.size() < 3) throw Error("pndm: PLMS steps need the Runge-Kutta warm-up first");
    const int64_t ratio = num_train_timesteps_ / num_inference_steps_;
    int64_t prev_timestep = timestep - ratio;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output);
    } else {  // the second call repeats the first interval with the averaged output
      prev_timestep = timestep;
      timestep = timestep + ratio;
    }

    at::Tensor output = model_output, sample = sample_in;
    const size_t n = ets_.size();
    if (n == 1 && counter_ == 0) {
      cur_sample_ = sample;
    } else if (n == 1 && counter_ == 1) {
      output = (model_output + ets_.back()) / 2;
      sample = cur_sample_;
      cur_sample_ = at::Tensor();
    } else if (n == 2) {
      output = (3 * ets_[n - 1] - ets_[n - 2]) / 2;
    } else if (n == 3) {
      output = (23 * ets_[n - 1] - 16 * ets_[n - 2] + 5 * ets_[n - 3]) / 12;
    } else {
      output = (1.0 / 24) * (55 * ets_[n - 1] - 59 * ets_[n - 2] + 37 * ets_[n - 3] - 9 * ets_[n - 4]);
    }
    at::Tensor prev = prev_sample(sample, timestep, prev_timestep, output);
    ++counter_;
    return prev;
  }

  // x_(t-delta) from x_t and the (combined) model output, formula (9).
  at::Tensor prev_sample(const at::Tensor& sample, int64_t timestep, int64_t prev_timestep,
                         at::Tensor model_output) const {
    if (timestep < 0 || timestep >= num_train_timesteps_)
      throw Error("pndm: timestep " + std::to_string(timestep) + " out of range");
    const at::Tensor alpha_prod_t = alphas_cumprod_[timestep];
    const at::Tensor alpha_prod_t_prev = prev_timestep >= 0 ? alphas_cumprod_[prev_timestep] : final_alpha_cumprod_;
    const at::Tensor beta_prod_t = at::rsub(alpha_prod_t, 1);
    const at::Tensor beta_prod_t_prev = at::rsub(alpha_prod_t_prev, 1);
    if (prediction_type_ == "v_prediction")
      model_output = at::pow(alpha_prod_t, 0.5) * model_output + at::pow(beta_prod_t, 0.5) * sample;

    const at::Tensor sample_coeff = at::pow(alpha_prod_t_prev / alpha_prod_t, 0.5);
    const at::Tensor denom =
        alpha_prod_t * at::pow(beta_prod_t_prev, 0.5) + at::pow(alpha_prod_t * beta_prod_t * alpha_prod_t_prev, 0.5);
    return sample_coeff * sample - (alpha_prod_t_prev - alpha_prod_t) * model_output / denom;
  }

  bool skip_prk_steps_ = false;
  std::string spacing_;
  int steps_offset_ = 0;
  at::Tensor final_alpha_cumprod_;
  std::vector<double> prk_timesteps_;
  std::vector<at::Tensor> ets_;
  int counter_ = 0;
  at::Tensor cur_model_output_, cur_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const Config& config) { return std::make_unique<Pndm>(config); }

}  // namespace tide::schedulers::detail
