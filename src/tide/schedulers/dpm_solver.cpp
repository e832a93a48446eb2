// DPMSolverMultistepScheduler (diffusers 0.35): multistep DPM-Solver++ (data prediction) and
// DPM-Solver (noise prediction) of order 1-3, "midpoint" or "heun" second-order updates. The CLI
// names dpm++2m / dpm++3m are algorithm_type "dpmsolver++" with solver_order 2 / 3.
#include <limits>

#include "tide/runtime/error.h"
#include "tide/schedulers/multistep.h"

namespace tide::schedulers::detail {

namespace {

class DpmSolver final : public Scheduler {
 public:
  DpmSolver(const Config& c, const std::string& name) : config_(c) {
    name_ = name;
    noise_form_ = NoiseForm::kAlphaSigma;
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    solver_order_ = c.get_int("solver_order", 2);
    if (solver_order_ < 1 || solver_order_ > 3) c.fail("solver_order", "must be 1, 2 or 3");
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    thresholding_ = read_thresholding(c);
    algorithm_type_ = c.get_string("algorithm_type", "dpmsolver++");
    if (algorithm_type_ == "deis") algorithm_type_ = "dpmsolver++";  // diffusers' fallback
    if (algorithm_type_ != "dpmsolver++" && algorithm_type_ != "dpmsolver")
      c.fail("algorithm_type", "is '" + algorithm_type_ + "'; supported: dpmsolver++, dpmsolver");
    solver_type_ = c.get_string("solver_type", "midpoint");
    if (solver_type_ == "logrho" || solver_type_ == "bh1" || solver_type_ == "bh2") solver_type_ = "midpoint";
    if (solver_type_ != "midpoint" && solver_type_ != "heun")
      c.fail("solver_type", "is '" + solver_type_ + "'; supported: midpoint, heun");
    lower_order_final_ = c.get_bool("lower_order_final", true);
    euler_at_final_ = c.get_bool("euler_at_final", false);
    karras_ = read_use_karras_sigmas(c);
    for (const char* key : {"use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"}) c.require_false(key);
    final_sigmas_type_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
    if (algorithm_type_ == "dpmsolver" && final_sigmas_type_ == "zero")
      c.fail("final_sigmas_type", "'zero' is not supported with algorithm_type dpmsolver (use sigma_min)");
    lambda_min_clipped_ = c.get_double("lambda_min_clipped", -std::numeric_limits<double>::infinity());
    const std::string variance_type = c.get_string("variance_type", "");
    if (!variance_type.empty()) c.fail("variance_type", "'" + variance_type + "' is not supported (learned variances)");
    spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);
    alphas_cumprod_ = sigma_alphas_cumprod(c);
    const at::Tensor alpha_t = at::sqrt(alphas_cumprod_);
    const at::Tensor sigma_t = at::sqrt(at::rsub(alphas_cumprod_, 1));
    lambda_t_ = at::log(alpha_t) - at::log(sigma_t);
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error(name_ + ": the number of steps must be at least 1");
    const int T = num_train_timesteps_;
    // clipping the smallest lambda(t) for numerical stability (matters for the cosine schedule)
    const int64_t clipped_idx = at::searchsorted(at::flip(lambda_t_, {0}), lambda_min_clipped_).item<int64_t>();
    std::vector<double> t = multistep_timesteps(spacing_, T - clipped_idx, T, n, steps_offset_);

    const std::vector<double> train = train_sigmas(alphas_cumprod_);
    std::vector<double> sigmas;
    if (karras_) {
      const auto [lo, hi] = karras_range(config_, train.front(), train.back());
      SigmaSchedule karras = karras_schedule(lo, hi, n, train);
      sigmas = std::move(karras.sigmas);
      t = std::move(karras.timesteps);
      if (config_.get_string("beta_schedule", "linear") != "squaredcos_cap_v2")
        for (double& v : t) v = np_round(v);
    } else {
      sigmas = np_interp_index(t, train);
    }
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : train.front());
    sigmas_ = float32_tensor(sigmas);
    for (double& v : t) v = static_cast<double>(static_cast<int64_t>(v));  // .to(torch.int64)
    timesteps_ = t;
    num_inference_steps_ = static_cast<int>(t.size());
    model_outputs_.assign(solver_order_, at::Tensor());
    lower_order_nums_ = 0;
    step_index_ = -1;
    begin_index_ = -1;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator&) override {
    if (step_index_ < 0) init_step_index(timestep, true);
    require_step_available();
    const int n = static_cast<int>(timesteps_.size());
    // lower orders at the end improve stability for few steps
    const bool lower_order_final = step_index_ == n - 1 &&
                                   (euler_at_final_ || (lower_order_final_ && n < 15) || final_sigmas_type_ == "zero");
    const bool lower_order_second = step_index_ == n - 2 && lower_order_final_ && n < 15;

    const at::Tensor converted = convert_model_output(model_output, sample_in);
    for (int i = 0; i + 1 < solver_order_; ++i) model_outputs_[i] = model_outputs_[i + 1];
    model_outputs_.back() = converted;

    const at::Tensor sample = sample_in.to(at::kFloat);
    at::Tensor prev;
    if (solver_order_ == 1 || lower_order_nums_ < 1 || lower_order_final)
      prev = first_order_update(converted, sample);
    else if (solver_order_ == 2 || lower_order_nums_ < 2 || lower_order_second)
      prev = second_order_update(sample);
    else
      prev = third_order_update(sample);
    if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
    ++step_index_;
    return prev.to(converted.scalar_type());
  }

 private:
  at::Tensor convert_model_output(const at::Tensor& model_output, const at::Tensor& sample) const {
    const AlphaSigma as = alpha_sigma(sigmas_[step_index_]);
    if (algorithm_type_ == "dpmsolver++")  // data prediction x0
      return thresholding_.apply(data_prediction(prediction_type_, model_output, sample, as));
    at::Tensor epsilon = noise_prediction(prediction_type_, model_output, sample, as);
    if (thresholding_.enabled) {
      const at::Tensor x0 = thresholding_.apply((sample - as.sigma * epsilon) / as.alpha);
      epsilon = (sample - as.alpha * x0) / as.sigma;
    }
    return epsilon;
  }

  at::Tensor first_order_update(const at::Tensor& m, const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s = alpha_sigma(sigmas_[step_index_]);
    const at::Tensor h = lambda(t) - lambda(s);
    if (algorithm_type_ == "dpmsolver++")
      return (t.sigma / s.sigma) * sample - (t.alpha * (at::exp(-h) - 1.0)) * m;
    return (t.alpha / s.alpha) * sample - (t.sigma * (at::exp(h) - 1.0)) * m;
  }

  at::Tensor second_order_update(const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s0 = alpha_sigma(sigmas_[step_index_]);
    const auto s1 = alpha_sigma(sigmas_[step_index_ - 1]);
    const at::Tensor& m0 = model_outputs_[solver_order_ - 1];
    const at::Tensor& m1 = model_outputs_[solver_order_ - 2];
    const at::Tensor lambda_s0 = lambda(s0);
    const at::Tensor h = lambda(t) - lambda_s0, h_0 = lambda_s0 - lambda(s1);
    const at::Tensor r0 = h_0 / h;
    const at::Tensor& D0 = m0;
    const at::Tensor D1 = (at::reciprocal(r0) * 1.0) * (m0 - m1);
    const auto& [alpha_t, sigma_t] = t;
    if (algorithm_type_ == "dpmsolver++") {
      if (solver_type_ == "midpoint")
        return (sigma_t / s0.sigma) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 -
               0.5 * (alpha_t * (at::exp(-h) - 1.0)) * D1;
      return (sigma_t / s0.sigma) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 +
             (alpha_t * ((at::exp(-h) - 1.0) / h + 1.0)) * D1;
    }
    if (solver_type_ == "midpoint")
      return (alpha_t / s0.alpha) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
             0.5 * (sigma_t * (at::exp(h) - 1.0)) * D1;
    return (alpha_t / s0.alpha) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
           (sigma_t * ((at::exp(h) - 1.0) / h - 1.0)) * D1;
  }

  at::Tensor third_order_update(const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s0 = alpha_sigma(sigmas_[step_index_]);
    const auto s1 = alpha_sigma(sigmas_[step_index_ - 1]);
    const auto s2 = alpha_sigma(sigmas_[step_index_ - 2]);
    const at::Tensor& m0 = model_outputs_[solver_order_ - 1];
    const at::Tensor& m1 = model_outputs_[solver_order_ - 2];
    const at::Tensor& m2 = model_outputs_[solver_order_ - 3];
    const at::Tensor lambda_s0 = lambda(s0), lambda_s1 = lambda(s1);
    const at::Tensor h = lambda(t) - lambda_s0, h_0 = lambda_s0 - lambda_s1, h_1 = lambda_s1 - lambda(s2);
    const at::Tensor r0 = h_0 / h, r1 = h_1 / h;
    const at::Tensor& D0 = m0;
    const at::Tensor D1_0 = (at::reciprocal(r0) * 1.0) * (m0 - m1);
    const at::Tensor D1_1 = (at::reciprocal(r1) * 1.0) * (m1 - m2);
    const at::Tensor D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
    const at::Tensor D2 = (at::reciprocal(r0 + r1) * 1.0) * (D1_0 - D1_1);
    const auto& [alpha_t, sigma_t] = t;
    if (algorithm_type_ == "dpmsolver++")
      return (sigma_t / s0.sigma) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 +
             (alpha_t * ((at::exp(-h) - 1.0) / h + 1.0)) * D1 -
             (alpha_t * ((at::exp(-h) - 1.0 + h) / at::pow(h, 2) - 0.5)) * D2;
    return (alpha_t / s0.alpha) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
           (sigma_t * ((at::exp(h) - 1.0) / h - 1.0)) * D1 -
           (sigma_t * ((at::exp(h) - 1.0 - h) / at::pow(h, 2) - 0.5)) * D2;
  }

  Config config_;
  int solver_order_ = 2;
  std::string algorithm_type_, solver_type_, final_sigmas_type_, spacing_;
  Thresholding thresholding_;
  bool lower_order_final_ = true, euler_at_final_ = false, karras_ = false;
  double lambda_min_clipped_ = 0;
  int steps_offset_ = 0;
  at::Tensor lambda_t_;
  std::vector<at::Tensor> model_outputs_;  // converted outputs, newest last
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const Config& config, const std::string& name) {
  return std::make_unique<DpmSolver>(config, name);
}

}  // namespace tide::schedulers::detail
